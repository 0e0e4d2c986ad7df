"""The REST retry loop honours errors.classify: a bounded budget for unclassified venue
errors, the full one for transient errors, none for fatal ones; and it tells the store."""

from __future__ import annotations

import asyncio

import ccxt
import pytest

from backtrader_ccxt.errors import BOUNDED_RETRIES, FatalExchangeError, RetryableError
from backtrader_ccxt.rest import RestTarget, call_with_retry, fetch_page, fetch_page_async
from backtrader_ccxt.retry import Backoff
from backtrader_ccxt.timeframes import parse


class FakeExchange:
    """A hand-written stand-in: fetch_ohlcv raises the queued errors, then returns rows."""

    id = "binance"
    last_response_headers = None

    def __init__(self, errors, rows=None):
        self.errors = list(errors)
        self.rows = rows or [[60_000, 1, 2, 0.5, 1.5, 10]]
        self.calls = 0

    def fetch_ohlcv(self, symbol, timeframe, since, limit, params):
        self.calls += 1
        self.params = params
        if self.errors:
            raise self.errors.pop(0)
        return self.rows


class AsyncFakeExchange(FakeExchange):
    async def fetch_ohlcv(self, *args):
        return FakeExchange.fetch_ohlcv(self, *args)


def _target(notes=None, retries=5, params=None):
    return RestTarget(
        symbol="BTC/USDT",
        tf=parse("1m"),
        retries=retries,
        backoff=Backoff(0.0, 0.0, jitter=False),
        params=params or {},
        notify=(lambda kind, msg, symbols: notes.append((kind, symbols)))
        if notes is not None
        else None,
    )


def _no_wait(delay):
    return True


def test_an_unclassified_exchange_error_is_retried_a_bounded_number_of_times():
    ex = FakeExchange([ccxt.ExchangeError("binance something odd")] * 20)
    notes = []
    with pytest.raises(FatalExchangeError, match="given up after"):
        fetch_page(ex, _target(notes, retries=10), 0, 5, _no_wait)
    assert ex.calls == BOUNDED_RETRIES + 1
    assert notes == [("FATAL", ("BTC/USDT",))]


def test_a_bounded_error_that_clears_is_no_failure():
    ex = FakeExchange([ccxt.ExchangeError("binance odd")] * BOUNDED_RETRIES)
    assert fetch_page(ex, _target(), 0, 5, _no_wait) == [[60_000, 1.0, 2.0, 0.5, 1.5, 10.0]]


def test_a_venue_retry_code_gets_the_full_budget():
    body = (
        '{"code":-1001,"msg":"Internal error; unable to process your request. Please try again."}'
    )
    ex = FakeExchange([ccxt.OperationFailed(f"binance {body}")] * 20)
    notes = []
    with pytest.raises(RetryableError):
        fetch_page(ex, _target(notes, retries=7), 0, 5, _no_wait)
    assert ex.calls == 8
    assert notes == [("CONNECTION_LOST", ("BTC/USDT",))]


def test_fatal_errors_are_not_retried():
    ex = FakeExchange([ccxt.BadSymbol("binance bad symbol")])
    with pytest.raises(FatalExchangeError):
        fetch_page(ex, _target(), 0, 5, _no_wait)
    assert ex.calls == 1


def test_rate_limits_are_notified_and_recovery_after_a_loss_too():
    ex = FakeExchange([ccxt.RateLimitExceeded("binance 429")] * 3)
    notes = []
    target = _target(notes, retries=1)
    with pytest.raises(RetryableError):
        fetch_page(ex, target, 0, 5, _no_wait)
    fetch_page(ex, target, 0, 5, _no_wait)  # one more 429, then an answer
    assert notes == [
        ("RATE_LIMITED", ("BTC/USDT",)),
        ("CONNECTION_LOST", ("BTC/USDT",)),
        ("RATE_LIMITED", ("BTC/USDT",)),
        ("CONNECTION_RESTORED", ("BTC/USDT",)),
    ]


def test_venue_params_reach_every_request():
    ex = FakeExchange([])
    fetch_page(ex, _target(params={"price": "mark"}), 0, 5, _no_wait)
    assert ex.params == {"price": "mark"}


def test_the_async_driver_honours_the_same_bound():
    ex = AsyncFakeExchange([ccxt.ExchangeError("binance odd")] * 20)
    notes = []
    with pytest.raises(FatalExchangeError):
        asyncio.run(fetch_page_async(ex, _target(notes, retries=10), 0, 5))
    assert ex.calls == BOUNDED_RETRIES + 1
    assert notes == [("FATAL", ("BTC/USDT",))]


def test_call_with_retry_without_notify_still_works():
    calls = []

    def fn():
        calls.append(1)
        if len(calls) < 3:
            raise ccxt.RequestTimeout("slow")
        return "ok"

    assert call_with_retry(FakeExchange([]), fn, "ctx", 5, Backoff(0.0, 0.0), wait=_no_wait) == "ok"
    assert len(calls) == 3


def test_a_historical_give_up_is_notified_as_fatal():
    ex = FakeExchange([ccxt.RequestTimeout("slow")] * 5)
    notes = []
    target = _target(notes, retries=1)
    target.give_up_is_fatal = True
    with pytest.raises(RetryableError):
        fetch_page(ex, target, 0, 5, _no_wait)
    assert notes == [("FATAL", ("BTC/USDT",))]
