"""REST drivers: run the :mod:`.paging` rules against a ccxt instance, with retries.

Two drivers over the same rules: blocking (the default polling mode, in backtrader's thread,
with a sync ccxt instance) and asyncio (the store's loop thread, with a ccxt.pro instance).
Retryable failures back off (honouring ``Retry-After``) and are retried up to ``retries``
times (an unclassified venue error at most :data:`~.errors.BOUNDED_RETRIES` times, see
:func:`~.errors.classify`); what is left is raised as our own
:class:`~.errors.ExchangeRequestError`. A ``notify`` callable, when given, hears of rate
limiting, of a fetch given up for good or for now, and of the first success after that
(the store's notifications, see :mod:`.notifications`).
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import dataclass, field
from typing import TypeVar

import ccxt

from . import departures
from .bars import BadRow, Bar, bar_from_row
from .errors import (
    BOUNDED_RETRIES,
    ExchangeRequestError,
    FatalExchangeError,
    Verdict,
    classify,
    translate,
)
from .notifications import CONNECTION_LOST, CONNECTION_RESTORED, FATAL, RATE_LIMITED
from .paging import Paginator
from .retry import Backoff, retry_after_seconds
from .timeframes import Timeframe

log = logging.getLogger(__name__)

T = TypeVar("T")

__all__ = [
    "BadRows",
    "RestTarget",
    "Stopped",
    "call_with_retry",
    "call_with_retry_async",
    "fetch_page",
    "fetch_page_async",
    "walk",
    "walk_async",
]


class Stopped(Exception):
    """The owner asked us to stop while waiting to retry."""


class BadRows(ccxt.BadResponse):
    """A page holding rows that are not candles (:class:`~.bars.BadRow`).

    Retryable like any bad response: the venue may serve the page right the next time. When
    the retries are spent the request fails as usual (the feed reports CONNBROKEN and tries
    again later); a row that is not a candle is never delivered, and never skipped over.
    """

    def __init__(self, bad: list[BadRow]) -> None:
        kinds = sorted({b.kind for b in bad})
        super().__init__(f"{len(bad)} row(s) not candles ({', '.join(kinds)}): {bad[0]}")
        self.bad = bad


@dataclass
class RestTarget:
    """What to fetch and how to behave: shared by both drivers."""

    symbol: str
    tf: Timeframe
    retries: int = 5
    backoff: Backoff = field(default_factory=lambda: Backoff(0.5, 30.0))
    redact: Callable[[str], str] = str
    params: dict = field(default_factory=dict)
    #: ``notify(kind, message, symbols)``, e.g. :meth:`CCXTStore.notify`; None: silent
    notify: Callable[[str, str, tuple], None] | None = None
    #: a given-up fetch ends the feed (historical backfill): notify FATAL, not CONNECTION_LOST
    give_up_is_fatal: bool = False
    #: a fetch was given up (retries spent) and no fetch has succeeded since
    broken: bool = False
    #: where rows refused by the parser are counted (``stats['bad_rows']`` and
    #: ``stats['bad_rows_<kind>']``): the store's ``stats``
    stats: Counter | None = None
    reported: set = field(default_factory=set)  # kinds already logged for this target

    def context(self, since_ms: int) -> str:
        return f"fetch_ohlcv({self.symbol!r}, {self.tf.ccxt!r}, since={since_ms})"

    def _notify(self, kind: str, message: str) -> None:
        if self.notify is not None:
            self.notify(kind, message, (self.symbol,))

    def succeeded(self) -> None:
        if self.broken:
            self.broken = False
            self._notify(
                CONNECTION_RESTORED, f"fetch_ohlcv({self.symbol!r}, {self.tf.ccxt!r}) answers again"
            )

    def gave_up(self, err: BaseException) -> None:
        if isinstance(err, FatalExchangeError) or self.give_up_is_fatal:
            self._notify(FATAL, str(err))
        elif not self.broken:
            self.broken = True
            self._notify(CONNECTION_LOST, str(err))

    def note_bad(self, bad: list[BadRow]) -> None:
        """Count refused rows; log the first of each kind once for this target."""
        for err in bad:
            if self.stats is not None:
                self.stats["bad_rows"] += 1
                self.stats[f"bad_rows_{err.kind}"] += 1
            if err.kind not in self.reported:
                self.reported.add(err.kind)
                log.warning(
                    "%s %s: the venue sent a row that is not a candle, refetching the page "
                    "(further rows of this kind are counted in stats['bad_rows']): %s",
                    self.symbol,
                    self.tf.ccxt,
                    self.redact(str(err)),
                )


def _retry_delay(
    exchange,
    context: str,
    exc: BaseException,
    attempt: int,
    retries: int,
    backoff: Backoff,
    redact: Callable[[str], str],
    notify: Callable[[str, str], None] | None = None,
) -> float:
    """The delay before attempt ``attempt + 1``, or raise when the error is final."""
    verdict = classify(exc, getattr(exchange, "id", None))
    budget = retries if verdict is Verdict.RETRY else min(retries, BOUNDED_RETRIES)
    if verdict is Verdict.FATAL or attempt >= budget:
        if verdict is Verdict.RETRY_BOUNDED:
            err = FatalExchangeError(
                redact(
                    f"{context}: {type(exc).__name__}: {exc} (given up after {attempt + 1} attempts)"
                )
            )
        else:
            err = translate(exc, context, redact)
        raise err from exc
    floor = retry_after_seconds(getattr(exchange, "last_response_headers", None))
    delay = backoff.next_delay(floor=floor)
    reason = redact(f"{type(exc).__name__}: {exc}")[:300]
    log.warning(
        "%s %s failed (%s), retry %d/%d in %.2fs",
        exchange.id,
        context,
        reason,
        attempt + 1,
        budget,
        delay,
    )
    if notify is not None and isinstance(exc, ccxt.RateLimitExceeded | ccxt.DDoSProtection):
        notify(RATE_LIMITED, f"{context}: rate limited ({reason}), retry in {delay:.2f}s")
    return delay


def call_with_retry(
    exchange,
    fn: Callable[[], T],
    context: str,
    retries: int,
    backoff: Backoff,
    redact: Callable[[str], str] = str,
    wait: Callable[[float], bool] | None = None,
    notify: Callable[[str, str], None] | None = None,
) -> T:
    """``fn()`` with retries of retryable failures (blocking); ccxt errors come out
    translated. ``wait(delay)`` returns False to stop (default: wait the delay);
    ``notify(kind, message)`` hears of rate limiting."""
    attempt = 0
    while True:
        try:
            result = fn()
            backoff.reset()
            return result
        except Exception as exc:  # noqa: BLE001 - classified by errors.classify
            delay = _retry_delay(exchange, context, exc, attempt, retries, backoff, redact, notify)
            attempt += 1
            waited = wait(delay) if wait is not None else not threading.Event().wait(delay)
            if not waited:
                raise Stopped() from exc


async def call_with_retry_async(
    exchange,
    fn: Callable[[], Awaitable[T]],
    context: str,
    retries: int,
    backoff: Backoff,
    redact: Callable[[str], str] = str,
    notify: Callable[[str, str], None] | None = None,
) -> T:
    """The asyncio twin of :func:`call_with_retry`."""
    attempt = 0
    while True:
        try:
            result = await fn()
            backoff.reset()
            return result
        except asyncio.CancelledError:
            raise
        except Exception as exc:  # noqa: BLE001 - classified by errors.classify
            delay = _retry_delay(exchange, context, exc, attempt, retries, backoff, redact, notify)
            attempt += 1
            await asyncio.sleep(delay)


def fetch_page(
    exchange,
    target: RestTarget,
    since_ms: int,
    limit: int,
    wait: Callable[[float], bool],
    departed: list | None = None,
) -> list:
    """One ``fetch_ohlcv`` with retries (blocking). ``wait(delay)`` returns False to stop.
    ``departed`` (a list) receives when each attempt's request left (:mod:`.departures`)."""

    def call() -> list:
        return _copy(
            exchange.fetch_ohlcv(
                target.symbol, target.tf.ccxt, since_ms, limit, dict(target.params)
            ),
            target,
        )

    try:
        with departures.recording(departed):
            rows = call_with_retry(
                exchange,
                call,
                target.context(since_ms),
                target.retries,
                target.backoff,
                target.redact,
                wait,
                target._notify,
            )
    except ExchangeRequestError as err:
        target.gave_up(err)
        raise
    target.succeeded()
    return rows


async def fetch_page_async(
    exchange, target: RestTarget, since_ms: int, limit: int, departed: list | None = None
) -> list:
    """One ``fetch_ohlcv`` with retries on an asyncio ccxt instance (``departed``: as in
    :func:`fetch_page`)."""

    async def call() -> list:
        return _copy(
            await exchange.fetch_ohlcv(
                target.symbol, target.tf.ccxt, since_ms, limit, dict(target.params)
            ),
            target,
        )

    try:
        with departures.recording(departed):
            rows = await call_with_retry_async(
                exchange,
                call,
                target.context(since_ms),
                target.retries,
                target.backoff,
                target.redact,
                target._notify,
            )
    except ExchangeRequestError as err:
        target.gave_up(err)
        raise
    target.succeeded()
    return rows


def walk(
    exchange,
    target: RestTarget,
    pager: Paginator,
    now_ms: Callable[[], int],
    wait: Callable[[float], bool],
) -> Iterator[list[Bar]]:
    """Yield the closed bars of each page until the paginator is done (blocking)."""
    while (page := pager.next_page(now := now_ms())) is not None:
        rows = fetch_page(exchange, target, page.since_ms, page.limit, wait)
        # "closed" is judged at the time the request left: the answer can be no newer
        yield pager.accept(rows, now)


async def walk_async(exchange, target: RestTarget, pager: Paginator, now_ms) -> list[Bar]:
    """All the closed bars the paginator walks to, fetched on an asyncio ccxt instance."""
    out: list[Bar] = []
    while (page := pager.next_page(now := now_ms())) is not None:
        rows = await fetch_page_async(exchange, target, page.since_ms, page.limit)
        out.extend(pager.accept(rows, now))  # judged at request time, as in walk()
    return out


def _copy(rows, target: RestTarget) -> list:
    """Detach rows from ccxt's structures through the one row parser (:func:`~.bars.
    bar_from_row`); a page with a row that is not a candle raises :class:`BadRows`."""
    if not isinstance(rows, list):
        raise ccxt.BadResponse(f"expected a list of OHLCV rows, got {type(rows).__name__}")
    out = []
    bad: list[BadRow] = []
    for row in rows:
        try:
            out.append(bar_from_row(row, target.tf).row())
        except BadRow as exc:
            bad.append(exc)
    if bad:
        target.note_bad(bad)
        raise BadRows(bad)
    return out
