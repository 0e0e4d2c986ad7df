"""Fill a :class:`~.cache.HistoryCache` with closed candles: the ``download`` command.

Only what the cache does not cover yet is fetched, so an interrupted download (Ctrl-C, a
crash, a lost connection) resumes where it stopped: every page is committed to the cache as
soon as it arrives. Pages are planned by the package's own :class:`~.paging.Paginator` and
fetched with the retries of :func:`~.rest.walk`, on the store's exchange and clock.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta, timezone

from .cache import HistoryCache, cache_key, default_cache_dir
from .cli import check_local_market, check_timeframe, exit_status, load_config, report_error
from .errors import BacktraderCCXTError, ConfigurationError
from .paging import Paginator
from .rest import RestTarget, walk
from .retry import Backoff
from .store import CCXTStore
from .timeframes import Timeframe
from .timeframes import parse as parse_tf

__all__ = [
    "DownloadProgress",
    "DownloadResult",
    "ProgressLine",
    "add_arguments",
    "cache_key",
    "download",
    "missing_spans",
    "parse_time",
    "run_download",
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
            f"nothing to download: since {_fmt(since_ms)} is not before until {_fmt(end)}"
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


def _fmt(ms: int) -> str:
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


class ProgressLine:
    """A progress callback that draws one line on ``stream`` (stderr): redrawn in place on
    a terminal, otherwise a new line at most every ``every`` seconds. Call :meth:`finish` at
    the end."""

    def __init__(self, stream=None, every: float = 5.0) -> None:
        self.stream = stream or sys.stderr
        self.every = every
        self._tty = bool(getattr(self.stream, "isatty", lambda: False)())
        self._last = float("-inf")
        self._text = ""
        self._shown = True

    def __call__(self, p: DownloadProgress) -> None:
        self._text = (
            f"{p.symbol} {p.timeframe} {p.fraction * 100:5.1f}%  {p.rows} candles  "
            f"{p.pages} requests  at {_fmt(min(p.cursor_ms, p.until_ms))}"
        )
        self._shown = False
        now = time.monotonic()
        if self._tty or now - self._last >= self.every:
            self._show()
            self._last = now

    def _show(self) -> None:
        if self._tty:
            self.stream.write("\r\x1b[K" + self._text)
        else:
            self.stream.write(self._text + "\n")
        self.stream.flush()
        self._shown = True

    def finish(self) -> None:
        """Show the last state and end the line."""
        if not self._shown:
            self._show()
        if self._tty and self._text:
            self.stream.write("\n")
            self.stream.flush()
        self._text = ""


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--exchange", default="binance", help="ccxt exchange id (default binance)")
    parser.add_argument("--symbol", default="BTC/USDT", help="unified symbol (default BTC/USDT)")
    parser.add_argument("--timeframe", default="1m", help="ccxt timeframe (default 1m)")
    when = parser.add_mutually_exclusive_group(required=True)
    when.add_argument(
        "--since",
        type=parse_time,
        help="first candle open: ISO date/datetime in UTC (2024-01-01) or epoch ms",
    )
    when.add_argument("--bars", type=int, help="instead of --since: the last N closed candles")
    parser.add_argument(
        "--until",
        type=parse_time,
        default=None,
        help="stop before candles opening at/after this time (default: up to the last closed)",
    )
    parser.add_argument(
        "--cache",
        default=None,
        help=f"cache directory or .sqlite3 file (default {default_cache_dir()})",
    )
    source = parser.add_mutually_exclusive_group()
    source.add_argument(
        "--config",
        default=None,
        help="ccxt constructor options as JSON, or @file.json (keys, options, urls)",
    )
    source.add_argument(
        "--local",
        action="store_true",
        help="download from the bundled local exchange (offline; cached under 'localexchange')",
    )
    parser.add_argument("--sandbox", action="store_true", help="use the exchange's testnet")
    parser.add_argument(
        "--page-limit", type=int, default=None, help="rows per request (default: the venue's max)"
    )
    parser.add_argument("--quiet", action="store_true", help="no progress line")
    export = parser.add_argument_group(
        'export (needs pandas: pip install "backtrader-ccxt[pandas]", [parquet] for Parquet)'
    )
    export.add_argument(
        "--format",
        choices=("csv", "parquet"),
        default=None,
        help="also write the downloaded range to a file (default: from --out's suffix)",
    )
    export.add_argument(
        "--out",
        default=None,
        help="the file to write (default SYMBOL-TIMEFRAME.csv/.parquet, e.g. BTC-USDT-1m.csv)",
    )
    export.add_argument(
        "--stamp",
        choices=("close", "open"),
        default="close",
        help="index of the file: each candle's close time (default, as the feeds stamp bars) "
        "or its open time (ccxt's convention)",
    )


def run_download(args: argparse.Namespace, out=None, err=None) -> int:
    """The ``download`` command; returns the exit status (130 after Ctrl-C)."""
    out = out or sys.stdout
    err = err or sys.stderr
    if args.local and args.exchange != "binance":
        print("error: --local speaks Binance's protocol: drop --exchange", file=err)
        return 2
    if args.bars is not None and args.bars < 1:
        print(f"error: --bars must be a positive integer, got {args.bars}", file=err)
        return 2
    line = None if args.quiet else ProgressLine(err)
    redact = str
    exported = None
    try:
        target = _export_target(args)  # a missing pandas fails before any request
        with contextlib.ExitStack() as stack:
            if args.local:
                store, key = _local_store(args, stack), "localexchange"
            else:
                config = load_config(args.config)
                store, key = CCXTStore(args.exchange, config=config, sandbox=args.sandbox), None
                # ccxt knows the venue's intervals without a request: fail before any
                check_timeframe(args.timeframe, store.exchange.timeframes or {}, args.exchange)
            redact = store.redact
            stack.callback(store.stop)
            cache = stack.enter_context(HistoryCache(args.cache or default_cache_dir()))
            result = download(
                store,
                cache,
                args.symbol,
                args.timeframe,
                args.since,
                args.until,
                bars=args.bars,
                page_limit=args.page_limit,
                key=key,
                progress=line,
            )
            file = cache.file
            if target is not None:
                exported = _export(cache, result, args, *target)
    except KeyboardInterrupt:
        if line is not None:
            line.finish()
        print(
            "interrupted: the pages fetched so far are saved; run the same command again to resume",
            file=err,
        )
        return 130
    except BacktraderCCXTError as exc:
        if line is not None:
            line.finish()
        report_error(exc, err, verbose=getattr(args, "verbose", False), redact=redact)
        return exit_status(exc)
    if line is not None:
        line.finish()
    spans = ", ".join(f"{_fmt(s)} .. {_fmt(e)}" for s, e in result.coverage) or "nothing"
    print(
        f"{result.exchange} {result.symbol} {result.timeframe}: fetched {result.rows} candles "
        f"in {result.pages} requests into {file}",
        file=out,
    )
    print(f"cached candle opens: {spans}", file=out)
    if exported is not None:
        rows, path = exported
        print(f"wrote {rows} candles ({args.stamp}-stamped) to {path}", file=out)
    return 0


def _export_target(args: argparse.Namespace):
    """(path, format) to export to, or None; checked (and pandas imported) up front."""
    if args.format is None and args.out is None:
        return None
    from .frames import export_target

    out = args.out
    if out is None:
        out = f"{args.symbol.replace('/', '-').replace(':', '-')}-{args.timeframe}.{args.format}"
    return export_target(out, args.format)


def _export(cache: HistoryCache, result: DownloadResult, args, path, fmt) -> tuple[int, object]:
    from .frames import export_frame

    frame = cache.read_frame(
        result.exchange,
        result.symbol,
        result.timeframe,
        result.since_ms,
        result.until_ms,
        stamp=args.stamp,
    )
    return len(frame), export_frame(frame, path, fmt)


def _local_store(args: argparse.Namespace, stack: contextlib.ExitStack) -> CCXTStore:
    """A store on a local exchange started for this command, serving back to ``--since``."""
    from .localexchange import LocalExchange

    check_local_market(args.symbol, args.timeframe, elsewhere="without --local")
    tf_ms = parse_tf(args.timeframe).ms
    if args.bars is not None:
        history = max(3000, args.bars + 10)
    else:
        history = max(3000, (int(time.time() * 1000) - args.since) // tf_ms + 10)
    try:
        ex = LocalExchange(symbols=(args.symbol,), timeframes=(args.timeframe,), history=history)
    except ValueError as exc:
        raise ConfigurationError(f"--local: {exc}") from None
    stack.enter_context(ex)
    return CCXTStore("binance", config=ex.ccxt_config())
