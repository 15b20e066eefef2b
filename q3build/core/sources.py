"""Sources of the pinned upstream tree, tried in the pin's order.

Whatever a source delivers ends up as a commit in one bare store repository (the cache), and is
accepted only if its git tree id equals the pin's recorded tree. A git source gives the real
upstream commit (full history: three-way merges need preimages); an archive or the PyPI sdist
mirror is imported as one base commit with a fixed identity and date, so both paths give the
same tree and a reproducible base.
"""

from __future__ import annotations

import hashlib
import logging
import shutil
import sys
import tarfile
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from urllib.parse import urlparse

import requests
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TransferSpeedColumn,
)

from q3build import proc, ui
from q3build.core import gitutil, safetar
from q3build.core.pin import Pin, Source
from q3build.core.series import sha256_file
from q3build.errors import CommandError, FetchError, ToolMissingError
from q3build.project import Project

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class Base:
    """The verified pristine commit in the store for a pin."""

    commit: str  # the commit our patches are applied on
    source: str  # label of the source that produced it
    ref: str


def _ref(source: Source, pin: Pin) -> str:
    return f"refs/q3build/{source.label}/{pin.upstream.commit}"


def init_store(project: Project, env: Mapping[str, str]) -> Path:
    store = project.store
    if not (store / "HEAD").exists():
        store.parent.mkdir(parents=True, exist_ok=True)
        tmp = Path(tempfile.mkdtemp(prefix=".store-", dir=store.parent))
        gitutil.run(["init", "--quiet", "--bare", str(tmp)], env=env)
        tmp.rename(store)
    return store


def ensure_base(project: Project, pin: Pin, env: Mapping[str, str], *, only: str | None = None) -> Base:
    """Return a verified base commit for the pin, fetching from the first source that works."""
    store = init_store(project, env)
    sources = list(pin.sources)
    if only is not None:
        sources = [s for s in sources if s.label == only]
        if not sources:
            raise FetchError(f"no source named {only!r} in {project.display(project.pin_file)} "
                             f"(have: {', '.join(s.label for s in pin.sources)})")
    # a source fetched before is reused without network, after re-checking its tree
    for s in sources:
        commit = gitutil.rev_parse(store, _ref(s, pin), env)
        if commit and _tree(store, commit, env) == pin.upstream.tree:
            return Base(commit=commit, source=s.label, ref=_ref(s, pin))
    failures = []
    for s in sources:
        try:
            with ui.step(f"Fetching llama.cpp {pin.upstream.short} ({pin.upstream.tag}) from {s.label}"):
                commit = FETCHERS[s.kind](project, pin, s, store, env)
                tree = _tree(store, commit, env)
                if tree != pin.upstream.tree:
                    raise FetchError(f"source {s.label}: got tree {tree}, but the pin records "
                                     f"{pin.upstream.tree}: not the pinned llama.cpp tree")
                gitutil.run(["update-ref", _ref(s, pin), commit], git_dir=store, env=env)
                return Base(commit=commit, source=s.label, ref=_ref(s, pin))
        except (FetchError, CommandError, ToolMissingError, OSError, tarfile.TarError,
                requests.RequestException) as e:
            detail = str(e)
            if isinstance(e, CommandError) and e.tail:
                detail += ": " + e.tail.strip().splitlines()[-1]
            failures.append(f"{s.label}: {detail}")
            ui.warn(f"source {s.label} failed: {detail}")
    raise FetchError(f"no source produced the pinned tree {pin.upstream.commit} ({'; '.join(failures)})",
                     hint="check the network or add a reachable mirror to recipes/llama.cpp.yaml")


def _tree(store: Path, commit: str, env) -> str | None:
    return gitutil.rev_parse(store, f"{commit}^{{tree}}", env)


# --- git --------------------------------------------------------------------------------------

def fetch_git(project: Project, pin: Pin, source: Source, store: Path, env) -> str:
    commit = pin.upstream.commit
    if not gitutil.has_object(store, f"{commit}^{{commit}}", env):
        # Full history, never --depth/--filter: `git am --3way` needs the preimage blobs.
        r = gitutil.run(["fetch", "--no-tags", "--quiet", source.url, commit], git_dir=store, env=env, check=False)
        if r.returncode != 0:
            # servers that refuse fetch-by-id: take all branches, then look for the commit
            gitutil.run(["fetch", "--no-tags", "--quiet", source.url, "+refs/heads/*:refs/q3build/heads/*"],
                        git_dir=store, env=env)
        if not gitutil.has_object(store, f"{commit}^{{commit}}", env):
            raise FetchError(f"source {source.label}: {source.url} does not have commit {commit}")
    if (store / "shallow").exists():
        raise FetchError(f"source {source.label}: {source.url} is a shallow repository; "
                         "q3build needs full history (three-way apply needs preimages)")
    return commit


# --- archives (tarball URL or path) and the PyPI sdist mirror ---------------------------------

def download(url: str, dest: Path, *, sha256: str | None) -> Path:
    """Download url to dest (temp file + rename), with progress, checking sha256 when given."""
    if dest.is_file() and (sha256 is None or sha256_file(dest) == sha256):
        return dest
    dest.parent.mkdir(parents=True, exist_ok=True)
    parsed = urlparse(url)
    tmp = dest.with_name(dest.name + ".part")
    if parsed.scheme in ("", "file"):
        shutil.copyfile(parsed.path if parsed.scheme else url, tmp)
    else:
        with requests.get(url, stream=True, timeout=(15, 60)) as r:
            r.raise_for_status()
            total = int(r.headers.get("content-length") or 0) or None
            with Progress(TextColumn("{task.description}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
                          console=ui.console, transient=True, disable=not ui.console.is_terminal) as bar, \
                    open(tmp, "wb") as f:
                task = bar.add_task(dest.name, total=total)
                for chunk in r.iter_content(1 << 20):
                    f.write(chunk)
                    bar.advance(task, len(chunk))
    if sha256 is not None:
        got = sha256_file(tmp)
        if got != sha256:
            tmp.unlink()
            raise FetchError(f"{url}: sha256 mismatch: expected {sha256}, got {got}")
    tmp.replace(dest)
    return dest


def extract_tree(archive: Path, dest: Path, *, strip: int, subdir: str) -> None:
    """Extract the part of a tarball under ``strip`` leading components and ``subdir``.

    Extraction follows PEP 706's ``data`` policy (``safetar``): no absolute paths, no links out of
    dest, no devices — on interpreters without the filter too.
    """
    sub = PurePosixPath(subdir) if subdir else None
    with tarfile.open(archive) as tf:
        members = []
        for m in tf.getmembers():
            rel = _relocate(m.name, strip, sub)
            if rel is None:
                continue
            if m.islnk():  # hard links name another member by its archive path
                link = _relocate(m.linkname, strip, sub)
                if link is None:
                    raise FetchError(f"{archive.name}: {m.name} links outside the extracted tree")
                m = safetar.with_names(m, name=rel, linkname=link)
            else:
                m = safetar.with_names(m, name=rel)
            members.append(m)
        if not members:
            raise FetchError(f"{archive.name}: nothing under {subdir or '(root)'} after stripping {strip} component(s)")
        try:
            safetar.extract(tf, dest, members)
        except safetar.UnsafeMember as e:
            raise FetchError(f"{archive.name}: refusing unsafe member: {e}") from None


def _relocate(name: str, strip: int, sub: PurePosixPath | None) -> str | None:
    parts = PurePosixPath(name).parts
    if ".." in parts or name.startswith("/"):
        raise FetchError(f"unsafe member path {name!r} in archive (absolute or '..'); refusing to extract")
    if len(parts) <= strip:
        return None
    rel = PurePosixPath(*parts[strip:])
    if sub is not None:
        try:
            rel = rel.relative_to(sub)
        except ValueError:
            return None
    if rel == PurePosixPath(".") or not rel.parts:
        return None
    if rel.parts[0] == ".git":  # a vendored submodule's .git file points outside the archive
        return None
    return rel.as_posix()


def import_tree(tree_dir: Path, store: Path, pin: Pin, message: str, env) -> str:
    """Commit a directory into the store as a parentless commit with a fixed identity and date."""
    index = tree_dir.parent / "index"
    e = dict(env, GIT_INDEX_FILE=str(index), GIT_AUTHOR_DATE=pin.upstream.date, GIT_COMMITTER_DATE=pin.upstream.date)
    # -f: files upstream tracks despite its .gitignore are in the tree too
    gitutil.run(["add", "--all", "--force", "."], git_dir=store, work_tree=tree_dir, cwd=tree_dir, env=e)
    tree = gitutil.out(["write-tree"], git_dir=store, env=e)
    return gitutil.out(["commit-tree", tree, "-m", message], git_dir=store, env=e)


def fetch_archive(project: Project, pin: Pin, source: Source, store: Path, env) -> str:
    name = Path(urlparse(source.url).path).name or "archive.tar.gz"
    key = source.sha256 or hashlib.sha256(source.url.encode()).hexdigest()
    path = download(source.url, project.downloads / key[:16] / name, sha256=source.sha256)
    return _import_archive(path, project, pin, source, store, env,
                           f"llama.cpp {pin.upstream.commit} ({pin.upstream.tag}) from archive {name}")


def fetch_pypi_sdist(project: Project, pin: Pin, source: Source, store: Path, env) -> str:
    dest_dir = project.downloads / source.sha256[:16]
    cached = sorted(dest_dir.glob("*.tar.gz")) if dest_dir.is_dir() else []
    cached = [p for p in cached if sha256_file(p) == source.sha256]
    if cached:
        path = cached[0]
    else:
        # pip is the registry's own client: it honours the user's index, proxy and certificates
        tmp = Path(tempfile.mkdtemp(prefix="pip-", dir=project.cache))
        try:
            proc.run([sys.executable, "-m", "pip", "download", "--no-deps", "--no-binary", ":all:",
                      "--disable-pip-version-check", "--dest", str(tmp), f"{source.package}=={source.version}"],
                     env=env, capture=True)
            got = sorted(tmp.glob("*.tar.gz"))
            if len(got) != 1:
                raise FetchError(f"pip download of {source.package}=={source.version} gave no single sdist")
            digest = sha256_file(got[0])
            if digest != source.sha256:
                raise FetchError(f"{got[0].name}: sha256 mismatch: pin expects {source.sha256}, got {digest}")
            dest_dir.mkdir(parents=True, exist_ok=True)
            path = dest_dir / got[0].name
            shutil.move(got[0], path)
        finally:
            shutil.rmtree(tmp, ignore_errors=True)
    return _import_archive(path, project, pin, source, store, env,
                           f"llama.cpp {pin.upstream.commit} ({pin.upstream.tag}) from {source.package} "
                           f"{source.version} sdist ({source.subdir})")


def _import_archive(path: Path, project: Project, pin: Pin, source: Source, store: Path, env, message: str) -> str:
    project.cache.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix="extract-", dir=project.cache))
    try:
        tree_dir = tmp / "tree"
        tree_dir.mkdir()
        extract_tree(path, tree_dir, strip=source.strip, subdir=source.subdir)
        return import_tree(tree_dir, store, pin, message, env)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


FETCHERS = {"git": fetch_git, "archive": fetch_archive, "pypi-sdist": fetch_pypi_sdist}
