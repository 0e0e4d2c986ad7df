#!/usr/bin/env python
"""Sweep a strategy's parameters on a pandas frame of exchange history, then run the best live.

History is fetched once into a DataFrame (the very candles a ``historical=True`` feed gives);
each backtest of the sweep runs on ``bt.feeds.PandasData`` over that frame, without touching
the exchange again. ``--csv FILE`` also writes the frame to a file. Needs the pandas extra
(``pip install "backtrader-ccxt[pandas]"``). Offline by default (the local exchange, 1-second
bars); on a real exchange:

    python samples/pandas_sweep.py --exchange binance --symbol BTC/USDT --timeframe 1m
"""

from __future__ import annotations

import argparse
import contextlib
import itertools

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.frames import export_frame, history_frame, to_pandas_data
from backtrader_ccxt.localexchange import LocalExchange


class SmaCross(bt.Strategy):
    """Long on a fast/slow SMA cross-up, flat on the cross-down; ``live_bars`` stops cerebro
    after that many live bars."""

    params = (("fast", 5), ("slow", 12), ("live_bars", None))

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(
            bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow)
        )
        self.live = False
        self.live_seen = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def next(self) -> None:
        d = self.data
        if self.live:
            self.live_seen += 1
            print(
                f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  C {d.close[0]:.2f}"
                f"  position {self.position.size:g}",
                flush=True,
            )
        if self.cross[0] > 0 and not self.position:
            self.buy()
        elif self.cross[0] < 0 and self.position:
            self.close()
        if self.p.live_bars is not None and self.live_seen >= self.p.live_bars:
            self.env.runstop()


def make_cerebro() -> bt.Cerebro:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.broker.setcash(100_000.0)
    cerebro.addsizer(bt.sizers.FixedSize, stake=0.1)
    return cerebro


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="local", help="ccxt id, or 'local' (default)")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timeframe", default=None, help="default 1s locally, 1m elsewhere")
    parser.add_argument("--history", type=int, default=2000, help="bars to sweep on (2000)")
    parser.add_argument("--bars", type=int, default=5, help="live bars to run (default 5)")
    parser.add_argument("--csv", default=None, help="also write the history to this CSV file")
    args = parser.parse_args(argv)
    timeframe = args.timeframe or ("1s" if args.exchange == "local" else "1m")

    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(
                LocalExchange(
                    symbols=(args.symbol,), timeframes=(timeframe,), history=args.history + 100
                )
            )
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        stack.callback(store.stop)

        # 1. the history, once: the candles a historical=True feed would deliver
        frame = history_frame(store, args.symbol, timeframe, bars=args.history)
        print(f"history: {len(frame)} bars, {frame.index[0]} .. {frame.index[-1]}", flush=True)
        if args.csv:
            print(f"wrote {export_frame(frame, args.csv)}", flush=True)

        # 2. the sweep: every backtest on the same frame, no request to the exchange
        results = []
        for fast, slow in itertools.product((3, 5, 8), (12, 20, 30)):
            cerebro = make_cerebro()
            cerebro.adddata(to_pandas_data(frame, timeframe, name=args.symbol))
            cerebro.addstrategy(SmaCross, fast=fast, slow=slow)
            cerebro.run()
            results.append((cerebro.broker.getvalue(), fast, slow))
            print(f"sweep  fast {fast:2d} slow {slow:2d}: {results[-1][0]:.2f}", flush=True)
        value, fast, slow = max(results)
        print(f"best: fast {fast} slow {slow} ({value:.2f})", flush=True)

        # 3. the best parameters, live; a short backfill warms the SMAs up
        cerebro = make_cerebro()
        cerebro.adddata(
            store.getdata(
                dataname=args.symbol, name=args.symbol, timeframe=timeframe, backfill_bars=2 * slow
            )
        )
        cerebro.addstrategy(SmaCross, fast=fast, slow=slow, live_bars=args.bars)
        live = run_live(cerebro)[0]
        print(f"live: {live.live_seen} live bars, portfolio {cerebro.broker.getvalue():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
