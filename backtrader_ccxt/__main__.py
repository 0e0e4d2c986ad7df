"""Command line: ``python -m backtrader_ccxt {demo,download,localexchange} ...``."""

from __future__ import annotations

import argparse
import logging
import sys

from .cli import exit_status, report_error

_VERBOSE_HELP = "log at INFO level, and show the traceback of a failure"


def build_parser() -> argparse.ArgumentParser:
    """The command-line parser (also used by the tests to check documented commands)."""
    parser = argparse.ArgumentParser(
        prog="python -m backtrader_ccxt",
        description="backtrader-ccxt: live crypto-exchange bars for backtrader through ccxt.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help=_VERBOSE_HELP)
    # -v after the subcommand too: each subparser knows it, without overriding one given before
    verbose = argparse.ArgumentParser(add_help=False)
    verbose.add_argument(
        "-v", "--verbose", action="store_true", default=argparse.SUPPRESS, help=_VERBOSE_HELP
    )
    sub = parser.add_subparsers(dest="command", required=True)

    from .demo import add_arguments as demo_args
    from .download_cli import add_arguments as download_args

    demo = sub.add_parser(
        "demo",
        parents=[verbose],
        help="run a live SMA strategy (paper trading), offline on the local exchange by default",
        description="Backfill, go live and paper-trade an SMA cross with backtrader's broker. "
        "Offline by default (the bundled local exchange replays real Binance candles); "
        "--exchange binance runs it on the real exchange (public data, no keys).",
    )
    demo_args(demo)

    download = sub.add_parser(
        "download",
        parents=[verbose],
        help="fill the history cache with closed candles (resumable)",
        description="Download closed OHLCV candles into the on-disk history cache, page by "
        "page. Only what the cache lacks is fetched, so after Ctrl-C the same command resumes "
        "where it stopped. See docs/cache.md.",
    )
    download_args(download)

    sub.add_parser(
        "localexchange",
        parents=[verbose],
        help="run the local exchange until Ctrl-C (same as python -m backtrader_ccxt.localexchange)",
        add_help=False,
    )
    return parser


def main(argv: list[str] | None = None) -> int:
    parser = build_parser()
    args, rest = parser.parse_known_args(argv)
    logging.basicConfig(
        level=logging.INFO if args.verbose else logging.WARNING,
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
    )
    if args.command == "localexchange":
        from .localexchange.__main__ import main as le_main

        return le_main(rest)
    if rest:
        parser.error(f"unrecognized arguments: {' '.join(rest)}")
    try:
        if args.command == "demo":
            from .demo import demo_command

            return demo_command(args)
        if args.command == "download":
            from .download_cli import run_download

            return run_download(args)
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    except Exception as exc:  # noqa: BLE001 - every failure is one line (-v: the traceback)
        report_error(exc, sys.stderr, verbose=args.verbose)
        return exit_status(exc)
    return 2


if __name__ == "__main__":
    sys.exit(main())
