"""Exceptions raised by backtrader-ccxt, and the one place ccxt errors are classified.

The tree::

    BacktraderCCXTError                 root: catch this to catch everything we raise
    +-- ConfigurationError              bad input, raised at construction / start()
    |   +-- UnknownExchangeError        exchange id not in ccxt.exchanges
    |   +-- UnknownSymbolError          symbol not listed by the exchange
    |   +-- UnsupportedTimeframeError   timeframe/compression the exchange lacks
    |   +-- CapabilityError             the exchange lacks a feature the options need
    +-- ExchangeRequestError            a ccxt call failed (the ccxt error is ``__cause__``)
        +-- RetryableError              worth retrying (network, rate limit, 5xx, timeout)
        +-- FatalExchangeError          not worth retrying (bad symbol, auth, not supported)

Configuration errors name the bad value and the valid choices in their message. Errors at run
time inside a live feed never escape into cerebro: they become notifications and log lines.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

import ccxt

__all__ = [
    "BacktraderCCXTError",
    "CapabilityError",
    "ConfigurationError",
    "ExchangeRequestError",
    "FatalExchangeError",
    "RetryableError",
    "UnknownExchangeError",
    "UnknownSymbolError",
    "UnsupportedTimeframeError",
    "choices",
    "is_retryable",
    "translate",
]


class BacktraderCCXTError(Exception):
    """Root of every exception this package raises."""


class ConfigurationError(BacktraderCCXTError, ValueError):
    """A store or feed was configured with a value that cannot work."""


class UnknownExchangeError(ConfigurationError):
    """The exchange id is not one ccxt knows."""


class UnknownSymbolError(ConfigurationError):
    """The symbol is not listed by the exchange."""


class UnsupportedTimeframeError(ConfigurationError):
    """The exchange does not offer the requested bar size."""


class CapabilityError(ConfigurationError):
    """The exchange lacks a capability (``exchange.has[...]``) that the options require."""


class ExchangeRequestError(BacktraderCCXTError):
    """A request to the exchange failed; the original ccxt exception is ``__cause__``."""


class RetryableError(ExchangeRequestError):
    """A transient failure: network, rate limit, exchange unavailable, timeout."""


class FatalExchangeError(ExchangeRequestError):
    """A failure that retrying cannot fix: bad symbol, authentication, not supported."""


def choices(values: Iterable[object], limit: int = 30) -> str:
    """Render valid choices for an error message, shortened when there are many."""
    items = sorted({str(v) for v in values})
    if len(items) > limit:
        shown = ", ".join(items[:limit])
        return f"{shown}, ... ({len(items)} in all)"
    return ", ".join(items)


def is_retryable(exc: BaseException) -> bool:
    """Whether a ccxt (or our) exception is worth retrying. Decided here and nowhere else."""
    if isinstance(exc, BacktraderCCXTError):
        return isinstance(exc, RetryableError)
    if isinstance(exc, ccxt.ExchangeClosedByUser):
        return False
    # NetworkError covers RequestTimeout, ExchangeNotAvailable, DDoSProtection and
    # RateLimitExceeded. A truncated or garbled body surfaces as BadResponse or
    # ExchangeError('... not JSON'), which a retry cures as well.
    if isinstance(exc, ccxt.NetworkError | ccxt.BadResponse | ccxt.NullResponse):
        return True
    if isinstance(exc, ccxt.BaseError):
        return False
    # Errors below ccxt (a half-read body, a reset socket) are transient too.
    return isinstance(exc, OSError | ValueError | TimeoutError)


def translate(
    exc: BaseException, context: str, redact: Callable[[str], str] = str
) -> ExchangeRequestError:
    """Wrap a ccxt exception into our tree; call as ``raise translate(e, ctx) from e``.

    ``redact`` scrubs credentials from the message (the store passes its own).
    """
    cls = RetryableError if is_retryable(exc) else FatalExchangeError
    return cls(redact(f"{context}: {type(exc).__name__}: {exc}"))
