"""The main job, run as a user runs it: `python -m backtrader_ccxt demo`, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest
import warmpython

ROOT = Path(__file__).resolve().parents[1]
BAD_SHUTDOWN = ("Unclosed", "Task was destroyed", "Event loop is closed", "Traceback")


def demo_cmd(*args: str) -> list[str]:
    return [sys.executable, "-W", "error::ResourceWarning", "-m", "backtrader_ccxt", "demo", *args]


def env() -> dict:
    e = dict(os.environ)
    e["PYTHONPATH"] = str(ROOT) + os.pathsep + e.get("PYTHONPATH", "")
    e["PYTHONUNBUFFERED"] = "1"
    return e


@pytest.mark.parametrize("mode", ["websocket", "polling", "threaded"])
def test_demo_runs_offline_and_ends_with_a_summary(mode):
    proc = warmpython.run(
        demo_cmd("--bars", "3", "--backfill", "12", "--mode", mode),
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    out = proc.stdout
    assert "-- data BTC/USDT: DELAYED" in out and "-- data BTC/USDT: LIVE" in out
    assert out.count(" UTC  O ") == 3  # exactly the 3 live bars, printed
    assert summary_value(out, "live bars") == 3
    # the 12 bars of history asked for, plus those that closed while the feed started (the
    # stream subscribes before the backfill, so history meets its first candle)
    assert 12 <= summary_value(out, "history bars") <= 16
    for bad in BAD_SHUTDOWN:
        assert bad not in proc.stderr


def test_demo_trades_through_ccxtbroker_on_the_local_exchange():
    proc = subprocess.run(
        demo_cmd(
            "--broker", "--bars", "8", "--backfill", "10", "--mode", "polling", "--size", "0.01"
        ),  # fmt: skip
        capture_output=True,
        text=True,
        timeout=120,
        env=env(),
        cwd=ROOT,
    )
    assert proc.returncode == 0, proc.stderr
    line = next(x for x in proc.stdout.splitlines() if x.strip().startswith("exchange "))
    assert line.endswith("the same)"), line  # the exchange's ledger is what the broker saw
    for bad in BAD_SHUTDOWN:
        assert bad not in proc.stderr


def test_demo_broker_is_for_the_local_exchange_only():
    proc = subprocess.run(
        demo_cmd("--broker", "--exchange", "binance"),
        capture_output=True, text=True, timeout=60, env=env(), cwd=ROOT,
    )  # fmt: skip
    assert proc.returncode != 0
    assert "--broker trades on the local exchange only" in proc.stderr


def test_ctrl_c_stops_the_demo_cleanly():
    """SIGINT mid-run: the demo's handler calls cerebro.runstop(); it prints its summary and
    exits 0 with every thread, task and socket closed."""
    proc = warmpython.Popen(
        demo_cmd("--bars", "1000", "--backfill", "5"),
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        env=env(),
        cwd=ROOT,
    )
    lines: list[str] = []
    live = threading.Event()

    def read() -> None:
        for line in proc.stdout:
            lines.append(line)
            if " UTC  O " in line:
                live.set()

    reader = threading.Thread(target=read)
    reader.start()
    try:
        assert live.wait(60), "the demo never printed a live bar"
        proc.send_signal(signal.SIGINT)
        proc.wait(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
        reader.join()
        proc.stdout.close()
    err = proc.stderr.read()
    proc.stderr.close()
    assert proc.returncode == 0, err
    assert "summary" in "".join(lines)
    for bad in BAD_SHUTDOWN:
        assert bad not in err


def test_demo_help_explains_every_option():
    proc = warmpython.run(
        demo_cmd("--help"), capture_output=True, text=True, timeout=60, env=env(), cwd=ROOT
    )
    assert proc.returncode == 0
    for opt in ("--exchange", "--symbol", "--timeframe", "--mode", "--bars", "--backfill"):
        assert opt in proc.stdout


# -- what a newcomer's second hour hit (issue 15) --------------------------------------------


def run_demo(*args: str, timeout: float = 60, pre: tuple[str, ...] = ()):
    cmd = [sys.executable, "-W", "error::ResourceWarning", "-m", "backtrader_ccxt", *pre, "demo"]
    return warmpython.run(
        [*cmd, *args], capture_output=True, text=True, timeout=timeout, env=env(), cwd=ROOT
    )


def error_lines(stderr: str) -> list[str]:
    return [line for line in stderr.splitlines() if line.startswith("error:")]


@pytest.mark.parametrize(
    "args, names",
    [
        (("--timeframe", "7m"), ("'7m'", "1s, 1m, 3m, 5m, 15m", "resample")),
        (("--timeframe", "1M"), ("'1M'", "1d, 3d, 1w")),  # Binance has it, the replay not
        (("--symbol", "DOGE/USDT"), ("'DOGE/USDT'", "BTC/USDT, ETH/USDT", "--exchange binance")),
        (("--exchange", "binance", "--timeframe", "7m"), ("'7m'", "1w, 1M", "resample")),
    ],
)
def test_demo_rejects_what_the_venue_would_reject_in_one_line(args, names):
    """The local exchange serves any interval; the demo checks against Binance's own list
    before starting anything (it used to run 7m bars for 105 minutes)."""
    proc = run_demo(*args)
    assert proc.returncode == 2, proc.stderr
    assert proc.stdout == ""  # nothing started
    (line,) = proc.stderr.splitlines()
    assert line.startswith("error: ")
    for name in names:
        assert name in line


def dead_exchange_config(tmp_path: Path) -> str:
    """ccxt options pointing every Binance URL at a port on 127.0.0.1 that nobody serves."""
    import json

    from backtrader_ccxt.localexchange import LocalExchange

    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1m",)) as ex:
        config = ex.ccxt_config()
    path = tmp_path / "dead.json"
    path.write_text(json.dumps(config))
    return f"@{path}"


def test_an_unreachable_exchange_is_one_clear_line_and_v_shows_the_traceback(tmp_path):
    config = dead_exchange_config(tmp_path)
    # the store's retries back off in real seconds before it gives up (0.5 s doubling by
    # default: 15 s for 5 retries); the demo's own options make it 2 short ones here
    retry = ("--retries", "2", "--retry-delay", "0.05")
    proc = run_demo("--exchange", "binance", "--config", config, "--mode", "polling", *retry)
    assert proc.returncode == 1
    assert "Traceback" not in proc.stderr
    (line,) = error_lines(proc.stderr)
    assert line == proc.stderr.splitlines()[-1]
    assert "loading markets" in line and "Connection refused" in line  # the real cause
    assert "gave up" in line and "-v" in line
    assert "RetryableError" not in proc.stderr  # the error is final by now
    # the retries before it are announced one line each, and that is all
    assert len(proc.stderr.splitlines()) <= 5 + 1
    retries = [x for x in proc.stderr.splitlines() if " retry " in x]
    assert [x.split(" retry ")[1].split()[0] for x in retries] == ["1/2", "2/2"], proc.stderr


@pytest.mark.parametrize("where", ["before", "after"])
def test_v_before_or_after_the_subcommand_shows_the_traceback(where):
    bad = ("--timeframe", "7m")
    proc = run_demo(*bad, "-v") if where == "after" else run_demo(*bad, pre=("-v",))
    assert proc.returncode == 2, proc.stderr
    assert "Traceback" in proc.stderr and "UnsupportedTimeframeError" in proc.stderr
    assert proc.stderr.splitlines()[-1].startswith("error: --timeframe '7m'")


def summary_value(out: str, label: str) -> int:
    (line,) = [x for x in out.splitlines() if x.strip().startswith(label)]
    return int(line.split()[-1])


def test_the_backfill_announced_is_the_backfill_delivered():
    """The local exchange used to hold 3,000 candles whatever --backfill asked."""
    proc = run_demo("--backfill", "4000", "--bars", "1", "--mode", "polling", timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert "backfilling 4000 bars" in proc.stdout
    assert summary_value(proc.stdout, "history bars") >= 4000
    assert "had only" not in proc.stdout


def test_a_venue_with_less_history_than_asked_says_so(tmp_path):
    """--exchange binance on a venue that has only 500 one-second candles."""
    import json

    from backtrader_ccxt.localexchange import LocalExchange

    with LocalExchange(symbols=("BTC/USDT",), timeframes=("1s",), history=500) as ex:
        path = tmp_path / "local.json"
        path.write_text(json.dumps(ex.ccxt_config()))
        proc = run_demo(
            "--exchange",
            "binance",
            "--config",
            f"@{path}",
            "--timeframe",
            "1s",
            "--backfill",
            "800",
            "--bars",
            "1",
            "--mode",
            "polling",
            timeout=120,
        )
    assert proc.returncode == 0, proc.stderr
    assert "asking for 800 bars of history" in proc.stdout
    got = summary_value(proc.stdout, "history bars")
    assert 500 <= got < 800
    assert f"history: {got} bars: the exchange had only {got} of the 800 asked" in proc.stdout
