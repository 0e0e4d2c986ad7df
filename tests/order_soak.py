"""Order soak: a strategy trades every few bars through CCXTBroker on a rehearsed history while a
seeded schedule of the local exchange's trading faults hits it; after each fault (once the
broker has caught up) and at the end, the exchange's ledgers are compared with the broker's
orders, fills, positions and cash.

Short version: tests/test_order_soak.py (CI). Long version, from the repository root::

    python tests/order_soak.py --bars 400 --seed 1 [--speed 300] [--poll]

prints orders, fills, faults by kind, and the four counts that must be 0: duplicate orders on
the exchange, fills missed, fills double-counted, state mismatches (order status, position,
cash) after a fault or at the end.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import backtrader as bt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from brokerlive import leg_cids  # noqa: E402
from test_rehearsal import make_rows  # noqa: E402

from backtrader_ccxt import CCXTStore  # noqa: E402
from backtrader_ccxt.localexchange import RehearsalExchange  # noqa: E402

SYMBOL = "BTC/USDT"
WARMUP = 30

#: kind -> weight in the schedule (clock skew needs the wall clock: tests/test_broker_faults.py)
FAULT_WEIGHTS = {
    "lose_order_reply": 2,
    "drop_user_stream": 2,
    "drop_user_stream_during_fill": 2,
    "duplicate_execution_reports": 2,
    "reorder_execution_reports": 2,
    "fill_while_disconnected": 1,
    "cancel_races_fill": 2,
}


@dataclass
class OrderSoakResult:
    orders: int = 0
    fills: int = 0
    duplicate_orders: int = 0
    missed_fills: int = 0
    double_counted: int = 0
    mismatches: int = 0
    checks: int = 0
    faults: Counter = field(default_factory=Counter)
    scheduled: Counter = field(default_factory=Counter)
    store_stats: Counter = field(default_factory=Counter)
    details: list = field(default_factory=list)
    ledger_stats: Counter = field(default_factory=Counter)

    @property
    def ok(self) -> bool:
        return not (self.duplicate_orders or self.missed_fills or self.double_counted
                    or self.mismatches)  # fmt: skip

    def report(self) -> str:
        keys = ("broker_create_unknown", "broker_create_adopted", "broker_stream_breaks",
                "broker_cancel_refused", "broker_stream_restored", "broker_oco_created",
                "broker_oco_refused")  # fmt: skip
        return "\n".join(
            [
                f"orders {self.orders}, fills {self.fills}, checks {self.checks}",
                f"duplicate orders {self.duplicate_orders}, missed fills {self.missed_fills}, "
                f"double-counted {self.double_counted}, mismatches {self.mismatches}",
                f"faults scheduled {dict(self.scheduled)}",
                f"faults applied {dict(self.faults)}",
                "broker " + ", ".join(f"{k} {self.store_stats.get(k, 0)}" for k in keys),
                "ledger " + ", ".join(f"{k} {v}" for k, v in sorted(self.ledger_stats.items())),
                *self.details[:20],
            ]
        )


def compare(ex, acct, broker, result: OrderSoakResult, final: bool) -> bool:
    """One comparison of the exchange's ledgers with the broker's state; True when equal.
    Counts into ``result`` only when ``final`` (mid-run callers retry until it holds)."""
    creates = ex.ledger.create_requests(acct)
    cids = Counter(cid for c in creates for cid in leg_cids(c))
    dup = sum(n - 1 for n in cids.values())
    fills = ex.ledger.fills(acct)
    on_ex = {str(f["id"]) for f in fills}
    seen = broker.ledger.trade_ids
    missed = len(on_ex - seen)
    extra = len(seen - on_ex)
    per_order = Counter()
    for f in fills:
        per_order[f["clientOrderId"]] += f["qty"]
    double = 0
    mismatch = []
    for t in broker.ledger.by_cid.values():
        if t.filled > per_order.get(t.client_id, 0):
            double += 1
        order = broker.orders[t.ref]
        if abs(abs(order.executed.size) - float(per_order.get(t.client_id, 0))) > 1e-12:
            mismatch.append(f"{t.client_id}: executed {order.executed.size}")
    snap = {o["clientOrderId"]: o["status"] for o in ex.ledger.orders(acct)}
    final_names = {"FILLED": ("Completed",), "CANCELED": ("Canceled", "Expired"),
                   "EXPIRED": ("Expired", "Canceled")}  # fmt: skip
    for cid, status in snap.items():
        t = broker.ledger.by_cid.get(cid)
        if t is None:
            mismatch.append(f"{cid}: on the exchange, unknown to the broker")
            continue
        if (
            status in final_names
            and broker.orders[t.ref].getstatusname() not in final_names[status]
        ):
            mismatch.append(f"{cid}: {status} vs {broker.orders[t.ref].getstatusname()}")
    bal = ex.ledger.balances(acct)
    base = float(sum(bal.get("BTC", (0, 0))))
    quote = float(sum(bal.get("USDT", (0, 0))))
    if abs(broker.positions[SYMBOL].size - base) > 1e-9:
        mismatch.append(f"position {broker.positions[SYMBOL].size} vs BTC {base}")
    if abs(broker.getcash() - quote) > 1e-6:
        mismatch.append(f"cash {broker.getcash()} vs USDT {quote}")
    equal = not (dup or missed or extra or double or mismatch)
    if final or equal:
        result.checks += 1
    if final:
        result.duplicate_orders += dup
        result.missed_fills += missed
        result.double_counted += double + extra
        result.mismatches += len(mismatch)
        result.details += mismatch
    return equal


class SoakTrader(bt.Strategy):
    """Every ``every`` bars: flat -> a market buy, a limit buy just under the close that
    rests, or a bracket (in turn); long for ``hold`` bars -> sell (a bracket exits by its
    children). Faults fire on scheduled bars; two
    bars later the broker must agree with the exchange (waited for, bounded)."""

    params = (("every", 3), ("hold", 2), ("size", 0.1), ("schedule", None), ("wait", 15.0))

    def __init__(self):
        self.entry = None
        self.k = 0
        self.checks_due = {}
        self.resting = None
        self.bracket = None

    def next(self):
        p = self.p
        n = len(self.data)
        sched = p.schedule
        if n <= WARMUP + 2 or n >= sched.last_bar:
            return
        if n in self.checks_due:
            self.checks_due.pop(n)
            deadline = time.monotonic() + p.wait
            while not compare(sched.ex, sched.acct, self.broker, sched.result, final=False):
                if time.monotonic() > deadline:
                    sched.result.details.append(f"bar {n}: not caught up after {p.wait}s")
                    compare(sched.ex, sched.acct, self.broker, sched.result, final=True)
                    break
                threading.Event().wait(0.05)
                self.broker._drain()
        kind = sched.at.get(n)
        if kind is not None:
            sched.apply(kind, self)
            self.checks_due[n + 3] = kind
        if self.resting is not None and self.resting.alive() and n - self.entry >= 1:
            self.cancel(self.resting)
            self.resting = None
        if self.bracket is not None and any(o.alive() for o in self.bracket):
            return  # the bracket's children exit, not the hold rule
        self.bracket = None
        if not self.position.size and n % p.every == 0:
            self.k += 1
            if self.k % 3 == 0:
                c = self.data.close[0]
                self.bracket = self.buy_bracket(size=p.size, exectype=bt.Order.Market,
                                                stopprice=round(c - 1.0, 2),
                                                limitprice=round(c + 0.8, 2))  # fmt: skip
                self.entry = None
            elif self.k % 3 == 1:
                self.buy(size=p.size)
            else:
                self.resting = self.buy(size=p.size, exectype=bt.Order.Limit,
                                        price=round(self.data.close[0] - 0.05, 2))  # fmt: skip
            self.entry = n
        elif self.position.size > 0 and self.entry is not None and n - self.entry >= p.hold:
            self.sell(size=self.position.size)
            self.entry = None


class Schedule:
    def __init__(self, ex, acct, rng, bars, result):
        self.ex, self.acct, self.result = ex, acct, result
        self.last_bar = WARMUP + bars - 4
        kinds = list(FAULT_WEIGHTS)
        weights = [FAULT_WEIGHTS[k] for k in kinds]
        self.at = {}
        bar = WARMUP + 5
        # every kind at least once, then at random
        order = kinds + rng.choices(kinds, weights, k=max(0, (bars - 10) // 7 - len(kinds)))
        for kind in order:
            if bar >= self.last_bar - 4:
                break
            self.at[bar] = kind
            bar += 7

    def apply(self, kind, strat):
        f = self.ex.faults
        self.result.scheduled[kind] += 1
        if kind == "drop_user_stream":
            f.drop_user_stream()
        elif kind == "cancel_races_fill":
            f.cancel_races_fill(1)
            far = strat.buy(size=strat.p.size, exectype=bt.Order.Limit,
                            price=round(strat.data.close[0] - 5, 2))  # fmt: skip
            strat.resting, strat.entry = far, len(strat.data) - 1  # canceled on the next bar
        else:
            getattr(f, kind)(1 if kind != "duplicate_execution_reports" else 3)


def order_soak(bars: int = 60, seed: int = 1, speed: float = 300.0, stream: bool = True):
    rows = make_rows(WARMUP + bars, seed=seed)
    result = OrderSoakResult()
    with RehearsalExchange({SYMBOL: rows}, "1m", speed=speed, warmup=WARMUP) as ex:
        acct = ex.add_account(balances={"USDT": 10_000, "BTC": 0}, fee_rate=0.001)
        schedule = Schedule(ex, acct, random.Random(seed), bars, result)
        kwargs = ex.store_kwargs()
        kwargs["config"] = {**ex.ccxt_config(account=acct), "timeout": 1500}
        store = CCXTStore(**kwargs)
        broker = store.getbroker(stream=stream, poll_interval=20.0, reconcile_interval=60.0)
        cerebro = bt.Cerebro(stdstats=False)
        cerebro.setbroker(broker)
        cerebro.adddata(store.getdata(dataname=SYMBOL, timeframe="1m", **ex.feed_kwargs()))
        cerebro.addstrategy(SoakTrader, schedule=schedule)
        try:
            cerebro.run()
        finally:
            store.stop()
        compare(ex, acct, broker, result, final=True)
        result.orders = len(ex.ledger.create_requests(acct))
        result.fills = len(ex.ledger.fills(acct))
        counts = ex.faults.trading.counts
        names = {"lose_order_reply": "lost_order_reply", "drop_user_stream": "user_stream_drop",
                 "drop_user_stream_during_fill": "drop_during_fill",
                 "duplicate_execution_reports": "duplicate_report",
                 "reorder_execution_reports": "reordered_report",
                 "fill_while_disconnected": "fill_while_disconnected",
                 "cancel_races_fill": "cancel_race"}  # fmt: skip
        result.faults = Counter({k: counts.get(v, 0) for k, v in names.items()})
        result.store_stats = Counter(store.stats)
        result.ledger_stats = Counter(broker.ledger.stats)
    return result


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--bars", type=int, default=400)
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--speed", type=float, default=300.0)
    ap.add_argument("--poll", action="store_true", help="REST poll instead of the stream")
    args = ap.parse_args(argv)
    t0 = time.monotonic()
    result = order_soak(args.bars, args.seed, args.speed, stream=not args.poll)
    print(result.report())
    print(f"{time.monotonic() - t0:.1f}s")
    return 0 if result.ok else 1


if __name__ == "__main__":
    raise SystemExit(main())
