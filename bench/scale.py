"""Many symbols on one store, WebSocket mode, 1s bars: CPU, delivery lag, losses, connections.

    python bench/scale.py [--quick] [--sizes 1,10,50,200] [--seconds S] [--what-if] [--no-plot]
                          [--protocol binance|okx|bybit] [--updates N] [--one-process]

The local exchange and the floor run in processes of their own (``--one-process``: as
threads of this one, the earlier layout), so this process holds what a user's would: the
store's loop thread and backtrader's.

For each size N, one store and one cerebro with N WebSocket feeds (1s bars, 5 bars of
backfill) run for S seconds after every feed reported LIVE. Measured over that live window:

* CPU share: CPU seconds per wall second (100% = one core) of the whole process and of its
  threads: backtrader's (feeds + probe strategy), the store's loop thread (ccxt.pro and the
  stream manager) - together "plugin" - the local exchange's server, and the floor;
* delivery lag: from the server writing a candle's final frame to the store's connection
  (benchlib.Emissions; the floor's lag from the write to its own connection: the server
  writes all of one connection's frames of a close, then the next one's, so the first write
  to any connection is not when a consumer could have read it; "p99 1st write" is the lag
  from that first write, as measured before 2026-12-02 14:50) to the strategy's next()
  seeing that bar, over all symbols, split at the moment the store's loop
  thread put the bar in the feed's queue for backtrader ("queued": the loop's share; the
  rest is backtrader's thread: the feed's wait in ``_load`` and cerebro's loop);
* bars lost: candles that closed in the window at least 1.5 s before the stop (ground truth:
  ``ex.candles``) that the strategy never saw, plus bars with wrong values and duplicates
  (all must be 0); "late >1s" counts bars seen more than a second after their final frame;
* connections opened and subscribe messages (``ex.stats``, the floor's own excluded), REST
  calls after LIVE, and the store's counters (stream_bars, REST confirmations and fills).

Floor, in the same run on the same frames (benchlib.Floor): a bare ccxt.pro client over the
same N symbols, in its own process. "frame": when it has parsed a candle's final frame;
"watch": when its bare ``watch_ohlcv_for_symbols`` loop returns the successor candle. Its CPU
is its process's.

--what-if repeats each size in a bench-only variant (not the package's behaviour):

* "no closed flag": the package's reading of Binance's ``k.x`` flag (the venue adapter,
  ``venues.binance``) is switched off, so the timing rule for venues without one decides (a
  change seen after the close, then the successor; else a REST confirmation).
"""

from __future__ import annotations

import argparse
import contextlib
import sys
import threading
import time

import backtrader as bt
import benchlib as bl

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange


@contextlib.contextmanager
def queue_stamps():
    """``{(symbol, open_ms): time.time()}`` of each bar as the loop thread queues it for
    backtrader (a bench-only wrap of the subscription's ``emit``; the package is unchanged)."""
    from backtrader_ccxt.bars import Bar
    from backtrader_ccxt.live import manager

    stamps: dict[tuple[str, int], float] = {}
    original = manager._Subscription.emit

    def emit(self, item):
        if isinstance(item, Bar):
            stamps.setdefault((self.spec.symbol, item.open_ms), time.time())
        return original(self, item)

    manager._Subscription.emit = emit
    try:
        yield stamps
    finally:
        manager._Subscription.emit = original


def symbols_for(n: int) -> list[str]:
    base = ["BTC/USDT", "ETH/USDT"]
    return (base + [f"S{i:03d}/USDT" for i in range(1, n + 1)])[:n]


class InProcess:
    """The earlier layout (``--one-process``): the local exchange and the floor threads of the
    plugin's own process, sharing its GIL. Same interface as benchlib.ExchangeProcess."""

    def __init__(self, **kwargs) -> None:
        self.ex = LocalExchange(**kwargs)
        self.ex.__enter__()
        self.protocol = self.ex.protocol
        self._emissions = bl.Emissions(self.ex)

    def ccxt_config(self) -> dict:
        return self.ex.ccxt_config()

    def stats_snapshot(self) -> dict:
        return self.ex.stats.snapshot()

    def candles(self, *args) -> list:
        return self.ex.candles(*args)

    def emitted(self) -> dict:
        return self._emissions.times

    def emitted_on(self, conns: set[int]) -> dict:
        return self._emissions.times_on(conns)

    def conns_since(self, t: float) -> set[int]:
        return self._emissions.conns_since(t)

    def cpu(self) -> float:
        return bl.thread_cpu().get(self.ex._thread.native_id, 0.0)

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.ex.__exit__(*exc)


class FloorThread(bl.Floor):
    """The floor as a thread of this process (``--one-process``)."""

    def start(self) -> None:
        super().start()
        self.ready_ok = self.ready.wait(60)

    def cpu(self) -> float:
        return bl.thread_cpu().get(self.native_id, 0.0)


class Window:
    """Snapshots at LIVE and at the stop: wall, CPU (this process, its threads, the exchange
    and the floor wherever they run), exchange stats."""

    def __init__(self, ex, store, floor) -> None:
        self.ex, self.store, self.floor = ex, store, floor
        self.start: dict | None = None
        self.end: dict | None = None

    def snap(self) -> dict:
        return {
            "t": time.time(),
            "cpu": bl.process_cpu(),
            "threads": bl.thread_cpu(),
            "ex_cpu": self.ex.cpu(),
            "floor_cpu": self.floor.cpu(),
            "ex": self.ex.stats_snapshot(),
            "store": dict(self.store.stats),
        }


@contextlib.contextmanager
def apply_variant(name: str):
    """Apply a bench-only variant (see the module docstring) for the duration of a run."""
    from backtrader_ccxt import venues
    from backtrader_ccxt.live import manager

    if name == "no closed flag":
        saved = manager.adapter_for
        manager.adapter_for = lambda exchange_id: venues.GENERIC
        try:
            yield
        finally:
            manager.adapter_for = saved
    else:
        yield


def run_size(ex, n: int, seconds: float, variant_name: str, one_process: bool) -> dict:
    syms = symbols_for(n)
    # the floor's bare watch loop re-arms over all N streams per frame: past 200 symbols it
    # costs most of a core, so there the floor only subscribes
    floor_cls = FloorThread if one_process else bl.FloorProcess
    t_floor = time.time()
    floor = floor_cls(ex.ccxt_config(), syms, exchange_id=ex.protocol, watch=n <= 200)
    if one_process:
        floor.start()
    if not floor.ready_ok:
        raise RuntimeError("the floor never connected")
    # the floor's connections: those that carried frames since it started, before the store
    # (one close of the 1s candles brings a frame to each)
    deadline = time.time() + 10
    while time.time() < deadline and not ex.conns_since(t_floor):
        time.sleep(0.2)
    time.sleep(1.2)
    floor_conns = ex.conns_since(t_floor)
    t_store = time.time()
    store = CCXTStore(ex.protocol, config=ex.ccxt_config())
    win = Window(ex, store, floor)
    cerebro = bt.Cerebro(stdstats=False)
    for s in syms:
        cerebro.adddata(
            store.getdata(dataname=s, name=s, timeframe="1s", backfill_bars=5, use_websocket=True)
        )

    loop_tids: list[int] = []

    def on_live(strat):
        loop_tids.extend(bl.native_ids("backtrader-ccxt-"))
        win.start = win.snap()
        strat.p.deadline = win.start["t"] + seconds

    def on_stop(strat):
        win.end = win.snap()

    cerebro.addstrategy(bl.Probe, keep_values=True, on_live=on_live, on_stop=on_stop)
    before = ex.stats_snapshot()
    t0 = time.time()
    try:
        with apply_variant(variant_name), queue_stamps() as queued_at:
            strat = cerebro.run()[0]
        after = ex.stats_snapshot()
    finally:
        floor.stop()
    # each consumer's lag runs from the write of the final to its own connection: the
    # server writes one connection's frames, then the next one's
    plugin_conns = ex.conns_since(t_store) - floor_conns
    emitted = ex.emitted_on(plugin_conns)
    emitted_floor = ex.emitted_on(floor_conns)
    emitted_any = ex.emitted()
    assert win.start is not None and win.end is not None, "the run never went live"
    t_live, t_end = win.start["t"], win.end["t"]
    wall = t_end - t_live

    # delivery lag and exactness, per symbol
    lag, lag_any, frame, watch, queued, waited = [], [], [], [], [], []
    lost = wrong = dup = late = 0
    lo_ms = (int(t_live * 1000) // 1000 + 1) * 1000  # first candle opening after LIVE
    hi_ms = (int((t_end - 1.5) * 1000) // 1000) * 1000  # closed (and due) well before the stop
    for s in syms:
        seen = strat.seen[s]
        opens = [c - 1000 for c, _, _ in seen]
        dup += len(opens) - len(set(opens))
        for c, t_seen, live in seen:
            open_ms = c - 1000
            t_emit = emitted.get((s, open_ms))
            if not live or t_emit is None or t_emit < t_live:
                continue
            lag.append((t_seen - t_emit) * 1000)
            lag_any.append((t_seen - emitted_any[(s, open_ms)]) * 1000)
            t_queued = queued_at.get((s, open_ms))
            if t_queued is not None:
                queued.append((t_queued - t_emit) * 1000)
                waited.append((t_seen - t_queued) * 1000)
            if (t_seen - t_emit) > 1.0:
                late += 1
        for open_ms in range(lo_ms, hi_ms + 1, 1000):
            t_emit = emitted_floor.get((s, open_ms))
            if t_emit is None:
                continue
            if (s, open_ms) in floor.finals:
                frame.append((floor.finals[(s, open_ms)] - t_emit) * 1000)
            if (s, open_ms) in floor.closed:
                watch.append((floor.closed[(s, open_ms)] - t_emit) * 1000)
        got = {v[0] - 1000: v[1:] for v in strat.values[s]}
        for row in ex.candles(s, "1s", lo_ms, hi_ms + 1):
            have = got.get(int(row[0]))
            if have is None:
                lost += 1
            elif tuple(have) != tuple(row[1:6]):
                wrong += 1

    # CPU per thread over the live window
    t0s, t1s = win.start["threads"], win.end["threads"]

    def share(tids) -> float:
        return sum(t1s.get(t, 0.0) - t0s.get(t, 0.0) for t in tids) / wall * 100

    main_tid = threading.main_thread().native_id
    proc = (win.end["cpu"] - win.start["cpu"]) / wall * 100
    ex0, ex1 = win.start["ex"], win.end["ex"]
    st0, st1 = win.start["store"], win.end["store"]
    return {
        "n": n,
        "seconds": wall,
        "startup_s": t_live - t0,
        "cpu_process": proc,
        "cpu_backtrader": share([main_tid]),
        "cpu_loop": share(loop_tids),
        "cpu_plugin": share([main_tid, *loop_tids]),
        "cpu_server": (win.end["ex_cpu"] - win.start["ex_cpu"]) / wall * 100,
        "cpu_floor": (win.end["floor_cpu"] - win.start["floor_cpu"]) / wall * 100,
        "layout": "one process" if one_process else "exchange and floor in own processes",
        "lag": bl.summary(lag),
        "lag_from_first_write": bl.summary(lag_any),
        "connections_floor": len(floor_conns),
        "connections_plugin": len(plugin_conns),
        "floor_frame_lag": bl.summary(frame),
        "floor_watch_lag": bl.summary(watch),
        "lag_values": lag,
        "queued_lag": bl.summary(queued),
        "backtrader_wait": bl.summary(waited),
        "bars_checked": len(syms) * max(0, (hi_ms - lo_ms) // 1000 + 1),
        "lost": lost,
        "wrong": wrong,
        "dup": dup,
        "late_over_1s": late,
        "connections": after["ws_connections"] - before["ws_connections"],
        "subscribe_messages": after["ws_subscribe_messages"] - before["ws_subscribe_messages"],
        "rest_after_live": ex1["rest_calls"] - ex0["rest_calls"],
        "stream_bars": _delta(st0, st1, "stream_bars"),
        # the store's counter names (older / newer package versions)
        "rest_confirms": _delta(st0, st1, "rest_confirm"),
        "rest_fills": _delta(st0, st1, "rest_fill"),
        "reconnects": _delta(st0, st1, "reconnects"),  # in the live window
        "reconnects_total": st1.get("reconnects", 0),  # start-up included
        "floor_connects": floor.connects,
    }


def _delta(a: dict, b: dict, *keys: str) -> int:
    return sum(b.get(k, 0) - a.get(k, 0) for k in keys)


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="6 s live per size (< 60 s)")
    ap.add_argument("--sizes", default="1,10,50,200")
    ap.add_argument("--seconds", type=float, help="live seconds per size (default 25)")
    ap.add_argument(
        "--what-if",
        action="store_true",
        help="repeat each size with the stream manager's wait_for awaiting in place and "
        "with the closed-flag reading switched off (bench-only variants)",
    )
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument("--protocol", default="binance", choices=("binance", "okx", "bybit"))
    ap.add_argument(
        "--updates",
        type=int,
        default=1,
        help="partial frames per candle before its final (default 1: Binance pushes a 1s "
        "kline stream every 1,000 ms; the local exchange's own default is 4)",
    )
    ap.add_argument(
        "--one-process",
        action="store_true",
        help="the earlier layout: local exchange and floor as threads of the plugin's process "
        "(one GIL for all); by default each runs in a process of its own",
    )
    args = ap.parse_args(argv)
    sizes = [int(x) for x in args.sizes.split(",")]
    seconds = args.seconds or (6.0 if args.quick else 25.0)
    bl.print_machine()
    layout = "one process" if args.one_process else "exchange and floor in processes of their own"
    print(
        f"scale: sizes {sizes}, {seconds:g} s live each, WebSocket mode, 1s bars, "
        f"{args.protocol}, {layout}, {args.updates} partial frame(s) per candle + the final"
    )

    results: dict[str, list[dict]] = {"as shipped": []}
    if args.what_if:
        results["no closed flag"] = []
    side = InProcess if args.one_process else bl.ExchangeProcess
    with side(
        symbols=symbols_for(max(sizes)),
        timeframes=("1s",),
        history=300,
        protocol=args.protocol,
        updates_per_candle=args.updates,
    ) as ex:
        for n in sizes:
            for variant, out in results.items():
                r = run_size(ex, n, seconds, variant, args.one_process)
                out.append(r)
                print(
                    f"  {variant} {n} symbols: live after {r['startup_s']:.1f} s, "
                    f"lag p99 {r['lag']['p99']:.0f} ms, lost {r['lost']}"
                )

    for variant, rs in results.items():
        print()
        bl.table(
            ["symbols", "startup s", "CPU proc %", "plugin %", "(bt %", "loop %)", "server %",
             "floor %", "plugin/floor", "lag p50", "lag p99", "lag max", "frame p50",
             "frame p99", "p99 - frame", "watch p99", "p99 1st write"],
            [[r["n"], r["startup_s"], r["cpu_process"], r["cpu_plugin"], r["cpu_backtrader"],
              r["cpu_loop"], r["cpu_server"], r["cpu_floor"],
              r["cpu_plugin"] / r["cpu_floor"] if r["cpu_floor"] else float("nan"),
              r["lag"]["p50"], r["lag"]["p99"], r["lag"]["max"], r["floor_frame_lag"]["p50"],
              r["floor_frame_lag"]["p99"], r["lag"]["p99"] - r["floor_frame_lag"]["p99"],
              r["floor_watch_lag"]["p99"], r["lag_from_first_write"]["p99"]] for r in rs],
            f"{variant}: CPU in % of one core over the live window; lag in ms from the final frame",
        )  # fmt: skip
        print()
        bl.table(
            ["symbols", "frame -> queued p50", "p99", "queued -> next() p50", "p99"],
            [[r["n"], r["queued_lag"]["p50"], r["queued_lag"]["p99"], r["backtrader_wait"]["p50"],
              r["backtrader_wait"]["p99"]] for r in rs],
            f"{variant}: where the lag is spent (ms): the store's loop thread, then backtrader's",
        )  # fmt: skip
        print()
        bl.table(
            ["symbols", "bars checked", "lost", "wrong", "dup", "late >1s", "connections",
             "subscribe msgs", "REST after LIVE", "stream bars", "REST confirms", "REST fills",
             "reconnects", "(all run)"],
            [[r["n"], r["bars_checked"], r["lost"], r["wrong"], r["dup"], r["late_over_1s"],
              r["connections"], r["subscribe_messages"], r["rest_after_live"], r["stream_bars"],
              r["rest_confirms"], r["rest_fills"], r["reconnects"], r["reconnects_total"]]
             for r in rs],
            f"{variant}: exactness and API use (connections exclude the floor's)",
        )  # fmt: skip
    clean = all(r["lost"] == r["wrong"] == r["dup"] == 0 for rs in results.values() for r in rs)
    print(f"\nbars lost / wrong / duplicated = 0 at every size: {'MET' if clean else 'MISSED'}")
    bl.save_results(
        "scale" + ("_quick" if args.quick else ""),
        {
            "seconds": seconds,
            "updates_per_candle": args.updates,
            "layout": layout,
            "results": {
                v: [{k: x for k, x in r.items() if k != "lag_values"} for r in rs]
                for v, rs in results.items()
            },
        },
    )
    if not args.no_plot:
        plot(results, args.quick)  # summaries only: also replayable from the saved JSON
    return 0


def plot(results: dict, quick: bool) -> None:
    plt = bl.plt()
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    colors = dict(zip(results, ("tab:blue", "tab:green", "tab:red"), strict=False))
    for variant, rs in results.items():
        c = colors[variant]
        ns = [r["n"] for r in rs]
        axes[0].plot(ns, [r["cpu_plugin"] for r in rs], "o-", color=c, label=f"plugin, {variant}")
        axes[1].plot(ns, [r["lag"]["p99"] for r in rs], "o-", color=c, label=f"p99, {variant}")
        axes[1].plot(ns, [r["lag"]["p50"] for r in rs], "o--", color=c, label=f"p50, {variant}")
        axes[1].plot(
            ns, [r["floor_frame_lag"]["p99"] for r in rs], ":", color=c, alpha=0.6,
            label=f"floor p99 (frame), {variant} run",
        )  # fmt: skip
    rs = results["as shipped"]
    ns = [r["n"] for r in rs]
    axes[0].plot(
        ns, [r["cpu_floor"] for r in rs], "s:", color="grey", label="floor (bare ccxt.pro)"
    )
    axes[0].plot(ns, [r["cpu_server"] for r in rs], "^--", color="grey", label="local exchange")
    axes[1].plot(
        ns, [r["floor_watch_lag"]["p99"] for r in rs], "v:", color="grey",
        label="bare watch_ohlcv_for_symbols loop p99",
    )  # fmt: skip
    for ax in axes:
        ax.set_xscale("log")
        ax.set_xlabel("symbols on one store (1s bars, WebSocket)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=7)
    axes[0].set_ylabel("CPU, % of one core")
    axes[0].set_title("CPU over the live window")
    axes[1].set_yscale("log")
    axes[1].set_ylabel("ms from final frame to next() (log)")
    axes[1].set_title("Delivery lag")
    bl.save_plot(fig, "scale", quick)


if __name__ == "__main__":
    sys.exit(main())
