"""Upstream's web UI built from source: ``make``'s ui step.

The pinned tree's UI (``tools/ui``, a Svelte app) is built once per pin and embedded by upstream's own
``scripts/ui-assets.cmake``, for every target alike (the assets are target-independent):

1. ``npm ci`` from the UI's ``package-lock.json`` into ``<cache>/ui/modules-<lock sha256>/`` (npm's own
   download cache in ``<cache>/ui/npm-cache``), skipped when that directory exists;
2. ``npm run build`` in a copy of the UI's sources whose ``node_modules`` is a link to (1), output into
   ``<cache>/ui/dist-<key>/``, key = the UI's git tree id in the synced tree (our patches included), the
   Node.js version and the build number; skipped when that directory exists;
3. the output copied into the target's build directory as ``tools/ui/dist``. The plan sets
   ``LLAMA_BUILD_UI=ON``: upstream's script finds that output newer than the UI's sources, skips its
   own npm run and embeds it (gzip, ETags) into ``llama-server``.

Each cache directory appears only when complete (built beside it, then renamed). A recipe with
``web_ui: false`` gets ``LLAMA_BUILD_UI=OFF`` and no ``tools/ui/dist``: no UI embedded.
"""

from __future__ import annotations

import hashlib
import json
import os
import re
import shutil
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path

from q3build import proc, ui
from q3build.core import gitutil
from q3build.core.series import sha256_file
from q3build.errors import BuildError, CommandError
from q3build.project import Project
from q3build.toolchains import node as node_mod

RECORD = "q3build-ui.json"
DIST = Path("tools") / "ui" / "dist"          # where upstream's ui-assets.cmake looks, below the build dir
EMBED_HEADER = Path("tools") / "ui" / "ui.h"  # what it generates: LLAMA_UI_HAS_ASSETS when assets were embedded


def _record(d: Path) -> dict | None:
    try:
        return json.loads((d / RECORD).read_text())
    except (OSError, ValueError):
        return None


def _npm_env(project: Project, node: node_mod.Node, env: Mapping[str, str]) -> dict[str, str]:
    e = node.env(env)
    e.update(npm_config_cache=str(project.cache / "ui" / "npm-cache"), npm_config_update_notifier="false",
             npm_config_fund="false", npm_config_audit="false")
    return e


def _run(argv: list[str], log: Path, cwd: Path, env: Mapping[str, str], what: str) -> None:
    try:
        proc.stream(argv, log_file=log, cwd=cwd, env=env)
    except CommandError as e:
        lines = [ln for ln in e.tail.splitlines() if re.search(r"\b(error|ERR!)\b", ln, re.IGNORECASE)]
        raise BuildError(f"web UI: {what} failed (exit {e.returncode}): see {log}\n  "
                         + "\n  ".join((lines or e.tail.splitlines())[-5:]),
                         hint="a recipe can leave the UI out with `web_ui: false`, or run make with --skip ui") from None


def _publish(tmp: Path, dest: Path) -> None:
    try:
        os.rename(tmp, dest)
    except OSError:      # another q3build finished the same work first
        if _record(dest) is None:
            raise


def modules(project: Project, node: node_mod.Node, src: Path, env: Mapping[str, str], log: Path) -> tuple[Path, bool]:
    """node_modules for the UI's lock file, installed once per lock file; (dir, True if it was cached)."""
    lock = sha256_file(src / "package-lock.json")
    dest = project.cache / "ui" / f"modules-{lock[:16]}"
    if _record(dest) is not None:
        return dest, True
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".modules-", dir=dest.parent) as tmp:
        t = Path(tmp) / "tree"
        t.mkdir()
        for name in ("package.json", "package-lock.json", ".npmrc"):
            if (src / name).is_file():
                shutil.copy(src / name, t / name)
        _run([*node.npm, "ci", "--no-audit", "--no-fund"], log, t, _npm_env(project, node, env), "npm ci")
        (t / RECORD).write_text(json.dumps({"lock_sha256": lock, "node": node.version}, indent=2) + "\n")
        _publish(t, dest)
    return dest, False


def _ignore(d: str, names: list[str]) -> list[str]:
    return [n for n in names if n in ("node_modules", "dist", ".svelte-kit", "build")]


def dist(project: Project, node: node_mod.Node, src: Path, source_tree: str, build_number: int,
         env: Mapping[str, str], log: Path) -> tuple[Path, bool, bool]:
    """The built UI for this source tree and node: (dir, dist cached, modules cached)."""
    key = hashlib.sha256(f"{source_tree}\0{node.version}\0{build_number}".encode()).hexdigest()[:16]
    dest = project.cache / "ui" / f"dist-{key}"
    if _record(dest) is not None:
        return dest, True, True
    mods, mods_cached = modules(project, node, src, env, log)
    with tempfile.TemporaryDirectory(prefix=".build-", dir=dest.parent) as tmp:
        work = Path(tmp) / "src"
        shutil.copytree(src, work, ignore=_ignore, symlinks=True)
        (work / "node_modules").symlink_to(mods / "node_modules")
        out = Path(tmp) / "dist"
        e = _npm_env(project, node, env)
        # as upstream's ui-assets.cmake runs it
        e.update(LLAMA_UI_OUT_DIR=str(out), LLAMA_UI_VERSION=f"b{build_number}", LLAMA_BUILD_NUMBER=str(build_number))
        _run([*node.npm, "run", "build"], log, work, e, "npm run build")
        if not (out / "index.html").is_file():
            raise BuildError(f"web UI: npm run build wrote no index.html into {out}: see {log}")
        files = sorted(p for p in out.rglob("*") if p.is_file())
        (out / RECORD).write_text(json.dumps({
            "source_tree": source_tree, "node": node.version, "build_number": build_number,
            "lock_sha256": sha256_file(src / "package-lock.json"),
            "files": len(files), "bytes": sum(p.stat().st_size for p in files)}, indent=2) + "\n")
        _publish(out, dest)
    return dest, False, mods_cached


def install(built: Path, build_dir: Path) -> None:
    """Copy the built UI to where upstream's ui-assets.cmake reads it; fresh mtimes, so it is newer
    than the UI's sources and upstream does not run npm again."""
    target = build_dir / DIST
    tmp = target.with_name("dist.tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    shutil.copytree(built, tmp, copy_function=shutil.copy, ignore=lambda d, n: [RECORD] if RECORD in n else [])
    if target.exists():
        shutil.rmtree(target)
    tmp.rename(target)


def remove(build_dir: Path) -> None:
    if (build_dir / DIST).exists():
        shutil.rmtree(build_dir / DIST)


def embedded(build_dir: Path) -> bool | None:
    """Whether the configured build embedded UI assets (None: not generated yet)."""
    try:
        text = (build_dir / EMBED_HEADER).read_text()
    except OSError:
        return None
    return re.search(r"^#define LLAMA_UI_HAS_ASSETS 1\b", text, re.MULTILINE) is not None


def prepare(project: Project, plan, env: Mapping[str, str]) -> dict | None:
    """make's ui step: build the UI (cached) and put it into the target's build directory; the record
    build-info.json keeps. None when the pin has no UI or the recipe turns it off."""
    pin_ui = plan.pin.ui
    if not plan.web_ui:
        remove(plan.build_dir)
        why = "the pin names no web UI" if pin_ui is None else f"target {plan.target_name} has web_ui: false"
        ui.info(f"web UI: not built ({why})")
        return None
    src = plan.src_dir / pin_ui.source
    if not (src / "package-lock.json").is_file():
        raise BuildError(f"web UI: {src}/package-lock.json not found (recipes/llama.cpp.yaml ui.source is "
                         f"{pin_ui.source!r})", hint="run `q3build sync`, or build without the UI: --skip ui")
    log = plan.log_dir / "ui.log"
    log.parent.mkdir(parents=True, exist_ok=True)
    log.write_text("")
    t0 = time.monotonic()
    node = node_mod.resolve(pin_ui.node, project.cache, env, where=f"{project.display(project.pin_file)}: ui.node.wheels")
    tree = gitutil.rev_parse(plan.src_dir / ".git", f"HEAD:{pin_ui.source}", env) or "unknown"
    with ui.step(f"Web UI ({pin_ui.source}, node {node.version} from {node.source})"):
        built, dist_cached, mods_cached = dist(project, node, src, tree, plan.pin.upstream.build, env, log)
        install(built, plan.build_dir)
    rec = _record(built) or {}
    seconds = round(time.monotonic() - t0, 2)
    ui.info(f"web UI: {rec.get('files')} files, {rec.get('bytes', 0) / 1e6:.1f} MB "
            f"({'cached' if dist_cached else 'built'}, {seconds} s)")
    return {"source": pin_ui.source, "source_tree": tree, "lock_sha256": rec.get("lock_sha256"),
            "node": node.to_record(), "modules": "cached" if mods_cached else "installed",
            "dist": "cached" if dist_cached else "built", "dist_dir": str(built), "files": rec.get("files"),
            "bytes": rec.get("bytes"), "seconds": seconds}
