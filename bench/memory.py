"""Memory over a long run: RSS while 1,000,000 bars flow through cerebro (exactbars=1).

    python bench/memory.py [--quick] [--bars N] [--live-seconds S] [--no-plot]

Historical phase: one feed, ``historical=True``, 1s bars over REST from the local exchange
(``history = N + 10,000``), into ``bt.Cerebro(exactbars=1)`` with a small strategy (SMA(20)
and a counter) that samples the process RSS about 200 times along the way. RSS is reported
at 10%, 50% and 100% of the bars; the target is flat (what is held must not grow with the
number of bars). Floor, same run: a feed generating the same number of bars on the fly
(nothing stored) into the same cerebro and strategy: backtrader's own growth.

Live phase (full run, or --live-seconds): 50 WebSocket feeds on one store (``--live-mode``,
``--live-symbols``), 1s bars, for S seconds, RSS sampled every second; reported at 10%, 50%,
100% of the phase. ``--out-of-step`` keeps the feeds drifting apart meanwhile (a missing
final for one symbol, or a REST 429, every 2 s), so that the feeds' synchroniser
(``backtrader_ccxt/sync.py``: one bar of look-ahead per feed) is exercised all along; the
number of bars it held back for a later turn is reported (``store.stats['sync_held']``).
Before it existed, exactbars=1 with several live feeds crashed (IndexError in
Strategy._clk_update); the script still reports such a crash, keeps the samples taken and
retries a phase that died early.
"""

from __future__ import annotations

import argparse
import gc
import random
import sys
import threading
import time
from datetime import datetime, timedelta

import backtrader as bt
import benchlib as bl

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
EPOCH = datetime(1970, 1, 1)
LIVE_SYMBOLS = 50
FLAT_MB = 10.0  # growth from 10% to 100% of the run that still counts as flat


class Sampler(bt.Strategy):
    """SMA(20) and a counter; samples RSS every ``every`` bars or ``every_s`` seconds."""

    params = (("every", None), ("every_s", None), ("deadline", None), ("samples", None))

    def __init__(self) -> None:
        self.smas = [bt.indicators.SMA(d.close, period=20) for d in self.datas]
        self.count = 0
        # (bars, seconds, rss MB); a list passed in survives a crash of cerebro.run()
        self.samples: list[tuple[int, float, float]] = (
            self.p.samples if self.p.samples is not None else []
        )
        self.t0 = time.time()
        self._last_s = 0.0
        self._lens = [0] * len(self.datas)

    def prenext(self) -> None:
        self.next()

    def next(self) -> None:
        for i, d in enumerate(self.datas):
            n = len(d)
            if n != self._lens[i]:
                self._lens[i] = n
                self.count += 1
        now = time.time()
        p = self.p
        if p.every is not None and self.count % p.every == 0:
            self.samples.append((self.count, now - self.t0, bl.rss_mb()))
        if p.every_s is not None and now - self._last_s >= p.every_s:
            self._last_s = now
            self.samples.append((self.count, now - self.t0, bl.rss_mb()))
        if p.deadline is not None and now >= p.deadline:
            self.env.runstop()


class GenFeed(bt.feed.DataBase):
    """N bars computed on the fly (a random walk), nothing stored: the floor."""

    params = (("bars", 0),)

    def start(self) -> None:
        super().start()
        self._i = 0
        self._t = datetime(2024, 1, 1)
        self._px = 100.0

    def _load(self) -> bool:
        if self._i >= self.p.bars:
            return False
        self._i += 1
        self._t += timedelta(seconds=1)
        self._px += ((self._i * 7919) % 13 - 6) * 0.01
        px = self._px
        lines = self.lines
        lines.datetime[0] = bt.date2num(self._t)
        lines.open[0] = px
        lines.high[0] = px + 0.05
        lines.low[0] = px - 0.05
        lines.close[0] = px
        lines.volume[0] = 1.0
        lines.openinterest[0] = 0.0
        return True


def at_fractions(samples: list[tuple[int, float, float]], key: int = 0) -> list[float]:
    """RSS at 10%, 50%, 100% of the run (by bars, or by seconds with key=1)."""
    if not samples:
        return [float("nan")] * 3
    total = samples[-1][key]
    out = []
    for f in (0.1, 0.5, 1.0):
        target = total * f
        out.append(min(samples, key=lambda s: abs(s[key] - target))[2])
    return out


def historical(ex, n: int) -> dict:
    first_open = ex.first_open_ms("1s") + 5_000 * 1000
    first_close = EPOCH + timedelta(milliseconds=first_open + 1000)
    store = CCXTStore("binance", config={**ex.ccxt_config(), "enableRateLimit": False})
    cerebro = bt.Cerebro(stdstats=False, exactbars=1)
    cerebro.adddata(
        store.getdata(
            dataname=SYMBOL,
            name="d",
            timeframe="1s",
            fromdate=first_close,
            todate=first_close + timedelta(seconds=n - 1),
            historical=True,
        )
    )
    cerebro.addstrategy(Sampler, every=max(1, n // 200))
    return _run(cerebro, n)


def floor(n: int) -> dict:
    cerebro = bt.Cerebro(stdstats=False, exactbars=1)
    cerebro.adddata(GenFeed(bars=n, timeframe=bt.TimeFrame.Seconds, compression=1), name="d")
    cerebro.addstrategy(Sampler, every=max(1, n // 200))
    return _run(cerebro, n)


def _run(cerebro, n: int) -> dict:
    gc.collect()
    before = bl.rss_mb()
    t0 = time.perf_counter()
    strat = cerebro.run()[0]
    wall = time.perf_counter() - t0
    assert strat.count == n, f"saw {strat.count} bars, expected {n}"
    return {"before": before, "samples": strat.samples, "wall": wall, "bars": strat.count}


MODES = {
    "websocket": {"use_websocket": True},
    "threaded": {"use_threaded_data": True},
    "polling": {},
}


class Drifter(threading.Thread):
    """Every 2 s, one fault that puts one feed behind the others."""

    def __init__(self, ex, syms: list[str], mode: str) -> None:
        super().__init__(daemon=True)
        self.ex, self.syms, self.mode = ex, syms, mode
        self.stop_event = threading.Event()
        self.applied = 0

    def run(self) -> None:
        rng = random.Random(1)
        while not self.stop_event.wait(2.0):
            if self.mode == "websocket":
                self.ex.faults.skip_final(count=1, symbol=rng.choice(self.syms))
            else:
                self.ex.faults.rest_errors("429", count=1, retry_after=0.3)
            self.applied += 1


def live(
    ex,
    seconds: float,
    attempts: int = 3,
    mode: str = "websocket",
    symbols: int = LIVE_SYMBOLS,
    out_of_step: bool = False,
) -> dict:
    """The live phase. backtrader's exactbars=1 can crash with several live feeds (IndexError
    in Strategy._clk_update when cerebro rewinds a data whose buffer holds one bar); a crash
    is reported, its samples kept, and the phase retried while it lasted under a third of S."""
    syms = ["BTC/USDT", "ETH/USDT"] + [f"S{i:03d}/USDT" for i in range(1, LIVE_SYMBOLS - 1)]
    syms = syms[:symbols]
    crashes: list[float] = []
    drifter = None
    for _ in range(attempts):
        store = CCXTStore("binance", config=ex.ccxt_config(), retries=1, retry_delay=0.05)
        cerebro = bt.Cerebro(stdstats=False, exactbars=1)
        for s in syms:
            cerebro.adddata(
                store.getdata(
                    dataname=s,
                    name=s,
                    timeframe="1s",
                    backfill_bars=5,
                    poll_grace=0.2,
                    ws_reconnect_delay=0.3,
                    **MODES[mode],
                )
            )
        samples: list = []
        t0 = time.time()
        cerebro.addstrategy(Sampler, every_s=1.0, deadline=t0 + seconds, samples=samples)
        gc.collect()
        before = bl.rss_mb()
        if out_of_step:
            drifter = Drifter(ex, syms, mode)
            drifter.start()
        try:
            cerebro.run()
        except IndexError as exc:
            crashes.append(time.time() - t0)
            store.stop()
            print(f"  live: backtrader crashed after {crashes[-1]:.0f} s (IndexError: {exc})")
            if crashes[-1] >= seconds / 3:
                break
            continue
        finally:
            if drifter is not None:
                drifter.stop_event.set()
                drifter.join()
                ex.faults.clear()
        break
    bars = samples[-1][0] if samples else 0
    return {
        "mode": mode,
        "faults": drifter.applied if drifter else 0,
        "sync_held": store.stats.get("sync_held", 0),
        "before": before,
        "samples": samples,
        "bars": bars,
        "symbols": len(syms),
        "crashes": crashes,
        "seconds": samples[-1][1] if samples else 0.0,
    }


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="100,000 bars, no live phase (< 60 s)")
    ap.add_argument("--bars", type=int, help="historical bars (default 1,000,000)")
    ap.add_argument("--live-seconds", type=float, help="live phase length (default 180; 0: none)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--live-mode", choices=list(MODES), default="websocket")
    ap.add_argument("--live-symbols", type=int, default=LIVE_SYMBOLS)
    ap.add_argument(
        "--out-of-step", action="store_true", help="a fault every 2 s puts one feed behind"
    )
    args = ap.parse_args(argv)
    n = args.bars or (100_000 if args.quick else 1_000_000)
    live_s = args.live_seconds if args.live_seconds is not None else (0 if args.quick else 180)
    bl.print_machine()
    print(f"memory: {n:,} historical 1s bars, exactbars=1; live phase {live_s:g} s")

    syms = ["BTC/USDT", "ETH/USDT"] + [f"S{i:03d}/USDT" for i in range(1, LIVE_SYMBOLS - 1)]
    with LocalExchange(symbols=syms, timeframes=("1s",), history=n + 10_000) as ex:
        base = bl.rss_mb()
        fl = floor(n)
        print(f"  floor: {n:,} generated bars in {fl['wall']:.0f} s")
        hist = historical(ex, n)
        print(f"  backtrader-ccxt: {n:,} bars in {hist['wall']:.0f} s")
        lv = (
            live(
                ex,
                live_s,
                mode=args.live_mode,
                symbols=args.live_symbols,
                out_of_step=args.out_of_step,
            )
            if live_s > 0
            else None
        )
        if lv:
            print(
                f"  live: {lv['bars']:,} bars from {lv['symbols']} {lv['mode']} feeds in "
                f"{lv['seconds']:.0f} s; {lv['faults']} faults, {lv['sync_held']} bars held "
                "for a later turn"
            )

    rows = []
    results = {"bars": n, "rss_at_start_mb": base}
    for name, r in (("generated feed (floor)", fl), ("backtrader-ccxt historical", hist)):
        r10, r50, r100 = at_fractions(r["samples"])
        rows.append(
            [name, f"{n:,}", r["before"], r10, r50, r100, r100 - r10, (r100 - r10) / (n / 1e5)]
        )
        results[name] = {"before": r["before"], "rss10": r10, "rss50": r50, "rss100": r100,
                         "wall_s": r["wall"], "samples": r["samples"]}  # fmt: skip
    if lv:
        r10, r50, r100 = at_fractions(lv["samples"], key=1)
        per = (r100 - r10) / (lv["bars"] / 1e5) if lv["bars"] else float("nan")
        rows.append(
            [f"backtrader-ccxt live, {lv['symbols']} {lv['mode']} feeds", f"{lv['bars']:,}",
             lv["before"],
             r10, r50, r100, r100 - r10, per]
        )  # fmt: skip
        results["live"] = {"before": lv["before"], "rss10": r10, "rss50": r50, "rss100": r100,
                           "bars": lv["bars"], "samples": lv["samples"],
                           "crashes_after_s": lv["crashes"], "mode": lv["mode"],
                           "faults": lv["faults"], "sync_held": lv["sync_held"]}  # fmt: skip
    print()
    bl.table(
        ["run", "bars", "RSS before", "RSS 10%", "RSS 50%", "RSS 100%", "10%->100%",
         "MB per 100k bars"],
        rows,
        "RSS in MB (process: local exchange, ccxt, backtrader)",
    )  # fmt: skip
    growth = results["backtrader-ccxt historical"]
    flat = growth["rss100"] - growth["rss10"] <= FLAT_MB
    print(
        f"flat (historical, growth from 10% to 100% <= {FLAT_MB:g} MB): "
        f"{'MET' if flat else 'MISSED'} ({growth['rss100'] - growth['rss10']:+.1f} MB)"
    )
    if lv:
        g = results["live"]["rss100"] - results["live"]["rss10"]
        print(
            f"flat (live, <= {FLAT_MB:g} MB): {'MET' if g <= FLAT_MB else 'MISSED'} ({g:+.1f} MB)"
        )
    bl.save_results("memory" + ("_quick" if args.quick else ""), results)
    if not args.no_plot:
        plot(fl, hist, lv, n, args.quick)
    return 0


def plot(fl: dict, hist: dict, lv: dict | None, n: int, quick: bool) -> None:
    plt = bl.plt()
    cols = 2 if lv else 1
    fig, axes = plt.subplots(1, cols, figsize=(6 * cols, 4), squeeze=False)
    ax = axes[0][0]
    for name, r in (
        ("backtrader-ccxt, historical over REST", hist),
        ("generated feed (floor)", fl),
    ):
        xs = [s[0] for s in r["samples"]]
        ys = [s[2] for s in r["samples"]]
        ax.plot(xs, ys, label=name)
    ax.set_xlabel("bars into cerebro (exactbars=1)")
    ax.set_ylabel("RSS, MB")
    ax.set_ylim(bottom=0)
    ax.set_title(f"RSS over {n:,} 1s bars")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    if lv:
        ax = axes[0][1]
        ax.plot([s[1] for s in lv["samples"]], [s[2] for s in lv["samples"]])
        ax.set_xlabel("seconds")
        ax.set_ylabel("RSS, MB")
        ax.set_ylim(bottom=0)
        ax.set_title(f"RSS, live: {lv['symbols']} WebSocket feeds, 1s bars")
        ax.grid(True, alpha=0.3)
    bl.save_plot(fig, "memory", quick)


if __name__ == "__main__":
    sys.exit(main())
