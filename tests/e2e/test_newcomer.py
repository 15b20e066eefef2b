"""The README's set-up as a newcomer runs it, on a fresh clone: `scripts/bootstrap` (a clean .venv),
then `.venv/bin/q3build sync`, `make --target host` and `validate --target host`, and `git status`
is clean afterwards. Slow: the venv is new (pip installs from its cache), and the build reuses the
shared caches (~/.cache/q3build: upstream store, ccache), so it recompiles little."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from ..conftest import REPO, git

pytestmark = pytest.mark.slow


def run(argv, cwd, timeout=3600):
    r = subprocess.run([str(a) for a in argv], cwd=cwd, capture_output=True, text=True, timeout=timeout, check=False,
                       env={k: v for k, v in os.environ.items() if k != "PYTHONPATH"})
    assert r.returncode == 0, f"{argv} exited {r.returncode}\n{r.stdout[-3000:]}\n{r.stderr[-3000:]}"
    return r


def test_readme_setup_then_sync_make_validate_leaves_git_status_clean(tmp_path):
    clone = tmp_path / "q3build"
    git("clone", "--quiet", "--no-hardlinks", str(REPO), str(clone), cwd=tmp_path)
    run([clone / "scripts" / "bootstrap"], clone)
    q3 = clone / ".venv" / "bin" / "q3build"
    # the venv is the clone's own and holds what every verb of the README's table imports
    check = ("import numpy, safetensors, soundfile, torch, transformers, sentencepiece, q3build, sys; "
             "assert q3build.__file__.startswith(sys.argv[1]), q3build.__file__; "
             "assert torch.__version__ == '2.13.0+cpu', torch.__version__")
    run([clone / ".venv" / "bin" / "python", "-c", check, str(clone)], clone)
    run([q3, "sync"], clone)
    made = json.loads(run([q3, "make", "--target", "host", "--json"], clone).stdout)
    assert made["ok"] and {a["path"] for a in made["artifacts"]} >= {"bin/llama-server", "bin/llama-tts"}
    assert (clone / ".q3build" / "stage" / "host" / "bin" / "llama-server").is_file()
    validated = json.loads(run([q3, "validate", "--target", "host", "--json"], clone).stdout)
    assert validated["ok"] is True, validated
    status = run(["git", "status", "--porcelain", "--untracked-files=all"], clone).stdout
    assert status == ""
