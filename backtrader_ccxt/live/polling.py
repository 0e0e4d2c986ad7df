"""REST polling: backfill, then one poll when each bar is due.

:class:`PollingMachine` holds the rules and no I/O: it says what to fetch or how long to
wait, and turns answers and failures into bars and status events. :class:`PollingSource`
drives it from backtrader's thread with a blocking ccxt instance (the default mode); the
threaded poller drives the same machine on the store's loop (:mod:`.manager`).
"""

from __future__ import annotations

import logging
import threading
import time
from collections import deque

from ..bars import Bar, BarGate, Status
from ..errors import ExchangeRequestError, FatalExchangeError
from ..paging import Page, Paginator, PollSchedule
from ..rest import RestTarget, Stopped, fetch_page
from ..retry import Backoff
from ..spec import FeedSpec

log = logging.getLogger(__name__)

__all__ = ["BlockingSource", "PollingMachine", "PollingSource"]


class PollingMachine:
    """Backfill then poll, as a state machine.

    ``next_action(now)`` returns a :class:`~backtrader_ccxt.paging.Page` to fetch, an ``int``
    (exchange ms to wait until) or ``None`` (finished). Results go to :meth:`on_rows`, failures
    (retries already exhausted) to :meth:`on_failure`. Bars and statuses to deliver collect in
    ``outbox`` in delivery order.
    """

    def __init__(self, spec: FeedSpec) -> None:
        self.spec = spec
        self.outbox: deque[Bar | Status] = deque([Status("DELAYED", "backfilling over REST")])
        self.phase = "backfill"
        self.pager: Paginator | None = self._pager(spec.since_ms)
        self.schedule: PollSchedule | None = None
        self.gate = BarGate()
        self._walk_started_ms = 0  # when the poll under way (or the last) was asked for
        self.broken = False
        self.polls = 0
        self._polled_bars = 0
        self._resume_at: int | None = None
        self._failures = Backoff(spec.reconnect_delay, spec.max_reconnect_delay)

    def _pager(self, since_ms: int) -> Paginator:
        s = self.spec
        return Paginator(s.tf, since_ms, s.page_limit, s.until_ms, s.drop_newest, s.grace_ms)

    @property
    def done(self) -> bool:
        return self.phase == "done"

    def next_action(self, now_ms: int) -> Page | int | None:
        if self.phase == "done":
            return None
        if self._resume_at is not None and now_ms < self._resume_at:
            return self._resume_at
        self._resume_at = None
        if self.pager is not None:
            page = self.pager.next_page(now_ms)
            if page is not None:
                return page
            self._walk_finished(now_ms)
            return self.next_action(now_ms)
        assert self.schedule is not None
        if self.spec.until_ms is not None and self.schedule.next_open_ms >= self.spec.until_ms:
            self._finish("todate reached")
            return None
        due = self.schedule.due_ms()
        if now_ms < due:
            return due
        self.polls += 1
        self._polled_bars = 0
        self._walk_started_ms = now_ms
        self.pager = self._pager(self.schedule.next_open_ms)
        return self.next_action(now_ms)

    def _walk_finished(self, now_ms: int) -> None:
        assert self.pager is not None
        cursor = self.pager.cursor
        self.pager = None
        if self.phase == "backfill":
            if self.spec.historical:
                self._finish("historical backfill complete")
                return
            if self.spec.until_ms is not None and cursor >= self.spec.until_ms:
                self._finish("todate reached")
                return
            self.phase = "live"
            self.broken = False
            self.schedule = PollSchedule(self.spec.tf, cursor, self.spec.grace_ms)
            self.outbox.append(Status("LIVE"))
            return
        assert self.schedule is not None
        until = self.spec.until_ms
        if until is not None and (
            cursor >= until or self._walk_started_ms >= until + self.spec.tf.ms + self.spec.grace_ms
        ):
            # past todate, or a poll that left a bar after the last candle was due still found
            # nothing (an omitted candle never comes): a poll under way at that moment still
            # counts, so a venue that answers late does not cost the last bar
            self._finish("todate reached")
            return
        if self._polled_bars:
            self.schedule.delivered(self.gate.last_open_ms)
        else:
            self.schedule.missed(now_ms)
        if self.broken:
            self.broken = False
            self.outbox.append(Status("LIVE", "caught up after a REST failure"))

    def _finish(self, why: str) -> None:
        self.phase = "done"
        self.pager = None
        self.outbox.append(Status("DISCONNECTED", why))

    def on_rows(self, rows: list, now_ms: int) -> None:
        assert self.pager is not None
        self._failures.reset()
        for bar in self.pager.accept(rows, now_ms):
            if self.gate.admit(bar):
                self._polled_bars += 1
                self.outbox.append(bar)

    def on_failure(self, exc: ExchangeRequestError, now_ms: int) -> None:
        """A fetch failed for good (its retries are spent)."""
        if isinstance(exc, FatalExchangeError) or (
            self.phase == "backfill" and self.spec.historical
        ):
            self.outbox.append(Status("DISCONNECTED", str(exc), fatal=True))
            self.phase = "done"
            self.pager = None
            return
        delay = self._failures.next_delay()
        self._resume_at = now_ms + int(delay * 1000)
        if not self.broken:
            self.broken = True
            self.outbox.append(Status("CONNBROKEN", str(exc)))
        log.warning("%s: REST unavailable, next try in %.1fs: %s", self.spec.label, delay, exc)


class BlockingSource:
    """A sans-I/O machine driven from backtrader's own thread (no loop thread needed).

    ``get(timeout)`` returns the next item of the machine's outbox, doing the requests it asks
    for (:meth:`_serve`) and otherwise waiting at most ``timeout`` seconds in all (on the stop
    event, so ``stop()`` ends a wait at once); then it returns ``None``. The machine answers
    ``next_action(now)`` with a request, a time (exchange ms) to wait until, or ``None``.
    """

    def __init__(self, machine, clock) -> None:
        self.machine = machine
        self._clock = clock
        self._stop = threading.Event()

    def start(self) -> None:
        pass

    def pending(self) -> int:
        return len(self.machine.outbox)

    def idle(self) -> bool:
        return False  # a request may be due: only get() knows

    @property
    def done(self) -> bool:
        return self.machine.done and not self.machine.outbox

    def get(self, timeout: float | None) -> Bar | Status | None:
        m = self.machine
        # timeout bounds the whole call, not each wait: failing fetches with short resume
        # delays would otherwise keep _load (and the CONNBROKEN notification) from cerebro
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            if m.outbox:
                return m.outbox.popleft()
            if self._stop.is_set():
                return None
            now = self._clock.safe_now_ms()
            action = m.next_action(now)
            if action is None:
                return None if not m.outbox else m.outbox.popleft()
            if not isinstance(action, int | float):
                try:
                    self._serve(action, now)
                except Stopped:
                    return None
                except ExchangeRequestError as exc:
                    m.on_failure(exc, self._clock.now_ms())
                continue
            wait_s = self._clock.seconds_until(action + self._clock.margin_ms)
            if deadline is not None:
                left = deadline - time.monotonic()
                if wait_s > left:
                    self._stop.wait(max(0.0, left))
                    return None
            self._stop.wait(wait_s)

    def _serve(self, action, asked_ms: int) -> None:
        """Make the request ``action`` and hand the answer to the machine (retries spent:
        raise the :class:`~..errors.ExchangeRequestError`; asked to stop: raise ``Stopped``)."""
        raise NotImplementedError

    def _wait(self, delay: float) -> bool:
        """For the retry loops: wait ``delay`` seconds; False when asked to stop."""
        return not self._stop.wait(delay)

    def stop(self) -> None:
        self._stop.set()


class PollingSource(BlockingSource):
    """The default live mode: :class:`PollingMachine` driven from backtrader's own thread."""

    def __init__(self, exchange, spec: FeedSpec, clock, target: RestTarget) -> None:
        super().__init__(PollingMachine(spec), clock)
        self._exchange = exchange
        self._target = target

    def _serve(self, page: Page, asked_ms: int) -> None:
        departed: list = []
        rows = fetch_page(
            self._exchange, self._target, page.since_ms, page.limit, self._wait, departed
        )
        # closed-ness judged at the time the request left (after ccxt's limiter)
        if departed and (left := self._clock.at_ms(departed[-1])) is not None:
            asked_ms = max(asked_ms, left - self._clock.margin_ms)
        self.machine.on_rows(rows, asked_ms)
