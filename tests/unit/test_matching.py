"""The matching engine and the accounts ledger (pure): every fill where the price path says,
and the books always balance, over seeded random order flows."""

from __future__ import annotations

import random
from collections import defaultdict
from datetime import datetime, timezone
from decimal import Decimal

import pytest

from backtrader_ccxt.localexchange.accounts import Ledger
from backtrader_ccxt.localexchange.data import Replay
from backtrader_ccxt.localexchange.matching import (
    MatchingEngine,
    OrderRequest,
    Rejected,
    SymbolRules,
    TradePath,
)
from backtrader_ccxt.localexchange.trades import TradeLedger

NOW = int(datetime(2024, 3, 1, 12, 0, 0, 250_000, tzinfo=timezone.utc).timestamp() * 1000)
SYMBOL = "BTC/USDT"
RULES = SymbolRules(Decimal("0.01"), Decimal("0.00001"), Decimal("0.00001"), Decimal("5"))
START = {"USDT": Decimal(100_000), "BTC": Decimal(2)}


def make(max_fill=None):
    replay = Replay((SYMBOL,), NOW, 600, 4)
    path = TradePath(TradeLedger(replay, "1s"))
    ledger = Ledger()
    acct = ledger.add_account(START, fee_rate="0.001")
    engine = MatchingEngine(ledger, path, {SYMBOL: RULES})
    engine.max_fill_qty = max_fill
    return ledger, acct, engine, path


def q(x) -> Decimal:
    return Decimal(x).quantize(Decimal("0.01"))


def check_books(ledger, acct, engine, events):
    """Locks equal what the open orders hold; every balance moved by the fills only."""
    bal = ledger.balances(acct)
    locked = defaultdict(Decimal)
    for o in ledger.open_orders(acct):
        locked[o.lock_asset] += o.locked
    for asset, (free, lock) in bal.items():
        assert free >= 0 and lock >= 0, (asset, free, lock)
        assert lock == locked[asset], (asset, lock, locked[asset])
    expect = dict(START)
    for f in ledger.fills(acct):
        sign = 1 if f.side == "BUY" else -1
        expect["BTC"] += sign * f.qty
        expect["USDT"] -= sign * f.quote_qty + f.commission
    for asset, total in expect.items():
        assert sum(bal[asset]) == total, asset
    by_order = defaultdict(list)
    for f in ledger.fills(acct):
        by_order[f.order_id].append(f)
    for o in ledger.orders(acct):
        fills = by_order[o.order_id]
        assert o.executed_qty == sum((f.qty for f in fills), Decimal(0))
        assert o.cum_quote == sum((f.quote_qty for f in fills), Decimal(0))
        assert (o.status == "FILLED") == (o.executed_qty == o.orig_qty)
    for order_list in ledger.order_lists(acct):
        legs = order_list.orders
        assert sum(1 for o in legs if o.executed_qty > 0) <= 1  # one cancels the other
        assert (order_list.status == "ALL_DONE") == (not any(o.is_open for o in legs))
    reported = [e.fill for e in events if e.kind == "order" and e.fill is not None]
    assert reported == ledger.fills(acct)  # each fill reported exactly once, in order


@pytest.mark.parametrize("seed", range(6))
def test_random_order_flow_keeps_the_books(seed):
    rng = random.Random(seed)
    max_fill = rng.choice([None, Decimal("0.003")])
    ledger, acct, engine, path = make(max_fill)
    now = NOW
    events = engine.advance(now)
    for _ in range(120):
        now += rng.randint(0, 4000)
        events += engine.advance(now)
        p = path.last(SYMBOL, now).price
        side = rng.choice(["BUY", "SELL"])
        kind = rng.choice(
            ["MARKET", "LIMIT", "LIMIT", "STOP_LOSS", "STOP_LOSS_LIMIT", "CANCEL", "OCO"]
        )
        qty = Decimal(rng.randint(1, 1000)) * Decimal("0.00001")
        away = Decimal(1) + Decimal(rng.randint(-20, 20)) / 10000
        try:
            if kind == "CANCEL":
                open_ = ledger.open_orders(acct)
                if open_:
                    o = rng.choice(open_)
                    events += engine.cancel(acct, SYMBOL, now, order_id=o.order_id)[1]
                continue
            if kind == "OCO":
                up = q(p * (1 + Decimal(rng.randint(1, 15)) / 10000))
                down = q(p * (1 - Decimal(rng.randint(1, 15)) / 10000))
                stop_type = rng.choice(["STOP_LOSS", "STOP_LOSS_LIMIT"])
                if side == "SELL":
                    limit = q(down * Decimal("0.9995")) if stop_type == "STOP_LOSS_LIMIT" else None
                    tif = "GTC" if limit is not None else None
                    above = OrderRequest(SYMBOL, side, "LIMIT_MAKER", qty, None, up)
                    below = OrderRequest(SYMBOL, side, stop_type, qty, None, limit, down, tif)
                else:
                    limit = q(up * Decimal("1.0005")) if stop_type == "STOP_LOSS_LIMIT" else None
                    tif = "GTC" if limit is not None else None
                    above = OrderRequest(SYMBOL, side, stop_type, qty, None, limit, up, tif)
                    below = OrderRequest(SYMBOL, side, "LIMIT_MAKER", qty, None, down)
                events += engine.place_oco(acct, above, below, f"l{len(events)}", now)[1]
                check_books(ledger, acct, engine, events)
                continue
            req = OrderRequest(SYMBOL, side, kind, qty=qty, client_order_id=f"c{len(events)}")
            if kind == "LIMIT":
                req = OrderRequest(SYMBOL, side, kind, qty, None, q(p * away), None, "GTC")
            elif kind in ("STOP_LOSS", "STOP_LOSS_LIMIT"):
                stop = q(p * (Decimal("0.999") if side == "SELL" else Decimal("1.001")))
                limit = q(stop * away) if kind == "STOP_LOSS_LIMIT" else None
                tif = "GTC" if limit is not None else None
                req = OrderRequest(SYMBOL, side, kind, qty, None, limit, stop, tif)
            events += engine.place(acct, req, now)[1]
        except Rejected as e:
            assert e.code in (-1013, -2010), e
        check_books(ledger, acct, engine, events)
    assert ledger.fills(acct), "the flow filled nothing"


def test_resting_limit_fills_at_the_first_crossing_trade():
    ledger, acct, engine, path = make()
    p = path.last(SYMBOL, NOW).price
    limit = q(p * Decimal("0.9995"))
    order, _ = engine.place(
        acct, OrderRequest(SYMBOL, "BUY", "LIMIT", Decimal("0.01"), None, limit, None, "GTC"), NOW
    )
    later = NOW + 3_600_000
    engine.advance(later)
    crossing = next(t for t in path.after(SYMBOL, 0, later) if t.time > NOW and t.price <= limit)
    [fill] = ledger.fills(acct)
    assert (fill.price, fill.time, fill.is_maker) == (limit, crossing.time, True)
    assert order.status == "FILLED"


def test_answers_depend_on_the_clock_reading_only():
    """Matching in many small steps or one big one books the same fills."""
    runs = []
    for steps in (1, 37):
        ledger, acct, engine, path = make(Decimal("0.002"))
        p = path.last(SYMBOL, NOW).price
        for away in ("0.9996", "0.9990", "1.0004", "1.0011"):
            side = "BUY" if Decimal(away) < 1 else "SELL"
            req = OrderRequest(
                SYMBOL, side, "LIMIT", Decimal("0.01"), None, q(p * Decimal(away)), None, "GTC"
            )
            engine.place(acct, req, NOW)
        for i in range(1, steps + 1):
            engine.advance(NOW + 1_800_000 * i // steps)
        runs.append([(f.order_id, f.price, f.qty, f.time) for f in ledger.fills(acct)])
    assert runs[0] == runs[1] and runs[0]


def test_cancel_race_on_a_stop_market_buy_never_overdraws():
    ledger, acct, engine, path = make()
    p = path.last(SYMBOL, NOW).price
    stop = q(p * Decimal("1.001"))
    # all the cash the stop price allows: a fill at a higher price could not be paid
    qty = (Decimal(100_000) / stop / Decimal("1.002")).quantize(Decimal("0.00001"), "ROUND_DOWN")
    req = OrderRequest(SYMBOL, "BUY", "STOP_LOSS", qty, None, None, stop)
    order, _ = engine.place(acct, req, NOW)
    ledger.debit(acct, "USDT", ledger.free(acct, "USDT"))  # nothing spare either
    engine.fill_now(order, NOW)  # at the current price p < stop: affordable
    assert order.status == "FILLED" and ledger.free(acct, "USDT") >= 0
