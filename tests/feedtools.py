"""Helpers for feed tests: a strategy that records exactly what it saw, ground truth, and the
fast-clock exchange + store pair most live tests run on."""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime, timedelta

import backtrader as bt

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange
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

#: the three live modes, as feed params
MODES = {
    "polling": {},
    "threaded": {"use_threaded_data": True},
    "websocket": {"use_websocket": True},
}


# -- the fast clock ----------------------------------------------------------------------------
#
# Most live tests check WHAT a feed delivers (exact bars against the exchange's history, REST
# call counts, statuses), which does not depend on how fast the exchange's clock runs: the
# local exchange and the store share a clock running FAST times real time, so a one-second
# candle lasts 1/FAST s. What only real time shows (ping/pong and watchdog timing, latency at
# real speed, one long soak) stays on the real clock, in tests marked ``realtime``.
#
# Why 5 and not 50: what does NOT speed up is real time spent by the machinery - ccxt.pro's
# frame handling, the store's reconnect backoff (``ws_reconnect_delay``, real seconds), the
# transport's stall watchdog (real seconds), a loaded 2-core machine's scheduling delays. At
# 5x a candle lasts 200 ms of real time, so a final frame that arrives 50 ms late (a busy
# machine) is still a quarter candle, within the grace the tests give it (``grace``); at 50x
# it would be a whole candle late and every test of "no REST confirmation on a healthy
# stream" would measure the machine, not the feed. ccxt.pro's own timers (keepalive pings,
# 10 s connect timeouts) are far longer than any fast test, as they are at real speed.

#: exchange time per real time of the fast clock
FAST = 5.0


class FastClock:
    """Exchange time in seconds, running ``speed`` times real time from the moment it is made
    (so candles still open at real "now", and the exchange's history ends there)."""

    def __init__(self, speed: float = FAST) -> None:
        self.speed = float(speed)
        self.t0 = time.time()

    def __call__(self) -> float:
        return self.t0 + (time.time() - self.t0) * self.speed

    def ms(self) -> float:
        return self() * 1000.0


@contextmanager
def fast_exchange(speed: float = FAST, **kwargs) -> Iterator[LocalExchange]:
    """A running :class:`LocalExchange` on a :class:`FastClock` (``ex.fast_clock``).

    Its emission timer re-reads a custom clock every ``poll_interval`` real seconds; a
    fiftieth of a candle (as ``RehearsalExchange`` does) keeps finals on time at this speed.
    """
    clock = FastClock(speed)
    shortest_s = min(parse(t).ms for t in kwargs.get("timeframes", ("1s",))) / 1000.0
    bar_real_s = shortest_s / clock.speed
    kwargs.setdefault("poll_interval", min(0.05, max(0.002, bar_real_s / 50)))
    with LocalExchange(clock=clock, **kwargs) as ex:
        ex.fast_clock = clock
        yield ex


def fast_store(ex, store_class=CCXTStore, **kwargs) -> CCXTStore:
    """A store on ``ex``'s clock (``ex`` from :func:`fast_exchange`), or on the real clock
    for an ``ex`` without one."""
    clock = getattr(ex, "fast_clock", None)
    if clock is not None:
        kwargs.setdefault("clock", clock.ms)
        kwargs.setdefault("clock_rate", clock.speed)
    kwargs.setdefault("config", ex.ccxt_config())
    return store_class(ex.protocol, **kwargs)


def speed_of(ex) -> float:
    """How many exchange seconds pass per real second on ``ex`` (1 on the real clock)."""
    clock = getattr(ex, "fast_clock", None)
    return clock.speed if clock is not None else 1.0


def grace(ex, real_s: float) -> float:
    """A feed's ``poll_grace`` (exchange seconds) that leaves ``real_s`` REAL seconds for a
    final to arrive, at most half a 1s candle: what a test's grace meant at real speed."""
    return min(real_s * speed_of(ex), 0.5) if speed_of(ex) > 1 else real_s


def real_s(ex, exchange_s: float) -> float:
    """Real seconds that ``exchange_s`` of ``ex``'s clock take."""
    return exchange_s / speed_of(ex)
