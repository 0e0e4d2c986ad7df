"""A tick feed (timeframe=bt.TimeFrame.Ticks) in REST polling mode, through a real cerebro,
against the local exchange's trade ledger: every trade once, in order, nothing else."""

from __future__ import annotations

from datetime import datetime, timedelta

import backtrader as bt
import pytest

from backtrader_ccxt import CCXTStore, ConfigurationError
from backtrader_ccxt.localexchange import LocalExchange

EPOCH = datetime(1970, 1, 1)
FROZEN_S = 1_700_000_030.5


def dt(ms: int) -> datetime:
    return EPOCH + timedelta(milliseconds=ms)


class Ticks(bt.Strategy):
    """Records (ms, price, high, low, close, volume) of every tick and the statuses."""

    params = (("stop_after", None), ("on_tick", None))

    def __init__(self) -> None:
        self.ticks: list[tuple] = []
        self.statuses: list[str] = []

    def notify_data(self, data, status, *args, **kwargs) -> None:
        self.statuses.append(data._getstatusname(status))

    def next(self) -> None:
        d = self.data
        ms = round((d.datetime.datetime(0) - EPOCH) / timedelta(milliseconds=1))
        self.ticks.append((ms, d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0]))
        if self.p.on_tick is not None:
            self.p.on_tick(self)
        if self.p.stop_after is not None and len(self.ticks) >= self.p.stop_after:
            self.env.runstop()


def run(data, **kwargs) -> Ticks:
    cerebro = bt.Cerebro(exactbars=1, stdstats=False)
    cerebro.adddata(data)
    cerebro.addstrategy(Ticks, **kwargs)
    return cerebro.run()[0]


def expected(ex, symbol, since_ms, until_ms):
    return [
        (t["timestamp"] + 1, t["price"], t["price"], t["price"], t["price"], t["amount"])
        for t in ex.trades(symbol, since_ms, until_ms)
    ]


def test_historical_ticks_from_fromdate_are_the_ledger_despite_binances_window_trap():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), clock=lambda: FROZEN_S) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config(), clock=lambda: FROZEN_S * 1000)
        # 40 minutes back: its first one-hour window holds ~20000 trades, far over a page
        since = ex.now_ms() - 40 * 60_000 + 123
        until = since + 5 * 60_000
        data = store.getdata(
            dataname="BTC/USDT",
            timeframe=bt.TimeFrame.Ticks,
            fromdate=dt(since),
            todate=dt(until - 1),
            historical=True,
        )
        strat = run(data)
        want = expected(ex, "BTC/USDT", since, until)
        assert len(want) > 2000  # several pages
        assert strat.ticks == want
        assert strat.statuses[-1] == "DISCONNECTED"


def test_live_ticks_backfill_then_poll_every_trade_once():
    symbol = "ETH/USDT"
    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=60) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config())
        since = ex.now_ms() - 5_000
        data = store.getdata(
            dataname=symbol,
            timeframe=bt.TimeFrame.Ticks,
            fromdate=dt(since),
            poll_grace=0.2,  # the tick feed's poll interval
            qcheck=0.1,
        )
        before_live = len(ex.trades(symbol, since, ex.now_ms() + 1))
        strat = run(data, stop_after=before_live + 25)  # well into the live part
        got = strat.ticks
        assert got == expected(ex, symbol, since, got[-1][0])
        assert strat.statuses[:2] == ["DELAYED", "LIVE"]


def test_the_last_n_trades_without_fromdate():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), clock=lambda: FROZEN_S) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config(), clock=lambda: FROZEN_S * 1000)
        data = store.getdata(
            dataname="BTC/USDT",
            timeframe=bt.TimeFrame.Ticks,
            backfill_bars=30,
            historical=True,
        )
        strat = run(data)
        assert strat.ticks == expected(ex, "BTC/USDT", None, None)[-30:]


@pytest.mark.parametrize("param", ["use_websocket", "use_threaded_data"])
def test_ticks_in_other_modes_fail_fast_naming_the_choices(param):
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=10) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config())
        data = store.getdata(dataname="BTC/USDT", timeframe=bt.TimeFrame.Ticks, **{param: True})
        with pytest.raises(ConfigurationError, match=f"Ticks.*{param}.*REST polling"):
            run(data)


class Bars(bt.Strategy):
    def __init__(self) -> None:
        self.rows: list[tuple] = []

    def next(self) -> None:
        d = self.data
        ms = round((d.datetime.datetime(0) - EPOCH) / timedelta(milliseconds=1))
        self.rows.append((ms, d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0]))


@pytest.mark.parametrize("seconds", [1, 5])
def test_a_resampled_tick_feed_gives_the_venues_candles_boundary_trades_included(seconds):
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), clock=lambda: FROZEN_S) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config(), clock=lambda: FROZEN_S * 1000)
        since = ex.now_ms() // 60_000 * 60_000 - 60_000  # the trades of one whole minute
        data = store.getdata(
            dataname="BTC/USDT",
            timeframe=bt.TimeFrame.Ticks,
            fromdate=dt(since),
            todate=dt(since + 60_000 - 1),
            historical=True,
        )
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.resampledata(data, timeframe=bt.TimeFrame.Seconds, compression=seconds)
        cerebro.addstrategy(Bars)
        rows = cerebro.run()[0].rows
        # every 1s candle opens with a trade at its open instant: the boundary case
        assert all(t["timestamp"] % 1000 == 0 for t in ex.trades("BTC/USDT", since, since + 1))
        one_s = ex.candles("BTC/USDT", "1s", since, since + 60_000)
        want = []
        for i in range(0, 60, seconds):
            g = one_s[i : i + seconds]
            hi, lo = max(r[2] for r in g), min(r[3] for r in g)
            want.append((g[-1][0] + 1000, g[0][1], hi, lo, g[-1][4], sum(r[5] for r in g)))
        assert [r[:5] for r in rows] == [w[:5] for w in want]
        # backtrader's resampler adds volumes as floats: equal up to float rounding
        assert [r[5] for r in rows] == [pytest.approx(w[5], rel=1e-12) for w in want]


@pytest.mark.parametrize("kind", ["5xx", "truncated"])
def test_rest_failures_while_live_lose_and_repeat_no_trade(kind):
    symbol = "BTC/USDT"
    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=60) as ex:
        store = CCXTStore(
            "binance", config=ex.ccxt_config(), retries=1, retry_delay=0.05, retry_max_delay=0.1
        )
        since = ex.now_ms() - 2_000
        data = store.getdata(
            dataname=symbol,
            timeframe=bt.TimeFrame.Ticks,
            fromdate=dt(since),
            poll_grace=0.1,
            qcheck=0.1,
            ws_reconnect_delay=0.1,
            ws_max_reconnect_delay=0.2,
        )
        broken = []

        def on_tick(strat):
            if "LIVE" in strat.statuses and not broken:
                broken.append(len(strat.ticks))
                # two failures in a row: the poll's one retry is spent too
                ex.faults.rest_errors(kind, count=2, path="/api/v3/aggTrades")

        def stop_when_healed(strat):
            on_tick(strat)
            if strat.statuses.count("LIVE") >= 2 and len(strat.ticks) > broken[0] + 10:
                strat.env.runstop()

        strat = run(data, on_tick=stop_when_healed)
        # a garbled page is retried like an outage, never read as "no trades there"
        assert strat.statuses[:4] == ["DELAYED", "LIVE", "CONNBROKEN", "LIVE"]
        assert ex.faults.counts["rest_5xx" if kind == "5xx" else "rest_truncated"] == 2
        got = strat.ticks
        assert got == expected(ex, symbol, since, got[-1][0])
