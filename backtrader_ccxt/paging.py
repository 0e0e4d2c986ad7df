"""Which REST page to ask for next, and what a page means: the pagination and polling rules.

Sans-I/O: :class:`Paginator` plans ``fetch_ohlcv(since, limit)`` calls and turns the answers
into closed bars; :class:`PollSchedule` says when the next live poll is due. The blocking
driver (:mod:`.rest`) and the asyncio driver (:mod:`.live.stream`) run the same rules.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

from .bars import Bar, closed_bars
from .timeframes import Timeframe

__all__ = ["Page", "Paginator", "PollSchedule"]


@dataclass(frozen=True)
class Page:
    """One ``fetch_ohlcv`` call to make."""

    since_ms: int
    limit: int


class Paginator:
    """Walks closed candles from ``since_ms`` (inclusive) to ``until_ms`` (exclusive) or to
    the last closed candle, one page at a time.

    - the next page starts just past the last row received, so no page is dropped or repeated;
    - rows at or before the cursor (overlap) and at or after ``until_ms`` are discarded;
    - a forming candle ends the walk: everything after it is not closed yet;
    - an empty page ends the walk when its window reaches the present, otherwise the window
      is skipped (a venue with no candles there, e.g. before the listing);
    - ``drop_newest``: the newest closed row of a page is not trusted while its close is less
      than ``newest_grace_ms`` before the request time (for venues whose REST keeps changing a
      candle for a moment after its close); it ends the walk and is asked for again. Default
      grace: a quarter bar, at most 1 s (the feed passes its ``poll_grace``, so a poll due at
      close + grace trusts the candle it polls for: one request per bar, no bar late).
    """

    def __init__(
        self,
        tf: Timeframe,
        since_ms: int,
        page_limit: int,
        until_ms: int | None = None,
        drop_newest: bool = False,
        newest_grace_ms: int | None = None,
    ) -> None:
        if page_limit < 1:
            raise ValueError(f"page_limit must be >= 1, got {page_limit}")
        self.tf = tf
        self.cursor = since_ms
        self.page_limit = page_limit
        self.until_ms = until_ms
        self.drop_newest = drop_newest
        if newest_grace_ms is None:
            newest_grace_ms = min(1000, tf.ms // 4)
        self.newest_grace_ms = max(0, int(newest_grace_ms))
        self.done = False
        self.pages = 0

    def next_page(self, now_ms: int) -> Page | None:
        """The next call to make, or ``None`` when the walk is complete."""
        if self.done:
            return None
        if self.until_ms is not None and self.cursor >= self.until_ms:
            self.done = True
        elif self.tf.close_of(self.cursor) > now_ms:
            self.done = True  # the candle at the cursor is still forming
        if self.done:
            return None
        return Page(self.cursor, self.page_limit)

    def accept(self, rows: Sequence[Sequence], now_ms: int) -> list[Bar]:
        """Take the answer to the last :meth:`next_page`; return the new closed bars."""
        self.pages += 1
        lo, hi = self.cursor, self.until_ms
        opens = [int(r[0]) for r in rows if r]
        fresh = [r for r in rows if r and int(r[0]) >= lo and (hi is None or int(r[0]) < hi)]
        beyond_until = hi is not None and any(t >= hi for t in opens)
        if not fresh:
            window_end = self._window_end(lo)
            if beyond_until:
                self.cursor = max(self.cursor, hi)  # the rest of the range has no candle
                self.done = True
            elif window_end >= now_ms:
                self.done = True
            else:
                self.cursor = window_end
            return []
        bars = closed_bars(fresh, self.tf, now_ms)
        newest = max(int(r[0]) for r in fresh)
        if self.drop_newest and bars and now_ms - bars[-1].close_ms < self.newest_grace_ms:
            bars.pop()
        held = len(bars) < len({int(r[0]) for r in fresh})
        if beyond_until and not held:
            # Past todate with every row before it taken. A row held back (forming, or not
            # trusted yet, by the request's time) is still owed even when the page also
            # shows a candle at or after todate (the venue answered late, or ccxt's rate
            # limiter held the request): skipping to todate would lose the last bar.
            self.cursor = max(self.cursor, hi)
        if beyond_until or held:
            # past todate, or a row was held back (forming or untrusted): the walk ends here
            self.done = True
        if bars:
            self.cursor = max(self.cursor, bars[-1].close_ms)
        elif not self.done:
            self.cursor = self.tf.close_of(newest)
        return bars

    def _window_end(self, start_ms: int) -> int:
        """Where a full page starting at ``start_ms`` ends (calendar-exact for months)."""
        if not self.tf.is_calendar:
            return start_ms + self.page_limit * self.tf.ms
        end = start_ms
        for _ in range(self.page_limit):
            end = self.tf.close_of(end)
        return end


class PollSchedule:
    """When the next live REST poll is due.

    A bar is due at its close time plus ``grace`` (exchange clock). A poll that finds no new
    closed candle (the venue is late, or it omits candles without trades) is retried after
    ``grace``, doubling, but never later than the next candle's due time.
    """

    def __init__(self, tf: Timeframe, next_open_ms: int, grace_ms: int) -> None:
        self.tf = tf
        self.next_open_ms = next_open_ms
        self.grace_ms = max(0, grace_ms)
        self._misses = 0
        self._retry_at: int | None = None

    def due_ms(self) -> int:
        if self._retry_at is not None:
            return self._retry_at
        return self.tf.close_of(self.next_open_ms) + self.grace_ms

    def delivered(self, last_open_ms: int) -> None:
        """A poll delivered bars up to ``last_open_ms``: wait for the one after it."""
        self.next_open_ms = self.tf.close_of(last_open_ms)
        self._misses = 0
        self._retry_at = None

    def missed(self, now_ms: int) -> None:
        """A poll found nothing new: retry sooner than the next candle, backing off."""
        self._misses += 1
        delay = max(self.grace_ms, 50) * (2 ** min(self._misses - 1, 10))
        boundary = self.tf.close_of(self.next_open_ms)
        while boundary <= now_ms:
            boundary = self.tf.close_of(boundary)
        self._retry_at = min(now_ms + delay, boundary + self.grace_ms)
