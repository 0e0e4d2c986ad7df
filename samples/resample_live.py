#!/usr/bin/env python
"""Live bars resampled to a longer bar: 1-minute candles into 15-minute bars, live.

The feed is asked for the exchange's bar size (``timeframe``); ``cerebro.resampledata`` builds
the longer bars. Bars are stamped at their close, so a 15-minute bar stamped 10:15 holds the
1-minute candles that closed at 10:01 ... 10:15, and it is delivered as soon as the 10:15
candle is in. Offline by default: 1-second candles into 5-second bars. On a real exchange:

    python samples/resample_live.py --exchange binance --timeframe 1m --compression 15
"""

from __future__ import annotations

import argparse
import contextlib
import time
from datetime import datetime, timedelta

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange
from backtrader_ccxt.timeframes import parse, to_backtrader


class PrintResampled(bt.Strategy):
    """Prints each resampled bar; stops after ``live_bars`` of them once live."""

    params = (("live_bars", 3),)

    def __init__(self) -> None:
        self.live = False
        self.live_seen = 0

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def next(self) -> None:
        d = self.data
        phase = "live  " if self.live else "hist  "
        print(
            f"{phase} {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  O {d.open[0]:.2f}"
            f"  H {d.high[0]:.2f}  L {d.low[0]:.2f}  C {d.close[0]:.2f}  V {d.volume[0]:.4f}",
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
    parser.add_argument("--timeframe", default=None, help="exchange bars: 1s locally, else 1m")
    parser.add_argument(
        "--compression", type=int, default=None, help="exchange bars per bar: 5 locally, else 15"
    )
    parser.add_argument("--bars", type=int, default=3, help="live resampled bars (default 3)")
    args = parser.parse_args(argv)
    local = args.exchange == "local"
    timeframe = args.timeframe or ("1s" if local else "1m")
    compression = args.compression or (5 if local else 15)
    bt_timeframe, bt_compression = to_backtrader(parse(timeframe))

    with contextlib.ExitStack() as stack:
        if local:
            ex = stack.enter_context(LocalExchange(symbols=(args.symbol,), timeframes=(timeframe,)))
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        # three whole resampled bars of history: start at a bar boundary. fromdate is the
        # close time (the stamp) of the first exchange candle wanted.
        candle_ms = parse(timeframe).ms
        step_ms = candle_ms * compression
        now_ms = int(time.time() * 1000)
        first_open = now_ms - now_ms % step_ms - 3 * step_ms
        data = store.getdata(
            dataname=args.symbol,
            timeframe=timeframe,
            fromdate=datetime(1970, 1, 1) + timedelta(milliseconds=first_open + candle_ms),
        )
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        name = f"{args.symbol}/{compression * bt_compression}{timeframe[-1]}"
        cerebro.resampledata(
            data, name=name, timeframe=bt_timeframe, compression=compression * bt_compression
        )
        cerebro.addstrategy(PrintResampled, live_bars=args.bars)
        print(f"{store.exchange_id} {args.symbol}: {timeframe} candles resampled x{compression}")
        strat = run_live(cerebro)[0]
        print(f"done: {strat.live_seen} live resampled bars")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
