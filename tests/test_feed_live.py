"""The bar contract end to end: real ccxt / ccxt.pro against the local exchange, in a real
cerebro, in each live mode. The strategy records exactly what it saw; the exchange's REST
history (its ground truth) says what it should have seen."""

from __future__ import annotations

from datetime import timedelta

import backtrader as bt
import pytest
from feedtools import (
    EPOCH,
    MODES,
    assert_contiguous,
    expected_for,
    fast_exchange,
    fast_store,
    grace,
    run,
    run_historical,
    to_ms,
    truth,
)

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange


@pytest.fixture(scope="module")
def ex():
    """On the fast clock (tests/feedtools.py says why 5x keeps these honest); the tests of
    what real time alone shows are marked ``realtime`` and use :func:`real_ex`."""
    with fast_exchange(
        symbols=("BTC/USDT", "ETH/USDT"), timeframes=("1s", "1m"), history=3500
    ) as ex:
        yield ex


@pytest.fixture(scope="module")
def real_ex():
    with LocalExchange(
        symbols=("BTC/USDT", "ETH/USDT"), timeframes=("1s", "1m"), history=3500
    ) as ex:
        yield ex


def store_for(ex, **kwargs) -> CCXTStore:
    return fast_store(ex, **kwargs)


@pytest.mark.parametrize("mode", list(MODES))
def test_backfill_then_live_1s_equals_exchange_history(ex, mode):
    store = store_for(ex)
    cerebro = bt.Cerebro(stdstats=False)
    data = store.getdata(
        dataname="BTC/USDT",
        name="BTC",
        timeframe="1s",
        backfill_bars=30,
        poll_grace=grace(ex, 0.1),
        **MODES[mode],
    )
    cerebro.adddata(data)
    strat = run(cerebro, live_bars=4)

    bars = strat.bars["BTC"]
    # the 30 bars asked for, plus those that closed while the feed started (WebSocket: the
    # backfill waits for the stream's first frame, and for the candle before it to settle)
    assert 30 <= strat.seam["BTC"] <= 34, "backfill delivered the wrong number of bars"
    assert len(bars) >= strat.seam["BTC"] + 4
    assert_contiguous(bars, "1s")
    assert bars == expected_for(ex, "BTC/USDT", "1s", bars)
    # every bar is closed: stamped at its close, and that close was in the past when seen
    assert bars[-1][0] <= EPOCH + timedelta(milliseconds=ex.now_ms())
    assert strat.statuses["BTC"] == ["DELAYED", "LIVE"]
    assert data._laststatus == data.DISCONNECTED  # after cerebro.run returned


def test_polling_1m_backfill_and_live_seam(ex):
    """1m bars: 200 bars of history over REST, then live bars by polling, no seam defect.

    Uses an accelerated clock shared by the store and a second local exchange, so a minute
    passes in a second."""
    with fast_exchange(60.0, symbols=("ETH/USDT",), timeframes=("1m",), history=400) as fx:
        store = store_for(fx)
        cerebro = bt.Cerebro(stdstats=False)
        data = store.getdata(
            dataname="ETH/USDT",
            name="ETH",
            timeframe=bt.TimeFrame.Minutes,
            compression=1,
            backfill_bars=200,
            poll_grace=5,
            qcheck=0.05,
        )
        cerebro.adddata(data)
        strat = run(cerebro, live_bars=3)
        bars = strat.bars["ETH"]
        assert 200 <= strat.seam["ETH"] <= 202
        assert_contiguous(bars, "1m")
        assert bars == expected_for(fx, "ETH/USDT", "1m", bars)


def test_historical_pagination_over_3000_1m_bars(ex):
    now = ex.now_ms()
    first_open = (now // 60_000) * 60_000 - 3200 * 60_000
    fromdate = EPOCH + timedelta(milliseconds=first_open + 60_000)  # the first bar's close
    todate = fromdate + timedelta(minutes=3099)
    store = store_for(ex)
    before = ex.stats.snapshot()
    strat = run_historical(store, "BTC/USDT", "1m", fromdate, todate, name="BTC")
    after = ex.stats.snapshot()

    bars = strat.bars["BTC"]
    expected = truth(ex, "BTC/USDT", "1m", first_open, first_open + 3100 * 60_000)
    assert len(bars) == 3100
    assert bars == expected
    assert bars[0][0] == fromdate and bars[-1][0] == todate
    klines = after["rest_by_path"].get("/api/v3/klines", 0) - before["rest_by_path"].get(
        "/api/v3/klines", 0
    )
    assert klines == 4  # ceil(3100 / 1000): no page dropped or repeated
    assert strat.statuses["BTC"] == ["DELAYED", "DISCONNECTED"]


def test_two_feeds_two_stores_coexist(ex):
    """No singleton: two stores (think two accounts) in one cerebro, each with its feed."""
    s1, s2 = store_for(ex), store_for(ex)
    assert s1 is not s2
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        s1.getdata(
            dataname="BTC/USDT",
            name="BTC",
            timeframe="1s",
            backfill_bars=5,
            poll_grace=grace(ex, 0.1),
        )
    )
    cerebro.adddata(
        s2.getdata(
            dataname="ETH/USDT",
            name="ETH",
            timeframe="1s",
            backfill_bars=5,
            poll_grace=grace(ex, 0.1),
            use_websocket=True,
        )
    )
    strat = run(cerebro, live_bars=2)
    for name, sym in (("BTC", "BTC/USDT"), ("ETH", "ETH/USDT")):
        bars = strat.bars[name]
        assert_contiguous(bars, "1s")
        assert bars == expected_for(ex, sym, "1s", bars)


def _resample_offline(bars_1s: list[tuple], seconds: int) -> list[tuple]:
    """Resample close-stamped 1s bars into close-stamped N-second bars (complete ones only)."""
    out, bucket = [], []
    for bar in bars_1s:
        bucket.append(bar)
        if to_ms(bar[0]) % (seconds * 1000) == 0:
            if len(bucket) == seconds:
                out.append(
                    (
                        bar[0],
                        bucket[0][1],
                        max(b[2] for b in bucket),
                        min(b[3] for b in bucket),
                        bucket[-1][4],
                        sum(b[5] for b in bucket),
                    )
                )
            bucket = []
    return out


def test_resampled_live_1s_to_5s_equals_offline_resampling(ex):
    store = store_for(ex)
    cerebro = bt.Cerebro(stdstats=False)
    data = store.getdata(
        dataname="BTC/USDT",
        name="BTC1s",
        timeframe="1s",
        backfill_bars=12,
        poll_grace=grace(ex, 0.1),
        use_websocket=True,
    )
    cerebro.resampledata(data, name="BTC5s", timeframe=bt.TimeFrame.Seconds, compression=5)
    strat = run(cerebro, live_bars=3)
    got = strat.bars["BTC5s"]
    source = truth(ex, "BTC/USDT", "1s", to_ms(got[0][0]) - 5000, to_ms(got[-1][0]))
    expected = {e[0]: e for e in _resample_offline(source, 5)}
    checked = got[1:]  # the first 5s bar may hold only part of its bucket (backfill start)
    assert len(checked) >= 3
    for bar in checked:
        want = expected[bar[0]]
        assert bar[:5] == want[:5]
        assert bar[5] == pytest.approx(want[5], rel=1e-9)
    for prev, cur in zip(got, got[1:], strict=False):
        assert cur[0] - prev[0] == timedelta(seconds=5)


class CrossTrader(bt.Strategy):
    """A deterministic SMA-cross strategy that records its fills and the bars it traded on."""

    params = (("stop_after_live", None),)

    def __init__(self) -> None:
        self.cross = bt.ind.CrossOver(bt.ind.SMA(period=3), bt.ind.SMA(period=6))
        self.fills: list[tuple] = []
        self.bars: list[tuple] = []
        self.live_bars = 0
        self.live = False

    def notify_data(self, data, status, *args, **kwargs) -> None:
        self.live = status == data.LIVE

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            self.fills.append(
                (bt.num2date(order.executed.dt), order.executed.size, order.executed.price)
            )

    def next(self) -> None:
        d = self.data
        self.bars.append((d.datetime.datetime(0), d.open[0], d.close[0]))
        if self.cross[0] > 0 and not self.position:
            self.buy(size=1)
        elif self.cross[0] < 0 and self.position:
            self.close()
        if self.live:
            self.live_bars += 1
            if self.p.stop_after_live and self.live_bars >= self.p.stop_after_live:
                self.env.runstop()


def test_backtest_then_live_makes_the_same_trades_over_the_same_bars(ex):
    now = ex.now_ms()
    fromdate = EPOCH + timedelta(milliseconds=now - now % 1000 - 60_000)
    store = store_for(ex)

    live = bt.Cerebro(stdstats=False)
    live.adddata(
        store.getdata(
            dataname="ETH/USDT",
            timeframe="1s",
            fromdate=fromdate,
            poll_grace=grace(ex, 0.1),
            use_websocket=True,
        )
    )
    live.addstrategy(CrossTrader, stop_after_live=8)
    live_run = live.run()[0]

    backtest = bt.Cerebro(stdstats=False)
    backtest.adddata(
        store.getdata(
            dataname="ETH/USDT",
            timeframe="1s",
            fromdate=fromdate,
            todate=live_run.bars[-1][0],
            historical=True,
        )
    )
    backtest.addstrategy(CrossTrader)
    hist_run = backtest.run()[0]

    assert live_run.live_bars >= 8
    assert hist_run.bars == live_run.bars
    assert len(hist_run.fills) >= 2, "the check needs trades to compare"
    assert hist_run.fills == live_run.fills


@pytest.mark.parametrize("mode", list(MODES))
def test_a_venue_that_omits_empty_candles(mode):
    """Candles without trades are left out by REST and the stream alike: the feed delivers
    exactly the candles that exist, and does not stall waiting for the missing ones."""
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=200, empty_every=3) as fx:
        fx.faults.omit_empty = True
        store = store_for(fx)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(
            store.getdata(
                dataname="BTC/USDT",
                name="BTC",
                timeframe="1s",
                backfill_bars=12,
                poll_grace=grace(fx, 0.1),
                **MODES[mode],
            )
        )
        strat = run(cerebro, live_bars=5)
        bars = strat.bars["BTC"]
        assert bars == expected_for(fx, "BTC/USDT", "1s", bars)
        gaps = [b[0] - a[0] for a, b in zip(bars, bars[1:], strict=False)]
        assert timedelta(seconds=2) in gaps, "no candle was omitted: the test proves nothing"
        assert all(g > timedelta(0) for g in gaps)


@pytest.mark.realtime
@pytest.mark.parametrize("drop_newest", [False, True])
@pytest.mark.parametrize("mode", ["polling", "threaded"])
def test_polling_asks_once_per_bar_not_once_per_load(real_ex, mode, drop_newest):
    """One request per bar, on time, exact; with ``drop_newest=True`` too (prior plugins'
    configurations set it): the poll due at close + poll_grace already trusts its candle.

    Real time: its lag bound (close + grace, well under a bar) is latency at real speed; on a
    fast clock the real milliseconds of a REST round trip would count several times over."""
    ex = real_ex
    store = store_for(ex)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="ETH/USDT",
            name="ETH",
            timeframe="1s",
            backfill_bars=3,
            poll_grace=0.15,
            qcheck=0.01,
            drop_newest=drop_newest,
            **MODES[mode],
        )
    )
    marks = []
    lags = []

    def on_bar(strat, data):
        if strat.live_counts["ETH"] in (1, 6):
            marks.append(ex.stats.snapshot()["rest_by_path"].get("/api/v3/klines", 0))
        if strat.live_counts["ETH"] >= 1:
            lags.append(ex.now_ms() - to_ms(data.datetime.datetime(0)))

    strat = run(cerebro, live_bars=6, on_bar=on_bar)
    assert strat.live_counts["ETH"] == 6
    bars = strat.bars["ETH"]
    assert_contiguous(bars, "1s")
    assert bars == expected_for(ex, "ETH/USDT", "1s", bars)
    # 5 bars after the first live one: one request each, though _load ran every 10 ms (some
    # 100 times a bar); a candle served late on a loaded machine may cost one retry
    assert 5 <= marks[1] - marks[0] <= 7
    # each bar arrives at its close + grace, not a bar late (>= 1000 ms)
    assert sorted(lags)[len(lags) // 2] < 800, lags
