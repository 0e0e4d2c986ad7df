"""The main job, run as a user runs it: `python -m backtrader_ccxt demo`, offline."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

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
    proc = subprocess.run(
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
    assert "live bars      3" in out and "history bars   12" in out
    for bad in BAD_SHUTDOWN:
        assert bad not in proc.stderr


def test_ctrl_c_stops_the_demo_cleanly():
    """SIGINT mid-run: the demo's handler calls cerebro.runstop(); it prints its summary and
    exits 0 with every thread, task and socket closed."""
    proc = subprocess.Popen(
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
    proc = subprocess.run(
        demo_cmd("--help"), capture_output=True, text=True, timeout=60, env=env(), cwd=ROOT
    )
    assert proc.returncode == 0
    for opt in ("--exchange", "--symbol", "--timeframe", "--mode", "--bars", "--backfill"):
        assert opt in proc.stdout
