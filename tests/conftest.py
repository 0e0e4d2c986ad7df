"""Suite-wide pytest hooks."""

from __future__ import annotations

import compileall
import gc
from pathlib import Path

TESTS = Path(__file__).parent


def pytest_configure(config):
    """On the controller of an xdist run, before any worker starts: write once the bytecode
    that each worker would otherwise make for itself - the tests with pytest's assertions
    rewritten, and the package. On machines with PYTHONDONTWRITEBYTECODE set (this one, CI)
    nothing is ever cached, so eight workers each spent ~1.5 s rewriting every test module;
    cached files are read whatever that variable says. Best effort: this uses pytest's
    private rewrite helpers, and does nothing if they are not there."""
    if hasattr(config, "workerinput") or not getattr(config.option, "numprocesses", None):
        return
    compileall.compile_dir(TESTS.parent / "backtrader_ccxt", quiet=1)
    try:
        from _pytest.assertion import rewrite

        state = config.stash[rewrite.assertstate_key]
        for fn in sorted([TESTS / "conftest.py", *TESTS.rglob("test_*.py")]):
            pyc = rewrite.get_cache_dir(fn) / (fn.name[:-3] + rewrite.PYC_TAIL)
            if rewrite._read_pyc(fn, pyc) is None:
                rewrite.try_makedirs(pyc.parent)
                source_stat, co = rewrite._rewrite_test(fn, config)
                rewrite._write_pyc(state, co, source_stat, pyc)
    except (ImportError, AttributeError, KeyError, TypeError, OSError):
        return


#: modules of live tests (2-4 s each on the fast clock; the 6 s order soak) that come late in
#: collection order; run right after the long ones, so that the last tests handed out are
#: short ones, not a worker's last 4-6 s while the others have finished (a 3-5 s tail).
#: Ordering only: a stale entry costs time, never a test.
LIVE_LATE_MODULES = frozenset(
    {
        "test_websocket",
        "test_tick_feed",
        "test_rehearsal",
        "test_stream_lifecycle",
        "test_order_soak",
        "test_localexchange_trades",
    }
)


def pytest_collection_modifyitems(session, config, items):
    """The long tests first (marked ``realtime`` or ``slow``), then the live modules that
    would come last (LIVE_LATE_MODULES), then the rest; each group in its own order.

    xdist hands tests out in collection order (``--dist loadgroup``: the grouped modules
    first, then single tests), so a 27 s real-time soak collected last would be a tail that
    the other workers wait for; started first, it runs beside the short ones.
    """

    def rank(item) -> int:
        if item.get_closest_marker("realtime") or item.get_closest_marker("slow"):
            return 0
        return 1 if item.module.__name__ in LIVE_LATE_MODULES else 2

    items[:] = sorted(items, key=rank)  # stable: the order within each rank is kept


def pytest_collection_finish(session):
    """Move what importing and collecting made (ccxt's ~100k API functions and their entries,
    backtrader, the test items) out of the collector's reach: every collection after this
    scans only what the tests make - the ones during the run, and pytest's five at the end
    (unraisable exceptions), which on a worker's heap took a second each."""
    gc.collect()
    gc.freeze()
