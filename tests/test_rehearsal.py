"""Rehearsal: a live strategy, unchanged, over the user's own history on the local exchange at
hundreds of times real speed, in a real cerebro, records exactly the bars (and makes exactly
the trades) of a backtest of the same history."""

from __future__ import annotations

import random
from datetime import datetime

import backtrader as bt
import ccxt
import pytest
from feedtools import Recorder
from helpers import eventually

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.localexchange import RehearsalExchange

pd = pytest.importorskip("pandas")

from backtrader_ccxt.frames import export_frame, rows_to_frame, to_pandas_data  # noqa: E402

T0 = 1_709_510_400_000  # 2024-03-04 00:00 UTC: history from the past, served at its own times
MIN = 60_000
ROWS = 70
WARMUP = 40
SPEED = 600.0  # a 1m candle every 0.1 s

MODES = {
    "polling": {},
    "threaded": {"use_threaded_data": True},
    "websocket": {"use_websocket": True},
}


def make_rows(n: int = ROWS, seed: int = 7, start: int = T0, step: int = MIN) -> list[list]:
    """A user's candles: a random walk with 2-decimal prices and 4-decimal volumes."""
    r = random.Random(seed)
    price, rows = 100.0, []
    for i in range(n):
        o = round(price, 2)
        c = round(o + r.uniform(-1, 1), 2)
        h = round(max(o, c) + r.uniform(0, 0.5), 2)
        lo = round(min(o, c) - r.uniform(0, 0.5), 2)
        rows.append([start + i * step, o, h, lo, c, round(r.uniform(0.1, 5), 4)])
        price = c
    return rows


class Trader(Recorder):
    """Records bars (Recorder) and trades on a fixed rule: long above a 5-bar SMA, flat below.
    Orders go to backtrader's own broker, filled at the next bar's open."""

    def __init__(self) -> None:
        super().__init__()
        self.sma = bt.ind.SMA(self.data.close, period=5)
        self.fills: list[tuple] = []
        self.trades: list[tuple] = []

    def next(self) -> None:
        super().next()
        if len(self.sma) == 0 or len(self.data) < 5:
            return
        if not self.position and self.data.close[0] > self.sma[0]:
            self.buy(size=1)
        elif self.position and self.data.close[0] < self.sma[0]:
            self.close()

    def notify_order(self, order) -> None:
        if order.status == order.Completed:
            ex = order.executed
            self.fills.append((bt.num2date(ex.dt), order.isbuy(), ex.size, ex.price))

    def notify_trade(self, trade) -> None:
        if trade.isclosed:
            self.trades.append((trade.dtopen, trade.dtclose, round(trade.pnl, 8)))


def backtest(rows: list[list], strategy=Trader) -> Recorder:
    cerebro = bt.Cerebro(stdstats=False, runonce=False)
    cerebro.adddata(to_pandas_data(rows_to_frame(rows, "1m"), "1m", name="BTC"))
    cerebro.addstrategy(strategy, live_bars=None)
    return cerebro.run()[0]


def rehearse(ex: RehearsalExchange, mode: str, strategy=Trader, **kwargs) -> Recorder:
    """The live run: ``getdata`` as a live strategy has it, ending at the history's end."""
    store = CCXTStore(**ex.store_kwargs())
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="BTC/USDT",
            name="BTC",
            timeframe="1m",
            **ex.feed_kwargs(),
            **MODES[mode],
        )
    )
    cerebro.addstrategy(strategy, live_bars=None, **kwargs)
    try:
        return cerebro.run()[0]
    finally:
        store.stop()


@pytest.fixture(scope="module")
def rows():
    return make_rows()


@pytest.fixture(scope="module")
def expected(rows):
    strat = backtest(rows)
    assert len(strat.bars["BTC"]) == ROWS
    assert strat.trades, "the rule never traded: the comparison would prove little"
    return strat


@pytest.mark.parametrize("mode", list(MODES))
def test_live_rehearsal_equals_backtest_bars_and_trades(rows, expected, mode):
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        strat = rehearse(ex, mode)
        assert ex.finished
        klines = ex.stats.rest_by_path["/api/v3/klines"]
    if mode == "websocket":
        # the stream's finals delivered the live bars, not a REST confirm per candle
        assert klines < (ROWS - WARMUP) // 2, klines
    assert strat.bars["BTC"] == expected.bars["BTC"]
    assert strat.fills == expected.fills
    assert strat.trades == expected.trades
    # it really went live over the rehearsed part: the backfill stopped near the warmup
    assert strat.statuses["BTC"] == ["DELAYED", "LIVE", "DISCONNECTED"]
    assert WARMUP - 1 <= strat.seam["BTC"] <= WARMUP + 2, strat.seam
    assert strat.bars["BTC"][0][0] == datetime(2024, 3, 4, 0, 1)


@pytest.mark.parametrize("protocol", ["okx", "bybit"])
def test_rehearsal_on_other_venues_over_websocket(rows, expected, protocol):
    with RehearsalExchange(
        {"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP, protocol=protocol
    ) as ex:
        strat = rehearse(ex, "websocket")
    assert strat.bars["BTC"] == expected.bars["BTC"]
    assert strat.trades == expected.trades


def test_faults_during_a_rehearsal_lose_and_duplicate_nothing(rows, expected):
    """A dropped connection and a missing final mid-run: the feed recovers over REST and the
    strategy still sees exactly the backtest's bars."""
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:

        def on_bar(strat, data):
            if strat.live_counts["BTC"] == 5:
                ex.faults.drop_connections()
            elif strat.live_counts["BTC"] == 12:
                ex.faults.skip_final()

        strat = rehearse(ex, "websocket", on_bar=on_bar)
        counts = ex.faults.counts
    assert counts["drop"] >= 1 and counts["skip_final"] == 1
    assert strat.bars["BTC"] == expected.bars["BTC"]
    assert strat.trades == expected.trades


def test_at_3000x_the_stream_still_delivers_every_final_on_time():
    """50 ms of real time is 2.5 one-minute bars at 3000x: the exchange's timer must re-read
    the clock far more often than the plain local exchange does, or every final leaves late
    and the feed confirms each candle over REST instead."""
    rows = make_rows(100, seed=5)
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=3000.0, warmup=WARMUP) as ex:
        strat = rehearse(ex, "websocket", strategy=Recorder)
        klines = ex.stats.rest_by_path["/api/v3/klines"]
    assert strat.bars["BTC"] == backtest(rows, Recorder).bars["BTC"]
    assert klines < 10, klines


def test_rest_errors_during_a_polling_rehearsal_are_retried_without_a_gap(rows, expected):
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:

        def on_bar(strat, data):
            if strat.live_counts["BTC"] == 5:
                ex.faults.rest_errors("5xx", count=2, path="/api/v3/klines")

        strat = rehearse(ex, "polling", on_bar=on_bar)
        counts = ex.faults.counts
    assert counts["rest_5xx"] == 2
    assert strat.bars["BTC"] == expected.bars["BTC"]
    assert strat.trades == expected.trades


def test_two_symbols_on_one_stream_each_equal_their_backtest():
    btc, eth = make_rows(seed=11), make_rows(seed=12)
    history = {"BTC/USDT": btc, "ETH/USDT": eth}
    with RehearsalExchange(history, "1m", speed=SPEED, warmup=WARMUP) as ex:
        store = CCXTStore(**ex.store_kwargs())
        cerebro = bt.Cerebro(stdstats=False)
        for symbol in history:
            cerebro.adddata(
                store.getdata(
                    dataname=symbol,
                    name=symbol,
                    timeframe="1m",
                    use_websocket=True,
                    **ex.feed_kwargs(),
                )
            )
        cerebro.addstrategy(Recorder, live_bars=None)
        try:
            strat = cerebro.run()[0]
        finally:
            store.stop()
        assert ex.stats.ws_connections == 1
    for symbol, rows in history.items():
        assert strat.bars[symbol] == backtest(rows, Recorder).bars["BTC"], symbol


@pytest.mark.parametrize("mode", ["polling", "websocket"])
def test_frame_csv_and_holes_are_served_as_the_backtest_sees_them(tmp_path, mode):
    """A CSV file (frames.export_frame) with a hole: REST serves the rows at their own open
    times and leaves the hole out, as the venue did; a backtest of the file sees the same."""
    rows = make_rows(60, seed=3)
    del rows[45]  # a candle the venue omitted
    path = export_frame(rows_to_frame(rows, "1m"), tmp_path / "btc.csv")
    with RehearsalExchange({"BTC/USDT": path}, "1m", speed=SPEED, warmup=30) as ex:
        strat = rehearse(ex, mode, strategy=Recorder)
        client = ccxt.binance(ex.ccxt_config())
        served = client.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=1000)
    assert served == rows
    assert strat.bars["BTC"] == backtest(rows, Recorder).bars["BTC"]


def test_longer_timeframes_are_aggregated_from_the_rows(rows):
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=1.0, warmup=WARMUP) as ex:
        five = ex.candles("BTC/USDT", "5m")
    assert len(five) == WARMUP // 5
    first = rows[:5]
    assert five[0] == [
        T0,
        first[0][1],
        max(r[2] for r in first),
        min(r[3] for r in first),
        first[-1][4],
        pytest.approx(sum(r[5] for r in first)),
    ]


def test_feed_kwargs_span_the_history_with_a_grace_in_real_time(rows):
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        kw = ex.feed_kwargs()
        assert kw["fromdate"] == datetime(2024, 3, 4, 0, 1)
        assert kw["todate"] == datetime(2024, 3, 4, 1, 10)  # the close of row 69
        assert kw["poll_grace"] == 30.0  # 50 ms of real time at 600x: half a bar at most
        assert ex.feed_kwargs(latency=0.001)["poll_grace"] == 1.0  # never below the default
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=2.0, warmup=WARMUP) as slow:
        assert slow.feed_kwargs()["poll_grace"] == 1.0
        with pytest.raises(ConfigurationError, match="latency must be"):
            slow.feed_kwargs(latency=-1)


def test_store_clock_matches_the_exchange(rows):
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        clock, rate = ex.store_clock()
        assert rate == SPEED
        a = ex.now_ms()
        b = clock()
        c = ex.now_ms()
        assert a <= b <= c + 1
        assert T0 + WARMUP * MIN <= a < T0 + ROWS * MIN


def test_the_clock_waits_for_the_first_candle_request(rows):
    """However long a store takes to start, its backfill finds exactly ``warmup`` candles."""
    with RehearsalExchange({"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP) as ex:
        client = ccxt.binance(ex.ccxt_config())
        client.load_markets()
        client.fetch_time()
        assert not ex.clock_started and ex.now_ms() == T0 + WARMUP * MIN
        got = client.fetch_ohlcv("BTC/USDT", "1m", since=T0, limit=1000)
        assert got[:WARMUP] == rows[:WARMUP]
        assert ex.clock_started
        start = ex.now_ms()
        eventually(lambda: ex.now_ms() >= start + 5 * MIN, timeout=5)
    with RehearsalExchange(
        {"BTC/USDT": rows}, "1m", speed=SPEED, warmup=WARMUP, clock_start="start"
    ) as ex:
        assert ex.clock_started


@pytest.mark.parametrize(
    ("change", "needle"),
    [
        (lambda r: r.__setitem__(3, r[2]), "duplicate"),
        (lambda r: r.__setitem__(slice(2, 4), [r[3], r[2]]), "sorted"),
        (lambda r: r[5].__setitem__(0, r[5][0] + 1000), "not on the 1m grid"),
        (lambda r: r[5].__setitem__(4, float("nan")), "close"),
        (lambda r: r[5].__setitem__(3, r[5][2] + 10), "do not bound"),
        (lambda r: r[5].__setitem__(1, "x"), "expected a number"),
    ],
)
def test_bad_rows_fail_fast_naming_the_row(change, needle):
    rows = [list(r) for r in make_rows(20)]
    change(rows)
    with pytest.raises(ConfigurationError, match=needle):
        RehearsalExchange({"BTC/USDT": rows}, "1m", warmup=5)


def test_a_timeframe_that_does_not_match_the_rows_is_refused():
    five_minute = make_rows(20, step=5 * MIN)
    with pytest.raises(ConfigurationError, match=r"300000 ms apart.*'1m'"):
        RehearsalExchange({"BTC/USDT": five_minute}, "1m", warmup=5)
    with pytest.raises(ConfigurationError, match="not on the 5m grid"):
        RehearsalExchange({"BTC/USDT": make_rows(20)}, "5m", warmup=5)


@pytest.mark.parametrize(
    ("kwargs", "needle"),
    [
        ({"speed": 0}, "speed must be a number > 0"),
        ({"clock_start": "later"}, "clock_start must be one of request, start, got 'later'"),
        ({"warmup": 20}, "warmup 20 leaves nothing"),
        ({"warmup": -1}, "warmup must be an int"),
        ({"symbols": ("ETH/USDT",)}, "sets symbols itself"),
        ({"timeframe": "1M"}, "unsupported timeframe '1M'"),
        ({"history": {}}, "non-empty dict"),
        ({"history": {"btcusdt": []}}, "invalid symbol 'btcusdt'"),
        ({"history": {"BTC/USDT": []}}, "no rows"),
        ({"history": {"BTC/USDT": 42}}, "got int"),
    ],
)
def test_bad_configuration_fails_fast(kwargs, needle):
    args = {"history": {"BTC/USDT": make_rows(20)}, "timeframe": "1m", **kwargs}
    with pytest.raises(ConfigurationError, match=needle):
        RehearsalExchange(args.pop("history"), args.pop("timeframe"), **args)
