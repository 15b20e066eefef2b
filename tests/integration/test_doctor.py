"""doctor: names what is missing and the package that provides it."""

from __future__ import annotations

import json
import os
import shutil


def test_doctor_names_missing_tools_and_packages(proj, tmp_path, monkeypatch, capsys):
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    for tool in ("git", "cc", "c++", "make"):  # no cmake, ninja or ccache
        os.symlink(shutil.which(tool), bin_dir / tool)
    monkeypatch.setenv("PATH", str(bin_dir))
    capsys.readouterr()
    assert proj.q3("doctor", "--target", "host", "--json") == 5
    report = json.loads(capsys.readouterr().out)
    by_tool = {r["tool"]: r for r in report["tools"]}
    assert report["ok"] is False
    assert by_tool["cmake"]["found"] is None and by_tool["cmake"]["apt"] == "cmake"
    assert by_tool["ccache"]["found"] is None and by_tool["ccache"]["required"] is False
    assert by_tool["git"]["found"] == str(bin_dir / "git")
    assert proj.q3("doctor", "--target", "host") == 5
    assert "install with: apt-get install cmake" in capsys.readouterr().err


def test_doctor_ok_when_everything_is_there(proj, capsys):
    assert proj.q3("doctor", "--target", "host", "--json") == 0
    assert json.loads(capsys.readouterr().out)["ok"] is True


def test_doctor_lists_the_optional_libraries_without_failing(proj, tmp_path, monkeypatch, capsys):
    """The speech service's encoders (recipes/host.yaml `libraries:`): found or not, never required."""
    from q3build.toolchains import libraries

    from ..conftest import REPO
    shutil.copy(REPO / "recipes" / "host.yaml", proj.root / "recipes" / "host.yaml")
    root = tmp_path / "machine"
    for f in ("usr/include/lame/lame.h", "usr/lib/libmp3lame.a", "usr/include/opus/opus.h", "usr/lib/libopus.a"):
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    real = libraries.search_dirs
    monkeypatch.setattr(libraries, "search_dirs", lambda target, r=None: real(target, str(root)))
    capsys.readouterr()
    assert proj.q3("doctor", "--target", "host", "--json") == 0
    rows = {r["tool"].split(" ")[0]: r for r in json.loads(capsys.readouterr().out)["tools"]}
    assert rows["mp3"]["found"] == str(root / "usr/include/lame/lame.h") and rows["mp3"]["required"] is False
    assert rows["opus"]["found"] is None and rows["opus"]["apt"] == "libopus-dev libogg-dev"
    assert "Q3_SPEECH_OPUS=OFF (left out: ogg/ogg.h, libogg.a not in root" in rows["opus"]["purpose"]
    assert proj.q3("doctor", "--target", "host") == 0
    shown = capsys.readouterr()
    out = shown.out + shown.err
    assert "optional" in out and "libopus-dev" in out
