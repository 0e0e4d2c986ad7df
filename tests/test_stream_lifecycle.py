"""WebSocket connections over a long run: refreshed by age, a reconnect budget, and the
store's notifications for what happened to the stream (through a real cerebro)."""

from __future__ import annotations

import backtrader as bt
import pytest
from feedtools import (
    Recorder,
    assert_contiguous,
    expected_for,
    fast_exchange,
    fast_store,
    grace,
)

from backtrader_ccxt import notifications as kinds
from backtrader_ccxt.localexchange import LocalExchange

WS = {"use_websocket": True, "ws_reconnect_delay": 0.05, "ws_max_reconnect_delay": 0.2}
SYMBOLS = ("BTC/USDT", "ETH/USDT")


class Watcher(Recorder):
    """A Recorder that also keeps every store notification and can act on a live bar."""

    params = (("act", None),)

    def __init__(self) -> None:
        super().__init__()
        self.notes: list = []

    def notify_store(self, msg, *args, **kwargs) -> None:
        self.notes.append(msg)

    def next(self) -> None:
        super().next()
        if self.p.act is not None:
            self.p.act(self)


@pytest.fixture
def ex():
    """On the fast clock (tests/feedtools.py)."""
    with fast_exchange(symbols=SYMBOLS, timeframes=("1s",), history=300) as local:
        yield local


@pytest.fixture
def real_ex():
    with LocalExchange(symbols=SYMBOLS, timeframes=("1s",), history=300) as local:
        yield local


def run(ex, live_bars: int, act=None, **feed_kwargs):
    store = fast_store(ex)
    cerebro = bt.Cerebro(stdstats=False)
    for sym in SYMBOLS:
        cerebro.adddata(
            store.getdata(
                dataname=sym,
                name=sym,
                timeframe="1s",
                poll_grace=grace(ex, 0.3),
                backfill_bars=5,
                **WS,
                **feed_kwargs,
            )  # fmt: skip
        )
    cerebro.addstrategy(Watcher, live_bars=live_bars, act=act)
    return store, cerebro.run()[0]


def check_exact(ex, strat):
    for sym in SYMBOLS:
        bars = strat.bars[sym]
        assert_contiguous(bars, "1s")
        assert bars == expected_for(ex, sym, "1s", bars)


@pytest.mark.realtime
def test_an_old_connection_is_refreshed_without_a_lost_or_repeated_bar(real_ex):
    # Real time: the store's watchdog checks a connection's age once a real second (with the
    # default stall timeout), so the refreshes in 7 bars depend on the real length of a bar
    ex = real_ex
    store, strat = run(ex, live_bars=7, ws_max_connection_age=1.5)
    check_exact(ex, strat)
    assert store.stats["connection_refreshes"] >= 2
    assert ex.stats.snapshot()["ws_connections"] >= 3  # really reconnected
    assert [n.kind for n in strat.notes].count(kinds.CONNECTION_LOST) >= 2


def test_a_drop_reaches_notify_store_as_lost_then_restored(ex):
    dropped = []

    def act(strat):
        if not dropped and all(c >= 2 for c in strat.live_counts.values()):
            dropped.append(ex.faults.drop_connections())

    store, strat = run(ex, live_bars=6, act=act)
    check_exact(ex, strat)
    stream_notes = [n for n in strat.notes if n.kind != kinds.RATE_LIMITED]
    assert [n.kind for n in stream_notes] == [kinds.CONNECTION_LOST, kinds.CONNECTION_RESTORED]
    assert all(set(n.symbols) == set(SYMBOLS) and n.exchange == "binance" for n in stream_notes)
    for sym in SYMBOLS:
        assert strat.statuses[sym][-2:] == ["CONNBROKEN", "LIVE"]


def test_a_spent_reconnect_budget_ends_the_feeds_with_disconnected(ex):
    stopped = []

    def act(strat):
        if not stopped and all(c >= 2 for c in strat.live_counts.values()):
            stopped.append(True)
            ex.stop()  # the exchange goes away for good: every reconnect fails

    store, strat = run(ex, live_bars=None, act=act, ws_reconnections=2)
    for sym in SYMBOLS:
        assert strat.statuses[sym][-1] == "DISCONNECTED"
    notes = [n.kind for n in strat.notes]
    assert kinds.RECONNECT_BUDGET_SPENT in notes
    assert store.stats["reconnects"] == 2  # the budget, no more


def test_the_venue_closing_old_connections_loses_and_repeats_nothing(ex):
    # the server side of the same thing: the venue cuts every connection at a given age (as
    # Binance does at 24 h); the stream reconnects by itself and REST fills what it missed
    ex.faults.max_connection_age(1.5)
    try:
        store, strat = run(ex, live_bars=7, ws_max_connection_age=None)
    finally:
        ex.faults.max_connection_age(None)
    check_exact(ex, strat)
    assert ex.faults.counts["max_age"] >= 2
    assert store.stats["reconnects"] >= 2
