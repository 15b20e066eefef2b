"""Serving what OpenAI clients ask for (issue 17), end to end on the built llama-server with the tiny
converted models: mp3 and Ogg Opus responses through the unchanged `openai` client, decoded by
libsndfile (soundfile) to the length of the wav; --tts-voice-alias; the speech metrics on /metrics
and the speech slots on /slots, scraped; router mode (no -m) serving speech for two models; and a
build without the encoder libraries answering those formats with a 400 that names them.

Lengths, precisely (tests/integration/test_speech_codecs.py checks the encoders alone): a whole mp3
(LAME Info tag) and any Ogg Opus (pre-skip, end trimming) decode to exactly the samples of the wav; a
streamed mp3 has no tag, so it decodes to whole 576-sample frames, 1105 samples of codec delay plus
1..1152 samples of padding longer than the audio. Servers bind 127.0.0.1 and are always stopped."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import subprocess
import threading
import time

import openai
import pytest
import requests
import soundfile as sf

from q3build import cli
from q3build.speech import argv as speech_argv
from q3build.speech.server import Server, free_port

from ..conftest import REPO
from .conftest import speech_server

pytestmark = pytest.mark.slow

FRAMES = 12
SR = 24000
MP3_FRAME, MP3_DELAY = 576, 576 + 529
TEXT = "Hello there. How are you today?"


@pytest.fixture(scope="module")
def server(built):
    with speech_server(built, "serve-cv", "custom_voice", "--tts-slots", "2", "--metrics",
                       "--tts-voice-alias", "alloy=vivian", "--tts-voice-alias", "Echo=vivian") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def speech(client, fmt, **kw):
    extra = {"seed": 7, "max_frames": FRAMES, **kw.pop("extra_body", {})}
    args = {"model": "qwen3-tts", "voice": "vivian", "input": TEXT, "response_format": fmt, **kw}
    return client.audio.speech.with_raw_response.create(**args, extra_body=extra)


def decode(data: bytes):
    pcm, rate = sf.read(io.BytesIO(data), dtype="float32")
    return pcm, rate


def streamed(client, fmt, stream_format="audio", **extra):
    chunks = []
    with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice="vivian", input=TEXT, response_format=fmt, stream_format=stream_format,
            extra_body={"seed": 7, "max_frames": FRAMES, **extra}) as resp:
        ctype = resp.headers["content-type"]
        if stream_format == "sse":
            for line in resp.iter_lines():
                if line.startswith("data: "):
                    chunks.append(json.loads(line[len("data: "):]))
        else:
            chunks = list(resp.iter_bytes())
    return ctype, chunks


# --- formats ----------------------------------------------------------------------------------------

def test_the_voices_listing_says_which_formats_this_build_serves(server):
    body = requests.get(f"{server.base}/v1/audio/voices", timeout=10).json()
    assert body["response_formats"] == ["wav", "pcm", "flac", "mp3", "opus"]
    assert body["stream_formats"] == ["wav", "pcm", "mp3", "opus"]
    assert any(e.startswith("LAME ") for e in body["encoders"]) and any("opus" in e for e in body["encoders"])


def test_mp3_and_opus_decode_to_the_length_of_the_wav(client):
    wav = speech(client, "wav")
    ref, rate = decode(wav.content)
    assert rate == SR and len(ref) > 0
    for fmt, ctype in (("mp3", "audio/mpeg"), ("opus", "audio/ogg")):
        res = speech(client, fmt)
        assert res.headers["content-type"] == ctype
        pcm, rate = decode(res.content)
        # gapless: the Info tag (mp3), pre-skip and end trimming (Ogg Opus)
        assert (rate, len(pcm)) == (SR, len(ref)), fmt
        assert res.headers["x-audio-seconds"] == wav.headers["x-audio-seconds"]
    assert speech(client, "opus").content == speech(client, "opus").content   # a seed gives the same bytes


def test_streamed_opus_and_mp3_decode_to_the_streamed_audio(client):
    _, pcm_chunks = streamed(client, "pcm")
    n = len(b"".join(pcm_chunks)) // 2
    ctype, chunks = streamed(client, "opus")
    assert ctype == "audio/ogg" and len(chunks) >= 2, "the whole body came at once"
    pcm, rate = decode(b"".join(chunks))
    assert (rate, len(pcm)) == (SR, n)
    ctype, chunks = streamed(client, "mp3")
    assert ctype == "audio/mpeg" and len(chunks) >= 2
    pcm, rate = decode(b"".join(chunks))
    extra = len(pcm) - n
    assert rate == SR and len(pcm) % MP3_FRAME == 0 and MP3_DELAY < extra <= MP3_DELAY + 2 * MP3_FRAME, extra


def test_sse_carries_the_encoded_bytes(client):
    _, events = streamed(client, "opus", stream_format="sse")
    assert events[-1]["type"] == "speech.audio.done"
    data = b"".join(base64.b64decode(e["audio"]) for e in events if e["type"] == "speech.audio.delta")
    assert data.startswith(b"OggS")
    pcm, _ = decode(data)
    assert len(pcm) == round(events[-1]["audio_seconds"] * SR)


def test_flac_still_refuses_to_stream_naming_what_does(server):
    r = requests.post(f"{server.base}/v1/audio/speech", timeout=30,
                      json={"input": "x", "response_format": "flac", "stream_format": "audio"})
    err = r.json()["error"]
    assert r.status_code == 400 and err["code"] == "unsupported_stream_format"
    assert "wav, pcm, mp3 or opus" in err["message"]


# --- voice aliases -----------------------------------------------------------------------------------

def test_an_alias_speaks_with_its_voice(client, server):
    solo = speech(client, "wav").content
    assert speech(client, "wav", voice="alloy").content == solo
    assert speech(client, "wav", voice="ECHO").content == solo     # names compare case-insensitively
    with pytest.raises(openai.BadRequestError) as e:
        speech(client, "wav", voice="nova")
    assert e.value.body["code"] == "voice_not_found" and "alloy" in e.value.body["message"]
    body = requests.get(f"{server.base}/v1/audio/voices", timeout=10).json()
    assert body["aliases"] == {"alloy": "vivian", "echo": "vivian"}


def test_an_alias_to_an_unknown_voice_stops_the_server_with_one_line(built):
    port = free_port()
    argv = speech_argv.llama_server(built / "work" / "stage" / "host" / "bin" / "llama-server", built / "custom_voice",
                                    port=port, threads=2, extra=["--tts-voice-alias", "alloy=nobody"])
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=120, env=os.environ)
    assert proc.returncode != 0
    lines = [ln for ln in (proc.stdout + proc.stderr).splitlines() if "--tts-voice-alias alloy=nobody" in ln]
    assert len(lines) == 1, lines
    assert "'nobody' is not a voice of this server (it has: " in lines[0] and "vivian" in lines[0]


def test_a_malformed_alias_is_refused_by_the_argument_parser(built):
    binary = built / "work" / "stage" / "host" / "bin" / "llama-server"
    proc = subprocess.run([str(binary), "--tts-voice-alias", "alloy"], capture_output=True, text=True, timeout=60)
    assert proc.returncode != 0 and "--tts-voice-alias expects NAME=VOICE, got 'alloy'" in proc.stderr + proc.stdout


# --- operations --------------------------------------------------------------------------------------

def metrics(server) -> dict[str, float]:
    r = requests.get(f"{server.base}/metrics", timeout=10)
    assert r.status_code == 200 and r.headers["content-type"].startswith("text/plain")
    out = {}
    for line in r.text.splitlines():
        m = re.fullmatch(r"llamacpp:(\w+) (\S+)", line)
        if m:
            out[m[1]] = float(m[2])
    helps = re.findall(r"^# TYPE llamacpp:(speech_\w+) (counter|gauge)$", r.text, re.M)
    # a histogram: one HELP and TYPE for its buckets, _sum and _count; the buckets cumulative, +Inf = _count
    hists = re.findall(r"^# TYPE llamacpp:(speech_\w+) histogram$", r.text, re.M)
    for h in hists:
        buckets = [float(v) for v in re.findall(rf'^llamacpp:{h}_bucket{{le="[^"]+"}} (\S+)$', r.text, re.M)]
        assert buckets and buckets == sorted(buckets) and buckets[-1] == out[f"{h}_count"]
        assert re.search(rf'^llamacpp:{h}_bucket{{le="\+Inf"}} ', r.text, re.M)
    parts = {f"{h}_{p}" for h in hists for p in ("sum", "count")}
    assert len(helps) == sum(1 for k in out if k.startswith("speech_") and k not in parts)   # every sample has HELP and TYPE
    return out


def test_metrics_count_speech_in_llama_servers_style(server, client):
    before = metrics(server)
    assert "prompt_tokens_total" in before                  # upstream's own metrics are still there
    assert before["speech_slots"] == 2 and before["speech_requests_deferred"] == 0
    for _ in range(2):
        speech(client, "wav")
    streamed(client, "pcm")
    after = metrics(server)
    assert after["speech_requests_total"] - before["speech_requests_total"] == 3
    assert after["speech_frames_total"] - before["speech_frames_total"] >= 3
    assert after["speech_ttfa_requests_total"] - before["speech_ttfa_requests_total"] == 3
    assert after["speech_audio_seconds_total"] > before["speech_audio_seconds_total"]
    assert after["speech_real_time_factor"] > 0 and after["speech_ttfa_seconds"] > 0
    # a stream's slot is released just after its last bytes reach the client
    deadline = time.monotonic() + 10
    while after["speech_requests_processing"] != 0 and time.monotonic() < deadline:
        time.sleep(0.05)
        after = metrics(server)
    assert after["speech_requests_processing"] == 0
    # one request at a time: every frame from a talker decode of its own
    frames = after["speech_frames_total"] - before["speech_frames_total"]
    assert after["speech_batch_size_count"] - before["speech_batch_size_count"] == frames
    assert after["speech_batched_frames_total"] == before["speech_batched_frames_total"]
    # the window gauges cover the requests since the previous scrape
    again = metrics(server)
    assert again["speech_real_time_factor"] == 0 and again["speech_ttfa_seconds"] == 0


def test_slots_list_the_speech_slots_and_what_they_do(server):
    idle = requests.get(f"{server.base}/slots", timeout=10).json()
    speech_slots = [s for s in idle if s.get("type") == "speech"]
    assert [s["speech_slot"] for s in speech_slots] == [0, 1]
    assert len({s["id"] for s in idle}) == len(idle)         # ids stay unique next to the chat slots
    assert not any(s["is_processing"] for s in speech_slots)
    # a tiny model can finish a request between two client calls, so /slots and /metrics are polled
    # for as long as the request runs (a poll that never sees it working fails the test)
    seen, processing, done = [], [], threading.Event()

    def poll():
        while not done.is_set():
            busy = [s for s in requests.get(f"{server.base}/slots", timeout=10).json() if s.get("type") == "speech"]
            if any(s["is_processing"] for s in busy):
                seen.append(busy)
            processing.append(metrics(server)["speech_requests_processing"])

    poller = threading.Thread(target=poll)
    poller.start()
    try:
        r = requests.post(f"{server.base}/v1/audio/speech", timeout=60,
                          json={"input": " ".join([TEXT] * 4), "voice": "vivian", "max_frames": 400,
                                "stream_format": "audio", "response_format": "pcm"})
        assert r.status_code == 200 and r.content
    finally:
        done.set()
        poller.join()
    assert seen, "no /slots poll saw the request on a speech slot"
    assert all(sum(s["is_processing"] for s in busy) == 1 for busy in seen)
    assert any(s["n_frames"] >= 1 and s["t_request_ms"] >= 0 for busy in seen for s in busy if s["is_processing"])
    assert 1 in processing and max(processing) == 1


def test_without_metrics_the_endpoint_stays_off(built):
    with speech_server(built, "serve-nometrics", "custom_voice") as s:
        r = requests.get(f"{s.base}/metrics", timeout=10)
        assert r.status_code == 501 and "speech_" not in r.text


# --- router mode -------------------------------------------------------------------------------------

def test_router_mode_serves_speech_for_two_models(built, tmp_path):
    models = tmp_path / "models"
    for name in ("custom_voice", "voice_design"):
        (models / name).mkdir(parents=True)
        for f in ("talker.gguf", "mmproj.gguf"):
            (models / name / f).symlink_to(built / name / f)
    port = free_port()
    argv = speech_argv.llama_server(built / "work" / "stage" / "host" / "bin" / "llama-server", None, port=port,
                                    threads=2, extra=["--models-dir", str(models), "--tts-max-frames", str(FRAMES)])
    with Server(argv, os.environ, tmp_path / "router.log", port) as router:
        why = router.wait_healthy(60)
        assert why is None, why
        client = openai.OpenAI(base_url=f"{router.base}/v1", api_key="unused", max_retries=0, timeout=300)
        a = client.audio.speech.with_raw_response.create(model="custom_voice", voice="vivian", input=TEXT,
                                                         response_format="wav", extra_body={"seed": 1})
        b = client.audio.speech.with_raw_response.create(
            model="voice_design", voice="default", input=TEXT, response_format="wav",
            extra_body={"seed": 1, "instructions": "A calm voice."})
        assert decode(a.content)[1] == decode(b.content)[1] == SR
        assert "custom_voice" in a.headers["x-speech-backend"] and "voice_design" in b.headers["x-speech-backend"]
        voices = requests.get(f"{router.base}/v1/audio/voices", params={"model": "custom_voice"}, timeout=60).json()
        assert "vivian" in {v["id"] for v in voices["voices"]}
        r = requests.post(f"{router.base}/v1/audio/speech", json={"input": "x"}, timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = requests.get(f"{router.base}/v1/audio/voices", timeout=30)
        assert r.status_code == 400 and r.json()["error"]["param"] == "model"
        r = requests.post(f"{router.base}/v1/audio/speech", json={"input": "x", "model": "nope"}, timeout=30)
        assert 400 <= r.status_code < 500


# --- a build without the encoder libraries -----------------------------------------------------------

def test_a_build_without_the_libraries_refuses_mp3_and_opus_by_name(built, tmp_path, monkeypatch):
    """Built with the switches off (as a cross target whose sysroot lacks the libraries): the formats
    are absent from the listing and a request for one is a 400 naming it and what the build lacks.
    ccache has every object but the speech service's (another build dir, the same sources)."""
    work = tmp_path / "work"
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(work))
    assert cli.main(["--project", str(REPO), "make", "--target", "host", "-D", "Q3_SPEECH_MP3=OFF",
                     "-D", "Q3_SPEECH_OPUS=OFF"]) == 0
    monkeypatch.delenv("Q3BUILD_WORK_DIR")
    port = free_port()
    argv = speech_argv.llama_server(work / "stage" / "host" / "bin" / "llama-server", built / "custom_voice",
                                    port=port, threads=2)
    with Server(argv, os.environ, tmp_path / "bare.log", port) as s:
        assert s.wait_healthy(60) is None
        body = requests.get(f"{s.base}/v1/audio/voices", timeout=10).json()
        assert body["response_formats"] == ["wav", "pcm", "flac"] and body["encoders"] == []
        for fmt, lacks in (("mp3", "LAME"), ("opus", "libopus")):
            r = requests.post(f"{s.base}/v1/audio/speech", timeout=30,
                              json={"input": "x", "voice": "vivian", "response_format": fmt})
            err = r.json()["error"]
            assert r.status_code == 400 and err["code"] == "unsupported_response_format"
            assert f"response_format '{fmt}' is not available" in err["message"] and lacks in err["message"]
            assert err["param"] == "response_format"
