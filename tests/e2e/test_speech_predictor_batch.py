"""The Qwen3-TTS code predictor over N frames of independent generations in one graph
(mtmd_gen_audio_process_batch, patch 0043) gives each frame the codes and the embedding bytes of a solo
call: tiny CustomVoice checkpoints in f32 and q8_0, with and without flash attention."""

from __future__ import annotations

import json
import subprocess

import pytest

from q3build import cli

from ..conftest import REPO

pytestmark = pytest.mark.slow

TOOL = "llama-qwen3tts-gen-batch"


@pytest.fixture(scope="module")
def gen_batch(host_work):
    """The check tool, built in the host build dir (it is not a staged binary)."""
    build = host_work / "build" / "host"
    subprocess.run(["nice", "-n", "19", "cmake", "--build", str(build), "--target", TOOL], check=True,
                   capture_output=True)
    return build / "bin" / TOOL


@pytest.fixture(scope="module")
def custom_voice_q8_0(built):
    out = built / "custom_voice-batch-q8_0"
    if not (out / "mmproj.gguf").exists():
        mp = pytest.MonkeyPatch()
        mp.setenv("Q3BUILD_WORK_DIR", str(built / "work"))
        try:
            assert cli.main(["--project", str(REPO), "model", "convert", str(built / "hf-custom_voice"),
                             "--out", str(out), "--outtype", "q8_0"]) == 0
        finally:
            mp.undo()
    return out


def check(tool, model_dir, *extra) -> list[dict]:
    argv = [str(tool), "-m", str(model_dir / "talker.gguf"), "--mmproj", str(model_dir / "mmproj.gguf"),
            "-t", "2", "--check", "1,2,3,4,8", *extra]
    proc = subprocess.run(argv, capture_output=True, text=True, timeout=600)
    lines = [json.loads(line) for line in proc.stdout.splitlines() if line.startswith("{")]
    assert lines, proc.stderr[-2000:]
    assert proc.returncode == (0 if all(r["codes_equal"] for r in lines) else 1), proc.stderr[-2000:]
    return lines


@pytest.mark.parametrize("quant", ["f32", "q8_0"])
@pytest.mark.parametrize("fa", ["on", "off"])
def test_batched_frames_equal_solo_calls(built, gen_batch, custom_voice_q8_0, quant, fa):
    """Frames 0..N-1 with their own hidden state, code0 and seed (frame 1 continues frame 0's random
    stream, frame 2 samples with top_k 7, frame 3 with top_p 0.8: three top_k/top_p groups in one call)
    give, batched, the codes and the embd bytes of N solo calls, in order."""
    model = built / "custom_voice" if quant == "f32" else custom_voice_q8_0
    results = check(gen_batch, model, "-fa", fa)
    assert [r["n"] for r in results] == [1, 2, 3, 4, 8]
    for r in results:
        assert r["n_codes"] == 16
        assert r["codes_equal"], r
        assert r["embd_bytes_equal"] and r["embd_max_rel"] == 0, r
    # the frames really are different generations: a batch that mixed them up could not pass
    eight = results[-1]["code1_per_frame"]
    assert len(set(eight)) >= 6, eight
    # the first frames do not depend on how many come after them
    assert results[-1]["code1_per_frame"][:4] == results[3]["code1_per_frame"]


def test_bad_frame_count_is_one_line(gen_batch, built):
    model = built / "custom_voice"
    proc = subprocess.run([str(gen_batch), "-m", str(model / "talker.gguf"), "--mmproj", str(model / "mmproj.gguf"),
                           "--check", "0"], capture_output=True, text=True, timeout=60)
    assert proc.returncode == 2
    assert proc.stderr.strip().count("\n") == 0 and "--check takes frame counts" in proc.stderr
