#!/usr/bin/env python
"""Rehearse a live strategy on your own history: the local exchange replays it at N times speed.

1. History: fetched once into a pandas frame (``--csv FILE`` reads a file written by
   ``frames.export_frame`` or ``download --format csv`` instead). Offline by default, from the
   bundled candles through the local exchange; ``--exchange binance`` downloads it from the
   real venue (the only online step).
2. A backtest on that frame (``bt.feeds.PandasData``).
3. The same strategy LIVE, unchanged (``store.getdata``, any ``--mode``), against a
   ``RehearsalExchange`` that serves the frame at its own timestamps over REST and WebSocket,
   ``--speed`` times real time: it backfills ``--warmup`` bars, goes live, ends at the last
   candle. The two runs must agree bar for bar and trade for trade. Needs the pandas extra.

    python samples/rehearse.py --bars 600 --speed 600 --mode websocket
"""

from __future__ import annotations

import argparse
import contextlib

import backtrader as bt

from backtrader_ccxt import CCXTStore, run_live
from backtrader_ccxt.frames import history_frame, read_frame, to_pandas_data
from backtrader_ccxt.localexchange import LocalExchange, RehearsalExchange

MODES = {
    "polling": {},
    "threaded": {"use_threaded_data": True},
    "websocket": {"use_websocket": True},
}


class SmaCross(bt.Strategy):
    """Long on a fast/slow SMA cross-up, flat on the cross-down; records every bar and trade."""

    params = (("fast", 5), ("slow", 20), ("verbose", False))

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(
            bt.ind.SMA(period=self.p.fast), bt.ind.SMA(period=self.p.slow)
        )
        self.live = False
        self.bars: list[tuple] = []
        self.trades: list[tuple] = []

    def notify_data(self, data, status, *args, **kwargs) -> None:
        if self.p.verbose:
            print(f"status {data._name}: {data._getstatusname(status)}", flush=True)
        self.live = status == data.LIVE

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.trades.append((bt.num2date(trade.dtopen), bt.num2date(trade.dtclose), trade.pnl))

    def next(self) -> None:
        d = self.data
        self.bars.append((d.datetime.datetime(0), d.open[0], d.high[0], d.low[0], d.close[0]))
        if self.live and self.p.verbose:
            print(
                f"live   {d._name} {d.datetime.datetime(0):%Y-%m-%d %H:%M:%S}  C {d.close[0]:.2f}"
                f"  position {self.position.size:g}",
                flush=True,
            )
        if self.cross[0] > 0 and not self.position:
            self.buy()
        elif self.cross[0] < 0 and self.position:
            self.close()


def make_cerebro(**kwargs) -> bt.Cerebro:
    cerebro = bt.Cerebro(stdstats=False, **kwargs)
    cerebro.broker.setcash(100_000.0)
    cerebro.addsizer(bt.sizers.FixedSize, stake=0.1)
    return cerebro


def fetch_history(args) -> object:
    """The frame to rehearse on: a file, a real venue, or the bundled candles (offline)."""
    if args.csv:
        return read_frame(args.csv)
    n = args.warmup + args.bars
    with contextlib.ExitStack() as stack:
        if args.exchange == "local":
            ex = stack.enter_context(
                LocalExchange(symbols=(args.symbol,), timeframes=(args.timeframe,), history=n + 10)
            )
            store = CCXTStore("binance", config=ex.ccxt_config())
        else:
            store = CCXTStore(args.exchange)
        stack.callback(store.stop)
        return history_frame(store, args.symbol, args.timeframe, bars=n)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--exchange", default="local", help="where the history comes from: ccxt id or 'local'"
    )
    parser.add_argument("--csv", default=None, help="rehearse this CSV/Parquet file instead")
    parser.add_argument("--symbol", default="BTC/USDT")
    parser.add_argument("--timeframe", default="1m")
    parser.add_argument("--bars", type=int, default=300, help="bars to rehearse live (300)")
    parser.add_argument("--warmup", type=int, default=60, help="bars backfilled first (60)")
    parser.add_argument("--speed", type=float, default=600.0, help="times real speed (600)")
    parser.add_argument("--mode", choices=tuple(MODES), default="websocket")
    parser.add_argument(
        "--protocol", choices=("binance", "okx", "bybit"), default="binance", help="venue served"
    )
    args = parser.parse_args(argv)

    frame = fetch_history(args)
    print(f"history: {len(frame)} bars, {frame.index[0]} .. {frame.index[-1]}", flush=True)

    # the backtest on the frame
    cerebro = make_cerebro(runonce=False)
    cerebro.adddata(to_pandas_data(frame, args.timeframe, name=args.symbol))
    cerebro.addstrategy(SmaCross)
    backtest = cerebro.run()[0]
    print(
        f"backtest: {len(backtest.bars)} bars, {len(backtest.trades)} trades, "
        f"portfolio {cerebro.broker.getvalue():.2f}",
        flush=True,
    )

    # the same strategy live, on the same frame replayed by the local exchange
    warmup = min(args.warmup, len(frame) - 1)
    with RehearsalExchange(
        {args.symbol: frame},
        args.timeframe,
        speed=args.speed,
        warmup=warmup,
        protocol=args.protocol,
    ) as ex:
        print(
            f"rehearsing {len(frame) - warmup} bars at {args.speed:g}x ({args.mode}, "
            f"{args.protocol}): about {ex.real_seconds_left():.0f} s",
            flush=True,
        )
        store = CCXTStore(**ex.store_kwargs())
        try:
            cerebro = make_cerebro()
            cerebro.adddata(
                store.getdata(
                    dataname=args.symbol,
                    name=args.symbol,
                    timeframe=args.timeframe,
                    **ex.feed_kwargs(),
                    **MODES[args.mode],
                )
            )
            cerebro.addstrategy(SmaCross, verbose=True)
            live = run_live(cerebro)[0]
        finally:
            store.stop()
    print(
        f"rehearsal: {len(live.bars)} bars, {len(live.trades)} trades, "
        f"portfolio {cerebro.broker.getvalue():.2f}",
        flush=True,
    )
    same = live.bars == backtest.bars and live.trades == backtest.trades
    print(f"same bars and trades as the backtest: {same}", flush=True)
    return 0 if same else 1


if __name__ == "__main__":
    raise SystemExit(main())
