"""package --wheel: a scikit-build-core wheel of the staged build; pip install puts llama-server on
PATH. Slow: pip builds in an isolated environment (scikit-build-core from the index) and a venv
is created to install into."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import zipfile

import pytest

from .test_package_verify import CODECS, built_codecs  # noqa: F401 (a fixture)

pytestmark = pytest.mark.slow


def test_pip_install_puts_llama_server_on_path(proj, capsys, tmp_path):
    (proj.root / "patches" / "overlay" / "LICENSE").write_text("MIT License (fake upstream)\n")
    assert proj.q3("make", "--target", "host") == 0
    capsys.readouterr()
    assert proj.q3("package", "--target", "host", "--out", str(tmp_path / "dist"), "--wheel", "--json") == 0
    res = json.loads(capsys.readouterr().out)
    whl = res["wheel"]["path"]
    assert whl.endswith("-py3-none-linux_" + os.uname().machine + ".whl")
    with zipfile.ZipFile(whl) as z:
        names = z.namelist()
        info = z.getinfo(next(n for n in names if n.endswith("/scripts/llama-server")))
    assert any(n.endswith(".dist-info/licenses/LICENSE") for n in names)
    # no codecs in this build: llama.cpp's licence only
    assert not any(".dist-info/licenses/LICENSE-" in n for n in names)
    assert info.external_attr >> 16 & 0o111      # executable in the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", whl], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(["llama-server", "--version"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("version: fake (build 4242") and "series " in out


def test_a_wheel_with_the_codecs_carries_their_licences(built_codecs, capsys, tmp_path):
    assert built_codecs.q3("package", "--target", "host", "--out", str(tmp_path / "dist"), "--wheel", "--json") == 0
    whl = json.loads(capsys.readouterr().out)["wheel"]["path"]
    with zipfile.ZipFile(whl) as z:
        lic = {n.rsplit("/", 1)[1]: z.read(n) for n in z.namelist() if ".dist-info/licenses/" in n}
        meta = z.read(next(n for n in z.namelist() if n.endswith(".dist-info/METADATA"))).decode()
    assert lic["LICENSE-LAME-copyright"] == CODECS["mp3lame"][3]
    assert lic["LICENSE-libopus-copyright"] == CODECS["opus"][3] and lic["LICENSE-libogg-copyright"] == CODECS["ogg"][3]
    assert "MIT AND LGPL-2.0-or-later AND BSD-3-Clause" in meta
