#!/usr/bin/env python
"""Two stores in one cerebro: two exchanges (or two accounts on one exchange).

A store is one exchange session; it is not a singleton, so each store keeps its own
exchange, config (keys), rate limiter and clock. This sample prints the same symbol from
both venues and the spread between them. Offline by default: two separate local exchanges
(they replay the same real candles, so the spread is 0). On real exchanges:

    python samples/two_stores.py --exchanges binance bybit --symbol BTC/USDT --timeframe 1m
"""

from __future__ import annotations

import argparse
import contextlib

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.localexchange import LocalExchange


class Spread(bt.Strategy):
    """Prints both venues' bars and the close-to-close spread once both have the same bar."""

    params = (("live_bars", 3),)

    def __init__(self) -> None:
        self.live = {d._name: False for d in self.datas}
        self.live_seen = {d._name: 0 for d in self.datas}
        self.last_len = {d._name: 0 for d in self.datas}

    def notify_data(self, data, status, *args, **kwargs) -> None:
        print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live[data._name] = status == data.LIVE

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for d in self.datas:
            if len(d) == self.last_len[d._name] or not self.live[d._name]:
                continue
            self.last_len[d._name] = len(d)
            self.live_seen[d._name] += 1
            print(
                f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}"
                f"  C {d.close[0]:.2f}  V {d.volume[0]:.4f}",
                flush=True,
            )
        a, b = self.datas
        if len(a) and len(b) and a.datetime[0] == b.datetime[0]:
            print(f"spread {a.datetime.datetime(0):%H:%M:%S}  {a.close[0] - b.close[0]:+.2f}")
        if all(n >= self.p.live_bars for n in self.live_seen.values()):
            self.env.runstop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exchanges",
        nargs=2,
        default=["local", "local"],
        metavar=("A", "B"),
        help="two ccxt ids; 'local' starts a local exchange (default: local local)",
    )
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timeframe", default=None, help="default 1s locally, 1m elsewhere")
    parser.add_argument("--bars", type=int, default=3, help="live bars per venue (default 3)")
    args = parser.parse_args(argv)
    local = "local" in args.exchanges
    timeframe = args.timeframe or ("1s" if local else "1m")

    with contextlib.ExitStack() as stack:
        stores, where = [], []
        for exchange_id in args.exchanges:
            if exchange_id == "local":
                ex = stack.enter_context(
                    LocalExchange(symbols=(args.symbol,), timeframes=(timeframe,))
                )
                # config could also carry this account's keys: {"apiKey": ..., "secret": ...}
                stores.append(CCXTStore("binance", config=ex.ccxt_config()))
                where.append(f"local exchange at {ex.rest_url}")
            else:
                stores.append(CCXTStore(exchange_id))
                where.append(exchange_id)
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        for label, store in zip("AB", stores, strict=True):
            cerebro.adddata(
                store.getdata(
                    dataname=args.symbol,
                    name=f"{label}:{args.symbol}",
                    timeframe=timeframe,
                    backfill_bars=5,
                )
            )
        cerebro.addstrategy(Spread, live_bars=args.bars)
        print(f"{args.symbol} {timeframe}: A = {where[0]}, B = {where[1]}")
        strat = run_live(cerebro)[0]
        print("done: " + ", ".join(f"{k} {v} live bars" for k, v in strat.live_seen.items()))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
