"""``python ...`` subprocesses for the tests, forked from a warm interpreter.

Every ``python`` command a test starts (the samples, the docs' blocks, the command line)
spent ~1.2 s of CPU importing ccxt, ccxt.pro and backtrader before its first line: some
ninety of them were two thirds of the suite's CPU on a 2-core machine. :func:`Popen` and
:func:`run` start the same command as a process of its own - its own pid, argv, working
directory, environment, stdin/stdout/stderr, exit status, signals and interpreter exit
(threads joined, atexit, unclosed-resource warnings) - forked from a server process that
imported those libraries once (a "zygote", as multiprocessing's forkserver does). The
returned object is a real :class:`subprocess.Popen` (the process is this one's child: the
test process adopts it as a child subreaper), so ``wait``, ``communicate``, ``poll``,
``send_signal`` and ``kill`` behave as for any subprocess.

What differs from a fresh interpreter: the modules in :data:`PRELOAD` (none of the optional
extras: pandas, pyarrow, matplotlib) are already imported when the command's code starts,
with the server's hash seed, and the command's ``-W`` options apply from its first line of
code rather than from start-up. A traceback shows two frames of this module at its top.
A command this cannot reproduce (an interpreter option other than ``-W``/``-u``, a
``PYTHON*`` variable other than the server's, a ``PYTHONPATH`` that finds another copy of
``backtrader_ccxt``) runs as a real subprocess; so does every command when
``BTCCXT_FRESH_PYTHON=1`` is set.
"""

from __future__ import annotations

import atexit
import ctypes
import importlib.machinery
import io
import json
import os
import socket
import subprocess
import sys
import threading
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]

#: what the server imports once (what the commands' start-up spent its CPU on)
PRELOAD = (
    "backtrader",
    "ccxt",
    "ccxt.async_support",
    "ccxt.pro",
    "aiohttp",
    "backtrader_ccxt",
    "backtrader_ccxt.localexchange",
    "backtrader_ccxt.live.manager",
    "backtrader_ccxt.cli",
    "backtrader_ccxt.demo",
    "backtrader_ccxt.download_cli",
)

_FRESH = os.environ.get("BTCCXT_FRESH_PYTHON") == "1"
_PR_SET_CHILD_SUBREAPER = 36
#: PYTHON* variables a command may set differently from the server's (read at its start)
_PER_COMMAND = {"PYTHONPATH", "PYTHONUNBUFFERED", "PYTHONIOENCODING"}


# -- the test side -----------------------------------------------------------------------------


class _Server:
    def __init__(self) -> None:
        libc = ctypes.CDLL(None, use_errno=True)
        if libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_SET_CHILD_SUBREAPER) failed")
        ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_SEQPACKET)
        path = os.environ.get("PYTHONPATH")
        self.env = {**os.environ, "PYTHONPATH": str(ROOT) + (os.pathsep + path if path else "")}
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-c",
                "import sys, warmpython; warmpython.serve(int(sys.argv[1]))",
                str(theirs.fileno()),
            ],
            pass_fds=[theirs.fileno()],
            env={
                **self.env,
                "PYTHONPATH": str(ROOT / "tests") + os.pathsep + self.env["PYTHONPATH"],
            },
            cwd=ROOT,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.DEVNULL,
        )
        theirs.close()
        self.sock = ours
        self.lock = threading.Lock()
        # ready: where its backtrader_ccxt comes from, and its sys.path after PYTHONPATH
        ready = json.loads(self.sock.recv(1 << 16) or b"{}")
        if "package" not in ready:
            raise RuntimeError("the warm python server did not start")
        self.package = ready["package"]
        self.base_path = ready["base_path"]

    @staticmethod
    def _pythonpath(env) -> list[str]:
        return [p for p in env.get("PYTHONPATH", "").split(os.pathsep) if p]

    def plan(self, cmd, cwd, env) -> dict | None:
        """The job for ``cmd`` (a list starting with sys.executable), or None: run it fresh."""
        if not cmd or cmd[0] != sys.executable:
            return None
        for key in set(env) | set(self.env):
            if key.startswith("PYTHON") and key not in _PER_COMMAND:
                if env.get(key) != self.env.get(key):
                    return None
        warn, unbuffered, i = [], False, 1
        while i < len(cmd) and cmd[i].startswith("-") and cmd[i] not in ("-m", "-c"):
            if cmd[i] == "-W" and i + 1 < len(cmd):
                warn.append(cmd[i + 1])
                i += 2
            elif cmd[i].startswith("-W") and len(cmd[i]) > 2:
                warn.append(cmd[i][2:])
                i += 1
            elif cmd[i] == "-u":
                unbuffered, i = True, i + 1
            else:
                return None  # an option this does not reproduce
        if i >= len(cmd) or (cmd[i] in ("-m", "-c") and i + 1 >= len(cmd)):
            return None
        cwd = os.path.abspath(cwd or os.getcwd())
        if cmd[i] == "-m":
            kind, target, args, first = "module", cmd[i + 1], cmd[i + 2 :], cwd
        elif cmd[i] == "-c":
            kind, target, args, first = "code", cmd[i + 1], cmd[i + 2 :], ""
        else:
            script = os.path.join(cwd, cmd[i])
            kind, target, args = "script", script, cmd[i + 1 :]
            first = os.path.dirname(os.path.realpath(script))
        path = [first, *[os.path.join(cwd, p) for p in self._pythonpath(env)], *self.base_path]
        look = [cwd if p == "" else p for p in path]
        spec = importlib.machinery.PathFinder.find_spec("backtrader_ccxt", look)
        if spec is None or os.path.realpath(spec.origin) != os.path.realpath(self.package):
            return None  # it would import another copy than the server's
        unbuffered = unbuffered or bool(env.get("PYTHONUNBUFFERED"))
        return {
            "kind": kind,
            "target": target,
            "args": list(args),
            "cwd": cwd,
            "env": dict(env),
            "path": path,
            "warn": warn,
            "unbuffered": unbuffered,
        }

    def start(self, job: dict, fds: list[int]) -> int:
        with self.lock:
            socket.send_fds(self.sock, [json.dumps(job).encode()], fds)
            reply = json.loads(self.sock.recv(4096))
        if "error" in reply:
            raise OSError(reply["error"])
        return int(reply["pid"])

    def close(self) -> None:
        self.sock.close()  # the server ends when it reads the end of the socket
        try:
            self.proc.wait(5)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()


_server: _Server | None = None
_server_lock = threading.Lock()


def _get_server() -> _Server:
    global _server
    with _server_lock:
        if _server is None:
            _server = _Server()
            atexit.register(_server.close)
        return _server


def _child_fd(spec, default_fd: int, close: list, read_side: bool):
    """The fd the child gets for one stdio stream, and our end of its pipe (or None)."""
    if spec is None:
        return default_fd, None
    if spec == subprocess.PIPE:
        r, w = os.pipe()
        mine, theirs = (r, w) if read_side else (w, r)
        close.append(theirs)
        return theirs, mine
    if spec == subprocess.DEVNULL:
        fd = os.open(os.devnull, os.O_RDWR)
        close.append(fd)
        return fd, None
    if isinstance(spec, int):
        return spec, None
    return spec.fileno(), None


def Popen(cmd, *, stdin=None, stdout=None, stderr=None, cwd=None, env=None, text=None,
          encoding=None, errors=None, universal_newlines=None, bufsize=-1):  # fmt: skip
    """:class:`subprocess.Popen` of ``cmd`` (a ``python`` command), forked warm when it can."""
    text_mode = bool(text or encoding or errors or universal_newlines)
    env = dict(os.environ if env is None else env)
    if _FRESH:
        job = None
    else:
        job = _get_server().plan(list(map(str, cmd)), cwd, env)
    if job is None:
        return subprocess.Popen(
            cmd, stdin=stdin, stdout=stdout, stderr=stderr, cwd=cwd, env=env, text=text,
            encoding=encoding, errors=errors, universal_newlines=universal_newlines,
            bufsize=bufsize,
        )  # fmt: skip
    close: list[int] = []
    try:
        fd0, w0 = _child_fd(stdin, 0, close, read_side=False)
        fd1, r1 = _child_fd(stdout, 1, close, read_side=True)
        if stderr == subprocess.STDOUT:
            fd2, r2 = fd1, None
        else:
            fd2, r2 = _child_fd(stderr, 2, close, read_side=True)
        pid = _get_server().start(job, [fd0, fd1, fd2])
    finally:
        for fd in close:
            os.close(fd)
    p = object.__new__(subprocess.Popen)
    p.args = cmd
    p.stdin = p.stdout = p.stderr = None
    p.pid = pid
    p.returncode = None
    p.encoding, p.errors = encoding, errors
    p.pipesize = -1
    p.text_mode = text_mode
    p._sigint_wait_secs = 0.25
    p._closed_child_pipe_fds = True
    p._communication_started = False
    p._waitpid_lock = threading.Lock()
    p._input = None
    p._child_created = True
    if w0 is not None:
        p.stdin = open(w0, "wb", bufsize)
        if text_mode:
            p.stdin = io.TextIOWrapper(
                p.stdin, write_through=True, line_buffering=bufsize == 1,
                encoding=encoding, errors=errors,
            )  # fmt: skip
    if r1 is not None:
        p.stdout = open(r1, "rb", bufsize)
        if text_mode:
            p.stdout = io.TextIOWrapper(p.stdout, encoding=encoding, errors=errors)
    if r2 is not None:
        p.stderr = open(r2, "rb", bufsize)
        if text_mode:
            p.stderr = io.TextIOWrapper(p.stderr, encoding=encoding, errors=errors)
    return p


def run(cmd, *, input=None, capture_output=False, timeout=None, check=False, **kwargs):
    """:func:`subprocess.run` of ``cmd`` through :func:`Popen`."""
    if capture_output:
        kwargs["stdout"] = kwargs["stderr"] = subprocess.PIPE
    if input is not None:
        kwargs["stdin"] = subprocess.PIPE
    with Popen(cmd, **kwargs) as proc:
        try:
            out, err = proc.communicate(input, timeout=timeout)
        except subprocess.TimeoutExpired as exc:
            proc.kill()
            exc.stdout, exc.stderr = proc.communicate()
            raise
        except BaseException:
            proc.kill()
            raise
        code = proc.poll()
    if check and code:
        raise subprocess.CalledProcessError(code, proc.args, output=out, stderr=err)
    return subprocess.CompletedProcess(proc.args, code, out, err)


# -- the server side ---------------------------------------------------------------------------


def serve(fd: int) -> None:
    """The server's loop (run by ``python -c``): import :data:`PRELOAD`, then fork one process
    per job, orphaned at once so that the test process (a subreaper) adopts it. Returns only
    in the job's process, after running the job (its exceptions propagate to the
    interpreter, which reports them and exits as ``python`` itself would)."""
    import importlib

    for name in PRELOAD:
        importlib.import_module(name)
    sock = socket.socket(fileno=fd)
    own = [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p]
    base = [p for p in sys.path[1:] if p not in own]
    package = sys.modules["backtrader_ccxt"].__file__
    sock.send(json.dumps({"package": package, "base_path": base}).encode())
    import gc

    gc.collect()
    gc.freeze()  # the jobs' collections leave the preloaded objects alone (and unshared)
    while True:
        try:
            msg, fds, _flags, _addr = socket.recv_fds(sock, 1 << 20, 3)
        except ConnectionResetError:
            msg = b""
        if not msg:
            os._exit(0)  # the test process is gone
        job = json.loads(msg)
        r, w = os.pipe()
        middle = os.fork()
        if middle == 0:
            os.close(r)
            pid = os.fork()
            if pid == 0:
                os.close(w)
                sock.close()
                break  # the job's process
            os.write(w, str(pid).encode())
            os._exit(0)
        os.close(w)
        pid = int(os.read(r, 32) or b"0")
        os.close(r)
        os.waitpid(middle, 0)
        for f in fds:
            os.close(f)
        sock.send(json.dumps({"pid": pid} if pid else {"error": "fork failed"}).encode())
    _run_job(job, fds)


def _std(fd: int, write: bool, errors: str, unbuffered: bool, encoding: str | None):
    """A std stream as the interpreter makes it at start-up."""
    if write:
        raw = open(fd, "wb", buffering=0 if unbuffered else -1, closefd=False)
    else:
        raw = open(fd, "rb", closefd=False)
    line = os.isatty(fd) or fd == 2
    return io.TextIOWrapper(
        raw,
        encoding=encoding,
        errors=errors,
        line_buffering=line and not unbuffered,
        write_through=unbuffered and write,
    )


def _run_job(job: dict, fds: list[int]) -> None:
    import builtins
    import warnings

    for target, f in enumerate(fds):
        os.dup2(f, target)
    for f in set(fds):
        if f > 2:
            os.close(f)
    os.closerange(3, 1 << 16)
    os.chdir(job["cwd"])
    os.environ.clear()
    os.environ.update(job["env"])
    sys.path[:] = job["path"]
    enc = os.environ.get("PYTHONIOENCODING") or None
    errs = None
    if enc and ":" in enc:
        enc, errs = enc.split(":", 1)
    ub = job["unbuffered"]
    sys.stdin = sys.__stdin__ = _std(0, False, errs or "strict", ub, enc or None)
    sys.stdout = sys.__stdout__ = _std(1, True, errs or "strict", ub, enc or None)
    sys.stderr = sys.__stderr__ = _std(2, True, "backslashreplace", ub, enc or None)
    sys.warnoptions[:] = job["warn"]
    warnings._processoptions(job["warn"])
    main = sys.modules["__main__"]
    main.__dict__.clear()
    main.__dict__.update(__name__="__main__", __builtins__=builtins, __doc__=None)
    kind, target, args = job["kind"], job["target"], job["args"]
    if kind == "module":
        import runpy

        sys.argv = ["-m", *args]
        runpy._run_module_as_main(target, alter_argv=True)
    elif kind == "code":
        sys.argv = ["-c", *args]
        main.__dict__.update(
            __spec__=None, __package__=None, __loader__=importlib.machinery.BuiltinImporter
        )
        exec(compile(target, "<string>", "exec"), main.__dict__)
    else:
        sys.argv = [target, *args]
        with open(target, "rb") as f:
            source = f.read()
        main.__dict__.update(__file__=target, __cached__=None, __spec__=None, __package__=None)
        main.__dict__["__loader__"] = importlib.machinery.SourceFileLoader("__main__", target)
        exec(compile(source, target, "exec"), main.__dict__)
