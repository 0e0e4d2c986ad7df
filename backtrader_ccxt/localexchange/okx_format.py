"""OKX v5 JSON shapes: instruments, candle rows, WebSocket candle pushes, events, errors.

Pure functions. Shapes follow recorded v5 messages (``../shared/data/messages/okx``: a push is
``{"arg": {"channel", "instId"}, "data": [[ts, o, h, l, c, vol, volCcy, volCcyQuote,
confirm]]}``, every column a string, ``confirm`` ``"0"``/``"1"``; REST is ``{"code": "0",
"msg": "", "data": [...]}`` newest first) and what ``ccxt.okx`` / ``ccxt.pro.okx`` read.
"""

from __future__ import annotations

import json

from .data import Candle, SymbolSeries
from .data import short_decimal as num

__all__ = [
    "candle_push",
    "candle_row",
    "dumps",
    "envelope",
    "error_body",
    "event",
    "inst_id",
    "instrument",
    "ws_error",
]

# (code, msg) pairs; ccxt.okx's exceptions table maps each code to an exception class.
ERR_BAD_INST = ("51001", "Instrument ID doesn't exist.")  # BadSymbol
ERR_PARAM = "51000"  # "Parameter {0} error": BadRequest
ERR_EMPTY = "50014"  # "Parameter {0} can not be empty.": BadRequest
ERR_TOO_MANY = ("50011", "Too Many Requests")  # RateLimitExceeded
ERR_BUSY = ("50013", "Systems are busy. Please try again later.")  # ExchangeNotAvailable
WS_BAD_JSON = "60012"  # "Illegal request: {raw}": BadRequest
WS_NO_CHANNEL = "60018"  # channel / instId does not exist: BadRequest
WS_BAD_OP = "60019"  # "Invalid op: {op}": BadRequest


def dumps(obj) -> str:
    return json.dumps(obj, separators=(",", ":"))


def inst_id(symbol: str) -> str:
    """``BTC/USDT`` -> ``BTC-USDT``."""
    return symbol.replace("/", "-")


def envelope(data: list, code: str = "0", msg: str = "") -> dict:
    return {"code": code, "msg": msg, "data": data}


def error_body(code: str, msg: str) -> str:
    return dumps(envelope([], code, msg))


def instrument(series: SymbolSeries, list_time_ms: int) -> dict:
    """One ``GET /api/v5/public/instruments?instType=SPOT`` entry."""
    base, quote = series.symbol.split("/")
    return {
        "alias": "",
        "auctionEndTime": "",
        "baseCcy": base,
        "category": "1",
        "contTdSwTime": "",
        "ctMult": "",
        "ctType": "",
        "ctVal": "",
        "ctValCcy": "",
        "expTime": "",
        "futureSettlement": False,
        "instFamily": "",
        "instId": inst_id(series.symbol),
        "instType": "SPOT",
        "lever": "",
        "listTime": str(list_time_ms),
        "lotSz": "0.00001",
        "maxIcebergSz": "9999999999.0000000000000000",
        "maxLmtAmt": "20000000",
        "maxLmtSz": "9999999999",
        "maxMktAmt": "1000000",
        "maxMktSz": "",
        "maxStopSz": "",
        "maxTriggerSz": "9999999999.0000000000000000",
        "maxTwapSz": "9999999999.0000000000000000",
        "minSz": "0.00001",
        "optType": "",
        "quoteCcy": quote,
        "ruleType": "normal",
        "settleCcy": "",
        "state": "live",
        "stk": "",
        "tickSz": num(series.tick_size),
        "uly": "",
    }


def candle_row(c: Candle, confirmed: bool) -> list[str]:
    """``[ts, o, h, l, c, vol, volCcy, volCcyQuote, confirm]``: for SPOT ``vol`` is in the
    base currency and both ``volCcy`` and ``volCcyQuote`` in the quote currency."""
    q = num(c.q)
    return [
        str(c.open_ms),
        num(c.o),
        num(c.h),
        num(c.l),
        num(c.c),
        num(c.v),
        q,
        q,
        "1" if confirmed else "0",
    ]


def candle_push(channel: str, inst: str, c: Candle, confirmed: bool) -> dict:
    return {"arg": {"channel": channel, "instId": inst}, "data": [candle_row(c, confirmed)]}


def event(name: str, arg: dict, conn_id: str) -> dict:
    """``{"event": "subscribe" | "unsubscribe", "arg": {...}, "connId": ...}``."""
    return {"event": name, "arg": arg, "connId": conn_id}


def ws_error(code: str, msg: str, conn_id: str) -> str:
    return dumps({"event": "error", "msg": msg, "code": code, "connId": conn_id})
