"""Every code block in README.md and docs/*.md works.

* ```python blocks are compiled, then run as a script in a subprocess (a process of its own
  forked from a warm interpreter, tests/warmpython.py; a temporary working directory,
  ResourceWarnings as errors), a few at a time. A block preceded
  by ``<!-- no-run: why -->`` is only compiled; so is a block that builds a ``CCXTStore``
  without the local exchange (it would need the internet). ``<!-- requires: module -->``
  skips the run when that module is not installed.
* ```bash lines that run ``python -m backtrader_ccxt ...`` are parsed by the real command-line
  parser (a bad option fails); ``python samples/x.py ...`` and
  ``python -m backtrader_ccxt.localexchange ...`` are run with ``--help`` appended.
* params.md names every parameter of ``CCXTStore`` and ``CCXTFeed``.
"""

from __future__ import annotations

import importlib.util
import inspect
import os
import re
import shlex
import subprocess
import sys
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import pytest
import warmpython

from backtrader_ccxt import CCXTFeed, CCXTStore
from backtrader_ccxt.__main__ import build_parser

# one worker runs the whole module: its module fixture starts every run at once
pytestmark = pytest.mark.xdist_group("docs")

ROOT = Path(__file__).resolve().parents[1]
PAGES = [ROOT / "README.md", *sorted((ROOT / "docs").glob("*.md"))]
# pages whose blocks another test module runs
TESTED_ELSEWHERE = {"localexchange.md": "tests/test_localexchange.py"}
FENCE = re.compile(r"^```(\w*)[^\n]*\n(.*?)^```\s*$", re.M | re.S)
MARK = re.compile(r"<!--\s*(no-run|requires):\s*(.*?)\s*-->\s*$")
TIMEOUT = 120
# linked pages that other engineers are still writing: a missing one is not a broken link yet
IN_PROGRESS = {"benchmarks.md"}


@dataclass(frozen=True)
class Block:
    page: Path
    line: int
    lang: str
    code: str
    mark: tuple[str, str] | None

    @property
    def id(self) -> str:
        return f"{self.page.name}:{self.line}"


def _blocks() -> list[Block]:
    out = []
    for page in PAGES:
        if page.name in TESTED_ELSEWHERE:
            continue
        text = page.read_text(encoding="utf-8")
        for m in FENCE.finditer(text):
            before = text[: m.start()].rstrip().splitlines()
            mark = MARK.search(before[-1]) if before else None
            out.append(
                Block(
                    page,
                    text.count("\n", 0, m.start()) + 1,
                    m.group(1),
                    m.group(2),
                    (mark.group(1), mark.group(2)) if mark else None,
                )
            )
    return out


BLOCKS = _blocks()
PYTHON = [b for b in BLOCKS if b.lang == "python"]
BASH = [b for b in BLOCKS if b.lang in ("bash", "sh", "shell")]


def _skip_reason(block: Block) -> str | None:
    if block.mark and block.mark[0] == "no-run":
        return block.mark[1]
    code = "\n".join(line.split("#", 1)[0] for line in block.code.splitlines())
    if "CCXTStore(" in code and "LocalExchange" not in code:
        return "builds a store on a real exchange (needs the internet)"
    if block.mark and block.mark[0] == "requires":
        missing = [m for m in block.mark[1].split() if importlib.util.find_spec(m) is None]
        if missing:
            return f"needs {', '.join(missing)} (not installed)"
    return None


def _env() -> dict:
    path = os.environ.get("PYTHONPATH")
    return {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}


def _run(block: Block, cwd: Path) -> subprocess.CompletedProcess:
    script = cwd / f"{block.page.stem}_{block.line}.py"
    script.write_text(block.code, encoding="utf-8")
    return warmpython.run(
        [sys.executable, "-W", "error::ResourceWarning", str(script)],
        cwd=cwd,
        env=_env(),
        capture_output=True,
        text=True,
        timeout=TIMEOUT,
    )


@pytest.fixture(scope="module")
def runs(request, tmp_path_factory):
    """Start the selected runnable blocks, a few at a time; each test waits for its own."""
    selected = {
        item.callspec.params["block"].id
        for item in request.session.items
        if getattr(item, "function", None) is test_python_block
    }
    pool = ThreadPoolExecutor(max_workers=3)
    futures = {}
    for block in PYTHON:
        if block.id in selected and _skip_reason(block) is None:
            cwd = tmp_path_factory.mktemp(block.page.stem)
            futures[block.id] = pool.submit(_run, block, cwd)
    yield futures
    for fut in futures.values():
        fut.cancel()
    pool.shutdown(wait=True)


def test_there_are_blocks_to_check():
    pages = {b.page.name for b in PYTHON}
    for name in ("quickstart.md", "cache.md", "bar-contract.md", "unattended.md"):
        assert name in pages


@pytest.mark.parametrize("block", PYTHON, ids=lambda b: b.id)
def test_python_block(block, runs):
    compile(block.code, block.id, "exec")
    reason = _skip_reason(block)
    if reason is not None:
        pytest.skip(f"compiled only: {reason}")
    proc = runs[block.id].result(timeout=TIMEOUT + 30)
    assert proc.returncode == 0, f"{block.id} failed\n{proc.stdout[-3000:]}\n{proc.stderr[-5000:]}"
    assert "Traceback" not in proc.stderr, proc.stderr[-5000:]


def _commands(block: Block) -> list[list[str]]:
    out = []
    for line in block.code.splitlines():
        line = line.strip().removeprefix("$ ")
        for part in line.split("&&"):
            words = shlex.split(part, comments=True)
            if words[:1] == ["python"] and len(words) > 1:
                out.append(words[1:])
    return out


@pytest.mark.parametrize("block", BASH, ids=lambda b: b.id)
def test_bash_block_commands_parse(block):
    checked = 0
    for args in _commands(block):
        if args[:2] == ["-m", "backtrader_ccxt"]:
            parser = build_parser()
            try:
                ns, rest = parser.parse_known_args(args[2:])
            except SystemExit as exc:
                pytest.fail(f"{block.id}: `python {shlex.join(args)}` does not parse ({exc})")
            assert ns.command == "localexchange" or not rest, f"unknown options {rest}"
            if ns.command == "localexchange":
                _help_ok([sys.executable, "-m", "backtrader_ccxt.localexchange", *rest])
            checked += 1
        elif args[:2] == ["-m", "backtrader_ccxt.localexchange"]:
            _help_ok([sys.executable, *args])
            checked += 1
        elif args and args[0].startswith("samples/"):
            _help_ok([sys.executable, str(ROOT / args[0]), *args[1:]])
            checked += 1
    if not checked:
        pytest.skip("no python -m backtrader_ccxt / samples command in this block")


def _help_ok(cmd: list[str]) -> None:
    proc = warmpython.run(
        [*cmd, "--help"], env=_env(), capture_output=True, text=True, timeout=60, cwd=ROOT
    )
    assert proc.returncode == 0, f"{shlex.join(cmd)} --help: {proc.stderr}"


def test_params_page_names_every_parameter():
    text = (ROOT / "docs" / "params.md").read_text(encoding="utf-8")
    store = [
        name
        for name, p in inspect.signature(CCXTStore.__init__).parameters.items()
        if name != "self" and p.kind is not p.VAR_KEYWORD  # **unknown only names mistakes
    ]
    feed = list(CCXTFeed.params._getkeys())
    missing = [p for p in store + feed if f"`{p}`" not in text]
    assert not missing, f"docs/params.md does not document {missing}"


def test_every_doc_page_is_linked_from_the_readme():
    readme = (ROOT / "README.md").read_text(encoding="utf-8")
    unlinked = [p.name for p in PAGES[1:] if f"(docs/{p.name})" not in readme]
    assert not unlinked, f"README.md does not link {unlinked}"


def test_relative_links_resolve():
    broken = []
    for page in PAGES:
        for target in re.findall(r"\]\(([^)#\s]+)(?:#[^)]*)?\)", page.read_text(encoding="utf-8")):
            if "://" in target or target.startswith("mailto:"):
                continue
            if Path(target).name in IN_PROGRESS:
                continue
            if not (page.parent / target).exists():
                broken.append(f"{page.name} -> {target}")
    assert not broken
