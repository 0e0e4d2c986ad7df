#!/usr/bin/env python
"""Several symbols from one store (one exchange session), in one cerebro.

In WebSocket mode (the default here) all feeds of a store share one connection and one
subscribe message where the exchange can multiplex (Binance can). Offline by default: the
local exchange serves BTC/USDT and ETH/USDT from real data and any other symbol derived from
them. On a real exchange:

    python samples/multi_symbol.py --exchange binance --symbols BTC/USDT ETH/USDT SOL/USDT --timeframe 1m
"""

from __future__ import annotations

import argparse
import contextlib

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class PrintBars(bt.Strategy):
    """Prints each data's new bar; stops once every data delivered ``live_bars`` live bars."""

    params = (("live_bars", 3),)

    def __init__(self) -> None:
        self.live = {d._name: False for d in self.datas}
        self.live_seen = {d._name: 0 for d in self.datas}
        self.last_len = {d._name: 0 for d in self.datas}

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live[data._name] = status == data.LIVE

    def prenext(self) -> None:
        self.next()  # a data that has not started yet must not hold the others back

    def next(self) -> None:
        for d in self.datas:
            if len(d) == self.last_len[d._name]:
                continue  # this data did not advance on this tick
            self.last_len[d._name] = len(d)
            if self.live[d._name]:
                self.live_seen[d._name] += 1
                print(
                    f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}"
                    f"  C {d.close[0]:.4f}  V {d.volume[0]:.4f}",
                    flush=True,
                )
        if all(n >= self.p.live_bars for n in self.live_seen.values()):
            self.env.runstop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--exchange", default="local", help="ccxt id, or 'local' (default)")
    parser.add_argument("--symbols", nargs="+", default=["BTC/USDT", "ETH/USDT", "SOL/USDT"])
    parser.add_argument("--timeframe", default=None, help="default 1s locally, 1m elsewhere")
    parser.add_argument("--bars", type=int, default=3, help="live bars per symbol (default 3)")
    parser.add_argument("--mode", choices=("polling", "threaded", "websocket"), default="websocket")
    args = parser.parse_args(argv)
    timeframe = args.timeframe or ("1s" if args.exchange == "local" else "1m")

    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(LocalExchange(symbols=args.symbols, timeframes=(timeframe,)))
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        for symbol in args.symbols:
            cerebro.adddata(
                store.getdata(
                    dataname=symbol,
                    name=symbol,
                    timeframe=timeframe,
                    backfill_bars=10,
                    use_websocket=args.mode == "websocket",
                    use_threaded_data=args.mode == "threaded",
                )
            )
        cerebro.addstrategy(PrintBars, live_bars=args.bars)
        print(f"{store.exchange_id} {' '.join(args.symbols)} {timeframe} via {args.mode}")
        strat = run_live(cerebro)[0]
        print("done: " + ", ".join(f"{k} {v} live bars" for k, v in strat.live_seen.items()))
        print(f"store stats: {dict(store.stats)}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
