"""The stream worker's last step before a due-time confirmation: read the connection first.

A loop that is behind (1,000 streams on a busy machine) still holds finals in its socket when
a feed's due time strikes; REST cannot beat them. Where the venue stamps its frames (Binance
``E``), the worker waits until the connection has been read up to the due time, or until it
has read nothing for a while (a quiet connection), or until an event wakes it.
"""

from __future__ import annotations

import asyncio
import time
from types import SimpleNamespace

import ccxt.pro as ccxtpro

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.live.manager import StreamManager, _Subscription
from backtrader_ccxt.live.tap import FrameTap
from backtrader_ccxt.spec import FeedSpec
from backtrader_ccxt.timeframes import parse
from backtrader_ccxt.venues import adapter_for

from .test_venues import market

M1 = parse("1m")
URL = "wss://stream.binance.com:9443/stream"
RATE = 200.0  # exchange ms per real ms: a minute bar's quiet wait (5 s) takes 25 ms here


def kline(sent: int) -> dict:
    k = {"t": 0, "T": 59_999, "s": "BTCUSDT", "i": "1m", "o": "1", "h": "2", "l": "0.5"}
    k.update(c="1.5", v="3", x=False)
    return {"e": "kline", "E": sent, "s": "BTCUSDT", "k": k}


def setup(due: int):
    t0 = time.monotonic()
    start = due + 10  # the due time has just passed
    store = CCXTStore(
        "binance", clock=lambda: start + (time.monotonic() - t0) * 1000 * RATE, clock_rate=RATE
    )
    manager = StreamManager(store)
    ex = ccxtpro.binance()
    ex.set_markets([market("BTCUSDT", "BTC/USDT", "spot")])
    tap = FrameTap(ex, adapter_for("binance"), lambda *a: None)
    tap.watch("BTC/USDT", "1m")
    client = SimpleNamespace(url=URL, resolve=lambda *a, **k: None)
    ex.clients = {URL: client}  # its own dict: ccxt's class-level default is shared
    ex.handle_ohlcv(client, kline(due - 400))  # read only to 400 ms before the due time
    spec = FeedSpec(symbol="BTC/USDT", tf=M1, since_ms=0, page_limit=1000, grace_ms=1000)
    sub = _Subscription(spec, "stream")
    machine = SimpleNamespace(
        phase="live", stream_broken=False, wants_io=False, tf=M1, due_ms=lambda: due
    )
    manager._groups[sub.key] = SimpleNamespace(broken=False, tap=tap)
    return manager, sub, machine, ex, client


def run(manager, sub, machine, during=None) -> float:
    async def main():
        loop = asyncio.get_running_loop()
        if during is not None:
            during(loop)
        t = time.monotonic()
        await manager._read_before_confirming(sub, machine, loop)
        return time.monotonic() - t

    return asyncio.run(main())


def test_the_worker_reads_the_connection_up_to_the_due_time_before_confirming():
    due = 61_000
    manager, sub, machine, ex, client = setup(due)
    read = []

    def during(loop):
        # the loop works through its backlog: older frames first, then one sent after due
        loop.call_soon(lambda: ex.handle_ohlcv(client, kline(due - 200)))
        loop.call_soon(lambda: ex.handle_ohlcv(client, kline(due - 100)))
        loop.call_soon(lambda: (ex.handle_ohlcv(client, kline(due + 5)), read.append(1)))

    run(manager, sub, machine, during)
    assert read == [1]  # it did not return before the frame sent after due was read
    assert manager.stats["confirm_read_wait_read"] == 1
    # once per due time: asked again for the same due, it goes to REST at once
    run(manager, sub, machine)
    assert manager.stats["confirm_read_waits"] == 1


def test_a_quiet_connection_does_not_hold_the_confirmation_back_for_long():
    due = 61_000
    manager, sub, machine, _ex, _client = setup(due)
    waited = run(manager, sub, machine)
    assert manager.stats["confirm_read_wait_quiet"] == 1
    assert waited < 5.0  # 5 s of exchange time at RATE, i.e. ~25 ms; generous for a busy CI


def test_a_connection_already_read_past_the_due_time_costs_no_wait():
    due = 61_000
    manager, sub, machine, ex, client = setup(due)
    ex.handle_ohlcv(client, kline(due + 1))
    run(manager, sub, machine)
    assert manager.stats["confirm_read_waits"] == 0


def test_a_broken_stream_confirms_at_once():
    due = 61_000
    manager, sub, machine, _ex, _client = setup(due)
    machine.stream_broken = True
    run(manager, sub, machine)
    assert manager.stats["confirm_read_waits"] == 0
