"""Store notifications: what happened to a session, for backtrader's ``notify_store``.

Pure: the kinds, the immutable :class:`StoreNotification`, and :class:`NotificationQueue`, the
thread-safe mailbox between whoever reports (backtrader's thread, the store's loop thread)
and cerebro, which drains it through ``store.get_notifications()`` once per loop and hands
each to every strategy's ``notify_store(msg, *args, **kwargs)`` as
``(notification, (), {})``.
"""

from __future__ import annotations

import threading
from collections import deque
from collections.abc import Iterable
from dataclasses import dataclass

__all__ = [
    "CONNECTION_LOST",
    "CONNECTION_RESTORED",
    "FATAL",
    "KINDS",
    "RATE_LIMITED",
    "RECONNECT_BUDGET_SPENT",
    "STALL",
    "NotificationQueue",
    "StoreNotification",
]

#: the exchange stopped answering (a stream broke, or a REST fetch's retries were spent)
CONNECTION_LOST = "CONNECTION_LOST"
#: it answers again after CONNECTION_LOST
CONNECTION_RESTORED = "CONNECTION_RESTORED"
#: a stream went silent for longer than its stall timeout and is being reconnected
STALL = "STALL"
#: the exchange answered "too many requests" (HTTP 429 / 418, or its own code); retrying
RATE_LIMITED = "RATE_LIMITED"
#: an error retrying cannot fix (bad symbol, credentials, an unclassified venue error whose
#: attempts are spent): the feeds named end with DISCONNECTED
FATAL = "FATAL"
#: the reconnect budget is spent: the feeds named end with DISCONNECTED
RECONNECT_BUDGET_SPENT = "RECONNECT_BUDGET_SPENT"

KINDS = (CONNECTION_LOST, CONNECTION_RESTORED, STALL, RATE_LIMITED, FATAL, RECONNECT_BUDGET_SPENT)


@dataclass(frozen=True)
class StoreNotification:
    """One thing that happened to a store's session.

    ``kind`` is one of :data:`KINDS`; ``exchange`` the ccxt id; ``symbols`` the feeds'
    symbols affected (empty: the whole session); ``message`` a human-readable reason, with
    credentials already masked.
    """

    kind: str
    exchange: str
    symbols: tuple[str, ...]
    message: str

    def __str__(self) -> str:
        where = f" {', '.join(self.symbols)}" if self.symbols else ""
        return f"{self.kind} {self.exchange}{where}: {self.message}"


class NotificationQueue:
    """A bounded, thread-safe FIFO of :class:`StoreNotification`.

    ``maxlen`` bounds memory when nobody drains (a store used outside cerebro): the oldest
    are dropped and counted in ``dropped``.
    """

    def __init__(self, maxlen: int = 1000) -> None:
        self._items: deque[StoreNotification] = deque()
        self._maxlen = maxlen
        self._lock = threading.Lock()
        self.dropped = 0

    def put(self, note: StoreNotification) -> None:
        with self._lock:
            if len(self._items) >= self._maxlen:
                self._items.popleft()
                self.dropped += 1
            self._items.append(note)

    def drain(self) -> list[StoreNotification]:
        with self._lock:
            items = list(self._items)
            self._items.clear()
        return items

    def __len__(self) -> int:
        with self._lock:
            return len(self._items)


def make(kind: str, exchange: str, message: str, symbols: Iterable[str] = ()) -> StoreNotification:
    """A notification, checking ``kind`` (a typo would otherwise reach users silently)."""
    if kind not in KINDS:
        raise ValueError(f"unknown notification kind {kind!r}; valid choices: {', '.join(KINDS)}")
    if isinstance(symbols, str):
        symbols = (symbols,)
    return StoreNotification(kind, exchange, tuple(symbols), str(message))
