"""Fill a :class:`~.cache.HistoryCache` with closed candles: the ``download`` command.

Only what the cache does not cover yet is fetched, so an interrupted download (Ctrl-C, a
crash, a lost connection) resumes where it stopped: every page is committed to the cache as
soon as it arrives. Pages are planned by the package's own :class:`~.paging.Paginator` and
fetched with the retries of :func:`~.rest.walk`, on the store's exchange and clock.
"""

from __future__ import annotations

import argparse
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .cache import HistoryCache, cache_key
from .errors import ConfigurationError
from .paging import Paginator
from .rest import RestTarget, walk
from .retry import Backoff
from .store import CCXTStore
from .timeframes import Timeframe

__all__ = [
    "DownloadProgress",
    "DownloadResult",
    "cache_key",
    "download",
    "missing_spans",
    "parse_time",
]

_DEFAULT_PAGE = 500
_EPOCH = datetime(1970, 1, 1, tzinfo=timezone.utc)


@dataclass(frozen=True)
class DownloadProgress:
    """Where a download stands, after each page (handed to the ``progress`` callback)."""

    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int
    page_since_ms: int
    cursor_ms: int
    pages: int
    rows: int
    todo_ms: int
    done_ms: int

    @property
    def fraction(self) -> float:
        """Share of the missing span fetched so far, 0..1."""
        return 1.0 if self.todo_ms <= 0 else min(1.0, self.done_ms / self.todo_ms)


@dataclass
class DownloadResult:
    """What a download did, and what the cache now covers."""

    exchange: str
    symbol: str
    timeframe: str
    since_ms: int
    until_ms: int
    pages: int = 0
    rows: int = 0
    coverage: list[tuple[int, int]] = field(default_factory=list)


def missing_spans(
    coverage: list[tuple[int, int]], since_ms: int, until_ms: int
) -> list[tuple[int, int]]:
    """The parts of ``[since_ms, until_ms)`` that no covered interval holds, in order."""
    out = []
    cursor = since_ms
    for start, end in sorted(coverage):
        if end <= cursor:
            continue
        if start >= until_ms:
            break
        if start > cursor:
            out.append((cursor, start))
        cursor = max(cursor, end)
    if cursor < until_ms:
        out.append((cursor, until_ms))
    return out


def download(
    store: CCXTStore,
    cache: HistoryCache,
    symbol: str,
    timeframe: str,
    since_ms: int | None = None,
    until_ms: int | None = None,
    *,
    bars: int | None = None,
    page_limit: int | None = None,
    key: str | None = None,
    progress: Callable[[DownloadProgress], None] | None = None,
    stop: threading.Event | None = None,
) -> DownloadResult:
    """Fetch the closed candles ``[since_ms, until_ms)`` (open times; ``until_ms`` None = up
    to the last closed candle) that ``cache`` lacks, and store them page by page.

    ``bars`` instead of ``since_ms``: the last ``bars`` closed candles. ``key`` is the cache's
    exchange key (default :func:`cache_key`). ``progress`` is called after each stored page; an
    exception it raises (``KeyboardInterrupt`` included) ends the download, keeping what was
    stored. ``stop`` (an Event) interrupts a retry wait. The store is started (markets, clock)
    but not stopped: it may be shared.
    """
    if (since_ms is None) == (bars is None):
        raise ConfigurationError("give exactly one of since_ms and bars")
    if bars is not None and (not isinstance(bars, int) or isinstance(bars, bool) or bars < 1):
        raise ConfigurationError(f"bars must be a positive integer, got {bars!r}")
    if page_limit is not None and (not isinstance(page_limit, int) or page_limit < 1):
        raise ConfigurationError(f"page_limit must be a positive integer, got {page_limit!r}")
    store.start()
    sym = store.check_symbol(symbol)
    tf = store.resolve_timeframe(timeframe, 1)
    key = key or cache_key(store)
    now = store.clock.safe_now_ms()
    if bars is not None:
        since_ms = _forming_open(tf, now) - bars * tf.ms
    assert since_ms is not None
    end = now if until_ms is None else min(int(until_ms), now)
    if since_ms >= end:
        raise ConfigurationError(
            f"nothing to download: since {fmt_ms(since_ms)} is not before until {fmt_ms(end)}"
        )
    result = DownloadResult(key, sym, tf.ccxt, since_ms, end)
    limit_max = store.max_page(sym)
    limit = min(page_limit or limit_max or _DEFAULT_PAGE, limit_max or 10**9)
    target = RestTarget(
        symbol=sym,
        tf=tf,
        retries=store.retries,
        backoff=Backoff(store.retry_delay, store.retry_max_delay),
        redact=store.redact,
        stats=store.stats,
    )
    stop = stop or threading.Event()

    def wait(delay: float) -> bool:
        return not stop.wait(delay)

    gaps = missing_spans(cache.coverage(key, sym, tf.ccxt), since_ms, end)
    todo = sum(b - a for a, b in gaps)
    done = 0
    for gap_start, gap_end in gaps:
        last = gap_end == end
        pager = Paginator(tf, gap_start, limit, until_ms if last else gap_end)
        pages = walk(store.exchange, target, pager, store.clock.safe_now_ms, wait)
        try:
            while True:
                page_since = pager.cursor
                try:
                    closed = next(pages)
                except StopIteration:
                    break
                cache.write(
                    key,
                    sym,
                    tf.ccxt,
                    [b.row() for b in closed],
                    store.clock.safe_now_ms(),
                    since_ms=page_since,
                    until_ms=pager.cursor,
                )
                result.pages += 1
                result.rows += len(closed)
                done += max(0, min(pager.cursor, gap_end) - page_since)
                if progress is not None:
                    progress(
                        DownloadProgress(
                            sym,
                            tf.ccxt,
                            since_ms,
                            end,
                            page_since,
                            pager.cursor,
                            result.pages,
                            result.rows,
                            todo,
                            done,
                        )
                    )
        finally:
            pages.close()
            result.coverage = cache.coverage(key, sym, tf.ccxt)
    result.coverage = cache.coverage(key, sym, tf.ccxt)
    return result


def _forming_open(tf: Timeframe, now_ms: int) -> int:
    return now_ms - now_ms % tf.ms if not tf.is_calendar else now_ms - tf.ms


def fmt_ms(ms: int) -> str:
    return (_EPOCH + timedelta(milliseconds=ms)).strftime("%Y-%m-%d %H:%M:%S UTC")


def parse_time(text: str) -> int:
    """A time for ``--since``/``--until`` as epoch ms: an ISO date or datetime (naive = UTC,
    ``Z`` or an offset accepted), or an integer of epoch milliseconds."""
    text = text.strip()
    if text.lstrip("-").isdigit():
        return int(text)
    if text.endswith(("Z", "z")):
        text = text[:-1] + "+00:00"
    try:
        dt = datetime.fromisoformat(text)
    except ValueError:
        raise argparse.ArgumentTypeError(
            f"{text!r} is not a time; use an ISO date/datetime such as 2024-01-01 or "
            "2024-01-01T12:00:00 (UTC), or epoch milliseconds"
        ) from None
    if dt.tzinfo is None:
        dt = dt.replace(tzinfo=timezone.utc)
    return int((dt - _EPOCH) / timedelta(milliseconds=1))
