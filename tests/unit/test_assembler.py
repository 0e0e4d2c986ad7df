"""Closed-candle detection on a stream without a "closed" flag."""

from datetime import datetime, timezone

import pytest

from backtrader_ccxt.live.assembler import CandleAssembler
from backtrader_ccxt.timeframes import parse

M1 = parse("1m")
MIN = 60_000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def row(i: int, close: float = 0.0) -> list:
    o = 100.0 + i
    c = close or o + 1
    return [T0 + i * MIN, o, max(o + 3, c), min(o - 2, c), c, 10.0 + i]  # a real candle


def test_the_forming_candle_is_not_closed():
    asm = CandleAssembler(M1)
    assert asm.update([row(0, 100.2)], T0 + 10_000, 0) == []
    assert asm.update([row(0, 100.5)], T0 + 20_000, 0) == []
    assert asm.forming.close == 100.5


def test_a_later_candle_closes_the_previous_one_with_its_last_values():
    asm = CandleAssembler(M1)
    asm.update([row(0, 100.2)], T0 + 10_000, 0)
    asm.update([row(0, 100.9)], T0 + MIN, 0)  # final update, at the close time
    out = asm.update([row(1)], T0 + MIN + 50, 0)
    assert len(out) == 1
    assert out[0].bar.open_ms == T0
    assert out[0].bar.close == 100.9
    assert out[0].trusted
    assert asm.forming.open_ms == T0 + MIN


def test_values_last_seen_before_the_close_are_not_trusted():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN - 1, 0)
    (closed,) = asm.update([row(1)], T0 + MIN + 5, 0)
    assert closed.bar.open_ms == T0
    assert not closed.trusted


@pytest.mark.parametrize("tolerance, trusted", [(100, True), (99, False), (0, False)])
def test_tolerance_for_an_early_final_update(tolerance, trusted):
    asm = CandleAssembler(M1, tolerance_ms=tolerance)
    asm.update([row(0)], T0 + MIN - 100, 0)
    (closed,) = asm.update([row(1)], T0 + MIN + 10, 0)
    assert closed.trusted is trusted


def test_a_reconnect_between_the_final_update_and_the_successor_is_not_trusted():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN, 0)
    (closed,) = asm.update([row(1)], T0 + MIN + 10, 1)
    assert not closed.trusted


def test_a_burst_with_the_previous_final_and_the_next_first_closes_the_previous():
    asm = CandleAssembler(M1)
    asm.update([row(0, 100.3)], T0 + 30_000, 0)
    out = asm.update([row(1), row(0, 100.8)], T0 + MIN + 20, 0)  # unsorted on purpose
    assert [(c.bar.open_ms, c.bar.close, c.trusted) for c in out] == [(T0, 100.8, True)]
    assert asm.forming.open_ms == T0 + MIN


def test_one_update_can_close_several_candles_oldest_first():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + 1000, 0)
    out = asm.update([row(2), row(1), row(3)], T0 + 3 * MIN + 1, 0)
    assert [c.bar.open_ms for c in out] == [T0, T0 + MIN, T0 + 2 * MIN]
    # candle 0's last update came before its close; 1 and 2 were last seen after theirs
    assert [c.trusted for c in out] == [False, True, True]


def test_stale_rows_are_ignored_and_counted():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN, 0)
    asm.update([row(1, 101.4)], T0 + MIN + 10, 0)
    assert asm.update([row(0, 999.0)], T0 + MIN + 20, 0) == []
    assert asm.stale == 1
    assert asm.forming.open_ms == T0 + MIN
    assert asm.forming.close == 101.4
    (closed,) = asm.update([row(2)], T0 + 2 * MIN + 10, 0)
    assert closed.bar.open_ms == T0 + MIN  # candle 0 is not closed twice


def test_first_update_closes_nothing():
    asm = CandleAssembler(M1)
    assert asm.update([row(5)], T0, 0) == []
    assert asm.stale == 0


def test_forget_through_drops_a_forming_candle_delivered_elsewhere():
    asm = CandleAssembler(M1)
    asm.update([row(3)], T0 + 3 * MIN + 5, 0)
    asm.forget_through(T0 + 3 * MIN)
    assert asm.forming is None
    assert asm.update([row(4)], T0 + 4 * MIN + 5, 0) == []  # candle 3 is not closed again


def test_forget_through_keeps_a_newer_forming_candle():
    asm = CandleAssembler(M1)
    asm.update([row(3)], T0 + 3 * MIN + 5, 0)
    asm.forget_through(T0 + 2 * MIN)
    assert asm.forming.open_ms == T0 + 3 * MIN


@pytest.mark.parametrize("bad", [[T0 + MIN, 1.0, 2.0], None, [T0 + MIN, None, 2, 1, 1.5, 3]])
def test_a_garbled_row_is_counted_and_skipped(bad):
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN, 0)
    assert asm.update([bad], T0 + MIN + 5, 0) == []
    assert asm.malformed == 1
    assert asm.forming.open_ms == T0  # the garbled row did not replace the forming candle


def test_a_garbled_frame_after_the_last_good_update_makes_the_candle_untrusted():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN, 0)  # would be trusted on its own
    asm.update([[T0, "garbled"]], T0 + MIN + 5, 0)
    (closed,) = asm.update([row(1)], T0 + MIN + 10, 0)
    assert closed.bar.open_ms == T0
    assert not closed.trusted


def test_a_garbled_row_beside_the_successor_makes_the_closed_candle_untrusted():
    asm = CandleAssembler(M1)
    asm.update([row(0)], T0 + MIN, 0)
    (closed,) = asm.update([[T0, "garbled"], row(1)], T0 + MIN + 10, 0)
    assert not closed.trusted
    assert asm.malformed == 1
    # the next candle, whose final update (a change) is seen intact after its close, is
    # trusted again
    asm.update([row(1, 101.7)], T0 + 2 * MIN, 0)
    (closed,) = asm.update([row(2)], T0 + 2 * MIN + 10, 0)
    assert closed.trusted
