"""StoreNotification and its thread-safe queue (pure)."""

from __future__ import annotations

import dataclasses
import threading

import pytest

from backtrader_ccxt.notifications import (
    KINDS,
    RATE_LIMITED,
    NotificationQueue,
    StoreNotification,
    make,
)


def test_a_notification_is_immutable_and_printable():
    note = make(RATE_LIMITED, "binance", "429, retry in 1s", ["BTC/USDT", "ETH/USDT"])
    assert note == StoreNotification(
        RATE_LIMITED, "binance", ("BTC/USDT", "ETH/USDT"), "429, retry in 1s"
    )
    with pytest.raises(dataclasses.FrozenInstanceError):
        note.kind = "FATAL"
    assert str(note) == "RATE_LIMITED binance BTC/USDT, ETH/USDT: 429, retry in 1s"


def test_a_single_symbol_string_is_one_symbol():
    assert make("FATAL", "okx", "x", "BTC/USDT").symbols == ("BTC/USDT",)


def test_unknown_kinds_are_refused():
    with pytest.raises(ValueError, match="RATE_LIMITD.*valid choices"):
        make("RATE_LIMITD", "binance", "x")
    assert set(KINDS) == {
        "CONNECTION_LOST",
        "CONNECTION_RESTORED",
        "STALL",
        "RATE_LIMITED",
        "FATAL",
        "RECONNECT_BUDGET_SPENT",
    }


def test_the_queue_keeps_order_and_drains_once():
    q = NotificationQueue()
    for i in range(3):
        q.put(make("STALL", "binance", str(i)))
    assert [n.message for n in q.drain()] == ["0", "1", "2"]
    assert q.drain() == []


def test_the_queue_is_bounded_and_counts_what_it_dropped():
    q = NotificationQueue(maxlen=2)
    for i in range(5):
        q.put(make("STALL", "binance", str(i)))
    assert [n.message for n in q.drain()] == ["3", "4"]
    assert q.dropped == 3


def test_concurrent_producers_lose_nothing():
    q = NotificationQueue(maxlen=100_000)
    start = threading.Barrier(4)

    def produce(tag):
        start.wait()
        for i in range(2000):
            q.put(make("STALL", "binance", f"{tag}{i}"))

    threads = [threading.Thread(target=produce, args=(t,)) for t in "abcd"]
    for t in threads:
        t.start()
    got = []
    while any(t.is_alive() for t in threads):
        got += q.drain()
    for t in threads:
        t.join()
    got += q.drain()
    assert len(got) == 8000 and len({n.message for n in got}) == 8000
    for tag in "abcd":  # each producer's own order is kept
        mine = [int(n.message[1:]) for n in got if n.message[0] == tag]
        assert mine == sorted(mine)
