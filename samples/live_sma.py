#!/usr/bin/env python
"""A live SMA-cross strategy, paper trading on backtrader's own broker.

Offline by default: the package's local exchange replays real Binance candles on 127.0.0.1,
with 1-second bars so something happens at once. On a real exchange (public data, no keys;
orders still go to backtrader's simulated broker):

    python samples/live_sma.py --exchange binance --symbol BTC/USDT --timeframe 1m

Ctrl-C stops it cleanly (a SIGINT handler calls cerebro.runstop()).
"""

from __future__ import annotations

import argparse
import contextlib

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class SmaCross(bt.Strategy):
    """Buy when the fast SMA crosses above the slow one, close on the cross below."""

    params = (("fast", 5), ("slow", 12), ("live_bars", 5))

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(
            bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow)
        )
        self.live = False
        self.live_seen = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            side = "BUY" if order.isbuy() else "SELL"
            print(f"order  {side} {order.executed.size:g} @ {order.executed.price:.2f}", flush=True)

    def next(self) -> None:
        d = self.data
        if self.live:
            self.live_seen += 1
            print(
                f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  O {d.open[0]:.2f}"
                f"  H {d.high[0]:.2f}  L {d.low[0]:.2f}  C {d.close[0]:.2f}  V {d.volume[0]:.4f}",
                flush=True,
            )
        if self.cross[0] > 0 and not self.position:
            self.buy()
        elif self.cross[0] < 0 and self.position:
            self.close()
        if self.live_seen >= self.p.live_bars:
            self.env.runstop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="local", help="ccxt id, or 'local' (default)")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timeframe", default=None, help="default 1s locally, 1m elsewhere")
    parser.add_argument("--bars", type=int, default=5, help="live bars to run (default 5)")
    parser.add_argument("--backfill", type=int, default=30, help="history bars (default 30)")
    parser.add_argument("--mode", choices=("polling", "threaded", "websocket"), default="polling")
    args = parser.parse_args(argv)
    timeframe = args.timeframe or ("1s" if args.exchange == "local" else "1m")

    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(LocalExchange(symbols=(args.symbol,), timeframes=(timeframe,)))
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        data = store.getdata(
            dataname=args.symbol,
            name=args.symbol,
            timeframe=timeframe,
            backfill_bars=args.backfill,
            use_threaded_data=args.mode == "threaded",
            use_websocket=args.mode == "websocket",
        )
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        cerebro.adddata(data)
        cerebro.broker.setcash(100_000.0)
        cerebro.addsizer(bt.sizers.FixedSize, stake=0.1)
        cerebro.addstrategy(SmaCross, live_bars=args.bars)
        print(f"{store.exchange_id} {args.symbol} {timeframe} ({args.mode}): {args.bars} live bars")
        strat = run_live(cerebro)[0]
        print(f"done: {strat.live_seen} live bars, portfolio {cerebro.broker.getvalue():.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
