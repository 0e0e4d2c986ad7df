"""Randomized fault soak: WebSocket feeds on 1s bars while a seeded schedule of faults hits
the local exchange; afterwards the bars each strategy saw are compared with the exchange's
REST history.

Short version: tests/test_soak.py (CI). Long version, from the repository root::

    python tests/soak.py --bars 600 --symbols 6 --seed 1 [--mode polling|threaded|websocket]
                         [--protocol binance|okx|bybit] [--speed 1]

``--speed N`` runs the whole soak N times faster: the exchange and the store on a clock N
times real time (tests/feedtools.py), the fault schedule in exchange time, and the store's
real-time knobs (reconnect backoff, stall watchdog, REST retry delays and timeout, the
exchange's REST hold) divided by N, so the soak is the real-time one scaled, except for the
real latency of sockets and of the machine (which counts N times more against a candle).

prints bars delivered / missing / duplicated / wrong, faults injected by kind, reconnects,
stalls, REST fills and the max close-to-delivery lag.
"""

from __future__ import annotations

import argparse
import random
import sys
import threading
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import backtrader as bt

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from feedtools import Recorder, fast_exchange, fast_store, grace, to_ms  # noqa: E402

from backtrader_ccxt.localexchange import LocalExchange  # noqa: E402

# backtrader's exactbars for the soak's cerebro: 1 (flat memory), what long live runs use;
# the feeds keep in step so that backtrader never rewinds one (backtrader_ccxt/sync.py)
EXACTBARS = 1

MODES = {
    "websocket": {"use_websocket": True},
    "threaded": {"use_threaded_data": True},
    "polling": {},
}

# kind -> weight in the random schedule
FAULT_WEIGHTS = {
    "drop": 4,
    "drop_clean": 1,
    "stall": 1,
    "skip_final": 3,
    "malformed": 2,
    "duplicate": 2,
    "out_of_order": 2,
    "rest_429": 1,
    "rest_5xx": 1,
    "rest_timeout": 1,
    "rest_truncated": 1,
    "rest_busy": 1,
    "drop_at_close": 2,
}


@dataclass
class SoakResult:
    delivered: int = 0
    missing: int = 0
    duplicated: int = 0
    wrong: int = 0
    faults: Counter = field(default_factory=Counter)
    scheduled: Counter = field(default_factory=Counter)
    store_stats: Counter = field(default_factory=Counter)
    max_lag_ms: int = 0
    p99_lag_ms: int = 0
    statuses: dict = field(default_factory=dict)
    details: list = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.missing == 0 and self.duplicated == 0 and self.wrong == 0

    def report(self) -> str:
        lines = [
            f"bars delivered   {self.delivered}",
            f"missing          {self.missing}",
            f"duplicated       {self.duplicated}",
            f"wrong            {self.wrong}",
            f"faults injected  {sum(self.faults.values())}: "
            + ", ".join(f"{k}={v}" for k, v in sorted(self.faults.items()) if v),
            f"reconnects       {self.store_stats.get('reconnects', 0)} "
            f"(stalls detected {self.store_stats.get('stalls', 0)})",
            f"REST requests    backfill {self.store_stats.get('rest_backfill', 0)}, "
            f"fill {self.store_stats.get('rest_fill', 0)}, "
            f"confirm {self.store_stats.get('rest_confirm', 0)}",
            f"lag close->next  p99 {self.p99_lag_ms} ms, max {self.max_lag_ms} ms",
        ]
        return "\n".join(lines)


class FaultSchedule(threading.Thread):
    """Applies a seeded random fault every 0.2-1.2 s of exchange time (an Event timeout is
    the timer; ``speed``: exchange seconds per real second)."""

    def __init__(
        self, ex: LocalExchange, rng: random.Random, symbols: list[str], speed: float = 1.0
    ) -> None:
        super().__init__(name="soak-faults", daemon=True)
        self.ex, self.rng, self.symbols = ex, rng, symbols
        self.speed = speed
        self.stop_event = threading.Event()
        self.scheduled: Counter = Counter()

    def run(self) -> None:
        kinds, weights = zip(*FAULT_WEIGHTS.items(), strict=True)
        while not self.stop_event.wait(self.rng.uniform(0.2, 1.2) / self.speed):
            kind = self.rng.choices(kinds, weights)[0]
            self.apply(kind)

    def apply(self, kind: str) -> None:
        f, rng = self.ex.faults, self.rng
        self.scheduled[kind] += 1
        if kind == "drop":
            f.drop_connections()
        elif kind == "drop_clean":
            f.drop_connections(clean=True)
        elif kind == "stall":
            f.stall(rng.uniform(0.5, 2.0))
        elif kind == "skip_final":
            f.skip_final(count=1, symbol=rng.choice([None, *self.symbols]))
        elif kind == "malformed":
            f.send_malformed(kind=rng.choice(["text", "json", "kline"]))
        elif kind == "duplicate":
            f.send_duplicate(rng.randint(1, 3))
        elif kind == "out_of_order":
            f.send_out_of_order(rng.randint(1, 3))
        elif kind == "rest_429":
            f.rest_errors("429", count=rng.randint(1, 2), retry_after=0.2)
        elif kind == "rest_5xx":
            f.rest_errors("5xx", count=rng.randint(1, 2), status=rng.choice([500, 502, 503]))
        elif kind == "rest_timeout":
            f.rest_errors("timeout", count=1, hold=2.0 / self.speed)
        elif kind == "rest_truncated":
            f.rest_errors("truncated", count=rng.randint(1, 2))
        elif kind == "rest_busy":  # the venue's own "try again later" (Bybit 10016, ...)
            f.rest_errors("busy", count=rng.randint(1, 2))
        elif kind == "drop_at_close":
            # the worst moment: the next candle's final is lost and the socket drops with it
            now = self.ex.now_ms()
            self.stop_event.wait(((1000 - now % 1000) / 1000 + rng.uniform(0.0, 0.02)) / self.speed)
            f.skip_final(count=1)
            f.drop_connections()


class LagRecorder(Recorder):
    params = (("clock", None),)

    def __init__(self) -> None:
        super().__init__()
        self.lags: list[int] = []

    def next(self) -> None:
        before = {n: len(b) for n, b in self.bars.items()}
        super().next()
        now = self.p.clock()
        for name, bars in self.bars.items():
            if len(bars) > before[name] and name in self.seam:
                self.lags.append(now - to_ms(bars[-1][0]))


def soak(
    bars: int = 25,
    symbols: int = 3,
    seed: int = 1,
    quiet: bool = True,
    mode: str = "websocket",
    exactbars: int = EXACTBARS,
    protocol: str = "binance",
    speed: float = 1.0,
) -> SoakResult:
    names = ["BTC/USDT", "ETH/USDT"] + [f"SK{i:02d}/USDT" for i in range(max(0, symbols - 2))]
    names = names[:symbols]
    rng = random.Random(seed)
    if speed == 1.0:
        exchange = LocalExchange(symbols=names, timeframes=("1s",), history=200, protocol=protocol)
    else:
        exchange = fast_exchange(
            speed, symbols=names, timeframes=("1s",), history=200, protocol=protocol
        )
    with exchange as ex:
        config = dict(ex.ccxt_config(), timeout=int(1500 / speed))
        store = fast_store(
            ex, config=config, retries=10, retry_delay=0.05 / speed, retry_max_delay=0.5 / speed
        )
        cerebro = bt.Cerebro(stdstats=False, exactbars=exactbars)
        for sym in names:
            cerebro.adddata(
                store.getdata(
                    dataname=sym,
                    name=sym,
                    timeframe="1s",
                    backfill_bars=30,
                    poll_grace=grace(ex, 0.2),
                    ws_reconnect_delay=0.05 / speed,
                    ws_max_reconnect_delay=0.5 / speed,
                    ws_stall_timeout=1.0 / speed,
                    **MODES[mode],
                )
            )
        cerebro.addstrategy(LagRecorder, live_bars=bars, clock=ex.now_ms)
        schedule = FaultSchedule(ex, rng, names, speed)
        # REST faults waiting for the backfill, so it is hit too
        schedule.apply("rest_429")
        schedule.apply("rest_truncated")
        schedule.apply("rest_5xx")
        schedule.start()
        try:
            strat = cerebro.run()[0]
        finally:
            schedule.stop_event.set()
            schedule.join()
            ex.faults.clear()
        result = SoakResult(
            faults=Counter(ex.faults.counts),
            scheduled=schedule.scheduled,
            store_stats=Counter(store.stats),
            statuses=dict(strat.statuses),
        )
        for sym in names:
            got = strat.bars[sym]
            result.delivered += len(got)
            opens = [to_ms(b[0]) - 1000 for b in got]
            result.duplicated += len(opens) - len(set(opens))
            truth = {
                int(r[0]): tuple(map(float, r[1:6]))
                for r in ex.candles(sym, "1s", opens[0], opens[-1] + 1)
            }
            seen = dict(zip(opens, (tuple(b[1:6]) for b in got), strict=True))
            for t, values in truth.items():
                if t not in seen:
                    result.missing += 1
                    result.details.append(f"{sym} missing {t}")
                elif seen[t] != values:
                    result.wrong += 1
                    result.details.append(f"{sym} wrong {t}: {seen[t]} != {values}")
            result.missing += sum(1 for t in seen if t not in truth)
        lags = sorted(strat.lags)
        if lags:
            result.max_lag_ms = lags[-1]
            result.p99_lag_ms = lags[min(len(lags) - 1, int(len(lags) * 0.99))]
        return result


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--bars", type=int, default=600, help="live bars per symbol")
    parser.add_argument("--symbols", type=int, default=6)
    parser.add_argument("--seed", type=int, default=1)
    parser.add_argument("--mode", choices=list(MODES), default="websocket")
    parser.add_argument("--exactbars", type=int, default=EXACTBARS)
    parser.add_argument("--protocol", choices=("binance", "okx", "bybit"), default="binance")
    parser.add_argument("--speed", type=float, default=1.0, help="clock speed (1: real time)")
    args = parser.parse_args(argv)
    result = soak(
        args.bars,
        args.symbols,
        args.seed,
        mode=args.mode,
        exactbars=args.exactbars,
        protocol=args.protocol,
        speed=args.speed,
    )
    print(
        f"soak: {args.symbols} symbols x {args.bars} live 1s bars, {args.mode}, "
        f"{args.protocol}, exactbars={args.exactbars}, seed {args.seed}, speed {args.speed}x"
    )
    print(result.report())
    for line in result.details[:20]:
        print("  ", line)
    return 0 if result.ok else 1


if __name__ == "__main__":
    sys.exit(main())
