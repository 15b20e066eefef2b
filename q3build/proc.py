"""The one way q3build starts processes: argument lists, logged, never a shell string."""

from __future__ import annotations

import collections
import logging
import os
import shlex
import shutil
import subprocess
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple

from q3build.errors import CommandError, ToolMissingError

log = logging.getLogger(__name__)

TAIL_LINES = 40


def which(tool: str, env: Mapping[str, str] | None = None) -> str | None:
    path = (env or os.environ).get("PATH", os.defpath)
    return shutil.which(tool, path=path)


def _resolve(argv: Sequence[str | os.PathLike], env: Mapping[str, str] | None) -> list[str]:
    args = [os.fspath(a) for a in argv]
    if not args:
        raise ValueError("empty argv")
    if os.sep not in args[0]:
        exe = which(args[0], env)
        if exe is None:
            raise ToolMissingError(f"required tool not found on PATH: {args[0]}",
                                   hint="run `q3build doctor` to see which package provides it")
    return args


def run(
    argv: Sequence[str | os.PathLike],
    *,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    capture: bool = False,
    check: bool = True,
    input: str | None = None,
    display: Sequence[str] | None = None,
) -> subprocess.CompletedProcess:
    """Run argv and return the completed process.

    With ``capture`` stdout and stderr are returned as text (and included in the error);
    otherwise they are inherited. ``display`` is the command as errors should show it.
    """
    args = _resolve(argv, env)
    log.debug("+ %s%s", shlex.join(args), f"  (in {cwd})" if cwd else "")
    proc = subprocess.run(
        args,
        cwd=cwd,
        env=dict(env) if env is not None else None,
        text=True,
        input=input,
        stdout=subprocess.PIPE if capture else None,
        stderr=subprocess.PIPE if capture else None,
    )
    if check and proc.returncode != 0:
        out = ((proc.stdout or "") + (proc.stderr or "")).splitlines()
        raise CommandError(list(display) if display else args, proc.returncode, "\n".join(out[-TAIL_LINES:]))
    return proc


def stream(
    argv: Sequence[str | os.PathLike],
    *,
    log_file: Path,
    cwd: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    on_line: Callable[[str], None] | None = None,
) -> None:
    """Run argv, append every output line to ``log_file`` and pass it to ``on_line``.

    Used for long steps (configure, build) whose output the user watches as progress.
    """
    args = _resolve(argv, env)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    tail: collections.deque[str] = collections.deque(maxlen=TAIL_LINES)
    with open(log_file, "a", encoding="utf-8", errors="replace", buffering=1) as lf:  # live for tail -f
        lf.write(f"+ {shlex.join(args)}\n")
        lf.flush()
        with subprocess.Popen(
            args, cwd=cwd, env=dict(env) if env is not None else None,
            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, errors="replace", bufsize=1,
        ) as proc:
            assert proc.stdout is not None
            try:
                for line in proc.stdout:
                    lf.write(line)
                    tail.append(line.rstrip("\n"))
                    if on_line:
                        on_line(line.rstrip("\n"))
            except BaseException:
                proc.kill()
                raise
            rc = proc.wait()
    if rc != 0:
        raise CommandError(args, rc, "\n".join(tail), log_file=log_file)


def spawn(argv: Sequence[str | os.PathLike], *, log_file: Path, env: Mapping[str, str] | None = None,
          cwd: Path | str | None = None) -> subprocess.Popen:
    """Start a long-running process (a server) with its output in ``log_file``; the caller stops it."""
    args = _resolve(argv, env)
    log.debug("+ %s &  (log %s)", shlex.join(args), log_file)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    with open(log_file, "w", encoding="utf-8") as lf:   # the child keeps its own descriptor
        return subprocess.Popen(args, cwd=cwd, env=dict(env) if env is not None else None, stdout=lf,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)


class Measured(NamedTuple):
    returncode: int
    output: str
    wall_s: float
    peak_rss_mib: float


def run_measured(argv: Sequence[str | os.PathLike], env: Mapping[str, str], *, timeout: float = 3600) -> Measured:
    """Run argv to completion (output captured through a file), with its wall time and the peak RSS of
    that very child (wait4's rusage); a child still running after `timeout` is killed."""
    args = _resolve(argv, env)
    log.debug("run (measured): %s", shlex.join(args))
    with tempfile.TemporaryFile(mode="w+", encoding="utf-8", errors="replace") as out:
        t0 = time.perf_counter()
        p = subprocess.Popen(args, env=dict(env), stdout=out, stderr=subprocess.STDOUT)
        deadline = t0 + timeout
        while True:
            pid, status, usage = os.wait4(p.pid, os.WNOHANG)
            if pid:
                break
            if time.perf_counter() > deadline:
                p.kill()
                pid, status, usage = os.wait4(p.pid, 0)
                break
            time.sleep(0.02)
        wall = time.perf_counter() - t0
        p.returncode = os.waitstatus_to_exitcode(status)
        out.seek(0)
        text = out.read()
    return Measured(p.returncode, text, wall, usage.ru_maxrss / 1024.0)


def peak_rss_mib(pid: int) -> float | None:
    """A running process's peak resident set (VmHWM in /proc/<pid>/status), in MiB."""
    try:
        for line in Path(f"/proc/{pid}/status").read_text().splitlines():
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024.0
    except (OSError, ValueError, IndexError):
        pass
    return None
