"""Shared pieces of the benchmarks: machine facts, statistics, tables, the probe strategy,
server-side emission timestamps, the bare ccxt.pro floor and per-thread CPU accounting.

Everything runs in one process on one clock, so ``time.time()`` stamps taken on different
threads (the local exchange's server thread, ccxt.pro's loop, backtrader's thread) compare.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import math
import os
import platform
import sys
import threading
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:  # run as `python bench/x.py` from a checkout, no install needed
    sys.path.insert(0, str(ROOT))

IMG_DIR = ROOT / "docs" / "img"

import backtrader as bt  # noqa: E402
import ccxt  # noqa: E402

# -- machine and environment ----------------------------------------------------------------


_INFO: dict | None = None


def machine_info() -> dict:
    """The machine, versions and the package's git revision, taken once (at the start of a
    run: the checkout may change while a long run goes)."""
    global _INFO
    if _INFO is None:
        _INFO = _machine_info()
    return _INFO


def _machine_info() -> dict:
    model = "unknown"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    try:
        import subprocess

        rev = subprocess.run(
            ["git", "-C", str(ROOT), "describe", "--always", "--dirty"],
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        rev = "unknown"
    return {
        "package_rev": rev or "unknown",
        "cpu": model,
        "cores": os.cpu_count(),
        "python": platform.python_version(),
        "ccxt": ccxt.__version__,
        "backtrader": bt.__version__,
        "platform": platform.platform(terse=True),
    }


def print_machine() -> dict:
    info = machine_info()
    print(
        f"machine: {info['cpu']}, {info['cores']} cores, Python {info['python']}, "
        f"ccxt {info['ccxt']}, backtrader {info['backtrader']} ({info['platform']}); "
        f"package at {info['package_rev']}"
    )
    return info


def save_results(name: str, payload: dict) -> Path | None:
    """Write the figures of a run as JSON to ``$BENCH_RESULTS/<name>.json`` when that
    environment variable names a directory (nothing is written otherwise)."""
    where = os.environ.get("BENCH_RESULTS")
    if not where:
        return None
    out = Path(where)
    out.mkdir(parents=True, exist_ok=True)
    path = out / f"{name}.json"
    payload = {"machine": machine_info(), "when": time.strftime("%Y-%m-%d %H:%M UTC"), **payload}
    path.write_text(json.dumps(payload, indent=1, default=str))
    print(f"figures: {path}")
    return path


# -- statistics and tables ------------------------------------------------------------------


def quantile(values, q: float) -> float:
    """Linear-interpolated quantile (q in 0..1); nan for an empty list."""
    xs = sorted(values)
    if not xs:
        return math.nan
    pos = (len(xs) - 1) * q
    lo = math.floor(pos)
    hi = min(lo + 1, len(xs) - 1)
    return xs[lo] + (xs[hi] - xs[lo]) * (pos - lo)


def summary(values) -> dict:
    xs = list(values)
    return {
        "n": len(xs),
        "p50": quantile(xs, 0.5),
        "p99": quantile(xs, 0.99),
        "max": max(xs) if xs else math.nan,
    }


def table(headers: list[str], rows: list[list], title: str | None = None) -> str:
    cells = [[_fmt(c) for c in row] for row in rows]
    widths = [
        max(len(h), *(len(r[i]) for r in cells)) if cells else len(h) for i, h in enumerate(headers)
    ]
    lines = []
    if title:
        lines.append(title)
    lines.append(
        "  ".join(
            h.rjust(w) if i else h.ljust(w)
            for i, (h, w) in enumerate(zip(headers, widths, strict=True))
        )
    )
    lines.append("  ".join("-" * w for w in widths))
    for r in cells:
        lines.append(
            "  ".join(
                c.rjust(w) if i else c.ljust(w)
                for i, (c, w) in enumerate(zip(r, widths, strict=True))
            )
        )
    text = "\n".join(lines)
    print(text)
    return text


def _fmt(v) -> str:
    if isinstance(v, float):
        if math.isnan(v):
            return "-"
        if abs(v) >= 100:
            return f"{v:,.0f}"
        if abs(v) >= 10:
            return f"{v:.1f}"
        return f"{v:.2f}"
    return str(v)


# -- processes and threads ------------------------------------------------------------------


def rss_mb() -> float:
    import psutil

    return psutil.Process().memory_info().rss / 2**20


def thread_cpu() -> dict[int, float]:
    """CPU seconds (user + system) of every thread of this process, by native thread id."""
    import psutil

    return {t.id: t.user_time + t.system_time for t in psutil.Process().threads()}


def process_cpu() -> float:
    t = os.times()
    return t.user + t.system


def native_ids(prefix: str) -> list[int]:
    return [t.native_id for t in threading.enumerate() if t.name.startswith(prefix) and t.native_id]


# -- the local exchange, instrumented -------------------------------------------------------


class Emissions:
    """Records when the local exchange's server writes each FINAL candle frame (Binance
    ``x: true``, OKX/Bybit ``confirm``): ``times[(symbol, open_ms)] = time.time()`` at the
    first write of that candle's final to any connection, through the exchange's public
    frame hook (``LocalExchange.add_frame_listener``)."""

    def __init__(self, ex) -> None:
        self.times: dict[tuple[str, int], float] = {}
        #: the same per connection: ``{(symbol, open_ms, connection): sent_at}``, and when
        #: each connection carried its first frame (to tell the floor's from the plugin's)
        self.by_conn: dict[tuple[str, int, int], float] = {}
        self.conn_first: dict[int, float] = {}
        times, by_conn, conn_first = self.times, self.by_conn, self.conn_first

        def on_frame(frame) -> None:
            conn_first.setdefault(frame.connection, frame.sent_at)
            if frame.final and frame.kind == "update":
                times.setdefault((frame.symbol, frame.open_ms), frame.sent_at)
                by_conn.setdefault((frame.symbol, frame.open_ms, frame.connection), frame.sent_at)

        ex.add_frame_listener(on_frame)

    def conns_since(self, t: float) -> set[int]:
        """The connections whose first frame was written at or after ``t`` (time.time())."""
        return {c for c, t0 in self.conn_first.items() if t0 >= t}

    def times_on(self, conns: set[int]) -> dict[tuple[str, int], float]:
        """Like ``times``, counting only the writes to ``conns``: each consumer's lag runs from
        the write to its own connection (the server writes one connection's frames, then the
        next one's)."""
        out: dict[tuple[str, int], float] = {}
        for (symbol, open_ms, conn), t in self.by_conn.items():
            if conn in conns:
                key = (symbol, open_ms)
                if key not in out or t < out[key]:
                    out[key] = t
        return out


def binance_config(ex, **extra) -> dict:
    cfg = ex.ccxt_config()
    cfg.update(extra)
    return cfg


# -- the floor: a bare ccxt.pro loop in its own thread --------------------------------------


class Floor(threading.Thread):
    """A bare ccxt.pro client on its own thread and event loop: the least work any ccxt.pro
    consumer can do with the same frames. Two stamps per candle (``time.time()``):

    * ``finals[(symbol, open_ms)]``: ccxt.pro has parsed the candle's final frame (the
      venue's closed flag - Binance ``k.x``, OKX/Bybit ``confirm`` - read in a wrapper of the
      instance's ``handle_ohlcv`` with the package's venue adapter, which only parses). This
      is "receiving the same frame".
    * ``closed[(symbol, open_ms)]`` (``watch=True`` only): the bare ``watch_ohlcv`` loop
      (``watch_ohlcv_for_symbols`` for several symbols) first returns a row of a LATER
      candle: when a client that relies on ccxt's unified API alone can know the candle
      closed. That loop re-arms the watch on every frame, which at 1,000 symbols costs most
      of a core and starves everything else in the process; ``watch=False`` subscribes once
      and then only waits (the fair floor for "frame" at scale).

    Reconnects on a ``NetworkError`` (counted in ``connects``).
    """

    def __init__(
        self,
        config: dict,
        symbols: list[str],
        timeframe: str = "1s",
        exchange_id: str = "binance",
        watch: bool = True,
    ) -> None:
        super().__init__(name="bench-floor", daemon=True)
        self.config = dict(config)
        self.symbols = list(symbols)
        self.timeframe = timeframe
        self.exchange_id = exchange_id
        self.watch = watch
        self.closed: dict[tuple[str, int], float] = {}
        self.finals: dict[tuple[str, int], float] = {}
        self.rows = 0
        self.connects = 0
        self.errors = 0
        self.ready = threading.Event()
        self._loop: asyncio.AbstractEventLoop | None = None
        self._task: asyncio.Task | None = None

    def run(self) -> None:
        loop = asyncio.new_event_loop()
        self._loop = loop
        try:
            self._task = loop.create_task(self._main())
            loop.run_until_complete(self._task)
        except asyncio.CancelledError:
            pass
        finally:
            loop.close()

    def _stamp_finals(self, ex) -> None:
        from backtrader_ccxt.venues import adapter_for

        read = adapter_for(self.exchange_id).read_flags
        original = ex.handle_ohlcv
        finals = self.finals

        def handle_ohlcv(client, message):
            original(client, message)
            flags = read(ex, client, message) if read is not None else None
            for (symbol, _tf, open_ms), final in (flags or {}).items():
                key = (symbol, open_ms)
                if final is True and key not in finals:
                    finals[key] = time.time()

        ex.handle_ohlcv = handle_ohlcv

    async def _main(self) -> None:
        import ccxt.pro as ccxtpro

        ex = getattr(ccxtpro, self.exchange_id)({**self.config, "enableRateLimit": False})
        self._stamp_finals(ex)
        last: dict[str, int] = {}
        try:
            await ex.load_markets()
            pairs = [[s, self.timeframe] for s in self.symbols]
            connected = False
            while True:
                try:
                    if len(self.symbols) == 1:
                        rows = await ex.watch_ohlcv(self.symbols[0], self.timeframe)
                        got = [(self.symbols[0], rows)]
                    else:
                        res = await ex.watch_ohlcv_for_symbols(pairs)
                        got = [(s, r) for s, d in res.items() for r in d.values()]
                    if connected and not self.watch:
                        # subscribed: wait for the connection to fail, reading nothing
                        await asyncio.gather(
                            *(c.future("bench-floor") for c in list(ex.clients.values()))
                        )
                except ccxt.NetworkError:
                    self.errors += 1
                    connected = False
                    await asyncio.sleep(0.05)
                    continue
                now = time.time()
                if not connected:
                    connected = True
                    self.connects += 1
                    self.ready.set()
                for sym, rows in got:
                    for row in rows:
                        self.rows += 1
                        t = int(row[0])
                        prev = last.get(sym)
                        if prev is None or t > prev:
                            if prev is not None:
                                self.closed.setdefault((sym, prev), now)
                            last[sym] = t
        finally:
            await ex.close()

    def stop(self) -> None:
        loop, task = self._loop, self._task
        if loop is not None and task is not None and not loop.is_closed():
            loop.call_soon_threadsafe(task.cancel)
        self.join(10)


# -- the exchange and the floor in processes of their own ----------------------------------


def _exchange_child(conn, kwargs: dict) -> None:
    """Child process: a LocalExchange with its Emissions, answering the parent over a pipe."""
    from backtrader_ccxt.localexchange import LocalExchange

    with LocalExchange(**kwargs) as ex:
        emissions = Emissions(ex)
        conn.send({"config": ex.ccxt_config(), "protocol": ex.protocol})
        while True:
            cmd, args = conn.recv()
            if cmd == "stop":
                conn.send(None)
                return
            if cmd == "stats":
                snap = ex.stats.snapshot()
                snap.pop("rest_log", None)
                conn.send(snap)
            elif cmd == "candles":
                conn.send([list(map(float, r)) for r in ex.candles(*args)])
            elif cmd == "emitted":
                conn.send(dict(emissions.times))
            elif cmd == "emitted_on":
                conn.send(emissions.times_on(*args))
            elif cmd == "conns_since":
                conn.send(emissions.conns_since(*args))
            elif cmd == "cpu":
                conn.send(process_cpu())


def _floor_child(conn, args: tuple, kwargs: dict) -> None:
    """Child process: a Floor; ``stop`` answers with its stamps and counts."""
    floor = Floor(*args, **kwargs)
    floor.start()
    conn.send(floor.ready.wait(60))
    while True:
        cmd, _ = conn.recv()
        if cmd == "cpu":
            conn.send(process_cpu())
        elif cmd == "stop":
            floor.stop()
            conn.send({"finals": floor.finals, "closed": floor.closed, "connects": floor.connects})
            return


class _Child:
    """A bench-side process (spawned, so that it has an interpreter and a GIL of its own)
    driven by request/answer over a pipe."""

    def __init__(self, target, *args) -> None:
        import multiprocessing as mp

        ctx = mp.get_context("spawn")
        self._conn, child = ctx.Pipe()
        self._proc = ctx.Process(target=target, args=(child, *args), daemon=True)
        self._proc.start()
        self._lock = threading.Lock()

    def ask(self, cmd: str, *args, timeout: float = 120.0):
        with self._lock:
            self._conn.send((cmd, args))
            if not self._conn.poll(timeout):
                raise RuntimeError(f"bench child gave no answer to {cmd!r} in {timeout:g} s")
            return self._conn.recv()

    def first(self, timeout: float = 120.0):
        if not self._conn.poll(timeout):
            raise RuntimeError("bench child did not start")
        return self._conn.recv()

    def close(self) -> None:
        if self._proc.is_alive():
            with contextlib.suppress(Exception):
                self.ask("stop", timeout=30)
            self._proc.join(30)
            if self._proc.is_alive():
                self._proc.kill()


class ExchangeProcess(_Child):
    """The local exchange in a process of its own: the plugin's process then holds only what
    a user's would (the store's loop and backtrader), as against a remote venue. Offers the
    parts of LocalExchange the benchmarks read: ``ccxt_config()``, ``protocol``,
    ``stats_snapshot()``, ``candles()``, ``emitted()`` (Emissions.times) and ``cpu()``."""

    def __init__(self, **kwargs) -> None:
        super().__init__(_exchange_child, kwargs)
        hello = self.first()
        self._config, self.protocol = hello["config"], hello["protocol"]

    def ccxt_config(self) -> dict:
        return dict(self._config)

    def stats_snapshot(self) -> dict:
        return self.ask("stats")

    def candles(self, symbol: str, timeframe: str, since_ms: int, until_ms: int) -> list:
        return self.ask("candles", symbol, timeframe, since_ms, until_ms)

    def emitted(self) -> dict:
        return self.ask("emitted")

    def emitted_on(self, conns: set[int]) -> dict:
        return self.ask("emitted_on", conns)

    def conns_since(self, t: float) -> set[int]:
        return self.ask("conns_since", t)

    def cpu(self) -> float:
        return self.ask("cpu")

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class FloorProcess(_Child):
    """A Floor (same arguments) in a process of its own; ``stop()`` fetches its stamps into
    ``finals``/``closed``/``connects`` as the thread version has them."""

    def __init__(self, *args, **kwargs) -> None:
        super().__init__(_floor_child, args, kwargs)
        self.finals: dict = {}
        self.closed: dict = {}
        self.connects = 0
        self.ready_ok = bool(self.first())

    def cpu(self) -> float:
        return self.ask("cpu")

    def stop(self) -> None:
        got = self.ask("stop")
        self.finals, self.closed, self.connects = got["finals"], got["closed"], got["connects"]
        self._proc.join(30)


# -- the probe strategy -----------------------------------------------------------------------


class Probe(bt.Strategy):
    """Stamps every bar a data delivers with ``time.time()`` when ``next()`` sees it.

    ``seen[name] = [(close_ms, t_seen, live), ...]`` (``live`` after the data's LIVE
    notification) plus O/H/L/C/V in ``values`` when ``keep_values``. Stops cerebro once every
    data delivered ``live_bars`` live bars, or at ``deadline`` (time.time(); ``on_live`` may
    set ``self.p.deadline``), calling ``on_stop(self)`` first. ``on_bar(self, data, live)``
    runs for every new bar.
    """

    params = (
        ("live_bars", None),
        ("deadline", None),
        ("keep_values", False),
        ("on_live", None),
        ("on_stop", None),
        ("on_bar", None),
    )

    def __init__(self) -> None:
        names = [d._name for d in self.datas]
        self.seen: dict[str, list[tuple[int, float, bool]]] = {n: [] for n in names}
        self.values: dict[str, list[tuple]] = {n: [] for n in names}
        self.statuses: dict[str, list[str]] = {n: [] for n in names}
        self.live: dict[str, bool] = dict.fromkeys(names, False)
        self.live_counts: dict[str, int] = dict.fromkeys(names, 0)
        self._len = dict.fromkeys(names, 0)
        self.all_live_at: float | None = None
        self._stopping = False

    def notify_data(self, data, status, *args, **kwargs) -> None:
        name = data._getstatusname(status)
        self.statuses[data._name].append(name)
        if name == "LIVE":
            self.live[data._name] = True
            if self.all_live_at is None and all(self.live.values()):
                self.all_live_at = time.time()
                if self.p.on_live is not None:
                    self.p.on_live(self)

    def prenext(self) -> None:
        self.next()

    def nextstart(self) -> None:
        self.next()

    def next(self) -> None:
        now = time.time()
        for d in self.datas:
            n = len(d)
            name = d._name
            if n == self._len[name]:
                continue
            self._len[name] = n
            close_ms = utc_ms(bt.num2date(d.datetime[0]))
            live = self.live[name]
            self.seen[name].append((close_ms, now, live))
            if self.p.keep_values:
                self.values[name].append(
                    (close_ms, d.open[0], d.high[0], d.low[0], d.close[0], d.volume[0])
                )
            if live:
                self.live_counts[name] += 1
            if self.p.on_bar is not None:
                self.p.on_bar(self, d, live)
        lb = self.p.live_bars
        done = lb is not None and all(c >= lb for c in self.live_counts.values())
        if self._stopping:
            return
        if done or (self.p.deadline is not None and now >= self.p.deadline):
            self._stopping = True
            if self.p.on_stop is not None:
                self.p.on_stop(self)
            self.env.runstop()


def utc_ms(dt) -> int:
    """A naive-UTC datetime (backtrader's convention) as epoch ms."""
    from datetime import timezone

    return round(dt.replace(tzinfo=timezone.utc).timestamp() * 1000)


def save_plot(fig, name: str, quick: bool) -> None:
    """Lay out ``fig`` and write it to docs/img/<name>[_quick].png."""
    fig.tight_layout()
    IMG_DIR.mkdir(parents=True, exist_ok=True)
    out = IMG_DIR / (f"{name}_quick.png" if quick else f"{name}.png")
    fig.savefig(out, dpi=100)
    print(f"plot: {out.relative_to(ROOT)}")


def plt():
    """matplotlib.pyplot on the Agg backend (headless)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as pyplot

    return pyplot
