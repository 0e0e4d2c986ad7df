"""sync.Turns: one close time per cerebro turn, the earliest held; nobody holding a bar sets
nothing; a bar arriving during the turn is admitted only at the turn's time."""

from __future__ import annotations

from backtrader_ccxt.sync import Turns


class Member:
    def __init__(self, held: int | None = None) -> None:
        self.held = held
        self.peeks = 0

    def sync_peek(self) -> int | None:
        self.peeks += 1
        return self.held


def test_the_earliest_held_time_is_the_turns_time():
    a, b, c = Member(3000), Member(2000), Member(None)  # c is silent: holds nobody up
    turns = Turns()
    turns.enter(a, [a, b, c])
    assert turns.turn_ms == 2000
    assert not turns.admit(3000)  # a waits for a later turn
    turns.enter(b, [a, b, c])
    assert turns.admit(2000)
    turns.enter(c, [a, b, c])
    assert not turns.admit(1000)  # arrived during the turn, earlier: waits (no rewind)
    assert (a.peeks, b.peeks, c.peeks) == (1, 1, 1)  # one snapshot per turn


def test_a_member_entering_again_starts_a_new_turn_with_a_new_snapshot():
    a, b = Member(1000), Member(2000)
    turns = Turns()
    turns.enter(a, [a, b])
    turns.enter(b, [a, b])
    assert turns.turn_ms == 1000
    a.held = 3000
    turns.enter(a, [a, b])  # next turn
    assert turns.turn_ms == 2000 and a.peeks == 2


def test_when_nobody_holds_a_bar_the_first_delivered_sets_the_time():
    a, b = Member(None), Member(None)
    turns = Turns()
    turns.enter(a, [a, b])
    assert turns.turn_ms is None
    assert turns.admit(5000)  # a's bar arrived while it waited
    turns.enter(b, [a, b])
    assert turns.admit(5000) and not turns.admit(6000)
