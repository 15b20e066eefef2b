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
    assert info.external_attr >> 16 & 0o111      # executable in the wheel
    venv = tmp_path / "venv"
    subprocess.run([sys.executable, "-m", "venv", venv], check=True)
    subprocess.run([venv / "bin" / "python", "-m", "pip", "install", "-q", "--no-index", whl], check=True)
    env = dict(os.environ, PATH=f"{venv / 'bin'}{os.pathsep}{os.environ['PATH']}")
    out = subprocess.run(["llama-server", "--version"], env=env, capture_output=True, text=True, check=True).stdout
    assert out.startswith("version: fake (build 4242") and "series " in out
