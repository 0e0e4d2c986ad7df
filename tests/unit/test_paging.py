"""REST pagination and the live poll schedule, against a hand-written fake venue.

``Venue`` is also used by ``test_polling``.
"""

import csv
import math
from datetime import datetime, timezone
from pathlib import Path

import pytest

from backtrader_ccxt.bars import Bar
from backtrader_ccxt.paging import Page, Paginator, PollSchedule
from backtrader_ccxt.timeframes import Timeframe, parse

M1 = parse("1m")
MIN = 60_000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def ms(*args) -> int:
    return int(datetime(*args, tzinfo=timezone.utc).timestamp() * 1000)


def make_rows(tf: Timeframe, start: int, n: int) -> list[list]:
    """``n`` final candles from ``start``, each with distinct values."""
    out, t = [], start
    for i in range(n):
        o = 100.0 + i
        out.append([t, o, o + 3, o - 2, o + 1, 10.0 + i])
        t = tf.close_of(t)
    return out


class Venue:
    """``fetch_ohlcv(since, limit)`` with Binance's rules over a fixed history of final candles.

    A candle is listed once it has opened; while it is forming its close and volume are partial
    (so a test sees it if one is ever delivered as final). A page holds at most ``limit`` rows
    with open in [since, since + limit candles) when ``bounded``, else the next ``limit`` rows
    at or after ``since`` (what binance does across gaps). The other knobs copy other venues.
    """

    def __init__(
        self,
        tf: Timeframe,
        rows: list[list],
        *,
        bounded: bool = True,
        forming: bool = True,
        omit: tuple[int, ...] = (),
        repeat_previous: bool = False,
        duplicate_last: bool = False,
        reverse: bool = False,
        fail=None,
    ) -> None:
        self.tf = tf
        self.rows = sorted(rows)
        self.bounded = bounded
        self.forming = forming
        self.omit = set(omit)
        self.repeat_previous = repeat_previous
        self.duplicate_last = duplicate_last
        self.reverse = reverse
        self.fail = fail  # callable(now_ms) -> exception to raise, or None
        self.calls: list[tuple[int, int, int]] = []

    def partial(self, row: list) -> list:
        t, o, h, low, c, v = row
        return [t, o, h, low, (o + c) / 2, v / 2]

    def visible(self, now: int) -> list[list]:
        out = []
        for r in self.rows:
            if r[0] in self.omit or r[0] > now:
                continue
            if self.tf.close_of(r[0]) > now:
                if self.forming:
                    out.append(self.partial(r))
                continue
            out.append(list(r))
        return out

    def fetch(self, since: int, limit: int, now: int) -> list[list]:
        self.calls.append((since, limit, now))
        if self.fail is not None and (exc := self.fail(now)) is not None:
            raise exc
        seen = self.visible(now)
        rows = [r for r in seen if r[0] >= since]
        if self.bounded:
            end = since
            for _ in range(limit):
                end = self.tf.close_of(end)
            rows = [r for r in rows if r[0] < end]
        rows = rows[:limit]
        if self.repeat_previous:
            rows = ([r for r in seen if r[0] < since][-1:] + rows)[:limit]
        if self.duplicate_last and rows:
            rows = rows + [list(rows[-1])]
        if self.reverse:
            rows = rows[::-1]
        return [list(r) for r in rows]


def walk(pager: Paginator, venue: Venue, now: int) -> list[Bar]:
    bars: list[Bar] = []
    for _ in range(10_000):
        page = pager.next_page(now)
        if page is None:
            return bars
        bars += pager.accept(venue.fetch(page.since_ms, page.limit, now), now)
    pytest.fail("the walk did not end")


def expected_rows(tf, rows, now, since, until=None, omit=()):
    return [
        r
        for r in rows
        if r[0] not in omit
        and r[0] >= since
        and (until is None or r[0] < until)
        and tf.close_of(r[0]) <= now
    ]


def assert_clean(bars: list[Bar], tf: Timeframe) -> None:
    opens = [b.open_ms for b in bars]
    assert opens == sorted(set(opens)), "bars must be strictly increasing, without duplicates"
    assert all(b.close_ms == tf.close_of(b.open_ms) for b in bars)


def shared_data() -> Path:
    """The ``shared/data`` folder beside the repository root; skip when it is absent."""
    path = Path(__file__).resolve().parents[3] / "shared" / "data"
    if not path.is_dir():
        pytest.skip(f"recorded market data not found at {path}")
    return path


def load_csv(path: Path) -> list[list]:
    with path.open(newline="") as f:
        return [
            [int(r["timestamp_ms"])]
            + [float(r[k]) for k in ("open", "high", "low", "close", "volume")]
            for r in csv.DictReader(f)
        ]


# --- Paginator ------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "closed, limit",
    [
        (2000, 1000),  # an exact multiple of the page size
        (2003, 1000),  # a short last page
        (31, 10),  # three pages and one row
        (5, 1),  # one row per page
        (7, 1000),  # everything fits in one page
    ],
)
def test_walk_delivers_every_closed_candle_once(closed, limit):
    rows = make_rows(M1, T0, closed + 1)  # the extra one is forming at `now`
    now = T0 + closed * MIN + 25_000
    venue = Venue(M1, rows)
    pager = Paginator(M1, T0, limit)
    bars = walk(pager, venue, now)
    assert [b.row() for b in bars] == rows[:closed]
    assert_clean(bars, M1)
    assert pager.pages == math.ceil(closed / limit)
    assert pager.done
    assert pager.next_page(now) is None


def test_walk_when_the_last_candle_closed_exactly_now():
    rows = make_rows(M1, T0, 21)
    now = T0 + 20 * MIN  # candle 19 closes now, candle 20 opens now
    bars = walk(Paginator(M1, T0, 10), Venue(M1, rows), now)
    assert [b.row() for b in bars] == rows[:20]


def test_pages_start_just_past_the_last_row():
    rows = make_rows(M1, T0, 26)
    venue = Venue(M1, rows)
    walk(Paginator(M1, T0, 10), venue, T0 + 25 * MIN + 1)
    assert [c[0] for c in venue.calls] == [T0, T0 + 10 * MIN, T0 + 20 * MIN]
    assert all(c[1] == 10 for c in venue.calls)


def test_next_page_is_the_planned_call():
    pager = Paginator(M1, T0, 500)
    assert pager.next_page(T0 + 10 * MIN) == Page(T0, 500)


def test_nothing_to_fetch_while_the_first_candle_is_forming():
    pager = Paginator(M1, T0, 100)
    assert pager.next_page(T0 + 59_999) is None
    assert pager.pages == 0


@pytest.mark.parametrize("limit", [0, -1])
def test_page_limit_must_be_positive(limit):
    with pytest.raises(ValueError):
        Paginator(M1, T0, limit)


@pytest.mark.parametrize("until_index", [5, 10, 17, 29])
def test_until_inside_or_at_the_end_of_a_page(until_index):
    rows = make_rows(M1, T0, 40)
    now = T0 + 39 * MIN + 1
    until = T0 + until_index * MIN
    pager = Paginator(M1, T0, 10, until_ms=until)
    bars = walk(pager, Venue(M1, rows), now)
    assert [b.row() for b in bars] == rows[:until_index]
    assert pager.pages == math.ceil(until_index / 10)


def test_a_late_answer_showing_a_candle_past_until_still_owes_the_last_one():
    """The request left while the last candle before ``until`` was forming; the venue
    answered (or ccxt's rate limiter sent it) after ``until``, so the page also lists the
    candle at ``until``. The forming row is held back and the walk ends short of ``until``,
    so the next poll takes the last candle (it skipped to ``until`` and lost it before)."""
    rows = make_rows(M1, T0, 12)
    until = T0 + 10 * MIN  # the last wanted candle opens at T0 + 9 min
    pager = Paginator(M1, T0 + 8 * MIN, 1000, until_ms=until)
    sent_at = T0 + 9 * MIN + 30_000  # candle 9 still forming when the request left
    bars = pager.accept(rows[8:11], sent_at)  # served at T0 + 10 min: candle 10 listed
    assert [b.row() for b in bars] == rows[8:9]
    assert pager.done and pager.cursor == T0 + 9 * MIN
    later = Paginator(M1, pager.cursor, 1000, until_ms=until)
    assert [b.row() for b in later.accept(rows[9:12], until + 1)] == rows[9:10]
    assert later.cursor == until


def test_a_page_with_nothing_before_until_but_a_candle_past_it_ends_the_walk_at_until():
    rows = make_rows(M1, T0, 12)
    pager = Paginator(M1, T0 + 9 * MIN, 1000, until_ms=T0 + 10 * MIN)
    assert pager.accept(rows[10:12], T0 + 12 * MIN) == []  # candle 9 omitted by the venue
    assert pager.done and pager.cursor == T0 + 10 * MIN


@pytest.mark.parametrize("bounded", [True, False])
def test_history_that_starts_after_since(bounded):
    listing = T0 + 2500 * MIN
    rows = make_rows(M1, listing, 301)
    now = listing + 300 * MIN + 1
    pager = Paginator(M1, T0, 1000)
    bars = walk(pager, Venue(M1, rows, bounded=bounded), now)
    assert [b.row() for b in bars] == rows[:300]
    assert_clean(bars, M1)


def test_empty_windows_are_skipped_one_page_at_a_time():
    listing = T0 + 25 * MIN
    rows = make_rows(M1, listing, 6)
    venue = Venue(M1, rows)
    bars = walk(Paginator(M1, T0, 10), venue, listing + 5 * MIN + 1)
    assert [b.row() for b in bars] == rows[:5]
    assert [c[0] for c in venue.calls] == [T0, T0 + 10 * MIN, T0 + 20 * MIN, listing + 5 * MIN][
        : len(venue.calls)
    ]


def test_an_empty_window_that_reaches_now_ends_the_walk():
    rows = make_rows(M1, T0, 5)
    now = T0 + 40 * MIN + 1  # no trades since candle 4: nothing listed after it
    venue = Venue(M1, rows)
    pager = Paginator(M1, T0, 10)
    bars = walk(pager, venue, now)
    assert [b.row() for b in bars] == rows
    assert pager.done
    # past windows are skipped (no trades looks like no listing); the one reaching now ends it
    assert [c[0] for c in venue.calls] == [T0 + k * MIN for k in (0, 5, 15, 25, 35)]


@pytest.mark.parametrize("bounded", [True, False])
def test_a_quiet_gap_longer_than_a_page(bounded):
    rows = make_rows(M1, T0, 60)
    gap = tuple(r[0] for r in rows[12:37])
    now = T0 + 59 * MIN + 1
    bars = walk(Paginator(M1, T0, 10), Venue(M1, rows, omit=gap, bounded=bounded), now)
    assert [b.row() for b in bars] == expected_rows(M1, rows, now, T0, omit=gap)
    assert_clean(bars, M1)


@pytest.mark.parametrize("bounded", [True, False])
def test_candles_without_trades_omitted_inside_pages(bounded):
    rows = make_rows(M1, T0, 50)
    gaps = tuple(rows[i][0] for i in (0, 3, 9, 10, 11, 19, 20, 30, 48))
    now = T0 + 49 * MIN + 1
    bars = walk(Paginator(M1, T0, 10), Venue(M1, rows, omit=gaps, bounded=bounded), now)
    assert [b.row() for b in bars] == expected_rows(M1, rows, now, T0, omit=gaps)
    assert_clean(bars, M1)


def test_the_previous_row_returned_again_is_not_duplicated():
    rows = make_rows(M1, T0, 31)
    now = T0 + 30 * MIN + 1
    bars = walk(Paginator(M1, T0, 10), Venue(M1, rows, repeat_previous=True), now)
    assert [b.row() for b in bars] == rows[:30]
    assert_clean(bars, M1)


def test_duplicate_rows_in_a_page_are_not_duplicated():
    rows = make_rows(M1, T0, 31)
    now = T0 + 30 * MIN + 1
    bars = walk(Paginator(M1, T0, 7), Venue(M1, rows, duplicate_last=True), now)
    assert [b.row() for b in bars] == rows[:30]
    assert_clean(bars, M1)


def test_rows_out_of_order_within_a_page():
    rows = make_rows(M1, T0, 31)
    now = T0 + 30 * MIN + 1
    pager = Paginator(M1, T0, 10)
    bars = walk(pager, Venue(M1, rows, reverse=True), now)
    assert [b.row() for b in bars] == rows[:30]
    assert pager.pages == 3


def test_the_forming_candle_is_never_delivered():
    rows = make_rows(M1, T0, 12)
    now = T0 + 11 * MIN + 59_999
    bars = walk(Paginator(M1, T0, 5), Venue(M1, rows), now)
    assert [b.row() for b in bars] == rows[:11]
    assert all(b.close_ms <= now for b in bars)


def test_a_page_of_only_forming_candles_ends_the_walk():
    pager = Paginator(M1, T0, 10)
    now = T0 + MIN + 1
    assert pager.next_page(now) == Page(T0, 10)
    forming = [T0 + MIN, 1.0, 2.0, 0.5, 1.5, 3.0]
    assert pager.accept([forming], now) == []
    assert pager.next_page(now) is None


def test_drop_newest_on_a_venue_that_lists_only_closed_candles():
    rows = make_rows(M1, T0, 26)
    now = T0 + 25 * MIN + 1  # candle 24 has just closed, candle 25 is forming (not listed)
    pager = Paginator(M1, T0, 10, drop_newest=True)
    bars = walk(pager, Venue(M1, rows, forming=False), now)
    assert [b.row() for b in bars] == rows[:24]  # candle 24 is held back
    assert pager.cursor == rows[24][0]  # and asked for again next time


def test_drop_newest_keeps_older_pages_whole():
    rows = make_rows(M1, T0, 26)
    now = T0 + 40 * MIN  # rows end at 25: every row is long closed
    bars = walk(Paginator(M1, T0, 10, drop_newest=True), Venue(M1, rows, forming=False), now)
    assert [b.row() for b in bars] == rows


def test_drop_newest_when_the_venue_also_lists_the_forming_candle():
    # feed.py: "distrust the newest closed row of a REST page that reaches the present".
    rows = make_rows(M1, T0, 26)
    now = T0 + 25 * MIN + 1
    bars = walk(Paginator(M1, T0, 10, drop_newest=True), Venue(M1, rows), now)
    assert [b.row() for b in bars] == rows[:24]


def test_drop_newest_trusts_the_newest_row_once_its_grace_has_passed():
    """A poll due at close + grace (the schedule's due time) trusts the candle it polls for:
    drop_newest costs no request and no bar of latency there."""
    rows = make_rows(M1, T0, 26)
    close_24 = T0 + 25 * MIN
    for now, want in ((close_24 + 499, 24), (close_24 + 500, 25), (close_24 + 9_000, 25)):
        pager = Paginator(M1, T0, 10, drop_newest=True, newest_grace_ms=500)
        bars = walk(pager, Venue(M1, rows), now)
        assert [b.row() for b in bars] == rows[:want], now
    # the schedule's first due time for candle 24 is exactly where it becomes trusted
    schedule = PollSchedule(M1, rows[24][0], grace_ms=500)
    assert schedule.due_ms() == close_24 + 500


def test_monthly_candles():
    tf = parse("1M")
    rows = make_rows(tf, ms(2023, 1, 1), 15)  # Jan 2023 .. Mar 2024, Mar 2024 forming
    now = ms(2024, 3, 10)
    pager = Paginator(tf, ms(2023, 1, 1), 5)
    bars = walk(pager, Venue(tf, rows), now)
    assert [b.row() for b in bars] == rows[:14]
    assert [b.dt for b in bars[:3]] == [
        datetime(2023, 2, 1),
        datetime(2023, 3, 1),
        datetime(2023, 4, 1),
    ]
    assert bars[12].dt == datetime(2024, 2, 1)
    assert pager.pages == 3


@pytest.mark.parametrize("limit", [1, 2])
def test_monthly_history_that_starts_after_since(limit):
    tf = parse("1M")
    rows = make_rows(tf, ms(2021, 3, 1), 10)  # listed in March 2021
    now = ms(2022, 1, 15)
    bars = walk(Paginator(tf, ms(2021, 1, 1), limit), Venue(tf, rows), now)
    assert [b.row() for b in bars] == rows[:10]


def test_recorded_binance_minutes():
    path = shared_data() / "ohlcv" / "binance_data_vision" / "normalized" / "BTCUSDT-1m.csv"
    rows = load_csv(path)
    assert len(rows) == 2880
    now = rows[-1][0] + 30_000  # the last recorded candle is forming
    pager = Paginator(M1, rows[0][0], 1000)
    bars = walk(pager, Venue(M1, rows, repeat_previous=True), now)
    assert [b.row() for b in bars] == rows[:-1]
    assert pager.pages == 3
    assert bars[0].dt == datetime(2022, 9, 5, 0, 1)
    assert bars[-1].dt == datetime(2022, 9, 6, 23, 59)


# --- PollSchedule ---------------------------------------------------------------------------


def test_due_is_close_plus_grace():
    s = PollSchedule(M1, T0, 1500)
    assert s.due_ms() == T0 + MIN + 1500


def test_negative_grace_is_zero():
    assert PollSchedule(M1, T0, -5).due_ms() == T0 + MIN


def test_monthly_due():
    s = PollSchedule(parse("1M"), ms(2024, 2, 1), 2000)
    assert s.due_ms() == ms(2024, 3, 1) + 2000


def test_delivered_waits_for_the_next_candle():
    s = PollSchedule(M1, T0, 1000)
    s.delivered(T0)
    assert s.next_open_ms == T0 + MIN
    assert s.due_ms() == T0 + 2 * MIN + 1000
    s.delivered(T0 + 4 * MIN)  # several bars in one poll
    assert s.due_ms() == T0 + 6 * MIN + 1000


def test_missed_backs_off_but_never_past_the_next_candle_due():
    s = PollSchedule(M1, T0, 1000)
    now = s.due_ms()
    retries = []
    for _ in range(8):
        s.missed(now)
        assert s.due_ms() > now
        now = s.due_ms()
        retries.append(now - T0)
    assert retries == [62_000, 64_000, 68_000, 76_000, 92_000, 121_000, 181_000, 241_000]
    assert s.next_open_ms == T0  # still waiting for the same candle


def test_missed_with_zero_grace_still_waits():
    s = PollSchedule(M1, T0, 0)
    s.missed(T0 + MIN)
    assert s.due_ms() == T0 + MIN + 50


def test_delivered_resets_the_backoff():
    s = PollSchedule(M1, T0, 1000)
    for now in (T0 + 61_000, T0 + 62_000, T0 + 64_000):
        s.missed(now)
    s.delivered(T0)
    assert s.due_ms() == T0 + 2 * MIN + 1000
    s.missed(T0 + 2 * MIN + 1000)
    assert s.due_ms() == T0 + 2 * MIN + 2000


def test_missed_on_monthly_candles_is_capped_at_the_next_month():
    tf = parse("1M")
    s = PollSchedule(tf, ms(2024, 1, 1), 60_000)
    now = s.due_ms()
    assert now == ms(2024, 2, 1) + 60_000
    s.missed(now)
    assert s.due_ms() == ms(2024, 2, 1) + 120_000
    for _ in range(30):
        s.missed(now)
        now = s.due_ms()
        assert now <= ms(2024, 3, 1) + 60_000
    s.missed(ms(2024, 2, 29, 23, 59))  # late in a leap February
    assert s.due_ms() == ms(2024, 3, 1) + 60_000
