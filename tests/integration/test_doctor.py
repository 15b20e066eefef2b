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
