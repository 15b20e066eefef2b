"""git invocations. Reads go through GitPython; changes go through proc.run so every change
is logged the same way. Every call carries the same fixed config so a user's global git
settings (autocrlf, hooks, signing, diff options) cannot change what we produce."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import git as gitpython

from q3build import proc

# -c options on every call: byte-exact content, no hooks, no signing, no background gc.
FIXED_CONFIG = (
    "core.autocrlf=false", "core.safecrlf=false", "core.filemode=true", "core.symlinks=true",
    "core.hooksPath=/dev/null", "core.quotepath=false", "commit.gpgsign=false",
    "advice.detachedHead=false", "init.defaultBranch=main", "gc.auto=0", "am.keepcr=false",
    "diff.noprefix=false", "diff.mnemonicPrefix=false", "diff.relative=false", "diff.external=",
    "format.signoff=false", "format.thread=false",
    # fail stalled network transfers instead of hanging
    "http.lowSpeedLimit=1000", "http.lowSpeedTime=60",
)


def argv(*args: str, git_dir: Path | None = None, work_tree: Path | None = None) -> list[str]:
    out = ["git"]
    for c in FIXED_CONFIG:
        out += ["-c", c]
    if git_dir is not None:
        out += ["--git-dir", str(git_dir)]
    if work_tree is not None:
        out += ["--work-tree", str(work_tree)]
    return out + list(args)


def run(args: Sequence[str], *, env: Mapping[str, str], cwd: Path | None = None, git_dir: Path | None = None,
        work_tree: Path | None = None, check: bool = True) -> "proc.subprocess.CompletedProcess":
    return proc.run(argv(*args, git_dir=git_dir, work_tree=work_tree), env=env, cwd=cwd, capture=True, check=check,
                    display=["git", *args])


def out(args: Sequence[str], **kw) -> str:
    return run(args, **kw).stdout.strip()


def repo(path: Path) -> gitpython.Repo:
    """A GitPython handle that never searches parent directories."""
    return gitpython.Repo(path, search_parent_directories=False)


def has_object(git_dir: Path, rev: str, env: Mapping[str, str]) -> bool:
    return run(["cat-file", "-e", rev], git_dir=git_dir, env=env, check=False).returncode == 0


def rev_parse(git_dir: Path, rev: str, env: Mapping[str, str]) -> str | None:
    r = run(["rev-parse", "--verify", "--quiet", rev], git_dir=git_dir, env=env, check=False)
    return r.stdout.strip() if r.returncode == 0 else None
