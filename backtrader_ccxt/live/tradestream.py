"""A tick feed over WebSocket: the trade stream's rules, as a sans-I/O state machine.

The stream twin of :class:`~.tradepolling.TradePollingMachine`, whose REST walks (by id on
Binance, backwards on OKX and Bybit, by time elsewhere) it reuses for the backfill and
every fill. Events in (:mod:`.events`: :class:`~.events.Trades` in arrival order, breaks,
recoveries, fatal errors; REST answers and failures); out: ``fetch_trades`` requests, and
ticks and statuses in delivery order (``outbox``). The driver (:mod:`.manager`) does the I/O.

The rules (the candle stream's seam rules, for trades):

- **History first.** The REST walk from ``fromdate`` (or the last ``backfill_trades``)
  starts once the stream talks (its first trade or answer; ``stream_first_ms`` at most),
  so the history reaches the trades the stream holds; streamed trades are held meanwhile
  and leave after the walk, the overlap dropped by :class:`~..trades.TradeGate` (by id).
- **Exactly once, in exchange order.** Every trade, streamed or fetched, passes the one
  gate. Where ids are consecutive decimal numbers (Binance, OKX, the local exchange), an
  id gap in the stream is a lost trade: the trades after it are held while REST fetches
  the gap, then leave in order. A gap REST does not have after two looks is taken as
  absent (``trade_gaps_absent``); three absent gaps in a row mean the venue's ids are not
  consecutive, and id gaps stop triggering fills (logged once).
- **Breaks.** After a break (or a stall the transport declared), once the new connection
  talks, REST walks from the last delivered trade to the present, then LIVE; trades of the
  new connection are held meanwhile. A break during a walk makes the walk run again once
  it ends, so nothing between the two connections is missed.
- **todate.** Nothing at or after ``until_ms`` leaves; the feed ends at the first such trade
  or, on a quiet market, once the exchange clock passed it by ``poll_interval_ms`` and a
  last REST walk found every trade before it.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque

from ..bars import Status
from ..trades import Trade, parse_trades
from .events import Broken, Fatal, Healthy, StreamEvent, Trades
from .tradepolling import TradePollingMachine, TradeRequest, TradeSpec

log = logging.getLogger(__name__)

__all__ = ["FOREVER", "TradeStreamMachine"]

FOREVER = math.inf
_GAP_TRIES = 2  # REST walks that miss a gap before it is taken as absent
_GAP_RETRY_MS = 500  # the second look waits for a venue whose REST lags its stream
_ABSENT_RUN = 3  # absent gaps in a row: the venue's ids are not consecutive
_MAX_HELD = 100_000  # held trades beyond which the walk brings them all (memory bound)


class TradeStreamMachine(TradePollingMachine):
    """One WebSocket tick feed. ``next_action(now)`` returns a
    :class:`~.tradepolling.TradeRequest`, an exchange ms to wait until, :data:`FOREVER`
    (only an event moves it on) or None (finished)."""

    def __init__(
        self, spec: TradeSpec, stream_first_ms: int = 3000, stats: Counter | None = None
    ) -> None:
        super().__init__(spec, stats if stats is not None else Counter())
        self.started = False  # the backfill walk has begun
        self.walking = False  # a REST walk is under way
        self.stream_down = False
        self.consecutive = spec.consecutive_ids
        self.held: deque[Trade] = deque()
        self._stream_first_ms = stream_first_ms
        self._start_by: int | None = None
        self._again = False  # the connection broke during a walk: walk again after it
        self._gap: tuple[int, int] | None = None  # the id gap the walk under way fills
        self._gap_tries = 0
        self._absent_run = 0
        self._final_walk = False
        self._heard = False  # the stream has talked at least once

    @property
    def wants_io(self) -> bool:
        return not self.done and self.walking and self._asked is None

    # -- events (loop thread, inside ccxt's handler) -----------------------------------------

    def on_event(self, event: StreamEvent) -> None:
        if self.done:
            return
        if isinstance(event, Trades):
            self._on_trades(event)
        elif isinstance(event, Healthy):
            first, down = not self._heard, self.stream_down
            self._heard, self.stream_down = True, False
            if not self.started:
                self._start()
            elif down or first:
                # after a break; or the first word of a stream that was silent past
                # stream_first_ms (the backfill started without it): REST covers the seam
                self._fill()
        elif isinstance(event, Broken):
            if not self.stream_down:
                self.stream_down = True
                if self.live and not self.broken:  # (the backfill ends with LIVE anyway)
                    self.outbox.append(Status("CONNBROKEN", event.reason))
                    self.broken = True
        elif isinstance(event, Fatal):
            self.done = True
            self.outbox.append(Status("DISCONNECTED", event.reason, fatal=True))

    def _on_trades(self, event: Trades) -> None:
        trades, bad = parse_trades(event.trades)
        for raw, why in bad:
            self.rejected += 1
            log.warning("%s: streamed trade rejected (%s): %r", self.spec.label, why, raw)
        self.stats["trades_streamed"] += len(trades)
        self.held.extend(trades)
        if len(self.held) > _MAX_HELD:
            self.held.clear()  # the walk under way (or this one) brings them from REST
            self._fill()
            return
        if self.live and not self.walking and not self.stream_down:
            self._release(event.recv_ms)

    # -- REST walks --------------------------------------------------------------------------

    def _start(self) -> None:
        self.started = True
        self.walking = True  # the backfill: TradePollingMachine's first walk

    def _fill(self) -> None:
        """Walk REST from the last delivered trade to the present (or to the held trades)."""
        if not self.started:
            return
        if self.walking:
            self._again = True
            return
        self.walking = True
        self.stats["trade_fills"] += 1
        g = self.gate
        if self.spec.paging == "id" and g.last_seq is not None:
            self.next_id = g.last_seq + 1
        elif self.spec.paging == "time" and g.newest_ms is not None:
            self.cursor_ms = g.newest_ms
        self._back, self._back_cursor = [], None

    def next_action(self, now_ms: int) -> TradeRequest | int | float | None:
        if self.done:
            return None
        if not self.started:
            if self._start_by is None:
                self._start_by = now_ms + self._stream_first_ms
            if now_ms < self._start_by:
                return self._start_by
            self._start()
        if self.walking:
            return super().next_action(now_ms)
        until = self.spec.until_ms
        if until is not None:
            end = until + self.spec.poll_interval_ms
            if now_ms < end:
                return end
            self._final_walk = True
            self._fill()  # a last look for trades before todate the stream lost
            return self.next_action(now_ms)
        return FOREVER

    def on_trades(self, raws: list, now_ms: int) -> None:
        last = self.gate.last_seq
        super().on_trades(raws, now_ms)
        self.stats["trades_rest"] += len(raws)
        if self.gate.last_seq != last:
            self._absent_run = 0
        if self.walking and not self.done and self.held and self._meets(self.held[0]):
            self._caught_up(now_ms)  # the walk reached what the stream holds

    def _meets(self, t: Trade) -> bool:
        seq, last = t.seq, self.gate.last_seq
        return seq is not None and last is not None and last >= seq - 1

    def _caught_up(self, now_ms: int) -> None:
        if not self.walking:
            return
        self.walking = False
        if self._again:
            self._again = False
            self._fill()
            return
        s = self.spec
        if s.until_ms is not None and (self._final_walk or now_ms >= s.until_ms):
            self._release(now_ms)
            if not self.done and self._final_walk:
                self._finish("todate reached")
            return
        if not self.live:
            self.live = True
            self.outbox.append(Status("LIVE"))
        elif self.broken and not self.stream_down:
            self.outbox.append(Status("LIVE", "caught up after a break"))
        if not self.stream_down:
            self.broken = False
        self._release(now_ms)

    def _release(self, now_ms: int) -> None:
        """Deliver the held trades in order, up to an id gap (which starts a fill)."""
        held = self.held
        while held and not self.done:
            t = held[0]
            if self._gap_before(t, now_ms):
                return
            held.popleft()
            self._deliver([t])
        self._gap = None

    def _gap_before(self, t: Trade, now_ms: int) -> bool:
        seq, last = t.seq, self.gate.last_seq
        if not self.consecutive or seq is None or last is None or seq <= last + 1:
            return False
        gap = (last + 1, seq - 1)
        if gap != self._gap:
            self._gap, self._gap_tries = gap, 0
        if self._gap_tries >= _GAP_TRIES:  # REST does not have them either: absent
            self.stats["trade_gaps_absent"] += 1
            self._absent_run += 1
            if self._absent_run >= _ABSENT_RUN:
                self.consecutive = False
                log.warning(
                    "%s: %d id gaps in a row are absent from REST too: this venue's trade "
                    "ids are not consecutive; id gaps no longer trigger REST fills",
                    self.spec.label,
                    _ABSENT_RUN,
                )
            self._gap = None
            return False
        if self._gap_tries:
            self._resume_at = now_ms + _GAP_RETRY_MS
        self._gap_tries += 1
        self.stats["trade_gap_fills"] += 1
        self._fill()
        return True
