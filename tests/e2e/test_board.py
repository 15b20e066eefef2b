"""The board runner for real: the host build packaged, copied to a "board" (this machine, through a real
sshd on 127.0.0.1 with keys made here), unpacked in a scratch dir, served by its launcher and checked
there; validate's results and bench's own figures come back, the scratch dir and the server are gone.
"""

from __future__ import annotations

import json
import os
import platform
from pathlib import Path

import pytest

from q3build import cli
from q3build.release import board as board_mod

from ..conftest import REPO
from ..sshd import server  # noqa: F401  (fixture)

pytestmark = pytest.mark.slow



@pytest.fixture
def q3(host_work, server, monkeypatch, capsys):
    cfg = server.client_config("ssh_config", server.dir / "client_ed25519")
    monkeypatch.setenv("Q3BUILD_SSH_OPTIONS", f"-F {cfg}")
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(host_work))

    def call(*args):
        capsys.readouterr()
        rc = cli.main(["--project", str(REPO), *args])
        out = capsys.readouterr()
        call.err = out.err
        return rc, json.loads(out.out) if "--json" in args else None
    return call


def _processes_mentioning(text: str) -> list[str]:
    found = []
    for cmdline in Path("/proc").glob("[0-9]*/cmdline"):
        try:
            if text.encode() in cmdline.read_bytes():
                found.append(cmdline.parent.name)
        except OSError:
            continue
    return found


def test_validate_on_the_board(q3, server, host_work):
    before = set(Path("/tmp").glob(f"{board_mod.SCRATCH_PREFIX}*"))
    rc, record = q3("validate", "--target", "host", "--board", server.url(), "--no-parity", "--json")
    assert rc == 0, q3.err
    assert record["ok"] is True
    assert record["board"]["address"] == server.url() and record["board"]["machine"] == platform.machine()
    assert record["board"]["archive"].endswith("-host.tar.gz")
    assert "series" in record["version"]
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert status["health"] == status["speech-wav"] == status["determinism"] == status["speech-stream"] == "ok"
    assert status["parity"] == "skipped"
    out = host_work / "validate" / "host" / "board" / f"127.0.0.1-{server.port}"
    assert json.loads((out / "validation.json").read_text()) == record
    # the server's output came back through ssh
    assert "listening on http://127.0.0.1:" in (out / "server.log").read_text()
    # scratch dir removed, server stopped
    assert set(Path("/tmp").glob(f"{board_mod.SCRATCH_PREFIX}*")) == before
    assert _processes_mentioning(board_mod.SCRATCH_PREFIX) == []


def test_bench_on_the_board_reports_our_own_figures(q3, server, host_work, tmp_path):
    assert q3("model", "tiny", "--variant", "custom_voice", "--out", str(tmp_path / "hf"))[0] == 0
    rc, doc = q3("bench", "--target", "host", "--board", server.url(), "--model", str(tmp_path / "hf"),
                 "--quant", "f32", "--threads", "1", "--frames", "8", "--json")
    assert rc == 0, q3.err
    assert doc["board"]["machine"] == platform.machine() and doc["board"]["cpus"] == os.cpu_count()
    [c] = doc["configs"]
    s = c["server"]
    assert "error" not in s, s
    assert s["ttfa_ms"] > 0 and s["ttfa_warm_ms"] > 0 and s["peak_rss_mib"] > 1
    syn = s["synthesis"]
    assert syn["frames"] > 0 and syn["rtf"] > 0
    assert syn["stages"]["talker_ms_per_step"] > 0 and syn["stages"]["decode_ms_per_frame"] > 0
    assert "reference" not in c and "our own figures only" in doc["notes"][-1]
    assert _processes_mentioning(board_mod.SCRATCH_PREFIX) == []
