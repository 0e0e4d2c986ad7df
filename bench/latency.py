"""Close-to-strategy latency per live mode, 1s bars, against the local exchange.

    python bench/latency.py [--quick] [--bars N] [--protocol binance|okx|bybit|all]
                            [--what-if] [--no-plot]

For each mode (polling, threaded, websocket) one cerebro runs a probe strategy on BTC/USDT
1s bars and stamps each live bar with time.time() when next() sees it. The latency of a bar:

* websocket: from the moment the local exchange writes the candle's final frame (server-side
  stamp, see benchlib.Emissions; Binance ``k.x``, OKX and Bybit ``confirm``) to next();
* polling / threaded: from the candle's close time (open + 1 s) to next(); these modes ask
  for the bar over REST ``poll_grace`` after the close (default: a quarter bar, 250 ms), so
  their figures are that grace plus the rest.

Floor: a bare ccxt.pro client on its own thread and event loop, connected to the same
exchange for the whole run (benchlib.Floor), with two stamps per candle, both from the same
final frame: "frame" when ccxt.pro has parsed the final frame (the earliest anything built on
ccxt.pro can see it), "watch loop" when its bare ``watch_ohlcv`` loop returns the successor
candle's first row (all a client of ccxt's unified API can go by: ccxt drops Binance's ``x``
flag). Each mode is compared with the floors on the same candles, as a difference of
quantiles and per candle (paired).
"""

from __future__ import annotations

import argparse
import sys

import backtrader as bt
import benchlib as bl

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
MODES = {
    "polling": {},
    "threaded": {"use_threaded_data": True},
    "websocket": {"use_websocket": True},
}
# --what-if: threaded polling with ccxt's rollingWindow rate limiter, a store config a user
# can pass: ccxt's default leaky bucket (async) does not refill while idle, so every request
# after a pause waits cost x rateLimit (binance klines: 0.4 x 50 ms = 20 ms).
WHAT_IF = {
    "threaded+rollingWindow": (
        {"use_threaded_data": True},
        {"rateLimiterAlgorithm": "rollingWindow", "rollingWindowSize": 60000},
    ),
}
WARMUP = 2  # live bars dropped at the start of each mode (the seam, first poll schedule)
TARGET_P50_MS = 2.0
TARGET_P99_MS = 10.0


def run_mode(ex, feed_kwargs: dict, config: dict, live_bars: int) -> list:
    """Run one cerebro; return [(open_ms, t_seen)] of its live bars after the warm-up."""
    store = CCXTStore(ex.protocol, config={**ex.ccxt_config(), **config})
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(dataname=SYMBOL, name="d", timeframe="1s", backfill_bars=5, **feed_kwargs)
    )
    cerebro.addstrategy(bl.Probe, live_bars=live_bars + WARMUP)
    strat = cerebro.run()[0]
    live = [(c - 1000, t) for c, t, is_live in strat.seen["d"] if is_live]
    return live[WARMUP:]


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="10 bars per mode (< 60 s)")
    ap.add_argument("--bars", type=int, help="live bars measured per mode (default 120)")
    ap.add_argument("--no-plot", action="store_true")
    ap.add_argument(
        "--protocol",
        default="binance",
        choices=("binance", "okx", "bybit", "all"),
        help="the local exchange's protocol (all: each in turn, WebSocket mode only)",
    )
    ap.add_argument(
        "--what-if",
        action="store_true",
        help="also run threaded polling with ccxt's rollingWindow rate limiter (half the bars)",
    )
    args = ap.parse_args(argv)
    bars = args.bars or (10 if args.quick else 120)
    runs = {m: (kw, {}, bars) for m, kw in MODES.items()}
    if args.what_if:
        runs.update({m: (*v, max(5, bars // 2)) for m, v in WHAT_IF.items()})
    bl.print_machine()
    print(f"latency: {bars} live 1s bars per mode, {SYMBOL}, default poll_grace (250 ms)")

    results: dict[str, dict] = {}
    protocols = ("binance", "okx", "bybit") if args.protocol == "all" else (args.protocol,)
    for protocol in protocols:
        if args.protocol == "all":
            proto_runs = {f"websocket/{protocol}": runs["websocket"]}
        else:
            proto_runs = {f"{m}/{protocol}" if protocol != "binance" else m: v
                          for m, v in runs.items()}  # fmt: skip
        code = _run_protocol(protocol, proto_runs, results)
        if code:
            return code

    frame_all = [x for r in results.values() for x in r["frame"]]
    watch_all = [x for r in results.values() for x in r["watch"]]
    rows = [[m, *_stats(r["latency"])] for m, r in results.items()]
    rows.append(["floor: frame parsed by ccxt.pro", *_stats(frame_all)])
    rows.append(["floor: bare watch_ohlcv loop", *_stats(watch_all)])
    print()
    bl.table(["", "n", "p50 ms", "p99 ms", "max ms"], rows, "close-to-next() latency")
    rows = []
    for mode, r in results.items():
        lat = bl.summary(r["latency"])
        fr, wa, pa = bl.summary(r["frame"]), bl.summary(r["watch"]), bl.summary(r["paired"])
        rows.append(
            [mode, lat["p50"] - wa["p50"], lat["p99"] - wa["p99"], lat["p50"] / wa["p50"],
             lat["p50"] - fr["p50"], lat["p99"] - fr["p99"], lat["p50"] / fr["p50"],
             pa["p50"], pa["p99"]]
        )  # fmt: skip
    print()
    bl.table(
        ["mode", "d p50 watch", "d p99 watch", "x watch", "d p50 frame", "d p99 frame",
         "x frame", "paired p50", "paired p99"],
        rows,
        "difference (ms) and ratio (x) to the floors on the same candles; paired: per candle, "
        "minus the frame floor",
    )  # fmt: skip
    timer = bl.summary(x for r in results.values() for x in r["timer"])
    print(
        f"exchange timer lag (final frame written after the close): p50 {timer['p50']:.2f} ms, "
        f"p99 {timer['p99']:.2f} ms (part of the polling/threaded figures)"
    )
    verdicts = {}
    for mode in (m for m in results if m.startswith("websocket")):
        r = results[mode]
        for fname in ("watch", "frame"):
            d50 = bl.quantile(r["latency"], 0.5) - bl.quantile(r[fname], 0.5)
            d99 = bl.quantile(r["latency"], 0.99) - bl.quantile(r[fname], 0.99)
            ok = d50 <= TARGET_P50_MS and d99 <= TARGET_P99_MS
            verdicts[f"{mode} vs {fname}"] = ok
            print(
                f"{mode} vs {fname} floor: p50 within {TARGET_P50_MS:g} ms and p99 within "
                f"{TARGET_P99_MS:g} ms: {'MET' if ok else 'MISSED'} "
                f"(d p50 {d50:.2f} ms, d p99 {d99:.2f} ms)"
            )
    bl.save_results(
        "latency" + ("_quick" if args.quick else ""),
        {"bars_per_mode": bars, "results": results, "target_met": verdicts},
    )
    if not args.no_plot:
        plot(results, quick=args.quick)
    return 0


def _run_protocol(protocol: str, runs: dict, results: dict) -> int:
    with LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=600, protocol=protocol) as ex:
        emitted = bl.Emissions(ex).times
        floor = bl.Floor(ex.ccxt_config(), [SYMBOL], exchange_id=protocol)
        floor.start()
        if not floor.ready.wait(15):
            print("the floor never connected", file=sys.stderr)
            return 1
        try:
            for mode, (kwargs, config, n) in runs.items():
                seen = run_mode(ex, kwargs, config, n)
                r = {k: [] for k in ("latency", "frame", "watch", "paired", "timer")}
                for open_ms, t_seen in seen:
                    t_emit = emitted.get((SYMBOL, open_ms))
                    close_s = (open_ms + 1000) / 1000
                    ref = t_emit if mode.startswith("websocket") else close_s
                    t_frame = floor.finals.get((SYMBOL, open_ms))
                    t_watch = floor.closed.get((SYMBOL, open_ms))
                    if ref is None or t_emit is None or t_frame is None or t_watch is None:
                        continue  # a candle the floor did not see whole: not comparable
                    r["latency"].append((t_seen - ref) * 1000)
                    r["frame"].append((t_frame - t_emit) * 1000)
                    r["watch"].append((t_watch - t_emit) * 1000)
                    r["paired"].append(r["latency"][-1] - r["frame"][-1])
                    r["timer"].append((t_emit - close_s) * 1000)
                results[mode] = r
                print(f"  {mode}: {len(r['latency'])} bars measured")
        finally:
            floor.stop()
    return 0


def _stats(xs) -> list:
    s = bl.summary(xs)
    return [s["n"], s["p50"], s["p99"], s["max"]]


def plot(results: dict, quick: bool) -> None:
    plt = bl.plt()
    fig, axes = plt.subplots(1, 2, figsize=(11, 4))
    ax = axes[0]
    series = [
        ("floor: frame parsed", [x for r in results.values() for x in r["frame"]]),
        ("floor: watch loop", [x for r in results.values() for x in r["watch"]]),
    ] + [(m, r["latency"]) for m, r in results.items()]
    for name, xs in series:
        xs = sorted(xs)
        if not xs:
            continue
        ys = [(i + 1) / len(xs) for i in range(len(xs))]
        ax.step(xs, ys, where="post", label=name)
    ax.set_xscale("log")
    ax.set_xlabel("close-to-next() latency, ms (log)")
    ax.set_ylabel("fraction of bars")
    ax.set_title("Latency CDF per mode, 1s bars")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=7)
    ax = axes[1]
    for mode in (m for m in results if m.startswith("websocket")):
        r = results[mode]
        ax.plot(r["frame"], ".", ms=3, label=f"floor: frame parsed ({mode} run)")
        ax.plot(r["latency"], ".", ms=3, label=f"{mode}, to next()")
    ax.set_xlabel("bar")
    ax.set_ylabel("ms after the final frame was written")
    ax.set_title("WebSocket mode vs floor, per bar")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=7)
    bl.save_plot(fig, "latency", quick)


if __name__ == "__main__":
    sys.exit(main())
