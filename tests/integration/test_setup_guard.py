"""The suite depends on nothing the README's set-up does not install (issue: `q3build` was spawned
from PATH, where only a developer's global install provided it)."""

from __future__ import annotations

import ast
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from ..conftest import REPO, VENV_TOOLS, BareVenvToolError

THIS = Path(__file__).resolve()  # its own deliberate bad cases below


def test_the_session_path_holds_no_q3build():
    assert shutil.which("q3build") is None


def test_a_bare_venv_tool_spawn_fails_with_the_reason():
    with pytest.raises(BareVenvToolError, match="`q3build` by bare name"):
        subprocess.run(["q3build", "--version"], capture_output=True)


def test_q3build_runs_through_the_interpreter():
    r = subprocess.run([sys.executable, "-m", "q3build", "targets"], capture_output=True, text=True)
    assert r.returncode == 0 and "spacemit-k1" in r.stdout + r.stderr


def bare_tool_argvs(path):
    """List/tuple literals whose first element names a venv console script, with their line."""
    tree = ast.parse(path.read_text(), filename=str(path))
    for node in ast.walk(tree):
        if isinstance(node, (ast.List, ast.Tuple)) and node.elts:
            first = node.elts[0]
            if isinstance(first, ast.Constant) and isinstance(first.value, str) and \
                    first.value in VENV_TOOLS | {"q3build"}:
                yield node.lineno, first.value


def test_no_source_builds_an_argv_with_a_bare_venv_tool():
    """Static, so it holds for the slow tests too: each would fail on a fresh machine."""
    found = [f"{p.relative_to(REPO)}:{line}: {name}"
             for top in ("q3build", "tests") for p in sorted((REPO / top).rglob("*.py"))
             if p != THIS for line, name in bare_tool_argvs(p)]
    assert found == []


def test_the_static_check_finds_one(tmp_path):
    bad = tmp_path / "t.py"
    bad.write_text('import subprocess\nsubprocess.run(["q3build", "patches", "list"])\n')
    assert list(bare_tool_argvs(bad)) == [(2, "q3build")]
