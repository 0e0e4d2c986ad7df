"""A venue serving a REST row that is not a candle (a missing price): through a real cerebro,
the row is never delivered as given; its page is refetched, and the feed reports CONNBROKEN
while the venue keeps serving it.

The local exchange has no control to corrupt a served row, so the test wraps its kline
formatter (``localexchange.binance_format.kline_row``, as ``localexchange.binance_api`` calls it)
with ``monkeypatch``: the served JSON then has ``null`` for the high of one closed candle,
which ccxt parses to ``None``.
"""

from __future__ import annotations

import math
import threading

import backtrader as bt
import pytest
from feedtools import (
    Recorder,
    assert_contiguous,
    expected_for,
    fast_exchange,
    fast_store,
    grace,
    speed_of,
    to_ms,
)

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange
from backtrader_ccxt.localexchange import binance_api as local_rest

MODES = {"polling": {}, "threaded": {"use_threaded_data": True}}


class Corrupter:
    """Serves ``high = null`` for the candle opening at ``open_ms`` once it has closed,
    ``times`` times (None: until :meth:`lift`)."""

    def __init__(self, ex: LocalExchange, open_ms: int, times: int | None) -> None:
        self.ex, self.open_ms, self.left = ex, open_ms, times
        self.served = 0
        self.lifted = threading.Event()
        self._lock = threading.Lock()
        self._orig = local_rest.fmt.kline_row

    def __call__(self, c):
        row = self._orig(c)
        if c.open_ms != self.open_ms or c.close_ms > self.ex.now_ms() or self.lifted.is_set():
            return row
        with self._lock:
            if self.left is not None:
                if self.left <= 0:
                    return row
                self.left -= 1
            self.served += 1
        row[2] = None
        return row

    def lift(self) -> None:
        self.lifted.set()


@pytest.fixture(scope="module")
def ex():
    """On the fast clock (tests/feedtools.py)."""
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=300) as ex:
        yield ex


def run_feed(ex, mode: str, corrupter: Corrupter, store: CCXTStore, on_broken=None):
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="BTC/USDT",
            name="BTC",
            timeframe="1s",
            backfill_bars=3,
            poll_grace=grace(ex, 0.1),
            ws_reconnect_delay=0.2,
            ws_max_reconnect_delay=0.5,
            **MODES[mode],
        )
    )

    class Strat(Recorder):
        def notify_data(self, data, status, *args, **kwargs):
            super().notify_data(data, status, *args, **kwargs)
            if status == data.CONNBROKEN and on_broken is not None:
                on_broken()

    def stop_when_live_again(strat, data):
        # 6 live bars, and the feed LIVE at that point: the bars REST catches up with after a
        # CONNBROKEN come before the LIVE that follows them, and on a fast clock more candles
        # close while the feed is broken. At most 20 more bars, so a feed that never comes
        # back fails the statuses check instead of running on.
        # (and past the bad candle, which is further ahead on a fast clock: see bad_open_ms)
        n = strat.live_counts["BTC"]
        past = to_ms(strat.bars["BTC"][-1][0]) > corrupter.open_ms + 1000
        if n >= 6 and past and (strat.statuses["BTC"][-1] == "LIVE" or n >= 26):
            strat.env.runstop()

    cerebro.addstrategy(Strat, live_bars=None, on_bar=stop_when_live_again)
    return cerebro.run()[0]


def bad_open_ms(ex) -> int:
    """A candle that closes once the feed is live: 3 candles ahead at real speed; as many
    real seconds ahead as the feed may take to start on a loaded machine (1.6 s) on a fast
    clock, where 3 candles are 0.6 s."""
    now = ex.now_ms()
    return now - now % 1000 + 1000 * max(3, math.ceil(1.6 * speed_of(ex)))


@pytest.mark.parametrize("mode", list(MODES))
def test_a_bad_row_served_twice_is_refetched_and_the_bar_delivered_right(ex, monkeypatch, mode):
    bad_open = bad_open_ms(ex)
    corrupter = Corrupter(ex, bad_open, times=2)
    monkeypatch.setattr(local_rest.fmt, "kline_row", corrupter)
    store = fast_store(ex, retries=5, retry_delay=0.05)
    strat = run_feed(ex, mode, corrupter, store)

    bars = strat.bars["BTC"]
    assert corrupter.served == 2
    assert to_ms(bars[0][0]) < bad_open + 1000 < to_ms(bars[-1][0])
    assert_contiguous(bars, "1s")
    assert bars == expected_for(ex, "BTC/USDT", "1s", bars)  # no high of 0.0 or None
    assert strat.statuses["BTC"] == ["DELAYED", "LIVE"]  # the retries absorbed it
    if mode == "polling":  # (the threaded poller's counters are the stream manager's)
        assert store.stats["bad_rows"] == 2
        assert store.stats["bad_rows_price"] == 2


@pytest.mark.parametrize("mode", list(MODES))
def test_a_bad_row_that_stays_bad_holds_the_feed_connbroken_until_served_right(
    ex, monkeypatch, mode
):
    bad_open = bad_open_ms(ex)
    corrupter = Corrupter(ex, bad_open, times=None)
    monkeypatch.setattr(local_rest.fmt, "kline_row", corrupter)
    store = fast_store(ex, retries=1, retry_delay=0.05)
    strat = run_feed(ex, mode, corrupter, store, on_broken=corrupter.lift)

    bars = strat.bars["BTC"]
    assert corrupter.served >= 2 and corrupter.lifted.is_set()
    assert_contiguous(bars, "1s")  # the bad candle was neither skipped nor delivered as given
    assert bars == expected_for(ex, "BTC/USDT", "1s", bars)
    assert to_ms(bars[0][0]) < bad_open + 1000 < to_ms(bars[-1][0])
    assert strat.statuses["BTC"][:2] == ["DELAYED", "LIVE"]
    assert "CONNBROKEN" in strat.statuses["BTC"]
    assert strat.statuses["BTC"][-1] == "LIVE"
