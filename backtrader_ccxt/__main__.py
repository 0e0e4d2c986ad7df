"""Command line: ``python -m backtrader_ccxt {demo,localexchange} ...``."""

from __future__ import annotations

import argparse
import logging
import sys


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(
        prog="python -m backtrader_ccxt",
        description="backtrader-ccxt: live crypto-exchange bars for backtrader through ccxt.",
    )
    parser.add_argument("-v", "--verbose", action="store_true", help="log at INFO level")
    sub = parser.add_subparsers(dest="command", required=True)

    from .demo import add_arguments as demo_args

    demo = sub.add_parser(
        "demo",
        help="run a live SMA strategy (paper trading), offline on the local exchange by default",
        description="Backfill, go live and paper-trade an SMA cross with backtrader's broker. "
        "Offline by default (the bundled local exchange replays real Binance candles); "
        "--exchange binance runs it on the real exchange (public data, no keys).",
    )
    demo_args(demo)

    sub.add_parser(
        "localexchange",
        help="run the local exchange until Ctrl-C (same as python -m backtrader_ccxt.localexchange)",
        add_help=False,
    )

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
    if args.command == "demo":
        from .demo import run_demo

        run_demo(args)
        return 0
    return 2


if __name__ == "__main__":
    sys.exit(main())
