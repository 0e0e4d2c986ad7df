"""Bybit v5 JSON shapes: the REST envelope, spot instruments, kline rows, WebSocket kline
pushes and operation replies.

Pure functions. Shapes follow recorded v5 messages (``../shared/data/messages/bybit``: a push
is ``{"topic": "kline.1.BTCUSDT", "data": [{start, end, interval, open, close, high, low,
volume, turnover, confirm, timestamp}], "ts": ..., "type": "snapshot"}``) and what
``ccxt.bybit`` / ``ccxt.pro.bybit`` read.
"""

from __future__ import annotations

import json

from .data import Candle, SymbolSeries
from .data import short_decimal as num

__all__ = [
    "dumps",
    "envelope",
    "instrument",
    "kline_push",
    "kline_row",
    "market_id",
    "op_reply",
]

# (retCode, retMsg); ccxt.bybit maps them (exact code, or broad message) to exceptions.
ERR_BAD_SYMBOL = (10001, "Not supported symbols")  # BadSymbol (broad match on the message)
ERR_PARAM = 10001  # BadRequest
ERR_TOO_MANY = (10006, "Too many visits!")  # RateLimitExceeded
ERR_BUSY = (10016, "System error. Please try again later.")  # ExchangeError


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def market_id(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTCUSDT``."""
    return symbol.replace("/", "")


def envelope(result: dict, now_ms: int, code: int = 0, msg: str = "OK") -> dict:
    return {"retCode": code, "retMsg": msg, "result": result, "retExtInfo": {}, "time": now_ms}


def instrument(series: SymbolSeries) -> dict:
    """One ``GET /v5/market/instruments-info?category=spot`` entry."""
    base, quote = series.symbol.split("/")
    return {
        "symbol": market_id(series.symbol),
        "baseCoin": base,
        "quoteCoin": quote,
        "innovation": "0",
        "status": "Trading",
        "marginTrading": "none",
        "stTag": "0",
        "lotSizeFilter": {
            "basePrecision": "0.00001",
            "quotePrecision": "0.00000001",
            "minOrderQty": "0.00001",
            "maxOrderQty": "9000",
            "minOrderAmt": "5",
            "maxOrderAmt": "9000000",
        },
        "priceFilter": {"tickSize": num(series.tick_size)},
        "riskParameters": {"priceLimitRatioX": "0.05", "priceLimitRatioY": "0.05"},
    }


def kline_row(c: Candle) -> list[str]:
    """``[startTime, open, high, low, close, volume, turnover]``, all strings."""
    return [str(c.open_ms), num(c.o), num(c.h), num(c.l), num(c.c), num(c.v), num(c.q)]


def kline_push(topic: str, interval: str, c: Candle, confirm: bool, event_ms: int) -> dict:
    return {
        "topic": topic,
        "data": [
            {
                "start": c.open_ms,
                "end": c.close_ms,
                "interval": interval,
                "open": num(c.o),
                "close": num(c.c),
                "high": num(c.h),
                "low": num(c.l),
                "volume": num(c.v),
                "turnover": num(c.q),
                "confirm": confirm,
                "timestamp": event_ms,
            }
        ],
        "ts": event_ms,
        "type": "snapshot",
    }


def op_reply(op: str, conn_id: str, req_id, success: bool = True, ret_msg: str = "") -> str:
    """``{"success", "ret_msg", "conn_id", "req_id", "op"}`` (``req_id`` only if sent)."""
    reply: dict = {"success": success, "ret_msg": ret_msg, "conn_id": conn_id}
    if req_id is not None:
        reply["req_id"] = req_id
    reply["op"] = op
    return dumps(reply)
