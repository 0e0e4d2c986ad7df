"""Binance SPOT JSON shapes: exchangeInfo, REST kline rows, WebSocket kline events, errors.

Pure functions. Shapes follow Binance's public SPOT API documentation and what
``ccxt.binance.parse_market`` / ``parse_ohlcv`` and ``ccxt.pro.binance.handle_ohlcv`` read.
"""

from __future__ import annotations

import json

from .data import Candle, SymbolSeries

__all__ = [
    "ERR_BAD_INTERVAL",
    "ERR_BAD_SYMBOL",
    "dumps",
    "error_body",
    "exchange_info",
    "kline_event",
    "kline_row",
    "market_id",
    "ws_error",
]

# Binance error codes used by the emulated endpoints.
ERR_TOO_MANY_REQUESTS = (
    -1003,
    "Too much request weight used; current limit is 6000 request "
    "weight per 1 MINUTE. Please use WebSocket Streams for live "
    "updates to avoid polling the API.",
)
ERR_INTERNAL = (-1001, "Internal error; unable to process your request. Please try again.")
ERR_ILLEGAL_CHARS = -1100
ERR_MANDATORY = -1102
ERR_BAD_INTERVAL = (-1120, "Invalid interval.")
ERR_BAD_SYMBOL = (-1121, "Invalid symbol.")
ERR_BAD_PARAM = -1130
ERR_START_AFTER_END = (-1023, "Start time is greater than end time.")

#: LOT_SIZE step (and minimum) and NOTIONAL minimum of every served symbol.
LOT_STEP = "0.00001000"
MIN_NOTIONAL = "5.00000000"


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def error_body(code: int, msg: str) -> str:
    return dumps({"code": code, "msg": msg})


def ws_error(code: int, msg: str, request_id) -> str:
    return dumps({"error": {"code": code, "msg": msg}, "id": request_id})


def market_id(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT``."""
    return symbol.replace("/", "")


def _symbol_info(series: SymbolSeries) -> dict:
    base, quote = series.symbol.split("/")
    return {
        "symbol": market_id(series.symbol),
        "status": "TRADING",
        "baseAsset": base,
        "baseAssetPrecision": 8,
        "quoteAsset": quote,
        "quotePrecision": 8,
        "quoteAssetPrecision": 8,
        "baseCommissionPrecision": 8,
        "quoteCommissionPrecision": 8,
        "orderTypes": [
            "LIMIT",
            "LIMIT_MAKER",
            "MARKET",
            "STOP_LOSS",
            "STOP_LOSS_LIMIT",
            "TAKE_PROFIT",
            "TAKE_PROFIT_LIMIT",
        ],
        "icebergAllowed": True,
        "ocoAllowed": True,
        "otoAllowed": True,
        "quoteOrderQtyMarketAllowed": True,
        "allowTrailingStop": True,
        "cancelReplaceAllowed": True,
        "isSpotTradingAllowed": True,
        "isMarginTradingAllowed": False,
        "filters": [
            {
                "filterType": "PRICE_FILTER",
                "minPrice": series.tick_size,
                "maxPrice": "1000000.00000000",
                "tickSize": series.tick_size,
            },
            {
                "filterType": "LOT_SIZE",
                "minQty": LOT_STEP,
                "maxQty": "9000.00000000",
                "stepSize": LOT_STEP,
            },
            {"filterType": "ICEBERG_PARTS", "limit": 10},
            {
                "filterType": "MARKET_LOT_SIZE",
                "minQty": "0.00000000",
                "maxQty": "100.00000000",
                "stepSize": "0.00000000",
            },
            {
                "filterType": "TRAILING_DELTA",
                "minTrailingAboveDelta": 10,
                "maxTrailingAboveDelta": 2000,
                "minTrailingBelowDelta": 10,
                "maxTrailingBelowDelta": 2000,
            },
            {
                "filterType": "PERCENT_PRICE_BY_SIDE",
                "bidMultiplierUp": "5",
                "bidMultiplierDown": "0.2",
                "askMultiplierUp": "5",
                "askMultiplierDown": "0.2",
                "avgPriceMins": 5,
            },
            {
                "filterType": "NOTIONAL",
                "minNotional": MIN_NOTIONAL,
                "applyMinToMarket": True,
                "maxNotional": "9000000.00000000",
                "applyMaxToMarket": False,
                "avgPriceMins": 5,
            },
            {"filterType": "MAX_NUM_ORDERS", "maxNumOrders": 200},
            {"filterType": "MAX_NUM_ALGO_ORDERS", "maxNumAlgoOrders": 5},
        ],
        "permissions": [],
        "permissionSets": [["SPOT"]],
        "defaultSelfTradePreventionMode": "EXPIRE_MAKER",
        "allowedSelfTradePreventionModes": ["EXPIRE_TAKER", "EXPIRE_MAKER", "EXPIRE_BOTH"],
    }


def exchange_info(series: list[SymbolSeries], server_time_ms: int) -> dict:
    """Body of ``GET /api/v3/exchangeInfo`` for the served symbols."""
    return {
        "timezone": "UTC",
        "serverTime": server_time_ms,
        "rateLimits": [
            {
                "rateLimitType": "REQUEST_WEIGHT",
                "interval": "MINUTE",
                "intervalNum": 1,
                "limit": 6000,
            },
            {"rateLimitType": "ORDERS", "interval": "SECOND", "intervalNum": 10, "limit": 100},
            {"rateLimitType": "ORDERS", "interval": "DAY", "intervalNum": 1, "limit": 200000},
            {
                "rateLimitType": "RAW_REQUESTS",
                "interval": "MINUTE",
                "intervalNum": 5,
                "limit": 61000,
            },
        ],
        "exchangeFilters": [],
        "symbols": [_symbol_info(s) for s in series],
    }


def kline_row(c: Candle) -> list:
    """One row of ``GET /api/v3/klines``: Binance's 12 columns."""
    return [
        c.open_ms,
        c.o,
        c.h,
        c.l,
        c.c,
        c.v,
        c.close_ms,
        c.q,
        c.n,
        c.taker_base,
        c.taker_quote,
        "0",
    ]


def kline_event(symbol: str, interval: str, c: Candle, closed: bool, event_ms: int) -> dict:
    """A raw ``<symbol>@kline_<interval>`` stream event (not the combined-stream wrapper)."""
    mid = market_id(symbol)
    return {
        "e": "kline",
        "E": event_ms,
        "s": mid,
        "k": {
            "t": c.open_ms,
            "T": c.close_ms,
            "s": mid,
            "i": interval,
            "f": c.first_trade,
            "L": c.last_trade,
            "o": c.o,
            "c": c.c,
            "h": c.h,
            "l": c.l,
            "v": c.v,
            "n": c.n,
            "x": closed,
            "q": c.q,
            "V": c.taker_base,
            "Q": c.taker_quote,
            "B": "0",
        },
    }
