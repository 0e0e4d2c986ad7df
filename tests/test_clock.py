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


class _Venue:
    """A sync ccxt-like exchange whose clock runs ``ahead_ms`` ahead of the true time."""

    has = {"fetchTime": True}
    id = "venue"

    def __init__(self, true_time, ahead_ms: float) -> None:
        self.true_time = true_time
        self.ahead_ms = ahead_ms
        self.lastRestRequestTimestamp = 0

    def fetch_time(self) -> int:
        return int(self.true_time() * 1000 + self.ahead_ms)


def test_a_wall_clock_step_after_the_measurement_moves_nothing():
    # The machine's wall clock is stepped 5 s forward after the store measured the offset
    # (NTP correcting it, a VM resumed): exchange time must not jump with it, or a candle
    # 5 s from its close would be judged closed.
    true = [1_700_000_000.0]
    step = [0.0]
    clock = ExchangeClock(_wall=lambda: true[0] + step[0], _mono=lambda: true[0] - 1e6)
    venue = _Venue(lambda: true[0], ahead_ms=1234)
    clock.sync(venue)
    exchange_now = true[0] * 1000 + 1234
    assert abs(clock.now_ms() - exchange_now) <= 1
    true[0] += 60.0  # a minute passes
    step[0] = 5.0  # and the wall clock steps
    assert abs(clock.now_ms() - (true[0] * 1000 + 1234)) <= 1
    # a request stamped on the (stepped) wall clock a second ago maps to the right time
    assert abs(clock.at_ms(true[0] + step[0] - 1.0) - (true[0] * 1000 + 1234 - 1000)) <= 1
    assert abs(clock.offset_ms - (1234 - 5000)) <= 1  # exchange minus the stepped wall
