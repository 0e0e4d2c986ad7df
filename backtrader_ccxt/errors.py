"""Exceptions raised by backtrader-ccxt, and the one place ccxt errors are classified.

The tree::

    BacktraderCCXTError                 root: catch this to catch everything we raise
    +-- ConfigurationError              bad input, raised at construction / start()
    |   +-- UnknownExchangeError        exchange id not in ccxt.exchanges
    |   +-- UnknownSymbolError          symbol not listed by the exchange
    |   +-- UnsupportedTimeframeError   timeframe/compression the exchange lacks
    |   +-- CapabilityError             the exchange lacks a feature the options need
    +-- ExchangeRequestError            a ccxt call failed (the ccxt error is ``__cause__``)
        +-- TransientExchangeError      transient (network, rate limit, 5xx, timeout), retries spent
        +-- FatalExchangeError          not worth retrying (bad symbol, auth, not supported)

Configuration errors name the bad value and the valid choices in their message. Errors at run
time inside a live feed never escape into cerebro: they become notifications and log lines.

Retry or give up is decided here, by :func:`classify`, from what the venue *means*, not only from
ccxt's class: a venue's documented "try again" codes (:data:`VENUE_RETRY_CODES`, read from the
raw body ccxt puts in the exception's message) are retried like network errors, even where
ccxt maps them to a plain ``ExchangeError`` or ``OperationFailed``; an unclassified
``ExchangeError`` gets :data:`BOUNDED_RETRIES` attempts before it is final; a bad symbol, bad
credentials, ``NotSupported`` and ``BadRequest`` are final at once. The verdicts are meant for
idempotent reads (candles, markets, time): never retry an order on them.
"""

from __future__ import annotations

import difflib
import enum
import json
from collections.abc import Callable, Iterable, Mapping

import ccxt

__all__ = [
    "BacktraderCCXTError",
    "CapabilityError",
    "ConfigurationError",
    "ConfigurationWarning",
    "ExchangeRequestError",
    "FatalExchangeError",
    "RetryableError",
    "TransientExchangeError",
    "UnknownExchangeError",
    "UnknownSymbolError",
    "UnsupportedTimeframeError",
    "BOUNDED_RETRIES",
    "VENUE_RETRY_CODES",
    "Verdict",
    "choices",
    "classify",
    "is_retryable",
    "translate",
    "unknown_keywords",
    "venue_code",
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


class ConfigurationWarning(UserWarning):
    """A configuration that works but is probably not what was meant (e.g. a live feed
    without ``timeframe``, which backtrader makes daily bars)."""


class ExchangeRequestError(BacktraderCCXTError):
    """A request to the exchange failed; the original ccxt exception is ``__cause__``."""


class TransientExchangeError(ExchangeRequestError):
    """A transient failure (network, rate limit, exchange unavailable, timeout) whose retries
    were spent: the request is over, but the exchange may answer later (a live feed goes
    CONNBROKEN and tries again; a historical one ends)."""


#: the former name, kept for code written against it (it read as if one should retry it,
#: while it is raised once the retries are spent)
RetryableError = TransientExchangeError


class FatalExchangeError(ExchangeRequestError):
    """A failure that retrying cannot fix: bad symbol, authentication, not supported."""


def choices(values: Iterable[object], limit: int = 30) -> str:
    """Render valid choices for an error message, shortened when there are many."""
    items = sorted({str(v) for v in values})
    if len(items) > limit:
        shown = ", ".join(items[:limit])
        return f"{shown}, ... ({len(items)} in all)"
    return ", ".join(items)


class Verdict(enum.Enum):
    """What to do after a failed request (see :func:`classify`)."""

    #: transient: retry with backoff for as long as the caller's budget allows
    RETRY = "retry"
    #: unclassified venue error: retry at most :data:`BOUNDED_RETRIES` times, then give up
    RETRY_BOUNDED = "retry_bounded"
    #: retrying cannot help: give up now
    FATAL = "fatal"


#: Attempts after the first for an error classified :attr:`Verdict.RETRY_BOUNDED`.
BOUNDED_RETRIES = 3

#: Per venue family: the error codes its API documentation says to retry ("try again",
#: server busy, timeout, rate limited), as strings. ccxt maps several of them to a plain
#: ``ExchangeError`` or ``OperationFailed`` (Bybit 10016, Binance -1001), which would
#: otherwise end a feed for good.
VENUE_RETRY_CODES: dict[str, frozenset[str]] = {
    # developers.binance.com "Error codes", 10xx General Server or Network issues
    "binance": frozenset(
        {
            "-1000",  # UNKNOWN: an unknown error occurred while processing the request
            "-1001",  # DISCONNECTED: internal error; unable to process your request. Please try again.
            "-1003",  # TOO_MANY_REQUESTS
            "-1004",  # SERVER_BUSY (spot): server is busy, please wait and try again
            "-1006",  # UNEXPECTED_RESP from the message bus
            "-1007",  # TIMEOUT waiting for response from backend server
            "-1008",  # SERVER_BUSY / request throttled: please try again in a few minutes
        }
    ),
    # bybit-exchange.github.io/docs/v5/error
    "bybit": frozenset(
        {
            "10000",  # Server Timeout
            "10006",  # Too many visits (rate limit)
            "10016",  # internal server error / service is restarting ("System error. Please try again later.")
            "10018",  # exceeded the IP rate limit
            "10019",  # service is restarting
            "10429",  # system level frequency protection
        }
    ),
    # okx.com/docs-v5 "Error Code", General Class
    "okx": frozenset(
        {
            "50001",  # service temporarily unavailable, please try again later
            "50004",  # endpoint request timeout
            "50011",  # rate limit reached / requests too frequent
            "50013",  # systems are busy, please try again later
            "50026",  # system error, try again later
        }
    ),
}

_FAMILIES = (("binance", "binance"), ("bybit", "bybit"), ("okx", "okx"), ("myokx", "okx"))
_CODE_KEYS = ("retCode", "ret_code", "code", "error_code")


def _family(exchange_id: str | None) -> str | None:
    if not exchange_id:
        return None
    for prefix, family in _FAMILIES:
        if exchange_id.startswith(prefix):
            return family
    return None


def venue_code(exc: BaseException) -> tuple[str | None, str | None]:
    """``(exchange id, error code)`` read from a ccxt exception, as far as it tells.

    ccxt's venue error handlers raise ``<exchange id> <raw response body>``; the code is read
    from that body (``code`` on Binance and OKX, ``retCode`` on Bybit). ``(None, None)`` when
    the message is not of that shape.
    """
    text = str(exc)
    head, _, rest = text.partition(" ")
    brace = rest.find("{")
    if not head or brace < 0:
        return (head or None), None
    try:
        body, _ = json.JSONDecoder().raw_decode(rest[brace:])
    except ValueError:
        return head, None
    if not isinstance(body, dict):
        return head, None
    for key in _CODE_KEYS:
        value = body.get(key)
        if value is not None and not isinstance(value, dict | list):
            return head, str(value)
    return head, None


def classify(exc: BaseException, exchange_id: str | None = None) -> Verdict:
    """Retry or give up, for a failed idempotent request. Decided here and nowhere else.

    ``exchange_id`` names the venue when the message may not (it is read from the message
    otherwise).
    """
    if isinstance(exc, BacktraderCCXTError):
        return Verdict.RETRY if isinstance(exc, TransientExchangeError) else Verdict.FATAL
    if isinstance(exc, ccxt.ExchangeClosedByUser):
        return Verdict.FATAL  # a normal shutdown, not a failure to retry
    if isinstance(exc, ccxt.BaseError):
        named, code = venue_code(exc)
        family = _family(exchange_id or named)
        if code is not None and code in VENUE_RETRY_CODES.get(family, ()):
            return Verdict.RETRY
        # NetworkError covers RequestTimeout, ExchangeNotAvailable, DDoSProtection and
        # RateLimitExceeded. A truncated or garbled body surfaces as BadResponse or
        # ExchangeError('... not JSON'), which a retry cures as well.
        if isinstance(exc, ccxt.NetworkError | ccxt.BadResponse | ccxt.NullResponse):
            return Verdict.RETRY
        # ccxt's catch-alls: the venue said something ccxt has no class for. It may be
        # transient or not; a few attempts cost little, retrying forever would hide a
        # permanent error. Subclasses (BadSymbol, AuthenticationError, NotSupported,
        # BadRequest, CancelPending, ...) say exactly what is wrong: final.
        if type(exc) in (ccxt.ExchangeError, ccxt.OperationFailed):
            return Verdict.RETRY_BOUNDED
        return Verdict.FATAL
    # Errors below ccxt (a half-read body, a reset socket) are transient too.
    if isinstance(exc, OSError | ValueError | TimeoutError):
        return Verdict.RETRY
    return Verdict.FATAL


def is_retryable(exc: BaseException) -> bool:
    """Whether ``exc`` is worth retrying without a bound (:attr:`Verdict.RETRY`).

    Kept for callers without a retry budget of their own: an error classified
    :attr:`Verdict.RETRY_BOUNDED` is *not* retryable here (use :func:`classify` to honour
    the bound).
    """
    return classify(exc) is Verdict.RETRY


def translate(
    exc: BaseException, context: str, redact: Callable[[str], str] = str
) -> ExchangeRequestError:
    """Wrap a ccxt exception into our tree; call as ``raise translate(e, ctx) from e``.

    Called when the caller gives up: a :attr:`Verdict.RETRY` error becomes
    :class:`TransientExchangeError` (the feed may try again later), anything else (including a
    bounded error whose attempts are spent) :class:`FatalExchangeError`. ``redact`` scrubs
    credentials from the message (the store passes its own).
    """
    cls = TransientExchangeError if is_retryable(exc) else FatalExchangeError
    return cls(redact(f"{context}: {type(exc).__name__}: {exc}"))


def unknown_keywords(
    owner: str, given: Iterable[str], valid: Iterable[str], prior: Mapping[str, str]
) -> ConfigurationError:
    """The error for keywords ``owner`` does not take: each named, with a "did you mean"
    or, for a name the prior plugins used (``prior``: name -> what to write instead), the
    replacement; then the valid choices."""
    valid = sorted(valid)
    parts = []
    for name in given:
        if name in prior:
            parts.append(f"{name!r} ({prior[name]})")
            continue
        close = difflib.get_close_matches(name, valid, n=1)
        parts.append(f"{name!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
    return ConfigurationError(
        f"unknown {owner} parameter {', '.join(parts)}; valid choices: {', '.join(valid)}"
    )
