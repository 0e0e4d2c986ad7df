"""OrderDriver's I/O decisions on a hand-written fake ccxt instance: a create is never sent
twice (timeout, 429), "not placed" only after the recvWindow, a -1021 re-measures the clock
and sends once more, a cancel waits for its create, a break is followed by REST."""

from __future__ import annotations

import asyncio
import queue
from collections import Counter
from types import SimpleNamespace

import ccxt
import pytest

from backtrader_ccxt.live.orderdriver import OrderDriver
from backtrader_ccxt.orders import OrderRequest, St


class FakeEx:
    id = "fake"

    def __init__(self, create_errors=(), lookups=()):
        self.options = {"recvWindow": 1000, "timeDifference": 0}
        self.calls = Counter()
        self.create_errors = list(create_errors)
        self.lookups = list(lookups)  # per fetch_order: an exception or an order dict
        self.now = 10_000
        self.time_loaded = 0

    def nonce(self):
        return self.now

    async def create_order(self, symbol, type, side, amount, price, params):
        self.calls["create_order"] += 1
        if self.create_errors:
            raise self.create_errors.pop(0)
        return _order(params["clientOrderId"], "closed", amount)

    async def fetch_order(self, id, symbol, params):
        self.calls["fetch_order"] += 1
        self.now += 400  # time passes between lookups
        item = self.lookups.pop(0) if self.lookups else ccxt.OrderNotFound("-2013")
        if isinstance(item, Exception):
            raise item
        return item

    async def load_time_difference(self):
        self.time_loaded += 1
        return 0

    async def cancel_order(self, id, symbol, params):
        self.calls["cancel_order"] += 1
        return _order(params["clientOrderId"], "canceled", 1)

    async def fetch_my_trades(self, symbol, since, limit):
        self.calls["fetch_my_trades"] += 1
        return []

    async def fetch_open_orders(self, symbol=None):
        self.calls["fetch_open_orders"] += 1
        return []

    async def fetch_balance(self):
        self.calls["fetch_balance"] += 1
        return {"USDT": {"free": 1.0, "used": 0.0, "total": 1.0}}


def _order(cid, status, amount):
    return {"id": "1", "clientOrderId": cid, "status": status, "filled": amount if status == "closed" else 0,
            "amount": amount, "symbol": "BTC/USDT", "side": "buy", "info": {}}  # fmt: skip


def _driver(ex, time_sync=False):
    store = SimpleNamespace(
        retry_delay=0.001,
        retry_max_delay=0.002,
        retries=2,
        stats=Counter(),
        redact=str,
        clock=SimpleNamespace(now_ms=lambda: 0),
        exchange=SimpleNamespace(options={}),
        notes=[],
    )
    store.notify = lambda kind, message: store.notes.append(kind)
    d = OrderDriver(store, queue.Queue(), stream=False, poll_interval=1, reconcile_interval=1,
                    time_sync=time_sync)  # fmt: skip
    d.ex = ex
    d._reconcile_lock = asyncio.Lock()
    return d


def _items(d):
    out = []
    while not d.outbox.empty():
        out.append(d.outbox.get())
    return out


REQ = OrderRequest("BTC/USDT", "market", "buy", 1.0, None, {"clientOrderId": "bt-x-1"})


@pytest.mark.parametrize("exc", [ccxt.RequestTimeout("t"), ccxt.RateLimitExceeded("429")])
def test_no_answer_then_found_is_adopted_never_resent(exc):
    ex = FakeEx([exc], lookups=[ccxt.NetworkError("still down"), _order("bt-x-1", "closed", 1.0)])
    d = _driver(ex)
    asyncio.run(d.create(REQ))
    assert ex.calls["create_order"] == 1
    kinds = [i[0] for i in _items(d)]
    assert "report" in kinds and "final" not in kinds
    assert d.stats["broker_create_adopted"] == 1


def test_not_found_is_not_placed_only_after_the_recv_window():
    ex = FakeEx([ccxt.RequestTimeout("t")])  # every lookup: -2013
    d = _driver(ex)
    asyncio.run(d.create(REQ))
    assert ex.calls["create_order"] == 1
    # 10_000 signed; lookups at 10_400, 10_800, 11_200 > 10_000 + 1000: gone on the third
    assert ex.calls["fetch_order"] == 3
    [final] = [i for i in _items(d) if i[0] == "final"]
    assert final[1:3] == ("bt-x-1", St.REJECTED) and "not placed" in final[3]


def test_a_definite_refusal_is_final_at_once():
    ex = FakeEx([ccxt.InsufficientFunds("-2010")])
    d = _driver(ex)
    asyncio.run(d.create(REQ))
    assert ex.calls == Counter({"create_order": 1})
    assert [i[:3] for i in _items(d)] == [("final", "bt-x-1", St.MARGIN)]


def test_1021_remeasures_the_clock_and_sends_once_more():
    ex = FakeEx([ccxt.InvalidNonce("-1021")])
    d = _driver(ex, time_sync=True)
    asyncio.run(d.create(REQ))
    assert ex.calls["create_order"] == 2 and ex.time_loaded == 1
    ex2 = FakeEx([ccxt.InvalidNonce("-1021"), ccxt.InvalidNonce("-1021")])
    d2 = _driver(ex2, time_sync=True)
    asyncio.run(d2.create(REQ))
    assert ex2.calls["create_order"] == 2  # once more, not in a loop
    assert [i[:3] for i in _items(d2)] == [("final", "bt-x-1", St.REJECTED)]


def test_a_cancel_waits_for_its_create():
    ex = FakeEx()
    d = _driver(ex)
    order = []

    async def main():
        gate = asyncio.Event()
        original = ex.create_order

        async def slow_create(*a):
            await gate.wait()
            order.append("created")
            return await original(*a)

        ex.create_order = slow_create
        t1 = asyncio.create_task(d.create(REQ))
        await asyncio.sleep(0)
        t2 = asyncio.create_task(d.cancel("bt-x-1", "BTC/USDT"))
        await asyncio.sleep(0.01)
        assert ex.calls["cancel_order"] == 0 and ex.calls["fetch_order"] == 0
        gate.set()
        await asyncio.gather(t1, t2)

    asyncio.run(main())
    assert order == ["created"]
    # the create answered "closed": no cancel sent for a finished order, only a read
    assert ex.calls["cancel_order"] == 0 and ex.calls["fetch_order"] == 1


def test_a_stream_break_is_followed_by_rest_and_the_watch_resumes():
    ex = FakeEx()
    results = [ccxt.NetworkError("closed"), [_order("bt-x-1", "open", 1.0)]]

    async def watch_orders():
        if results:
            item = results.pop(0)
            if isinstance(item, Exception):
                raise item
            return item
        await asyncio.Event().wait()  # nothing more

    ex.watch_orders = watch_orders
    d = _driver(ex)

    async def main():
        d._stopping = False
        task = asyncio.create_task(d._watch("watch_orders"))
        for _ in range(200):
            await asyncio.sleep(0.001)
            if d.stats["broker_stream_restored"] and d.stats["broker_reconcile_restored"]:
                break
        task.cancel()
        await asyncio.gather(task, *d._tasks, return_exceptions=True)

    asyncio.run(main())
    assert d.stats["broker_stream_breaks"] == 1 and d.stats["broker_stream_restored"] == 1
    assert d.stats["broker_reconcile_break"] == 1  # REST right after the break
    assert d._store.notes == ["CONNECTION_LOST", "CONNECTION_RESTORED"]  # for notify_store
    assert ex.calls["fetch_balance"] >= 1
