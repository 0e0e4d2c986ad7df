"""Backoff delays and Retry-After parsing."""

import random

import pytest

from backtrader_ccxt.retry import Backoff, retry_after_seconds


def test_without_jitter_delays_double_up_to_the_cap():
    b = Backoff(0.5, 5.0, jitter=False)
    assert [b.next_delay() for _ in range(7)] == [0.5, 1.0, 2.0, 4.0, 5.0, 5.0, 5.0]


def test_factor_is_used():
    b = Backoff(1.0, 100.0, factor=3.0, jitter=False)
    assert [b.next_delay() for _ in range(4)] == [1.0, 3.0, 9.0, 27.0]


def test_reset_starts_over():
    b = Backoff(1.0, 30.0, jitter=False)
    for _ in range(4):
        b.next_delay()
    b.reset()
    assert b.attempts == 0
    assert [b.next_delay() for _ in range(2)] == [1.0, 2.0]


def test_floor_lifts_a_shorter_delay_only():
    b = Backoff(1.0, 30.0, jitter=False)
    assert b.next_delay(floor=7.0) == 7.0  # Retry-After longer than the backoff
    assert b.next_delay(floor=0.5) == 2.0  # the backoff already waits longer


def test_floor_applies_after_jitter():
    b = Backoff(1.0, 30.0, rng=random.Random(1))
    assert all(b.next_delay(floor=40.0) == 40.0 for _ in range(5))


def test_jitter_is_between_half_and_all_of_the_delay():
    seed = 1234
    b = Backoff(1.0, 8.0, rng=random.Random(seed))
    mirror = random.Random(seed)
    raw = [1.0, 2.0, 4.0, 8.0] + [8.0] * 200
    for expected_raw in raw:
        delay = b.next_delay()
        assert expected_raw * 0.5 <= delay <= expected_raw
        assert delay == pytest.approx(expected_raw * (0.5 + 0.5 * mirror.random()))


def test_jitter_spreads_the_delays():
    b = Backoff(10.0, 10.0, rng=random.Random(7))
    delays = [b.next_delay() for _ in range(200)]
    assert min(delays) < 6.0 and max(delays) > 9.0


def test_zero_initial_never_waits():
    b = Backoff(0.0, 10.0, jitter=False)
    assert [b.next_delay() for _ in range(3)] == [0.0, 0.0, 0.0]


@pytest.mark.parametrize("initial, maximum", [(-1.0, 5.0), (5.0, 1.0)])
def test_invalid_bounds(initial, maximum):
    with pytest.raises(ValueError):
        Backoff(initial, maximum)


def test_a_long_outage_stays_at_the_cap():
    # A feed retrying every 30 s for about 9 hours without a success makes 1,100 attempts.
    b = Backoff(1.0, 30.0, jitter=False)
    delays = [b.next_delay() for _ in range(1100)]
    assert delays[-1] == 30.0


@pytest.mark.parametrize(
    "headers, expected",
    [
        (None, 0.0),
        ({}, 0.0),
        ({"Content-Type": "application/json"}, 0.0),
        ({"Retry-After": "5"}, 5.0),
        ({"retry-after": "2.5"}, 2.5),
        ({"RETRY-AFTER": 7}, 7.0),
        ({"Content-Type": "text/plain", "Retry-After": "3"}, 3.0),
        ({"Retry-After": "soon"}, 0.0),
        ({"Retry-After": "Wed, 21 Oct 2015 07:28:00 GMT"}, 0.0),
        ({"Retry-After": None}, 0.0),
        ({"Retry-After": ""}, 0.0),
        ({"Retry-After": "-3"}, 0.0),
        ({"Retry-After": "1000"}, 300.0),
    ],
)
def test_retry_after_seconds(headers, expected):
    assert retry_after_seconds(headers) == expected


def test_retry_after_cap_is_configurable():
    assert retry_after_seconds({"Retry-After": "120"}, cap=60.0) == 60.0
    assert retry_after_seconds({"Retry-After": "45"}, cap=60.0) == 45.0
