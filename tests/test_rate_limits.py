"""Backfill and gap fill respect the exchange's rate limit and honour Retry-After, as seen by
the exchange itself (the local exchange logs when each request arrived)."""

from __future__ import annotations

import asyncio
from datetime import timedelta

import ccxt
import pytest
from feedtools import EPOCH, run_historical

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

KLINES = "/api/v3/klines"


def klines_log(ex) -> list[tuple[int, str | None]]:
    return [(t, fault) for t, path, fault in ex.stats.snapshot()["rest_log"] if path == KLINES]


def historical(ex, store, bars: int, **kwargs):
    now = ex.now_ms()
    first_open = now - now % 1000 - (bars + 5) * 1000
    fromdate = EPOCH + timedelta(milliseconds=first_open + 1000)
    todate = EPOCH + timedelta(milliseconds=first_open + bars * 1000)
    return run_historical(store, "BTC/USDT", "1s", fromdate, todate, **kwargs)


def test_retry_after_is_honoured_before_the_next_attempt():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=3000) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config(), retry_delay=0.01)
        ex.faults.rest_errors("429", count=1, retry_after=1.2, path=KLINES)
        strat = historical(ex, store, 2500)
        assert len(strat.bars["BTC/USDT"]) == 2500
        log = klines_log(ex)
        refused = [i for i, (_, fault) in enumerate(log) if fault == "429"]
        assert len(refused) == 1
        i = refused[0]
        assert log[i + 1][0] - log[i][0] >= 1200  # not the 10 ms backoff: the server's word
        assert ex.faults.counts["rest_429"] == 1


def test_paged_backfill_is_spaced_by_ccxts_rate_limiter():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=6000) as ex:
        store = CCXTStore("binance", config=ex.ccxt_config())
        strat = historical(ex, store, 5500, ohlcv_limit=500)
        assert len(strat.bars["BTC/USDT"]) == 5500
        times = [t for t, _ in klines_log(ex)]
        assert len(times) == 11  # ceil(5500 / 500)
        # ccxt's limiter: binance rateLimit (ms) x the endpoint's cost for limit=500
        probe = ccxt.binance()
        spacing = probe.rateLimit * _klines_cost(probe, 500)
        gaps = [b - a for a, b in zip(times, times[1:], strict=False)]
        # ccxt spaces the requests' departures; the exchange stamps their arrivals, each late
        # by however long its busy server thread took to read it. Over the whole walk those
        # delays cancel out but for the first and last stamp; each single gap keeps at least
        # half the spacing (without the limiter they are a few ms).
        assert times[-1] - times[0] >= spacing * len(gaps) - 50, (gaps, spacing)
        assert min(gaps) >= spacing * 0.5, (gaps, spacing)


def _klines_cost(exchange, limit: int) -> float:
    """The weight ccxt charges a spot klines call with this limit (its own table)."""
    api = exchange.api["public"]["get"]["klines"]
    cost = api.get("cost", 1)
    for bound, by_limit_cost in api.get("byLimit", []):
        if limit <= bound:
            return by_limit_cost
    return cost


def test_a_fast_store_clock_scales_ccxts_rate_limiter_with_it():
    # The venue's weight limits are per exchange minute: a store on a clock running 300x
    # spaces its requests 300x closer, in both its instances; a rateLimit in config is kept,
    # and a store on the real clock keeps ccxt's own.
    default = ccxt.binance().rateLimit
    fast = CCXTStore("binance", clock=lambda: 1_000_000.0, clock_rate=300)
    assert fast.exchange.rateLimit == pytest.approx(default / 300)

    async def async_rate_limit(store):
        ex = store.new_async_exchange()
        try:
            return ex.rateLimit
        finally:
            await ex.close()

    assert asyncio.run(async_rate_limit(fast)) == pytest.approx(default / 300)
    mine = CCXTStore("binance", config={"rateLimit": 7}, clock=lambda: 0.0, clock_rate=300)
    assert mine.exchange.rateLimit == 7
    assert CCXTStore("binance").exchange.rateLimit == default
    # clock_rate means nothing without a clock: the real venue's clock runs at real speed
    assert CCXTStore("binance", clock_rate=300).exchange.rateLimit == default
