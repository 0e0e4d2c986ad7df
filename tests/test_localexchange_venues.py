"""The local exchange on every protocol (Binance, OKX v5, Bybit v5), exercised with the real
ccxt / ccxt.pro clients and with a plain WebSocket client reading the raw frames.

The venues' formats are read here independently of the server's code (``VENUES``), from
the recorded messages in ``../shared/data/messages`` and ccxt's parsers.
"""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import threading
import time
import urllib.request
from dataclasses import dataclass

import aiohttp
import ccxt
import ccxt.pro
import pytest
import warmpython
from helpers import eventually

from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.localexchange import LocalExchange
from backtrader_ccxt.localexchange.data import parse_timeframe
from backtrader_ccxt.localexchange.timing import FINAL, PARTIAL, Event, Timing

PROTOCOLS = ("binance", "okx", "bybit")
SPEED = 5  # fast clock: a 1s candle lasts 200 ms of real time
WS_WAIT = 5.0  # seconds any single WebSocket wait may take
SYMBOLS = ("BTC/USDT", "ETH/USDT")


def fast_clock(speed: float = SPEED):
    base, t0 = time.time(), time.monotonic()
    return lambda: base + (time.monotonic() - t0) * speed


def frozen_at_now():
    now = time.time()  # ccxt's OKX picks its endpoint from its own clock: stay near it
    return lambda: now


@pytest.fixture(autouse=True)
def no_leftover_threads():
    before = threading.active_count()
    yield
    eventually(lambda: threading.active_count() == before, timeout=5)


# -- the venues' formats, as the tests read them ----------------------------------------------


@dataclass(frozen=True)
class Frame:
    symbol: str
    open_ms: int
    final: bool
    ohlcv: list  # [open_ms, o, h, l, c, v] floats
    event_ms: int | None


def _sym(market_id: str) -> str:
    for s in (*SYMBOLS, "SYM007/USDT"):
        if market_id in (s.replace("/", ""), s.replace("/", "-")):
            return s
    raise AssertionError(f"unknown market id {market_id!r}")


def parse_binance(msg) -> Frame | None:
    if not isinstance(msg, dict) or msg.get("e") != "kline" or "t" not in msg.get("k", {}):
        return None
    k = msg["k"]
    vals = [float(k[f]) for f in "ohlcv"]
    return Frame(_sym(k["s"]), k["t"], k["x"], [k["t"], *vals], msg["E"])


def parse_okx(msg) -> Frame | None:
    if not isinstance(msg, dict) or "arg" not in msg or "data" not in msg or not msg["data"][0]:
        return None
    row = msg["data"][0]
    assert len(row) == 9 and all(isinstance(x, str) for x in row), row
    assert row[8] in ("0", "1")
    t = int(row[0])
    return Frame(_sym(msg["arg"]["instId"]), t, row[8] == "1", [t, *map(float, row[1:6])], None)


def parse_bybit(msg) -> Frame | None:
    if not isinstance(msg, dict) or not str(msg.get("topic", "")).startswith("kline."):
        return None
    if not msg["data"][0]:
        return None
    d = msg["data"][0]
    assert msg["type"] == "snapshot" and msg["ts"] == d["timestamp"]
    assert set(d) == {
        "start", "end", "interval", "open", "close", "high", "low", "volume", "turnover",
        "confirm", "timestamp",
    }  # fmt: skip
    vals = [float(d[f]) for f in ("open", "high", "low", "close", "volume")]
    sym = _sym(msg["topic"].split(".")[2])
    assert d["end"] == d["start"] + 999 or d["end"] > d["start"]
    return Frame(sym, d["start"], d["confirm"], [d["start"], *vals], d["timestamp"])


def sub_binance(pairs, op="subscribe", rid=1):
    names = [f"{s.replace('/', '').lower()}@kline_{tf}" for s, tf in pairs]
    return {"method": op.upper(), "params": names, "id": rid}


def sub_okx(pairs, op="subscribe", rid=1):
    return {
        "op": op,
        "args": [{"channel": "candle" + tf, "instId": s.replace("/", "-")} for s, tf in pairs],
    }


def sub_bybit(pairs, op="subscribe", rid=1):
    topics = [f"kline.{tf}.{s.replace('/', '')}" for s, tf in pairs]
    return {"op": op, "args": topics, "req_id": str(rid)}


def replies_binance(msgs, pairs, op, rid=1) -> bool:
    return {"result": None, "id": rid} in msgs


def replies_okx(msgs, pairs, op, rid=1) -> bool:
    events = [m for m in msgs if isinstance(m, dict) and m.get("event") == op]
    args = [{"channel": "candle" + tf, "instId": s.replace("/", "-")} for s, tf in pairs]
    for m in events:
        assert set(m) == {"event", "arg", "connId"} and isinstance(m["connId"], str)
    return all(any(m["arg"] == a for m in events) for a in args)


def replies_bybit(msgs, pairs, op, rid=1) -> bool:
    for m in msgs:
        if isinstance(m, dict) and m.get("op") == op and m.get("req_id") == str(rid):
            assert m["success"] is True and m["ret_msg"] == "" and isinstance(m["conn_id"], str)
            return True
    return False


def is_error_binance(m) -> bool:
    return isinstance(m, dict) and m.get("error", {}).get("code") == 2


def is_error_okx(m) -> bool:
    return isinstance(m, dict) and m.get("event") == "error" and m.get("code") == "60018"


def is_error_bybit(m) -> bool:
    return isinstance(m, dict) and m.get("success") is False and m.get("op") == "subscribe"


@dataclass(frozen=True)
class Venue:
    parse: object
    subscribe: object
    replied: object
    is_error: object
    ping: str | None  # the venue's text ping (None: protocol-level ping frames)
    ccxt_class: str
    page_limit: int  # rows per fetch_ohlcv page ccxt may ask for
    candle_paths: tuple[str, ...]


VENUES = {
    "binance": Venue(
        parse_binance, sub_binance, replies_binance, is_error_binance, None, "binance", 1000,
        ("/api/v3/klines",),
    ),
    "okx": Venue(
        parse_okx, sub_okx, replies_okx, is_error_okx, "ping", "okx", 300,
        ("/api/v5/market/history-candles", "/api/v5/market/candles"),
    ),
    "bybit": Venue(
        parse_bybit, sub_bybit, replies_bybit, is_error_bybit, '{"op":"ping","req_id":"p1"}',
        "bybit", 1000, ("/v5/market/kline",),
    ),
}  # fmt: skip


class Raw:
    """A plain aiohttp WebSocket client that records every decoded message."""

    def __init__(self, ws, venue: Venue):
        self.ws = ws
        self.venue = venue
        self.log: list = []  # (monotonic, text, json-or-None)

    async def send(self, obj) -> None:
        await self.ws.send_str(obj if isinstance(obj, str) else json.dumps(obj))

    async def recv(self):
        msg = await asyncio.wait_for(self.ws.receive(), WS_WAIT)
        if msg.type != aiohttp.WSMsgType.TEXT:
            return msg
        try:
            obj = json.loads(msg.data)
        except ValueError:
            obj = None
        self.log.append((time.monotonic(), msg.data, obj))
        return obj if obj is not None else msg.data

    async def until(self, cond, timeout: float = WS_WAIT):
        deadline = time.monotonic() + timeout
        while not cond():
            assert time.monotonic() < deadline, "condition not met on the raw stream"
            got = await self.recv()
            if isinstance(got, aiohttp.WSMessage):
                raise AssertionError(f"stream ended: {got}")

    def frames(self, since: int = 0) -> list[Frame]:
        out = []
        for _, _, obj in self.log[since:]:
            f = self.venue.parse(obj)
            if f is not None:
                out.append(f)
        return out

    def finals(self, symbol: str, since: int = 0) -> list[Frame]:
        return [f for f in self.frames(since) if f.final and f.symbol == symbol]


def walk_urls(obj):
    if isinstance(obj, dict):
        for v in obj.values():
            yield from walk_urls(v)
    elif isinstance(obj, list):
        for v in obj:
            yield from walk_urls(v)
    elif isinstance(obj, str) and obj.startswith(("http", "ws")):
        yield obj


# -- the frame schedule (pure) ----------------------------------------------------------------


def test_schedule_puts_each_venues_final_where_the_venue_does():
    tf = parse_timeframe("1m")
    offsets = [0, 27_000]  # two partial updates
    binance = Timing()
    assert binance.schedule(tf, offsets, 5) == [
        Event(0, FINAL), Event(0, PARTIAL, 0), Event(27_000, PARTIAL, 1),
    ]  # fmt: skip
    okx = Timing(late_final_every=3)
    # candle 6's final (sent in period 7) comes after candle 7's first update
    assert okx.schedule(tf, offsets, 7) == [
        Event(0, PARTIAL, 0), Event(13_500, FINAL), Event(27_000, PARTIAL, 1),
    ]  # fmt: skip
    assert okx.schedule(tf, offsets, 8)[0] == Event(0, FINAL)
    bybit = Timing(final_delay_ms=450)
    assert bybit.schedule(tf, offsets, 5)[:2] == [Event(450, FINAL), Event(450, PARTIAL, 0)]
    # a fast candle keeps its shape: the delay is at most 5% of it
    assert bybit.schedule(parse_timeframe("1s"), [0, 450], 5)[0] == Event(50, FINAL)


# -- configuration ----------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ccxt_config_points_every_url_at_the_local_server(protocol):
    with LocalExchange(protocol=protocol, timeframes=("1s", "1m"), clock=frozen_at_now()) as ex:
        config = ex.ccxt_config()
        here = f"127.0.0.1:{ex.port}"
        assert all(here in url for url in walk_urls(config["urls"]))
        assert config["options"]["fetchMarkets"] == {"types": ["spot"]}
        assert config["options"]["defaultType"] == "spot"
        # 1s is Binance's own; OKX and Bybit get it as an extra timeframe
        assert ("timeframes" in config) == (protocol != "binance")
        venue = VENUES[protocol]
        for cls in (getattr(ccxt, venue.ccxt_class), getattr(ccxt.pro, venue.ccxt_class)):
            exchange = cls(config)
            assert all(here in url for url in walk_urls(exchange.urls["api"]))
            assert "1s" in exchange.timeframes and "1m" in exchange.timeframes
        assert ex.ws_url.startswith(f"ws://{here}/")


def test_unknown_protocol_fails_fast_naming_the_choices():
    with pytest.raises(ConfigurationError, match="binance, okx, bybit.*'kraken'"):
        LocalExchange(protocol="kraken")
    with pytest.raises(ValueError, match="late_final_every"):
        LocalExchange(protocol="okx", late_final_every=-1)


def test_cli_prints_the_config_of_the_chosen_protocol():
    proc = warmpython.Popen(
        [sys.executable, "-m", "backtrader_ccxt.localexchange", "--protocol", "okx"],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        lines = []
        for line in proc.stdout:
            lines.append(line)
            if line.startswith("Serving"):
                break
        text = "".join(lines)
        config = json.loads(text[text.index("{") : text.rindex("}") + 1])
        assert config["urls"]["api"]["ws"].endswith("/ws/v5")
        assert "ccxt.okx(config)" in text and "/ws/v5/business" in text
    finally:
        proc.terminate()
        proc.wait(timeout=10)
        proc.stdout.close()


# -- REST -------------------------------------------------------------------------------------


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_markets_time_and_paged_history_equal_the_ground_truth(protocol):
    venue = VENUES[protocol]
    symbols = ("BTC/USDT", "ETH/USDT", "SYM007/USDT")
    with LocalExchange(
        protocol=protocol, symbols=symbols, timeframes=("1m",), history=3000,
        clock=frozen_at_now(),
    ) as ex:  # fmt: skip
        exchange = getattr(ccxt, venue.ccxt_class)({**ex.ccxt_config(), "enableRateLimit": False})
        markets = exchange.load_markets()
        assert set(markets) == set(symbols)
        btc = markets["BTC/USDT"]
        assert btc["spot"] and btc["active"] and btc["type"] == "spot"
        assert btc["id"] == ("BTC-USDT" if protocol == "okx" else "BTCUSDT")
        assert btc["precision"]["price"] == 0.01
        assert exchange.fetch_time() == ex.now_ms()
        ex.reset_stats()
        for symbol in ("BTC/USDT", "SYM007/USDT"):
            rows: list = []
            since = ex.first_open_ms("1m")
            forming_open = ex.forming(symbol, "1m")[0]
            while True:
                page = exchange.fetch_ohlcv(symbol, "1m", since=since, limit=venue.page_limit)
                assert page, f"empty page at {since}"
                assert [r[0] for r in page] == sorted(r[0] for r in page)
                rows += page
                if page[-1][0] >= forming_open:
                    break
                since = page[-1][0] + 60_000
            # no gap, no duplicate: every closed candle once, then the forming one
            assert rows[:-1] == ex.candles(symbol, "1m")
            assert rows[-1] == ex.forming(symbol, "1m")
            assert len(rows) == 3001
        pages = sum(ex.stats.rest_by_path.get(p, 0) for p in venue.candle_paths)
        assert pages == 2 * math.ceil(3001 / venue.page_limit)
        if protocol == "okx":  # ccxt uses OKX's history endpoint for old candles only
            assert ex.stats.rest_by_path["/api/v5/market/history-candles"] >= 2
            assert ex.stats.rest_by_path["/api/v5/market/candles"] >= 2


def _get(url: str):
    try:
        with urllib.request.urlopen(url, timeout=5) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def test_okx_rest_rows_are_newest_first_strings_with_confirm():
    with LocalExchange(protocol="okx", timeframes=("1m",), clock=frozen_at_now()) as ex:
        status, body = _get(f"{ex.rest_url}/api/v5/market/candles?instId=BTC-USDT&bar=1m&limit=5")
        assert status == 200 and body["code"] == "0" and body["msg"] == ""
        data = body["data"]
        assert [int(r[0]) for r in data] == sorted((int(r[0]) for r in data), reverse=True)
        assert [r[8] for r in data] == ["0", "1", "1", "1", "1"]  # the forming candle first
        assert all(len(r) == 9 and all(isinstance(x, str) for x in r) for r in data)
        newest = data[0]
        assert [int(newest[0]), *map(float, newest[1:6])] == ex.forming("BTC/USDT", "1m")
        # after/before are exclusive; history-candles has closed candles only
        t = int(data[2][0])
        _, body = _get(
            f"{ex.rest_url}/api/v5/market/history-candles?instId=BTC-USDT&bar=1m"
            f"&after={t + 60_000}&before={t - 120_000}"
        )
        assert [int(r[0]) for r in body["data"]] == [t, t - 60_000]
        _, body = _get(f"{ex.rest_url}/api/v5/market/history-candles?instId=BTC-USDT&limit=2")
        assert [r[8] for r in body["data"]] == ["1", "1"]
        # market/candles keeps only the newest 1440 candles
        oldest = ex.first_open_ms("1m")
        _, body = _get(
            f"{ex.rest_url}/api/v5/market/candles?instId=BTC-USDT&after={oldest + 600_000}"
        )
        assert body["data"] == []
        _, body = _get(f"{ex.rest_url}/api/v5/public/time")
        assert body["data"] == [{"ts": str(ex.now_ms())}]


def test_bybit_rest_rows_are_newest_first_in_the_v5_envelope():
    with LocalExchange(protocol="bybit", timeframes=("1m",), clock=frozen_at_now()) as ex:
        status, body = _get(
            f"{ex.rest_url}/v5/market/kline?category=spot&symbol=BTCUSDT&interval=1&limit=3"
        )
        assert status == 200
        assert set(body) == {"retCode", "retMsg", "result", "retExtInfo", "time"}
        assert body["retCode"] == 0 and body["retMsg"] == "OK"
        rows = body["result"]["list"]
        assert body["result"]["symbol"] == "BTCUSDT" and body["result"]["category"] == "spot"
        assert all(len(r) == 7 and all(isinstance(x, str) for x in r) for r in rows)
        assert [int(r[0]) for r in rows] == sorted((int(r[0]) for r in rows), reverse=True)
        assert [int(rows[0][0]), *map(float, rows[0][1:6])] == ex.forming("BTC/USDT", "1m")
        # start picks the candle containing it and the ones after, up to limit
        t = int(rows[2][0])
        _, body = _get(
            f"{ex.rest_url}/v5/market/kline?category=spot&symbol=BTCUSDT&interval=1"
            f"&start={t - 59_999}&limit=2"
        )
        assert [int(r[0]) for r in body["result"]["list"]] == [t, t - 60_000]
        _, body = _get(f"{ex.rest_url}/v5/market/time")
        assert body["time"] == ex.now_ms()
        assert body["result"]["timeSecond"] == str(ex.now_ms() // 1000)


# what ccxt 4.5.90 raises for each venue's answer
ERRORS = {
    "binance": {"429": ccxt.DDoSProtection, "busy": ccxt.OperationFailed},
    "okx": {"429": ccxt.RateLimitExceeded, "busy": ccxt.ExchangeNotAvailable},
    "bybit": {"429": ccxt.RateLimitExceeded, "busy": ccxt.ExchangeError},
}
BUSY = {  # HTTP status and body of the venue's "try again later"
    "binance": (503, {"code": -1001}),
    "okx": (200, {"code": "50013", "data": []}),
    "bybit": (200, {"retCode": 10016, "retMsg": "System error. Please try again later."}),
}
TIME_PATH = {"binance": "/api/v3/time", "okx": "/api/v5/public/time", "bybit": "/v5/market/time"}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_rest_errors_in_the_venues_format_and_what_ccxt_raises(protocol):
    venue = VENUES[protocol]
    with LocalExchange(protocol=protocol, timeframes=("1m",), clock=frozen_at_now()) as ex:
        exchange = getattr(ccxt, venue.ccxt_class)({**ex.ccxt_config(), "timeout": 300})
        exchange.load_markets()
        # a symbol the venue does not list, sent as a raw id past ccxt's own market check
        exchange.markets["BTC/USDT"]["id"] = "XXX-YYY" if protocol == "okx" else "XXXYYY"
        with pytest.raises(ccxt.BadSymbol):
            exchange.fetch_ohlcv("BTC/USDT", "1m")
        exchange.load_markets(reload=True)
        with pytest.raises(ccxt.BadRequest):
            exchange.fetch_ohlcv("BTC/USDT", "1M")  # calendar month: not served

        ex.faults.rest_errors("429", retry_after=2, path=TIME_PATH[protocol])
        with pytest.raises(ERRORS[protocol]["429"]):
            exchange.fetch_time()
        headers = {k.lower(): v for k, v in exchange.last_response_headers.items()}
        assert headers["retry-after"] == "2"

        ex.faults.rest_errors("busy")
        with pytest.raises(ERRORS[protocol]["busy"]):
            exchange.fetch_time()
        ex.faults.rest_errors("busy")
        status, body = _get(ex.rest_url + TIME_PATH[protocol])
        want_status, want_body = BUSY[protocol]
        assert status == want_status and want_body.items() <= body.items()

        ex.faults.rest_errors("5xx", status=502)
        with pytest.raises(ccxt.ExchangeNotAvailable):
            exchange.fetch_time()
        ex.faults.rest_errors("timeout", hold=1.0)
        with pytest.raises(ccxt.RequestTimeout):
            exchange.fetch_time()
        ex.faults.rest_errors("truncated")
        assert exchange.fetch_time() is None  # ccxt does not notice a cut body

        counts = ex.faults.counts
        assert counts["rest_429"] == 1 and counts["rest_busy"] == 2 and counts["rest_5xx"] == 1
        assert counts["rest_timeout"] == 1 and counts["rest_truncated"] == 1
        logged = [kind for _, _, kind in ex.stats.snapshot()["rest_log"] if kind]
        assert logged == ["429", "busy", "busy", "5xx", "timeout", "truncated"]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_omit_and_make_empty_on_rest(protocol):
    venue = VENUES[protocol]
    with LocalExchange(
        protocol=protocol, symbols=("BTC/USDT",), timeframes=("1m",), history=50,
        clock=frozen_at_now(),
    ) as ex:  # fmt: skip
        exchange = getattr(ccxt, venue.ccxt_class)(ex.ccxt_config())
        first = ex.first_open_ms("1m")
        ex.faults.make_empty("BTC/USDT", "1m", first + 10 * 60_000)
        full = exchange.fetch_ohlcv("BTC/USDT", "1m", since=first, limit=60)
        assert full[10][5] == 0 and full[10][1] == full[10][4] == full[9][4]
        ex.faults.omit_empty = True
        rows = exchange.fetch_ohlcv("BTC/USDT", "1m", since=first, limit=60)
        assert [r[0] for r in rows] == [r[0] for r in full if r[0] != first + 10 * 60_000]
        assert rows[:-1] == ex.candles("BTC/USDT", "1m")
        assert ex.faults.counts["omitted"] == 1


# -- WebSocket --------------------------------------------------------------------------------


def _run_raw(ex, protocol, body, **connect):
    async def main():
        async with aiohttp.ClientSession() as session:
            async with session.ws_connect(ex.ws_url, **connect) as ws:
                return await body(Raw(ws, VENUES[protocol]))

    return asyncio.run(main())


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_raw_stream_partials_finals_replies_and_keepalive(protocol):
    venue = VENUES[protocol]
    pairs = [(s, "1s") for s in SYMBOLS]
    heard: list = []
    with LocalExchange(
        protocol=protocol, symbols=SYMBOLS, timeframes=("1s",), updates_per_candle=3,
        clock=fast_clock(), poll_interval=0.005, ping_interval=0.2,
    ) as ex:  # fmt: skip
        ex.add_frame_listener(heard.append)

        async def body(raw: Raw):
            await raw.send(venue.subscribe([("NOPE/USDT", "1s")], rid=7))
            await raw.until(lambda: any(venue.is_error(o) for _, _, o in raw.log))
            await raw.send(venue.subscribe(pairs, rid=1))
            await raw.until(lambda: venue.replied([o for _, _, o in raw.log], pairs, "subscribe"))
            await raw.until(lambda: all(len(raw.finals(s)) >= 5 for s in SYMBOLS))
            # the venue's keepalive is answered
            pings = ex.stats.ws_client_pings
            if venue.ping is None:
                await raw.ws.ping()
            else:
                await raw.send(venue.ping)
                pong = "pong" if protocol == "okx" else None
                await raw.until(
                    lambda: any(
                        t == pong or (isinstance(o, dict) and o.get("ret_msg") == "pong")
                        for _, t, o in raw.log
                    )
                )
            eventually(lambda: ex.stats.ws_client_pings == pings + 1)
            # unsubscribe one stream: nothing of it after the reply
            await raw.send(venue.subscribe(pairs[1:], op="unsubscribe", rid=2))
            n = len(raw.log)
            await raw.until(
                lambda: venue.replied(
                    [o for _, _, o in raw.log[n:]], pairs[1:], "unsubscribe", rid=2
                )
            )
            mark = len(raw.log)
            await raw.until(lambda: len(raw.finals("BTC/USDT", mark)) >= 2)
            assert not [f for f in raw.frames(mark) if f.symbol == "ETH/USDT"]
            return raw.frames()

        frames = _run_raw(ex, protocol, body)
        assert ex.stats.ws_pings_sent >= 1 and ex.stats.ws_pongs_received >= 1
        assert ex.stats.ws_connections == 1 and ex.stats.ws_subscribe_messages == 2

    for symbol in SYMBOLS:
        mine = [f for f in frames if f.symbol == symbol]
        first_final = next(i for i, f in enumerate(mine) if f.final)
        finals = [f for f in mine[first_final:] if f.final]
        assert len(finals) >= 4
        for fin in finals:
            t = fin.open_ms
            # the final carries the real candle
            assert fin.ohlcv == ex.candle_at(symbol, "1s", t)
            partials = [f for f in mine if f.open_ms == t and not f.final]
            assert len([f for f in mine if f.open_ms == t and f.final]) == 1
            i_final = mine.index(fin)
            i_next = next((i for i, f in enumerate(mine) if f.open_ms == t + 1000), None)
            late = protocol == "okx" and (t // 1000) % 3 == 0
            if i_next is not None and partials:  # subscribed before the close
                # OKX: every 3rd final comes after the successor's first update
                assert (i_next < i_final) == late, (protocol, t, late)
            if protocol == "bybit":
                assert fin.event_ms > t + 999  # shortly after `end`
                if partials and (t // 1000) % 6 != 0:
                    assert partials[-1].ohlcv == fin.ohlcv  # repeats the last partial
            # partials: the open is fixed, the range inside the final's
            assert all(p.ohlcv[1] == fin.ohlcv[1] for p in partials)
            assert all(fin.ohlcv[3] <= p.ohlcv[3] <= p.ohlcv[2] <= fin.ohlcv[2] for p in partials)

    # the frame hook saw every candle frame, with the flags sent
    # (every frame the client read was written; frames still queued at shutdown were not)
    assert len(frames) <= len(heard) <= ex.stats.ws_klines_sent
    assert {h.protocol for h in heard} == {protocol}
    sent_finals = {(h.symbol, h.open_ms) for h in heard if h.final}
    assert {(f.symbol, f.open_ms) for f in frames if f.final} == sent_finals
    assert all(h.kind == "update" and h.timeframe == "1s" for h in heard)


@pytest.mark.parametrize("protocol", ["okx", "binance"])
def test_late_finals_are_switchable(protocol):
    """OKX's late finals can be turned off, and turned on for any protocol."""
    venue = VENUES[protocol]
    with LocalExchange(
        protocol=protocol, symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=2,
        clock=fast_clock(), poll_interval=0.005,
        late_final_every=0 if protocol == "okx" else 1,
    ) as ex:  # fmt: skip
        late_wanted = protocol == "binance"

        async def body(raw: Raw):
            await raw.send(venue.subscribe([("BTC/USDT", "1s")]))
            await raw.until(lambda: len(raw.finals("BTC/USDT")) >= 6)
            return raw.frames()

        frames = _run_raw(ex, protocol, body)
        checked = 0
        for i, f in enumerate(frames):
            if f.final:
                nxt = next((j for j, g in enumerate(frames) if g.open_ms == f.open_ms + 1000), None)
                seen_open = any(g.open_ms == f.open_ms and not g.final for g in frames)
                if nxt is not None and seen_open:
                    assert (nxt < i) == late_wanted
                    checked += 1
        assert checked >= 3
        assert ex.late_final_every == (1 if late_wanted else 0)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_stream_faults_in_the_venues_format(protocol):
    venue = VENUES[protocol]
    sym = "BTC/USDT"
    with LocalExchange(
        protocol=protocol, symbols=(sym,), timeframes=("1s",), updates_per_candle=2,
        clock=fast_clock(), poll_interval=0.005,
    ) as ex:  # fmt: skip

        async def body(raw: Raw):
            await raw.send(venue.subscribe([(sym, "1s")]))
            await raw.until(lambda: len(raw.finals(sym)) >= 1)

            # duplicate: the next candle frame twice in a row
            n = len(raw.log)
            ex.faults.send_duplicate()
            await raw.until(lambda: len(raw.frames(n)) >= 3)
            texts = [t for _, t, o in raw.log[n:] if venue.parse(o)]
            assert any(a == b for a, b in zip(texts, texts[1:], strict=False))

            # out of order: after a frame, the previous candle's last partial
            n = len(raw.log)
            ex.faults.send_out_of_order()
            await raw.until(lambda: len(raw.frames(n)) >= 4)
            seq = raw.frames(n)
            older = [
                (a, b) for a, b in zip(seq, seq[1:], strict=False) if b.open_ms == a.open_ms - 1000
            ]
            assert len(older) == 1 and not older[0][1].final

            # malformed frames, each before a candle frame
            n = len(raw.log)
            for kind in ("text", "json", "kline"):
                ex.faults.send_malformed(kind=kind)
            await raw.until(lambda: ex.faults.counts["malformed"] == 3 and len(raw.log) >= n + 6)
            bad = [(t, o) for _, t, o in raw.log[n:] if venue.parse(o) is None]
            assert bad[0] == ("malformed frame", None)
            assert bad[1][1] is None and bad[1][0].startswith("{")  # cut JSON
            assert isinstance(bad[2][1], dict)  # the venue's push without candle fields
            assert (bad[2][1].get("e"), "arg" in bad[2][1], "topic" in bad[2][1]) == {
                "binance": ("kline", False, False),
                "okx": (None, True, False),
                "bybit": (None, False, True),
            }[protocol]

            # skip_final: one close without its final, REST still has the candle
            n = len(raw.log)
            ex.faults.skip_final()
            await raw.until(lambda: ex.faults.counts["skip_final"] == 1)
            await raw.until(lambda: len(raw.finals(sym, n)) >= 2)
            opens = sorted({f.open_ms for f in raw.frames()})
            finals = {f.open_ms for f in raw.finals(sym)}
            no_final = [t for t in opens[:-1] if t not in finals]  # the last one is forming
            assert len(no_final) == 1 and ex.candle_at(sym, "1s", no_final[0]) is not None

            # stall: silence (frames lost), then the stream resumes
            ex.faults.stall(1.0)  # exchange seconds: 0.2 s here
            eventually(lambda: ex.stats.ws_messages_lost >= 1)
            n = len(raw.log)
            await raw.until(lambda: len(raw.finals(sym, n)) >= 1)

            # omit_empty: a candle without trades is not streamed at all
            target = ex.forming(sym, "1s")[0] + 2000
            ex.faults.make_empty(sym, "1s", target)
            ex.faults.omit_empty = True
            # (OKX may send a final after the successor's first push: read one candle more)
            await raw.until(lambda: any(f.open_ms > target + 1000 for f in raw.frames()))
            assert not [f for f in raw.frames() if f.open_ms == target]
            assert ex.faults.counts["omitted"] == 1  # its final, withheld
            ex.faults.omit_empty = False

            # drop: the server cuts the connection
            assert ex.faults.drop_connections() == 1
            while True:
                got = await raw.recv()
                if isinstance(got, aiohttp.WSMessage):
                    assert got.type in (aiohttp.WSMsgType.CLOSED, aiohttp.WSMsgType.ERROR)
                    break

        _run_raw(ex, protocol, body)
        counts = ex.faults.counts
        assert counts["duplicate"] == 1 and counts["out_of_order"] == 1
        assert counts["stall"] == 1 and counts["drop"] == 1 and counts["skip_final"] == 1


async def until(cond, timeout: float = WS_WAIT) -> None:
    """Async polling with a deadline, for conditions set by another task or thread."""
    deadline = time.monotonic() + timeout
    while not cond():
        assert time.monotonic() < deadline, f"condition not met within {timeout}s"
        await asyncio.sleep(0.005)


def _watch_config(ex) -> dict:
    # ccxt.pro pings every 150 ms: each ping must be answered or ccxt gives up after 2 misses
    return {**ex.ccxt_config(), "streaming": {"keepAlive": 150}}


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_ccxt_pro_watches_many_symbols_on_one_connection(protocol):
    venue = VENUES[protocol]
    symbols = ("BTC/USDT", "ETH/USDT", "SYM007/USDT")
    pairs = [[s, "1s"] for s in symbols]
    with LocalExchange(
        protocol=protocol, symbols=symbols, timeframes=("1s",), updates_per_candle=2,
        clock=fast_clock(), poll_interval=0.005,
    ) as ex:  # fmt: skip

        async def main():
            pro = getattr(ccxt.pro, venue.ccxt_class)(_watch_config(ex))
            raw: list = []  # what ccxt's handle_ohlcv was given, with its cache right after
            original = pro.handle_ohlcv

            def handle_ohlcv(client, message):
                original(client, message)
                frame = venue.parse(message)
                if frame is not None:
                    cached = pro.ohlcvs[frame.symbol]["1s"].hashmap.get(frame.open_ms)
                    raw.append((frame, list(cached)))

            pro.handle_ohlcv = handle_ohlcv
            resolved: set = set()
            try:
                deadline = time.monotonic() + 3 * WS_WAIT
                while resolved != set(symbols) or not all(
                    sum(f.final and f.symbol == s for f, _ in raw) >= 3 for s in symbols
                ):
                    assert time.monotonic() < deadline, "finals did not arrive"
                    result = await asyncio.wait_for(pro.watch_ohlcv_for_symbols(pairs), WS_WAIT)
                    resolved.update(result)
                await asyncio.sleep(0.4)  # long enough for ccxt's keepalive to ping twice
            finally:
                await pro.close()
            return raw, resolved

        raw, resolved = asyncio.run(main())
        assert resolved == set(symbols)
        assert ex.stats.ws_connections == 1 and ex.stats.ws_streams_subscribed == 3
        assert ex.stats.ws_client_pings >= 2  # ccxt's pings answered: no timeout raised
    for frame, cached in raw:
        # ccxt parsed each of our frames into exactly the values sent
        assert cached == frame.ohlcv
        if frame.final:
            assert cached == ex.candle_at(frame.symbol, "1s", frame.open_ms)


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_drop_and_max_connection_age_end_a_ccxt_pro_watch(protocol):
    venue = VENUES[protocol]
    with LocalExchange(
        protocol=protocol, symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=2,
        clock=fast_clock(), poll_interval=0.005,
    ) as ex:  # fmt: skip

        async def pending_watch(pro):
            """A watch certainly waiting when the connection ends: a stall keeps new frames
            from resolving it, and frames already on their way are consumed first."""
            lost = ex.stats.ws_messages_lost
            ex.faults.stall(1000)
            eventually(lambda: ex.stats.ws_messages_lost > lost)
            while True:
                watch = asyncio.ensure_future(pro.watch_ohlcv("BTC/USDT", "1s"))
                await until(
                    lambda w=watch: w.done() or any(c.futures for c in pro.clients.values())
                )
                if not watch.done():
                    return watch
                watch.result()

        async def main():
            pro = getattr(ccxt.pro, venue.ccxt_class)(ex.ccxt_config())
            try:
                await pro.watch_ohlcv("BTC/USDT", "1s")
                watch = await pending_watch(pro)
                ex.faults.drop_connections()
                with pytest.raises(ccxt.NetworkError):
                    await asyncio.wait_for(watch, WS_WAIT)
                ex.faults.clear()  # ends the stall
                # the next watch reconnects; then the connection ages out (2 exchange s)
                await pro.watch_ohlcv("BTC/USDT", "1s")
                watch = await pending_watch(pro)
                ex.faults.max_connection_age(2.0)
                with pytest.raises(ccxt.NetworkError):
                    await asyncio.wait_for(watch, WS_WAIT)
                ex.faults.clear()  # ends the stall and the age limit
                await pro.watch_ohlcv("BTC/USDT", "1s")
            finally:
                await pro.close()

        asyncio.run(main())
        assert ex.faults.counts["drop"] == 1 and ex.faults.counts["max_age"] == 1
        assert ex.stats.ws_connections == 3
        eventually(lambda: ex.stats.ws_open == 0)


def test_venue_subscription_quirks():
    """OKX serves candles on /business only; Bybit refuses a topic already subscribed."""
    with LocalExchange(protocol="okx", symbols=("BTC/USDT",), timeframes=("1s",)) as ex:

        async def okx_public(raw: Raw):
            await raw.send(sub_okx([("BTC/USDT", "1s")]))
            await raw.until(lambda: raw.log)
            return raw.log[0][2]

        public = ex.ws_url.replace("/business", "/public")

        async def main():
            async with aiohttp.ClientSession() as session:
                async with session.ws_connect(public) as ws:
                    return await okx_public(Raw(ws, VENUES["okx"]))

        reply = asyncio.run(main())
        assert reply["event"] == "error" and reply["code"] == "60018"
        assert "channel:candle1s,instId:BTC-USDT" in reply["msg"]
        assert ex.stats.ws_streams_subscribed == 0

    with LocalExchange(protocol="bybit", symbols=("BTC/USDT",), timeframes=("1s",)) as ex:

        async def twice(raw: Raw):
            for rid in (1, 2):
                await raw.send(sub_bybit([("BTC/USDT", "1s")], rid=rid))
            await raw.until(lambda: any(o.get("req_id") == "2" for _, _, o in raw.log if o))
            return [o for _, _, o in raw.log if o and "req_id" in o]

        first, second = _run_raw(ex, "bybit", twice)
        assert first["success"] is True
        assert second["success"] is False and second["ret_msg"].startswith(
            "error:already subscribed,topic:kline.1s.BTCUSDT"
        )
        assert ex.stats.ws_streams_subscribed == 1


def test_frame_listener_can_be_removed():
    heard: list = []
    with LocalExchange(
        protocol="okx", symbols=("BTC/USDT",), timeframes=("1s",), clock=fast_clock(),
        poll_interval=0.005,
    ) as ex:  # fmt: skip
        ex.add_frame_listener(heard.append)

        async def body(raw: Raw):
            await raw.send(sub_okx([("BTC/USDT", "1s")]))
            await raw.until(lambda: len(raw.frames()) >= 2)
            ex.remove_frame_listener(heard.append)
            n = len(heard)
            mark = len(raw.log)
            await raw.until(lambda: len(raw.frames(mark)) >= 3)
            return n

        n = _run_raw(ex, "okx", body)
        assert n >= 2 and len(heard) == n  # removed on the server thread: nothing after
        with pytest.raises(ValueError):
            ex.remove_frame_listener(heard.append)
        with pytest.raises(TypeError):
            ex.add_frame_listener("not callable")


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_clock_jump_sends_each_missed_final_once(protocol):
    """A clock jump (or a blocked loop) sends every missed final once, late ones included."""
    venue = VENUES[protocol]
    second = math.floor(time.time())
    second -= (second + 5) % 3  # candle 5 below is one of OKX's late finals
    start = second + 0.3  # 300 ms into a 1s candle
    now = [start]
    with LocalExchange(
        protocol=protocol, symbols=("BTC/USDT",), timeframes=("1s",), updates_per_candle=2,
        clock=lambda: now[0], poll_interval=0.005,
    ) as ex:  # fmt: skip
        first = int(math.floor(start)) * 1000

        async def body(raw: Raw):
            pairs = [("BTC/USDT", "1s")]
            await raw.send(venue.subscribe(pairs))
            await raw.until(lambda: venue.replied([o for _, _, o in raw.log], pairs, "subscribe"))
            now[0] = start + 6  # six closes at once
            await raw.until(lambda: any(f.open_ms == first + 6000 for f in raw.frames()))
            now[0] = start + 6.65  # 950 ms into candle 6: its second update, no final
            await raw.until(
                lambda: any(f.open_ms == first + 5000 and f.final for f in raw.frames())
            )
            await raw.until(lambda: sum(f.open_ms == first + 6000 for f in raw.frames()) >= 2)
            return raw.frames()

        frames = _run_raw(ex, protocol, body)
    finals = [f.open_ms for f in frames if f.final]
    assert finals == [first + i * 1000 for i in range(6)]  # each once, in order
    order = [(f.open_ms - first, f.final) for f in frames]
    # candle 5's final is due in the jump's tick: on OKX (late) after candle 6's first update
    late = order.index((6000, False)) < order.index((5000, True))
    assert late == (protocol == "okx")
    for f in frames:
        if f.final:
            assert f.ohlcv == ex.candle_at("BTC/USDT", "1s", f.open_ms)


@pytest.mark.parametrize(
    "protocol, path, param, answer",
    [
        ("binance", "/api/v3/klines?symbol=BTCUSDT&interval=1m&limit=1x", "limit", -1100),
        ("binance", "/api/v3/aggTrades?symbol=BTCUSDT&fromId=-5", "fromId", -1100),
        ("okx", "/api/v5/market/candles?instId=BTC-USDT&bar=1m&after=soon", "after", "51000"),
        ("bybit", "/v5/market/kline?category=spot&symbol=BTCUSDT&interval=1&end=x", "end", 10001),
    ],
)
def test_a_numeric_parameter_that_is_not_digits_gets_the_venues_error(
    protocol, path, param, answer
):
    import json as _json
    import urllib.error
    import urllib.request

    with LocalExchange(
        symbols=("BTC/USDT",), timeframes=("1m",), history=10, protocol=protocol
    ) as ex:
        try:
            with urllib.request.urlopen(ex.rest_url + path, timeout=10) as resp:
                body = _json.loads(resp.read())
        except urllib.error.HTTPError as err:
            body = _json.loads(err.read())
    code = body.get("code", body.get("retCode"))
    message = body.get("msg", body.get("retMsg", ""))
    assert code == answer and param in message, body
