"""The start-up freeze (backtrader_ccxt.heap): the collector's full passes during a live run
walk only what the run allocated, and the process gets its collector back when it ends.

tests/conftest.py freezes pytest's own objects after collection, and the package leaves a
process that froze objects itself alone; so each test here starts from an unfrozen heap and
freezes it again for the tests after it.
"""

from __future__ import annotations

import gc
import weakref
from types import SimpleNamespace

import backtrader as bt
import pytest
from feedtools import fast_exchange, fast_store

from backtrader_ccxt import CCXTStore, ConfigurationError
from backtrader_ccxt.heap import StartupFreeze


@pytest.fixture
def unfrozen():
    gc.unfreeze()
    try:
        yield
    finally:
        gc.unfreeze()
        gc.collect()
        gc.freeze()


class _Cycle:
    def __init__(self) -> None:
        self.me = self


def _feed(gc_freeze: bool = True) -> SimpleNamespace:
    return SimpleNamespace(_store=SimpleNamespace(gc_freeze=gc_freeze))


def test_freezes_once_every_member_is_live_and_collects_first(unfrozen):
    a, b = _feed(), _feed()
    asked: list[int] = []

    def members():
        asked.append(1)
        return [a, b]

    f = StartupFreeze()
    f.started(a)
    f.started(b)
    garbage = _Cycle()
    dead = weakref.ref(garbage)
    del garbage  # unreachable, in a cycle: only the collector frees it
    f.live(a, members)
    f.live(a, members)  # a reconnect's second LIVE counts once
    assert gc.get_freeze_count() == 0 and not f.frozen
    assert dead() is not None  # nothing collected yet
    f.live(b, members)
    assert f.frozen and gc.get_freeze_count() > 0
    assert dead() is None  # start-up's garbage was collected, not frozen
    assert len(asked) == 1  # the members are read once
    f.live(a, members)  # LIVE again after a break: nothing more
    f.stopped(a)
    assert gc.get_freeze_count() > 0  # b still runs
    f.stopped(b)
    assert gc.get_freeze_count() == 0 and not f.frozen


def test_switched_off_or_frozen_by_another_owner_is_left_alone(unfrozen):
    a, b = _feed(), _feed(gc_freeze=False)
    off = StartupFreeze()
    off.started(a)
    off.started(b)
    off.live(a, lambda: [a, b])  # b's store switched it off
    off.live(b, lambda: [a, b])
    assert gc.get_freeze_count() == 0 and off.declined
    gc.freeze()  # another owner of the collector
    other = StartupFreeze()
    other.started(a)
    other.live(a, lambda: [a])
    assert other.declined and not other.frozen
    other.stopped(a)
    # not unfrozen on the owner's behalf (an unfreeze empties the permanent generation; its
    # count drifts otherwise, as frozen objects that lose their last reference are freed)
    assert gc.get_freeze_count() > 0


class _FreezeProbe(bt.Strategy):
    """Records the freeze count at each live bar; stops after 2 live bars of every data."""

    def __init__(self) -> None:
        self.live = set()
        self.counts: list[int] = []
        self.lens = {d._name: 0 for d in self.datas}
        self.live_bars = {d._name: 0 for d in self.datas}

    def notify_data(self, data, status, *args, **kwargs) -> None:
        if data._getstatusname(status) == "LIVE":
            self.live.add(data._name)

    def next(self) -> None:
        for d in self.datas:
            if len(d) != self.lens[d._name]:
                self.lens[d._name] = len(d)
                if d._name in self.live:
                    self.live_bars[d._name] += 1
        if len(self.live) == len(self.datas):
            self.counts.append(gc.get_freeze_count())
        if all(n >= 2 for n in self.live_bars.values()):
            self.env.runstop()


@pytest.mark.parametrize("gc_freeze", [True, False])
def test_a_live_run_freezes_while_live_and_unfreezes_at_the_end(unfrozen, gc_freeze):
    with fast_exchange(symbols=("BTC/USDT", "ETH/USDT"), history=50) as ex:
        store = fast_store(ex, gc_freeze=gc_freeze)
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        for s in ("BTC/USDT", "ETH/USDT"):
            cerebro.adddata(
                store.getdata(
                    dataname=s, name=s, timeframe="1s", backfill_bars=3, use_websocket=True
                )
            )
        cerebro.addstrategy(_FreezeProbe)
        strat = cerebro.run()[0]
    assert strat.counts, "no live bar reached the strategy"
    if gc_freeze:
        assert all(c > 0 for c in strat.counts), strat.counts
    else:
        assert all(c == 0 for c in strat.counts), strat.counts
    assert gc.get_freeze_count() == 0  # the process has its collector back


def test_gc_freeze_must_be_a_bool():
    with pytest.raises(ConfigurationError, match=r"gc_freeze must be True or False, got str 'yes'"):
        CCXTStore("binance", gc_freeze="yes")
