"""Keeps the feeds of one cerebro in step, so that backtrader never has to rewind one.

Why: in each turn of its loop (``Cerebro._runnext``) backtrader calls every data's ``next()``
once; when the feeds that delivered a bar disagree on its time, those ahead of the earliest
are *rewound* to deliver their bar again later. A rewind needs the previous bar in the
buffer, which ``exactbars=1`` has thrown away: ``IndexError: deque index out of range`` the
first time two live feeds drift apart (a reconnect, a REST 429 or a gap fill in one of them).

The answer, on the feeds' side: each feed holds a look-ahead of one bar, and within one turn

* every feed that delivers delivers the **same** close time, and
* that time is the **earliest** any feed holds when the turn starts (a feed holding a later
  bar returns "no bar now" for the turn and delivers it in a later one);
* a feed holding nothing (silent, disconnected, ended) never holds the others back;
* a bar that arrives from another thread during the turn is delivered in it only if it has
  the turn's time, otherwise it waits for the next turn.

Backtrader then never sees two different times in a turn, so never rewinds: the order of the
bars the strategy sees is the one backtrader itself would produce with unbounded buffers.

Pure: no I/O, no backtrader import, backtrader's thread only (the look-ahead is filled from
each feed's thread-safe source queue; nothing here is shared with another thread).
"""

from __future__ import annotations

import weakref
from collections.abc import Iterable
from typing import Protocol

__all__ = ["Delivery", "Member", "PerCerebro", "Turns", "delivery_for", "turns_for"]


class Member(Protocol):
    def sync_peek(self) -> int | None:
        """Refresh the look-ahead without waiting (a historical feed may block: its next
        bar is always on its way) and return its close time in ms, or None if none."""


class Turns:
    """The turn state of one cerebro.

    ``enter(member, members)`` is called from each member's ``next()`` without a master (the
    first pass of a turn). A member entering twice means a new turn has begun; the first
    entry of a turn takes the snapshot: the earliest close time any member holds.
    ``admit(close_ms)`` says whether a bar with that close time may be delivered now.
    """

    __slots__ = ("_seen", "turn_ms")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.turn_ms: int | None = None

    def enter(self, member: Member, members: Iterable[Member]) -> None:
        key = id(member)
        if not self._seen or key in self._seen:
            self._seen.clear()
            held = [t for t in (m.sync_peek() for m in members) if t is not None]
            self.turn_ms = min(held) if held else None
        self._seen.add(key)

    def admit(self, close_ms: int) -> bool:
        if self.turn_ms is None:
            self.turn_ms = close_ms  # nobody held a bar at the snapshot: the first one sets it
            return True
        return close_ms == self.turn_ms


class Delivery:
    """Whether a CCXT feed of one cerebro delivered a bar in the current turn of its loop.

    ``enter(member)`` is called from each feed's ``next()`` without a master; a feed entering
    twice means a new turn has begun. A feed that would wait in ``_load`` for its own bar
    does not wait once ``delivered`` is set: cerebro can run the strategy on the bar it has
    now (a burst of bars arriving together was already waited for at the turn's start, see
    ``live.manager.Doorbell``), and a bar still on its way comes in a later turn. backtrader
    itself skips the wait only when a feed holds a bar when the turn starts.
    """

    __slots__ = ("_seen", "delivered")

    def __init__(self) -> None:
        self._seen: set[int] = set()
        self.delivered = False

    def enter(self, member: object) -> bool:
        """Count ``member``'s first pass of a turn; True if it began a new turn."""
        key = id(member)
        new = key in self._seen
        if new:
            self._seen.clear()
            self.delivered = False
        self._seen.add(key)
        return new


class PerCerebro:
    """One object of a kind per cerebro, made by ``factory`` on first use and gone with the
    cerebro; a private one for ``env=None`` (a feed outside a cerebro)."""

    def __init__(self, factory) -> None:
        self._factory = factory
        self._of: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()

    def __call__(self, env):
        if env is None:
            return self._factory()
        obj = self._of.get(env)
        if obj is None:
            obj = self._of[env] = self._factory()
        return obj


#: the :class:`Turns` of a cerebro
turns_for = PerCerebro(Turns)
#: the :class:`Delivery` of a cerebro
delivery_for = PerCerebro(Delivery)
