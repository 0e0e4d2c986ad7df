"""The thread boundary shared by the feeds of one cerebro (live.manager.Doorbell) and the
turn rule on backtrader's side (sync.Delivery).

Regression: at 1,000 symbols the first feed of a turn waited out its qcheck (0.5 s) for its
own next bar while the bars of the others were already queued (bench/scale.py: p99 4 s).
"""

from __future__ import annotations

import threading

from backtrader_ccxt.bars import Bar, Status
from backtrader_ccxt.live.manager import Doorbell, QueueSource, _Subscription, doorbell_for
from backtrader_ccxt.spec import FeedSpec
from backtrader_ccxt.sync import Delivery, delivery_for
from backtrader_ccxt.timeframes import parse
from tests.helpers import eventually

S1 = parse("1s")


def spec(symbol: str) -> FeedSpec:
    return FeedSpec(symbol=symbol, tf=S1, since_ms=0, page_limit=1000, grace_ms=1000)


def bar(open_ms: int) -> Bar:
    return Bar(open_ms, open_ms + 1000, 1.0, 2.0, 0.5, 1.5, 10.0)


class Env:
    """Stands for a cerebro (weakly referenced, as a cerebro is)."""


class _Manager:
    """The two things a QueueSource asks of its manager (nothing to start here)."""

    _pending: list = []

    def activate(self) -> None:
        pass


def feeds(bell: Doorbell, *symbols: str, kind: str = "stream"):
    subs, sources = [], []
    for s in symbols:
        sub = _Subscription(spec(s), kind, bell)
        sub.join()
        subs.append(sub)
        sources.append(QueueSource(_Manager(), sub))
    return subs, sources


def waiting(bell: Doorbell) -> bool:
    return bool(bell.cond._waiters)  # a thread is inside cond.wait()


def get_in_thread(bell: Doorbell, src: QueueSource, timeout: float | None):
    """``src.get(timeout)`` on a thread of its own, once it waits: (thread, [its result])."""
    got: list = []
    t = threading.Thread(target=lambda: got.append(src.get(timeout)))
    t.start()
    eventually(lambda: waiting(bell))
    return t, got


def test_a_wait_for_the_own_bar_ends_when_a_siblings_bar_is_queued():
    bell = Doorbell()
    (sub_a, sub_b), (src_a, src_b) = feeds(bell, "A/USDT", "B/USDT")
    t, got = get_in_thread(bell, src_a, 30.0)
    assert sub_b.emit(bar(0))
    t.join(10)
    assert not t.is_alive(), "A kept waiting for its own bar while B's was queued"
    assert got == [None]
    assert src_b.get(0) == bar(0)
    assert bell.queued == 0 and bell.filled == 0


def test_a_wait_ends_with_the_own_bar_when_it_comes():
    bell = Doorbell()
    (sub_a, _), (src_a, _) = feeds(bell, "A/USDT", "B/USDT")
    t, got = get_in_thread(bell, src_a, 30.0)
    sub_a.emit(bar(0))
    t.join(10)
    assert got == [bar(0)]


def test_without_a_timeout_only_the_own_bar_ends_the_wait():
    # timeout None (a historical read): a sibling's bar does not make it return empty-handed
    bell = Doorbell()
    (sub_a, sub_b), (src_a, _) = feeds(bell, "A/USDT", "B/USDT")
    t, got = get_in_thread(bell, src_a, None)
    sub_b.emit(bar(0))
    eventually(lambda: waiting(bell))  # woken, and waiting again
    assert t.is_alive()
    sub_a.emit(bar(0))
    t.join(10)
    assert got == [bar(0)]


def test_a_burst_is_settled_once_every_candle_feed_has_an_item():
    bell = Doorbell(quiet=30.0, limit=60.0, quiet_min=30.0)
    subs, _ = feeds(bell, "A/USDT", "B/USDT", "C/USDT")
    for s in subs:
        s.emit(bar(0))
    assert (bell.members, bell.filled, bell.queued) == (3, 3, 3)
    bell.settle()  # returns at once: nothing more to wait for (else after QUIET of no bar)


def test_settle_waits_for_the_rest_of_a_burst_the_loop_thread_is_still_queuing():
    # no quiet end here: only the burst's end
    bell = Doorbell(quiet=30.0, limit=60.0, quiet_min=30.0)
    subs, _ = feeds(bell, "A/USDT", "B/USDT", "C/USDT")
    subs[0].emit(bar(0))
    done = threading.Event()
    t = threading.Thread(target=lambda: (bell.settle(), done.set()))
    t.start()
    eventually(lambda: waiting(bell))
    subs[1].emit(bar(0))
    eventually(lambda: waiting(bell))  # one more to come: still settling
    assert not done.is_set()
    subs[2].emit(bar(0))
    t.join(10)
    assert done.is_set()


def test_one_candle_feed_never_settles():
    bell = Doorbell(quiet=30.0, limit=30.0, quiet_min=30.0)
    (sub,), _ = feeds(bell, "A/USDT")
    sub.emit(bar(0))
    bell.settle()  # at once: a single feed's bar is the whole burst


def test_the_quiet_that_ends_a_burst_grows_with_the_feeds():
    # with 1m and 1h feeds, the 1h feed has nothing at a 1m close: a few feeds wait 5 ms of
    # quiet (QUIET_MIN), not the 20 ms a burst of 40 closes is given
    bell = Doorbell(quiet=30.0, limit=30.0)
    subs, _ = feeds(bell, "A/USDT", "B/USDT", "C/USDT")
    subs[0].emit(bar(0))
    bell.settle()  # returns after ~5 ms (a 30 s wait would time the test out)


def test_tick_feeds_count_as_items_but_not_as_a_burst():
    bell = Doorbell()
    feeds(bell, "A/USDT", "B/USDT")
    (tick_sub,), (tick_src,) = feeds(bell, "C/USDT", kind="tickstream")
    tick_sub.emit(Status("LIVE"))
    assert bell.members == 2 and bell.queued == 1 and bell.filled == 0
    assert bell.rung_at == float("-inf")
    assert tick_src.get(0) == Status("LIVE") and bell.queued == 0


def test_a_stopped_feed_leaves_no_count_behind():
    # a count left by a feed that reads no more would end every wait at once: a busy loop
    bell = Doorbell()
    (sub_a, sub_b), (src_a, src_b) = feeds(bell, "A/USDT", "B/USDT")
    sub_b.emit(bar(0))
    sub_b.emit(bar(1000))
    src_b.stop = lambda: sub_b.close()  # the manager's unsubscribe is not under test
    src_b.stop()
    assert (bell.queued, bell.filled, bell.members) == (0, 0, 1)
    assert sub_b.emit(bar(2000)) is False  # queued for nobody: dropped, not counted
    assert bell.queued == 0
    sub_b.close()  # twice: no double count
    assert bell.members == 1
    assert src_a.idle() and not src_b._ready


def test_one_doorbell_and_one_delivery_per_cerebro():
    env_a, env_b = Env(), Env()
    assert doorbell_for(env_a) is doorbell_for(env_a)
    assert doorbell_for(env_a) is not doorbell_for(env_b)
    assert doorbell_for(None) is not doorbell_for(None)
    assert delivery_for(env_a) is delivery_for(env_a)
    assert delivery_for(None) is not delivery_for(None)


def test_delivery_resets_when_a_new_turn_begins():
    d = Delivery()
    a, b = object(), object()
    assert d.enter(a) is False and d.enter(b) is False
    d.delivered = True
    assert d.enter(a) is True  # a second entry: cerebro's next turn
    assert d.delivered is False
    assert d.enter(b) is False
