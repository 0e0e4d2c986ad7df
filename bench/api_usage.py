"""REST calls and WebSocket connections per hour of 1m bars, per live mode.

    python bench/api_usage.py [--quick] [--lengths N1,N2] [--no-plot]

Simulated on 1s bars: each mode runs one feed (BTC/USDT, 100 bars of backfill) in a real
cerebro for N live bars, and the local exchange counts every request it receives
(``ex.stats``): REST calls by path, WebSocket connections, SUBSCRIBE messages, frames sent by
the client. Counts are split when the strategy sees its first live bar into the start-up cost
(markets, clock, backfill, first live bar) and the live cost of bars 2..N, which is scaled to
60 bars: one hour of 1m bars. The
schedule is the same per bar whatever the bar length (a poll ``poll_grace`` after each close),
so the 1s figures carry over bar for bar; time-based traffic (the server's pings every 20 s
and the client's pongs, ~180 an hour) does not and is not counted as API use.

Each mode runs twice, N1 and N2 live bars, to show the live cost is linear in bars (the same
per-bar rate at both lengths). Floor: the least any design can use for one feed, 1 REST call
per bar polled, 0 per bar streamed (plus one connection).
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
HOUR = 60  # bars in an hour of 1m bars
KEYS = ("rest_calls", "klines", "ws_connections", "ws_subscribe_messages", "ws_messages_received")


def counts(snap: dict) -> dict:
    out = {k: snap.get(k, 0) for k in KEYS if k != "klines"}
    out["klines"] = snap["rest_by_path"].get("/api/v3/klines", 0)
    return out


def run(ex, mode: str, live_bars: int) -> dict:
    store = CCXTStore("binance", config=ex.ccxt_config())
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(store.getdata(dataname=SYMBOL, name="d", timeframe="1s", **MODES[mode]))
    marks: dict[str, dict] = {}

    def on_bar(strat, data, live):
        if live and strat.live_counts["d"] == 1:
            marks["first"] = counts(ex.stats.snapshot())

    def on_stop(strat):
        marks["stop"] = counts(ex.stats.snapshot())

    cerebro.addstrategy(bl.Probe, live_bars=live_bars, on_bar=on_bar, on_stop=on_stop)
    before = counts(ex.stats.snapshot())
    strat = cerebro.run()[0]
    window = strat.live_counts["d"] - 1  # bars 2..N: from the first live bar's next() on
    start = {k: marks["first"][k] - before[k] for k in KEYS}
    live = {k: marks["stop"][k] - marks["first"][k] for k in KEYS}
    return {"mode": mode, "bars": window, "start": start, "live": live}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="5 and 9 live bars per mode (< 60 s)")
    ap.add_argument(
        "--lengths", help="two run lengths in live bars (default 31,61: windows of 30 and 60)"
    )
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    if args.lengths:
        lengths = [int(x) for x in args.lengths.split(",")]
    else:
        lengths = [5, 9] if args.quick else [31, 61]
    bl.print_machine()
    print(f"api usage: 1s bars, {SYMBOL}, runs of {lengths} live bars per mode")

    runs: list[dict] = []
    with LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=600) as ex:
        for mode in MODES:
            for n in lengths:
                r = run(ex, mode, n)
                runs.append(r)
                print(f"  {mode} {r['bars']} live bars: {r['live']['rest_calls']} REST calls")

    rows = []
    for r in runs:
        b, s, lv = r["bars"], r["start"], r["live"]
        rows.append(
            [r["mode"], b, s["rest_calls"], s["klines"], s["ws_connections"], lv["rest_calls"],
             lv["klines"], lv["ws_connections"], lv["ws_subscribe_messages"],
             lv["rest_calls"] / b, lv["ws_messages_received"]]
        )  # fmt: skip
    print()
    bl.table(
        ["mode", "live bars", "start REST", "(klines)", "start conns", "live REST", "(klines)",
         "live conns", "live subscribes", "REST per bar", "client frames"],
        rows,
        "counted by the local exchange; start = up to the first live bar, live = bars 2..N",
    )  # fmt: skip

    hour_rows = []
    verdicts = {}
    for mode in MODES:
        rs = [r for r in runs if r["mode"] == mode]
        rates = [r["live"]["rest_calls"] / r["bars"] for r in rs]
        conn_rates = [r["live"]["ws_connections"] / r["bars"] for r in rs]
        rate = rates[-1]
        start = rs[-1]["start"]
        floor = 0.0 if mode == "websocket" else 1.0
        linear = max(rates) - min(rates) <= 0.05 * max(1.0, max(rates))
        verdicts[mode] = linear
        hour_rows.append(
            [mode, start["rest_calls"], rate * HOUR, start["rest_calls"] + rate * HOUR,
             start["ws_connections"] + max(conn_rates) * HOUR, floor * HOUR,
             " / ".join(f"{x:.3f}" for x in rates), "yes" if linear else "NO"]
        )  # fmt: skip
    print()
    bl.table(
        ["mode", "start-up REST", "REST per hour live", "REST first hour", "WS connections",
         "floor REST/hour", "REST per bar at N1 / N2", "linear"],
        hour_rows,
        f"scaled to one hour of 1m bars ({HOUR} bars); floor: 1 call per polled bar, 0 streamed",
    )  # fmt: skip
    bl.save_results(
        "api_usage" + ("_quick" if args.quick else ""),
        {"lengths": lengths, "runs": runs, "per_hour": hour_rows, "linear": verdicts},
    )
    if not args.no_plot:
        plot(runs, args.quick)
    return 0


def plot(runs: list[dict], quick: bool) -> None:
    plt = bl.plt()
    fig, ax = plt.subplots(figsize=(7, 4))
    styles = {"polling": "o-", "threaded": "x--", "websocket": "^-"}
    for mode in MODES:
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["bars"])
        xs = [0] + [r["bars"] for r in rs]
        ys = [0] + [r["live"]["rest_calls"] for r in rs]
        ax.plot(xs, ys, styles[mode], ms=8, label=f"{mode}: REST calls, live bars 2..N")
    for mode in ("websocket",):
        rs = sorted((r for r in runs if r["mode"] == mode), key=lambda r: r["bars"])
        ax.plot(
            [0] + [r["bars"] for r in rs],
            [1] + [1 + r["live"]["ws_connections"] for r in rs],
            "s--",
            label="websocket: connections (incl. the first)",
        )
    ax.set_xlabel("live bars counted (1s bars standing in for 1m; polling = threaded)")
    ax.set_ylabel("count")
    ax.set_title("Live API use is linear in bars")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    bl.save_plot(fig, "api_usage", quick)


if __name__ == "__main__":
    sys.exit(main())
