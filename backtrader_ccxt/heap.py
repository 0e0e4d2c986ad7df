"""The collector's full passes off the live path: freeze what start-up left, once live.

CPython's cyclic collector makes a full pass when the objects that survived into its oldest
generation since the last pass have grown by a quarter. A process that imported ccxt (every
exchange class) and loaded a venue's markets holds ~400,000 tracked objects that live as
long as it does, and a full pass walks all of them: 80-190 ms on the benchmark machine, on
whichever thread happened to allocate. With 1,000 symbols the bars a strategy keeps bring
one every ~20 s, and one that lands on a burst of closes delays every bar of that second.

``gc.freeze()`` moves every tracked object to a permanent generation that the collector no
longer walks. Done once, when every live CCXT feed of a cerebro has reported LIVE, after one
full collection (start-up's garbage is collected, not kept), the full passes of the live
run walk only what it allocated since: 5-9 ms at 1,000 symbols (docs/benchmarks.md).

The price: an object alive at that moment that later becomes unreachable *in a cycle* is not
collected while frozen (one without a cycle is freed as always). So the freeze is undone when
the cerebro's last CCXT feed stops. A process that has frozen objects already (its owner
manages the collector: a pre-fork server, a test runner) is left alone, as is one whose
stores say ``CCXTStore(gc_freeze=False)``.

backtrader's thread only; no I/O.
"""

from __future__ import annotations

import gc
import logging
import time
from collections.abc import Callable, Sequence

from .sync import PerCerebro

log = logging.getLogger(__name__)

__all__ = ["StartupFreeze", "freeze_for"]


class StartupFreeze:
    """The freeze of one cerebro: ``started`` / ``live`` / ``stopped`` from its feeds."""

    __slots__ = ("_live", "_members", "_running", "frozen", "declined", "__weakref__")

    def __init__(self) -> None:
        self._live: set[int] = set()
        self._members: int | None = None  # how many feeds must be LIVE, read at the first
        self._running: set[int] = set()
        self.frozen = False  # this cerebro froze the heap and has not unfrozen it yet
        self.declined = False  # it decided not to (switched off, or frozen by another owner)

    def started(self, feed: object) -> None:
        self._running.add(id(feed))

    def live(self, feed: object, members: Callable[[], Sequence]) -> None:
        """``feed`` reported LIVE; ``members()``: every live (not historical) CCXT feed of the
        cerebro, asked once (cerebro's datas are fixed once it runs)."""
        if self.frozen or self.declined:
            return
        if self._members is None:
            feeds = members()
            self._members = len(feeds)
            if not all(f._store.gc_freeze for f in feeds):
                self.declined = True  # a store of theirs switched it off
                return
        self._live.add(id(feed))
        if len(self._live) < self._members:
            return
        if gc.get_freeze_count() > 0:
            self.declined = True
            log.debug("objects are frozen already: the collector is left as it is")
            return
        t0 = time.perf_counter()
        gc.collect()
        gc.freeze()
        self.frozen = True
        log.info(
            "every feed is live: froze the %d objects start-up left (a full collection took "
            "%.0f ms; later ones walk only what the run allocates)",
            gc.get_freeze_count(),
            (time.perf_counter() - t0) * 1000,
        )

    def stopped(self, feed: object) -> None:
        self._running.discard(id(feed))
        if self.frozen and not self._running:
            self.frozen = False
            gc.unfreeze()


#: the :class:`StartupFreeze` of a cerebro
freeze_for = PerCerebro(StartupFreeze)
