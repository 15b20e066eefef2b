"""The speech service of the built llama-server, end to end: tiny converted Qwen3-TTS checkpoints
(CustomVoice with built-in speakers; Base with a cloned voice), the official `openai` client
unchanged, raw HTTP for the malformed requests, concurrency, cancellation and memory over 100
requests. The server binds 127.0.0.1 and is always stopped."""

from __future__ import annotations

import base64
import io
import json
import os
import re
import shutil
import subprocess
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import openai
import pytest
import requests
import soundfile as sf

from q3build import cli
from q3build.speech import argv as speech_argv
from q3build.speech.bench.runs import host_cpu

from ..conftest import REPO
from .conftest import FREED_MEMORY_POISONED, speech_server

pytestmark = pytest.mark.slow

FRAMES = 12  # per segment, sent with every request: random weights rarely emit end-of-speech


def q3(*args):
    return cli.main(["--project", str(REPO), *args])


@pytest.fixture(scope="module")
def server(built):
    with speech_server(built, "custom_voice", "custom_voice", "--tts-slots", "2", "--tts-queue", "16") as s:
        yield s


@pytest.fixture(scope="module")
def client(server):
    return openai.OpenAI(base_url=f"{server.base}/v1", api_key="unused", max_retries=0, timeout=120)


def speech(client, **kw):
    args = {"model": "qwen3-tts", "voice": "vivian", "input": "Hello there. How are you today?"}
    args.update(kw)
    extra = args.pop("extra_body", {})
    extra.setdefault("seed", 7)
    extra.setdefault("max_frames", FRAMES)
    return client.audio.speech.with_raw_response.create(**args, extra_body=extra)


def wav_samples(data: bytes):
    pcm, rate = sf.read(io.BytesIO(data), dtype="int16")
    return pcm, rate


# --- the openai client, every format -------------------------------------------------------------

def test_wav_is_24khz_mono_riff(client):
    raw = speech(client, response_format="wav")
    data = raw.content
    assert data[:4] == b"RIFF" and data[8:12] == b"WAVE"
    info = sf.info(io.BytesIO(data))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16")
    assert raw.headers["content-type"] == "audio/wav"
    assert "libmtmd" in raw.headers["x-speech-backend"]
    frames = int(raw.headers["x-speech-frames"])
    assert 1 <= frames <= FRAMES
    audio_s, wall_s = float(raw.headers["x-audio-seconds"]), float(raw.headers["x-wall-seconds"])
    assert audio_s == pytest.approx(info.frames / 24000, abs=1e-3)
    assert float(raw.headers["x-real-time-factor"]) == pytest.approx(wall_s / audio_s, rel=0.02)
    pcm, _ = wav_samples(data)
    assert np.abs(pcm).max() > 1000  # peak-normalised speech, not silence


def test_flac_decodes_to_the_same_samples_as_wav(client):
    wav, _ = wav_samples(speech(client, response_format="wav").content)
    flac = speech(client, response_format="flac")
    assert flac.headers["content-type"] == "audio/flac"
    pcm, rate = sf.read(io.BytesIO(flac.content), dtype="int16")
    assert rate == 24000
    np.testing.assert_array_equal(pcm, wav)  # lossless, same seed


def test_pcm_is_raw_s16le_of_the_same_length(client):
    wav, _ = wav_samples(speech(client, response_format="wav").content)
    pcm = speech(client, response_format="pcm").content
    assert len(pcm) == wav.size * 2
    np.testing.assert_array_equal(np.frombuffer(pcm, "<i2"), wav)


def test_same_seed_same_bytes_other_seed_other_bytes(client):
    a = speech(client, extra_body={"seed": 11}).content
    b = speech(client, extra_body={"seed": 11}).content
    c = speech(client, extra_body={"seed": 12}).content
    assert a == b
    assert a != c


def test_speed_stretches_time_not_pitch(client):
    normal, _ = wav_samples(speech(client, speed=1.0).content)
    fast = speech(client, speed=2.0)
    quick, _ = wav_samples(fast.content)
    assert "speed" in fast.headers["x-speech-postprocess"]
    assert quick.size == pytest.approx(normal.size / 2, rel=0.05)


def test_audio_stream_arrives_in_chunks(client):
    chunks = []
    with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice="vivian", input="Streaming, frame by frame.", response_format="pcm",
            stream_format="audio", extra_body={"seed": 7, "max_frames": FRAMES}) as resp:
        assert resp.headers["content-type"] == "audio/pcm"
        for chunk in resp.iter_bytes():
            chunks.append(chunk)
    body = b"".join(chunks)
    assert len(chunks) >= 2, "the whole body came at once"
    assert len(body) % 2 == 0 and len(body) > 2 * 1920  # more than one 80 ms frame of s16 audio


def test_wav_stream_has_a_header_and_decodes(client):
    with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice="vivian", input="A streamed wave file.", response_format="wav",
            stream_format="audio", extra_body={"seed": 7, "max_frames": FRAMES}) as resp:
        body = resp.read()
    assert body[:4] == b"RIFF"
    pcm, rate = sf.read(io.BytesIO(body), dtype="int16")  # open-ended sizes: libsndfile reads to the end
    assert rate == 24000 and pcm.size == (len(body) - 44) // 2


def test_sse_events_parse(client):
    events = []
    with client.audio.speech.with_streaming_response.create(
            model="qwen3-tts", voice="vivian", input="Server-sent events.", response_format="pcm",
            stream_format="sse", extra_body={"seed": 7, "max_frames": FRAMES}) as resp:
        assert resp.headers["content-type"].startswith("text/event-stream")
        for line in resp.iter_lines():
            if line.startswith("data: "):
                events.append(json.loads(line[len("data: "):]))
    deltas = [e for e in events if e["type"] == "speech.audio.delta"]
    assert len(deltas) >= 2
    assert events[-1]["type"] == "speech.audio.done"
    assert [e["type"] for e in events[:-1]] == ["speech.audio.delta"] * (len(events) - 1)
    pcm = b"".join(base64.b64decode(e["audio"]) for e in deltas)
    done = events[-1]
    assert done["usage"]["output_tokens"] >= 1
    assert done["audio_seconds"] == pytest.approx(len(pcm) / 2 / 24000, abs=1e-3)


def test_voices_lists_the_builtin_speakers(server):
    body = requests.get(f"{server.base}/v1/audio/voices", timeout=10).json()
    ids = {v["id"]: v for v in body["voices"]}
    assert "vivian" in ids and ids["vivian"]["type"] == "builtin" and ids["vivian"]["name"] == "vivian"
    assert body["cloning"] is False  # a CustomVoice mmproj has no speaker encoder
    assert "english" in body["languages"]


def test_voice_object_and_iso_language(client):
    raw = speech(client, voice={"id": "ryan"}, extra_body={"language": "en-US", "seed": 7})
    assert raw.http_response.status_code == 200


def test_long_mixed_text_is_segmented_not_truncated(client, server):
    text = ("今天我们发布了一个新的语音合成模型，它可以在普通的电脑上运行。It speaks English as well as Chinese, "
            "and switches between them in one paragraph. 我们用 llama.cpp 在 CPU 上运行它，速度很快；"
            "the server splits long input at sentence ends and joins the pieces with a short pause. "
            "最后，我们把结果保存为一个音频文件，然后播放出来。")
    raw = speech(client, input=text)
    segments = int(raw.headers["x-speech-segments"])
    assert segments >= 2
    pcm, _ = wav_samples(raw.content)
    # every segment was spoken: at least one frame each plus the pauses between them
    assert pcm.size >= segments * 1920 + (segments - 1) * 3600


# --- bad input -----------------------------------------------------------------------------------

def _post(server, body, content_type="application/json"):
    data = body if isinstance(body, (bytes, str)) else json.dumps(body)
    return requests.post(f"{server.base}/v1/audio/speech", data=data, headers={"Content-Type": content_type},
                         timeout=60)


GOOD = {"model": "qwen3-tts", "input": "Hello.", "voice": "vivian", "max_frames": 4}

BAD = [
    # (id, body, content type, status, error code, param)
    ("invalid-json", b"{not json", "application/json", 400, "invalid_json", None),
    ("array-body", [1, 2], "application/json", 400, "invalid_request_body", None),
    ("text-plain", json.dumps(GOOD), "text/plain", 415, "unsupported_media_type", None),
    ("form-urlencoded", "input=hi", "application/x-www-form-urlencoded", 415, "unsupported_media_type", None),
    ("missing-input", {**GOOD, "input": None}, None, 400, "missing_required_parameter", "input"),
    ("input-number", {**GOOD, "input": 42}, None, 400, "invalid_type", "input"),
    ("empty-input", {**GOOD, "input": ""}, None, 400, "empty_input", "input"),
    ("blank-input", {**GOOD, "input": " \n\t "}, None, 400, "empty_input", "input"),
    ("input-too-long", {**GOOD, "input": "a" * 4097}, None, 400, "string_above_max_length", "input"),
    ("unknown-voice", {**GOOD, "voice": "alloy"}, None, 400, "voice_not_found", "voice"),
    ("voice-traversal", {**GOOD, "voice": "../../etc/passwd"}, None, 400, "voice_not_found", "voice"),
    ("voice-absolute", {**GOOD, "voice": "/etc/passwd"}, None, 400, "voice_not_found", "voice"),
    ("voice-number", {**GOOD, "voice": 3}, None, 400, "invalid_type", "voice"),
    ("voice-object-no-id", {**GOOD, "voice": {"name": "vivian"}}, None, 400, "invalid_type", "voice"),
    # mp3 and opus are served (test_speech_serve.py); formats no build has stay a 400
    ("format-mp3-upper", {**GOOD, "response_format": "MP3"}, None, 400, "unsupported_response_format",
     "response_format"),
    ("format-vorbis", {**GOOD, "response_format": "vorbis"}, None, 400, "unsupported_response_format",
     "response_format"),
    ("format-aac", {**GOOD, "response_format": "aac"}, None, 400, "unsupported_response_format", "response_format"),
    ("format-unknown", {**GOOD, "response_format": "ogg"}, None, 400, "unsupported_response_format", "response_format"),
    ("speed-too-slow", {**GOOD, "speed": 0.1}, None, 400, "out_of_range", "speed"),
    ("speed-too-fast", {**GOOD, "speed": 4.5}, None, 400, "out_of_range", "speed"),
    ("speed-string", {**GOOD, "speed": "fast"}, None, 400, "invalid_type", "speed"),
    ("language-unknown", {**GOOD, "language": "klingon"}, None, 400, "unsupported_language", "language"),
    ("language-number", {**GOOD, "language": 7}, None, 400, "invalid_type", "language"),
    ("stream-format", {**GOOD, "stream_format": "video"}, None, 400, "invalid_value", "stream_format"),
    ("seed-negative", {**GOOD, "seed": -1}, None, 400, "out_of_range", "seed"),
    ("seed-float", {**GOOD, "seed": 1.5}, None, 400, "invalid_type", "seed"),
    ("temperature", {**GOOD, "temperature": -0.5}, None, 400, "out_of_range", "temperature"),
    ("top-p-zero", {**GOOD, "top_p": 0}, None, 400, "out_of_range", "top_p"),
    ("max-frames-zero", {**GOOD, "max_frames": 0}, None, 400, "out_of_range", "max_frames"),
    ("ignore-eos-string", {**GOOD, "ignore_eos": "yes"}, None, 400, "invalid_type", "ignore_eos"),
    ("model-number", {**GOOD, "model": 5}, None, 400, "invalid_type", "model"),
    ("instructions-number", {**GOOD, "instructions": ["x"]}, None, 400, "invalid_type", "instructions"),
]


def test_ignore_eos_runs_a_segment_to_its_frame_cap(built, tmp_path):
    """Random weights seldom pick the end of speech, so this talker is made to: its output row for
    <|codec_eos_token|> is 50x the row of <|codec_0|>, so end of speech wins whenever codec_0's logit is
    positive and not tiny. A greedy request stops within a few frames; the same request with
    `ignore_eos` (llama-server's field: the end tokens get a -inf logit bias) runs to its max_frames."""
    import gguf

    model = tmp_path / "eos"
    shutil.copytree(built / "custom_voice", model)
    reader = gguf.GGUFReader(model / "talker.gguf", "r+")
    tokens = reader.fields["tokenizer.ggml.tokens"]
    names = [bytes(tokens.parts[i]).decode() for i in tokens.data]
    codec_0, eos = names.index("<|codec_0|>"), names.index("<|codec_eos_token|>")
    head = next(t for t in reader.tensors if t.name == "output.weight")
    assert head.tensor_type in (gguf.GGMLQuantizationType.F32, gguf.GGMLQuantizationType.F16), head.tensor_type
    head.data[eos - codec_0] = head.data[0] * 50
    head.data.flush()
    del reader, head
    body = {"input": "Hello there", "voice": "vivian", "max_frames": 40, "top_k": 1, "seed": 3,
            "response_format": "pcm"}
    with speech_server(built, "eos", model, "--tts-slots", "1") as s:
        stopped = requests.post(f"{s.base}/v1/audio/speech", json=body, timeout=120)
        full = requests.post(f"{s.base}/v1/audio/speech", json={**body, "ignore_eos": True}, timeout=120)
    assert stopped.status_code == full.status_code == 200, (stopped.text[:200], full.text[:200])
    assert int(stopped.headers["x-speech-frames"]) < 40
    assert int(full.headers["x-speech-frames"]) == 40
    assert len(full.content) > len(stopped.content)


def test_bad_input_table_then_a_good_request(server):
    assert len(BAD) >= 20
    got = []
    for case_id, body, ctype, status, code, param in BAD:
        r = _post(server, body, ctype or "application/json")
        err = r.json().get("error", {})
        got.append((case_id, r.status_code, err.get("code"), err.get("param")))
        assert set(err) == {"message", "type", "param", "code"}, case_id
        assert err["message"], case_id
    assert got == [(c[0], c[3], c[4], c[5]) for c in BAD]
    r = _post(server, GOOD)
    assert r.status_code == 200 and r.content[:4] == b"RIFF"


def test_invalid_utf8_is_a_400_not_a_crash(server):
    r = _post(server, b'{"input": "\xff\xfe bad", "voice": "vivian"}')
    assert r.status_code == 400
    assert requests.get(f"{server.base}/health", timeout=5).status_code == 200


# --- concurrency, cancellation, memory ------------------------------------------------------------

def test_eight_concurrent_requests_all_succeed(client):
    def one(i):
        raw = speech(client, input=f"Request number {i}.", extra_body={"seed": i})
        return raw.http_response.status_code, raw.content

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(one, range(8)))
    assert [s for s, _ in results] == [200] * 8
    for _, data in results:
        info = sf.info(io.BytesIO(data))
        assert (info.samplerate, info.channels) == (24000, 1) and info.frames > 0


# CJK Extension B: 3 tokens a character in the Qwen vocabulary (16 characters, 48 tokens)
RARE = "𠀀𠀁𠀂𠀃𠀄𠀅𠀆𠀇𠀈𠀉𠀊𠀋𠀌𠀍𠀎𠀏"


@pytest.fixture(scope="module")
def four_slots(built, tmp_path_factory):
    # slots sized for 16-character segments: room for 32 text tokens (2 a character) each; every slot
    # dumps its request's prompt, talker logits and codes (slot N: <dump>/seqN, slot 0: <dump>)
    dump = tmp_path_factory.mktemp("four-slots-dump")
    with speech_server(built, "four-slots", "custom_voice", "--tts-slots", "4", "--tts-queue", "4",
                       "--tts-segment-chars", "16", "--metrics", env={"MTMD_GEN_AUDIO_DUMP": str(dump)}) as s:
        s.dump = dump
        yield s


def _metrics(server) -> tuple[dict[str, float], dict[str, float]]:
    """/metrics: the plain samples by name, the speech_batch_size buckets by their le."""
    text = requests.get(f"{server.base}/metrics", timeout=10).text
    plain = {m[1]: float(m[2]) for m in re.finditer(r"^llamacpp:(\w+) (\S+)$", text, re.M)}
    buckets = {m[1]: float(m[2]) for m in re.finditer(r'^llamacpp:speech_batch_size_bucket\{le="([^"]+)"\} (\S+)$',
                                                      text, re.M)}
    return plain, buckets


def _clear(dump):
    for p in dump.iterdir():
        shutil.rmtree(p) if p.is_dir() else p.unlink()


def _read_dumps(dump) -> dict[bytes, tuple[np.ndarray, np.ndarray, str]]:
    """Each slot's dump of its last request, keyed by the request's prompt rows: (talker logits, one row
    per sampled first code, the codec part of the vocabulary; codes [frames x 16]; the slot's dir)."""
    out = {}
    for d in [dump, *sorted(dump.glob("seq*"))]:
        if not (d / "prompt_embd.f32").exists():
            continue
        codes = np.fromfile(d / "codes.i32", np.int32).reshape(-1, 16)
        logits = np.fromfile(d / "talker_logits.f32", np.float32)
        out[(d / "prompt_embd.f32").read_bytes()] = (logits.reshape(len(codes) + 1, -1), codes, d.name)
    return out


def _alone_then_together(slots, bodies):
    """Each request alone, then all of them side by side on as many slots: their dumps (_read_dumps) alone
    and together, each side's response bytes keyed like the dumps, and /metrics before and after the
    requests side by side. Each slot keeps the dump of its last request, so the requests must run on
    different slots at once: a request the client sends late may find another's slot free again and
    overwrite its dump (the tiny model answers in a fraction of a second); then they are sent again."""
    def one(body):
        r = _post(slots, {**GOOD, **body})
        assert r.status_code == 200, r.text
        return r.content

    solo, solo_bytes = {}, {}
    for body in bodies:
        _clear(slots.dump)
        content = one(body)
        (key, val), = _read_dumps(slots.dump).items()
        solo[key], solo_bytes[key] = val, content
    for attempt in range(3):
        _clear(slots.dump)
        # a slot is released just after its response: all of them free before the requests
        deadline = time.monotonic() + 30
        while (before := _metrics(slots)[0])["speech_requests_processing"] > 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        with ThreadPoolExecutor(len(bodies)) as pool:
            contents = list(pool.map(one, bodies))
        after = _metrics(slots)
        together = _read_dumps(slots.dump)
        if len({v[2] for v in together.values()}) == len(bodies):
            break
        print(f"\nattempt {attempt}: the requests ran on slots {[v[2] for v in together.values()]}")
    assert together.keys() == solo.keys() and len({v[2] for v in together.values()}) == len(bodies)
    # solo was filled in the order of the bodies, and pool.map keeps it
    together_bytes = dict(zip(solo, contents))
    return solo, together, solo_bytes, together_bytes, before, after


def _side_by_side_equals_solo(slots, texts, frames=FRAMES):
    # the slots share one talker context (a sequence each) and one mtmd context, and the requests that
    # want a frame at the same moment get it from one batched talker decode; a seeded request must still
    # sample exactly as it does alone (every frame draws from its own seed, not a shared stream, and its
    # sampler reads its own row): its codes and its bytes are its solo run's. One exception: a batched
    # decode's logits are not bit-identical to a solo one's (the CPU kernels accumulate a B-column product
    # in another order: up to ~1e-5 relative on these tiny f32 models,
    # test_batched_greedy_logits_and_codes_match_solo), and a draw (the talker's, or one of the predictor's
    # 15 on that decode's hidden state) that lands within that difference of a boundary flips a code. Such
    # a flip is named, not failed, where that frame's talker logits differ from the solo run's (the frame
    # came from a batched decode); frame 0 comes from the prompt, decoded alone: it must always match
    # (one segment each: a slot dumps the last segment of its request)
    bodies = [{"input": t, "seed": seed, "max_frames": frames} for seed, t in texts.items()]
    solo, together, solo_bytes, together_bytes, before, after = _alone_then_together(slots, bodies)
    flips = []
    for key, (ls, cs, _) in solo.items():
        lb, cb, where = together[key]
        assert cb.shape == cs.shape, (where, cs.shape, cb.shape)
        differ = [f for f in range(len(cs)) if (cb[f] != cs[f]).any()]
        if not differ:
            assert together_bytes[key] == solo_bytes[key], f"{where}: the same codes as alone, other bytes"
            continue
        f = differ[0]
        diff = float(np.abs(lb[f] - ls[f]).max())
        assert f > 0 and diff > 0, (f"{where} frame {f}: codes {cs[f].tolist()} alone, {cb[f].tolist()} side by "
                                    f"side, from the same talker logits: not the solo run's draws")
        assert diff <= 1e-5 * float(np.abs(ls[f]).max()), f"{where} frame {f}: logits {diff:.3g} from the solo run"
        flips.append(f"{where} frame {f} (talker logits {diff:.3g} apart)")
    if flips:
        print(f"\na draw flipped by the batched arithmetic: {flips}")
    return before, after


def test_seeded_requests_side_by_side_give_their_solo_bytes(four_slots):
    _side_by_side_equals_solo(four_slots, {21: "The first voice speaks alone.", 22: "A second voice talks alongside it."})


def test_four_slots_side_by_side_give_their_solo_bytes(four_slots):
    before, (after, buckets) = _side_by_side_equals_solo(
        four_slots, {31: "First of four.", 32: "Second of four.", 33: RARE[:10], 34: "第四个请求。"},
        frames=16)
    # the concurrent requests were batched: frames came from talker decodes shared by several of them
    batched = after["speech_batched_frames_total"] - before["speech_batched_frames_total"]
    decodes = after["speech_talker_decodes_total"] - before["speech_talker_decodes_total"]
    frames = after["speech_frames_total"] - before["speech_frames_total"]
    print(f"\n{frames:.0f} frames in {decodes:.0f} talker decodes, {batched:.0f} of them batched; "
          f"requests per decode (cumulative buckets): {buckets}")
    assert batched > 0 and decodes < frames
    assert after["speech_batch_size_sum"] - before["speech_batch_size_sum"] == frames
    assert buckets["+Inf"] == after["speech_batch_size_count"] and buckets["1"] < buckets["+Inf"]


def test_concurrent_streams_stay_in_step(four_slots):
    # a stream leaves the batch after each chunk to hand it to its client; the next frame batch waits a
    # moment for it instead of going without it (a stream out of step costs talker decodes of its own:
    # 4 streams of 64 frames took 68 decodes before, 64-65 with the wait). A little slack for a request
    # that arrives after the others started
    frames, n = 64, 4

    def one(i):
        body = {**GOOD, "input": f"Stream number {i}.", "seed": 40 + i, "max_frames": frames, "ignore_eos": True,
                "stream": True, "stream_format": "audio"}
        with requests.post(f"{four_slots.base}/v1/audio/speech", json=body, stream=True, timeout=60) as r:
            assert r.status_code == 200, r.text
            return sum(len(c) for c in r.iter_content(4096))

    deadline = time.monotonic() + 30
    while (before := _metrics(four_slots)[0])["speech_requests_processing"] > 0 and time.monotonic() < deadline:
        time.sleep(0.05)
    with ThreadPoolExecutor(n) as pool:
        sizes = list(pool.map(one, range(n)))
    after = _metrics(four_slots)[0]
    made = after["speech_frames_total"] - before["speech_frames_total"]
    decodes = after["speech_talker_decodes_total"] - before["speech_talker_decodes_total"]
    longest = max(sizes) // (2 * 1920)  # pcm: 16-bit samples, 1920 a frame
    print(f"\n{n} streams of {[size // 3840 for size in sizes]} frames: {decodes:.0f} talker decodes")
    assert made == sum(sizes) // 3840 and longest >= 48
    assert decodes <= longest + 2


def _match_solo(solo, batched, min_frames):
    """The issue's contract for a batched request against its solo run: codes equal for every frame,
    the talker logits rows of the first min_frames frames within 1e-5 relative (max |difference| over
    max |solo logit|; the difference grows with the frames, through the K/V rows the batched steps wrote);
    where a first code differs, a near-tie (the solo top-2 margin below the measured logit difference)
    is named instead of failing. Returns (max relative difference in the first min_frames frames, over
    all frames, the near-tie or None)."""
    (ls, cs, _), (lb, cb, where) = solo, batched
    assert len(cs) >= min_frames and cb.shape == cs.shape, (cs.shape, cb.shape)
    first = worst = 0.0
    for f in range(len(cs)):
        diff = float(np.abs(lb[f] - ls[f]).max())
        rel = diff / float(np.abs(ls[f]).max())
        worst = max(worst, rel)
        first = max(first, rel) if f < min_frames else first
        if (cb[f] != cs[f]).any():
            top = np.sort(ls[f])[-2:]
            if cb[f][0] != cs[f][0] and top[1] - top[0] <= diff:
                return first, worst, f"{where} frame {f}: first code {cs[f][0]} -> {cb[f][0]}, top-2 margin " \
                                     f"{top[1] - top[0]:.3g} <= logit difference {diff:.3g}"
            raise AssertionError(f"{where} frame {f}: codes {cs[f].tolist()} alone, {cb[f].tolist()} batched "
                                 f"(logit difference {diff:.3g})")
        assert first <= 1e-5, f"{where} frame {f}: logits {first:.3g} relative from the solo run"
    return first, worst, None


def test_batched_greedy_logits_and_codes_match_solo(four_slots):
    # issue 17's contract, f32: 4 greedy requests alone, then side by side (batched talker decodes)
    texts = ["First of four.", "The second one.", "A third request.", "第四个请求。"]
    frames = 24
    bodies = [{"input": t, "max_frames": frames, "top_k": 1, "seed": 5} for t in texts]
    solo, together, _, _, before, (after, _) = _alone_then_together(four_slots, bodies)
    assert after["speech_batched_frames_total"] > before["speech_batched_frames_total"]
    results = [_match_solo(solo[k], together[k], 20) for k in solo]
    first = max(r[0] for r in results)
    worst = max(r[1] for r in results)
    ties = [r[2] for r in results if r[2]]
    print(f"\nbatched vs solo: talker logits at most {first:.3g} relative apart in 20 frames, {worst:.3g} in "
          f"{frames}" + (f"; near-ties: {ties}" if ties else ", greedy codes equal"))



def test_a_segment_with_more_tokens_than_a_slot_holds_is_split_again(four_slots):
    def segments(text):
        r = _post(four_slots, {**GOOD, "input": text})
        assert r.status_code == 200, r.text
        return int(r.headers["x-speech-segments"])

    assert segments("Sixteen letters.") == 1   # 16 characters, 4 tokens
    assert segments(RARE) == 2                  # 16 characters, 48 tokens: two of 24
    log = (four_slots.log_file).read_text()
    assert "4 slot(s) of" in log and "32 text tokens" in log


def test_a_client_that_goes_away_frees_its_slot(server, client):
    # two slots: park two long streams, drop them after their first chunk, then the slots must be free
    # long before the abandoned generations (400 frames each) could have finished
    for _ in range(2):
        r = requests.post(f"{server.base}/v1/audio/speech", stream=True, timeout=60,
                          json={**GOOD, "max_frames": 400, "stream_format": "audio", "response_format": "pcm"})
        assert r.status_code == 200
        next(r.iter_content(chunk_size=None))
        r.close()
    t0 = time.monotonic()
    ok = speech(client, extra_body={"seed": 3, "max_frames": 4})
    waited = time.monotonic() - t0
    assert ok.http_response.status_code == 200
    # 400 frames run ~25 s here; a freed slot answers in about a second
    assert waited < 15, f"the dropped streams kept their slots for {waited:.1f} s"


def _rss_kib(pid: int) -> int:
    with open(f"/proc/{pid}/status") as f:
        for line in f:
            if line.startswith("VmRSS:"):
                return int(line.split()[1])
    raise AssertionError("no VmRSS")


def test_hundred_sequential_requests_memory_growth(server, client, built):
    for i in range(5):  # warm-up: buffers, caches and allocator arenas reach their working size
        speech(client, extra_body={"seed": i, "max_frames": 4})
    before = _rss_kib(server.proc.pid)
    for i in range(100):
        raw = speech(client, input=f"Sentence {i}. Another one!", extra_body={"seed": i, "max_frames": 4})
        assert raw.http_response.status_code == 200
    after = _rss_kib(server.proc.pid)
    report = {"requests": 100, "rss_before_kib": before, "rss_after_kib": after, "growth_kib": after - before}
    (built / "rss-100-requests.json").write_text(json.dumps(report))
    print(f"\nRSS over 100 sequential speech requests: {before} KiB -> {after} KiB ({after - before:+d} KiB)")
    assert after - before < 32 * 1024, report


# --- cloning (Base model) ------------------------------------------------------------------------

@pytest.fixture(scope="module")
def base_server(built):
    voices = built / "voices"
    voices.mkdir(exist_ok=True)
    t = np.arange(48000) / 24000
    sf.write(voices / "alice.wav", (0.3 * np.sin(2 * np.pi * 180 * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t)))
             .astype(np.float32), 24000)
    (voices / "notes.txt").write_text("not a voice")
    with speech_server(built, "base", "base", "--tts-voices-dir", str(voices)) as s:
        yield s


def test_cloned_voice_is_listed_used_and_encoded_once(base_server, built):
    body = requests.get(f"{base_server.base}/v1/audio/voices", timeout=10).json()
    assert body["cloning"] is True
    assert [(v["id"], v["type"]) for v in body["voices"]] == [("alice", "cloned")]
    client = openai.OpenAI(base_url=f"{base_server.base}/v1", api_key="unused", max_retries=0, timeout=120)
    extra = {"seed": 5, "max_frames": FRAMES}
    a = client.audio.speech.create(model="qwen3-tts", voice="alice", input="Cloned.", extra_body=extra)
    b = client.audio.speech.create(model="qwen3-tts", voice="alice", input="Cloned.", extra_body=extra)
    plain = client.audio.speech.create(model="qwen3-tts", voice="default", input="Cloned.", extra_body=extra)
    assert a.content == b.content and a.content[:4] == b"RIFF"
    assert plain.content != a.content  # the speaker embedding changes the voice
    log = (built / "base.log").read_text()
    assert log.count("encoded voice 'alice'") == 1
    r = requests.post(f"{base_server.base}/v1/audio/speech", timeout=30,
                      json={"input": "x", "voice": "../voices/alice"})
    assert r.status_code == 400 and r.json()["error"]["param"] == "voice"


def test_base_model_refuses_instructions(base_server):
    r = requests.post(f"{base_server.base}/v1/audio/speech", timeout=30,
                      json={"input": "x", "voice": "alice", "instructions": "Whisper."})
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == "instructions" and err["code"] == "unsupported_parameter"


def test_voice_design_follows_instructions(built):
    with speech_server(built, "voice_design", "voice_design") as s:
        client = openai.OpenAI(base_url=f"{s.base}/v1", api_key="unused", max_retries=0, timeout=120)
        extra = {"seed": 2, "max_frames": FRAMES}
        calm = client.audio.speech.create(model="qwen3-tts", voice="default", input="Good evening.",
                                          instructions="A calm, deep voice.", extra_body=extra)
        again = client.audio.speech.create(model="qwen3-tts", voice="default", input="Good evening.",
                                           instructions="A calm, deep voice.", extra_body=extra)
        bright = client.audio.speech.create(model="qwen3-tts", voice="default", input="Good evening.",
                                            instructions="A bright, cheerful child.", extra_body=extra)
        voices = requests.get(f"{s.base}/v1/audio/voices", timeout=10).json()
    assert calm.content[:4] == b"RIFF" and calm.content == again.content
    assert calm.content != bright.content  # the instruction is part of the prompt
    assert voices["voices"] == [] and voices["model"].startswith("qwen3-tts voice_design")


def _custom_voice_as(built, outtype: str) -> str:
    """The tiny CustomVoice checkpoint converted with --outtype (once per module's build dir)."""
    name = f"custom_voice-{outtype}"
    if not (built / name / "mmproj.gguf").exists():
        mp = pytest.MonkeyPatch()
        mp.setenv("Q3BUILD_WORK_DIR", str(built / "work"))
        try:
            assert q3("model", "convert", str(built / "hf-custom_voice"), "--out", str(built / name),
                      "--outtype", outtype) == 0
        finally:
            mp.undo()
    return name


@pytest.fixture(scope="module")
def custom_voice_q8_0(built):
    """The tiny CustomVoice checkpoint as q8_0: its decoder's convolution kernels are F16, so its
    transposed-convolution kernels are converted to F16 at load (0029); on a CPU with AVX512_BF16 all
    of them are converted to BF16 instead, as the projector's matrices are quantised (0046)."""
    return _custom_voice_as(built, "q8_0")


@pytest.fixture(scope="module")
def custom_voice_q4_0(built):
    """The tiny CustomVoice checkpoint as q4_0: on a CPU whose ggml-cpu repacks q4_0 (AVX2), the code
    predictor's matrices run the repacked kernels (CPU_REPACK, 0037)."""
    return _custom_voice_as(built, "q4_0")


@pytest.mark.parametrize("quant", ["f32", "q8_0", "q4_0"])
def test_stream_equals_the_whole_file_without_post_processing(built, request, quant):
    """With trim and normalisation off, the chunked stream carries exactly the samples of the whole
    response, across every codec decoder batch size (1, 1, 2, 4, 8, 16, 16 .. frames; a segment that
    ends inside a batch decodes it padded) and a segment boundary; with the f32 model and with a q8_0
    one (F16 decoder kernels, transposed ones converted at load)."""
    model = "custom_voice" if quant == "f32" else request.getfixturevalue(f"custom_voice_{quant}")
    # a first chunk of 3 frames ends inside the third decoder batch: that batch is decoded padded for
    # the stream, then again when it completes, and must give the same samples both times
    with speech_server(built, "raw", model, "--no-tts-trim", "--no-tts-normalize",
                       "--tts-segment-chars", "24", "--tts-stream-frames", "3") as s:
        body = {"input": "First sentence here. 第二句话在这里。", "voice": "vivian", "seed": 4, "max_frames": 80,
                "response_format": "pcm"}
        whole = requests.post(f"{s.base}/v1/audio/speech", json=body, timeout=300)
        chunks = []
        with requests.post(f"{s.base}/v1/audio/speech", json={**body, "stream_format": "audio"}, stream=True,
                           timeout=300) as r:
            chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert whole.status_code == 200 and whole.headers["x-speech-postprocess"] == "none"
    assert int(whole.headers["x-speech-segments"]) == 2
    assert int(whole.headers["x-speech-frames"]) > 48  # past the doubling, into the 16-frame batches
    assert len(chunks) >= 4
    assert b"".join(chunks) == whole.content


DECODER_KERNELS = re.compile(r"qwen3-tts codec decoder convolution kernels: (\w+)")


def test_the_decoder_takes_bf16_kernels_for_a_quantised_projector_on_a_bf16_cpu(built, custom_voice_q8_0, tmp_path):
    """0046: the codec decoder's convolution kernels become BF16 at load (tinyBLAS's native BF16 GEMM)
    only where ggml-cpu has AVX512_BF16 (the host target is built for the host CPU, so its flags are
    /proc/cpuinfo's) and the projector is quantised; the f32 projector keeps F16 kernels (its parity
    tolerance), and MTMD_QWEN3TTS_DECODER_BF16=0 keeps them F16 on a quantised one. llama-tts -v logs the
    choice; the wavs of the q8_0 runs differ (other kernels) exactly when BF16 was taken."""
    bf16_cpu = "avx512_bf16" in host_cpu()[1]
    binary = built / "work" / "stage" / "host" / "bin" / "llama-tts"
    seen, wavs = {}, {}
    for name, model, env in [("q8_0", custom_voice_q8_0, {}), ("f32", "custom_voice", {}),
                             ("q8_0-off", custom_voice_q8_0, {"MTMD_QWEN3TTS_DECODER_BF16": "0"})]:
        wav = tmp_path / f"{name}.wav"
        argv = speech_argv.llama_tts(binary, built / model, "Hello there.", language="english", wav=wav,
                                     voice=speech_argv.Voice(speaker="vivian"), frames=4, threads=2, extra=["-v"])
        r = subprocess.run(argv, env={**os.environ, **env}, capture_output=True, text=True, errors="replace",
                           timeout=300)
        assert r.returncode == 0, (name, r.stderr[-2000:])
        found = DECODER_KERNELS.findall(r.stdout + r.stderr)
        assert len(found) == 1, (name, found)
        seen[name], wavs[name] = found[0], wav.read_bytes()
    assert seen == {"q8_0": "BF16" if bf16_cpu else "f16", "f32": "f16", "q8_0-off": "f16"}
    assert (wavs["q8_0"] != wavs["q8_0-off"]) == bf16_cpu


def test_kept_decoder_graphs_outlive_the_compute_buffer_they_ran_in(built):
    """The codec decoder keeps one graph per batch size (1, 2, 4, 8, 16 frames) in the mtmd context the
    slots share. A larger batch grows the compute buffer (the allocator frees the old one), so a kept
    smaller graph must not reach into the freed buffer when it runs again: that read crashed the 2-slot
    server in ggml_backend_buft_is_host (issue 11's first merge, reverted). Freed memory is poisoned
    here, so such a read crashes every time instead of when the allocator happens to reuse it."""
    rounds = [[4], [40], [4], [2, 40], [8, 3]]  # max_frames: 1+1+2 frames, then past 16, then small again
    results = []
    with speech_server(built, "decoder-graphs", "custom_voice", "--tts-slots", "2", "--tts-queue", "4",
                       env=FREED_MEMORY_POISONED) as s:
        def say(max_frames, seed):
            try:
                r = requests.post(f"{s.base}/v1/audio/speech", timeout=120, json={
                    "input": "Hi.", "voice": "vivian", "seed": seed, "max_frames": max_frames})
            except requests.ConnectionError:
                return max_frames, None, 0
            return max_frames, r.status_code, int(r.headers.get("x-speech-frames", 0))
        seed = 0
        for sizes in rounds:
            with ThreadPoolExecutor(len(sizes)) as pool:
                results += list(pool.map(say, sizes, range(seed + 1, seed + 1 + len(sizes))))
            seed += len(sizes)
            if s.proc.poll() is not None:
                break
        exit_code = s.proc.poll()
    assert exit_code is None, f"llama-server died (exit code {exit_code}) after {results}"
    assert all(status == 200 for _, status, _ in results), results
    # the buffer grew: a long request went past the 8-frame batch into the 16-frame graph
    assert max(frames for _, _, frames in results) > 16, results
