"""The patch stack: ``patches/series.yaml`` (ordered hook patches with metadata) and the overlay.

Patches are small edits to upstream files, applied in the listed order (never sorted). Our own
new sources live in the overlay tree (``patches/overlay/``), copied into the source tree as one
commit, so they are never whole-file patches that rot on every upstream bump.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from q3build.core import schema
from q3build.core.schema import doc
from q3build.errors import PatchError, RecipeError
from q3build.project import Project

SCHEMA_VERSIONS = (1, 1)
PATCH_NAME = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]*\.patch$")


@dataclass(frozen=True, kw_only=True)
class UpstreamStatus:
    status: Literal["pending", "submitted", "accepted", "backport", "inappropriate", "not-needed"] = doc(
        "where the change stands upstream (DEP-3 style)")
    ref: str | None = doc("upstream PR or issue", default=None)
    note: str | None = doc("why, e.g. why it is inappropriate upstream", default=None)


@dataclass(frozen=True, kw_only=True)
class PatchEntry:
    file: str = doc("patch file name in patches/")
    purpose: str = doc("what the patch does and why")
    area: Literal["build", "server", "tts", "mtmd", "convert", "spacemit", "ggml", "llama"] = doc("subsystem")
    upstream: UpstreamStatus = doc("upstream status")
    sha256: str = doc("sha256 of the patch file, checked before apply")
    drop_when: str | None = doc("condition under which the patch can be removed", default=None)


@dataclass(frozen=True, kw_only=True)
class Series:
    schema: int = doc("file format version")
    overlay: str = doc("overlay directory, relative to patches/", default="overlay")
    patches: list[PatchEntry] = doc("hook patches, applied in this order", default=())


@dataclass(frozen=True)
class LoadedSeries:
    series: Series
    dir: Path
    overlay_dir: Path

    @property
    def patches(self) -> tuple[PatchEntry, ...]:
        return tuple(self.series.patches)

    def path(self, entry: PatchEntry) -> Path:
        return self.dir / entry.file

    def digest(self) -> str:
        """Digest of the ordered patch contents: what the series does, not how it is described."""
        h = hashlib.sha256()
        for e in self.patches:
            h.update(f"{e.file} {e.sha256}\n".encode())
        return h.hexdigest()

    def overlay_files(self) -> list[Path]:
        """Overlay files relative to the overlay root, sorted (stable digest and copy order)."""
        if not self.overlay_dir.is_dir():
            return []
        out = []
        for root, dirs, files in os.walk(self.overlay_dir):
            dirs.sort()
            for f in files:
                out.append((Path(root) / f).relative_to(self.overlay_dir))
        return sorted(out, key=lambda p: p.as_posix())

    def overlay_digest(self) -> str:
        h = hashlib.sha256()
        for rel in self.overlay_files():
            p = self.overlay_dir / rel
            mode = "755" if p.stat().st_mode & stat.S_IXUSR else "644"
            h.update(f"{mode} {rel.as_posix()} {sha256_file(p)}\n".encode())
        return h.hexdigest()

    def verify(self) -> None:
        """Check every patch file exists and matches its recorded sha256."""
        problems = []
        for i, e in enumerate(self.patches, 1):
            p = self.path(e)
            if not p.is_file():
                problems.append(f"patch {i} {e.file}: file not found in patches/")
                continue
            got = sha256_file(p)
            if got != e.sha256:
                problems.append(f"patch {i} {e.file}: sha256 mismatch (series.yaml says {e.sha256[:12]}…, "
                                f"file is {got[:12]}…); if the edit is intended, run `q3build patches refresh`")
        if problems:
            raise PatchError("; ".join(problems))


def sha256_file(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


def _checks(s: Series, error) -> None:
    if not SCHEMA_VERSIONS[0] <= s.schema <= SCHEMA_VERSIONS[1]:
        error(("schema",), f"version {s.schema} is not supported")
    seen = set()
    for i, e in enumerate(s.patches):
        if not PATCH_NAME.match(e.file) or "/" in e.file:
            error(("patches", i, "file"), f"expected a plain file name ending in .patch, got {e.file!r}")
        if e.file in seen:
            error(("patches", i, "file"), f"{e.file} is listed twice")
        seen.add(e.file)
        if not re.fullmatch(r"[0-9a-f]{64}", e.sha256):
            error(("patches", i, "sha256"), f"expected 64 lowercase hex digits, got {e.sha256!r}")
    if os.path.isabs(s.overlay) or ".." in Path(s.overlay).parts:
        error(("overlay",), "must be a relative path inside patches/")


def load(project: Project) -> LoadedSeries:
    series = schema.load(Series, project.series_file, display=project.display(project.series_file), checks=_checks)
    return LoadedSeries(series=series, dir=project.patches_dir, overlay_dir=project.patches_dir / series.overlay)


def refresh_checksums(project: Project) -> list[tuple[str, str, str]]:
    """Rewrite the sha256 of each listed patch in series.yaml, keeping the file's text and comments.

    Returns (file, old, new) for each change.
    """
    text = project.series_file.read_text(encoding="utf-8")
    loaded = load(project)
    changes = []
    for e in loaded.patches:
        p = loaded.path(e)
        if not p.is_file():
            raise RecipeError(f"{project.display(project.series_file)}: {e.file}: file not found in patches/")
        new = sha256_file(p)
        if new != e.sha256:
            if text.count(e.sha256) != 1:
                raise RecipeError(f"{project.display(project.series_file)}: sha256 of {e.file} "
                                  "appears more than once; edit it by hand")
            text = text.replace(e.sha256, new)
            changes.append((e.file, e.sha256, new))
    if changes:
        project.series_file.write_text(text, encoding="utf-8")
    return changes

