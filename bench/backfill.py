"""Backfill cost per bar: 100,000 historical 1s bars over REST into a real cerebro.

    python bench/backfill.py [--quick] [--bars N] [--repeat R] [--no-plot]

One feed, ``historical=True`` with ``fromdate``/``todate`` spanning exactly N closed 1s bars
of the local exchange (``history=N + 10,000``), into a cerebro running a small strategy (one
SMA(20), a counter in next()). Measured per bar: wall time of ``cerebro.run()``, CPU time of
the process, CPU of backtrader's thread (where the default REST driver runs: ccxt's HTTP and
parsing, our paging, the feed) and CPU of the local exchange's server thread (which a real
venue would not charge to us). REST klines requests are counted by the exchange; the target
is exactly ceil(N / page size).

The exchange's rate limit is set aside (store config ``enableRateLimit: False``): with it on,
ccxt spaces binance requests by its ``rateLimit`` (50 ms x cost) and the run measures that
pacing instead of the plugin. The full run adds one rate-limited run for reference.

Floors, measured in the same run on the same bars:

* ``PandasData``: backtrader's own feed playing the same bars from a DataFrame in memory,
  into the same cerebro settings and strategy (the target: within 1.5x of it);
* ``bare ccxt``: the same ``fetch_ohlcv`` pages with a bare sync ccxt loop, no cerebro
  (what ccxt and the local exchange cost by themselves).
"""

from __future__ import annotations

import argparse
import math
import sys
import time
from datetime import datetime, timedelta

import backtrader as bt
import benchlib as bl
import pandas as pd

from backtrader_ccxt import CCXTStore
from backtrader_ccxt.localexchange import LocalExchange

SYMBOL = "BTC/USDT"
EPOCH = datetime(1970, 1, 1)
TARGET_RATIO = 1.5


class Strategy(bt.Strategy):
    """An SMA and a counter: the same work whichever feed delivers the bars."""

    def __init__(self) -> None:
        self.sma = bt.indicators.SMA(self.data.close, period=20)
        self.count = 0
        self.last_close = None

    def prenext(self) -> None:
        self.count += 1

    def next(self) -> None:
        self.count += 1
        self.last_close = self.data.close[0]


class ListFeed(bt.feed.DataBase):
    """The least a backtrader feed can do: rows from a Python list into the lines."""

    def start(self) -> None:
        super().start()
        self._rows = self.p.dataname
        self._i = 0

    def _load(self) -> bool:
        if self._i >= len(self._rows):
            return False
        dt, o, h, low, c, v = self._rows[self._i]
        self._i += 1
        lines = self.lines
        lines.datetime[0] = bt.date2num(dt)
        lines.open[0] = o
        lines.high[0] = h
        lines.low[0] = low
        lines.close[0] = c
        lines.volume[0] = v
        lines.openinterest[0] = 0.0
        return True


class Meter:
    """Wall, process CPU, this thread's CPU and the server thread's CPU over a block."""

    def __init__(self, server_tid: int) -> None:
        self.server_tid = server_tid

    def __enter__(self):
        self._w = time.perf_counter()
        self._p = bl.process_cpu()
        self._t = time.thread_time()
        self._s = bl.thread_cpu().get(self.server_tid, 0.0)
        return self

    def __exit__(self, *exc) -> None:
        self.wall = time.perf_counter() - self._w
        self.cpu = bl.process_cpu() - self._p
        self.main = time.thread_time() - self._t
        self.server = bl.thread_cpu().get(self.server_tid, 0.0) - self._s


def klines(ex) -> int:
    return ex.stats.snapshot()["rest_by_path"].get("/api/v3/klines", 0)


def run_plugin(ex, store, first_close: datetime, last_close: datetime, n: int) -> dict:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(
        store.getdata(
            dataname=SYMBOL,
            name="d",
            timeframe="1s",
            fromdate=first_close,
            todate=last_close,
            historical=True,
        )
    )
    cerebro.addstrategy(Strategy)
    before = klines(ex)
    with Meter(ex._thread.native_id) as m:
        strat = cerebro.run()[0]
    assert strat.count == n, f"the strategy saw {strat.count} bars, expected {n}"
    return {"m": m, "requests": klines(ex) - before, "count": strat.count}


def run_memory(data, server_tid: int, n: int) -> dict:
    cerebro = bt.Cerebro(stdstats=False)
    cerebro.adddata(data, name="d")
    cerebro.addstrategy(Strategy)
    with Meter(server_tid) as m:
        strat = cerebro.run()[0]
    assert strat.count == n, f"the strategy saw {strat.count} bars, expected {n}"
    return {"m": m, "requests": 0, "count": strat.count}


def run_bare_ccxt(ex, first_open: int, n: int, page: int) -> dict:
    import ccxt

    c = ccxt.binance({**ex.ccxt_config(), "enableRateLimit": False})
    c.load_markets()
    before = klines(ex)
    got = 0
    since = first_open
    with Meter(ex._thread.native_id) as m:
        while got < n:
            rows = c.fetch_ohlcv(SYMBOL, "1s", since, min(page, n - got))
            got += len(rows)
            since = rows[-1][0] + 1000
    return {"m": m, "requests": klines(ex) - before, "count": got}


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--quick", action="store_true", help="20,000 bars, one repeat (< 60 s)")
    ap.add_argument("--bars", type=int, help="bars to backfill (default 100,000)")
    ap.add_argument("--repeat", type=int, help="runs of each kind; the median is shown")
    ap.add_argument("--no-plot", action="store_true")
    args = ap.parse_args(argv)
    n = args.bars or (20_000 if args.quick else 100_000)
    repeat = args.repeat or (1 if args.quick else 5)
    bl.print_machine()
    print(f"backfill: {n:,} 1s bars of {SYMBOL}, historical=True, {repeat} run(s) of each kind")

    runs: dict[str, list[dict]] = {}
    with LocalExchange(symbols=(SYMBOL,), timeframes=("1s",), history=n + 10_000) as ex:
        tf_ms = 1000
        first_open = ex.first_open_ms("1s") + 5_000 * tf_ms
        first_close = EPOCH + timedelta(milliseconds=first_open + tf_ms)
        last_close = first_close + timedelta(seconds=n - 1)
        rows = ex.candles(SYMBOL, "1s", first_open, first_open + n * tf_ms)
        assert len(rows) == n
        df = pd.DataFrame(
            [r[1:6] for r in rows],
            columns=["open", "high", "low", "close", "volume"],
            index=pd.DatetimeIndex([EPOCH + timedelta(milliseconds=r[0] + tf_ms) for r in rows]),
        )
        mem = [(EPOCH + timedelta(milliseconds=r[0] + tf_ms), *r[1:6]) for r in rows]
        del rows
        store = CCXTStore("binance", config={**ex.ccxt_config(), "enableRateLimit": False})
        store.start()  # markets and clock once, outside the timed runs
        page = store.max_page(SYMBOL) or 500
        expected_requests = math.ceil(n / page)
        tid = ex._thread.native_id
        for _ in range(repeat):
            pdata = bt.feeds.PandasData(dataname=df, timeframe=bt.TimeFrame.Seconds, compression=1)
            runs.setdefault("PandasData (floor)", []).append(run_memory(pdata, tid, n))
            ldata = ListFeed(dataname=mem, timeframe=bt.TimeFrame.Seconds, compression=1)
            runs.setdefault("list feed (bare DataBase)", []).append(run_memory(ldata, tid, n))
            runs.setdefault("backtrader-ccxt", []).append(
                run_plugin(ex, store, first_close, last_close, n)
            )
            runs.setdefault("bare ccxt pages", []).append(run_bare_ccxt(ex, first_open, n, page))
        if not args.quick:
            limited = CCXTStore("binance", config=ex.ccxt_config())
            limited.start()
            runs["backtrader-ccxt, rate limit on"] = [
                run_plugin(ex, limited, first_close, last_close, n)
            ]

    def med(kind: str, attr: str) -> float:
        return bl.quantile([getattr(r["m"], attr) for r in runs[kind]], 0.5)

    floor_wall = med("PandasData (floor)", "wall")
    floor_cpu = med("PandasData (floor)", "main")
    rows_out = []
    figures = {}
    for kind, rs in runs.items():
        wall, cpu, main_cpu, server = (med(kind, a) for a in ("wall", "cpu", "main", "server"))
        reqs = rs[-1]["requests"]
        figures[kind] = {
            "wall_us_per_bar": wall / n * 1e6,
            "process_cpu_us_per_bar": cpu / n * 1e6,
            "client_cpu_us_per_bar": main_cpu / n * 1e6,
            "server_cpu_us_per_bar": server / n * 1e6,
            "wall_ratio": wall / floor_wall,
            "client_cpu_ratio": main_cpu / floor_cpu,
            "requests": reqs,
            "bars_per_s": n / wall,
            "runs": len(rs),
        }
        rows_out.append(
            [kind, wall / n * 1e6, cpu / n * 1e6, main_cpu / n * 1e6, server / n * 1e6,
             n / wall, wall / floor_wall, main_cpu / floor_cpu, reqs if reqs else "-"]
        )  # fmt: skip
    print()
    bl.table(
        ["feed", "wall us/bar", "proc CPU us/bar", "bt thread CPU us/bar", "server CPU us/bar",
         "bars/s", "wall / floor", "bt CPU / floor", "klines calls"],
        rows_out,
        f"{n:,} bars; median of {repeat}; enableRateLimit False unless noted",
    )  # fmt: skip
    plugin = figures["backtrader-ccxt"]
    req_ok = plugin["requests"] == expected_requests
    print(
        f"REST klines requests: {plugin['requests']} (target exactly ceil({n:,} / {page}) = "
        f"{expected_requests}): {'MET' if req_ok else 'MISSED'}"
    )
    for label, key in (("wall", "wall_ratio"), ("backtrader-thread CPU", "client_cpu_ratio")):
        r = plugin[key]
        verdict = "MET" if r <= TARGET_RATIO else "MISSED"
        print(f"{label} within {TARGET_RATIO}x of PandasData: {verdict} ({r:.2f}x)")
    bare = figures["list feed (bare DataBase)"]
    print(
        f"against the bare list feed: wall {plugin['wall_us_per_bar'] / bare['wall_us_per_bar']:.2f}x, "
        f"backtrader-thread CPU {plugin['client_cpu_us_per_bar'] / bare['client_cpu_us_per_bar']:.2f}x"
    )
    bl.save_results(
        "backfill" + ("_quick" if args.quick else ""),
        {"bars": n, "page": page, "expected_requests": expected_requests, "figures": figures},
    )
    if not args.no_plot:
        plot(figures, n, args.quick)
    return 0


def plot(figures: dict, n: int, quick: bool) -> None:
    plt = bl.plt()
    kinds = [k for k in figures if "rate limit on" not in k]
    client = [figures[k]["client_cpu_us_per_bar"] for k in kinds]
    server = [figures[k]["server_cpu_us_per_bar"] for k in kinds]
    wall = [figures[k]["wall_us_per_bar"] for k in kinds]
    fig, ax = plt.subplots(figsize=(9, 4))
    ys = range(len(kinds))
    ax.barh([y + 0.2 for y in ys], client, 0.4, label="backtrader thread CPU")
    ax.barh([y + 0.2 for y in ys], server, 0.4, left=client, label="local exchange CPU")
    ax.barh([y - 0.2 for y in ys], wall, 0.4, label="wall time", color="grey")
    ax.set_yticks(list(ys), kinds)
    ax.invert_yaxis()
    ax.set_xlabel("microseconds per bar")
    ax.set_title(f"Backfill of {n:,} 1s bars into cerebro (enableRateLimit False)")
    ax.grid(True, axis="x", alpha=0.3)
    ax.legend(fontsize=8)
    bl.save_plot(fig, "backfill", quick)


if __name__ == "__main__":
    sys.exit(main())
