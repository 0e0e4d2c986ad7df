"""Venue errors, store notifications and venue params through a real cerebro against the local
exchange: a documented "try again" reply is retried (no lost or repeated bar), an
unclassified one ends the feed after a bounded number of attempts, and notify_store hears
rate limiting and the fatal end with the exchange and the symbol."""

from __future__ import annotations

import backtrader as bt
import pytest
from feedtools import Recorder, assert_contiguous, expected_for, fast_exchange, fast_store
from venuetools import TRY_AGAIN, UNCLASSIFIED, RestTap

from backtrader_ccxt.errors import BOUNDED_RETRIES
from backtrader_ccxt.notifications import FATAL, RATE_LIMITED, StoreNotification

KLINES = "/api/v3/klines"


class Notes(Recorder):
    """Recorder that also keeps every notify_store message."""

    def __init__(self) -> None:
        super().__init__()
        self.store_notes: list = []

    def notify_store(self, msg, *args, **kwargs) -> None:
        self.store_notes.append(msg)


def _live(ex, store, on_bar, live_bars=4, add_store=False, **kwargs):
    cerebro = bt.Cerebro(stdstats=False)
    params = {"dataname": "BTC/USDT", "name": "BTC/USDT", "timeframe": "1s", "backfill_bars": 5}
    data = store.getdata(**{**params, **kwargs})
    cerebro.adddata(data)
    if add_store:
        cerebro.addstore(store)
    cerebro.addstrategy(Notes, live_bars=live_bars, on_bar=on_bar)
    return cerebro.run()[0]


def _arm_once(arm):
    """on_bar callback that calls ``arm()`` at the first live bar."""
    armed = []

    def on_bar(strat, data):
        if not armed and strat.live_counts[data._name] >= 1:
            armed.append(True)
            arm()

    return on_bar


@pytest.mark.parametrize("protocol", list(TRY_AGAIN))
def test_a_venue_try_again_reply_is_retried_without_losing_a_bar(protocol):
    path, status, body = TRY_AGAIN[protocol]
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=100) as ex:
        tap = RestTap(ex)
        store = fast_store(ex, retry_delay=0.02, retries=8)
        # more replies than an unclassified error would be allowed: only the venue table helps
        count = BOUNDED_RETRIES + 2
        strat = _live(ex, store, _arm_once(lambda: tap.arm(path, status, body, count=count)))
        bars = strat.bars["BTC/USDT"]
        assert tap.served == count  # the venue really said "try again", live
        assert bars == expected_for(ex, "BTC/USDT", "1s", bars)
        assert_contiguous(bars, "1s")
        assert "DISCONNECTED" not in strat.statuses["BTC/USDT"][:-1]
        assert not [n for n in strat.store_notes if n.kind == FATAL]


@pytest.mark.parametrize("protocol", list(UNCLASSIFIED))
def test_an_unclassified_venue_error_ends_the_feed_after_a_bounded_number_of_attempts(protocol):
    path, status, body = UNCLASSIFIED[protocol]
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=100) as ex:
        tap = RestTap(ex)
        store = fast_store(ex, retry_delay=0.01, retries=10)
        strat = _live(
            ex, store, _arm_once(lambda: tap.arm(path, status, body, count=100)), live_bars=50
        )
        assert tap.served == BOUNDED_RETRIES + 1  # not retries=10, not forever
        assert strat.statuses["BTC/USDT"][-1] == "DISCONNECTED"
        fatal = [n for n in strat.store_notes if n.kind == FATAL]
        assert len(fatal) == 1
        assert fatal[0].exchange == protocol and fatal[0].symbols == ("BTC/USDT",)
        bars = strat.bars["BTC/USDT"]
        assert bars == expected_for(ex, "BTC/USDT", "1s", bars)  # what came before is exact


@pytest.mark.parametrize("add_store", [False, True], ids=["adddata only", "with addstore"])
def test_notify_store_hears_rate_limiting_once_per_429(add_store):
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=100) as ex:
        store = fast_store(ex, retry_delay=0.01)
        arm = _arm_once(lambda: ex.faults.rest_errors("429", count=1, retry_after=0.2, path=KLINES))
        strat = _live(ex, store, arm, add_store=add_store)
        assert ex.faults.counts["rest_429"] == 1
        notes = strat.store_notes
        assert all(isinstance(n, StoreNotification) for n in notes)
        limited = [n for n in notes if n.kind == RATE_LIMITED]
        assert len(limited) == 1, notes
        assert limited[0].exchange == "binance" and limited[0].symbols == ("BTC/USDT",)
        bars = strat.bars["BTC/USDT"]
        assert bars == expected_for(ex, "BTC/USDT", "1s", bars)
        assert_contiguous(bars, "1s")


def test_fetch_ohlcv_params_reach_every_candle_request():
    with fast_exchange(symbols=("BTC/USDT",), timeframes=("1s",), history=2000) as ex:
        tap = RestTap(ex)
        store = fast_store(ex)
        strat = _live(
            ex,
            store,
            None,
            live_bars=2,
            backfill_bars=1500,
            ohlcv_limit=1000,
            fetch_ohlcv_params={"timeZone": "0"},
        )
        queries = tap.queries(KLINES)
        assert len(queries) >= 4  # two backfill pages, then live polls
        assert all("timeZone=0" in q for q in queries), queries
        assert len(strat.bars["BTC/USDT"]) >= 1500
