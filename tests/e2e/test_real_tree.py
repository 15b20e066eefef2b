"""The real pinned llama.cpp: sync from the offline PyPI mirror, the patch round trip on the real
tree, and `make --target host` building llama-server and llama-tts. Slow on a cold machine
(download + ~5 min compile); the cache (~/.cache/q3build: sdist, store, ccache) makes reruns fast."""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from q3build import cli

from ..conftest import REPO, git

pytestmark = pytest.mark.slow


@pytest.fixture
def work(tmp_path, monkeypatch):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    return tmp_path / "work"


def q3(*args):
    return cli.main(["--project", str(REPO), *args])


def test_sync_from_offline_mirror_is_the_pinned_tree(work, capsys):
    assert q3("sync", "--source", "pypi-sdist", "--json") == 0
    s = json.loads(capsys.readouterr().out)
    assert s["upstream_tree"] == "b2da53584951ec8aa40680229509a6646a637560"
    src = work / "src" / "llama.cpp"
    # the tree really is upstream's: the talker arch and the TTS demo exist, and our hook is in
    assert (src / "tools" / "tts").is_dir()
    assert "LLAMA_BUILD_DISTRIBUTION" in (src / "common" / "build-info.cpp.in").read_text()
    capsys.readouterr()
    assert q3("sync", "--source", "pypi-sdist", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["changed"] is False and again["head"] == s["head"]


def test_patch_round_trip_on_the_real_tree(tmp_path, monkeypatch, capsys):
    """sync → export → `git diff --exit-code`: the committed patches are exactly what export writes."""
    proj = tmp_path / "project"
    for d in ("recipes", "patches", "templates"):
        shutil.copytree(REPO / d, proj / d)
    git("init", "-q", cwd=proj)
    git("add", "-A", cwd=proj)
    git("commit", "-q", "-m", "snapshot", cwd=proj)
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    assert cli.main(["--project", str(proj), "sync", "--source", "pypi-sdist"]) == 0
    assert cli.main(["--project", str(proj), "patches", "export"]) == 0
    r = subprocess.run(["git", "diff", "--exit-code", "--stat"], cwd=proj, capture_output=True, text=True)
    assert r.returncode == 0, r.stdout
    assert git("status", "--porcelain", cwd=proj) == ""


def test_make_host_builds_server_and_tts_with_version(work, capsys):
    assert q3("sync", "--source", "pypi-sdist") == 0
    capsys.readouterr()
    assert q3("make", "--target", "host", "--json") == 0
    s = json.loads(capsys.readouterr().out)
    stage = work / "stage" / "host"
    server, tts = stage / "bin" / "llama-server", stage / "bin" / "llama-tts"
    version = subprocess.run([server, "--version"], capture_output=True, text=True)
    out = version.stdout + version.stderr
    capsys.readouterr()
    assert q3("patches", "list", "--json") == 0
    series = json.loads(capsys.readouterr().out)
    assert f"build 11312, commit 0c1e570, q3build 0.1.0 series {series['series_digest'][:12]}" in out
    assert f"overlay {series['overlay_digest'][:12]}" in out
    help_out = subprocess.run([tts, "--help"], capture_output=True, text=True)
    assert help_out.returncode == 0 and "--version" in help_out.stdout
    info = json.loads((stage / "share" / "q3build" / "build-info.json").read_text())
    assert info["plan"]["upstream"]["commit"] == "0c1e57098bba43ac29e6e3b677cdceebdd22334f"
    assert info["plan"]["cmake"]["cache"]["LLAMA_USE_PREBUILT_UI"] == "OFF"
    # a second make is incremental: no reconfigure, nothing recompiled
    capsys.readouterr()
    assert q3("make", "--target", "host", "--json") == 0
    again = json.loads(capsys.readouterr().out)
    assert again["configured"] is False
    assert again["ccache"].get("misses", 0) == 0 and again["ccache"].get("hits", 0) == 0
    assert [a["sha256"] for a in again["artifacts"]] == [a["sha256"] for a in s["artifacts"]]
