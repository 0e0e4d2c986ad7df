"""Suite-wide pytest hooks."""

from __future__ import annotations

import gc


def pytest_collection_modifyitems(session, config, items):
    """The long tests first (marked ``realtime`` or ``slow``), each group in its own order.

    xdist hands tests out in collection order (``--dist loadgroup``: the grouped modules
    first, then single tests), so a 27 s real-time soak collected last would be a tail that
    the other workers wait for; started first, it runs beside the short ones.
    """

    def rank(item) -> int:
        return 0 if item.get_closest_marker("realtime") or item.get_closest_marker("slow") else 1

    items[:] = sorted(items, key=rank)  # stable: the order within each rank is kept


def pytest_collection_finish(session):
    """Move what importing and collecting made (ccxt's ~100k API functions and their entries,
    backtrader, the test items) out of the collector's reach: every collection after this
    scans only what the tests make - the ones during the run, and pytest's five at the end
    (unraisable exceptions), which on a worker's heap took a second each."""
    gc.collect()
    gc.freeze()
