"""validate against a stand-in speech server that follows llama-server's contract: a healthy one
passes, each deliberately broken one fails with the failing check named. The server-starting path
runs the stand-in as the staged llama-server of the synthetic project."""

from __future__ import annotations

import json
import socket
import sys
import textwrap
from pathlib import Path

import pytest
import requests

from . import fake_speech_server

FAKE = Path(fake_speech_server.__file__)


@pytest.fixture
def fake():
    servers = []

    def start(**kw):
        srv, url = fake_speech_server.start_in_thread(**kw)
        servers.append(srv)
        return url
    yield start
    for srv in servers:
        srv.shutdown()
        srv.server_close()


def validate_url(proj, capsys, url, *extra):
    capsys.readouterr()
    out = proj.root / "v.json"
    rc = proj.q3("validate", "--url", url, "--out", str(out), *extra)
    return rc, json.loads(out.read_text()), capsys.readouterr().err


def test_a_healthy_server_passes(proj, capsys, fake):
    rc, record, err = validate_url(proj, capsys, fake())
    assert rc == 0, err
    status = {c["name"]: c["status"] for c in record["checks"]}
    assert status == {"health": "ok", "voices": "ok", "speech-wav": "ok", "determinism": "ok", "speech-pcm": "ok",
                      "speech-flac": "ok", "speech-mp3-opus": "ok", "speech-stream": "ok", "bad-request": "ok",
                      "parity": "skipped", "upstream-server-tests": "skipped"}
    assert record["ok"] is True
    skipped = {c["name"]: c["detail"] for c in record["checks"] if c["status"] == "skipped"}
    assert "Hugging Face" in skipped["upstream-server-tests"]
    wav = next(c for c in record["checks"] if c["name"] == "speech-wav")
    assert wav["detail"].startswith("0.960 s")   # the stand-in makes 12 frames of 80 ms for this text


@pytest.mark.parametrize("broken,check,words", [
    ("silence", "speech-wav", "silent"),
    ("rate", "speech-wav", "16000 Hz"),
    ("random", "determinism", "different audio"),
    ("stream", "speech-stream", "expected speech.audio.done"),
])
def test_a_broken_server_fails_naming_the_check(proj, capsys, fake, broken, check, words):
    rc, record, err = validate_url(proj, capsys, fake(broken=broken))
    assert rc == 6
    failed = {c["name"]: c["detail"] for c in record["checks"] if c["status"] == "failed"}
    assert check in failed and words in failed[check]
    assert record["ok"] is False
    assert f"{check}: " in err and words in err


def test_a_server_that_ignores_max_frames_fails_the_duration_bound(proj, capsys, fake):
    rc, record, err = validate_url(proj, capsys, fake(broken="uncapped"))
    assert rc == 6
    failed = {c["name"]: c["detail"] for c in record["checks"] if c["status"] == "failed"}
    assert "duration 3.200 s outside 0.080–1.530 s (max_frames 16)" in failed["speech-wav"]


def test_a_server_without_a_speech_model_fails(proj, capsys, fake):
    rc, record, err = validate_url(proj, capsys, fake(has_model=False))
    assert rc == 6
    failed = {c["name"] for c in record["checks"] if c["status"] == "failed"}
    assert {"voices", "speech-wav", "speech-stream"} <= failed
    assert "HTTP 501" in err


def test_nothing_listening_is_a_failed_health_check(proj, capsys):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    rc, record, err = validate_url(proj, capsys, f"http://127.0.0.1:{port}", "--timeout", "2")
    assert rc == 6
    assert record["checks"][0]["name"] == "health" and record["checks"][0]["status"] == "failed"
    assert all(c["status"] == "skipped" for c in record["checks"][1:])


def install_fake(proj, *extra: str):
    server = proj.work / "stage" / "host" / "bin" / "llama-server"
    server.write_text(textwrap.dedent(f"""\
        #!/bin/sh
        exec {sys.executable} {FAKE} "$@" {' '.join(extra)}
        """))
    server.chmod(0o755)


def model_dir(tmp_path):
    d = tmp_path / "model"
    d.mkdir()
    (d / "talker.gguf").write_bytes(b"GGUF")
    (d / "mmproj.gguf").write_bytes(b"GGUF")
    return d


def test_validate_starts_and_stops_the_staged_server(proj, capsys, tmp_path):
    (proj.root / "patches" / "overlay" / "LICENSE").write_text("MIT License (fake upstream)\n")
    assert proj.q3("make", "--target", "host") == 0
    install_fake(proj)
    capsys.readouterr()
    assert proj.q3("validate", "--target", "host", "--model", str(model_dir(tmp_path)), "--json") == 0
    record = json.loads(capsys.readouterr().out)
    assert record["ok"] is True and record["target"] == "host" and record["emulator"] is None
    argv = record["server_argv"]
    assert argv[argv.index("--host") + 1] == "127.0.0.1" and "--mmproj" in argv
    assert argv[argv.index("--tts-max-frames") + 1] == "16"
    saved = json.loads((proj.work / "validate" / "host" / "validation.json").read_text())
    assert saved["cache_key"] == record["cache_key"] and saved["checks"] == record["checks"]
    # the server was stopped
    port = int(argv[argv.index("--port") + 1])
    with pytest.raises(requests.ConnectionError):
        requests.get(f"http://127.0.0.1:{port}/health", timeout=2)
    # package carries the validation results
    assert proj.q3("package", "--target", "host", "--out", str(tmp_path / "dist"), "--json") == 0
    assert json.loads(capsys.readouterr().out)["validated"] is True


def test_a_staged_server_that_cannot_start_is_named(proj, capsys, tmp_path):
    assert proj.q3("make", "--target", "host") == 0
    install_fake(proj, "--host", "0.0.0.0")      # the stand-in refuses to bind anything but 127.0.0.1
    capsys.readouterr()
    assert proj.q3("validate", "--target", "host", "--model", str(model_dir(tmp_path))) == 6
    err = capsys.readouterr().err
    assert "health: llama-server exited with code 2 before it was healthy" in err
    assert "refusing to bind 0.0.0.0" in err


def test_a_model_dir_without_the_mmproj_is_a_clear_error(proj, capsys, tmp_path):
    assert proj.q3("make", "--target", "host") == 0
    d = model_dir(tmp_path)
    (d / "mmproj.gguf").unlink()
    capsys.readouterr()
    assert proj.q3("validate", "--target", "host", "--model", str(d)) == 2
    assert f"--model {d}: no mmproj.gguf in it" in capsys.readouterr().err
