"""The exception tree and the one place ccxt errors are classified."""

import json

import ccxt
import pytest

from backtrader_ccxt import errors
from backtrader_ccxt.errors import (
    BOUNDED_RETRIES,
    BacktraderCCXTError,
    CapabilityError,
    ConfigurationError,
    ExchangeRequestError,
    FatalExchangeError,
    RetryableError,
    UnknownExchangeError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
    Verdict,
    choices,
    classify,
    is_retryable,
    translate,
    unknown_keywords,
    venue_code,
)

RETRYABLE = [
    ccxt.NetworkError,
    ccxt.RequestTimeout,
    ccxt.RateLimitExceeded,
    ccxt.DDoSProtection,
    ccxt.ExchangeNotAvailable,
    ccxt.OnMaintenance,
    ccxt.BadResponse,
    ccxt.NullResponse,
]
FATAL = [
    ccxt.BadSymbol,
    ccxt.AuthenticationError,
    ccxt.PermissionDenied,
    ccxt.NotSupported,
    ccxt.ExchangeError,
    ccxt.BadRequest,
    ccxt.ExchangeClosedByUser,
]


@pytest.mark.parametrize("cls", RETRYABLE)
def test_transient_ccxt_errors_are_retryable(cls):
    assert is_retryable(cls("boom"))


@pytest.mark.parametrize("cls", FATAL)
def test_other_ccxt_errors_are_not(cls):
    assert not is_retryable(cls("boom"))


@pytest.mark.parametrize("exc", [ConnectionResetError("reset"), TimeoutError("slow")])
def test_socket_errors_below_ccxt_are_retryable(exc):
    assert is_retryable(exc)


@pytest.mark.parametrize("exc", [KeyError("k"), RuntimeError("r"), ZeroDivisionError()])
def test_programming_errors_are_not_retryable(exc):
    assert not is_retryable(exc)


def test_our_own_request_errors_keep_their_class():
    assert is_retryable(RetryableError("x"))
    assert not is_retryable(FatalExchangeError("x"))
    assert not is_retryable(ExchangeRequestError("x"))


@pytest.mark.parametrize(
    "exc",
    [ConfigurationError("bad"), UnsupportedTimeframeError("2m"), UnknownSymbolError("FOO/BAR")],
)
def test_configuration_errors_are_not_retryable(exc):
    # A ConfigurationError is also a ValueError, but retrying a bad configuration cannot help.
    assert not is_retryable(exc)


@pytest.mark.parametrize("cls", RETRYABLE)
def test_translate_retryable(cls):
    out = translate(cls("server said no"), "fetch_ohlcv('BTC/USDT', '1m', since=1)")
    assert type(out) is RetryableError
    msg = str(out)
    assert "fetch_ohlcv('BTC/USDT', '1m', since=1)" in msg
    assert cls.__name__ in msg
    assert "server said no" in msg


@pytest.mark.parametrize("cls", FATAL)
def test_translate_fatal(cls):
    out = translate(cls("unknown symbol FOO/BAR"), "binance: loading markets")
    assert type(out) is FatalExchangeError
    msg = str(out)
    assert "binance: loading markets" in msg
    assert cls.__name__ in msg
    assert "unknown symbol FOO/BAR" in msg


def test_translate_applies_redact_to_the_whole_message():
    secret = "s3cr3t-api-key"

    def redact(text: str) -> str:
        return text.replace(secret, "***")

    out = translate(
        ccxt.AuthenticationError(f"invalid key {secret}"), f"ctx apiKey={secret}", redact
    )
    assert secret not in str(out)
    assert str(out).count("***") == 2


def test_translate_does_not_raise_and_chains_when_raised_from():
    original = ccxt.RequestTimeout("timed out")
    with pytest.raises(RetryableError) as info:
        try:
            raise original
        except ccxt.BaseError as e:
            raise translate(e, "ctx") from e
    assert info.value.__cause__ is original


@pytest.mark.parametrize(
    "cls",
    [
        ConfigurationError,
        UnknownExchangeError,
        UnknownSymbolError,
        UnsupportedTimeframeError,
        CapabilityError,
        ExchangeRequestError,
        RetryableError,
        FatalExchangeError,
    ],
)
def test_every_exception_has_the_root(cls):
    assert issubclass(cls, BacktraderCCXTError)


@pytest.mark.parametrize(
    "cls", [UnknownExchangeError, UnknownSymbolError, UnsupportedTimeframeError, CapabilityError]
)
def test_configuration_errors_are_value_errors(cls):
    assert issubclass(cls, ConfigurationError)
    assert issubclass(cls, ValueError)


def test_request_errors_are_not_configuration_errors():
    for cls in (RetryableError, FatalExchangeError):
        assert issubclass(cls, ExchangeRequestError)
        assert not issubclass(cls, ValueError)
    assert not issubclass(RetryableError, FatalExchangeError)
    assert not issubclass(FatalExchangeError, RetryableError)


def test_every_exported_exception_is_in_the_tree():
    exported = [getattr(errors, n) for n in errors.__all__]
    classes = {
        c
        for c in exported
        if isinstance(c, type) and issubclass(c, Exception) and not issubclass(c, Warning)
    }
    assert len(classes) == 9  # RetryableError is TransientExchangeError's former name
    assert errors.RetryableError is errors.TransientExchangeError
    assert all(issubclass(c, BacktraderCCXTError) for c in classes)


def test_choices_sorted_and_deduplicated():
    assert choices(["5m", "1m", "1h", "1m"]) == "1h, 1m, 5m"


def test_choices_shortened_when_many():
    out = choices([f"s{i:02d}" for i in range(40)], limit=3)
    assert out == "s00, s01, s02, ... (40 in all)"


# -- classify: what the venue means, read from the exception ccxt really raises ---------------


def _raised(exchange, url: str, status: int, body: dict) -> Exception:
    """The exception ccxt's own error handler raises for ``body`` (HTTP ``status``)."""
    ex = getattr(ccxt, exchange)()
    text = json.dumps(body)
    with pytest.raises(ccxt.BaseError) as info:
        ex.handle_errors(status, "", url, "GET", {}, text, body, {}, None)
        # a status the venue handler leaves alone is ccxt's generic HTTP mapping
        ex.handle_http_status_code(status, "", url, "GET", text)
    return info.value


BYBIT = "https://api.bybit.com/v5/market/kline?category=spot&symbol=BTCUSDT&interval=1"
OKX = "https://www.okx.com/api/v5/market/candles?instId=BTC-USDT&bar=1m"
BINANCE = "https://api.binance.com/api/v3/klines?symbol=BTCUSDT&interval=1m"


def _bybit(code: int, msg: str) -> dict:
    return {"retCode": code, "retMsg": msg, "result": {}, "retExtInfo": {}, "time": 1}


# (exchange, url, status, body, verdict); the "try again" codes are what the venues document
VENUE_CASES = {
    "bybit 10016 system error": (
        "bybit",
        BYBIT,
        200,
        _bybit(10016, "System error. Please try again later."),
        "RETRY",
    ),
    "bybit 10000 server timeout": ("bybit", BYBIT, 200, _bybit(10000, "Server Timeout"), "RETRY"),
    "bybit 10429 frequency protection": (
        "bybit",
        BYBIT,
        200,
        _bybit(10429, "System level frequency protection"),
        "RETRY",
    ),
    "bybit 10006 too many visits": ("bybit", BYBIT, 200, _bybit(10006, "Too many visits"), "RETRY"),
    "bybit 10001 parameter error": (
        "bybit",
        BYBIT,
        200,
        _bybit(10001, "params error: symbol invalid"),
        "FATAL",
    ),
    "bybit 10003 bad key": ("bybit", BYBIT, 200, _bybit(10003, "API key is invalid."), "FATAL"),
    "bybit unknown code": ("bybit", BYBIT, 200, _bybit(99999, "something new"), "RETRY_BOUNDED"),
    "okx 50001 unavailable": (
        "okx",
        OKX,
        503,
        {"code": "50001", "msg": "Service temporarily unavailable", "data": []},
        "RETRY",
    ),
    "okx 50013 busy": (
        "okx",
        OKX,
        200,
        {"code": "50013", "msg": "Systems are busy", "data": []},
        "RETRY",
    ),
    "okx 50026 system error": (
        "okx",
        OKX,
        500,
        {"code": "50026", "msg": "System error. Try again later", "data": []},
        "RETRY",
    ),
    "okx 51001 bad instrument": (
        "okx",
        OKX,
        200,
        {"code": "51001", "msg": "Instrument ID does not exist", "data": []},
        "FATAL",
    ),
    "okx 50113 bad signature": (
        "okx",
        OKX,
        401,
        {"code": "50113", "msg": "Invalid Sign", "data": []},
        "FATAL",
    ),
    "binance -1001 internal error": (
        "binance",
        BINANCE,
        500,
        {"code": -1001, "msg": "Internal error; unable to process your request. Please try again."},
        "RETRY",
    ),
    "binance -1008 server busy": (
        "binance",
        BINANCE,
        503,
        {"code": -1008, "msg": "Server is currently overloaded"},
        "RETRY",
    ),
    "binance -1003 rate limit": (
        "binance",
        BINANCE,
        429,
        {"code": -1003, "msg": "Too much request weight used"},
        "RETRY",
    ),
    "binance -1121 bad symbol": (
        "binance",
        BINANCE,
        400,
        {"code": -1121, "msg": "Invalid symbol."},
        "FATAL",
    ),
    "binance -2015 bad key": (
        "binance",
        BINANCE,
        401,
        {"code": -2015, "msg": "Invalid API-key, IP, or permissions."},
        "FATAL",
    ),
}


@pytest.mark.parametrize("case", list(VENUE_CASES))
def test_classify_reads_the_venue_code_from_the_real_ccxt_exception(case):
    exchange, url, status, body, verdict = VENUE_CASES[case]
    exc = _raised(exchange, url, status, body)
    assert classify(exc) is Verdict[verdict], (type(exc).__name__, str(exc))
    assert is_retryable(exc) is (verdict == "RETRY")


def test_ccxt_maps_the_motivating_codes_to_classes_that_are_not_retryable_by_class():
    """Why the venue table exists: ccxt gives these no retryable class."""
    bybit = _raised("bybit", BYBIT, 200, _bybit(10016, "System error. Please try again later."))
    binance = _raised("binance", BINANCE, 500, {"code": -1001, "msg": "Internal error"})
    assert type(bybit) is ccxt.ExchangeError
    assert type(binance) is ccxt.OperationFailed
    for exc in (bybit, binance):
        assert not isinstance(exc, ccxt.NetworkError)
        assert venue_code(exc)[1] in {"10016", "-1001"}


def test_a_code_counts_only_for_its_own_venue():
    # OKX's 50001 means nothing to Bybit, and the exchange can be named explicitly
    exc = ccxt.ExchangeError('someexchange {"code": "50001", "msg": "x"}')
    assert classify(exc) is Verdict.RETRY_BOUNDED
    assert classify(exc, "okx") is Verdict.RETRY


@pytest.mark.parametrize(
    "cls",
    [
        ccxt.BadSymbol,
        ccxt.AuthenticationError,
        ccxt.PermissionDenied,
        ccxt.NotSupported,
        ccxt.BadRequest,
        ccxt.InsufficientFunds,
        ccxt.InvalidOrder,
        ccxt.ExchangeClosedByUser,
    ],
)
def test_specific_errors_are_fatal_at_once(cls):
    # the class says exactly what is wrong (only a documented "try again" code overrides it)
    assert classify(cls("bybit something")) is Verdict.FATAL


def test_catch_all_errors_are_bounded():
    assert classify(ccxt.ExchangeError("binance weird")) is Verdict.RETRY_BOUNDED
    assert classify(ccxt.OperationFailed("binance weird")) is Verdict.RETRY_BOUNDED
    assert BOUNDED_RETRIES >= 1


def test_venue_code_of_messages_without_a_body():
    assert venue_code(ccxt.NetworkError("binance GET http://x timed out")) == ("binance", None)
    assert venue_code(ccxt.ExchangeError("")) == (None, None)
    assert venue_code(ccxt.ExchangeError("okx {not json")) == ("okx", None)


def test_unknown_keywords_names_each_with_a_hint():
    err = unknown_keywords(
        "Thing",
        {"retires": 1, "currency": 2, "zzz": 3},
        ["retries", "config"],
        {"currency": "drop it"},
    )
    msg = str(err)
    assert isinstance(err, ConfigurationError)
    assert "'retires' (did you mean 'retries'?)" in msg
    assert "'currency' (drop it)" in msg
    assert "'zzz'" in msg and "valid choices: config, retries" in msg
