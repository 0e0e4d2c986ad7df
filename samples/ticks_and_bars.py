#!/usr/bin/env python
"""A tick strategy and 10-second bars built from the same trades, live.

The feed is a tick feed (``timeframe=bt.TimeFrame.Ticks``): every public trade once, as a
tick (open = high = low = close = the price, volume = the amount), backfilled from
``fromdate`` over REST, then live by REST polling (default), the threaded poller or
WebSocket (``--mode threaded|websocket``). ``cerebro.resampledata`` of that feed builds bars
of a size the venue may not offer (10 seconds here); they equal the venue's candles where it
has them. Offline by default (the local exchange's trades, ``--protocol binance|okx|bybit``);
on a real exchange:

    python samples/ticks_and_bars.py --exchange binance --symbol BTC/USDT --mode websocket
"""

from __future__ import annotations

import argparse
import contextlib
import time
from datetime import datetime, timedelta

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class TicksAndBars(bt.Strategy):
    """Counts ticks (data0) and prints each bar built from them (data1); stops after
    ``live_bars`` bars once live."""

    params = (("live_bars", 3),)

    def __init__(self) -> None:
        self.live = False
        self.ticks = 0
        self.live_seen = 0
        self._bars = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        if data is self.data0:
            print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
            self.live = status == data.LIVE

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        self.ticks += 1  # a tick strategy acts here, on every trade
        bars = self.data1
        if len(bars) == self._bars:
            return
        self._bars = len(bars)
        phase = "live  " if self.live else "hist  "
        print(
            f"{phase} {bars._name} {bars.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  "
            f"O {bars.open[0]:.2f}  H {bars.high[0]:.2f}  L {bars.low[0]:.2f}  "
            f"C {bars.close[0]:.2f}  V {bars.volume[0]:.4f}  ticks so far {self.ticks}",
            flush=True,
        )
        if self.live:
            self.live_seen += 1
            if self.live_seen >= self.p.live_bars:
                self.env.runstop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="local", help="ccxt id, or 'local' (default)")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--seconds", type=int, default=10, help="bar size (default 10 s)")
    parser.add_argument("--bars", type=int, default=3, help="live bars to print (default 3)")
    parser.add_argument("--mode", default="polling", choices=("polling", "threaded", "websocket"))
    parser.add_argument(
        "--protocol", default="binance", choices=("binance", "okx", "bybit"), help="local only"
    )
    args = parser.parse_args(argv)

    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(
                LocalExchange(symbols=(args.symbol,), timeframes=("1s",), protocol=args.protocol)
            )
            store = CCXTStore(args.protocol, config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        step_ms = args.seconds * 1000
        now_ms = int(time.time() * 1000)
        first_open = now_ms - now_ms % step_ms - 2 * step_ms  # two whole bars of history
        ticks = store.getdata(
            dataname=args.symbol,
            name=f"{args.symbol} ticks",
            timeframe=bt.TimeFrame.Ticks,
            fromdate=datetime(1970, 1, 1) + timedelta(milliseconds=first_open),
            poll_grace=0.25,  # a tick feed polls this often (REST modes)
            use_threaded_data=args.mode == "threaded",
            use_websocket=args.mode == "websocket",
        )
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(ticks)
        cerebro.resampledata(
            ticks,
            name=f"{args.symbol}/{args.seconds}s",
            timeframe=bt.TimeFrame.Seconds,
            compression=args.seconds,
        )
        cerebro.addstrategy(TicksAndBars, live_bars=args.bars)
        print(f"{store.exchange_id} {args.symbol}: ticks and {args.seconds}s bars from them")
        strat = run_live(cerebro)[0]
        print(f"done: {strat.ticks} ticks, {strat.live_seen} live bars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
