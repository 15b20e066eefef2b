"""Shared fixtures. Every test runs with a scrubbed environment: no Q3BUILD_*, CMAKE_ARGS,
compiler or git variables leak in from the developer's shell."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRUB_PREFIXES = ("Q3BUILD_", "GIT_", "CCACHE_")
SCRUB = ("CMAKE_ARGS", "CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "XDG_CACHE_HOME", "GITHUB_ACTIONS")


# What the README's set-up installs into the venv (console scripts: q3build, pip, pytest, …) is not on
# a user's PATH: tests reach it through this interpreter (`sys.executable -m q3build`, or the in-process
# CLI), never by bare name. The session PATH drops the venv's bin/ and any directory holding a
# q3build (a global install on a developer's machine hid exactly this once), and a spawn of a venv
# tool by bare name fails at once with the reason — whatever PATH the suite was started with.
VENV_BIN = Path(sys.executable).parent
VENV_TOOLS = frozenset(p.name for p in VENV_BIN.iterdir() if p.is_file() and os.access(p, os.X_OK)) \
    - {"python", "python3", f"python{sys.version_info[0]}.{sys.version_info[1]}"}


def setup_path(path: str) -> str:
    keep = []
    for d in path.split(os.pathsep):
        if not d or Path(d).resolve() == VENV_BIN.resolve() or (Path(d) / "q3build").exists():
            continue
        keep.append(d)
    return os.pathsep.join(keep)


class BareVenvToolError(AssertionError):
    pass


def refuse_bare_venv_tools(args) -> None:
    argv0 = args if isinstance(args, (str, bytes, os.PathLike)) else (args[0] if args else "")
    name = os.fsdecode(argv0)
    if os.sep not in name and name in VENV_TOOLS:
        raise BareVenvToolError(
            f"a test spawned `{name}` by bare name: the README's set-up installs it only into the venv, so on "
            f"a fresh machine it is not on PATH; call it through the interpreter ([sys.executable, '-m', ...]) "
            f"or in-process")


_Popen = subprocess.Popen


class GuardedPopen(_Popen):
    def __init__(self, args, *a, **k):
        refuse_bare_venv_tools(args)
        super().__init__(args, *a, **k)


os.environ["PATH"] = setup_path(os.environ.get("PATH", os.defpath))
subprocess.Popen = GuardedPopen


@pytest.fixture(autouse=True)
def clean_env(monkeypatch):
    for k in list(os.environ):
        if k.startswith(SCRUB_PREFIXES) or k in SCRUB:
            monkeypatch.delenv(k, raising=False)


def git(*args, cwd, env=None):
    e = dict(os.environ, GIT_AUTHOR_NAME="upstream dev", GIT_AUTHOR_EMAIL="dev@upstream.invalid",
             GIT_COMMITTER_NAME="upstream dev", GIT_COMMITTER_EMAIL="dev@upstream.invalid",
             GIT_AUTHOR_DATE="2026-01-01T00:00:00+00:00", GIT_COMMITTER_DATE="2026-01-01T00:00:00+00:00",
             GIT_CONFIG_GLOBAL=os.devnull, GIT_CONFIG_NOSYSTEM="1")
    if env:
        e.update(env)
    return subprocess.run(["git", "-c", "init.defaultBranch=main", *args], cwd=cwd, env=e, check=True,
                          capture_output=True, text=True).stdout.strip()


def copy_project_skeleton(dest: Path) -> Path:
    """A project dir with the real templates (and an empty series), for tests to fill in."""
    (dest / "recipes").mkdir(parents=True)
    (dest / "patches" / "overlay").mkdir(parents=True)
    shutil.copytree(REPO / "templates", dest / "templates")
    return dest
