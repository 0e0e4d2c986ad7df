"""StreamMachine: every ordering of frames, breaks and REST answers that matters, in
milliseconds, against a fake venue and a manual clock (no I/O, no thread)."""

from __future__ import annotations

from datetime import datetime, timezone

import pytest

from backtrader_ccxt.bars import Bar, Status
from backtrader_ccxt.errors import FatalExchangeError, RetryableError
from backtrader_ccxt.live.events import Broken, Fatal, Frame, Healthy
from backtrader_ccxt.live.streammachine import FOREVER, StreamMachine
from backtrader_ccxt.paging import Page
from backtrader_ccxt.spec import FeedSpec
from backtrader_ccxt.timeframes import parse

from .test_paging import Venue, make_rows

M1 = parse("1m")
MIN = 60_000
GRACE = 1000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)
HISTORY = 5  # closed candles before the start
START = T0 + HISTORY * MIN  # the candle opening here is forming when the feed starts
NOW0 = START + GRACE + 10  # when the feed starts: the last history candle is a grace old
ROWS = make_rows(M1, T0, 60)


def spec(**kw) -> FeedSpec:
    base = dict(symbol="BTC/USDT", tf=M1, since_ms=T0, page_limit=1000, grace_ms=GRACE)
    base.update(kw)
    return FeedSpec(**base)


def row(i: int) -> list:
    return list(ROWS[i])


def partial(i: int, part: float = 0.5) -> list:
    """An earlier state of candle ``i``: less volume, a close between open and close."""
    t, o, h, low, c, v = ROWS[i]
    close = o + (c - o) * part
    return [t, o, max(o, close, low + (h - low) * part), low, close, v * part]


class Harness:
    """Drives a machine like the manager does: REST pages answered at once by ``venue``."""

    def __init__(self, machine: StreamMachine, venue: Venue, now: int) -> None:
        self.m = machine
        self.venue = venue
        self.now = now
        self.out: list = []
        self.pages: list[Page] = []

    def settle(self) -> object:
        """Do what the machine asks until it waits; return what it waits for."""
        for _ in range(10_000):
            self._drain()
            action = self.m.next_action(self.now)
            self._drain()
            if not isinstance(action, Page):
                return action
            self.pages.append(action)
            try:
                rows = self.venue.fetch(action.since_ms, action.limit, self.now)
            except (RetryableError, FatalExchangeError) as exc:
                self.m.on_failure(exc, self.now)
            else:
                self.m.on_rows(rows, self.now)
        pytest.fail("the machine did not settle")

    def at(self, t: int, *events) -> object:
        """Advance the clock to ``t``, deliver ``events`` in order, settle."""
        assert t >= self.now
        self.now = t
        for event in events:
            self.m.on_event(event)
        return self.settle()

    def run_until(self, t: int) -> None:
        """Let time pass to ``t`` with no event: the machine's own waits fire."""
        while True:
            action = self.settle()
            if action is None or action == FOREVER or action > t:
                break
            self.now = max(self.now, int(action))
        self.now = t
        self.settle()

    def _drain(self) -> None:
        while self.m.outbox:
            self.out.append(self.m.outbox.popleft())

    def bars(self) -> list[Bar]:
        return [x for x in self.out if isinstance(x, Bar)]

    def opens(self) -> list[int]:
        return [b.open_ms for b in self.bars()]

    def codes(self) -> list[str]:
        return [x.code for x in self.out if isinstance(x, Status)]


def started(flagged: bool = True, margin: int = 0, final_lag: int = 0, **kw) -> Harness:
    m = StreamMachine(spec(**kw), final_lag_ms=final_lag, margin_ms=margin)
    h = Harness(m, Venue(M1, ROWS), NOW0)
    h.settle()
    assert h.opens() == [T0 + i * MIN for i in range(HISTORY)]
    assert h.codes() == ["LIVE"]
    h.flagged = flagged
    h.pages.clear()
    return h


def close(i: int) -> int:
    return T0 + (i + 1) * MIN


def fin(i: int, recv: int | None = None, epoch: int = 0) -> Frame:
    return Frame(row(i), True, close(i) if recv is None else recv, epoch)


def upd(i: int, recv: int, part: float = 0.5, epoch: int = 0, final=False) -> Frame:
    return Frame(partial(i, part), final, recv, epoch)


def check_exact(h: Harness, upto: int) -> None:
    """Every candle 0..upto once, in order, with the venue's final values."""
    assert [b.row() for b in h.bars()] == [row(i) for i in range(upto + 1)]


# -- the venue's own flag ----------------------------------------------------------------


def test_a_flagged_final_leaves_at_once_and_costs_no_rest():
    h = started()
    h.at(NOW0 + 500, upd(5, NOW0 + 500))
    h.at(close(5), fin(5))
    h.at(close(5) + 5, upd(6, close(5) + 5))
    h.at(close(6), fin(6))
    check_exact(h, 6)
    assert h.pages == []


def test_the_final_after_the_successors_first_update_is_waited_for():
    # OKX: the confirm frame of T comes after the first push of T+1
    h = started(final_lag=1500)
    h.at(close(5) - 100, upd(5, close(5) - 100))
    h.at(close(5) + 20, upd(6, close(5) + 20))  # successor first: closes nothing
    assert h.opens()[-1] == row(4)[0]
    h.at(close(5) + 900, fin(5, close(5) + 900))
    check_exact(h, 5)
    assert h.pages == []


def test_a_lost_final_is_confirmed_over_rest_at_close_plus_wait():
    h = started()
    h.at(close(5) - 100, upd(5, close(5) - 100))
    due = h.at(close(5) + 10, upd(6, close(5) + 10))
    assert due == close(5) + GRACE  # waiting for candle 5's final, not trusting the successor
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)
    assert len(h.pages) == 1


def test_a_resent_old_partial_after_the_final_changes_nothing():
    h = started()
    h.at(close(5), fin(5))
    h.at(close(5) + 3, upd(5, close(5) + 3, part=0.2))  # an older state of a delivered candle
    h.at(close(6), fin(6))
    check_exact(h, 6)
    assert h.m.stats["stream_stale"] == 1 and h.pages == []


def test_a_final_after_a_lost_final_waits_for_the_fill_of_the_gap():
    h = started()
    h.at(close(5) - 50, upd(5, close(5) - 50))  # candle 5's final is lost
    h.at(close(6), fin(6))  # candle 6's arrives (before 5's confirmation is due)
    check_exact(h, 6)  # 5 from REST first, then 6 from the stream
    assert [b.open_ms for b in h.bars()][-2:] == [row(5)[0], row(6)[0]]
    assert len(h.pages) == 1 and h.m.stats["stream_bars"] == 1


def test_finals_during_the_backfill_wait_for_the_history():
    venue = Venue(M1, ROWS)
    m = StreamMachine(spec(), margin_ms=0)
    h = Harness(m, venue, NOW0)
    first = m.next_action(h.now)
    assert isinstance(first, Page)
    # the stream delivers candle 5's final before the backfill's answer is in
    h.now = close(5)
    m.on_event(fin(5))
    assert not [x for x in m.outbox if isinstance(x, Bar)]
    m.on_rows(venue.fetch(first.since_ms, first.limit, NOW0), NOW0)
    h.settle()
    check_exact(h, 5)
    assert h.codes() == ["LIVE"]


def test_a_backfill_that_fails_is_retried_and_no_bar_leaves_before_it():
    fails = {"n": 2}

    def fail(now):
        if fails["n"]:
            fails["n"] -= 1
            return RetryableError("503")
        return None

    venue = Venue(M1, ROWS, fail=fail)
    m = StreamMachine(spec(reconnect_delay=1.0, max_reconnect_delay=1.0), margin_ms=0)
    h = Harness(m, venue, NOW0)
    wake = h.settle()
    assert h.codes() == ["CONNBROKEN"] and h.bars() == []
    h.at(close(5), fin(5))  # held: history first
    assert h.bars() == []
    h.run_until(close(5) + 5000)
    check_exact(h, 5)
    assert h.codes() == ["CONNBROKEN", "LIVE"] and wake > START


# -- the timing rule (no flag) -------------------------------------------------------------


def test_timing_trusts_a_change_seen_after_the_close_and_closed_by_the_successor():
    h = started()
    h.at(close(5) - 10_000, upd(5, close(5) - 10_000, final=None))
    h.at(close(5) + 2, Frame(row(5), None, close(5) + 2, 0))  # the final state, after close
    h.at(close(5) + 30, upd(6, close(5) + 30, part=0.1, final=None))
    check_exact(h, 5)
    assert h.pages == []


@pytest.mark.parametrize("seen_at, trusted", [(0, False), (4, False), (5, True)])
def test_timing_keeps_the_clock_margin(seen_at, trusted):
    # the clock is known to +-5 ms: a change seen 4 ms after the close may have been sent
    # before it (a late partial), so it proves nothing
    h = started(margin=5)
    h.at(close(5) + seen_at, Frame(row(5), None, close(5) + seen_at, 0))
    h.at(close(5) + 50, upd(6, close(5) + 50, part=0.1, final=None))
    assert (h.m.stats["stream_untrusted"] == 0) is trusted
    h.run_until(close(5) + GRACE)  # untrusted: the same bar, from REST a grace after the close
    check_exact(h, 5)
    assert len(h.pages) == (0 if trusted else 1)


def test_timing_distrusts_a_change_from_before_the_close():
    # the frame is the final's values, but it arrived 50 ms before the close
    h = started()
    h.at(close(5) - 50, Frame(row(5), None, close(5) - 50, 0))
    h.at(close(5) + 10, upd(6, close(5) + 10, part=0.1, final=None))
    assert h.pages == []  # REST may still be finalising candle 5: not before a grace
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)
    assert h.m.stats["stream_untrusted"] == 1 and len(h.pages) == 1


def test_timing_distrusts_a_break_between_the_last_change_and_the_successor():
    h = started()
    h.at(close(5) + 5, Frame(row(5), None, close(5) + 5, 0))
    h.at(close(5) + 10, Broken("drop"))
    h.at(close(5) + 400, Healthy(1), upd(6, close(5) + 400, part=0.1, epoch=1, final=None))
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)
    assert h.codes() == ["LIVE", "CONNBROKEN", "LIVE"]
    assert h.m.stats["stream_bars"] == 0  # candle 5 came from REST


def test_timing_ignores_a_state_that_goes_backwards():
    h = started()
    h.at(close(5) + 5, Frame(row(5), None, close(5) + 5, 0))
    h.at(close(5) + 8, upd(5, close(5) + 8, part=0.3, final=None))  # re-sent older partial
    h.at(close(5) + 20, upd(6, close(5) + 20, part=0.1, final=None))
    check_exact(h, 5)
    assert h.m.stats["stream_stale"] == 1 and h.pages == []


def test_timing_distrusts_a_candle_after_a_garbled_frame():
    h = started()
    h.at(close(5) + 5, Frame(row(5), None, close(5) + 5, 0))
    h.at(close(5) + 6, Frame([row(5)[0], "garbled"], None, close(5) + 6, 0))
    h.at(close(5) + 20, upd(6, close(5) + 20, part=0.1, final=None))
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)
    assert h.m.stats["stream_malformed"] == 1 and h.m.stats["stream_bars"] == 0


def test_a_partial_flag_is_never_closed_by_timing():
    # a venue that flags partials: its candle waits for the flagged final or REST
    h = started()
    h.at(close(5) + 5, Frame(row(5), False, close(5) + 5, 0))
    h.at(close(5) + 20, upd(6, close(5) + 20, part=0.1))
    assert h.m.stats["stream_bars"] == 0 and h.pages == []
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)


# -- breaks, quiet markets, the end ----------------------------------------------------


def test_a_gap_after_a_reconnect_is_filled_before_live():
    h = started()
    h.at(close(5), fin(5))
    h.at(close(5) + 100, Broken("drop"))
    # reconnected three candles later: 6, 7 and 8 were missed
    h.at(close(8) + 300, Healthy(1), upd(9, close(8) + 300, epoch=1))
    check_exact(h, 7)  # 8 closed 300 ms ago: REST may still be finalising it
    assert h.codes() == ["LIVE", "CONNBROKEN", "LIVE"]
    h.run_until(close(8) + GRACE)
    check_exact(h, 8)
    h.at(close(9), fin(9, epoch=1))
    check_exact(h, 9)


def test_confirmations_go_on_while_the_stream_is_broken():
    # a broken stream may stay down (or come back silent on a quiet market): REST keeps the
    # bars coming on time meanwhile
    h = started()
    h.at(close(5) - 10, Broken("drop"))
    assert h.settle() == close(5) + GRACE
    h.run_until(close(6) + GRACE)
    check_exact(h, 6)
    assert len(h.pages) == 2 and h.codes() == ["LIVE", "CONNBROKEN"]


def test_a_quiet_market_gets_its_bar_on_time_from_rest():
    h = started()
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)
    assert len(h.pages) == 1


def test_an_omitted_empty_candle_backs_off_and_never_spins():
    venue = Venue(M1, ROWS, omit=(row(5)[0],))
    m = StreamMachine(spec(), margin_ms=0)
    h = Harness(m, venue, NOW0)
    h.settle()
    h.run_until(close(5) + 30_000)
    assert 1 <= len(h.venue.calls) <= 8  # a few tries backing off, not one per loop turn
    h.at(close(6), fin(6))
    assert h.opens()[-1] == row(6)[0] and row(5)[0] not in h.opens()


def test_a_gap_rest_never_fills_is_taken_as_absent_after_a_few_tries():
    venue = Venue(M1, ROWS, omit=(row(5)[0], row(6)[0]))
    m = StreamMachine(spec(), margin_ms=0)
    h = Harness(m, venue, NOW0)
    h.settle()
    h.at(close(7), fin(7))
    h.run_until(close(7) + 20_000)
    assert h.opens()[-1] == row(7)[0]
    assert row(5)[0] not in h.opens() and row(6)[0] not in h.opens()


def test_todate_ends_the_feed():
    h = started(until_ms=row(7)[0])
    h.at(close(5), fin(5))
    h.at(close(6), fin(6))
    check_exact(h, 6)
    assert h.codes()[-1] == "DISCONNECTED" and h.m.done
    assert h.settle() is None


def test_a_fatal_stream_error_ends_the_feed():
    h = started()
    h.at(close(5) - 10, Fatal("bad symbol"))
    assert h.out[-1] == Status("DISCONNECTED", "bad symbol", fatal=True)
    assert h.settle() is None


def test_a_fatal_rest_error_ends_the_feed():
    venue = Venue(M1, ROWS, fail=lambda now: FatalExchangeError("BadSymbol"))
    m = StreamMachine(spec(), margin_ms=0)
    h = Harness(m, venue, NOW0)
    assert h.settle() is None
    assert h.out[-1].code == "DISCONNECTED" and h.out[-1].fatal


# -- the seam: history meets the stream's first candle -------------------------------------


def test_the_backfill_waits_for_the_stream_to_talk():
    m = StreamMachine(spec(), margin_ms=0, stream_first_ms=3000)
    h = Harness(m, Venue(M1, ROWS), NOW0)
    assert h.settle() == NOW0 + 3000 and h.pages == []  # no REST before the stream
    h.at(NOW0 + 500, Healthy(0))  # the connection's first frame: history now
    assert len(h.pages) == 1 and h.codes() == ["LIVE"]
    check_exact(h, 4)


def test_a_silent_stream_does_not_hold_the_history_back():
    m = StreamMachine(spec(), margin_ms=0, stream_first_ms=3000)
    h = Harness(m, Venue(M1, ROWS), NOW0)
    h.run_until(NOW0 + 3000)
    check_exact(h, 4)
    assert h.codes() == ["LIVE"]


def test_a_break_heals_only_with_a_walk_that_starts_after_the_stream_talks_again():
    h = started()
    h.at(close(5), fin(5))
    # a confirmation walk is asked for candle 6, and its answer is slow: meanwhile the
    # stream breaks, candle 7 closes unseen, and the stream comes back
    asked = close(6) + GRACE
    page = h.m.next_action(asked)
    assert isinstance(page, Page)
    h.m.on_event(Broken("drop"))
    h.now = close(7) + GRACE + 100
    h.m.on_event(Healthy(1))
    h.m.on_rows(h.venue.fetch(page.since_ms, page.limit, asked), asked)
    h.settle()
    assert len(h.pages) == 1  # the walk under way could not cover candle 7: a second one did
    check_exact(h, 7)
    assert h.codes() == ["LIVE", "CONNBROKEN", "LIVE"]


# -- found in review: each failed before its fix ------------------------------------------


class LateRest(Venue):
    """A venue whose REST finalises a candle ``lag`` ms after its close (its row shows an
    earlier state until then), as some venues' REST does."""

    def __init__(self, *args, lag: int = 300, **kw) -> None:
        super().__init__(*args, **kw)
        self.lag = lag

    def fetch(self, since: int, limit: int, now: int) -> list[list]:
        rows = super().fetch(since, limit, now)
        return [
            [r[0], r[1], r[2], r[3], (r[1] + r[4]) / 2, r[5] / 2]
            if M1.close_of(r[0]) + self.lag > now
            else r
            for r in rows
        ]


def test_an_untrusted_close_is_not_fetched_while_rest_may_still_be_finalising_it():
    m = StreamMachine(spec(), margin_ms=0)
    h = Harness(m, LateRest(M1, ROWS), NOW0)
    h.settle()
    h.at(close(5) - 50, Frame(partial(5, 0.9), None, close(5) - 50, 0))
    h.at(close(5) + 10, upd(6, close(5) + 10, part=0.1, final=None))
    h.run_until(close(5) + GRACE)
    check_exact(h, 5)


def test_a_final_in_hand_beats_a_rest_page_in_flight():
    # the confirmation leaves at close + wait; the venue's final arrives while it is in
    # flight, and the REST answer still shows an earlier state of the candle
    h = started(final_lag=1000)
    asked = close(5) + 1000
    page = h.m.next_action(asked)
    assert isinstance(page, Page)
    h.m.on_event(fin(5, recv=close(5) + 1200))
    h.m.on_rows([row(i) for i in range(5)] + [partial(5, 0.9), partial(6, 0.01)], asked)
    h.settle()
    check_exact(h, 5)


def test_nothing_at_or_after_todate_leaves_even_after_an_omitted_candle():
    until = row(8)[0]
    venue = Venue(M1, ROWS, omit=(row(7)[0],), forming=False)
    m = StreamMachine(spec(until_ms=until), margin_ms=0)
    h = Harness(m, venue, NOW0)
    h.settle()
    h.at(close(5), fin(5))
    h.at(close(6), fin(6))
    h.run_until(close(7) + 30_000)  # confirmations for 7 find nothing
    if not h.m.done:
        h.at(close(8), fin(8))  # the final of the candle opening at todate
        h.run_until(close(8) + 5000)
    assert [o for o in h.opens() if o >= until] == []
    assert h.codes()[-1] == "DISCONNECTED"


def test_a_backfill_after_a_break_before_the_first_frame_still_goes_live():
    # the first watch calls fail (a break before the stream ever talked); then it talks
    m = StreamMachine(spec(), margin_ms=0, stream_first_ms=3000)
    h = Harness(m, Venue(M1, ROWS), NOW0)
    h.settle()
    h.at(NOW0 + 100, Broken("reset"))
    h.at(NOW0 + 400, Healthy(1))
    check_exact(h, 4)
    assert h.codes()[-1] == "LIVE" and not h.m.stream_broken


def test_a_stream_that_talks_just_after_a_close_waits_for_that_candle_to_settle():
    # candle 4 closed 100 ms before the stream's first frame: its final was never streamed
    # to us, and REST is trusted a grace after the close. The backfill waits for that, so
    # LIVE means caught up: no REST call after it
    m = StreamMachine(spec(), margin_ms=0, stream_first_ms=3000)
    h = Harness(m, Venue(M1, ROWS), START + 100)
    h.settle()
    assert h.at(START + 100, Healthy(0)) == START + GRACE and h.pages == []
    h.run_until(START + GRACE)
    check_exact(h, 4)
    assert h.codes() == ["LIVE"] and len(h.pages) == 1
    h.at(close(5), fin(5))
    check_exact(h, 5)
    assert len(h.pages) == 1


class SlowListing(Venue):
    """A venue whose REST lists a candle only ``lag`` ms after its close."""

    def __init__(self, *args, lag: int, **kw) -> None:
        super().__init__(*args, **kw)
        self.lag = lag

    def fetch(self, since: int, limit: int, now: int) -> list[list]:
        rows = super().fetch(since, limit, now)
        return [r for r in rows if M1.close_of(r[0]) + self.lag <= now]


def test_the_last_candle_before_todate_gets_a_look_after_its_due_time():
    # a quiet stream, and REST lists candle 6 (the last before todate) 54 s after its close:
    # the confirmations back off; a bar after its due time one more look finds it
    until = row(7)[0]
    venue = SlowListing(M1, ROWS, lag=54_000)
    m = StreamMachine(spec(until_ms=until), margin_ms=0)
    h = Harness(m, venue, NOW0 + 60_000)
    h.settle()
    h.run_until(close(6) + 3 * MIN)
    assert h.opens()[-1] == row(6)[0]
    assert h.codes()[-1] == "DISCONNECTED"


def test_confirmations_wait_longer_while_finals_arrive_late():
    # finals have been landing 800 ms after their close (a loop busy with many streams): a
    # confirmation at close + grace (1 s) would ask REST for what the stream brings at
    # +800 ms; the wait stretches to 1.5 x the recent delay (capped at a bar)
    h = started()
    h.at(close(5) + 800, fin(5, recv=close(5) + 800))
    due = h.settle()
    assert close(6) + GRACE < due <= close(6) + 1200  # the estimate decays (half-life 10 min)
    h.at(close(6) + 1100, fin(6, recv=close(6) + 1100))
    check_exact(h, 6)
    assert h.pages == []


def _peers(n: int):
    from backtrader_ccxt.live.streammachine import FinalLag

    shared = FinalLag()
    hs = []
    for _ in range(n):
        h = Harness(StreamMachine(spec(), final_lag=shared), Venue(M1, ROWS), NOW0)
        h.settle()
        assert h.codes() == ["LIVE"]
        h.pages.clear()
        hs.append(h)
    return hs


def test_a_venue_late_with_every_final_gets_no_storm_of_confirmations():
    # Finals flowed for candle 5; for candle 6 none has come for any feed by its due time:
    # the venue is late with all of them (or its sender is behind), not one stream lost its
    # final. 1,000 feeds confirming at once would each ask REST for what the stream is
    # about to bring; they wait (at most a bar), and the finals come.
    a, b = _peers(2)
    for h in (a, b):
        h.at(close(5), fin(5))
    late = close(6) + GRACE + 700
    for h in (a, b):
        h.run_until(late - 1)
        assert h.pages == []  # deferred, past the due time
    for h in (a, b):
        h.at(late, fin(6, recv=late))
        check_exact(h, 6)
        assert h.pages == []
    assert a.m.stats["confirm_deferred"] > 0


def test_a_final_lost_by_one_feed_is_confirmed_once_a_peer_has_its_own():
    a, b = _peers(2)
    for h in (a, b):
        h.at(close(5), fin(5))
    a.at(close(6) + 20, fin(6, recv=close(6) + 20))  # b's final of candle 6 is lost
    b.run_until(close(6) + GRACE)
    check_exact(b, 6)
    assert len(b.pages) == 1  # confirmed at its due time: the venue did send candle 6's finals


def test_when_no_final_comes_for_anyone_the_confirmation_goes_a_bar_after_the_close():
    a, b = _peers(2)
    for h in (a, b):
        h.at(close(5), fin(5))
    for h in (a, b):
        h.run_until(close(6) + MIN - 1)
        assert h.pages == []
        h.run_until(close(6) + MIN)
        check_exact(h, 6)
        assert len(h.pages) == 1


def test_a_single_feed_confirms_at_its_due_time_as_before():
    (h,) = _peers(1)
    h.at(close(5), fin(5))
    h.run_until(close(6) + GRACE)
    check_exact(h, 6)
    assert len(h.pages) == 1


def test_a_dropped_peer_no_longer_counts():
    a, b = _peers(2)
    b.m.stop()
    a.at(close(5), fin(5))
    a.run_until(close(6) + GRACE)  # alone again: confirmed at its due time
    check_exact(a, 6)
    assert len(a.pages) == 1
