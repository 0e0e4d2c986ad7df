"""The local exchange's public trades over Binance's REST and streams, with the real ccxt and
ccxt.pro clients: the trades delivered aggregate to exactly ``ex.candles(...)``."""

from __future__ import annotations

import asyncio
import json
import threading
import time

import aiohttp
import ccxt
import ccxt.pro
import pytest
from helpers import eventually

from backtrader_ccxt.localexchange import LocalExchange
from backtrader_ccxt.localexchange.rehearsal import RehearsalExchange
from backtrader_ccxt.timeframes import parse
from backtrader_ccxt.trades import TradeBars, TradeGate, parse_trades

FROZEN = 1_700_000_030.5
WS_WAIT = 10.0


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() == before, timeout=5)


def frozen_clock():
    return FROZEN


def key(trades):
    return [(t["id"], t["timestamp"], t["price"], t["amount"], t["side"]) for t in trades]


def aggregate(raws, tf, now_ms, empty="skip"):
    """The package's own rules: parse, gate once by id, build bars closed by ``now_ms``."""
    good, bad = parse_trades(raws)
    assert bad == []
    gate, agg = TradeGate(), TradeBars(parse(tf), empty=empty)
    for t in gate.admit(good):
        assert agg.add(t)
    return [b.row() for b in agg.advance(now_ms)], gate


def walk_by_id(client, symbol, limit=1000):
    """fetch_trades paged by id (aggTrades ``fromId``) from the first trade until caught up."""
    out, next_id, pages = [], 0, 0
    while True:
        page = client.fetch_trades(symbol, limit=limit, params={"fromId": next_id})
        pages += 1
        if not page:
            return out, pages
        out += page
        next_id = int(page[-1]["id"]) + 1


@pytest.mark.parametrize("symbol", ["BTC/USDT", "SOL/USDT"])
def test_fetch_trades_paged_by_id_is_the_ledger_and_gives_the_candles(symbol):
    with LocalExchange(
        symbols=(symbol,), timeframes=("1s", "1m"), history=600, clock=frozen_clock
    ) as ex:
        assert ex.trades_timeframe == "1s"
        client = ccxt.binance(ex.ccxt_config())
        got, pages = walk_by_id(client, symbol, limit=1000)
        ledger = ex.trades(symbol)
        assert key(got) == key(ledger)
        assert pages > 2  # paged, not one answer
        bars, gate = aggregate(got, "1s", ex.now_ms())
        assert gate.gaps == []
        assert bars == ex.candles(symbol, "1s")
        # 1m bars from 1s trades are the resampling of the 1s candles
        one_s = ex.candles(symbol, "1s")
        m1, _ = aggregate(got, "1m", ex.now_ms())
        first = m1[0][0]
        group = [r for r in one_s if first <= r[0] < first + 60_000]
        assert m1[0][1:5] == [
            group[0][1],
            max(r[2] for r in group),
            min(r[3] for r in group),
            group[-1][4],
        ]


def test_a_time_window_returns_its_last_trades_so_since_does_not_start_at_since():
    with LocalExchange(symbols=("ETH/USDT",), timeframes=("1s",), clock=frozen_clock) as ex:
        client = ccxt.binance(ex.ccxt_config())
        since = ex.first_open_ms("1s")
        page = client.fetch_trades("ETH/USDT", since=since, limit=50)
        hour = ex.trades("ETH/USDT", since, since + 3_600_001)
        assert len(hour) > 50
        assert key(page) == key(hour[-50:])  # Binance's trap: the window's LAST trades
        assert page[0]["timestamp"] > since
        # startTime alone pages forward from it, as does fromId
        first = client.public_get_aggtrades({"symbol": "ETHUSDT", "startTime": since, "limit": 3})
        assert [int(r["a"]) for r in first] == [0, 1, 2]
        # recent trades and the historical endpoint (an API key, as ccxt demands)
        recent = client.fetch_trades(
            "ETH/USDT", limit=7, params={"fetchTradesMethod": "publicGetTrades"}
        )
        assert key(recent) == key(ex.trades("ETH/USDT")[-7:])
        client.apiKey = "not-checked"
        hist = client.fetch_trades(
            "ETH/USDT",
            limit=4,
            params={"fetchTradesMethod": "publicGetHistoricalTrades", "fromId": 10},
        )
        assert key(hist) == key(ex.trades("ETH/USDT")[10:14])


@pytest.mark.parametrize(
    "params, error",
    [
        ({"limit": 1001}, ccxt.BadRequest),
        ({"fromId": "x"}, ccxt.BadRequest),
        ({"symbol": "NOPE"}, ccxt.BadSymbol),
        ({"startTime": 2, "endTime": 1}, ccxt.ExchangeError),
    ],
)
def test_bad_trade_requests_get_binance_errors(params, error):
    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), clock=frozen_clock) as ex:
        client = ccxt.binance(ex.ccxt_config())
        with pytest.raises(error):
            client.public_get_aggtrades({"symbol": "BTCUSDT", **params})


async def _watch(ex, symbol, name, enough):
    """Watch trades of one stream kind until ``enough(trades)``; one instance per kind (ccxt.pro
    keys ``trade`` and ``aggTrade`` on one message hash)."""
    pro = ccxt.pro.binance(ex.ccxt_config())
    got: list = []
    try:
        async with asyncio.timeout(WS_WAIT):
            while not enough(got):
                got += [dict(t) for t in await pro.watch_trades(symbol, params={"name": name})]
    finally:
        await pro.close()
    return got


@pytest.mark.parametrize("name", ["trade", "aggTrade"])
def test_watch_trades_delivers_the_ledger_and_complete_candles_match(name):
    symbol = "BTC/USDT"
    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=10) as ex:

        def window(got):  # the two whole seconds after the first trade received
            lo = (got[0]["timestamp"] // 1000 + 1) * 1000
            return lo, lo + 2000

        def enough(got):
            return bool(got) and got[-1]["timestamp"] >= window(got)[1]

        got = asyncio.run(_watch(ex, symbol, name, enough))
        lo, hi = window(got)
        inside = [t for t in got if lo <= t["timestamp"] < hi]
        assert key(inside) == key(ex.trades(symbol, lo, hi))
        ids = [int(t["id"]) for t in got]
        assert ids == list(range(ids[0], ids[0] + len(ids)))  # every trade once, in order
        bars, _ = aggregate(inside, "1s", hi)
        assert bars == ex.candles(symbol, "1s", lo, hi)
        assert len(bars) == 2


def test_a_stall_loses_stream_trades_as_an_id_gap_that_rest_fills_by_id():
    symbol = "ETH/USDT"
    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=10) as ex:
        stalled = threading.Event()

        def enough(got):
            if got and not stalled.is_set():
                ex.faults.stall(0.6)  # frames meanwhile are lost, as on a real hang
                stalled.set()
            return bool(got) and got[-1]["timestamp"] > ex.now_ms() - 100 and len(got) > 20

        got = asyncio.run(_watch(ex, symbol, "trade", enough))
        good, _ = parse_trades(got)
        gate = TradeGate()
        delivered = gate.admit(good)
        assert gate.gaps, "the stall lost no trade"
        first, last = gate.gaps[0]
        # REST by id fills exactly the gap; the gate drops what the stream already gave
        client = ccxt.binance(ex.ccxt_config())
        fill = client.fetch_trades(symbol, limit=1000, params={"fromId": first})
        good, _ = parse_trades(fill)
        filled = gate.fill(good)
        assert [int(t.id) for t in filled] == list(range(first, last + 1))
        assert gate.gaps == [] and gate.fill(good) == []  # once
        ids = sorted(int(t.id) for t in delivered + filled)
        assert ids == list(range(ids[0], ids[-1] + 1))
        truth = {t["id"]: t for t in ex.trades(symbol)}
        assert all(truth[t.id]["price"] == t.price for t in delivered + filled)


def test_the_trades_timeframe_is_validated_and_served():
    with pytest.raises(ValueError, match="1M"):
        LocalExchange(trades_timeframe="1M")
    with LocalExchange(
        symbols=("BTC/USDT",),
        timeframes=("1m",),
        trades_timeframe="5s",
        history=300,
        clock=frozen_clock,
    ) as ex:
        assert ex.trades_timeframe == "5s"
        client = ccxt.binance(ex.ccxt_config())
        assert "5s" in client.timeframes
        got, _ = walk_by_id(client, "BTC/USDT")
        rows = client.fetch_ohlcv("BTC/USDT", "5s", since=ex.first_open_ms("5s"), limit=1000)
        bars, _ = aggregate(got, "5s", ex.now_ms())
        assert bars == ex.candles("BTC/USDT", "5s")
        assert rows[:-1] == bars  # what the venue's own 5s candles say; then the forming one
        assert rows[-1][0] == ex.now_ms() // 5000 * 5000


def test_raw_trade_streams_list_and_unsubscribe():
    async def session(ex):
        async with aiohttp.ClientSession() as http, http.ws_connect(ex.ws_url) as ws:

            async def ask(method, params, rid):
                await ws.send_str(json.dumps({"method": method, "params": params, "id": rid}))
                while True:
                    msg = json.loads((await ws.receive(timeout=WS_WAIT)).data)
                    if msg.get("id") == rid:
                        return msg

            assert (await ask("SUBSCRIBE", ["btcusdt@trade", "btcusdt@aggTrade"], 1)) == {
                "result": None,
                "id": 1,
            }
            kinds: dict = {}
            while not (kinds.get("trade") and kinds.get("aggTrade")):
                msg = json.loads((await ws.receive(timeout=WS_WAIT)).data)
                kinds.setdefault(msg["e"], []).append(msg)
            listed = await ask("LIST_SUBSCRIPTIONS", [], 2)
            assert sorted(listed["result"]) == ["btcusdt@aggTrade", "btcusdt@trade"]
            await ask("UNSUBSCRIBE", ["btcusdt@aggTrade"], 3)
            assert (await ask("LIST_SUBSCRIPTIONS", [], 4))["result"] == ["btcusdt@trade"]
            bad = await ask("SUBSCRIBE", ["btcusdt@depth"], 5)
            assert bad["error"]["code"] == 2
            return kinds

    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=10) as ex:
        kinds = asyncio.run(session(ex))
        truth = {t["id"]: t for t in ex.trades("BTC/USDT")}
        for msg in kinds["trade"]:
            t = truth[str(msg["t"])]
            assert (float(msg["p"]), float(msg["q"]), msg["T"]) == (
                t["price"],
                t["amount"],
                t["timestamp"],
            )
            assert msg["m"] == (t["side"] == "sell")
        for msg in kinds["aggTrade"]:
            assert msg["a"] == msg["f"] == msg["l"] and str(msg["a"]) in truth


def test_a_rehearsal_serves_trades_of_the_users_own_history():
    with LocalExchange(
        symbols=("ETH/USDT",), timeframes=("1m",), history=300, clock=frozen_clock
    ) as src:
        rows = src.candles("ETH/USDT", "1m")
    # the clock stands at the warmup's end until a client asks for candles
    with RehearsalExchange({"ETH/USDT": rows}, "1m", speed=600, warmup=100) as ex:
        assert ex.trades_timeframe == "1m"
        client = ccxt.binance(ex.ccxt_config())
        got, _ = walk_by_id(client, "ETH/USDT")
        assert key(got) == key(ex.trades("ETH/USDT"))
        bars, _ = aggregate(got, "1m", ex.now_ms())
        assert bars == ex.candles("ETH/USDT", "1m") == rows[:100]


# -- OKX v5 and Bybit v5 ----------------------------------------------------------------------


def test_okx_recent_and_history_trades_page_back_by_trade_id_to_the_ledger():
    symbol = "BTC/USDT"
    with LocalExchange(
        symbols=(symbol,), timeframes=("1s",), history=60, clock=frozen_clock, protocol="okx"
    ) as ex:
        client = ccxt.okx(ex.ccxt_config())
        ledger = ex.trades(symbol)
        assert len(ledger) > 300
        recent = client.fetch_trades(symbol, limit=300)
        assert key(recent) == key(ledger[-300:])  # market/trades: the newest (max 500)
        # ccxt's since does not page on OKX: it filters the newest page
        since = ledger[0]["timestamp"]
        assert key(client.fetch_trades(symbol, since=since, limit=100)) == key(ledger[-100:])
        # history-trades pages backwards: after = the oldest tradeId seen (max 100 a page)
        got, after, pages = [], None, 0
        while True:
            params = {"method": "publicGetMarketHistoryTrades", "type": "1"}
            if after is not None:
                params["after"] = after
            page = client.fetch_trades(symbol, limit=100, params=params)
            pages += 1
            if not page:
                break
            got = page + got
            after = page[0]["id"]
        assert key(got) == key(ledger) and pages > 5
        inst = {"instId": "BTC-USDT"}
        # before alone gives the newest, not the ones right after it (OKX's trap)
        newest = client.public_get_market_history_trades({**inst, "before": "5", "limit": "3"})
        assert [r["tradeId"] for r in newest["data"]] == [t["id"] for t in ledger[-3:][::-1]]
        # type=2: after is a timestamp
        ts = ledger[50]["timestamp"]
        by_ts = client.public_get_market_history_trades({**inst, "type": "2", "after": str(ts)})
        assert by_ts["data"][0]["tradeId"] == ledger[49]["id"]
        bars, _ = aggregate(got, "1s", ex.now_ms())
        assert bars == ex.candles(symbol, "1s")
        with pytest.raises(ccxt.BadSymbol):
            client.public_get_market_trades({"instId": "NOPE-USDT"})


def test_bybit_recent_trades_are_the_newest_sixty_and_nothing_older():
    symbol = "ETH/USDT"
    with LocalExchange(
        symbols=(symbol,), timeframes=("1s",), history=60, clock=frozen_clock, protocol="bybit"
    ) as ex:
        client = ccxt.bybit(ex.ccxt_config())
        ledger = ex.trades(symbol)
        assert key(client.fetch_trades(symbol)) == key(ledger[-60:])
        assert key(client.fetch_trades(symbol, limit=7)) == key(ledger[-7:])
        with pytest.raises(ccxt.BadRequest):
            client.fetch_trades(symbol, limit=61)  # spot: [1, 60]


async def _watch_venue(ex, symbol, enough, on_trade=None):
    pro = getattr(ccxt.pro, ex.protocol)(ex.ccxt_config())
    got: list = []
    try:
        async with asyncio.timeout(WS_WAIT):
            while not enough(got):
                for t in await pro.watch_trades(symbol):
                    got.append(dict(t))
                    if on_trade is not None:
                        on_trade(got)
    finally:
        await pro.close()
    return got


@pytest.mark.parametrize("protocol", ["okx", "bybit"])
def test_watch_trades_on_okx_and_bybit_is_the_ledger_with_lost_and_duplicated_trades(protocol):
    symbol = "BTC/USDT"
    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=10, protocol=protocol) as ex:
        asked = threading.Event()

        def on_trade(got):
            if not asked.is_set():
                asked.set()
                ex.faults.lose_trades(2)
                ex.faults.duplicate_trades(1)

        got = asyncio.run(_watch_venue(ex, symbol, lambda g: len(g) >= 12, on_trade))
        assert ex.faults.counts["trades_lost"] == 2
        assert ex.faults.counts["trades_duplicated"] == 1
        ids = [int(t["id"]) for t in got]
        truth = {t["id"]: t for t in ex.trades(symbol)}
        assert all(key([truth[t["id"]]]) == key([t]) for t in got)  # the ledger's trades
        assert len(ids) - len(set(ids)) == 1  # one duplicate
        span = range(ids[0], ids[-1] + 1)
        assert sorted(set(span) - set(ids)) and len(set(span) - set(ids)) == 2  # an id gap


def test_a_cut_in_the_middle_of_a_burst_drops_every_connection_once():
    symbol = "BTC/USDT"
    t0 = time.time()

    def fast():  # ten times fast: every timer wake-up sends a burst of trades
        return t0 + (time.time() - t0) * 10

    with LocalExchange(symbols=(symbol,), timeframes=("1s",), history=10, clock=fast) as ex:
        armed = threading.Event()

        def on_trade(got):
            if not armed.is_set():
                armed.set()
                ex.faults.drop_in_burst(4)

        async def watch():
            pro = ccxt.pro.binance(ex.ccxt_config())
            got, broke = [], 0
            try:
                async with asyncio.timeout(WS_WAIT):
                    while not (broke and len(got) > 40):
                        try:
                            got += [dict(t) for t in await pro.watch_trades(symbol)]
                        except ccxt.NetworkError:
                            broke += 1
                        on_trade(got)
            finally:
                await pro.close()
            return got, broke

        got, broke = asyncio.run(watch())
        assert broke == 1 and ex.faults.counts["burst_drop"] == 1
        ids = [int(t["id"]) for t in got]
        assert ids == sorted(set(ids))  # the half that was sent came in order
        assert ex.faults.counts["drop"] >= 1
