"""Helpers for feed tests: a strategy that records exactly what it saw, and ground truth."""

from __future__ import annotations

from datetime import datetime, timedelta

import backtrader as bt

from backtrader_ccxt.timeframes import parse

EPOCH = datetime(1970, 1, 1)


def truth(ex, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list[tuple]:
    """The exchange's closed candles, as the bar tuples a strategy should record."""
    tf = parse(timeframe)
    return [
        (EPOCH + timedelta(milliseconds=tf.close_of(int(r[0]))), *map(float, r[1:6]))
        for r in ex.candles(symbol, timeframe, since_ms, until_ms)
    ]


def to_ms(dt: datetime) -> int:
    return int((dt - EPOCH) / timedelta(milliseconds=1))


class Recorder(bt.Strategy):
    """Records every bar (close stamp + OHLCV) and every status of every data.

    Stops cerebro once each data has delivered ``live_bars`` bars after its LIVE notification
    (``live_bars=None``: run until the feeds end).
    """

    params = (("live_bars", 3), ("on_bar", None))

    def __init__(self) -> None:
        self.bars: dict[str, list[tuple]] = {d._name: [] for d in self.datas}
        self.statuses: dict[str, list[str]] = {d._name: [] for d in self.datas}
        self.live_counts: dict[str, int] = {d._name: 0 for d in self.datas}
        self.seam: dict[str, int] = {}  # bars seen before LIVE, per data
        self._last_len = {d._name: 0 for d in self.datas}

    def notify_data(self, data, status, *args, **kwargs) -> None:
        name = data._getstatusname(status)
        self.statuses[data._name].append(name)
        if name == "LIVE" and data._name not in self.seam:
            self.seam[data._name] = len(self.bars[data._name])

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for d in self.datas:
            n = len(d)
            if n == self._last_len[d._name]:
                continue  # this data did not advance on this tick
            self._last_len[d._name] = n
            row = (
                d.datetime.datetime(0),
                d.open[0],
                d.high[0],
                d.low[0],
                d.close[0],
                d.volume[0],
            )
            self.bars[d._name].append(row)
            if d._name in self.seam:
                self.live_counts[d._name] += 1
            if self.p.on_bar is not None:
                self.p.on_bar(self, d)
        if self.p.live_bars is not None and all(
            c >= self.p.live_bars for c in self.live_counts.values()
        ):
            self.env.runstop()


def run(cerebro: bt.Cerebro, **strategy_kwargs) -> Recorder:
    cerebro.addstrategy(Recorder, **strategy_kwargs)
    return cerebro.run()[0]


def run_historical(store, symbol: str, timeframe: str, fromdate, todate, name=None, **kwargs):
    """A ``historical=True`` backtest of one feed, recorded; ``runonce=False`` so that the
    strategy receives the feed's notifications too."""
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.adddata(
        store.getdata(
            dataname=symbol,
            name=name or symbol,
            timeframe=timeframe,
            fromdate=fromdate,
            todate=todate,
            historical=True,
            **kwargs,
        )
    )
    return run(cerebro, live_bars=None)


def assert_contiguous(bars: list[tuple], timeframe: str) -> None:
    """Strictly increasing, one bar per candle (the local exchange omits none by default)."""
    step = timedelta(milliseconds=parse(timeframe).ms)
    for prev, cur in zip(bars, bars[1:], strict=False):
        assert cur[0] - prev[0] == step, f"gap or duplicate between {prev[0]} and {cur[0]}"


def expected_for(ex, symbol: str, timeframe: str, recorded: list[tuple]) -> list[tuple]:
    """Ground truth for the span the strategy recorded (first to last close stamp)."""
    assert recorded, "the strategy recorded no bar"
    tf = parse(timeframe)
    first_open = to_ms(recorded[0][0]) - tf.ms
    last_open = to_ms(recorded[-1][0]) - tf.ms
    return truth(ex, symbol, timeframe, first_open, last_open + 1)


#: every protocol the local exchange speaks (the live tests run on each)
PROTOCOLS = ("binance", "okx", "bybit")

#: the REST path of recent candles, per protocol (for path-bound REST faults)
CANDLES_PATH = {
    "binance": "/api/v3/klines",
    "okx": "/api/v5/market/candles",
    "bybit": "/v5/market/kline",
}
