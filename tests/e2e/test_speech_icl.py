"""In-context cloning through the speech server (issue 13): a cloned voice with a transcript beside
its recording is cloned in context, the voices list says which mode each voice uses, a request can
ask for either mode, and bad transcripts or recordings are 400s that name the voice."""

from __future__ import annotations

import numpy as np
import pytest
import requests
import soundfile as sf

from .conftest import speech_server

pytestmark = pytest.mark.slow

BODY = {"input": "Cloned in context.", "seed": 3, "max_frames": 6}


def _tone(seconds, hz):
    t = np.arange(int(24000 * seconds)) / 24000
    return (0.3 * np.sin(2 * np.pi * hz * t) * (1 + 0.5 * np.sin(2 * np.pi * 3 * t))).astype(np.float32)


@pytest.fixture(scope="module")
def icl_server(built):
    voices = built / "icl-voices"
    voices.mkdir(exist_ok=True)
    sf.write(voices / "bob.wav", _tone(2.0, 150), 24000)
    (voices / "bob.txt").write_text("This is Bob speaking.\n", encoding="utf-8")
    sf.write(voices / "alice.wav", _tone(2.0, 220), 24000)                   # no transcript: x-vector
    sf.write(voices / "carol.wav", _tone(2.0, 260), 24000)
    (voices / "carol.txt").write_text("  \n\t", encoding="utf-8")            # empty: x-vector, said so
    sf.write(voices / "dave.wav", _tone(2.0, 300), 24000)
    (voices / "dave.txt").write_bytes(b"Dave \xff\xfe speaking")             # not UTF-8
    sf.write(voices / "erin.wav", _tone(12.0, 330), 24000)                   # longer than the limit below
    sf.write(voices / "fred.wav", _tone(2.0, 350), 24000)
    (voices / "fred.txt").write_text("x" * 601, encoding="utf-8")            # longer than 600 characters
    with speech_server(built, "icl", "base", "--tts-voices-dir", str(voices), "--tts-max-ref-seconds", "10") as s:
        yield s, voices


def test_voices_say_the_clone_mode(icl_server):
    s, _ = icl_server
    body = requests.get(f"{s.base}/v1/audio/voices", timeout=10).json()
    listed = {v["id"]: v for v in body["voices"]}
    assert listed["bob"]["mode"] == "icl" and listed["alice"]["mode"] == "xvector"
    assert listed["carol"]["mode"] == "xvector" and "empty" in listed["carol"]["note"]
    unusable = {v["id"]: v["reason"] for v in body["unusable_voices"]}
    assert "UTF-8" in unusable["dave"] and "dave.txt" in unusable["dave"]
    assert "erin" in unusable and "fred" in unusable and "600" in unusable["fred"]


def test_icl_and_xvector_requests(icl_server):
    s, _ = icl_server
    url = f"{s.base}/v1/audio/speech"
    icl = requests.post(url, json={**BODY, "voice": "bob"}, timeout=120)
    again = requests.post(url, json={**BODY, "voice": "bob", "clone_mode": "icl"}, timeout=120)
    xvec = requests.post(url, json={**BODY, "voice": "bob", "clone_mode": "xvector"}, timeout=120)
    assert icl.status_code == again.status_code == xvec.status_code == 200
    assert icl.content == again.content and icl.content[:4] == b"RIFF"
    assert xvec.content != icl.content  # the codes and the transcript in the prompt change the audio
    # the full layout is still a request away, and it is another prompt
    full = requests.post(url, json={**BODY, "voice": "bob", "text_layout": "full"}, timeout=120)
    assert full.status_code == 200 and full.content != icl.content
    log = (s.log_file).read_text()
    assert "encoded voice 'bob'" in log and "frames of codes" in log


@pytest.mark.parametrize("body, param, words", [
    ({"voice": "alice", "clone_mode": "icl"}, "clone_mode", ["alice", "transcript"]),
    ({"voice": "carol", "clone_mode": "icl"}, "clone_mode", ["carol", "empty"]),
    ({"voice": "bob", "clone_mode": "both"}, "clone_mode", ["xvector", "icl"]),
    ({"voice": "dave"}, "voice", ["dave", "UTF-8"]),
    ({"voice": "erin"}, "voice", ["erin", "long"]),
    ({"voice": "fred"}, "voice", ["fred", "600"]),
])
def test_bad_clone_input_is_a_400_naming_the_voice(icl_server, body, param, words):
    s, _ = icl_server
    r = requests.post(f"{s.base}/v1/audio/speech", json={**BODY, **body}, timeout=30)
    err = r.json()["error"]
    assert r.status_code == 400 and err["param"] == param, err
    assert all(w in err["message"] for w in words), err
    assert requests.get(f"{s.base}/health", timeout=10).status_code == 200


def test_a_cached_voice_does_not_decode_its_reference_again(built, tmp_path):
    """Patch 0034: the reference's 25 frames go through the decoder's batches 1, 1, 2, 4, 8 (16 frames)
    and the first 9 of a 16-frame batch. A second request with the same voice restores what they left
    instead of decoding them again: 16 frames fewer through the decoder, the same bytes."""
    voices = tmp_path / "voices"
    voices.mkdir()
    sf.write(voices / "bob.wav", _tone(2.0, 150), 24000)
    (voices / "bob.txt").write_text("This is Bob speaking.", encoding="utf-8")
    body = {"input": "Cloned in context, twice.", "voice": "bob", "seed": 7, "max_frames": 12}
    with speech_server(built, "icl-cached", "base", "--tts-voices-dir", str(voices)) as s:
        url = f"{s.base}/v1/audio/speech"
        first, second = (requests.post(url, json=body, timeout=300) for _ in range(2))
        other = requests.post(url, json={**body, "clone_mode": "xvector"}, timeout=300)
        third = requests.post(url, json=body, timeout=300)
    assert first.status_code == second.status_code == other.status_code == third.status_code == 200
    assert first.content == second.content == third.content
    decoded = [int(r.headers["x-speech-decoded-frames"]) for r in (first, second, other, third)]
    frames = int(first.headers["x-speech-frames"])
    assert decoded[0] == 25 + frames and decoded[1] == decoded[0] - 16, decoded
    # an x-vector request between them decodes no reference and leaves the kept one in place
    assert decoded[2] == int(other.headers["x-speech-frames"]) and decoded[3] == decoded[1], decoded


def test_a_rewritten_recording_is_encoded_again(icl_server):
    s, voices = icl_server
    url = f"{s.base}/v1/audio/speech"
    before = requests.post(url, json={**BODY, "voice": "bob"}, timeout=120)
    sf.write(voices / "bob.wav", _tone(3.0, 170), 24000)
    after = requests.post(url, json={**BODY, "voice": "bob"}, timeout=120)
    assert before.status_code == after.status_code == 200 and before.content != after.content
    log = s.log_file.read_text()
    # 2 s and then 3 s of audio: 25 and then 38 frames of codes, never the old ones with the new recording
    assert "25 frames of codes" in log and "38 frames of codes" in log


@pytest.mark.parametrize("layout", ["streaming", "full"])
def test_the_server_clones_in_context_as_llama_tts_does(built, tmp_path, layout):
    """The product path: a greedy ICL request gives llama-tts's samples (the parity test ties llama-tts's
    ICL output to the official one), up to the last bit of 16-bit rounding."""
    from q3build import proc
    from q3build.speech import argv as speech_argv

    voices = tmp_path / "voices"
    voices.mkdir()
    sf.write(voices / "bob.wav", _tone(2.0, 150), 24000)
    (voices / "bob.txt").write_text("This is Bob speaking.", encoding="utf-8")
    body = {"input": "Hello from a tiny model.", "voice": "bob", "temperature": 0, "top_k": 1,
            "repetition_penalty": 1.05, "max_frames": 20, "text_layout": layout, "language": "english"}
    with speech_server(built, f"icl-{layout}", "base", "--tts-voices-dir", str(voices), "--no-tts-trim",
                       "--no-tts-normalize", *speech_argv.PARITY_NUMERICS) as s:
        r = requests.post(f"{s.base}/v1/audio/speech", json=body, timeout=120)
    assert r.status_code == 200
    (tmp_path / "server.wav").write_bytes(r.content)
    voice = speech_argv.Voice(reference_wav=voices / "bob.wav", reference_text="This is Bob speaking.")
    argv = speech_argv.llama_tts(built / "work" / "stage" / "host" / "bin" / "llama-tts", built / "base", body["input"],
                                 language="english", wav=tmp_path / "tts.wav", voice=voice, frames=20, threads=2,
                                 streaming_text=layout == "streaming",
                                 extra=[*speech_argv.PARITY_NUMERICS, *speech_argv.repetition_penalty(1.05)])
    proc.run(argv, capture=True)
    a, _ = sf.read(tmp_path / "server.wav", dtype="int16")
    b, _ = sf.read(tmp_path / "tts.wav", dtype="int16")
    # the same frames (EOS may end both before the cap), the same samples
    assert len(a) == len(b) and len(a) % 1920 == 0 and len(a) >= 4 * 1920
    assert int(np.abs(a.astype(np.int32) - b.astype(np.int32)).max()) <= 1


def test_an_icl_stream_equals_the_whole_file(built, tmp_path):
    """The reference's 25 frames prefill the codec decoder in its batches (1, 1, 2, 4, 8, then 9 of a
    16-frame batch), so the generated frames start inside a batch; a stream whose first chunk (3 frames)
    also ends inside one carries exactly the samples of the whole response, cut included. (A 2 s
    reference: its cut int(25 / F_total * n) is 25 * 1920 for every F_total the request reaches.)"""
    voices = tmp_path / "voices"
    voices.mkdir()
    sf.write(voices / "bob.wav", _tone(2.0, 150), 24000)
    (voices / "bob.txt").write_text("This is Bob speaking.", encoding="utf-8")
    body = {"input": "Cloned in context, streamed and whole.", "voice": "bob", "seed": 5, "max_frames": 40,
            "response_format": "pcm"}
    with speech_server(built, "icl-stream", "base", "--tts-voices-dir", str(voices), "--no-tts-trim",
                       "--no-tts-normalize", "--tts-stream-frames", "3") as s:
        whole = requests.post(f"{s.base}/v1/audio/speech", json=body, timeout=300)
        with requests.post(f"{s.base}/v1/audio/speech", json={**body, "stream_format": "audio"}, stream=True,
                           timeout=300) as r:
            chunks = [c for c in r.iter_content(chunk_size=None) if c]
    assert whole.status_code == 200 and whole.headers["x-speech-postprocess"] == "none"
    assert int(whole.headers["x-speech-frames"]) > 8 and len(chunks) >= 3
    assert b"".join(chunks) == whole.content
