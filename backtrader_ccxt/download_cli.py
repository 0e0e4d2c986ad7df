"""``python -m backtrader_ccxt download``: the command around :func:`.download.download`.

The command line's side (arguments, a progress line on stderr, one line per outcome, the
export to CSV or Parquet); what fills the cache is :mod:`.download`, which prints nothing.
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import time

from .cache import HistoryCache, default_cache_dir
from .cli import check_local_market, check_timeframe, exit_status, load_config, report_error
from .download import DownloadProgress, DownloadResult, download, fmt_ms, parse_time
from .errors import BacktraderCCXTError, ConfigurationError
from .store import CCXTStore
from .timeframes import parse as parse_tf

__all__ = ["ProgressLine", "add_arguments", "run_download"]


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
            f"{p.pages} requests  at {fmt_ms(min(p.cursor_ms, p.until_ms))}"
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
    spans = ", ".join(f"{fmt_ms(s)} .. {fmt_ms(e)}" for s, e in result.coverage) or "nothing"
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
