"""Bars: close-time stamps, row parsing, which rows are closed, the time-already-seen gate."""

import math
from datetime import datetime, timezone

import pytest

from backtrader_ccxt.bars import Bar, BarGate, bar_from_row, closed_bars
from backtrader_ccxt.timeframes import parse

M1 = parse("1m")
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def row(i: int, t0: int = T0, step: int = 60_000) -> list:
    o = 100.0 + i
    return [t0 + i * step, o, o + 3, o - 2, o + 1, 10.0 + i]


def test_dt_is_the_close_time_as_naive_utc():
    bar = bar_from_row(row(0), M1)
    assert bar.dt == datetime(2024, 1, 1, 0, 1)
    assert bar.dt.tzinfo is None


def test_monthly_dt_is_the_first_of_the_next_month():
    jan = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
    bar = bar_from_row([jan, 1, 2, 0.5, 1.5, 3], parse("1M"))
    assert bar.dt == datetime(2024, 2, 1)
    assert bar.close_ms - bar.open_ms == 31 * 86_400_000


def test_bar_from_row_fields_and_row_round_trip():
    r = row(5)
    bar = bar_from_row(r, M1)
    assert (bar.open_ms, bar.close_ms) == (r[0], r[0] + 60_000)
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == tuple(r[1:])
    assert bar.row() == r


def test_bar_from_row_converts_numeric_strings():
    bar = bar_from_row([str(T0), "1.5", "2", "1", "1.75", "9"], M1)
    assert bar.open_ms == T0
    assert (bar.open, bar.high, bar.low, bar.close, bar.volume) == (1.5, 2.0, 1.0, 1.75, 9.0)


@pytest.mark.parametrize("r", [[T0, 1, 2, 0.5, 1.5, None], [T0, 1, 2, 0.5, 1.5]])
def test_missing_volume_is_zero(r):
    assert bar_from_row(r, M1).volume == 0.0


def test_bar_is_immutable():
    bar = bar_from_row(row(0), M1)
    with pytest.raises(AttributeError):
        bar.close = 1.0


@pytest.mark.parametrize(
    "r",
    [
        None,
        [],
        [T0, 1, 2, 0.5],
        [T0, math.nan, 2, 0.5, 1.5, 3],
        [T0, 1, 2, 0.5, math.inf, 3],
        [T0, 1, 2, 0.5, 1.5, math.nan],
        [T0, 1, "high", 0.5, 1.5, 3],
        [math.nan, 1, 2, 0.5, 1.5, 3],
    ],
)
def test_malformed_rows_raise_value_error(r):
    with pytest.raises(ValueError):
        bar_from_row(r, M1)


@pytest.mark.parametrize("r", [[T0, None, 2, 0.5, 1.5, 3], [None, 1, 2, 0.5, 1.5, 3]])
def test_a_none_price_or_time_is_a_malformed_row(r):
    # The docstring promises ValueError for a malformed row; only the volume may be None.
    with pytest.raises(ValueError):
        bar_from_row(r, M1)


def test_closed_bars_drops_the_forming_candle():
    rows = [row(i) for i in range(4)]
    now = T0 + 3 * 60_000 + 30_000  # candle 3 is forming
    assert [b.row() for b in closed_bars(rows, M1, now)] == rows[:3]


def test_a_candle_is_closed_exactly_at_its_close_time():
    rows = [row(0), row(1)]
    assert len(closed_bars(rows, M1, T0 + 2 * 60_000)) == 2
    assert len(closed_bars(rows, M1, T0 + 2 * 60_000 - 1)) == 1


def test_closed_bars_keeps_the_later_of_repeated_timestamps():
    early = row(1)
    late = [early[0], 500.0, 600.0, 400.0, 550.0, 77.0]
    out = closed_bars([row(0), early, late, row(2)], M1, T0 + 10 * 60_000)
    assert [b.row() for b in out] == [row(0), late, row(2)]


def test_closed_bars_sorts():
    rows = [row(3), row(0), row(2), row(1)]
    out = closed_bars(rows, M1, T0 + 10 * 60_000)
    assert [b.open_ms for b in out] == [T0 + i * 60_000 for i in range(4)]


def test_closed_bars_after_is_exclusive_and_until_is_exclusive():
    rows = [row(i) for i in range(6)]
    out = closed_bars(rows, M1, T0 + 10 * 60_000, after_ms=row(1)[0], until_ms=row(4)[0])
    assert [b.row() for b in out] == [row(2), row(3)]


def test_closed_bars_of_nothing():
    assert closed_bars([], M1, T0) == []


def test_closed_bars_propagates_malformed_rows():
    with pytest.raises(ValueError):
        closed_bars([row(0), [T0, 1, 2]], M1, T0 + 10 * 60_000)


def _bar(i: int) -> Bar:
    return bar_from_row(row(i), M1)


def test_gate_admits_strictly_increasing_times_only():
    gate = BarGate()
    assert gate.admit(_bar(0))
    assert gate.admit(_bar(2))
    assert not gate.admit(_bar(2))  # duplicate
    assert not gate.admit(_bar(1))  # older
    assert gate.last_open_ms == _bar(2).open_ms  # a rejection does not move the gate
    assert gate.admit(_bar(3))


def test_gate_starts_from_a_given_time():
    gate = BarGate(last_open_ms=_bar(1).open_ms)
    assert not gate.admit(_bar(1))
    assert not gate.admit(_bar(0))
    assert gate.admit(_bar(2))
