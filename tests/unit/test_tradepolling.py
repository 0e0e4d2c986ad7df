"""The tick feed's polling rules (sans-I/O), against a hand-written venue, in ms."""

from backtrader_ccxt.bars import Status
from backtrader_ccxt.errors import FatalExchangeError, RetryableError
from backtrader_ccxt.live.tradepolling import TradePollingMachine, TradeRequest, TradeSpec

T0 = 1_700_000_000_000


def ledger(n=500, step=7, ids=True):
    """Trades in time order with increasing ids; some share a millisecond."""
    times = sorted(T0 + (i // 3) * step * 2 + (i % 3 == 1) * step for i in range(n))
    return [
        {
            "id": str(i) if ids else None,
            "timestamp": ts,
            "price": 100.0 + i % 17,
            "amount": 1.0 + i % 5,
            "side": "buy" if i % 2 else "sell",
        }
        for i, ts in enumerate(times)
    ]


class Venue:
    """Binance's semantics: a window gives its LAST limit trades; fromId pages forward."""

    def __init__(self, trades, paging="id"):
        self.trades, self.paging, self.asked = trades, paging, []

    def answer(self, req: TradeRequest, now):
        self.asked.append(req)
        live = [t for t in self.trades if t["timestamp"] <= now]
        if req.from_id is not None:
            return [t for t in live if int(t["id"]) >= req.from_id][: req.limit]
        if req.since_ms is not None and req.until_ms is not None:
            inside = [t for t in live if req.since_ms <= t["timestamp"] <= req.until_ms]
            return inside[-req.limit :]
        if req.since_ms is not None:
            return [t for t in live if t["timestamp"] >= req.since_ms][: req.limit]
        return live[-req.limit :]


def drive(machine, venue, now, max_steps=10_000, fail_at=()):
    out = []
    for step in range(max_steps):
        while machine.outbox:
            out.append(machine.outbox.popleft())
        action = machine.next_action(now)
        if action is None:
            break
        if isinstance(action, int):
            return out, action
        if step in fail_at:
            machine.on_failure(RetryableError("down"), now)
            continue
        machine.on_trades(venue.answer(action, now), now)
    while machine.outbox:
        out.append(machine.outbox.popleft())
    return out, None


def ticks(items):
    assert all(b.close_ms == b.open_ms + 1 for b in items if not isinstance(b, Status))
    return [(b.open_ms, b.close, b.volume) for b in items if not isinstance(b, Status)]


def codes(items):
    return [s.code for s in items if isinstance(s, Status)]


def want(trades, lo=None, hi=None):
    return [
        (t["timestamp"], t["price"], t["amount"])
        for t in trades
        if (lo is None or t["timestamp"] >= lo) and (hi is None or t["timestamp"] < hi)
    ]


def test_id_paging_finds_the_first_trade_at_fromdate_through_full_windows():
    trades = ledger()
    since = trades[123]["timestamp"]
    venue = Venue(trades)
    spec = TradeSpec("X/Y", since, page_limit=50, historical=True)
    out, _ = drive(TradePollingMachine(spec), venue, now=T0 + 10**7)
    assert ticks(out) == want(trades, since)
    assert codes(out) == ["DELAYED", "DISCONNECTED"]
    windows = [r for r in venue.asked if r.until_ms is not None]
    assert len(windows) > 3  # the hour window was full: it was narrowed


def test_live_polls_wait_the_interval_and_deliver_new_trades_once():
    trades = ledger(300)
    venue = Venue(trades)
    spec = TradeSpec("X/Y", T0, page_limit=40, poll_interval_ms=500)
    m = TradePollingMachine(spec)
    now = trades[100]["timestamp"]
    out, due = drive(m, venue, now)
    assert due == now + 500 and codes(out) == ["DELAYED", "LIVE"]
    assert drive(m, venue, now + 499)[1] == now + 500  # not due yet: nothing asked
    later = trades[250]["timestamp"]
    more, _ = drive(m, venue, later)
    assert ticks(out + more) == want(trades, T0, later + 1)


def test_time_paging_without_ids_drops_the_overlap_at_the_same_millisecond():
    trades = ledger(200, ids=False)
    spec = TradeSpec("X/Y", T0, page_limit=16, paging="time", historical=True)
    out, _ = drive(TradePollingMachine(spec), Venue(trades, "time"), now=T0 + 10**7)
    assert ticks(out) == want(trades)


def test_todate_ends_the_feed_at_the_first_later_trade():
    trades = ledger()
    hi = trades[300]["timestamp"]
    spec = TradeSpec("X/Y", T0, page_limit=64, until_ms=hi)
    out, _ = drive(TradePollingMachine(spec), Venue(trades), now=T0 + 10**7)
    assert ticks(out) == want(trades, T0, hi)
    assert codes(out)[-1] == "DISCONNECTED"


def test_a_failure_is_connbroken_then_live_again_without_loss():
    trades = ledger(300)
    spec = TradeSpec("X/Y", T0, page_limit=40, reconnect_delay=0.25, max_reconnect_delay=0.25)
    m = TradePollingMachine(spec)
    now = trades[-1]["timestamp"]
    out, due = drive(m, Venue(trades), now, fail_at={7})
    assert codes(out) == ["DELAYED", "CONNBROKEN"]
    assert due is not None and 0 < due - now <= 250 * 1.5
    more, _ = drive(m, Venue(trades), due)
    assert codes(more) == ["LIVE"]
    assert ticks(out + more) == want(trades)


def test_a_fatal_error_ends_the_feed():
    m = TradePollingMachine(TradeSpec("X/Y", T0, page_limit=10))
    assert isinstance(m.next_action(T0), TradeRequest)
    m.on_failure(FatalExchangeError("bad symbol"), T0)
    assert m.next_action(T0) is None and codes(m.outbox)[-1] == "DISCONNECTED"
