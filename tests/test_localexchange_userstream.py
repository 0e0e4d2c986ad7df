"""The local exchange's user-data stream: the WebSocket API's
``userDataStream.subscribe.signature`` (what ccxt.pro 4.5's binance uses for spot
``watch_orders`` / ``watch_my_trades`` / ``watch_balance``), the older listenKey stream, and
the stream fault controls, each checked against the exchange's own ledger."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import threading
import time
from decimal import Decimal

import aiohttp
import ccxt
import ccxt.pro
import pytest
from helpers import eventually

from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
WAIT = 10.0


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() == before, timeout=5)


@pytest.fixture
def venue():
    ex = LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=120)
    acct = ex.add_account(balances={"USDT": 10_000, "BTC": 1}, fee_rate=0.001)
    with ex:
        yield ex, acct


class UserWs:
    """A bare WebSocket-API session subscribed to one account's user data: every frame
    received, in order."""

    def __init__(self, ex, acct):
        self.ex, self.acct = ex, acct
        self.frames: list[dict] = []

    async def __aenter__(self):
        self.session = aiohttp.ClientSession()
        self.ws = await self.session.ws_connect(f"ws://127.0.0.1:{self.ex.port}/ws-api/v3")
        params = {"apiKey": self.acct.api_key, "timestamp": int(time.time() * 1000)}
        payload = "&".join(f"{k}={params[k]}" for k in sorted(params))
        sig = hmac.new(self.acct.secret.encode(), payload.encode(), hashlib.sha256).hexdigest()
        req = {"id": "s1", "method": "userDataStream.subscribe.signature"}
        await self.ws.send_str(json.dumps({**req, "params": {**params, "signature": sig}}))
        reply = await self.next()
        assert reply["status"] == 200, reply
        self.sid = reply["result"]["subscriptionId"]
        return self

    async def next(self) -> dict:
        msg = await asyncio.wait_for(self.ws.receive(), WAIT)
        assert msg.type == aiohttp.WSMsgType.TEXT, msg
        frame = json.loads(msg.data)
        self.frames.append(frame)
        return frame

    async def events(self, n: int) -> list[dict]:
        out = []
        for _ in range(n):
            frame = await self.next()
            assert frame["subscriptionId"] == self.sid
            out.append(frame["event"])
        return out

    async def __aexit__(self, *exc):
        await self.ws.close()
        await self.session.close()


def rest(ex, acct):
    return ccxt.binance({**ex.ccxt_config(account=acct), "timeout": 3000})


def run(coro):
    return asyncio.run(coro)


def test_ccxt_pro_watch_orders_my_trades_and_balance(venue):
    ex, acct = venue

    async def main():
        client = ccxt.pro.binance(ex.ccxt_config(account=acct))
        try:
            await client.load_markets()
            # subscribe first (ccxt.pro sends no snapshot, and resolves new pushes only)
            orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
            mine = asyncio.ensure_future(client.watch_my_trades(SYMBOL))
            balance = asyncio.ensure_future(client.watch_balance())
            await eventually_async(lambda: ex.stats.ws_messages_sent >= 1)  # subscribed
            order = await client.create_order(SYMBOL, "market", "buy", 0.01)
            seen = await asyncio.wait_for(orders, WAIT)
            statuses = [seen[-1]["status"]]
            # NEW and TRADE usually come in one push; when they come apart, the TRADE can
            # arrive before the next watch_orders is registered (it resolves new pushes only:
            # a hang, seen once in a full run). ccxt's cache of orders has it either way.
            deadline = time.monotonic() + WAIT
            while statuses[-1] != "closed":
                cached = [o["status"] for o in client.orders or () if o["id"] == seen[-1]["id"]]
                if cached and cached[-1] != statuses[-1]:
                    statuses.append(cached[-1])
                    continue
                assert time.monotonic() < deadline, f"the order stayed {statuses[-1]}"
                try:
                    later = await asyncio.wait_for(client.watch_orders(SYMBOL), 0.5)
                except asyncio.TimeoutError:
                    continue
                statuses.append(later[-1]["status"])
            trades = await asyncio.wait_for(mine, WAIT)
            balance = await asyncio.wait_for(balance, WAIT)
            return order, statuses, trades, balance
        finally:
            await client.close()

    order, statuses, trades, balance = run(main())
    assert statuses[-1] == "closed"  # NEW and TRADE came together: ccxt shows the newest
    fills = ex.ledger.fills(acct)
    assert [t["id"] for t in trades] == [str(fills[0]["id"])]
    assert trades[0]["order"] == order["id"]
    assert Decimal(repr(trades[0]["price"])) == fills[0]["price"]
    free, locked = ex.ledger.balances(acct)["USDT"]
    assert Decimal(str(balance["USDT"]["free"])) == free and locked == 0
    assert Decimal(str(balance["BTC"]["total"])) == sum(ex.ledger.balances(acct)["BTC"])
    assert ex.ledger.orders(acct)[0]["status"] == "FILLED" and order["status"] == "closed"


async def eventually_async(pred, timeout=WAIT):
    deadline = time.monotonic() + timeout
    while not pred():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met")
        await asyncio.sleep(0.01)


def test_reports_are_binance_shaped_and_follow_the_ledger(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()

    async def main():
        async with UserWs(ex, acct) as ws:
            order = await asyncio.to_thread(client.create_order, SYMBOL, "market", "buy", 0.01)
            events = await ws.events(3)  # NEW, TRADE, outboundAccountPosition
            return order, events

    order, (new, trade, account) = run(main())
    [fill] = ex.ledger.fills(acct)
    assert (new["e"], new["x"], new["X"], new["i"]) == ("executionReport", "NEW", "NEW", 1)
    assert (trade["x"], trade["X"], trade["t"]) == ("TRADE", "FILLED", fill["id"])
    assert Decimal(trade["L"]) == fill["price"] and Decimal(trade["l"]) == fill["qty"]
    assert Decimal(trade["n"]) == fill["commission"] and trade["N"] == "USDT"
    assert new["c"] == trade["c"] == order["clientOrderId"]
    assert account["e"] == "outboundAccountPosition"
    bal = ex.ledger.balances(acct)
    assert {b["a"]: (Decimal(b["f"]), Decimal(b["l"])) for b in account["B"]} == {
        "BTC": bal["BTC"],
        "USDT": bal["USDT"],
    }


def test_cancel_report_carries_the_cancel_id_and_the_original(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    price = float(client.fetch_trades(SYMBOL, limit=1)[-1]["price"])

    async def main():
        async with UserWs(ex, acct) as ws:
            order = await asyncio.to_thread(
                client.create_order,
                SYMBOL,
                "limit",
                "buy",
                0.01,
                round(price * 0.8, 2),
                {"clientOrderId": "keep-me"},
            )
            await ws.events(2)  # NEW + the lock
            canceled = await asyncio.to_thread(client.cancel_order, order["id"], SYMBOL)
            return canceled, await ws.events(2)

    canceled, (report, account) = run(main())
    assert report["x"] == report["X"] == "CANCELED"
    assert report["C"] == "keep-me" and report["c"] == canceled["clientOrderId"] != "keep-me"
    assert {b["a"]: b["l"] for b in account["B"]} == {"USDT": "0.00000000"}


def test_bad_signature_on_subscribe(venue):
    ex, acct = venue

    async def raw():
        async with aiohttp.ClientSession() as s:
            async with s.ws_connect(f"ws://127.0.0.1:{ex.port}/ws-api/v3") as ws:
                params = {"apiKey": acct.api_key, "timestamp": int(time.time() * 1000)}
                req = {"id": 7, "method": "userDataStream.subscribe.signature"}
                await ws.send_json({**req, "params": {**params, "signature": "ab" * 32}})
                return json.loads((await asyncio.wait_for(ws.receive(), WAIT)).data)

    reply = run(raw())
    assert reply == {
        "id": 7,
        "status": 400,
        "error": {"code": -1022, "msg": "Signature for this request is not valid."},
    }

    async def pro():
        client = ccxt.pro.binance({**ex.ccxt_config(account=acct), "secret": "1" * 64})
        try:
            await client.load_markets()
            with pytest.raises(Exception) as info:
                await asyncio.wait_for(client.watch_orders(SYMBOL), WAIT)
            return info.value
        finally:
            await client.close()

    # ccxt.pro 4.5.90 rejects the subscription with AuthenticationError, then its own
    # clean-up deletes the subscription a second time: the caller sees KeyError('spot')
    error = run(pro())
    assert isinstance(error, (ccxt.AuthenticationError, KeyError)), repr(error)


def test_listen_key_stream(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    key = client.publicPostUserDataStream()["listenKey"]
    assert client.publicPostUserDataStream()["listenKey"] == key  # one per account
    assert client.publicPutUserDataStream({"listenKey": key}) == {}

    async def main():
        async with aiohttp.ClientSession() as s, s.ws_connect(f"{ex.ws_url}/{key}") as ws:
            await eventually_async(lambda: ex.stats.ws_open >= 1)
            await asyncio.to_thread(client.create_order, SYMBOL, "market", "sell", 0.01)
            frames = [
                json.loads((await asyncio.wait_for(ws.receive(), WAIT)).data) for _ in range(3)
            ]
            return frames

    frames = run(main())
    assert [f["e"] for f in frames] == [
        "executionReport",
        "executionReport",
        "outboundAccountPosition",
    ]
    assert frames[1]["t"] == ex.ledger.fills(acct)[0]["id"]
    assert client.publicDeleteUserDataStream({"listenKey": key}) == {}
    with pytest.raises(ccxt.ExchangeError, match="-1125"):
        client.publicPutUserDataStream({"listenKey": key})


async def closed(ws) -> bool:
    """Whether the server cut the connection (what a client of a dropped stream sees)."""
    msg = await asyncio.wait_for(ws.ws.receive(), WAIT)
    return msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)


def test_duplicate_execution_reports(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    ex.faults.duplicate_execution_reports(1)

    async def main():
        async with UserWs(ex, acct) as ws:
            await asyncio.to_thread(client.create_order, SYMBOL, "market", "buy", 0.01)
            return await ws.events(4)

    first, again, trade, account = run(main())
    assert first == again and first["x"] == "NEW"  # the same report twice
    assert trade["x"] == "TRADE" and account["e"] == "outboundAccountPosition"
    assert ex.faults.counts["duplicate_report"] == 1
    assert len(ex.ledger.fills(acct)) == 1
    assert ex.stats.user_events_sent == 4


def test_reordered_reports_leave_ccxt_pro_showing_a_stale_status(venue):
    ex, acct = venue
    ex.faults.reorder_execution_reports(1)

    async def main():
        client = ccxt.pro.binance(ex.ccxt_config(account=acct))
        try:
            await client.load_markets()
            balance = asyncio.ensure_future(client.watch_balance())
            orders = asyncio.ensure_future(client.watch_orders(SYMBOL))
            await eventually_async(lambda: ex.stats.ws_messages_sent >= 1)
            order = await client.create_order(SYMBOL, "market", "buy", 0.01)
            await asyncio.wait_for(orders, WAIT)
            await asyncio.wait_for(balance, WAIT)  # pushed after both reports
            cached = client.orders.hashmap[SYMBOL][order["id"]]
            return order, dict(cached)
        finally:
            await client.close()

    order, cached = run(main())
    # TRADE (FILLED) arrived first, then the older NEW: ccxt.pro's cache went back to it
    assert cached["status"] == "open" and cached["filled"] == 0
    assert order["status"] == "closed" and ex.ledger.orders(acct)[0]["status"] == "FILLED"
    assert ex.faults.counts["reordered_report"] == 1


def test_drop_user_stream_breaks_ccxt_pro_watch(venue):
    ex, acct = venue

    async def main():
        client = ccxt.pro.binance(ex.ccxt_config(account=acct))
        try:
            await client.load_markets()
            watch = asyncio.ensure_future(client.watch_orders(SYMBOL))
            await eventually_async(lambda: ex.stats.ws_messages_sent >= 1)
            dropped = await asyncio.to_thread(ex.faults.drop_user_stream)
            with pytest.raises(ccxt.NetworkError):
                await asyncio.wait_for(watch, WAIT)
            # the next call reconnects and subscribes again: the next order is seen
            sent = ex.stats.ws_messages_sent
            again = asyncio.ensure_future(client.watch_orders(SYMBOL))
            await eventually_async(lambda: ex.stats.ws_messages_sent > sent)  # subscribed
            order = await client.create_order(SYMBOL, "market", "buy", 0.01)
            seen = await asyncio.wait_for(again, WAIT)
            return dropped, order, seen
        finally:
            await client.close()

    dropped, order, seen = run(main())
    assert dropped == 1 and seen[-1]["id"] == order["id"]
    assert ex.faults.counts["user_stream_drop"] == 1


def test_drop_user_stream_during_fill_the_fill_is_in_rest_only(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    ex.faults.drop_user_stream_during_fill(1)

    async def main():
        async with UserWs(ex, acct) as ws:
            await asyncio.to_thread(client.create_order, SYMBOL, "market", "buy", 0.01)
            return await closed(ws), ws.frames

    was_closed, frames = run(main())
    assert was_closed and [f for f in frames if "event" in f] == []
    [fill] = ex.ledger.fills(acct)
    assert [t["id"] for t in client.fetch_my_trades(SYMBOL)] == [str(fill["id"])]
    assert ex.faults.counts["drop_during_fill"] == 1


def test_fill_while_disconnected(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()

    async def main():
        async with UserWs(ex, acct) as ws:
            await asyncio.to_thread(ex.faults.fill_while_disconnected, 1)
            assert await closed(ws)
        # while the fault lasts, a new user-data connection is cut as it opens
        async with (
            aiohttp.ClientSession() as s,
            s.ws_connect(f"ws://127.0.0.1:{ex.port}/ws-api/v3") as raw,
        ):
            msg = await asyncio.wait_for(raw.receive(), WAIT)
            assert msg.type in (
                aiohttp.WSMsgType.CLOSE,
                aiohttp.WSMsgType.CLOSED,
                aiohttp.WSMsgType.ERROR,
            )
        await asyncio.to_thread(client.create_order, SYMBOL, "market", "buy", 0.01)
        # the fill ended the fault: subscriptions are served again, the next order is seen
        async with UserWs(ex, acct) as ws:
            await asyncio.to_thread(client.create_order, SYMBOL, "market", "sell", 0.01)
            return await ws.events(3)

    new, trade, _ = run(main())
    fills = ex.ledger.fills(acct)
    assert len(fills) == 2 and trade["t"] == fills[1]["id"] and new["i"] == 2
    assert ex.faults.counts["fill_while_disconnected"] == 1


def test_a_fast_clock_fills_resting_orders_on_its_own_time():
    class FastClock:  # stands still until started, then runs 30 times real time
        def __init__(self):
            self.base, self.started = time.time(), None

        def start(self):
            self.started = time.monotonic()

        def __call__(self):
            if self.started is None:
                return self.base
            return self.base + (time.monotonic() - self.started) * 30.0

    clock = FastClock()
    ex = LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=120, clock=clock)
    acct = ex.add_account(balances={"USDT": 10_000})
    with ex:
        client = rest(ex, acct)
        client.load_markets()

        async def main():
            async with UserWs(ex, acct) as ws:
                now = ex.now_ms()
                price = (await asyncio.to_thread(ex.trades, SYMBOL, now - 5000))[-1]["price"]
                # below the price (it rests), above the low of the first candle to come that
                # goes under it (it fills, within that candle): a fixed 0.01% under the price
                # waited out a rising market (the candles replayed depend on the time of day),
                # and the lowest low of the next 5 minutes made the wait up to 10 s
                tf = ex._replay.timeframe("1s")
                k = tf.index(now)
                lows = (float(ex._replay.candle(SYMBOL, tf, k + i).l) for i in range(1, 300))
                low = next((x for x in lows if x < price), None)
                assert low is not None, "the replay only rises for 5 minutes from here"
                limit = round((low + price) / 2, 2)
                await asyncio.to_thread(client.create_order, SYMBOL, "limit", "buy", 0.01, limit)
                new, lock = await ws.events(2)
                assert new["x"] == "NEW" and lock["e"] == "outboundAccountPosition"
                calls = ex.stats.rest_calls
                clock.start()
                trade = (await ws.events(1))[0]  # pushed by the matching timer
                assert ex.stats.rest_calls == calls  # no request drove it
                return limit, trade

        limit, trade = run(main())
        assert trade["x"] == "TRADE" and trade["X"] == "FILLED" and float(trade["L"]) == limit
        crossing = next(
            t
            for t in ex.trades(SYMBOL, since_ms=ex.ledger.orders(acct)[0]["time"] + 1)
            if t["price"] <= limit
        )
        assert trade["T"] == crossing["timestamp"] == ex.ledger.fills(acct)[0]["time"]


def test_websocket_api_orders_and_a_lost_reply_that_never_times_out(venue):
    ex, acct = venue

    async def main():
        client = ccxt.pro.binance(ex.ccxt_config(account=acct))
        try:
            await client.load_markets()
            market = await client.create_order_ws(SYMBOL, "market", "buy", 0.01)
            limit = await client.create_order_ws(SYMBOL, "limit", "buy", 0.01, 10_000)
            status = (await client.fetch_order_ws(limit["id"], SYMBOL))["status"]
            canceled = await client.cancel_order_ws(limit["id"], SYMBOL)
            with pytest.raises(ccxt.OrderNotFound, match="-2011"):
                await client.cancel_order_ws(limit["id"], SYMBOL)
            await asyncio.to_thread(ex.faults.lose_order_reply, 1)
            lost = asyncio.ensure_future(client.create_order_ws(SYMBOL, "market", "buy", 0.01))
            await eventually_async(lambda: len(ex.ledger.orders(acct)) == 3)
            booked_without_reply = not lost.done()  # create_order_ws has no timeout of its own
            lost.cancel()
            return market, status, canceled, booked_without_reply
        finally:
            await client.close()

    market, status, canceled, booked_without_reply = run(main())
    snaps = ex.ledger.orders(acct)
    assert market["status"] == "closed" and snaps[0]["status"] == "FILLED"
    assert status == "open" and canceled["status"] == "canceled"
    assert snaps[1]["status"] == "CANCELED" and snaps[2]["status"] == "FILLED"
    assert booked_without_reply and ex.faults.counts["lost_order_reply"] == 1


def test_stream_faults_wait_for_a_listener(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    ex.faults.drop_user_stream_during_fill(1)
    client.create_order(SYMBOL, "market", "buy", 0.01)  # nobody listens: nothing to drop
    assert ex.faults.counts["drop_during_fill"] == 0
    assert ex.faults.pending()["drop_user_stream_during_fill"] == 1

    async def main():
        async with UserWs(ex, acct) as ws:
            await asyncio.to_thread(client.create_order, SYMBOL, "market", "sell", 0.01)
            return await closed(ws)

    assert run(main())
    assert ex.faults.counts["drop_during_fill"] == 1 and ex.faults.counts["user_stream_drop"] == 1


def test_oco_pushes_list_status_and_leg_reports(venue):
    ex, acct = venue
    client = rest(ex, acct)
    client.load_markets()
    p = client.fetch_trades(SYMBOL, limit=1)[-1]["price"]
    params = {
        "symbol": "BTCUSDT",
        "side": "SELL",
        "quantity": "0.1",
        "aboveType": "LIMIT_MAKER",
        "abovePrice": f"{p * 1.5:.2f}",
        "belowType": "STOP_LOSS",
        "belowStopPrice": f"{p * 0.5:.2f}",
    }

    async def main():
        async with UserWs(ex, acct) as ws:
            reply = await asyncio.to_thread(client.privatePostOrderListOco, params)
            placed = await ws.events(4)
            await asyncio.to_thread(
                client.privateDeleteOrderList,
                {"symbol": "BTCUSDT", "orderListId": reply["orderListId"]},
            )
            return reply, placed, await ws.events(4)

    reply, placed, canceled = run(main())
    assert [e["e"] for e in placed] == [
        "executionReport",
        "executionReport",
        "listStatus",
        "outboundAccountPosition",
    ]
    assert {e["g"] for e in placed[:2]} == {reply["orderListId"]} and placed[2][
        "l"
    ] == "EXEC_STARTED"
    assert [(e["e"], e["X"] if "X" in e else e["L"]) for e in canceled[:3]] == [
        ("executionReport", "CANCELED"),
        ("executionReport", "CANCELED"),
        ("listStatus", "ALL_DONE"),
    ]
