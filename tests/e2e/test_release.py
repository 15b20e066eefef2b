"""validate, package and verify on the real pinned tree's host build.

validate starts the staged llama-server with a tiny converted CustomVoice checkpoint and must be
green; the same checks against a llama-server started without --mmproj (its speech routes answer
501) must fail and name the checks. package twice gives the same bytes, verify passes, and a
flipped byte fails it."""

from __future__ import annotations

import hashlib
import json
from pathlib import Path

import pytest
import requests

from q3build import cli
from q3build.speech import validate
from q3build.speech.server import Server, free_port

from ..conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(host_work):
    return host_work


@pytest.fixture
def q3(work, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(work))

    def call(*args):
        capsys.readouterr()
        rc = cli.main(["--project", str(REPO), *args])
        out = capsys.readouterr()
        call.err = out.err
        return rc, out.out
    return call


@pytest.fixture(scope="module")
def validated(work):
    """validate --target host once for the module (it also makes the tiny model)."""
    mp = pytest.MonkeyPatch()
    mp.setenv("Q3BUILD_WORK_DIR", str(work))
    try:
        rc = cli.main(["--project", str(REPO), "validate", "--target", "host"])
    finally:
        mp.undo()
    return rc, json.loads((work / "validate" / "host" / "validation.json").read_text())


def test_validate_host_is_green(validated, work):
    rc, record = validated
    assert rc == 0, record
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert all(status[n] == "ok" for n, _ in validate.CHECKS), status
    assert status["upstream-server-tests"] == "skipped"
    assert record["ok"] is True and record["emulator"] is None


def test_validate_fails_for_a_server_without_mmproj(q3, work, validated):
    [model] = (work / "validate" / "model").glob("custom_voice-*/gguf")
    port = free_port()
    log = work / "no-mmproj.log"
    with Server([str(work / "stage" / "host" / "bin" / "llama-server"), "-m", str(model / "talker.gguf"),
                          "--host", "127.0.0.1", "--port", str(port)], {}, log, port) as server:
        assert server.wait_healthy(60) is None, server.tail()
        rc, _ = q3("validate", "--url", server.base, "--out", str(work / "broken.json"))
    assert rc == 6
    record = json.loads((work / "broken.json").read_text())
    failed = {c["name"] for c in record["checks"] if c["status"] == "failed"}
    assert {"voices", "speech-wav", "determinism", "speech-stream"} <= failed
    assert "speech-wav: wav: HTTP 501" in q3.err
    # stopped
    with pytest.raises(requests.ConnectionError):
        requests.get(f"{server.base}/health", timeout=2)


def test_package_is_reproducible_and_verifies(q3, work, tmp_path):
    sums = []
    for d in ("a", "b"):
        rc, out = q3("package", "--target", "host", "--out", str(tmp_path / d), "--json")
        assert rc == 0, q3.err
        res = json.loads(out)
        sums.append(hashlib.sha256(Path(res["archive"]).read_bytes()).hexdigest())
    assert sums[0] == sums[1] == res["sha256"]
    rc, out = q3("verify", res["archive"], "--json")
    assert rc == 0, q3.err
    checks = {c["name"]: c["status"] for c in json.loads(out)["checks"]}
    assert checks == {name: "ok" for name in ("archive", "sha256sums", "manifest", "sbom", "licenses", "smoke")}
    data = bytearray(Path(res["archive"]).read_bytes())
    data[len(data) // 3] ^= 0x40
    bad = tmp_path / "flipped.tar.gz"
    bad.write_bytes(bytes(data))
    rc, _ = q3("verify", str(bad))
    assert rc == 6 and "archive failed" in q3.err
