"""Nothing leaks: no thread, task, socket or ccxt session outlives a run; no secret reaches a
log record, a repr, an exception message or the console."""

from __future__ import annotations

import logging
import threading

import backtrader as bt
import psutil
import pytest
from feedtools import assert_contiguous, expected_for, fast_exchange, fast_store, grace, run
from helpers import eventually

from backtrader_ccxt import CCXTStore, UnknownSymbolError

SENTINELS = {
    "apiKey": "SENTINEL-KEY-7f3a9c1e",
    "secret": "SENTINEL-SECRET-b84d20aa",
    "password": "SENTINEL-PASS-19cc03",
}


@pytest.fixture(scope="module")
def ex():
    """On the fast clock (tests/feedtools.py)."""
    with fast_exchange(symbols=("BTC/USDT", "ETH/USDT"), timeframes=("1s",), history=200) as ex:
        yield ex


def client_sockets_to(port: int) -> list:
    """This process's TCP sockets connected to ``port`` (the client side), still open."""
    return [
        c
        for c in psutil.Process().net_connections(kind="tcp")
        if c.raddr and c.raddr.port == port and c.status == psutil.CONN_ESTABLISHED
    ]


def loop_threads() -> list[str]:
    return [t.name for t in threading.enumerate() if t.name.startswith("backtrader-ccxt-")]


@pytest.mark.parametrize(
    "mode", [{}, {"use_threaded_data": True}, {"use_websocket": True}], ids=str
)
def test_after_run_no_thread_socket_or_session_remains(ex, mode):
    store = fast_store(ex)
    cerebro = bt.Cerebro(stdstats=False)
    for sym in ("BTC/USDT", "ETH/USDT"):
        cerebro.adddata(
            store.getdata(
                dataname=sym,
                name=sym,
                timeframe="1s",
                backfill_bars=3,
                poll_grace=grace(ex, 0.2),
                **mode,
            )
        )
    strat = run(cerebro, live_bars=2)
    for sym in ("BTC/USDT", "ETH/USDT"):
        assert strat.bars[sym] == expected_for(ex, sym, "1s", strat.bars[sym])
    assert loop_threads() == []
    eventually(lambda: client_sockets_to(ex.port) == [], timeout=3)
    assert store._manager is None  # the loop manager (and its ccxt.pro instance) is gone


def test_a_store_can_run_again_after_stop(ex):
    """cerebro.run() twice on the same store: the second run restarts what the first stopped."""
    store = fast_store(ex)
    for _ in range(2):
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.adddata(
            store.getdata(
                dataname="BTC/USDT",
                name="BTC/USDT",
                timeframe="1s",
                backfill_bars=2,
                poll_grace=grace(ex, 0.2),
                use_websocket=True,
            )
        )
        strat = run(cerebro, live_bars=1)
        assert_contiguous(strat.bars["BTC/USDT"], "1s")
        assert loop_threads() == []


def test_runstop_from_another_thread_stops_cleanly(ex):
    """A supervisor thread calls cerebro.runstop() (what a SIGINT handler does)."""
    store = fast_store(ex)
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="ETH/USDT",
            name="ETH/USDT",
            timeframe="1s",
            backfill_bars=2,
            use_websocket=True,
        )
    )
    live = threading.Event()

    def on_bar(strat, data):
        if strat.live_counts[data._name] >= 1:
            live.set()

    stopper = threading.Thread(target=lambda: live.wait(30) and cerebro.runstop())
    stopper.start()
    strat = run(cerebro, live_bars=None, on_bar=on_bar)
    stopper.join()
    assert live.is_set()
    assert strat.live_counts["ETH/USDT"] >= 1
    assert loop_threads() == []


def test_secrets_never_reach_logs_reprs_errors_or_console(ex, caplog, capfd):
    config = dict(ex.ccxt_config(), verbose=True, **SENTINELS)
    store = fast_store(ex, config=config, debug=True, retry_delay=0.05)
    caplog.set_level(logging.DEBUG)
    # REST failures during backfill, and dropped sockets: the paths that log errors
    ex.faults.rest_errors("429", count=1, retry_after=0.1, path="/api/v3/klines")
    ex.faults.rest_errors("5xx", count=1, path="/api/v3/klines")
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname="BTC/USDT",
            name="BTC/USDT",
            timeframe="1s",
            backfill_bars=3,
            poll_grace=grace(ex, 0.2),
            use_websocket=True,
            ws_reconnect_delay=0.05,
            debug=True,
        )
    )

    def on_bar(strat, data):
        if strat.live_counts[data._name] == 1:
            ex.faults.drop_connections()

    strat = run(cerebro, live_bars=3, on_bar=on_bar)
    assert strat.live_counts["BTC/USDT"] >= 3
    errors = []
    try:
        run_bad = CCXTStore("binance", config=config)
        cerebro = bt.Cerebro()
        cerebro.adddata(run_bad.getdata(dataname="NOPE/USDT", timeframe="1s"))
        cerebro.run()
    except UnknownSymbolError as exc:
        errors.append(exc)
    assert errors, "the bad symbol was not rejected"
    out, err = capfd.readouterr()
    texts = [r.getMessage() for r in caplog.records] + [repr(store), str(errors[0]), out, err]
    assert len(caplog.records) > 5  # debug logging really was on
    for secret in SENTINELS.values():
        for text in texts:
            assert secret not in text
    assert store.redact(f"key {SENTINELS['apiKey']}") == "key ***"
