"""PollingMachine: backfill then one poll per bar, driven by a fake venue and a manual clock."""

from datetime import datetime, timezone

import pytest

from backtrader_ccxt.bars import Bar, Status
from backtrader_ccxt.errors import ExchangeRequestError, FatalExchangeError, RetryableError
from backtrader_ccxt.live.polling import PollingMachine
from backtrader_ccxt.paging import Page
from backtrader_ccxt.spec import FeedSpec
from backtrader_ccxt.timeframes import parse

from .test_paging import Venue, load_csv, make_rows, shared_data

M1 = parse("1m")
MIN = 60_000
GRACE = 1000
T0 = int(datetime(2024, 1, 1, tzinfo=timezone.utc).timestamp() * 1000)


def spec(**kw) -> FeedSpec:
    base = dict(symbol="BTC/USDT", tf=M1, since_ms=T0, page_limit=1000, grace_ms=GRACE)
    base.update(kw)
    return FeedSpec(**base)


class Clock:
    def __init__(self, now: int) -> None:
        self.now = now


def drain(m: PollingMachine, clock: Clock, log: list) -> None:
    while m.outbox:
        log.append((clock.now, m.outbox.popleft()))


def step(m: PollingMachine, venue: Venue, clock: Clock) -> Page | int | None:
    """One action: fetch a page (or fail) and hand the answer over; return the action."""
    action = m.next_action(clock.now)
    if isinstance(action, Page):
        try:
            rows = venue.fetch(action.since_ms, action.limit, clock.now)
        except ExchangeRequestError as exc:
            m.on_failure(exc, clock.now)
        else:
            m.on_rows(rows, clock.now)
    return action


def run(m: PollingMachine, venue: Venue, clock: Clock, stop_ms: int) -> list:
    """Drive the machine until it finishes or would wait past ``stop_ms``: [(time, item)]."""
    log: list = []
    for _ in range(100_000):
        drain(m, clock, log)
        action = step(m, venue, clock)
        if action is None:
            break
        if isinstance(action, int):
            assert action > clock.now, "a wait must lie in the future"
            if action > stop_ms:
                break
            clock.now = action
    else:
        pytest.fail("the machine did not settle")
    drain(m, clock, log)
    return log


def bars_of(log) -> list[Bar]:
    return [item for _, item in log if isinstance(item, Bar)]


def codes(log) -> list[str]:
    return [item.code for _, item in log if isinstance(item, Status)]


def assert_clean(bars: list[Bar]) -> None:
    opens = [b.open_ms for b in bars]
    assert opens == sorted(set(opens)), "bars must be strictly increasing, without duplicates"


def test_backfill_then_live():
    rows = make_rows(M1, T0, 100)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    assert list(m.outbox) == [Status("DELAYED", "backfilling over REST")]
    log = run(m, Venue(M1, rows), clock, stop_ms=clock.now)
    items = [item for _, item in log]
    assert items[0].code == "DELAYED"
    assert [b.row() for b in items[1:6]] == rows[:5]
    assert items[6] == Status("LIVE")
    assert len(items) == 7
    assert m.phase == "live"


def test_live_waits_until_due_then_polls_for_the_new_bar():
    rows = make_rows(M1, T0, 100)
    venue = Venue(M1, rows)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    run(m, venue, clock, stop_ms=clock.now)
    due = T0 + 6 * MIN + GRACE
    assert m.next_action(clock.now) == due
    clock.now = due - 1
    assert m.next_action(clock.now) == due
    clock.now = due
    assert m.next_action(clock.now) == Page(T0 + 5 * MIN, 1000)
    m.on_rows(venue.fetch(T0 + 5 * MIN, 1000, clock.now), clock.now)
    assert m.next_action(clock.now) == T0 + 7 * MIN + GRACE
    assert [b.row() for b in m.outbox] == [rows[5]]  # the final values, exactly one bar
    assert m.polls == 1


def test_live_for_an_hour():
    rows = make_rows(M1, T0, 200)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    venue = Venue(M1, rows)
    log = run(m, venue, clock, stop_ms=T0 + 65 * MIN + 30_000)
    bars = bars_of(log)
    assert [b.row() for b in bars] == rows[:65]
    assert_clean(bars)
    assert codes(log) == ["DELAYED", "LIVE"]
    assert m.polls == 60
    for when, item in log:
        if isinstance(item, Bar) and item.open_ms >= T0 + 5 * MIN:
            assert when == item.close_ms + GRACE  # each live bar on time


@pytest.mark.parametrize("bounded", [True, False])
def test_a_candle_without_trades_does_not_stall_or_repeat(bounded):
    rows = make_rows(M1, T0, 100)
    omitted = (T0 + 8 * MIN, T0 + 12 * MIN, T0 + 13 * MIN)
    venue = Venue(M1, rows, omit=omitted, bounded=bounded)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    log = run(m, venue, clock, stop_ms=T0 + 20 * MIN + 30_000)
    bars = bars_of(log)
    assert [b.row() for b in bars] == [r for r in rows[:20] if r[0] not in omitted]
    assert_clean(bars)
    delivered_at = {item.open_ms: when for when, item in log if isinstance(item, Bar)}
    for i in (9, 14):  # the candles after the omitted ones still arrive on time
        assert delivered_at[T0 + i * MIN] == T0 + (i + 1) * MIN + GRACE
    assert codes(log) == ["DELAYED", "LIVE"]


def test_a_retryable_failure_breaks_then_recovers_without_losing_bars():
    rows = make_rows(M1, T0, 100)
    outage = (T0 + 6 * MIN, T0 + 9 * MIN + 30_000)

    def fail(now):
        return RetryableError("503 Service Unavailable") if outage[0] <= now < outage[1] else None

    venue = Venue(M1, rows, fail=fail)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    log = run(m, venue, clock, stop_ms=outage[0])
    assert codes(log) == ["DELAYED", "LIVE"]

    clock.now = T0 + 6 * MIN + GRACE
    step(m, venue, clock)  # the poll fails
    log2: list = []
    drain(m, clock, log2)
    assert [item.code for _, item in log2] == ["CONNBROKEN"]
    resume = m.next_action(clock.now)
    assert isinstance(resume, int)
    assert clock.now + 500 <= resume <= clock.now + 1000  # reconnect_delay 1 s with jitter

    log2 += run(m, venue, clock, stop_ms=T0 + 12 * MIN + 30_000)
    assert codes(log2) == ["CONNBROKEN", "LIVE"]
    bars = bars_of(log) + bars_of(log2)
    assert [b.row() for b in bars] == rows[:12]
    assert_clean(bars)
    # the bars missed during the outage come in one catch-up, in order
    caught_up = [item.open_ms for when, item in log2 if isinstance(item, Bar)][:4]
    assert caught_up == [T0 + i * MIN for i in (5, 6, 7, 8)]


def test_a_failure_in_backfill_then_in_the_first_live_poll_reports_both():
    rows = make_rows(M1, T0, 100)
    clock = Clock(T0 + 5 * MIN + 30_000)
    down = {clock.now, T0 + 6 * MIN + GRACE}

    def fail(now):
        return RetryableError("timeout") if now in down else None

    venue = Venue(M1, rows, fail=fail)
    m = PollingMachine(spec())
    log = run(m, venue, clock, stop_ms=T0 + 6 * MIN + GRACE + 2000)
    # and the retry after the second failure recovers within the run
    assert codes(log) == ["DELAYED", "CONNBROKEN", "LIVE", "CONNBROKEN", "LIVE"]


def test_a_fatal_failure_disconnects_for_good():
    rows = make_rows(M1, T0, 100)
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec())
    venue = Venue(M1, rows)
    run(m, venue, clock, stop_ms=clock.now)
    clock.now = T0 + 6 * MIN + GRACE
    m.next_action(clock.now)
    m.on_failure(FatalExchangeError("BadSymbol: FOO/BAR"), clock.now)
    items = list(m.outbox)
    assert items[-1].code == "DISCONNECTED"
    assert items[-1].fatal
    assert m.done
    assert m.next_action(clock.now + 10 * MIN) is None
    assert list(m.outbox) == items  # nothing more


def test_historical_ends_after_the_backfill():
    rows = make_rows(M1, T0, 100)
    clock = Clock(T0 + 30 * MIN + 30_000)
    m = PollingMachine(spec(historical=True, page_limit=7))
    log = run(m, Venue(M1, rows), clock, stop_ms=T0 + 60 * MIN)
    assert [b.row() for b in bars_of(log)] == rows[:30]
    assert codes(log) == ["DELAYED", "DISCONNECTED"]
    assert not log[-1][1].fatal
    assert m.done
    assert m.next_action(clock.now + MIN) is None


def test_historical_failure_is_final():
    clock = Clock(T0 + 30 * MIN)
    m = PollingMachine(spec(historical=True))
    assert isinstance(m.next_action(clock.now), Page)
    m.on_failure(RetryableError("timeout"), clock.now)
    assert codes([(0, s) for s in m.outbox]) == ["DELAYED", "DISCONNECTED"]
    assert m.outbox[-1].fatal
    assert m.next_action(clock.now) is None


def test_todate_ends_the_live_feed():
    rows = make_rows(M1, T0, 100)
    until = T0 + 10 * MIN
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec(until_ms=until))
    log = run(m, Venue(M1, rows), clock, stop_ms=T0 + 30 * MIN)
    assert [b.row() for b in bars_of(log)] == rows[:10]
    assert codes(log) == ["DELAYED", "LIVE", "DISCONNECTED"]
    assert log[-1][0] == until + GRACE  # right after the last bar before todate
    assert m.next_action(clock.now) is None


def test_todate_ends_the_feed_when_the_last_candle_before_it_had_no_trades():
    rows = make_rows(M1, T0, 100)
    until = T0 + 10 * MIN
    venue = Venue(M1, rows, omit=(T0 + 9 * MIN,))
    clock = Clock(T0 + 5 * MIN + 30_000)
    m = PollingMachine(spec(until_ms=until))
    log = run(m, venue, clock, stop_ms=T0 + 30 * MIN)
    assert [b.row() for b in bars_of(log)] == rows[:9]
    assert codes(log) == ["DELAYED", "LIVE", "DISCONNECTED"]


def test_recorded_binance_minutes_backfill_then_live():
    path = shared_data() / "ohlcv" / "binance_data_vision" / "normalized" / "BTCUSDT-1m.csv"
    rows = load_csv(path)
    start = rows[0][0]
    clock = Clock(start + 2000 * MIN + 10_000)  # 2000 closed candles, the next one forming
    m = PollingMachine(spec(since_ms=start, page_limit=1000))
    venue = Venue(M1, rows)
    log = run(m, venue, clock, stop_ms=start + 2010 * MIN + 10_000)
    bars = bars_of(log)
    assert [b.row() for b in bars] == rows[:2010]
    assert_clean(bars)
    assert codes(log) == ["DELAYED", "LIVE"]
    assert m.polls == 10
