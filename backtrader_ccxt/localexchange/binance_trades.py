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
* Streams start with the trades that happen after the subscription, one frame per trade.
"""

from __future__ import annotations

import asyncio
import logging

from aiohttp import web

from . import binance_format as fmt
from .protocol import Reply, query_ints
from .trades import LedgerTrade, TradeLedger

__all__ = ["PATHS", "WEIGHTS", "TradeStreams", "parse_trade_stream", "rest"]

log = logging.getLogger(__name__)

PATHS = ("/api/v3/trades", "/api/v3/historicalTrades", "/api/v3/aggTrades")
WEIGHTS = {"/api/v3/trades": 25, "/api/v3/historicalTrades": 25, "/api/v3/aggTrades": 4}
KINDS = ("trade", "aggTrade")
_BATCH = 10_000  # most trades one timer wake-up sends per symbol


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


class TradeStreams:
    """Pushes every trade of the ledger, when the exchange clock reaches it, to the
    connections subscribed to its symbol's ``@trade`` / ``@aggTrade`` streams.

    Frames go through ``hub.send``, so the hub's faults (stalls: frames lost, an id gap for
    the client) and closed connections apply to them as to candles.
    """

    def __init__(self, hub, ledger: TradeLedger):
        self.hub = hub
        self.ledger = ledger
        self.subs: dict[str, dict[object, set[str]]] = {}  # symbol -> conn -> kinds
        self.cursor: dict[str, int] = {}  # symbol -> next id to send
        self._timer: asyncio.TimerHandle | None = None

    def add(self, conn, keys: list[tuple[str, str]]) -> None:
        now = self.hub.now_ms()
        for symbol, kind in keys:
            if symbol not in self.cursor:
                last = self.ledger.recent(symbol, 1, now)
                self.cursor[symbol] = last[0].id + 1 if last else 0
            self.subs.setdefault(symbol, {}).setdefault(conn, set()).add(kind)
        self._arm()

    def remove(self, conn, keys: list[tuple[str, str]]) -> None:
        for symbol, kind in keys:
            kinds = self.subs.get(symbol, {}).get(conn)
            if kinds is not None:
                kinds.discard(kind)
                if not kinds:
                    del self.subs[symbol][conn]
        self._prune()

    def held(self, conn) -> list[str]:
        """Stream names ``conn`` holds (for LIST_SUBSCRIPTIONS)."""
        out = []
        for symbol, conns in self.subs.items():
            mid = fmt.market_id(symbol).lower()
            out.extend(f"{mid}@{kind}" for kind in sorted(conns.get(conn, ())))
        return out

    def stop(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self.subs.clear()

    def _prune(self) -> None:
        for symbol in list(self.subs):
            conns = self.subs[symbol]
            for conn in [c for c in conns if c.closed]:
                del conns[conn]
            if not conns:
                del self.subs[symbol]
                del self.cursor[symbol]

    def _arm(self) -> None:
        if self._timer is not None:
            self._timer.cancel()
            self._timer = None
        self._prune()
        if not self.subs or self.hub._stopping:
            return
        now = self.hub.now_ms()
        due = min(self._next_time(s, now) for s in self.subs)
        delay = max(due - now, 1) / 1000
        if not self.hub.exact_clock:
            delay = min(delay, self.hub.poll_interval)
        self._timer = asyncio.get_running_loop().call_later(delay, self._on_timer)

    def _next_time(self, symbol: str, now: int) -> int:
        """When the next unsent trade of ``symbol`` happens (at most one candle ahead)."""
        tf = self.ledger.tf
        ahead = self.ledger.from_id(symbol, self.cursor[symbol], 1, now + tf.ms)
        return ahead[0].time_ms if ahead else now + tf.ms

    def _on_timer(self) -> None:
        self._timer = None
        try:
            now = self.hub.now_ms()
            for symbol, conns in list(self.subs.items()):
                trades = self.ledger.from_id(symbol, self.cursor[symbol], _BATCH, now)
                for t in trades:
                    frames = {k: fmt.dumps(trade_event(symbol, k, t, now)) for k in KINDS}
                    for conn, kinds in list(conns.items()):
                        for kind in kinds:
                            self.hub.send(conn, frames[kind])
                if trades:
                    self.cursor[symbol] = trades[-1].id + 1
        except Exception:
            log.exception("localexchange: trade emission failed")
        self._arm()
