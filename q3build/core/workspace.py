"""The synced source tree: pristine base → overlay commit → one commit per patch, then a stamp.

The tree is built in a staging directory next to the current one and renamed into place only
when every patch applied, so a failed sync leaves the previous good tree untouched. The stamp
lives inside the tree's .git directory, so tree and stamp move together.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
import shutil
import stat
import sys
import tempfile
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from q3build import ui
from q3build.core import gitutil, sources
from q3build.core.pin import Pin
from q3build.core.series import LoadedSeries, PatchEntry
from q3build.errors import PatchError, WorkspaceError
from q3build.project import Project, ensure_owned_dir, git_env

BRANCH = "q3build/patched"
STAMP = "q3build-stamp.json"
OVERLAY_SUBJECT = "q3build overlay: our own sources"


@dataclass(frozen=True, kw_only=True)
class Stamp:
    upstream_commit: str
    upstream_tree: str
    series_digest: str
    overlay_digest: str
    source: str = ""
    base_commit: str = ""
    overlay_commit: str = ""
    head: str = ""
    tree: str = ""
    patches: tuple[str, ...] = ()

    def key(self) -> tuple:
        return (self.upstream_commit, self.upstream_tree, self.series_digest, self.overlay_digest)

    @classmethod
    def read(cls, src: Path) -> "Stamp | None":
        p = src / ".git" / STAMP
        try:
            data = json.loads(p.read_text())
            data["patches"] = tuple(data.get("patches", ()))
            return cls(**data)
        except (OSError, ValueError, TypeError):
            return None

    def write(self, src: Path) -> None:
        p = src / ".git" / STAMP
        tmp = p.with_suffix(".tmp")
        tmp.write_text(json.dumps(dataclasses.asdict(self), indent=2, sort_keys=True) + "\n")
        tmp.replace(p)


@dataclass(frozen=True)
class SyncResult:
    stamp: Stamp
    changed: bool
    seconds: float


def wanted(pin: Pin, series: LoadedSeries) -> Stamp:
    return Stamp(upstream_commit=pin.upstream.commit, upstream_tree=pin.upstream.tree,
                 series_digest=series.digest(), overlay_digest=series.overlay_digest())


def dirty_paths(src: Path, env: Mapping[str, str]) -> list[str]:
    r = gitutil.run(["status", "--porcelain", "--untracked-files=all"], cwd=src, env=env)
    return [line[3:] for line in r.stdout.splitlines() if line.strip()]


def current(project: Project, env: Mapping[str, str]) -> Stamp | None:
    src = project.src_dir
    if not (src / ".git").is_dir():
        return None
    stamp = Stamp.read(src)
    if stamp is None:
        return None
    head = gitutil.rev_parse(src / ".git", "HEAD", git_env(project, env))
    return stamp if head == stamp.head else None


def sync(project: Project, pin: Pin, series: LoadedSeries, env: Mapping[str, str], *,
         force: bool = False, source: str | None = None) -> SyncResult:
    t0 = time.monotonic()
    genv = git_env(project, env)
    series.verify()  # sha256 of every patch, before anything is touched
    want = wanted(pin, series)
    src = project.src_dir
    have = Stamp.read(src) if (src / ".git").is_dir() else None
    unexported_tree = None  # tree of commits made on top of the last sync, if any
    if src.exists() and any(src.iterdir()):
        if have is None:
            if not force:
                raise WorkspaceError(f"{src}: exists but was not made by q3build (no stamp); "
                                     "pass --force to replace it")
        else:
            head = gitutil.rev_parse(src / ".git", "HEAD", genv)
            dirty = dirty_paths(src, genv)
            if dirty and not force:
                shown = ", ".join(dirty[:5]) + (" …" if len(dirty) > 5 else "")
                raise WorkspaceError(f"{src} has uncommitted changes ({shown}); commit them and run "
                                     "`q3build patches export`, or pass --force to discard them")
            if head == have.head and have.key() == want.key() and not dirty \
                    and (source is None or source == have.source):
                return SyncResult(have, False, time.monotonic() - t0)
            if head != have.head and not force:
                unexported_tree = gitutil.rev_parse(src / ".git", "HEAD^{tree}", genv)
    ensure_owned_dir(project.work)
    project.src_root.mkdir(parents=True, exist_ok=True)
    base = sources.ensure_base(project, pin, genv, only=source)
    staging = Path(tempfile.mkdtemp(prefix=".llama.cpp.new-", dir=project.src_root))
    try:
        with ui.step(f"Applying {len(series.patches)} patch(es) and the overlay on {pin.upstream.short}"):
            stamp = _build_tree(staging, project, pin, series, base, want, genv)
        if unexported_tree is not None and unexported_tree != stamp.tree:
            raise WorkspaceError(f"{src} has commits that are not in patches/ (HEAD moved since the last sync "
                                 "and the series does not reproduce it); run `q3build patches export`, "
                                 "or pass --force to discard them")
        _swap_into_place(staging, src)
    except BaseException:
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return SyncResult(stamp, True, time.monotonic() - t0)


def _build_tree(staging: Path, project: Project, pin: Pin, series: LoadedSeries, base: sources.Base,
                want: Stamp, env) -> Stamp:
    # a local clone hard-links the store's objects: cheap, and full history stays available
    gitutil.run(["clone", "--quiet", "--no-checkout", str(project.store), str(staging)], env=env)
    gitutil.run(["checkout", "--quiet", "-B", BRANCH, base.commit], cwd=staging, env=env)
    fixed = dict(env, GIT_AUTHOR_DATE=pin.upstream.date, GIT_COMMITTER_DATE=pin.upstream.date)
    overlay_commit = _commit_overlay(staging, series, fixed, want.overlay_digest)
    for i, entry in enumerate(series.patches, 1):
        _apply_patch(staging, series, entry, i, fixed)
    stamp = dataclasses.replace(
        want, source=base.source, base_commit=base.commit, overlay_commit=overlay_commit,
        head=gitutil.out(["rev-parse", "HEAD"], cwd=staging, env=env),
        tree=gitutil.out(["rev-parse", "HEAD^{tree}"], cwd=staging, env=env),
        patches=tuple(e.file for e in series.patches))
    stamp.write(staging)
    return stamp


def _commit_overlay(tree: Path, series: LoadedSeries, env, digest: str) -> str:
    files = series.overlay_files()
    for rel in files:
        dst = tree / rel
        if dst.exists() or dst.is_symlink():
            raise PatchError(f"overlay file {rel.as_posix()} already exists upstream; overlay files must be new "
                             "(change upstream files with a hook patch instead)")
        dst.parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(series.overlay_dir / rel, dst)
    if files:
        gitutil.run(["add", "--force", "--", *[r.as_posix() for r in files]], cwd=tree, env=env)
    gitutil.run(["commit", "--quiet", "--allow-empty", "-m", OVERLAY_SUBJECT, "-m", f"overlay digest {digest}"],
                cwd=tree, env=env)
    return gitutil.out(["rev-parse", "HEAD"], cwd=tree, env=env)


def _apply_patch(tree: Path, series: LoadedSeries, entry: PatchEntry, index: int, env) -> None:
    path = series.path(entry)
    r = gitutil.run(["am", "--3way", "--quiet", "--committer-date-is-author-date", "--keep-cr", str(path)],
                    cwd=tree, env=env, check=False)
    if r.returncode == 0:
        return
    output = (r.stdout + r.stderr).strip()
    gitutil.run(["am", "--abort"], cwd=tree, env=env, check=False)
    raise PatchError(f"patch {index}/{len(series.patches)} {entry.file} does not apply: "
                     + diagnose(tree, path, output, env),
                     hint="the previous tree is unchanged; refresh the patch against the pinned tree "
                          "(see `q3build patches export`)")


_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)
_MISSING = re.compile(r"^error: (.+): (does not exist in index|No such file or directory)$", re.M)
_CONFLICT = re.compile(r"^CONFLICT \([^)]*\): Merge conflict in (.+)$", re.M)
_HUNK = re.compile(r"^@@ -(\d+)(?:,\d+)? \+\d+(?:,\d+)? @@.*$")


def hunks(patch: Path) -> list[tuple[str, int, str]]:
    """(file, old start line, hunk header) for every hunk of a patch, in order."""
    out, current_file = [], None
    for line in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("diff --git "):
            current_file = line.split(" b/", 1)[-1]
        elif current_file and (m := _HUNK.match(line)):
            out.append((current_file, int(m[1]), line))
    return out


def diagnose(tree: Path, patch: Path, am_output: str, env) -> str:
    """Name the file and hunk that failed. `git apply --check -v` says where plain application failed."""
    check = gitutil.run(["apply", "--check", "--verbose", str(patch)], cwd=tree, env=env, check=False)
    text = check.stdout + check.stderr + "\n" + am_output
    if m := _MISSING.search(text):
        return f"{m[1]}: file does not exist in the tree"
    if m := _FAILED.search(text):
        file, line = m[1], int(m[2])
        file_hunks = [h for h in hunks(patch) if h[0] == file]
        for n, (_, start, header) in enumerate(file_hunks, 1):
            if start == line:
                conflict = " (three-way merge conflicts too)" if _CONFLICT.search(text) else ""
                return f"{file}: hunk #{n} (@@ {header.split('@@')[1].strip()} @@) context not found{conflict}"
        return f"{file}: hunk at line {line} does not match"
    if m := _CONFLICT.search(text):
        return f"{m[1]}: three-way merge conflict"
    last = [line for line in text.splitlines() if line.strip()]
    return last[-1] if last else "git am failed"


def _swap_into_place(staging: Path, src: Path) -> None:
    old = None
    if src.exists():
        old = src.with_name(f".llama.cpp.old-{os.getpid()}")
        os.rename(src, old)
    try:
        os.rename(staging, src)
    except OSError:
        if old is not None:
            os.rename(old, src)
        raise
    if old is not None:
        _rmtree(old)


def _rmtree(path: Path) -> None:
    def retry(func, p, _exc):  # read-only files (git pack files) on some filesystems
        os.chmod(p, stat.S_IWUSR | stat.S_IRUSR | stat.S_IXUSR)
        func(p)

    if sys.version_info >= (3, 12):
        shutil.rmtree(path, onexc=retry)
    else:
        shutil.rmtree(path, onerror=retry)


def require_synced(project: Project, pin: Pin, series: LoadedSeries, env) -> Stamp:
    have = current(project, env)
    if have is None:
        raise WorkspaceError(f"no synced source tree in {project.src_dir}", hint="run `q3build sync` first")
    series.verify()
    if have.key() != wanted(pin, series).key():
        raise WorkspaceError("the synced tree is out of date with recipes/ and patches/",
                             hint="run `q3build sync`")
    return have
