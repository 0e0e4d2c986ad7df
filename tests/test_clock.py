"""The exchange clock: measured on the request itself, never through the rate limiter."""

from __future__ import annotations

import time

import ccxt
import pytest

from backtrader_ccxt.clock import ExchangeClock
from backtrader_ccxt.localexchange import LocalExchange


@pytest.fixture(scope="module")
def ex():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",)) as local:
        yield local


def test_the_rate_limiters_wait_does_not_bias_the_offset(ex):
    # The local exchange's clock is the machine's own: the true offset is 0. Make ccxt's
    # limiter hold the clock request ~200 ms (as it does after load_markets on some venues):
    # that wait must neither shift the offset nor widen the margin.
    client = ccxt.binance(ex.ccxt_config())
    client.load_markets()
    client.rateLimit = 2000  # ms per request unit (binance costs "time" at 0.1 unit)
    client.fetch_time()  # spends the bucket: the next request waits
    clock = ExchangeClock()
    started = time.time()
    clock.sync(client)
    assert time.time() - started >= 0.1, "the limiter did not hold the request (test setup)"
    assert clock.margin_ms < 30  # half the request's own round trip, not the wait
    assert abs(clock.offset_ms) <= clock.margin_ms  # the true offset (0) lies in the margin
    assert clock.waited_ms >= 100


def test_an_injected_clock_has_no_margin():
    clock = ExchangeClock(lambda: 1_000_000.0, rate=60)
    assert clock.now_ms() == 1_000_000 and clock.margin_ms == 0 and clock.rate == 60
