"""Regenerate patches/ from an edited source tree: the inverse of sync.

Commits after the overlay commit become the series (mailbox files from ``git format-patch`` with
fixed options, so an unchanged commit exports to the same bytes); changes to overlay files, in
whatever commit they were made, go back to patches/overlay/. series.yaml keeps its text and
comments when only checksums change; it is rewritten when patches are added or removed.
"""

from __future__ import annotations

import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import yaml

from q3build.core import gitutil
from q3build.core import series as series_mod
from q3build.core.series import LoadedSeries, sha256_file
from q3build.core.workspace import Stamp, dirty_paths
from q3build.errors import WorkspaceError
from q3build.project import Project, git_env

# Every option that changes format-patch output is fixed here, not left to git config.
FORMAT_PATCH = ("format-patch", "--stdout", "--zero-commit", "--no-signature", "--no-numbered",
                "--subject-prefix=PATCH", "--full-index", "--no-stat", "--unified=3", "--diff-algorithm=myers",
                "--no-renames", "--no-notes", "--no-cover-letter", "--no-attach", "--no-thread",
                "--no-encode-email-headers", "--no-color")

AREA_BY_PATH = (("tools/server/", "server"), ("tools/mtmd/", "mtmd"), ("tools/tts/", "tts"),
                ("ggml/src/ggml-cpu/spacemit", "spacemit"), ("ggml/", "ggml"), ("convert", "convert"),
                ("conversion/", "convert"), ("gguf-py/", "convert"), ("src/", "llama"))


@dataclass
class ExportResult:
    written: list[str] = field(default_factory=list)    # patch files whose bytes changed or are new
    removed: list[str] = field(default_factory=list)    # patch files no longer in the series
    overlay_written: list[str] = field(default_factory=list)
    overlay_removed: list[str] = field(default_factory=list)
    series_rewritten: bool = False
    moved_to_overlay: list[str] = field(default_factory=list)  # new files found in patch commits

    @property
    def changed(self) -> bool:
        return bool(self.written or self.removed or self.overlay_written or self.overlay_removed
                    or self.series_rewritten)


def _slug(subject: str, limit: int = 48) -> str:
    s = re.sub(r"[^A-Za-z0-9]+", "-", subject).strip("-").lower()
    if len(s) > limit:
        s = s[:limit].rsplit("-", 1)[0]
    return s or "patch"


def _subject(patch_text: str) -> str:
    m = re.search(r"^Subject: (?:\[PATCH[^\]]*\] )?(.*(?:\n [^\n]*)*)", patch_text, re.M)
    return re.sub(r"\n ", " ", m[1]).strip() if m else ""


def export(project: Project, loaded: LoadedSeries, env) -> ExportResult:
    genv = git_env(project, env)
    src = project.src_dir
    stamp = Stamp.read(src) if (src / ".git").is_dir() else None
    if stamp is None:
        raise WorkspaceError(f"no synced source tree in {src}", hint="run `q3build sync` first")
    dirty = dirty_paths(src, genv)
    if dirty:
        raise WorkspaceError(f"{src} has uncommitted changes ({', '.join(dirty[:5])}); commit them first "
                             "(one commit per patch)")
    merges = gitutil.out(["rev-list", "--merges", f"{stamp.overlay_commit}..HEAD"], cwd=src, env=genv)
    if merges:
        raise WorkspaceError("the patch commits must be linear (found a merge commit); rebase them")
    ancestor = gitutil.run(["merge-base", "--is-ancestor", stamp.overlay_commit, "HEAD"], cwd=src, env=genv,
                           check=False)
    if ancestor.returncode != 0:
        raise WorkspaceError("HEAD no longer contains q3build's overlay commit "
                             f"{stamp.overlay_commit[:12]}; rebase your commits onto it")
    result = ExportResult()
    overlay_paths = _export_overlay(src, stamp, loaded, genv, result)
    _export_patches(src, stamp, loaded, project, overlay_paths, genv, result)
    return result


def _export_overlay(src: Path, stamp: Stamp, loaded: LoadedSeries, env, result: ExportResult) -> list[str]:
    added = gitutil.out(["diff", "--name-only", "--no-renames", stamp.base_commit, stamp.overlay_commit],
                        cwd=src, env=env).splitlines()
    # files added by later commits are new sources too: they go to the overlay, never into a patch
    later = gitutil.out(["diff", "--name-only", "--no-renames", "--diff-filter=A", stamp.overlay_commit, "HEAD"],
                        cwd=src, env=env).splitlines()
    for rel in later:
        if rel not in added:
            result.moved_to_overlay.append(rel)
    paths = sorted(set(added) | set(later))
    _refuse_clobbering(src, stamp, loaded, paths, env)
    for rel in paths:
        dst = loaded.overlay_dir / rel
        here = src / rel
        if here.is_file() and rel in added and here.read_bytes() == _synced(src, stamp, rel, env):
            continue  # not edited in the tree: patches/overlay is the newer copy, leave it alone
        if here.is_file():
            if not dst.is_file() or dst.read_bytes() != here.read_bytes():
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(here, dst)
                result.overlay_written.append(rel)
            dst.chmod(here.stat().st_mode & 0o777)
        elif dst.exists():
            dst.unlink()
            result.overlay_removed.append(rel)
    return paths


def _synced(src: Path, stamp: Stamp, rel: str, env) -> bytes | None:
    """The bytes of an overlay file as the last sync wrote it (None if it had no such file)."""
    try:
        blob = gitutil.repo(src).commit(stamp.overlay_commit).tree / rel
    except KeyError:
        return None
    return blob.data_stream.read()


def _tree_versions(src: Path, stamp: Stamp, rel: str) -> list[bytes]:
    """Every version of an overlay file committed in the tree since the sync: what an earlier export
    may have written to patches/overlay."""
    repo = gitutil.repo(src)
    out = []
    for commit in repo.iter_commits(f"{stamp.overlay_commit}..HEAD", paths=rel):
        try:
            out.append((commit.tree / rel).data_stream.read())
        except KeyError:
            pass
    return out


def _refuse_clobbering(src: Path, stamp: Stamp, loaded: LoadedSeries, paths: list[str], env) -> None:
    """An overlay file edited both in the tree and in patches/overlay since the sync would lose one
    of the two edits: stop and name it instead."""
    both = []
    for rel in paths:
        here, dst = src / rel, loaded.overlay_dir / rel
        synced = _synced(src, stamp, rel, env)
        if synced is None or not here.is_file() or not dst.is_file():
            continue
        tree, ours = here.read_bytes(), dst.read_bytes()
        if tree != synced and ours != synced and tree != ours and ours not in _tree_versions(src, stamp, rel):
            both.append(rel)
    if both:
        raise WorkspaceError(f"overlay file(s) changed both in the tree and in patches/overlay since the last sync: "
                             f"{', '.join(both)}; merge them by hand (copy one way), then export again")


def _export_patches(src: Path, stamp: Stamp, loaded: LoadedSeries, project: Project, overlay_paths: list[str],
                    env, result: ExportResult) -> None:
    commits = gitutil.out(["rev-list", "--reverse", f"{stamp.overlay_commit}..HEAD"], cwd=src, env=env).split()
    exclude = [f":(exclude){p}" for p in overlay_paths]
    old_by_subject = {}
    for e in loaded.patches:
        p = loaded.path(e)
        if p.is_file():
            old_by_subject.setdefault(_subject(p.read_text(encoding="utf-8", errors="replace")), e)
    new_entries: list[dict] = []
    for commit in commits:
        # an explicit one-commit range: with a pathspec, `-1 C` would walk back to an older commit
        text = gitutil.run([*FORMAT_PATCH, f"{commit}~1..{commit}", "--", ".", *exclude], cwd=src, env=env).stdout
        if "\ndiff --git " not in text:
            continue  # only touched overlay files: exported above
        subject = _subject(text)
        old = old_by_subject.pop(subject, None)
        name = old.file if old else f"{len(new_entries) + 1:04d}-{_slug(subject)}.patch"
        path = loaded.dir / name
        data = text.encode("utf-8")
        if not path.is_file() or path.read_bytes() != data:
            path.write_bytes(data)
            result.written.append(name)
        entry = _entry_dict(old) if old else _new_entry(name, text, subject)
        entry["sha256"] = sha256_file(path)
        new_entries.append(entry)
    old_names = [e.file for e in loaded.patches]
    new_names = [e["file"] for e in new_entries]
    for name in old_names:
        if name not in new_names and (loaded.dir / name).is_file():
            (loaded.dir / name).unlink()
            result.removed.append(name)
    if new_names == old_names:
        if series_mod.refresh_checksums(project):
            result.series_rewritten = True
    else:
        _write_series(project, loaded, new_entries)
        result.series_rewritten = True


def _entry_dict(e) -> dict:
    d = {"file": e.file, "purpose": e.purpose, "area": e.area,
         "upstream": {k: v for k, v in (("status", e.upstream.status), ("ref", e.upstream.ref),
                                         ("note", e.upstream.note)) if v is not None},
         "sha256": e.sha256}
    if e.drop_when:
        d["drop_when"] = e.drop_when
    return d


def _new_entry(name: str, text: str, subject: str) -> dict:
    files = re.findall(r"^diff --git a/(\S+) ", text, re.M)
    area = "build"
    for prefix, a in AREA_BY_PATH:
        if any(f.startswith(prefix) for f in files):
            area = a
            break
    # the message body ends where the diff starts (no '---' line: patches carry no diffstat)
    body = re.split(r"\n---\n|\ndiff --git ", text.split("\n\n", 1)[1], maxsplit=1)[0] if "\n\n" in text else ""
    first_paragraph = " ".join(body.strip().split("\n\n", 1)[0].split())
    return {"file": name, "purpose": first_paragraph or subject, "area": area, "upstream": {"status": "pending"},
            "sha256": ""}


def _write_series(project: Project, loaded: LoadedSeries, entries: list[dict]) -> None:
    doc = {"schema": loaded.series.schema, "overlay": loaded.series.overlay, "patches": entries}
    header = ("# Patch series for llama.cpp, applied in this order by `q3build sync`.\n"
              "# Hook patches only: our own new sources live in the overlay and are copied in as one commit.\n"
              "# Written by `q3build patches export`, which keeps per-patch metadata; edit purpose/area/upstream\n"
              "# freely (sha256 is checked before apply: `q3build patches refresh` re-records it).\n")
    project.series_file.write_text(header + yaml.safe_dump(doc, sort_keys=False, width=100, allow_unicode=True),
                                   encoding="utf-8")
