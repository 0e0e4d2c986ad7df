"""Trades: the parser, the exactly-once gate, and bars built from trades (pure, in ms)."""

import csv
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal
from pathlib import Path

import pytest

from backtrader_ccxt.bars import Bar
from backtrader_ccxt.errors import ConfigurationError
from backtrader_ccxt.timeframes import parse
from backtrader_ccxt.trades import (
    Trade,
    TradeBars,
    TradeGate,
    interval_open,
    parse_trades,
    trade_from_ccxt,
)

T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
# GPL-3.0 (freqtrade): read in place, never copied into the repository.
REAL_TRADES = Path(__file__).resolve().parents[3] / "shared/data/trades/"
REAL_TRADES = REAL_TRADES / "freqtrade_public_trades_ETHUSDT.csv"


def raw(i, ts=T0, price=100.0, amount=1.0, side="buy", tid="auto"):
    return {
        "id": str(1000 + i) if tid == "auto" else tid,
        "timestamp": ts,
        "price": price,
        "amount": amount,
        "side": side,
    }


def tr(i, ts, price=100.0, amount=1.0, side="buy", tid="auto"):
    return trade_from_ccxt(raw(i, ts, price, amount, side, tid))


# -- parser -----------------------------------------------------------------------------------


def test_parser_keeps_the_fields_and_ids_as_strings():
    t = trade_from_ccxt({"id": 42, "timestamp": T0, "price": "1.5", "amount": 2, "side": "sell"})
    assert t == Trade("42", T0, 1.5, 2.0, "sell")
    assert t.seq == 42
    assert trade_from_ccxt(raw(0, tid="a-b")).seq is None
    assert trade_from_ccxt(raw(0, tid=None, side=None)).id is None


@pytest.mark.parametrize(
    "change, reason",
    [
        ({"timestamp": None}, "timestamp None"),
        ({"timestamp": 1.5}, "timestamp 1.5"),
        ({"timestamp": -1}, "before the epoch"),
        ({"price": 0}, "price 0"),
        ({"price": float("nan")}, "price nan"),
        ({"price": "x"}, "price 'x'"),
        ({"amount": -1}, "amount -1"),
        ({"amount": None}, "amount None"),
        ({"side": "long"}, "side 'long'"),
        ({"id": 1.5}, "id 1.5"),
        ({"price": True}, "price True"),
    ],
)
def test_bad_trades_are_rejected_with_the_reason(change, reason):
    bad = {**raw(0), **change}
    with pytest.raises(ValueError, match=reason.replace("(", r"\(")):
        trade_from_ccxt(bad)
    good, rejects = parse_trades([raw(1), bad, "junk"])
    assert [t.id for t in good] == ["1001"]
    assert [r for r, _ in rejects] == [bad, "junk"]
    assert reason in rejects[0][1]


def test_parse_trades_sorts_into_exchange_order_ids_numerically():
    good, _ = parse_trades([raw(10, T0 + 1), raw(9, T0), raw(2, T0)])  # ids 1010, 1009, 1002
    assert [t.id for t in good] == ["1002", "1009", "1010"]
    good, _ = parse_trades([raw(0, T0, tid="99"), raw(0, T0, tid="100")])
    assert [t.id for t in good] == ["99", "100"]


# -- gate -------------------------------------------------------------------------------------


def test_gate_by_increasing_id_drops_overlaps_and_reports_gaps():
    gate = TradeGate()
    page1 = [tr(i, T0 + i) for i in range(5)]
    assert gate.admit(page1) == page1
    page2 = [tr(i, T0 + i) for i in range(3, 8)]  # overlaps 3, 4
    assert [t.id for t in gate.admit(page2)] == ["1005", "1006", "1007"]
    assert gate.admit([tr(10, T0 + 10), tr(8, T0 + 8)]) == [tr(8, T0 + 8), tr(10, T0 + 10)]
    assert gate.last_seq == 1010
    assert gate.gaps == [(1009, 1009)]
    assert gate.duplicates == 2
    # an old id even with a new timestamp is a repeat
    assert gate.admit([tr(6, T0 + 99)]) == []


def test_gate_resumes_from_a_known_last_id():
    gate = TradeGate(last_seq=1004)
    assert [t.id for t in gate.admit([tr(i, T0 + i) for i in range(7)])] == ["1005", "1006"]


def test_gate_by_string_id_remembers_a_window():
    gate = TradeGate(window_ms=1000)
    a, b = tr(0, T0, tid="a"), tr(0, T0 + 500, tid="b")
    assert gate.admit([a, b]) == [a, b]
    assert gate.admit([b, tr(0, T0 + 600, tid="c")]) == [tr(0, T0 + 600, tid="c")]
    # ids are not ordered: an unseen id inside the window is new, outside it is stale
    z = tr(0, T0 + 200, tid="z")
    assert gate.admit([z]) == [z]
    assert gate.admit([tr(0, T0 + 5000, tid="d")])
    assert gate.admit([tr(0, T0 + 100, tid="q")]) == []
    assert gate.stale == 1
    assert len(gate._ids) == 1  # pruned: memory stays flat


def test_gate_without_ids_counts_identical_trades_per_batch():
    gate = TradeGate()
    same = tr(0, T0, tid=None)
    other = tr(0, T0 + 1, price=101.0, tid=None)
    # two identical trades in one view are two trades
    assert gate.admit([same, same]) == [same, same]
    # a later page showing them again (and one more identical) adds only the new one
    assert gate.admit([same, same, same, other]) == [same, other]
    assert gate.admit([same, other]) == []
    assert gate.duplicates == 4
    # the side is part of the content
    sold = tr(0, T0, side="sell", tid=None)
    assert gate.admit([sold]) == [sold]


def test_gate_rejects_a_bad_window():
    with pytest.raises(ConfigurationError, match="window_ms -1"):
        TradeGate(window_ms=-1)


# -- interval grid ----------------------------------------------------------------------------


def test_interval_open_on_the_venues_grid():
    t = T0 + 3 * 3_600_000 + 17_123  # Monday 2024-01-01 03:00:17.123
    assert interval_open(parse("10s"), t) == T0 + 3 * 3_600_000 + 10_000
    assert interval_open(parse("4h"), t) == T0
    assert interval_open(parse("1w"), t + 3 * 86_400_000) == T0  # Thursday -> Monday
    feb = int(datetime(2024, 2, 10, tzinfo=timezone.utc).timestamp() * 1000)
    assert interval_open(parse("1M"), feb) == int(
        datetime(2024, 2, 1, tzinfo=timezone.utc).timestamp() * 1000
    )
    assert interval_open(parse("3M"), feb) == T0
    assert interval_open(parse("1y"), feb) == T0


# -- bars from trades -------------------------------------------------------------------------

S10 = parse("10s")


def test_bar_values_and_close_stamp():
    agg = TradeBars(S10, grace_ms=500)
    for t in [
        tr(0, T0 + 1, 100.0, 0.2),
        tr(1, T0 + 2, 103.0, 0.2),
        tr(2, T0 + 3, 99.0, 0.2),
        tr(3, T0 + 9_999, 101.0, 0.3),
    ]:
        assert agg.add(t)
    assert agg.advance(T0 + 10_499) == []  # closed, but the grace is not over
    (bar,) = agg.advance(T0 + 10_500)
    assert bar == Bar(
        T0, T0 + 10_000, 100.0, 103.0, 99.0, 101.0, 0.9
    )  # float sum: 0.9000000000000001
    assert bar.dt == datetime(2024, 1, 1, 0, 0, 10)


def test_a_quiet_market_gets_its_bar_by_the_clock_without_a_next_trade():
    agg = TradeBars(S10, grace_ms=200)
    agg.add(tr(0, T0 + 5_000))
    assert [b.open_ms for b in agg.advance(T0 + 10_200)] == [T0]
    assert agg.advance(T0 + 10**9) == []  # empty intervals: no bar


def test_a_later_trade_does_not_close_the_bar_before_the_grace():
    agg = TradeBars(S10, grace_ms=1_000)
    agg.add(tr(0, T0 + 9_000, 100.0))
    agg.add(tr(2, T0 + 10_100, 200.0))  # next interval's trade arrives first
    assert agg.advance(T0 + 10_500) == []
    agg.add(tr(1, T0 + 9_900, 150.0))  # the late trade of the first interval still counts
    first, *_ = agg.advance(T0 + 11_000)
    assert (first.close, first.high, first.volume) == (150.0, 150.0, 2.0)
    assert agg.pending() == 1
    # after its bar left, a trade of that interval cannot change it
    assert not agg.add(tr(9, T0 + 9_950, 1.0))
    assert agg.late == 1


def test_close_is_the_last_trade_in_exchange_order_whatever_the_arrival_order():
    agg = TradeBars(S10)
    agg.add(tr(2, T0 + 5, 102.0))
    agg.add(tr(1, T0 + 5, 101.0))  # same ms, lower id: earlier in the ledger
    (bar,) = agg.advance(T0 + 10_000)
    assert bar.close == 102.0


def test_empty_flat_fills_gaps_at_the_last_price():
    agg = TradeBars(S10, empty="flat")
    assert agg.advance(T0 + 50_000) == []  # nothing before the first trade
    agg.add(tr(0, T0 + 1, 100.0, 2.0))
    agg.add(tr(1, T0 + 30_001, 105.0, 1.0))
    bars = agg.advance(T0 + 50_000)
    assert [(b.open_ms - T0, b.close, b.volume) for b in bars] == [
        (0, 100.0, 2.0),
        (10_000, 100.0, 0.0),
        (20_000, 100.0, 0.0),
        (30_000, 105.0, 1.0),
        (40_000, 105.0, 0.0),
    ]
    agg.add(tr(2, T0 + 50_001, 106.0))
    assert [b.open_ms - T0 for b in agg.advance(T0 + 70_000)] == [50_000, 60_000]


def test_calendar_bars_close_on_the_first_of_the_month():
    agg = TradeBars(parse("1M"))
    feb = int(datetime(2024, 2, 29, tzinfo=timezone.utc).timestamp() * 1000)
    agg.add(tr(0, feb))
    (bar,) = agg.advance(feb + 86_400_000)
    assert bar.dt == datetime(2024, 3, 1)


@pytest.mark.parametrize(
    "kwargs, match",
    [({"grace_ms": -5}, "grace_ms -5"), ({"empty": "zero"}, "empty 'zero'.*skip, flat")],
)
def test_bad_aggregator_configuration_fails_fast(kwargs, match):
    with pytest.raises(ConfigurationError, match=match):
        TradeBars(S10, **kwargs)


# -- on real trades ---------------------------------------------------------------------------


def _real_rows():
    if not REAL_TRADES.exists():
        pytest.skip(f"real trades not present at {REAL_TRADES} (GPL data kept in ../shared)")
    with REAL_TRADES.open(newline="") as fh:
        return list(csv.DictReader(fh))


def _as_ccxt(row):
    return {
        "id": row["id"],
        "timestamp": int(row["timestamp"]),
        "price": float(row["price"]),
        "amount": float(row["amount"]),
        "side": row["side"],
    }


@pytest.mark.parametrize("name", ["1s", "10s", "1m"])
def test_real_trades_delivered_once_through_overlapping_pages_and_aggregated(name):
    rows = _real_rows()
    assert len(rows) == 1000
    # the ledger as 7 overlapping REST pages of 200, each shuffled within itself
    pages = [[_as_ccxt(r) for r in rows[s : s + 200]][::-1] for s in range(0, 1000, 150)]
    gate = TradeGate()
    tf = parse(name)
    agg = TradeBars(tf, grace_ms=250)
    delivered = []
    for page in pages:
        trades, rejects = parse_trades(page)
        assert rejects == []
        for t in gate.admit(trades):
            delivered.append(t)
            agg.add(t)
    assert [t.id for t in delivered] == [r["id"] for r in rows]
    assert gate.gaps == [] and agg.late == 0
    bars = agg.advance(int(rows[-1]["timestamp"]) + tf.ms + 250)

    # the expected candles, computed independently from the file's decimal strings
    want = defaultdict(list)
    for r in rows:
        want[int(r["timestamp"]) // tf.ms * tf.ms].append(r)
    assert [b.open_ms for b in bars] == sorted(want)
    for bar in bars:
        group = want[bar.open_ms]
        prices = [float(r["price"]) for r in group]
        assert (bar.open, bar.high, bar.low, bar.close) == (
            prices[0],
            max(prices),
            min(prices),
            prices[-1],
        )
        assert bar.volume == float(sum(Decimal(r["amount"]) for r in group))
        assert bar.close_ms == bar.open_ms + tf.ms


def test_gate_fills_a_recorded_gap_once():
    gate = TradeGate()
    gate.admit([tr(0, T0), tr(5, T0 + 5)])
    assert gate.gaps == [(1001, 1004)]
    page = [tr(i, T0 + i) for i in range(7)]
    assert [t.id for t in gate.fill(page)] == ["1001", "1002", "1003", "1004"]
    assert gate.gaps == [] and gate.fill(page) == []
    gate.admit([tr(9, T0 + 9)])
    assert [t.id for t in gate.fill([tr(7, T0 + 7)])] == ["1007"]
    assert gate.gaps == [(1006, 1006), (1008, 1008)]
