"""Credentials never reach a log record or an exception message, even ccxt's own request
logging at DEBUG (issue 15): a private call through store.exchange, signed with the store's
keys, against the local exchange (which answers it with an error, after logging)."""

from __future__ import annotations

import asyncio
import logging
import traceback
from urllib.parse import parse_qs

import ccxt
import pytest
from venuetools import RestTap

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

KEY = "Kx7Q2mVb9LpR4tYw8ZcN1sDfGhJk3LmP5oQrStUvWxYz0aBcDeFgHiJkLmNoPqRs"
SECRET = "Sz9Y8xW7vU6tS5rQ4pO3nM2lK1jI0hG9fE8dC7bA6zY5xW4vU3tS2rQ1pO0nM9lK"


def _everything_logged(caplog) -> str:
    parts = []
    for record in caplog.records:
        parts.append(record.getMessage())
        if record.exc_info:
            parts.append("".join(traceback.format_exception(*record.exc_info)))
    return "\n".join(parts)


def _exception_text(exc: BaseException) -> str:
    return "".join(traceback.format_exception(exc))


def _signatures(tap: RestTap) -> list[str]:
    sigs = []
    for _path, query in tap.requests:
        sigs += parse_qs(query).get("signature", [])
    return sigs


@pytest.fixture
def debug_everything(caplog):
    caplog.set_level(logging.DEBUG)  # root at DEBUG, as a user chasing a problem would
    ccxt_logger = logging.getLogger("ccxt")
    old = ccxt_logger.level
    ccxt_logger.setLevel(logging.DEBUG)
    yield caplog
    ccxt_logger.setLevel(old)


def test_a_private_call_logs_no_key_secret_or_signature(debug_everything):
    caplog = debug_everything
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",), history=10) as ex:
        tap = RestTap(ex)
        store = CCXTStore("binance", config={**ex.ccxt_config(), "apiKey": KEY, "secret": SECRET})
        store.exchange.load_markets()
        with pytest.raises(ccxt.BaseError) as info:
            store.exchange.fetch_balance()
        sigs = _signatures(tap)
        assert sigs, "the request was not signed: the test would prove nothing"
        logged = _everything_logged(caplog)
        assert "api/v3/account" in logged  # ccxt did log the request (and its headers)
        raised = _exception_text(info.value)
        for text in (logged, raised):
            assert KEY not in text
            assert SECRET not in text
            for sig in sigs:
                assert sig not in text


def test_the_asyncio_instance_logs_and_raises_no_credentials(debug_everything):
    caplog = debug_everything
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",), history=10) as ex:
        tap = RestTap(ex)
        store = CCXTStore("binance", config={**ex.ccxt_config(), "apiKey": KEY, "secret": SECRET})

        async def call():
            aex = store.new_async_exchange()
            try:
                await aex.load_markets()
                await aex.fetch_balance()
            finally:
                await aex.close()

        with pytest.raises(ccxt.BaseError) as info:
            asyncio.run(call())
        sigs = _signatures(tap)
        assert sigs
        logged = _everything_logged(caplog)
        assert "api/v3/account" in logged
        for text in (logged, _exception_text(info.value)):
            assert KEY not in text and SECRET not in text
            assert not any(sig in text for sig in sigs)
