"""The local Binance SPOT exchange, exercised with the real ccxt / ccxt.pro clients."""

from __future__ import annotations

import asyncio
import csv
import json
import re
import threading
import time
from decimal import Decimal
from pathlib import Path

import aiohttp
import ccxt
import ccxt.async_support
import ccxt.pro
import pytest
from feedtools import fast_exchange
from helpers import eventually

from backtrader_ccxt.localexchange import LocalExchange

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT / "backtrader_ccxt" / "localexchange" / "data"
DOCS = ROOT / "docs" / "localexchange.md"
FROZEN = 1_700_000_030.5  # 30.5 s into a minute (and mid-second)
WS_WAIT = 5.0  # seconds any single WebSocket wait may take


def frozen_clock():
    return FROZEN


def read_csv(name: str) -> list[list[float]]:
    with open(DATA / name, newline="") as f:
        reader = csv.reader(f)
        assert next(reader) == ["timestamp_ms", "open", "high", "low", "close", "volume"]
        return [[float(x) for x in row[1:]] for row in reader]


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() == before, timeout=5)


def record_messages(exchange) -> list:
    """Record every decoded message the real ccxt.pro client handles: (monotonic, message)."""
    seen: list = []
    original = exchange.handle_message

    def handle(client, message):
        seen.append((time.monotonic(), message))
        return original(client, message)

    exchange.handle_message = handle
    return seen


async def until(cond, timeout: float = WS_WAIT) -> None:
    """Async polling with a deadline, for conditions set by the server thread."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.01)


def klines(seen: list) -> list[dict]:
    return [m for _, m in seen if isinstance(m, dict) and m.get("e") == "kline"]


async def watch_until(pro, pairs, done, timeout: float = WS_WAIT) -> dict:
    """Call watch_ohlcv_for_symbols until ``done(last)`` where ``last`` maps
    symbol -> {open_ms: last row seen (copied)}."""
    last: dict = {}
    deadline = time.monotonic() + timeout
    while not done(last):
        remaining = deadline - time.monotonic()
        assert remaining > 0, f"stream did not deliver in {timeout}s: {last}"
        result = await asyncio.wait_for(pro.watch_ohlcv_for_symbols(pairs), remaining)
        for symbol, by_tf in result.items():
            for rows in by_tf.values():
                for row in rows:
                    last.setdefault(symbol, {})[row[0]] = list(row)
    return last


def closed_seen(last: dict, symbol: str) -> dict:
    """Rows of candles superseded by a later one on the stream (the last may be forming)."""
    rows = last.get(symbol, {})
    return {t: rows[t] for t in sorted(rows)[:-1]}


# -- REST -------------------------------------------------------------------------------------


def test_load_markets_and_fetch_time():
    with LocalExchange(symbols=("BTC/USDT", "ETH/USDT", "SYM007/USDT")) as ex:
        exchange = ccxt.binance(ex.ccxt_config())
        markets = exchange.load_markets()
        assert set(markets) == {"BTC/USDT", "ETH/USDT", "SYM007/USDT"}
        btc = markets["BTC/USDT"]
        assert btc["spot"] and btc["active"] and btc["id"] == "BTCUSDT"
        assert btc["precision"]["price"] == 0.01
        before = ex.now_ms()
        server_time = exchange.fetch_time()
        assert before <= server_time <= ex.now_ms()
        assert ex.stats.rest_by_path == {"/api/v3/exchangeInfo": 1, "/api/v3/time": 1}
        assert ex.stats.rest_calls == 2
        assert "x-mbx-used-weight-1m" in {k.lower() for k in exchange.last_response_headers}


def test_paginated_history_equals_ground_truth_and_csv():
    with LocalExchange(timeframes=("1m",), history=3000, clock=frozen_clock) as ex:
        exchange = ccxt.binance(ex.ccxt_config())
        for symbol, filename in (("BTC/USDT", "BTCUSDT-1m.csv"), ("ETH/USDT", "ETHUSDT-1m.csv")):
            rows: list = []
            since = ex.first_open_ms("1m")
            while True:
                page = exchange.fetch_ohlcv(symbol, "1m", since=since, limit=1000)
                rows += page
                if len(page) < 1000:
                    break
                since = page[-1][0] + 1
            forming_open = int(FROZEN * 1000) // 60_000 * 60_000
            assert len(rows) == 3001
            # the last REST row is the forming candle; ground truth never includes it
            assert rows[-1][0] == forming_open
            assert rows[-1] == ex.forming(symbol, "1m")
            closed = rows[:-1]
            truth = ex.candles(symbol, "1m")
            assert closed == truth
            assert truth[-1][0] == forming_open - 60_000
            assert ex.candle_at(symbol, "1m", forming_open) is None
            assert ex.candle_at(symbol, "1m", truth[5][0]) == truth[5]
            # every value is the bundled CSV row (open_ms // 60000) mod 2880, re-stamped
            source = read_csv(filename)
            assert len(source) == 2880
            for row in closed:
                assert row[1:] == source[(row[0] // 60_000) % 2880], row
            assert {(r[0] // 60_000) % 2880 for r in closed} == set(range(2880))
        assert ex.stats.rest_by_path["/api/v3/klines"] == 8


def test_klines_follow_binance_semantics():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",), clock=frozen_clock) as ex:
        exchange = ccxt.binance(ex.ccxt_config())
        exchange.load_markets()
        now_open = int(FROZEN * 1000) // 60_000 * 60_000
        # raw rows: Binance's 12 columns, prices as strings, closeTime = open + len - 1
        raw = exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 3})
        assert len(raw) == 3 and all(len(r) == 12 for r in raw)
        first = raw[0]
        assert isinstance(first[1], str) and first[1].count(".") == 1
        assert first[6] == first[0] + 59_999
        assert raw[-1][0] == now_open
        # default limit 500, newest rows ending with the forming candle
        default = exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m"})
        assert len(default) == 500 and default[-1][0] == now_open
        # endTime only: newest rows with open <= endTime
        end = now_open - 10 * 60_000 + 5
        page = exchange.publicGetKlines(
            {"symbol": "BTCUSDT", "interval": "1m", "endTime": end, "limit": 4}
        )
        assert [r[0] for r in page] == [now_open - k * 60_000 for k in (13, 12, 11, 10)]
        # startTime inside a candle: the first row opens at or after it
        page = exchange.fetch_ohlcv("BTC/USDT", "1m", since=now_open - 3 * 60_000 - 1, limit=10)
        assert [r[0] for r in page] == [now_open - k * 60_000 for k in (3, 2, 1, 0)]
        # the future is never served; before the history nothing exists
        assert exchange.fetch_ohlcv("BTC/USDT", "1m", since=now_open + 60_000) == []
        oldest = exchange.fetch_ohlcv("BTC/USDT", "1m", since=0, limit=2)
        assert oldest[0][0] == ex.first_open_ms("1m") == now_open - 3000 * 60_000
        # Binance's errors, mapped by ccxt
        with pytest.raises(ccxt.BadRequest):  # -1130, limit above 1000
            exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "1m", "limit": 1001})
        with pytest.raises(ccxt.BadSymbol):  # -1121
            exchange.publicGetKlines({"symbol": "NOPEUSDT", "interval": "1m"})
        with pytest.raises(ccxt.BadRequest):  # -1120
            exchange.publicGetKlines({"symbol": "BTCUSDT", "interval": "7m"})
        assert exchange.last_http_response.startswith('{"code":-1120')


def test_derived_symbols_are_distinct_and_deterministic():
    symbols = ("BTC/USDT", "ETH/USDT", "SYM007/USDT", "SYM008/USDT")
    kwargs = dict(symbols=symbols, timeframes=("1m",), history=100, clock=frozen_clock)
    with LocalExchange(**kwargs) as a:
        series = {s: a.candles(s, "1m") for s in symbols}
    with LocalExchange(**kwargs) as b:
        assert {s: b.candles(s, "1m") for s in symbols} == series
    closes = {s: tuple(r[4] for r in rows) for s, rows in series.items()}
    assert len(set(closes.values())) == len(symbols)
    for rows in series.values():
        assert len(rows) == 100
        assert all(r[3] <= min(r[1], r[4]) <= max(r[1], r[4]) <= r[2] for r in rows)


def test_large_history_is_lazy_and_fast():
    started = time.perf_counter()
    with LocalExchange(
        symbols=("BTC/USDT",), timeframes=("1s",), history=100_000, clock=frozen_clock
    ) as ex:
        truth = ex.candles("BTC/USDT", "1s")
        assert len(truth) == 100_000
        exchange = ccxt.binance(ex.ccxt_config())
        page = exchange.fetch_ohlcv("BTC/USDT", "1s", since=ex.first_open_ms("1s"), limit=1000)
        assert page == truth[:1000]
    assert time.perf_counter() - started < 10


def test_omit_empty_on_rest():
    with LocalExchange(
        symbols=("BTC/USDT",), timeframes=("1m",), history=60, empty_every=10, clock=frozen_clock
    ) as ex:
        exchange = ccxt.binance(ex.ccxt_config())
        since = ex.first_open_ms("1m")
        full = exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
        empties = [r for r in full if r[5] == 0]
        assert len(empties) >= 5
        assert all(r[1] == r[2] == r[3] == r[4] for r in empties)  # flat at the last price
        marked = full[1][0] if full[1][5] else full[2][0]
        ex.faults.make_empty("BTC/USDT", "1m", marked)
        assert ex.candle_at("BTC/USDT", "1m", marked)[5] == 0
        ex.faults.omit_empty = True
        assert ex.faults.omit_empty
        skipped = exchange.fetch_ohlcv("BTC/USDT", "1m", since=since, limit=1000)
        assert all(r[5] > 0 for r in skipped)
        assert len(skipped) == len(full) - len(empties) - 1
        assert skipped[:-1] == ex.candles("BTC/USDT", "1m")
        assert ex.candle_at("BTC/USDT", "1m", marked) is None
        assert ex.faults.counts["omitted"] == len(empties) + 1


def test_rest_faults_raise_the_documented_ccxt_errors():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",), rest_timeout_hold=20) as ex:
        exchange = ccxt.binance(dict(ex.ccxt_config(), timeout=300))
        exchange.load_markets()

        ex.faults.rest_errors("429", retry_after=7)
        with pytest.raises((ccxt.RateLimitExceeded, ccxt.DDoSProtection)):
            exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        assert exchange.last_response_headers["Retry-After"] == "7"
        assert json.loads(exchange.last_http_response)["code"] == -1003

        ex.faults.rest_errors("5xx", count=2, path="/api/v3/klines")
        assert exchange.fetch_time() > 0  # other paths are not affected
        for _ in range(2):
            with pytest.raises(ccxt.ExchangeNotAvailable):
                exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        assert exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)

        ex.faults.rest_errors("timeout")
        started = time.monotonic()
        with pytest.raises(ccxt.RequestTimeout):
            exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        assert time.monotonic() - started < 5

        # a 200 with half a JSON body: ccxt does not raise, it hands back junk
        ex.faults.rest_errors("truncated")
        junk = exchange.fetch_ohlcv("BTC/USDT", "1m", limit=5)
        assert any(value is None for row in junk for value in row)

        assert ex.faults.counts == dict(
            ex.faults.counts,
            rest_429=1,
            rest_5xx=2,
            rest_timeout=1,
            rest_truncated=1,
        )
        assert ex.faults.pending()["rest"] == 0
        # the held "timeout" request is still open server-side: stop() must end it promptly
        started = time.monotonic()
    assert time.monotonic() - started < 5


def test_rest_faults_with_async_client():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",)) as ex:

        async def main():
            exchange = ccxt.async_support.binance(dict(ex.ccxt_config(), timeout=300))
            try:
                await exchange.load_markets()
                ex.faults.rest_errors("429")
                with pytest.raises(ccxt.DDoSProtection):
                    await exchange.fetch_ohlcv("BTC/USDT", "1m")
                ex.faults.rest_errors("timeout", hold=10)
                with pytest.raises(ccxt.RequestTimeout):
                    await exchange.fetch_ohlcv("BTC/USDT", "1m")
                rows = await exchange.fetch_ohlcv("BTC/USDT", "1m", limit=3)
                assert rows[:-1] == ex.candles("BTC/USDT", "1m")[-2:]
            finally:
                await exchange.close()

        asyncio.run(main())


# -- WebSocket --------------------------------------------------------------------------------


def test_two_symbols_on_one_connection_match_rest():
    pairs = [["BTC/USDT", "1s"], ["ETH/USDT", "1s"]]
    with LocalExchange(
        timeframes=("1s",), history=20, updates_per_candle=2, ping_interval=0.3
    ) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            try:
                return await watch_until(
                    pro, pairs, lambda last: all(len(last.get(s, ())) >= 4 for s, _ in pairs)
                )
            finally:
                await pro.close()

        last = asyncio.run(main())
        assert ex.stats.ws_connections == 1
        assert ex.stats.ws_subscribe_messages == 1
        assert ex.stats.ws_streams_subscribed == 2
        assert ex.stats.ws_pongs_received >= 1  # ccxt answers the server's pings itself
        eventually(lambda: ex.stats.ws_open == 0)
        rest = ccxt.binance(ex.ccxt_config())
        for symbol, _ in pairs:
            finals = closed_seen(last, symbol)
            assert len(finals) >= 3
            history = rest.fetch_ohlcv(symbol, "1s", since=min(finals), limit=len(finals))
            assert history == list(finals.values())
            assert all(ex.candle_at(symbol, "1s", t) == row for t, row in finals.items())


def test_raw_stream_protocol():
    """Binance's wire protocol as seen by a plain WebSocket client."""
    updates = 3
    with LocalExchange(
        symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=updates, ping_interval=0.2
    ) as ex:

        async def main():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ex.ws_url + "/0") as ws:
                    await ws.send_json(
                        {"method": "SUBSCRIBE", "params": ["nope@kline_1s"], "id": 1}
                    )
                    assert (await ws.receive_json())["error"]["code"] == 2
                    await ws.send_json(
                        {"method": "SUBSCRIBE", "params": ["btcusdt@kline_1s"], "id": 2}
                    )
                    assert await ws.receive_json() == {"result": None, "id": 2}
                    events = []
                    while sum(e["k"]["x"] for e in events) < 3:
                        msg = await asyncio.wait_for(ws.receive_json(), WS_WAIT)
                        events.append(msg)
                    await ws.send_json({"method": "LIST_SUBSCRIPTIONS", "id": 3})
                    while (reply := await ws.receive_json()).get("id") != 3:
                        pass
                    assert reply["result"] == ["btcusdt@kline_1s"]
                    await ws.send_json(
                        {"method": "UNSUBSCRIBE", "params": ["btcusdt@kline_1s"], "id": 4}
                    )
                    while (reply := await ws.receive_json()).get("id") != 4:
                        pass
                    assert reply == {"result": None, "id": 4}
                    return events

        events = asyncio.run(main())
        assert ex.stats.ws_pings_sent >= 1 and ex.stats.ws_pongs_received >= 1
        first_final = next(i for i, e in enumerate(events) if e["k"]["x"])
        # a whole candle: `updates` partials in its first 90%, the final at/after its close,
        # then at once the next candle's first partial
        by_open: dict = {}
        for e in events[first_final + 1 :]:
            by_open.setdefault(e["k"]["t"], []).append(e)
        complete = [evs for evs in by_open.values() if evs[-1]["k"]["x"]]
        assert len(complete) >= 2
        for evs in complete:
            k0 = evs[0]["k"]
            t = k0["t"]
            assert t % 1000 == 0 and k0["T"] == t + 999 and k0["i"] == "1s"
            assert [e["k"]["x"] for e in evs] == [False] * updates + [True]
            assert all(e["E"] < t + 900 for e in evs[:-1])
            assert evs[-1]["E"] >= t + 1000
            assert float(evs[-1]["k"]["v"]) > float(evs[-2]["k"]["v"])
            final = evs[-1]["k"]
            truth = ex.candle_at("BTC/USDT", "1s", t)
            assert [float(final[f]) for f in "ohlcv"] == truth[1:]
            for e in evs:  # partials: open fixed, on the tick grid, inside the final range
                k = e["k"]
                assert k["o"] == final["o"]
                assert all(Decimal(k[f]) % Decimal("0.01") == 0 for f in "ohlc")
                assert float(final["l"]) <= float(k["l"]) <= float(k["h"]) <= float(final["h"])
        assert ex.faults.counts["drop"] == 0


def test_pong_timeout_closes_a_silent_client():
    with LocalExchange(
        symbols=("BTC/USDT",), timeframes=("1s",), ping_interval=0.1, pong_timeout=0.3
    ) as ex:

        async def main():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(ex.ws_url, autoping=False) as ws:
                    while True:  # never answer the pings
                        msg = await asyncio.wait_for(ws.receive(), WS_WAIT)
                        if msg.type in (aiohttp.WSMsgType.CLOSE, aiohttp.WSMsgType.CLOSED):
                            return
                        assert msg.type == aiohttp.WSMsgType.PING

        asyncio.run(main())
        eventually(lambda: ex.stats.ws_open == 0)


def test_drop_connections_raises_network_error_then_reconnects():
    # a frozen clock sends nothing, so the watch is certainly pending when the drop lands
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), clock=frozen_clock) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            try:
                for clean in (False, True):
                    watch = asyncio.ensure_future(pro.watch_ohlcv("BTC/USDT", "1s"))
                    await until(lambda: ex.stats.ws_streams_active == 1)
                    assert ex.faults.drop_connections(clean=clean) == 1
                    with pytest.raises(ccxt.NetworkError):
                        await asyncio.wait_for(watch, WS_WAIT)
                # the next watch reconnects and resubscribes
                watch = asyncio.ensure_future(pro.watch_ohlcv("BTC/USDT", "1s"))
                await until(lambda: ex.stats.ws_streams_active == 1)
                watch.cancel()
            finally:
                await pro.close()

        asyncio.run(main())
        assert ex.faults.counts["drop"] == 2
        assert ex.stats.ws_connections == 3
        eventually(lambda: ex.stats.ws_open == 0)


def test_stall_silences_the_stream_then_it_resumes():
    stall = 1.5
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=4) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            seen = record_messages(pro)
            try:
                await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                began = time.monotonic()
                ex.faults.stall(stall)
                while not seen or seen[-1][0] < began + stall:
                    await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                return began, seen
            finally:
                await pro.close()

        began, seen = asyncio.run(main())
        during = [t for t, _ in seen if began + 0.1 < t < began + stall - 0.05]
        assert during == []
        assert seen[-1][0] >= began + stall - 0.05  # messages resumed
        assert ex.faults.counts["stall"] == 1
        assert ex.stats.ws_messages_lost >= 2


def test_skip_final_hides_a_final_that_rest_still_has():
    pairs = [["BTC/USDT", "1s"], ["ETH/USDT", "1s"]]
    # what the client receives, not when: on the fast clock (5 candles a real second)
    with fast_exchange(timeframes=("1s",), updates_per_candle=2) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            seen = record_messages(pro)
            try:
                await asyncio.wait_for(pro.watch_ohlcv_for_symbols(pairs), WS_WAIT)
                ex.faults.skip_final(1, symbol="BTC/USDT")
                last = await watch_until(
                    pro, pairs, lambda last: all(len(last.get(s, ())) >= 4 for s, _ in pairs)
                )
                return last, seen
            finally:
                await pro.close()

        last, seen = asyncio.run(main())
        assert ex.faults.counts["skip_final"] == 1
        finals = {
            (m["s"], m["k"]["t"]) for m in klines(seen) if m["k"]["x"] and m["s"] == "BTCUSDT"
        }
        wrong = [
            t
            for t, row in closed_seen(last, "BTC/USDT").items()
            if row != ex.candle_at("BTC/USDT", "1s", t)
        ]
        assert len(wrong) == 1  # the client never saw that candle's final values ...
        assert ("BTCUSDT", wrong[0]) not in finals
        truth = ex.candle_at("BTC/USDT", "1s", wrong[0])  # ... but REST has them
        rest = ccxt.binance(ex.ccxt_config()).fetch_ohlcv("BTC/USDT", "1s", since=wrong[0], limit=1)
        assert rest == [truth]
        for t, row in closed_seen(last, "ETH/USDT").items():  # other symbols are untouched
            assert row == ex.candle_at("ETH/USDT", "1s", t)


def test_malformed_duplicate_and_out_of_order_frames_reach_the_client():
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=2) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            seen = record_messages(pro)
            try:
                await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                mark = len(seen)
                ex.faults.send_malformed(1)
                ex.faults.send_duplicate(1)
                ex.faults.send_out_of_order(1)
                deadline = time.monotonic() + WS_WAIT
                while len(klines(seen[mark:])) < 5:
                    assert time.monotonic() < deadline
                    await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                # the client survived all three
                rows = await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                assert rows and rows[-1][0] is not None
                return seen[mark:]
            finally:
                await pro.close()

        after = asyncio.run(main())
        messages = [m for _, m in after]
        assert any(isinstance(m, str) for m in messages)  # not JSON: handed over raw
        events = klines(after)
        assert any(a == b for a, b in zip(events[:-1], events[1:], strict=True))  # duplicate
        newest = [max(e["k"]["t"] for e in events[: i + 1]) for i in range(len(events))]
        assert any(e["k"]["t"] < newest[i - 1] for i, e in enumerate(events) if i)  # older one
        counts = ex.faults.counts
        assert (counts["malformed"], counts["duplicate"], counts["out_of_order"]) == (1, 1, 1)


def test_omit_empty_on_websocket():
    # which candles the stream carries, not when: on the fast clock (5 candles a real second)
    with fast_exchange(
        symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=2, empty_every=3
    ) as ex:
        ex.faults.omit_empty = True

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            seen = record_messages(pro)
            try:
                deadline = time.monotonic() + WS_WAIT
                while len({m["k"]["t"] for m in klines(seen)}) < 4:
                    assert time.monotonic() < deadline
                    await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
                return seen
            finally:
                await pro.close()

        events = klines(asyncio.run(main()))
        received = {e["k"]["t"] for e in events}
        lo, hi = min(received), max(received)
        served = {r[0] for r in ex.candles("BTC/USDT", "1s", lo, hi)}
        assert received - {hi} <= served
        assert len(range(lo, hi, 1000)) > len(served)  # at least one empty candle was skipped
        assert all(float(e["k"]["v"]) > 0 for e in events if e["k"]["x"])
        assert ex.faults.counts["omitted"] >= 1


def test_many_streams_share_one_connection():
    symbols = [f"SYM{i:03d}/USDT" for i in range(200)]
    ids = {s.replace("/", "") for s in symbols}
    pairs = [[s, "1s"] for s in symbols]
    with LocalExchange(symbols=symbols, timeframes=("1s",), history=10) as ex:

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            seen = record_messages(pro)
            try:
                # each resolve returns the symbol that fired first; all 200 streams arrive
                await asyncio.wait_for(pro.watch_ohlcv_for_symbols(pairs), WS_WAIT)
                await until(lambda: {m["s"] for m in klines(seen)} == ids)
            finally:
                await pro.close()

        asyncio.run(main())
        assert ex.stats.ws_connections == 1
        assert ex.stats.ws_streams_subscribed == 200


def test_custom_clock_drives_rest_and_stream():
    speed = 30.0  # a 1m candle lasts 2 s of real time
    base = time.time()
    origin = (base // 60 + 1) * 60 - 1.5  # 1.5 s (of exchange time) before a minute closes

    def clock():
        return origin + (time.time() - base) * speed

    with LocalExchange(
        symbols=("ETH/USDT",), timeframes=("1m",), updates_per_candle=2, clock=clock
    ) as ex:
        rest = ccxt.binance(ex.ccxt_config())
        assert abs(rest.fetch_time() - clock() * 1000) < 1000 * speed

        async def main():
            pro = ccxt.pro.binance(ex.ccxt_config())
            try:
                pairs = [["ETH/USDT", "1m"]]
                return await watch_until(
                    pro, pairs, lambda last: len(last.get("ETH/USDT", ())) >= 3, timeout=10
                )
            finally:
                await pro.close()

        last = asyncio.run(main())
        for t, row in closed_seen(last, "ETH/USDT").items():
            assert row == ex.candle_at("ETH/USDT", "1m", t)


# -- lifecycle ---------------------------------------------------------------------------------


def test_start_stop_closes_open_connections_and_threads():
    before = threading.active_count()
    ex = LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",))
    with pytest.raises(RuntimeError):
        ex.ccxt_config()
    ex.start()
    assert threading.active_count() == before + 1

    async def main():
        pro = ccxt.pro.binance(ex.ccxt_config())
        try:
            await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
            assert ex.stats.ws_open == 1
            await asyncio.get_running_loop().run_in_executor(None, ex.stop)
            with pytest.raises(ccxt.NetworkError):
                while True:
                    await asyncio.wait_for(pro.watch_ohlcv("BTC/USDT", "1s"), WS_WAIT)
        finally:
            await pro.close()

    asyncio.run(main())
    assert threading.active_count() == before
    ex.stop()  # idempotent
    assert ex.stats.ws_open == 0


def test_invalid_configuration_fails_fast():
    with pytest.raises(ValueError, match="1M"):
        LocalExchange(timeframes=("1M",))
    with pytest.raises(ValueError, match="symbol"):
        LocalExchange(symbols=("btcusdt",))
    with pytest.raises(ValueError, match="updates_per_candle"):
        LocalExchange(updates_per_candle=0)
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("5s",), clock=frozen_clock) as ex:
        assert ex.ccxt_config()["timeframes"] == {"5s": "5s"}
        with pytest.raises(ValueError):
            ex.faults.rest_errors("418")


def test_docs_code_blocks_run(capsys):
    blocks = re.findall(r"```python\n(.*?)```", DOCS.read_text(encoding="utf-8"), re.S)
    assert len(blocks) >= 4
    for block in blocks:
        exec(compile(block, str(DOCS), "exec"), {"__name__": "docs_example"})
    assert "retry after 2 s" in capsys.readouterr().out
