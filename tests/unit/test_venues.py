"""Venue adapters on real recorded frames, through ccxt.pro's own handlers and the tap.

Each recorded message is handed to the real ``handle_ohlcv`` of a ccxt.pro instance with the
frame tap installed (no socket, no network): every candle frame must come out once, as ccxt
parsed it, carrying the venue's own closed flag exactly as the raw frame says.
"""

from __future__ import annotations

import json
from pathlib import Path
from types import SimpleNamespace

import ccxt.pro as ccxtpro
import pytest

from backtrader_ccxt.live.tap import FrameTap
from backtrader_ccxt.venues import ADAPTERS, GENERIC, adapter_for, venue_table

DATA = Path(__file__).resolve().parents[3] / "shared" / "data" / "messages"
needs_data = pytest.mark.skipif(
    not DATA.is_dir(), reason="recorded messages live in ../shared/data (not in a fresh clone)"
)


def records(name: str) -> list[dict]:
    return [json.loads(line) for line in (DATA / name).read_text().splitlines() if line.strip()]


def market(market_id: str, symbol: str, kind: str) -> dict:
    base, rest = symbol.split("/")
    quote, _, settle = rest.partition(":")
    return {
        "id": market_id,
        "symbol": symbol,
        "base": base,
        "quote": quote,
        "settle": settle or None,
        "type": kind,
        "spot": kind == "spot",
        "swap": kind == "swap",
        "contract": kind != "spot",
        "linear": True if kind != "spot" else None,
        "inverse": False if kind != "spot" else None,
        "active": True,
    }


def replay_all(exchange, client_url: str, messages: list[dict], keys) -> list[tuple]:
    """Tap ``keys`` first (as the transport does before subscribing), then replay."""
    seen: list[tuple] = []
    tap = FrameTap(exchange, adapter_for(exchange.id), lambda *a: seen.append(a))
    for symbol, tf in keys:
        tap.watch(symbol, tf)
    client = SimpleNamespace(url=client_url, resolve=lambda *a, **k: None)
    for msg in messages:
        exchange.handle_ohlcv(client, msg)
    return seen


@needs_data
def test_binance_k_x_reaches_every_frame():
    recs = [r for r in records("binance/binance_ws_kline_messages.jsonl") if r["market"] == "spot"]
    msgs = [r["msg"]["data"] for r in recs]
    ex = ccxtpro.binance()
    ids = sorted({m["s"] for m in msgs})
    ex.set_markets([market(i, f"{i[:-4]}/{i[-4:]}", "spot") for i in ids])
    keys = [(ex.markets_by_id[i][0]["symbol"], "1m") for i in ids]
    seen = replay_all(ex, "wss://stream.binance.com:9443/stream", msgs, keys)
    assert len(seen) == len(msgs)
    for (symbol, tf, row, final), m in zip(seen, msgs, strict=True):
        k = m["k"]
        assert symbol == ex.markets_by_id[k["s"]][0]["symbol"] and tf == "1m"
        assert row == [k["t"], float(k["o"]), float(k["h"]), float(k["l"]), float(k["c"]),
                       float(k["v"])]  # fmt: skip
        assert final is k["x"]


@needs_data
def test_bybit_confirm_reaches_every_frame_spot_and_linear():
    recs = records("bybit/bybit_v5_ws_kline1_messages.jsonl")
    for kind, url_part in (("spot", "spot"), ("swap", "linear")):
        part = [r for r in recs if url_part in r["url"]]
        msgs = [r["msg"] for r in part]
        ids = sorted({m["topic"].split(".")[-1] for m in msgs})
        ex = ccxtpro.bybit()
        suffix = ":USDT" if kind == "swap" else ""
        ex.set_markets([market(i, f"{i[:-4]}/USDT{suffix}", kind) for i in ids])
        keys = [(f"{i[:-4]}/USDT{suffix}", "1m") for i in ids]
        seen = replay_all(ex, part[0]["url"], msgs, keys)
        assert len(seen) == sum(len(m["data"]) for m in msgs)
        flags = [d["confirm"] for m in msgs for d in m["data"]]
        assert [f for *_, f in seen] == flags
        assert sum(flags) == len(ids)  # one closed candle per topic in the recording
        raw = [(m["topic"].split(".")[-1][:-4], d["start"]) for m in msgs for d in m["data"]]
        assert [(s.split("/")[0], row[0]) for s, _tf, row, _f in seen] == raw


@needs_data
def test_okx_confirm_column_reaches_every_frame():
    msgs = [r["msg"] for r in records("okx/okcoin_v5_ws_candle1m_messages.jsonl")]
    ex = ccxtpro.okx()
    ids = sorted({m["arg"]["instId"] for m in msgs})
    ex.set_markets([market(i, i.replace("-", "/"), "spot") for i in ids])
    keys = [(i.replace("-", "/"), "1m") for i in ids]
    seen = replay_all(ex, "wss://ws.okx.com:8443/ws/v5/business", msgs, keys)
    assert len(seen) == sum(len(m["data"]) for m in msgs)
    flags = [d[8] == "1" for m in msgs for d in m["data"]]
    assert [f for *_, f in seen] == flags and any(flags) and not all(flags)
    assert [(s, row[0]) for s, _tf, row, _f in seen] == [
        (m["arg"]["instId"].replace("-", "/"), int(d[0])) for m in msgs for d in m["data"]
    ]


def test_a_venue_without_a_flag_still_reaches_every_frame_routed_by_timeframe():
    # Kraken: ccxt.pro's message hash has no timeframe, but its cache does: two timeframes of
    # one symbol must each receive only their own rows
    ex = ccxtpro.kraken()
    ex.set_markets([market("XBT/USD", "BTC/USD", "spot")])
    msgs = [
        {
            "channel": "ohlc",
            "type": "update",
            "data": [
                {
                    "symbol": "BTC/USD",
                    "open": 1.0 + i,
                    "high": 2.0 + i,
                    "low": 0.5 + i,
                    "close": 1.5 + i,
                    "volume": 3.0,
                    "interval_begin": f"2024-01-01T00:0{i}:00.000000000Z",
                    "interval": interval,
                }
            ],
        }
        for i, interval in ((0, 1), (0, 5), (1, 1), (2, 1))
    ]
    seen = replay_all(ex, "wss://ws.kraken.com/v2", msgs, [("BTC/USD", "1m"), ("BTC/USD", "5m")])
    assert [(s, tf, f) for s, tf, _row, f in seen] == [
        ("BTC/USD", "1m", None),
        ("BTC/USD", "5m", None),
        ("BTC/USD", "1m", None),
        ("BTC/USD", "1m", None),
    ]


def test_an_unreadable_frame_is_passed_on_without_a_flag():
    ex = ccxtpro.okx()
    ex.set_markets([market("BTC-USDT", "BTC/USDT", "spot")])
    msg = {"arg": {"channel": "candle1m", "instId": "BTC-USDT"}, "data": [["x", "1", "1", "1"]]}
    seen: list = []
    tap = FrameTap(ex, adapter_for("okx"), lambda *a: seen.append(a))
    tap.watch("BTC/USDT", "1m")
    client = SimpleNamespace(url="wss://x/ws/v5/business", resolve=lambda *a, **k: None)
    ex.handle_ohlcv(client, msg)
    assert tap.unreadable == 1
    # ccxt still stores what it parsed; it reaches the stream machine without a flag, which
    # rejects the row as malformed
    assert [(s, f) for s, _tf, _row, f in seen] == [("BTC/USDT", None)]


def test_every_adapter_is_consistent_and_the_table_covers_them():
    assert adapter_for("no-such-venue") is GENERIC
    table = venue_table()
    for adapter in ADAPTERS:
        for exchange_id in adapter.ids:
            assert adapter_for(exchange_id) is adapter
            if exchange_id in ccxtpro.exchanges:
                assert f"| `{exchange_id}` | {adapter.name} |" in table


def test_the_docs_venue_table_is_the_generated_one():
    page = (Path(__file__).resolve().parents[2] / "docs" / "venues.md").read_text()
    assert venue_table() in page, "regenerate: python -m backtrader_ccxt.venues"


def test_each_frame_carries_the_connection_that_brought_it_even_when_read_late():
    # A frame still arriving on a socket that is being replaced must not be taken for one of
    # the new connection (the timing rule closes a candle only on a successor of the same
    # connection): the tap names the ccxt client that carried each frame.
    ex = ccxtpro.kraken()
    ex.set_markets([market("XBT/USD", "BTC/USD", "spot")])
    seen: list = []
    tap = FrameTap(ex, adapter_for("kraken"), lambda *a: seen.append((a[2][0], tap.connection())))
    tap.watch("BTC/USD", "1m")

    def frame(i: int) -> dict:
        row = {"symbol": "BTC/USD", "open": 1.0, "high": 2.0, "low": 0.5, "close": 1.5}
        row.update(volume=3.0 + i, interval_begin=f"2024-01-01T00:0{i}:00.000000000Z")
        return {"channel": "ohlc", "type": "update", "data": [{**row, "interval": 1}]}

    old = SimpleNamespace(url="wss://ws.kraken.com/v2", resolve=lambda *a, **k: None)
    new = SimpleNamespace(url="wss://ws.kraken.com/v2", resolve=lambda *a, **k: None)
    ex.handle_ohlcv(old, frame(0))
    ex.handle_ohlcv(new, frame(1))
    ex.handle_ohlcv(old, frame(2))  # read late, off the old socket
    ex.handle_ohlcv(new, frame(3))
    conns = [c for _open, c in seen]
    assert conns[0] == conns[2] != conns[1] == conns[3]
    assert None not in conns
    assert tap.connection() is None  # outside a handled frame

    # and the transport stamps each Frame with it (the epoch the timing rule compares)
    from backtrader_ccxt.live.events import Frame
    from backtrader_ccxt.live.transport import TransportSettings, WatchGroup

    posted: list = []
    group = WatchGroup(
        ex,
        tap,
        [("BTC/USD", "1m")],
        TransportSettings(),
        post=lambda key, event: posted.append(event),
        now_ms=lambda: 0,
    )
    tap.on_row = lambda s, tf, row, final: group.on_row((s, tf), row, final)
    group.epoch = 7  # breaks counted by the group do not name a connection
    for client, i in ((old, 4), (new, 5), (old, 6)):
        ex.handle_ohlcv(client, frame(i))
    epochs = [e.epoch for e in posted if isinstance(e, Frame)]
    assert epochs == [conns[0], conns[1], conns[0]]


def test_the_tap_knows_how_far_each_connection_has_been_read():
    # Binance stamps each kline event with its send time (E). After a frame sent at E has
    # been handled, every frame the venue sent before E on that connection has been too:
    # a confirmation due at T need not go to REST while the connection is read only to E < T.
    import asyncio

    ex = ccxtpro.binance()
    ex.set_markets([market("BTCUSDT", "BTC/USDT", "spot")])
    tap = FrameTap(ex, adapter_for("binance"), lambda *a: None)
    tap.watch("BTC/USDT", "1m")
    url = "wss://stream.binance.com:9443/stream"
    client = SimpleNamespace(url=url, resolve=lambda *a, **k: None)
    ex.clients = {url: client}  # its own dict: ccxt's class-level default is shared

    def kline(sent: int) -> dict:
        k = {"t": 60_000, "T": 119_999, "s": "BTCUSDT", "i": "1m", "o": "1", "h": "2"}
        k.update(l="0.5", c="1.5", v="3", x=False)
        return {"e": "kline", "E": sent, "s": "BTCUSDT", "k": k}

    assert tap.behind("BTC/USDT", "1m", 120_500) is None  # no frame yet: nobody can tell
    ex.handle_ohlcv(client, kline(119_000))
    serial = tap.behind("BTC/USDT", "1m", 120_500)
    assert serial is not None
    loop = asyncio.new_event_loop()
    try:
        fut = loop.create_future()
        tap.when_read(serial, 120_500, fut)
        ex.handle_ohlcv(client, kline(120_400))
        assert not fut.done() and tap.behind("BTC/USDT", "1m", 120_500) == serial
        ex.handle_ohlcv(client, kline(120_600))  # sent after the due time: read that far
        assert fut.done()
        assert tap.behind("BTC/USDT", "1m", 120_500) is None
        assert tap.behind("BTC/USDT", "1m", 121_000) == serial
        ex.clients.pop(url)  # the connection was replaced: its frames are all read
        assert tap.behind("BTC/USDT", "1m", 121_000) is None
    finally:
        loop.close()


@needs_data
def test_send_times_are_read_from_the_real_frames():
    from backtrader_ccxt.venues import binance, bybit

    msgs = [r["msg"]["data"] for r in records("binance/binance_ws_kline_messages.jsonl")]
    assert [binance.read_event_ms(m) for m in msgs] == [m["E"] for m in msgs]
    msgs = [r["msg"] for r in records("bybit/bybit_v5_ws_kline1_messages.jsonl")]
    assert [bybit.read_event_ms(m) for m in msgs] == [m["ts"] for m in msgs]
    assert binance.read_event_ms({"E": "1"}) is None and bybit.read_event_ms([]) is None


def _binance_kline(open_ms: int, final: bool, sent: int, close: str = "1.5") -> dict:
    k = {"t": open_ms, "T": open_ms + 59_999, "s": "BTCUSDT", "i": "1m", "o": "1", "h": "2"}
    k.update(l="0.5", c=close, v="3", x=final)
    return {"e": "kline", "E": sent, "s": "BTCUSDT", "k": k}


def test_with_on_heard_flagged_partials_skip_ccxts_parse_and_finals_do_not():
    # the stream core reads nothing from a frame the venue flags partial but that its stream
    # talks: such frames go to on_heard, unparsed; finals (and unflagged frames) to on_row
    ex = ccxtpro.binance()
    ex.set_markets([market("BTCUSDT", "BTC/USDT", "spot"), market("ETHUSDT", "ETH/USDT", "spot")])
    rows, heard = [], []
    tap = FrameTap(ex, adapter_for("binance"), lambda *a: rows.append(a), on_heard=lambda *a: heard.append(a))  # fmt: skip
    tap.watch("BTC/USDT", "1m")
    url = "wss://stream.binance.com:9443/stream"
    client = SimpleNamespace(url=url, resolve=lambda *a, **k: None)
    ex.clients = {url: client}
    ex.handle_ohlcv(client, _binance_kline(60_000, False, 61_000))
    ex.handle_ohlcv(client, _binance_kline(60_000, False, 62_000, close="1.6"))
    assert heard == [("BTC/USDT", "1m")] * 2 and rows == [] and tap.partials_skipped == 2
    assert len(ex.ohlcvs["BTC/USDT"]["1m"]) == 0  # ccxt never parsed them
    assert tap.client_of[("BTC/USDT", "1m")] is client
    assert tap.behind("BTC/USDT", "1m", 62_000) is None  # read that far all the same
    ex.handle_ohlcv(client, _binance_kline(60_000, True, 120_100, close="1.7"))
    assert rows == [("BTC/USDT", "1m", [60_000, 1.0, 2.0, 0.5, 1.7, 3.0], True)]
    # a stream this tap does not carry: ccxt parses the frame as it always did
    eth = _binance_kline(60_000, False, 120_200)
    eth["s"] = eth["k"]["s"] = "ETHUSDT"
    ex.handle_ohlcv(client, eth)
    assert tap.partials_skipped == 2 and len(heard) == 2
    assert len(ex.ohlcvs["ETH/USDT"]["1m"]) == 1


def test_without_on_heard_every_partial_still_reaches_on_row():
    ex = ccxtpro.binance()
    ex.set_markets([market("BTCUSDT", "BTC/USDT", "spot")])
    rows: list = []
    tap = FrameTap(ex, adapter_for("binance"), lambda *a: rows.append(a))
    tap.watch("BTC/USDT", "1m")
    client = SimpleNamespace(
        url="wss://stream.binance.com:9443/stream", resolve=lambda *a, **k: None
    )
    ex.handle_ohlcv(client, _binance_kline(60_000, False, 61_000))
    assert [r[3] for r in rows] == [False] and tap.partials_skipped == 0
