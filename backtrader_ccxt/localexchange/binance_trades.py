"""Binance SPOT public trades over the ledger: REST ``/api/v3/trades``, ``historicalTrades``,
``aggTrades`` and the raw ``<symbol>@trade`` / ``<symbol>@aggTrade`` streams.

Binance's paging rules, traps included:

* ``/api/v3/trades``: the newest ``limit`` trades (default 500, max 1000), oldest first.
* ``/api/v3/historicalTrades``: from ``fromId`` ascending; without it, like ``trades``.
* ``/api/v3/aggTrades``: ``fromId`` -> ascending from that id; ``startTime`` alone -> the
  first ``limit`` from it; ``endTime`` alone -> the last ``limit`` up to it; **both -> the
  LAST ``limit`` trades of the window**, so ``fetch_trades(symbol, since)`` (ccxt sends
  ``startTime=since, endTime=since + 1h``) does not start at ``since`` in a busy hour:
  page by id. Each trade of the ledger is its own aggregate (distinct times), so an
  aggregate id is the trade id and ``f == l``.
* Streams start with the trades that happen after the subscription, one frame per trade
  (the shared pusher and the trade faults: ``trade_streams.py``).
"""

from __future__ import annotations

import logging

from aiohttp import web

from . import binance_format as fmt
from . import trade_streams
from .protocol import Reply, query_ints
from .trades import LedgerTrade, TradeLedger

__all__ = ["PATHS", "WEIGHTS", "TradeStreams", "parse_trade_stream", "rest"]

log = logging.getLogger(__name__)

PATHS = ("/api/v3/trades", "/api/v3/historicalTrades", "/api/v3/aggTrades")
WEIGHTS = {"/api/v3/trades": 25, "/api/v3/historicalTrades": 25, "/api/v3/aggTrades": 4}
KINDS = ("trade", "aggTrade")


def trade_row(t: LedgerTrade) -> dict:
    return {
        "id": t.id,
        "price": t.price_str,
        "qty": t.qty_str,
        "quoteQty": t.quote_qty_str,
        "time": t.time_ms,
        "isBuyerMaker": t.buyer_maker,
        "isBestMatch": True,
    }


def agg_row(t: LedgerTrade) -> dict:
    return {
        "a": t.id,
        "p": t.price_str,
        "q": t.qty_str,
        "f": t.id,
        "l": t.id,
        "T": t.time_ms,
        "m": t.buyer_maker,
        "M": True,
    }


def trade_event(symbol: str, kind: str, t: LedgerTrade, event_ms: int) -> dict:
    """A raw ``<symbol>@trade`` or ``@aggTrade`` stream event."""
    if kind == "trade":
        body = {"t": t.id, "p": t.price_str, "q": t.qty_str, "T": t.time_ms, "m": t.buyer_maker}
        body["M"] = True
    else:
        body = agg_row(t)
    return {"e": kind, "E": event_ms, "s": fmt.market_id(symbol), **body}


def rest(proto, request: web.Request) -> Reply:
    """The answer to one of :data:`PATHS` (``proto`` is the :class:`BinanceProtocol`)."""
    ledger: TradeLedger | None = proto.ledger
    q = request.query
    if not q.get("symbol"):
        return proto._error(
            fmt.ERR_MANDATORY,
            "Mandatory parameter 'symbol' was not sent, was empty/null, or malformed.",
        )
    symbol = proto.by_id.get(q["symbol"])
    if symbol is None or ledger is None:
        return proto._error(*fmt.ERR_BAD_SYMBOL)
    ints, bad = query_ints(q, ("fromId", "startTime", "endTime", "limit"))
    if bad is not None:
        return proto.illegal_chars(bad)
    limit = ints.get("limit", 500)
    if not 1 <= limit <= 1000:
        return proto._error(fmt.ERR_BAD_PARAM, "Data sent for parameter 'limit' is not valid.")
    now = proto.now_ms()
    path = request.path
    from_id, start, end = ints.get("fromId"), ints.get("startTime"), ints.get("endTime")
    if path == "/api/v3/aggTrades":
        if start is not None and end is not None and start > end:
            return proto._error(*fmt.ERR_START_AFTER_END)
        if from_id is not None:
            rows = ledger.from_id(symbol, from_id, limit, now)
            rows = [t for t in rows if (start is None or t.time_ms >= start)]
            rows = [t for t in rows if (end is None or t.time_ms <= end)]
        elif end is not None:  # a window, or an end alone: the LAST `limit` (Binance's trap)
            rows = ledger.last_between(symbol, start, end, limit, now)
        elif start is not None:
            rows = ledger.first_between(symbol, start, None, limit, now)
        else:
            rows = ledger.recent(symbol, limit, now)
        return proto._json(fmt.dumps([agg_row(t) for t in rows]))
    if path == "/api/v3/historicalTrades" and from_id is not None:
        rows = ledger.from_id(symbol, from_id, limit, now)
    else:
        rows = ledger.recent(symbol, limit, now)
    return proto._json(fmt.dumps([trade_row(t) for t in rows]))


def parse_trade_stream(name, by_lower_id: dict) -> tuple[str, str] | None:
    """``'btcusdt@trade'`` -> ``('BTC/USDT', 'trade')``; None if not a served trade stream."""
    if not isinstance(name, str) or "@" not in name:
        return None
    mid, kind = name.split("@", 1)
    symbol = by_lower_id.get(mid)
    if symbol is None or kind not in KINDS:
        return None
    return symbol, kind


def render(symbol: str, kind: str, trades: list[LedgerTrade], now_ms: int) -> list[str]:
    """Binance streams one event per trade."""
    return [fmt.dumps(trade_event(symbol, kind, t, now_ms)) for t in trades]


class TradeStreams(trade_streams.TradeStreams):
    """The ``@trade`` / ``@aggTrade`` streams (see :mod:`.trade_streams`)."""

    def __init__(self, hub, ledger: TradeLedger):
        super().__init__(hub, ledger, render)

    def held(self, conn) -> list[str]:
        """Stream names ``conn`` holds (for LIST_SUBSCRIPTIONS)."""
        out = []
        for symbol, conns in self.subs.items():
            mid = fmt.market_id(symbol).lower()
            out.extend(f"{mid}@{kind}" for kind in sorted(conns.get(conn, ())))
        return out
