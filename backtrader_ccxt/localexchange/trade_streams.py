"""The public trade streams of every protocol: one timer pushes each trade of the ledger when
the exchange clock reaches it, to the connections subscribed to its symbol, with the trade
faults (lost trades, duplicates, a connection cut in the middle of a burst).

What a push looks like is the protocol's business: ``render(symbol, kind, trades, now_ms)``
returns the frames (texts) of a batch of trades for one stream kind (Binance one frame per
trade, OKX and Bybit one push carrying a list). Frames go through ``hub.send``, so the hub's
faults (a stall loses the frames due meanwhile: an id gap for the client) and closed
connections apply to them as to candles.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable

from .trades import LedgerTrade, TradeLedger

__all__ = ["TradeStreams"]

log = logging.getLogger(__name__)

_BATCH = 10_000  # most trades one timer wake-up sends per symbol

Render = Callable[[str, str, list[LedgerTrade], int], list[str]]


class TradeStreams:
    """Subscriptions ``symbol -> connection -> stream kinds`` and the timer that serves them."""

    def __init__(self, hub, ledger: TradeLedger, render: Render):
        self.hub = hub
        self.ledger = ledger
        self.render = render
        self.subs: dict[str, dict[object, set[str]]] = {}  # symbol -> conn -> kinds
        self.cursor: dict[str, int] = {}  # symbol -> next id to send
        self._timer: asyncio.TimerHandle | None = None
        self._cutting: asyncio.Future | None = None  # a cut in the middle of a burst

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

    def holds(self, conn, symbol: str, kind: str) -> bool:
        return kind in self.subs.get(symbol, {}).get(conn, ())

    def stop(self) -> None:
        if self._cutting is not None:
            self._cutting.cancel()
            self._cutting = None
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
        if self._cutting is not None:
            return  # re-armed once the cut is done
        try:
            now = self.hub.now_ms()
            for symbol, conns in list(self.subs.items()):
                trades = self.ledger.from_id(symbol, self.cursor[symbol], _BATCH, now)
                if not trades:
                    continue
                self.cursor[symbol] = trades[-1].id + 1
                self._send(symbol, conns, self._faulted(trades), now)
        except Exception:
            log.exception("localexchange: trade emission failed")
        self._arm()

    def _faulted(self, trades: list[LedgerTrade]) -> list[LedgerTrade]:
        """The trades as streamed: lost ones left out, duplicated ones twice."""
        tf = self.hub.faults.trade
        if not (tf.lose or tf.duplicate):
            return trades
        counts = self.hub.faults.counts
        out = []
        for t in trades:
            if tf.lose:
                tf.lose -= 1
                counts["trades_lost"] += 1
                continue
            out.append(t)
            if tf.duplicate:
                tf.duplicate -= 1
                counts["trades_duplicated"] += 1
                out.append(t)
        return out

    def _send(self, symbol: str, conns: dict, trades: list[LedgerTrade], now: int) -> None:
        tf = self.hub.faults.trade
        cut = bool(tf.burst_min) and len(trades) >= tf.burst_min
        if cut:
            trades = trades[: len(trades) // 2]
        kinds = {k for held in conns.values() for k in held}
        frames = {k: self.render(symbol, k, trades, now) for k in kinds}
        for conn, held in list(conns.items()):
            for kind in held:
                for text in frames[kind]:
                    self.hub.send(conn, text)
        if cut:
            tf.burst_min = 0
            self.hub.faults.counts["burst_drop"] += 1
            self._cutting = asyncio.ensure_future(self._cut([c for c in conns if not c.closed]))

    async def _cut(self, conns: list) -> None:
        """Drop every connection once the first half of the burst left (their writers
        drained); nothing more is streamed meanwhile."""
        loop = asyncio.get_running_loop()
        deadline = loop.time() + 1.0
        while any(not c.queue.empty() for c in conns) and loop.time() < deadline:
            await asyncio.sleep(0.001)
        self.hub.drop_connections(False)
        self._cutting = None
        self._arm()
