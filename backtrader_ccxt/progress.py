"""What a feed says about its backfill: progress at INFO while a long one runs, and one
WARNING when the venue's history is shorter than what was asked for.

Pure apart from logging: the feed calls :meth:`BackfillReport.bar` for each bar delivered
before it is live (or before a historical feed ends) and :meth:`done` once.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from datetime import datetime, timedelta

log = logging.getLogger("backtrader_ccxt.feed")

__all__ = ["BackfillReport"]

_EPOCH = datetime(1970, 1, 1)


def _dt(ms: int) -> datetime:
    return _EPOCH + timedelta(milliseconds=ms)


class BackfillReport:
    """Progress and shortfall of one feed's backfill.

    ``asked``: the closed candles the window holds (``backfill_bars``, or the count between
    ``fromdate`` and ``todate``/now); ``exact``: whether ``asked`` was a count the user gave
    (a window may legitimately hold fewer: venues omit candles without trades).
    """

    def __init__(
        self,
        label: str,
        since_ms: int,
        end_ms: int,
        asked: int,
        exact: bool,
        every_s: float = 10.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.label, self.since_ms, self.end_ms = label, since_ms, end_ms
        self.asked, self.exact = asked, exact
        self.every_s, self._clock = every_s, clock
        self.delivered = 0
        self.finished = False
        self._first_ms: int | None = None
        self._next_log = clock() + every_s

    def bar(self, close_ms: int) -> None:
        self.delivered += 1
        if self._first_ms is None:
            self._first_ms = close_ms
        if self.delivered & 0xFF:  # look at the clock once every 256 bars
            return
        now = self._clock()
        if now >= self._next_log:
            self._next_log = now + self.every_s
            span = max(1, self.end_ms - self.since_ms)
            pct = min(100.0, 100.0 * (close_ms - self.since_ms) / span)
            log.info(
                "%s backfill: %d bars so far, up to %s UTC (%.0f%% of the window)",
                self.label,
                self.delivered,
                _dt(close_ms),
                pct,
            )

    def done(self) -> None:
        if self.finished:
            return
        self.finished = True
        short = self.delivered < self.asked if self.exact else self.delivered < self.asked * 0.9
        if not short:
            return
        first = f"first bar {_dt(self._first_ms)} UTC" if self._first_ms else "no bar at all"
        log.warning(
            "%s backfill shorter than asked: %d bars asked, %d delivered (%s); the venue's "
            "history starts later or it omits candles without trades",
            self.label,
            self.asked,
            self.delivered,
            first,
        )
