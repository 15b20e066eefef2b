"""Shared fixtures. Every test runs with a scrubbed environment: no Q3BUILD_*, CMAKE_ARGS,
compiler or git variables leak in from the developer's shell."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent

SCRUB_PREFIXES = ("Q3BUILD_", "GIT_", "CCACHE_")
SCRUB = ("CMAKE_ARGS", "CC", "CXX", "CFLAGS", "CXXFLAGS", "LDFLAGS", "XDG_CACHE_HOME", "GITHUB_ACTIONS")


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
