"""Keep credentials out of logs and error messages, including ccxt's own.

ccxt logs every request and response at DEBUG through the ``ccxt.base.exchange`` logger (sync
and asyncio alike), headers included (``X-MBX-APIKEY``), with signed query strings
(``signature=...``), whatever ``verbose`` says; urllib3 (under the blocking instance's
``requests`` session) logs the signed URL again at DEBUG; and the message of the exception ccxt
raises for an HTTP error carries the full URL. A user who turns the root logger to DEBUG would
write them all to disk. So:

* :class:`CredentialFilter`, installed once on those loggers by every store, rewrites each
  record before any handler sees it: the secrets of every live store become ``***``, and so do
  the values of signature / key / token / passphrase query parameters and headers, whoever made
  the request.
* :func:`guard_exceptions` makes a store's ccxt instance scrub the same from the exceptions
  its requests raise (message and chained causes), so a traceback does not print them either.
"""

from __future__ import annotations

import inspect
import logging
import re
import threading
import weakref
from collections.abc import Callable, Iterable

import ccxt

__all__ = ["LOGGERS", "CredentialFilter", "guard_exceptions", "install", "register", "scrub"]

#: The loggers that write request URLs and headers: every ccxt instance's (``Exchange.logger``'s
#: default), and urllib3's connection pool (under ``requests``). A filter acts only on records
#: created on its own logger, so it goes on each of them, not on a parent.
LOGGERS = ("ccxt.base.exchange", "urllib3.connectionpool")

_MASK = "***"
#: a name containing one of these (case-insensitive) holds a credential
_WORDS = ("sign", "key", "secret", "passphrase", "password", "token", "auth")
# name=value in a query string or form body: signature=..., apiKey=..., listenKey=...
_QUERY = re.compile(r"(?<![\w.-])([\w.-]{1,64})=([^&\s'\",]+)")
# 'Name': 'value' / "name": "value" in a dict repr or JSON: headers and bodies
_PAIR = re.compile(r"(['\"])([\w.-]{1,64})\1(\s*:\s*)(['\"])([^'\"]*)\4")


def _sensitive(name: str) -> bool:
    low = name.lower()
    return any(word in low for word in _WORDS)


def _mask_query(m: re.Match) -> str:
    return f"{m.group(1)}={_MASK}" if _sensitive(m.group(1)) else m.group(0)


def _mask_pair(m: re.Match) -> str:
    if not _sensitive(m.group(2)):
        return m.group(0)
    quote, name, sep, vquote = m.group(1), m.group(2), m.group(3), m.group(4)
    return f"{quote}{name}{quote}{sep}{vquote}{_MASK}{vquote}"


_stores: weakref.WeakSet = weakref.WeakSet()
_lock = threading.Lock()


def register(owner) -> None:
    """Have the filter mask ``owner.secrets()`` (a store) for as long as ``owner`` lives."""
    with _lock:
        _stores.add(owner)


def _known_secrets() -> list[str]:
    with _lock:
        owners = list(_stores)
    out: list[str] = []
    for owner in owners:
        out.extend(owner.secrets())
    return sorted(set(out), key=len, reverse=True)  # longest first: no partial masks


def scrub(text: str, secrets: Iterable[str] | None = None) -> str:
    """``text`` with credentials masked: ``secrets`` (default: every live store's) and the
    values of signature/key/token-like query parameters, headers and JSON fields."""
    for secret in _known_secrets() if secrets is None else secrets:
        if secret:
            text = text.replace(secret, _MASK)
    low = text.lower()
    if not any(word in low for word in _WORDS):  # most bodies (candles) name none: fast path
        return text
    text = _QUERY.sub(_mask_query, text)
    return _PAIR.sub(_mask_pair, text)


class CredentialFilter(logging.Filter):
    """Rewrites a record's message with :func:`scrub`; never drops a record."""

    def filter(self, record: logging.LogRecord) -> bool:
        try:
            text = record.getMessage()
        except Exception:  # noqa: BLE001 - a broken record is the logging module's to report
            return True
        clean = scrub(text)
        if clean != text:
            record.msg, record.args = clean, None
        if record.exc_text:
            record.exc_text = scrub(record.exc_text)
        return True


_filter = CredentialFilter()


def install() -> None:
    """Put the filter on the request loggers (once; idempotent)."""
    with _lock:
        for name in LOGGERS:
            logger = logging.getLogger(name)
            if _filter not in logger.filters:
                logger.addFilter(_filter)


def _scrub_exception(exc: BaseException, clean: Callable[[str], str]) -> None:
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        try:
            exc.args = tuple(clean(a) if isinstance(a, str) else a for a in exc.args)
        except (AttributeError, TypeError):
            pass
        exc = exc.__cause__ or exc.__context__


def guard_exceptions(exchange, clean: Callable[[str], str] = scrub) -> None:
    """Make ``exchange`` (a ccxt instance, sync or asyncio) scrub its request errors."""
    fetch = exchange.fetch
    if inspect.iscoroutinefunction(fetch):

        async def guarded_async(*args, **kwargs):
            try:
                return await fetch(*args, **kwargs)
            except ccxt.BaseError as exc:
                _scrub_exception(exc, clean)
                raise

        exchange.fetch = guarded_async
    else:

        def guarded(*args, **kwargs):
            try:
                return fetch(*args, **kwargs)
            except ccxt.BaseError as exc:
                _scrub_exception(exc, clean)
                raise

        exchange.fetch = guarded
