"""One WebSocket feed's rules, as a sans-I/O state machine (the stream twin of
:class:`~.polling.PollingMachine`).

Events in (:mod:`.events`: frames in arrival order, breaks, recoveries, fatal errors; REST
answers and failures); out: REST pages to fetch, bars and statuses in delivery order
(``outbox``). The driver (:mod:`.manager`) does the I/O; nothing here waits or talks.

The rules:

- **History first.** The backfill walks REST from ``since_ms``; no streamed bar leaves
  before it completes (streamed finals are held meanwhile). It starts once the stream talks
  (or after ``stream_first_ms`` without a word), so the history reaches the first candle
  the stream will show and no gap needs filling at the seam. A backfill that fails is
  retried with backoff, CONNBROKEN meanwhile.
- **Closed, by the venue's word.** A frame the venue flags final (``Frame.final is True``)
  is the candle's final state: it leaves at once if it follows the last delivered bar
  without a gap.
- **Closed, by timing** (frames without a flag, ``final is None``): the candle is closed
  when a later candle arrives; its streamed values are trusted only if the frame that last
  *changed* them arrived at least ``margin_ms`` after the close (exchange clock: so it was
  sent after the close, not a late partial), on the same connection as the successor, and
  no garbled frame came in between. A frame the venue flags partial (``final is False``)
  is never closed by timing: on such venues a candle without its flagged final comes from
  REST (OKX sends the final of T after T+1's first update at times, so the successor
  proves nothing there).
- Frames that go backwards (an older candle, or a state of the forming candle with lower
  volume or high, or a higher low: a re-sent older partial) are ignored.
- **Exactly once, no gap.** A bar leaves only if it opens after the last delivered one, and
  only once every candle before it is *settled* (delivered, or known absent from REST). A
  flagged final after a gap is held while REST fills the gap, then leaves. An untrusted
  timing close is filled from REST.
- **On time.** If nothing closed the next candle by its close + ``wait_ms`` (the feed's
  grace, or the venue's final lag if longer), it is confirmed over REST; a confirmation that
  finds nothing new (venue late, or an omitted empty candle) backs off, up to a bar. REST
  rows count as closed only once their close is a grace behind the request (a venue's REST
  may still be finalising the candle), so an untrusted timing close waits for that too.
  Confirmations go on while the stream is broken: they are its fills.
- **Breaks.** After a break, once the stream talks again, REST fills from the last settled
  candle, then LIVE. A fatal stream or REST error ends the feed (DISCONNECTED). The feed
  ends at ``todate``.
"""

from __future__ import annotations

import logging
import math
from collections import Counter, deque
from dataclasses import dataclass

from ..bars import Bar, BarGate, Status, bar_from_row
from ..errors import ExchangeRequestError, FatalExchangeError
from ..paging import Page, Paginator
from ..retry import Backoff
from ..spec import FeedSpec
from .events import Broken, Fatal, Frame, Healthy, StreamEvent

log = logging.getLogger(__name__)

__all__ = ["FOREVER", "FinalLag", "StreamMachine"]

#: what :meth:`StreamMachine.next_action` returns when only an event can move it on
FOREVER = math.inf

_MAX_HELD = 10_000  # flagged finals waiting for a fill; beyond that REST brings them too
_GAP_TRIES = 3  # REST walks that find nothing before a held final, before the gap is absent


class FinalLag:
    """How late flagged finals have been arriving, lately (exchange ms after their close).

    Shared by the feeds of a store: a loop busy with 1,000 finals at every close reads the last
    of them hundreds of ms late, and a confirmation sent at close + grace would ask REST for a
    candle whose final is already in a socket buffer. The estimate is the largest recent
    delay, halving every ``half_life_ms`` of the exchange clock.
    """

    def __init__(self, half_life_ms: int = 600_000) -> None:
        self.half_life_ms = half_life_ms
        self._value = 0.0
        self._at = 0
        self._peers: Counter = Counter()  # live machines per bar size (ms)
        self._final_closes: dict[int, int] = {}  # bar size -> latest close with a final

    def join(self, tf_ms: int) -> None:
        self._peers[tf_ms] += 1

    def leave(self, tf_ms: int) -> None:
        self._peers[tf_ms] = max(0, self._peers[tf_ms] - 1)

    def peers(self, tf_ms: int) -> int:
        """How many feeds of this bar size share the estimate."""
        return self._peers[tf_ms]

    def final_seen(self, tf_ms: int, close_ms: int) -> None:
        """A flagged final of a candle of this size closing at ``close_ms`` arrived (for any
        feed, stale or not): the venue has been sending that close's finals."""
        if close_ms > self._final_closes.get(tf_ms, -1):
            self._final_closes[tf_ms] = close_ms

    def latest_final_close(self, tf_ms: int) -> int | None:
        """The latest close of this bar size any feed has had a flagged final for."""
        return self._final_closes.get(tf_ms)

    def observe(self, delay_ms: int, at_ms: int) -> None:
        self._value = max(float(delay_ms), self.value(at_ms))
        self._at = at_ms

    def value(self, at_ms: int) -> float:
        if self._value <= 0:
            return 0.0
        return self._value * 0.5 ** (max(0, at_ms - self._at) / self.half_life_ms)


@dataclass
class _Forming:
    """The candle the stream is forming, as far as the timing rule needs to know it."""

    bar: Bar
    changed_ms: int  # arrival of the frame that last changed its values
    epoch: int  # connection of that frame
    flagged: bool = False  # the venue marked a frame of it partial: timing cannot close it
    tainted: bool = False  # a garbled frame arrived while it was forming


class StreamMachine:
    """Backfill, then streamed closes with REST fills and confirmations.

    ``next_action(now)`` returns a :class:`~backtrader_ccxt.paging.Page` to fetch, a time
    (exchange ms) to wake at if no event comes first (:data:`FOREVER` when only an event
    can help), or ``None`` (finished). Feed events to :meth:`on_event`, REST answers to
    :meth:`on_rows` (with the time the request left), failures (retries spent) to
    :meth:`on_failure`. Bars and statuses collect in ``outbox``.
    """

    def __init__(
        self,
        spec: FeedSpec,
        *,
        final_lag_ms: int = 0,
        margin_ms: int = 0,
        stats: Counter | None = None,
        stream_first_ms: int | None = None,
        final_lag: FinalLag | None = None,
    ) -> None:
        self.spec = spec
        self.tf = spec.tf
        self.outbox: deque[Bar | Status] = deque()
        self.gate = BarGate()
        self.phase = "backfill"  # -> "live" -> "done"
        #: every candle opening before this is settled: delivered, or known absent from REST
        self.settled_ms = spec.since_ms
        self.wait_ms = max(spec.grace_ms, final_lag_ms)
        self._lag = final_lag if final_lag is not None else FinalLag()
        self._lag.join(self.tf.ms)
        #: REST rows count as closed only once their close is this far behind the request (a
        #: venue's REST may still be finalising a candle just after its close), as in polling
        self._settle_ms = max(0, spec.grace_ms)
        self.margin_ms = max(0, margin_ms)
        self.stats: Counter = stats if stats is not None else Counter()
        self.held: dict[int, Bar] = {}
        self.forming: _Forming | None = None
        self.stream_broken = False
        self.rest_broken = False
        self.live = False
        # purpose of the next REST walk; the backfill waits for the stream if asked to
        self._need: str | None = None if stream_first_ms else "backfill"
        self._stream_first_ms = stream_first_ms
        self._backfill_at: int | None = None  # when to backfill if the stream stays silent
        self._stream_talked = False
        self._last_look = False  # the walk after todate's last due time has been asked for
        self._pager: Paginator | None = None
        self._purpose: str | None = None
        self._heal_requested = False  # the stream talks again: the next walk fills the gap
        self._heal_walk = False  # the walk under way is that one
        self._walk_bars = 0
        self._gap_tries = 0
        self._resume_at: int | None = None
        self._failures = Backoff(spec.reconnect_delay, spec.max_reconnect_delay)
        self._confirm_at: int | None = None
        first = max(spec.grace_ms, 100) / 1000
        self._confirm_backoff = Backoff(first, max(first, 1.0, self.tf.ms / 1000), jitter=False)

    # -- state -----------------------------------------------------------------------------

    @property
    def done(self) -> bool:
        return self.phase == "done"

    @property
    def wants_io(self) -> bool:
        """Whether a REST walk is wanted now (the driver should ask :meth:`next_action`)."""
        return self._need is not None and self._pager is None

    @property
    def last_open_ms(self) -> int | None:
        return self.gate.last_open_ms

    def due_ms(self) -> int:
        """When the next candle is confirmed over REST if the stream has not closed it: the
        wait, or longer while finals have lately been arriving later than that (up to a bar)."""
        close = self.tf.close_of(self.settled_ms)
        late = min(int(self._lag.value(close) * 1.5), self.tf.ms)
        due = close + max(self.wait_ms, late)
        if self._confirm_at is not None:
            due = max(due, self._confirm_at)
        return due

    # -- what to do next -------------------------------------------------------------------

    def next_action(self, now_ms: int) -> Page | float | int | None:
        if self.phase == "done":
            return None
        if self._resume_at is not None:
            if now_ms < self._resume_at:
                return self._resume_at
            self._resume_at = None
        if self.phase == "backfill" and self._pager is None and self._need is None:
            if self._stream_talked:
                # the candle that closed just before the stream's first frame can only come
                # from REST, and REST is trusted a grace after a close: start then, so the
                # history reaches the stream's first candle and LIVE means caught up
                self._stream_talked = False
                self._backfill_at = now_ms
                if not self.tf.is_calendar:
                    self._backfill_at = now_ms - now_ms % self.tf.ms + self._settle_ms
            if self._backfill_at is None:
                self._backfill_at = now_ms + (self._stream_first_ms or 0)
            if now_ms < self._backfill_at:
                return self._backfill_at
            self._need = "backfill"  # the stream is silent: history first all the same
        while True:
            if self._pager is not None:
                page = self._pager.next_page(now_ms - self._settle_ms)
                if page is not None:
                    self.stats["rest_pages"] += 1
                    self.stats[f"rest_{self._purpose}"] += 1
                    return page
                self._walk_done(now_ms)
                if self.phase == "done":
                    return None
                continue
            if self._need is not None:
                self._start_walk(self._need)
                continue
            break
        if self.phase != "live":
            return FOREVER  # the stream must talk first (or a REST retry is pending)
        until = self.spec.until_ms
        if until is not None and self.settled_ms >= until:
            self._finish("todate reached")
            return None
        if until is not None and now_ms >= until + self.tf.ms + self.wait_ms:
            # a bar past the last candle's due time: one more look, then it is absent (an
            # omitted empty candle); a look under way at that moment does not count
            if self._last_look:
                self._finish("todate reached")
                return None
            self._last_look = True
            self._start_walk("confirm")
            return self.next_action(now_ms)
        due = self.due_ms()
        if now_ms >= due:
            late_everywhere = self._finals_late_everywhere(now_ms)
            if late_everywhere is not None:
                return late_everywhere
            self._start_walk("confirm")
            return self.next_action(now_ms)
        return due

    def _finals_late_everywhere(self, now_ms: int) -> int | None:
        """When to look again, if no feed of this bar size has had its final for the candle
        due now (the venue is late with every final, not this stream: confirming now would
        send one REST call per feed at once); None to confirm now. Within a bar of the close
        only, and never while this stream is broken (confirmations are its fills then)."""
        if self.stream_broken or self._lag.peers(self.tf.ms) < 2:
            return None
        close = self.tf.close_of(self.settled_ms)
        latest = self._lag.latest_final_close(self.tf.ms)
        # finals came for the candle before (the venue flags them, they flow) and none yet
        # for this one, for any feed
        if latest is None or latest >= close or latest < self.settled_ms:
            return None
        if now_ms >= close + self.tf.ms:
            return None
        self.stats["confirm_deferred"] += 1
        return min(close + self.tf.ms, now_ms + max(50, self.wait_ms // 4))

    def _start_walk(self, purpose: str) -> None:
        self._need = None
        until = self.spec.until_ms
        if self.held:
            first = min(self.held)
            until = first if until is None else min(until, first)
        s = self.spec
        self._pager = Paginator(
            s.tf, self.settled_ms, s.page_limit, until, s.drop_newest, s.grace_ms
        )
        self._purpose = purpose
        self._walk_bars = 0
        # a walk that starts after the stream talks again covers the gap of the break
        self._heal_walk, self._heal_requested = self._heal_requested, False

    def _walk_done(self, now_ms: int) -> None:
        assert self._pager is not None
        purpose, cursor = self._purpose, self._pager.cursor
        self._pager = None
        self._purpose = None
        progress = cursor > self.settled_ms or self._walk_bars > 0
        self.settled_ms = max(self.settled_ms, cursor)
        if purpose == "backfill":
            self.phase = "live"
        if self.held and not progress and self.phase == "live":
            self._gap_unfilled(now_ms)
        else:
            self._gap_tries = 0
        self._release_held()
        if self.phase == "done":
            return
        if purpose == "confirm":
            if self._walk_bars:
                self._confirm_backoff.reset()
                self._confirm_at = None
            else:
                delay = int(self._confirm_backoff.next_delay() * 1000)
                self._confirm_at = now_ms + delay
        reason = ""
        if self.rest_broken:
            self.rest_broken = False
            reason = "REST restored"
        if self._heal_walk:
            self._heal_walk = False
            self.stream_broken = False
            reason = "stream restored and gap filled"
        self._update_health(reason)

    # -- REST answers ----------------------------------------------------------------------

    def on_rows(self, rows: list, asked_at_ms: int) -> None:
        """The answer to the last page; closed-ness is judged at the time it was asked."""
        if self._pager is None:
            return  # the feed ended while the page was under way
        self._failures.reset()
        for bar in self._pager.accept(rows, asked_at_ms - self._settle_ms):
            if self._deliver(bar, "rest"):
                self._walk_bars += 1
            if self.phase == "done":
                return

    def on_failure(self, exc: ExchangeRequestError, now_ms: int) -> None:
        """A page failed for good (its retries are spent)."""
        if isinstance(exc, FatalExchangeError):
            self._finish(str(exc), fatal=True)
            return
        if self.phase == "done":
            return
        self._need = self._purpose or self._need or "fill"
        self._heal_requested = self._heal_requested or self._heal_walk
        self._heal_walk = False
        self._pager = None
        self._purpose = None
        delay = self._failures.next_delay()
        self._resume_at = now_ms + int(delay * 1000)
        log.warning("%s: REST unavailable, next try in %.1fs: %s", self.spec.label, delay, exc)
        if not self.rest_broken:
            self.rest_broken = True
            if self.phase == "backfill":
                self.outbox.append(Status("CONNBROKEN", f"backfill failed; retrying: {exc}"))
            self._update_health(str(exc))

    # -- stream events ---------------------------------------------------------------------

    def on_event(self, event: StreamEvent) -> None:
        if self.phase == "done":
            return
        if isinstance(event, Frame):
            self.on_frame(event)
        elif isinstance(event, Broken):
            self.stream_broken = True
            self._heal_requested = self._heal_walk = False
            self.forming = None
            self._update_health(event.reason)
        elif isinstance(event, Healthy):
            if self.stream_broken and not (self._heal_requested or self._heal_walk):
                self._heal_requested = True  # the next walk to start covers the break
            if self.phase == "backfill" and self._pager is None and self._need is None:
                self._stream_talked = True  # the backfill can begin (see next_action)
            elif self._heal_requested:
                self._want("fill")
        elif isinstance(event, Fatal):
            self._finish(event.reason, fatal=True)

    def on_frame(self, frame: Frame) -> None:
        try:
            bar = bar_from_row(frame.row, self.tf)
        except (TypeError, ValueError, IndexError):
            self.stats["stream_malformed"] += 1
            if self.forming is not None:
                self.forming.tainted = True
            return
        if frame.final is True:
            self._lag.final_seen(self.tf.ms, bar.close_ms)
        last = self.gate.last_open_ms
        if last is not None and bar.open_ms <= last:
            self.stats["stream_stale"] += 1
            return
        if frame.final is True:
            if self.forming is not None and self.forming.bar.open_ms <= bar.open_ms:
                self.forming = None
            self._lag.observe(frame.recv_ms - bar.close_ms, frame.recv_ms)
            self._offer(bar)
            return
        cur = self.forming
        if cur is None or bar.open_ms > cur.bar.open_ms:
            if cur is not None and frame.final is None and not cur.flagged:
                self._close_by_successor(cur, frame)
            self.forming = _Forming(bar, frame.recv_ms, frame.epoch, flagged=frame.final is False)
            return
        if bar.open_ms < cur.bar.open_ms or _regressed(cur.bar, bar):
            self.stats["stream_stale"] += 1
            return
        if frame.final is False:
            cur.flagged = True
        if bar != cur.bar:  # a repeated state changes nothing, and proves nothing
            cur.bar = bar
            cur.changed_ms = frame.recv_ms
            cur.epoch = frame.epoch

    def _close_by_successor(self, cur: _Forming, successor: Frame) -> None:
        trusted = (
            not cur.tainted
            and cur.epoch == successor.epoch
            and cur.changed_ms >= cur.bar.close_ms + self.margin_ms
        )
        if trusted:
            self._offer(cur.bar)
        else:
            # REST, but not before close + wait (the due-time confirmation): a venue's REST
            # may still be finalising the candle right after its close
            self.stats["stream_untrusted"] += 1

    # -- delivery --------------------------------------------------------------------------

    def _offer(self, bar: Bar) -> None:
        """A candle the stream closed: deliver it now, or hold it until the gap is filled."""
        last = self.gate.last_open_ms
        if last is not None and bar.open_ms <= last:
            return
        if self.phase == "live" and bar.open_ms <= self.settled_ms:
            # even while a walk runs: the venue's own final beats a REST row that may not
            # be final yet (the gate drops the walk's copy)
            self._deliver(bar, "stream")
            return
        if len(self.held) < _MAX_HELD:
            self.held[bar.open_ms] = bar
        if self.phase == "live" and bar.open_ms > self.settled_ms:
            self._want("fill")

    def _want(self, purpose: str) -> None:
        """Ask for a REST walk (after the one under way, if any: it may have started too
        early to cover what is wanted now)."""
        if self._need is None and self.phase != "done":
            self._need = purpose

    def _deliver(self, bar: Bar, source: str) -> bool:
        until = self.spec.until_ms
        if until is not None and bar.open_ms >= until:
            self._finish("todate reached")
            return False
        if not self.gate.admit(bar):
            return False
        self.settled_ms = max(self.settled_ms, bar.close_ms)
        self.outbox.append(bar)
        self.stats[f"{source}_bars"] += 1
        if self.forming is not None and self.forming.bar.open_ms <= bar.open_ms:
            self.forming = None
        if source == "stream":
            self._confirm_at = None
            self._confirm_backoff.reset()
        for k in [k for k in self.held if k <= bar.open_ms]:
            del self.held[k]
        if until is not None and bar.close_ms >= until:
            self._finish("todate reached")
        return True

    def _gap_unfilled(self, now_ms: int) -> None:
        """REST had nothing for the gap before a held final (it lags behind the stream, or
        the venue leaves those candles out). Ask again a few times, backing off; then take
        the gap as absent, as REST itself says it is."""
        self._gap_tries += 1
        if self._gap_tries <= _GAP_TRIES:
            delay = int(self._confirm_backoff.next_delay() * 1000)
            self._resume_at = now_ms + delay
            return
        first = min(self.held)
        log.warning(
            "%s: REST has no candles from %d to %d after %d tries: taken as absent",
            self.spec.label,
            self.settled_ms,
            first,
            _GAP_TRIES,
        )
        self.stats["stream_gaps_absent"] += 1
        self._gap_tries = 0
        self.settled_ms = first

    def _release_held(self) -> None:
        while self.held and self.phase == "live":
            first = min(self.held)
            if first > self.settled_ms:
                self._want("fill")
                return
            self._deliver(self.held.pop(first), "stream")

    # -- status ----------------------------------------------------------------------------

    def _update_health(self, reason: str = "") -> None:
        healthy = self.phase == "live" and not (self.stream_broken or self.rest_broken)
        if healthy and not self.live:
            self.live = True
            self.outbox.append(Status("LIVE", reason))
        elif not healthy and self.live:
            self.live = False
            self.outbox.append(Status("CONNBROKEN", reason))

    def stop(self) -> None:
        """The feed was dropped: done, without a status (nobody reads it any more)."""
        if self.phase != "done":
            self.phase = "done"
            self._lag.leave(self.tf.ms)

    def _finish(self, why: str, fatal: bool = False) -> None:
        if self.phase == "done":
            return
        self.phase = "done"
        self._lag.leave(self.tf.ms)
        self._pager = None
        self._need = None
        self.held.clear()
        self.outbox.append(Status("DISCONNECTED", why, fatal=fatal))


def _regressed(cur: Bar, new: Bar) -> bool:
    """A state of the same candle older than the one held (a candle only accumulates)."""
    return new.volume < cur.volume or new.high < cur.high or new.low > cur.low
