"""A feed with cache=: history already on disk is served from it, only the tail is fetched,
and what the feed delivers is stored, in historical and live runs alike."""

from __future__ import annotations

from datetime import timedelta

import backtrader as bt
import pytest
from feedtools import EPOCH, expected_for, fast_exchange, fast_store, grace, run, run_historical

from backtrader_ccxt import ConfigurationError, HistoryCache

KLINES = "/api/v3/klines"


@pytest.fixture(scope="module")
def ex():
    """On the fast clock (tests/feedtools.py)."""
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=5000) as ex:
        yield ex


def klines(ex) -> int:
    return ex.stats.snapshot()["rest_by_path"].get(KLINES, 0)


def backtest(ex, cache, fromdate, todate):
    store = fast_store(ex)
    strat = run_historical(
        store, "BTC/USDT", "1s", fromdate, todate, name="BTC", ohlcv_limit=1000, cache=cache
    )
    return strat.bars["BTC"]


def test_a_second_backtest_fetches_only_the_missing_tail(ex, tmp_path):
    now = ex.now_ms()
    start = now - now % 1000 - 4000_000
    fromdate = EPOCH + timedelta(milliseconds=start + 1000)
    cache = HistoryCache(tmp_path / "c.sqlite3")

    before = klines(ex)
    first = backtest(ex, cache, fromdate, fromdate + timedelta(seconds=2499))
    assert klines(ex) - before == 3  # 2,500 bars, pages of 1,000
    assert first == expected_for(ex, "BTC/USDT", "1s", first)

    before = klines(ex)
    second = backtest(ex, cache, fromdate, fromdate + timedelta(seconds=3499))
    assert klines(ex) - before == 1  # only the 1,000 bars the cache lacks
    assert second[:2500] == first
    assert len(second) == 3500
    assert second == expected_for(ex, "BTC/USDT", "1s", second)

    before = klines(ex)
    assert (
        backtest(ex, str(tmp_path / "c.sqlite3"), fromdate, fromdate + timedelta(seconds=3499))
        == second
    )
    assert klines(ex) - before == 0  # a path works as well as an instance; all from disk


def test_a_live_restart_serves_history_from_the_cache(ex, tmp_path):
    cache = HistoryCache(tmp_path / "live.sqlite3")
    runs = []
    for _ in range(2):
        store = fast_store(ex)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(
            store.getdata(
                dataname="BTC/USDT",
                name="BTC",
                timeframe="1s",
                backfill_bars=2500,
                poll_grace=grace(ex, 0.2),
                use_websocket=True,
                cache=cache,
            )
        )
        before = klines(ex)
        strat = run(cerebro, live_bars=2)
        runs.append((strat.bars["BTC"], klines(ex) - before))
    (bars1, calls1), (bars2, calls2) = runs
    # 2,500 bars of history are 3 pages; the restart needs at most the page of recent candles
    assert calls1 == 3 and calls2 <= 1
    for bars in (bars1, bars2):
        assert bars == expected_for(ex, "BTC/USDT", "1s", bars)
    # the restart's history overlaps what the first run stored, bar for bar
    overlap = [b for b in bars2 if b[0] <= bars1[-1][0]]
    assert len(overlap) > 2400
    assert overlap == bars1[-len(overlap) :]


def test_cache_must_be_a_history_cache_or_a_path(ex):
    store = fast_store(ex)
    cerebro = bt.Cerebro()
    cerebro.adddata(store.getdata(dataname="BTC/USDT", timeframe="1s", cache=42))
    with pytest.raises(ConfigurationError, match="cache must be a HistoryCache or a path"):
        cerebro.run()


def test_a_misspelled_param_is_rejected_with_a_suggestion(ex):
    store = fast_store(ex)
    with pytest.raises(
        ConfigurationError, match="'backfil_bars' \\(did you mean 'backfill_bars'\\?\\)"
    ):
        store.getdata(dataname="BTC/USDT", backfil_bars=5)
