#!/usr/bin/env python
"""Backtest a strategy on history, then run the very same strategy live.

Step 1 runs it on ``historical=True`` data (closed candles only, then the feed ends); step 2
runs it again on a live feed that backfills just enough bars to warm the indicators up.
Offline by default (the local exchange, 1-second bars); on a real exchange:

    python samples/backtest_then_live.py --exchange binance --symbol BTC/USDT --timeframe 1m
"""

from __future__ import annotations

import argparse
import contextlib

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class SmaCross(bt.Strategy):
    """The strategy under test: long on a fast/slow SMA cross-up, flat on the cross-down.

    ``live_bars`` (None while backtesting) stops cerebro after that many live bars.
    """

    params = (("fast", 5), ("slow", 12), ("live_bars", None))

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(
            bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow)
        )
        self.bars = 0
        self.live_seen = 0
        self.live = False
        self.trades = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.trades += 1

    def next(self) -> None:
        self.bars += 1
        d = self.data
        if self.live:
            self.live_seen += 1
            print(
                f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  O {d.open[0]:.2f}"
                f"  H {d.high[0]:.2f}  L {d.low[0]:.2f}  C {d.close[0]:.2f}  V {d.volume[0]:.4f}"
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
    parser.add_argument("--history", type=int, default=500, help="bars to backtest on (500)")
    parser.add_argument("--bars", type=int, default=5, help="live bars to run (default 5)")
    args = parser.parse_args(argv)
    timeframe = args.timeframe or ("1s" if args.exchange == "local" else "1m")

    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(LocalExchange(symbols=(args.symbol,), timeframes=(timeframe,)))
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)

        # 1. the backtest: the last `history` closed bars, then the feed ends
        cerebro = make_cerebro()
        cerebro.adddata(
            store.getdata(
                dataname=args.symbol,
                name=args.symbol,
                timeframe=timeframe,
                backfill_bars=args.history,
                historical=True,
            )
        )
        cerebro.addstrategy(SmaCross)
        tested = cerebro.run()[0]
        print(
            f"backtest: {tested.bars} bars, {tested.trades} closed trades, "
            f"portfolio {cerebro.broker.getvalue():.2f}",
            flush=True,
        )

        # 2. live: the same strategy and params; a short backfill warms the SMAs up
        cerebro = make_cerebro()
        cerebro.adddata(
            store.getdata(
                dataname=args.symbol,
                name=args.symbol,
                timeframe=timeframe,
                backfill_bars=2 * SmaCross.params.slow,
            )
        )
        cerebro.addstrategy(SmaCross, live_bars=args.bars)
        live = run_live(cerebro)[0]
        print(f"live: {live.live_seen} live bars, portfolio {cerebro.broker.getvalue():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
