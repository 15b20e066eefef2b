"""Upstream drift: how the patch stack fares on a newer llama.cpp, before anyone bumps the pin.

The newer tree is a revision of the pin's git source (``--ref``), or a directory or tarball
(``--source``). In a scratch clone of it, the overlay is copied in and each patch is tried in
series order, with these verdicts:

- ``upstream``: already upstream. The patch applies in reverse, or ``git am --3way`` leaves nothing
  to commit (the patch becomes empty). With history, the upstream commit that brought the change
  in is named: the first one after the pin that adds the patch's most specific line to its files.
- ``clean``: ``git apply --check`` accepts it as is.
- ``3-way``: only ``git am --3way`` applies it (its context moved or changed nearby).
- ``conflict``: it does not apply. The file and hunk are named, and, when the newer tree comes with
  history, the upstream commits that touched the lines of that hunk between the pin and the ref.

A patch that conflicts is left out and the rest are tried on top, so one conflict does not hide
the state of the patches after it.
"""

from __future__ import annotations

import re
import shutil
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from q3build import ui
from q3build.core import gitutil, sources, workspace
from q3build.core.pin import Pin
from q3build.core.series import LoadedSeries
from q3build.errors import FetchError, InputError
from q3build.project import Project, ensure_owned_dir, git_env

VERDICTS = ("clean", "3-way", "conflict", "upstream")

_U0 = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")
_HUNK_OLD = re.compile(r"^@@ -(\d+)(?:,(\d+))? ")
_CONFLICT = re.compile(r"^CONFLICT \([^)]*\): Merge conflict in (.+)$", re.M)
_FAILED = re.compile(r"^error: patch failed: (.+):(\d+)$", re.M)


@dataclass
class Commit:
    sha: str
    subject: str

    def to_json(self) -> dict:
        return {"commit": self.sha, "subject": self.subject}


@dataclass
class Conflict:
    file: str
    hunk: str                       # the hunk header, e.g. "@@ -10,7 +10,8 @@"
    lines: tuple[int, int]          # the hunk's lines in the pinned tree (first, last)
    commits: list[Commit] = field(default_factory=list)

    def to_json(self) -> dict:
        return {"file": self.file, "hunk": self.hunk, "lines": list(self.lines),
                "commits": [c.to_json() for c in self.commits]}


@dataclass
class PatchDrift:
    file: str
    verdict: str
    detail: str = ""
    conflicts: list[Conflict] = field(default_factory=list)
    commits: list[Commit] = field(default_factory=list)     # upstream: the commit that brought it in

    def to_json(self) -> dict:
        return {"patch": self.file, "verdict": self.verdict, "detail": self.detail,
                "conflicts": [c.to_json() for c in self.conflicts], "commits": [c.to_json() for c in self.commits]}


@dataclass
class Report:
    pin: str
    new: str                       # the commit the patches were tried on
    label: str                     # what the user asked for (ref or source path)
    history: bool                  # whether pin..new history is known (git source)
    overlay: str                   # "clean" or the overlay files that now exist upstream
    patches: list[PatchDrift]

    def counts(self) -> dict[str, int]:
        return {v: sum(p.verdict == v for p in self.patches) for v in VERDICTS}

    def to_json(self) -> dict:
        return {"pin": self.pin, "new": self.new, "label": self.label, "history": self.history,
                "overlay": self.overlay, "counts": self.counts(), "patches": [p.to_json() for p in self.patches]}

    def markdown(self) -> str:
        out = [f"## Upstream drift: {self.pin[:9]} → {self.label} ({self.new[:9]})", "",
               f"Overlay: {self.overlay}", "",
               "| # | patch | verdict | detail |", "|---|---|---|---|"]
        for i, p in enumerate(self.patches, 1):
            out.append(f"| {i} | `{p.file}` | {p.verdict} | {_md(p.detail)} |")
        for p in self.patches:
            if p.verdict == "upstream":
                out += ["", f"### `{p.file}`", ""]
                if not self.history:
                    out.append("- upstream commit unknown: the newer tree has no history")
                elif not p.commits:
                    out.append("- no single upstream commit adds its lines")
                out += [f"- upstream in {cm.sha[:12]} {_md(cm.subject)}" for cm in p.commits]
            if not p.conflicts:
                continue
            out += ["", f"### `{p.file}`", ""]
            for c in p.conflicts:
                out.append(f"- `{c.file}` `{c.hunk}` (lines {c.lines[0]}–{c.lines[1]} at the pin)")
                if not self.history:
                    out.append("  - upstream commits unknown: the newer tree has no history")
                elif not c.commits:
                    out.append("  - no upstream commit touched these lines")
                for cm in c.commits:
                    out.append(f"  - {cm.sha[:12]} {_md(cm.subject)}")
        counts = ", ".join(f"{n} {v}" for v, n in self.counts().items())
        return "\n".join(out + ["", f"{len(self.patches)} patches: {counts}", ""])


def _md(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


# --- line tracking (pure) --------------------------------------------------------------------

def parse_u0(diff: str) -> list[tuple[int, int, int, int]]:
    """(old start, old count, new start, new count) of every hunk of a `git diff -U0`."""
    out = []
    for line in diff.splitlines():
        if m := _U0.match(line):
            out.append((int(m[1]), int(m[2] or 1), int(m[3]), int(m[4] or 1)))
    return out


def touches(lines: tuple[int, int], hunk: tuple[int, int, int, int]) -> bool:
    """Whether a -U0 hunk changes any of the lines first..last (an insertion counts when it falls
    between two of them)."""
    first, last = lines
    s, n = hunk[0], hunk[1]
    if n == 0:                      # insertion after line s
        return first <= s < last
    return s <= last and s + n - 1 >= first


def follow(lines: tuple[int, int], hunks: list[tuple[int, int, int, int]]) -> tuple[int, int]:
    """Where lines first..last of the old side are on the new side of a -U0 diff (a range that a
    hunk rewrites grows to cover what replaced it)."""
    first, last = lines

    def map_line(x: int, end: bool) -> int:
        delta = 0
        for s, n, s2, n2 in hunks:
            if n == 0:             # insertion after line s: moves the lines below it
                if s < x:
                    delta += n2
                continue
            if s + n - 1 < x:
                delta += n2 - n
            elif s <= x:            # x itself was rewritten
                return (s2 + max(n2, 1) - 1) if end else max(s2, 1)
        return x + delta

    a, b = map_line(first, False), map_line(last, True)
    return (a, max(a, b))


def specific_line(patch: Path) -> tuple[list[str], str]:
    """(the patch's files, its longest added line, stripped; for a patch that only deletes, its
    longest removed line): the line most likely to be unique to the change."""
    files, added, removed = [], [], []
    in_diff = False
    for line in patch.read_text(encoding="utf-8", errors="replace").splitlines():
        if line.startswith("diff --git "):
            if (f := line.split(" b/", 1)[-1]) not in files:
                files.append(f)
            in_diff = True
        elif line == "-- ":                  # format-patch's signature after the last diff
            in_diff = False
        elif in_diff and line.startswith("+") and not line.startswith("+++ "):
            added.append(line[1:].strip())
        elif in_diff and line.startswith("-") and not line.startswith("--- "):
            removed.append(line[1:].strip())
    return files, max(added, key=len, default="") or max(removed, key=len, default="")


def hunk_ranges(patch: Path) -> list[tuple[str, str, tuple[int, int]]]:
    """(file, header, (first, last) old lines) of every hunk of a patch."""
    out = []
    for file, _start, header in workspace.hunks(patch):
        m = _HUNK_OLD.match(header)
        start, count = int(m[1]), int(m[2] or 1)
        out.append((file, "@@ " + header.split("@@")[1].strip() + " @@", (start, start + max(count, 1) - 1)))
    return out


# --- running ----------------------------------------------------------------------------------

def _new_commit(project: Project, pin: Pin, store: Path, env, *, ref: str | None, repo: str | None,
                source: Path | None) -> tuple[str, bool, str]:
    """(commit in the store, has history from the pin, label)."""
    if source is not None:
        if not source.exists():
            raise InputError(f"--source {source}: no such file or directory")
        tmp = Path(tempfile.mkdtemp(prefix=".drift-import-", dir=project.work))
        try:
            tree = tmp / "tree"
            if source.is_dir():
                shutil.copytree(source, tree, symlinks=True, ignore=shutil.ignore_patterns(".git"))
            else:
                try:
                    sources.extract_tree(source, tree, strip=1, subdir="")
                except tarfile.TarError as e:
                    raise InputError(f"--source {source}: not a readable tarball ({e})") from None
            commit = sources.import_tree(tree, store, pin, f"drift: {source.name}", env)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
        return commit, False, str(source)
    url = repo
    if url is None:
        git_sources = [s for s in pin.sources if s.kind == "git"]
        if not git_sources:
            raise InputError(f"--ref {ref}: {project.display(project.pin_file)} has no git source",
                             hint="pass --repo URL, or --source DIR|TARBALL")
        url = git_sources[0].url
    if re.fullmatch(r"[0-9a-f]{40}", ref) and gitutil.has_object(store, f"{ref}^{{commit}}", env):
        return ref, True, ref
    r = gitutil.run(["fetch", "--no-tags", "--quiet", url, ref], git_dir=store, env=env, check=False)
    if r.returncode != 0:
        raise FetchError(f"--ref {ref}: cannot fetch it from {url}: "
                         + ((r.stderr or r.stdout).strip().splitlines() or ["git fetch failed"])[-1])
    commit = gitutil.out(["rev-parse", "FETCH_HEAD^{commit}"], git_dir=store, env=env)
    gitutil.run(["update-ref", f"refs/q3build/drift/{commit}", commit], git_dir=store, env=env)
    return commit, True, ref


def _touching_commits(tree: Path, pin: str, new: str, file: str, lines: tuple[int, int], env) -> list[Commit]:
    """Upstream commits between the pin and new that changed the given lines of file, oldest first,
    following the lines through each commit (first-parent history)."""
    revs = gitutil.out(["rev-list", "--reverse", "--first-parent", "--ancestry-path", f"{pin}..{new}", "--", file],
                       cwd=tree, env=env).split()
    if not revs:
        return []
    found = []
    current = lines
    prev = pin
    for rev in revs:
        # diff from the previous commit that touched the file (the file did not change in between)
        diff = gitutil.out(["diff", "-U0", "--no-color", "--no-ext-diff", prev, rev, "--", file], cwd=tree, env=env)
        hunks = parse_u0(diff)
        if any(touches(current, h) for h in hunks):
            subject = gitutil.out(["log", "-1", "--format=%s", rev], cwd=tree, env=env)
            found.append(Commit(rev, subject))
        current = follow(current, hunks)
        prev = rev
    return found


def _bringing_commit(tree: Path, pin: str, new: str, patch: Path, env) -> list[Commit]:
    """The first upstream commit between the pin and new that adds (or, for a deleting patch,
    removes) the patch's most specific line in its files, if any."""
    files, line = specific_line(patch)
    if not line:
        return []
    out = gitutil.out(["log", "--reverse", "--format=%H%x09%s", f"-S{line}", f"{pin}..{new}", "--", *files],
                      cwd=tree, env=env)
    return [Commit(*rev.split("\t", 1)) for rev in out.splitlines()[:1]]


def run(project: Project, pin: Pin, series: LoadedSeries, env: Mapping[str, str], *, ref: str | None = None,
        repo: str | None = None, source: Path | None = None) -> Report:
    if (ref is None) == (source is None):
        raise InputError("drift: give exactly one of --ref REV or --source DIR|TARBALL")
    genv = git_env(project, env)
    series.verify()
    ensure_owned_dir(project.work)
    base = sources.ensure_base(project, pin, genv)
    store = project.store
    with ui.step("Getting the newer upstream tree"):
        new, history, label = _new_commit(project, pin, store, genv, ref=ref, repo=repo, source=source)
    if history and gitutil.run(["merge-base", "--is-ancestor", base.commit, new], git_dir=store, env=genv,
                               check=False).returncode != 0:
        ui.warn(f"{label} ({new[:9]}) does not descend from the pin {pin.upstream.short}: "
                "commits touching conflicts are not listed")
        history = False
    scratch = Path(tempfile.mkdtemp(prefix=".drift-", dir=project.work))
    try:
        gitutil.run(["clone", "--quiet", "--no-checkout", str(store), str(scratch)], env=genv)
        gitutil.run(["checkout", "--quiet", "-B", "q3build/drift", new], cwd=scratch, env=genv)
        fixed = dict(genv, GIT_AUTHOR_DATE=pin.upstream.date, GIT_COMMITTER_DATE=pin.upstream.date)
        overlay = _overlay(scratch, series, fixed)
        results = []
        with ui.step(f"Trying {len(series.patches)} patch(es) on {new[:9]}"):
            for entry in series.patches:
                results.append(_try(scratch, series.path(entry), entry.file, fixed,
                                    pin=base.commit, new=new, history=history))
    finally:
        workspace._rmtree(scratch)
    return Report(pin=pin.upstream.commit, new=new, label=label, history=history, overlay=overlay, patches=results)


def _overlay(tree: Path, series: LoadedSeries, env) -> str:
    files = series.overlay_files()
    clash = [r.as_posix() for r in files if (tree / r).exists()]
    copy = [r for r in files if r.as_posix() not in clash]
    for rel in copy:
        (tree / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(series.overlay_dir / rel, tree / rel)
    if copy:
        gitutil.run(["add", "--force", "--", *[r.as_posix() for r in copy]], cwd=tree, env=env)
    gitutil.run(["commit", "--quiet", "--allow-empty", "-m", workspace.OVERLAY_SUBJECT], cwd=tree, env=env)
    if clash:
        return "files now exist upstream: " + ", ".join(clash)
    return f"clean ({len(files)} files)"


def _try(tree: Path, patch: Path, name: str, env, *, pin: str, new: str, history: bool) -> PatchDrift:
    def upstream(detail: str) -> PatchDrift:
        return PatchDrift(name, "upstream", detail,
                          commits=_bringing_commit(tree, pin, new, patch, env) if history else [])

    if gitutil.run(["apply", "--check", "--reverse", str(patch)], cwd=tree, env=env, check=False).returncode == 0:
        return upstream("applies in reverse: upstream has the change")
    plain = gitutil.run(["apply", "--check", str(patch)], cwd=tree, env=env, check=False).returncode == 0
    head = gitutil.out(["rev-parse", "HEAD"], cwd=tree, env=env)
    r = gitutil.run(["am", "--3way", "--quiet", "--keep-cr", str(patch)], cwd=tree, env=env, check=False)
    if r.returncode == 0:
        if gitutil.out(["rev-parse", "HEAD"], cwd=tree, env=env) == head or \
                gitutil.run(["diff", "--quiet", "HEAD~1", "HEAD"], cwd=tree, env=env, check=False).returncode == 0:
            return upstream("becomes empty after a 3-way merge: upstream has the change")
        if plain:
            return PatchDrift(name, "clean", "")
        return PatchDrift(name, "3-way", "context changed; a 3-way merge applies it")
    output = (r.stdout + r.stderr)
    detail = workspace.diagnose(tree, patch, output, env)
    gitutil.run(["am", "--abort"], cwd=tree, env=env, check=False)
    failed_files = set(_CONFLICT.findall(output))
    check = gitutil.run(["apply", "--check", "--verbose", str(patch)], cwd=tree, env=env, check=False)
    failed_files |= {m[0] for m in _FAILED.findall(check.stdout + check.stderr)}
    conflicts = []
    for file, header, lines in hunk_ranges(patch):
        if failed_files and file not in failed_files:
            continue
        commits = _touching_commits(tree, pin, new, file, lines, env) if history else []
        conflicts.append(Conflict(file, header, lines, commits))
    return PatchDrift(name, "conflict", detail, conflicts)
