"""The exception tree and the one place ccxt errors are classified."""

import ccxt
import pytest

from backtrader_ccxt import errors
from backtrader_ccxt.errors import (
    BacktraderCCXTError,
    CapabilityError,
    ConfigurationError,
    ExchangeRequestError,
    FatalExchangeError,
    RetryableError,
    UnknownExchangeError,
    UnknownSymbolError,
    UnsupportedTimeframeError,
    choices,
    is_retryable,
    translate,
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
    classes = [c for c in exported if isinstance(c, type)]
    assert len(classes) == 9
    assert all(issubclass(c, BacktraderCCXTError) for c in classes)


def test_choices_sorted_and_deduplicated():
    assert choices(["5m", "1m", "1h", "1m"]) == "1h, 1m, 5m"


def test_choices_shortened_when_many():
    out = choices([f"s{i:02d}" for i in range(40)], limit=3)
    assert out == "s00, s01, s02, ... (40 in all)"
