"""Tick feeds: trades per second delivered to next(), against a bare ccxt.pro watch_trades loop.

    python bench/trades.py [--quick] [--speeds 100,400,1600] [--seconds N]
                           [--memory-seconds N] [--protocol binance|okx|bybit] [--no-memory]

The local exchange runs on a fast clock (``--speeds``: exchange seconds per real second;
BTC/USDT's ledger has ~8 trades per exchange second, so speed 400 is ~3,200 trades a real
second), streaming its trade ledger. For each speed, in one run on one exchange:

* floor: a bare ccxt.pro client (own thread, own loop) in a ``watch_trades`` loop, counting
  the trades it is handed (Binance: the ``@aggTrade`` stream, as the feed uses), alone;
* then each mode (websocket, threaded, polling): a cerebro with one tick feed
  (``timeframe=bt.TimeFrame.Ticks``) and a strategy that counts ``next()`` calls, alone.

Each measures ``--seconds`` after a one-second warm-up: trades per real second, and the lag
of each trade (exchange clock when it reached the consumer, minus the trade's time, in real
ms). A consumer that keeps up delivers the exchange's rate with a flat lag; one that cannot
falls behind (its lag grows through the window).

Memory: one WebSocket tick feed for ``--memory-seconds`` at the middle speed (``exactbars=1``,
as a long live run is configured), RSS sampled every 5 s.
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import threading
import time
from datetime import datetime, timedelta

import backtrader as bt
import benchlib as bl
import ccxt

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
EPOCH = datetime(1970, 1, 1)
MODES = {
    "websocket": {"use_websocket": True},
    "threaded": {"use_threaded_data": True},
    "polling": {},
}
WARMUP_S = 1.0


class FastClock:
    def __init__(self, speed: float) -> None:
        self.speed = speed
        self.t0 = time.time()

    def __call__(self) -> float:
        return self.t0 + (time.time() - self.t0) * self.speed

    def ms(self) -> float:
        return self() * 1000


class TradeFloor(threading.Thread):
    """A bare ccxt.pro ``watch_trades`` loop; ``seen`` = [(time.time(), trade ms), ...]."""

    def __init__(self, config: dict, exchange_id: str, params: dict) -> None:
        super().__init__(name="bench-trade-floor", daemon=True)
        self.config, self.exchange_id, self.params = config, exchange_id, params
        self.seen: list[tuple[float, int]] = []
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def run(self) -> None:
        loop = self._loop = asyncio.new_event_loop()
        try:
            self._task = loop.create_task(self._main())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    async def _main(self) -> None:
        import ccxt.pro as ccxtpro

        ex = getattr(ccxtpro, self.exchange_id)({**self.config, "enableRateLimit": False})
        seen = self.seen
        try:
            await ex.load_markets()
            while True:
                try:
                    trades = await ex.watch_trades(SYMBOL, None, None, self.params)
                except ccxt.NetworkError:
                    await asyncio.sleep(0.05)
                    continue
                now = time.time()
                self.ready.set()
                for t in trades:
                    seen.append((now, t["timestamp"]))
        finally:
            await ex.close()

    def stop(self) -> None:
        if self._loop is not None and self._task is not None and not self._loop.is_closed():
            self._loop.call_soon_threadsafe(self._task.cancel)
        self.join(10)


class Counter(bt.Strategy):
    """Counts ticks; stops at ``until`` (time.time()); samples RSS every 5 s if asked."""

    params = (("until", None), ("rss", False))

    def __init__(self) -> None:
        self.seen: list[tuple[float, int]] = []  # not kept in the memory run (it would grow)
        self.count = 0
        self.rss: list[tuple[float, float, int]] = []
        self._next_rss = 0.0
        self.live = False

    def notify_data(self, data, status, *args, **kwargs) -> None:
        if data._getstatusname(status) == "LIVE":
            self.live = True

    def next(self) -> None:
        now = time.time()
        ms = round((self.data.datetime.datetime(0) - EPOCH) / timedelta(milliseconds=1)) - 1
        if self.live:
            self.count += 1
            if not self.p.rss:
                self.seen.append((now, ms))
        if self.p.rss and now >= self._next_rss:
            self._next_rss = now + 5.0
            self.rss.append((now, bl.rss_mb(), self.count))
        if self.p.until is not None and now >= self.p.until:
            self.env.runstop()


def measure(seen, clock: FastClock, start: float, end: float) -> dict:
    """Rate (trades per real second) and lag (real ms) of the stamps inside the window."""
    inside = [(t, ms) for t, ms in seen if start <= t < end]
    lags = [((t - clock.t0) * clock.speed * 1000 + clock.t0 * 1000 - ms) / clock.speed
            for t, ms in inside]  # fmt: skip
    half = len(lags) // 2
    return {
        "n": len(inside),
        "rate": len(inside) / (end - start),
        "lag_p50": bl.quantile(lags, 0.5),
        "lag_p99": bl.quantile(lags, 0.99),
        # falling behind shows as a lag that grows from the first half to the second
        "lag_drift": bl.quantile(lags[half:], 0.5) - bl.quantile(lags[:half], 0.5),
    }


def run_feed(ex, clock: FastClock, protocol: str, mode: str, seconds: float, rss=False):
    store = CCXTStore(protocol, config=ex.ccxt_config(), clock=clock.ms, clock_rate=clock.speed)
    data = store.getdata(
        dataname=SYMBOL,
        timeframe=bt.TimeFrame.Ticks,
        backfill_bars=0,  # live trades only
        poll_grace=0.02 * clock.speed,  # polling: a poll every 20 ms of real time
        qcheck=0.05,
        **MODES[mode],
    )
    cerebro = bt.Cerebro(stdstats=False, exactbars=1)
    cerebro.adddata(data)
    start = time.time()
    cerebro.addstrategy(Counter, until=start + WARMUP_S + seconds + 0.5, rss=rss)
    strat = cerebro.run()[0]
    return strat, dict(store.stats)


def run_speed(protocol: str, speed: float, seconds: float, modes) -> dict:
    clock = FastClock(speed)
    out: dict = {}
    with LocalExchange(
        symbols=(SYMBOL,), timeframes=("1s",), history=30, clock=clock, protocol=protocol
    ) as ex:
        params = {"name": "aggTrade"} if protocol == "binance" else {}
        floor = TradeFloor(ex.ccxt_config(), protocol, params)
        floor.start()
        if not floor.ready.wait(15):
            raise RuntimeError("the floor never received a trade")
        t = time.time() + WARMUP_S
        time.sleep(WARMUP_S + seconds)  # the floor's window: it runs alone meanwhile
        floor.stop()
        out["floor"] = measure(floor.seen, clock, t, t + seconds)
        out["exchange"] = {
            "rate": len(ex.trades(SYMBOL, int(clock.ms()) - int(seconds * speed * 1000))) / seconds
        }
        for mode in modes:
            strat, stats = run_feed(ex, clock, protocol, mode, seconds)
            first = strat.seen[0][0] if strat.seen else time.time()
            t = max(first, time.time() - seconds - 0.5)
            out[mode] = measure(strat.seen, clock, t, t + seconds)
            out[mode]["rest_calls"] = stats.get("rest_calls", 0)
    return out


def run_memory(protocol: str, speed: float, seconds: float) -> dict:
    clock = FastClock(speed)
    with LocalExchange(
        symbols=(SYMBOL,), timeframes=("1s",), history=30, clock=clock, protocol=protocol
    ) as ex:
        strat, _ = run_feed(ex, clock, protocol, "websocket", seconds, rss=True)
    samples = strat.rss
    return {
        "samples": [(round(t - samples[0][0], 1), round(m, 1), n) for t, m, n in samples],
        "trades": strat.count,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="3 s windows, two speeds (< 60 s)")
    ap.add_argument("--speeds", help="exchange seconds per real second (default 100,400,1600)")
    ap.add_argument("--seconds", type=float, help="measured window per consumer (default 10)")
    ap.add_argument("--memory-seconds", type=float, help="the long tick run (default 120)")
    ap.add_argument("--no-memory", action="store_true")
    ap.add_argument("--memory-only", action="store_true", help="only the long tick run")
    ap.add_argument("--protocol", default="binance", choices=("binance", "okx", "bybit"))
    args = ap.parse_args(argv)
    speeds = [float(s) for s in (args.speeds or ("100,1600" if args.quick else "100,400,1600"))
              .split(",")]  # fmt: skip
    seconds = args.seconds or (3.0 if args.quick else 10.0)
    mem_s = args.memory_seconds or (10.0 if args.quick else 120.0)
    bl.print_machine()
    print(f"trades: {SYMBOL} on {args.protocol}, {seconds:g} s windows, speeds {speeds}")
    results = {}
    for speed in [] if args.memory_only else speeds:
        results[speed] = run_speed(args.protocol, speed, seconds, list(MODES))
        print(f"  speed {speed:g}: done")
    rows = []
    for speed, r in results.items():
        fl = r["floor"]
        rows.append([f"{speed:g}", "exchange", r["exchange"]["rate"], "", "", "", "", ""])
        rows.append([f"{speed:g}", "floor: bare watch_trades", fl["rate"], 1.0,
                     fl["lag_p50"], fl["lag_p99"], fl["lag_drift"], ""])  # fmt: skip
        for mode in MODES:
            m = r[mode]
            rows.append([f"{speed:g}", mode, m["rate"], m["rate"] / fl["rate"] if fl["rate"] else 0,
                         m["lag_p50"], m["lag_p99"], m["lag_drift"], m["rest_calls"]])  # fmt: skip
    print()
    bl.table(
        ["speed", "consumer", "trades/s", "x floor", "lag p50 ms", "lag p99 ms", "lag drift ms",
         "REST calls"],
        rows,
        "trades per real second delivered (next() for the feeds), lag = trade time to consumer",
    )  # fmt: skip
    memory = None
    if not args.no_memory:
        mid = speeds[len(speeds) // 2]
        memory = run_memory(args.protocol, mid, mem_s)
        print()
        bl.table(
            ["t s", "RSS MB", "ticks delivered"],
            [list(s) for s in memory["samples"]],
            f"memory: one WebSocket tick feed for {mem_s:g} s at speed {mid:g}, exactbars=1",
        )
        first, last = (
            memory["samples"][1 if len(memory["samples"]) > 2 else 0],
            memory["samples"][-1],
        )
        print(
            f"RSS {first[1]:.1f} MB at {first[0]:g} s -> {last[1]:.1f} MB at {last[0]:g} s "
            f"over {last[2] - first[2]:,} ticks"
        )
    bl.save_results(
        "trades" + ("_quick" if args.quick else ""),
        {"protocol": args.protocol, "seconds": seconds, "results": results, "memory": memory},
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
