"""The llama-server and llama-tts command lines of validate, bench, parity and the tests, built once."""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from q3build.speech.facts import lang_code, model_files

# f32 end to end, like the reference: an f16 KV cache or CPU flash attention (which works in f16)
# moves the logits by ~1e-3, enough to flip near-tied greedy picks of random weights; no weight
# repacking: the quantized runs compare ggml's plain kernels, the same on every CPU
PARITY_NUMERICS = ("-ctk", "f32", "-ctv", "f32", "-fa", "off", "--no-repack")
# as parity, but the KV cache as shipped; weights read into memory at load (excluded from the
# timings), as the reference does, so the first pass does not page the model in from disk
BENCH_NUMERICS = ("--no-repack", "--load-mode", "none")
# llama's flash-attention settings (-fa); the servers leave it at auto, which is on for the CPU
FLASH_ATTN = ("auto", "on", "off")
SERVER_FLASH_ATTN = "auto"


def bench_numerics(*, repack: bool, flash_attn: str = SERVER_FLASH_ATTN) -> tuple[str, ...]:
    """BENCH_NUMERICS with llama's flash-attention setting (the servers': auto), and without --no-repack when
    ggml-cpu's weight repacking stays on as the servers have it (bench --repack)."""
    if flash_attn not in FLASH_ATTN:
        raise ValueError(f"flash attention {flash_attn!r}: one of {', '.join(FLASH_ATTN)}")
    rest = tuple(a for a in BENCH_NUMERICS if a != "--no-repack") if repack else BENCH_NUMERICS
    return ("-fa", flash_attn, *rest)


GREEDY = ("--temp", "0", "--top-k", "1")


def repetition_penalty(penalty: float) -> list[str]:
    """llama-tts penalising repeated first-codebook codes as qwen-tts does. The window stays llama-tts's
    default, -1: every code generated so far (patch 0033 makes the sampler honour it)."""
    return ["--repeat-penalty", f"{penalty:g}"]


@dataclass(frozen=True, kw_only=True)
class Voice:
    """Who speaks: a CustomVoice speaker, a VoiceDesign instruction or a Base reference recording."""

    speaker: str | None = None
    instruct: str | None = None
    reference_wav: Path | None = None
    reference_text: str | None = None   # its transcript: in-context cloning

    def tts_args(self) -> list[str]:
        out = []
        if self.reference_wav:
            out += ["--tts-speaker-file", os.fspath(self.reference_wav)]
        if self.reference_text:
            out += ["--tts-ref-text", self.reference_text]
        if self.speaker:
            out += ["--tts-speaker", self.speaker]
        if self.instruct:
            out += ["--tts-instruct", self.instruct]
        return out


def model_args(model_dir: Path) -> list[str]:
    talker, mmproj = model_files(model_dir)
    return ["-m", str(talker), "--mmproj", str(mmproj)]


def llama_server(binary: Path, model_dir: Path | None, *, port: int, prefix: Sequence[str] = (),
                 threads: int | None = None, max_frames: int | None = None, extra: Sequence[str] = ()) -> list[str]:
    """llama-server bound to 127.0.0.1:port (through `prefix`, an emulator, for cross builds)."""
    argv = [*prefix, str(binary)]
    if model_dir is not None:
        argv += model_args(model_dir)
    argv += ["--host", "127.0.0.1", "--port", str(port)]
    if threads:
        argv += ["-t", str(threads)]
    if max_frames:
        argv += ["--tts-max-frames", str(max_frames)]
    return argv + list(extra)


def llama_tts(binary: Path, model_dir: Path, text: str, *, language: str, wav: Path, voice: Voice = Voice(),
              frames: int | None = None, threads: int | None = None, streaming_text: bool = False,
              extra: Sequence[str] = ()) -> list[str]:
    """llama-tts synthesising `text` greedily into `wav`."""
    argv = [str(binary), *model_args(model_dir), "-p", text, "--tts-lang", lang_code(language), "-o", str(wav),
            *GREEDY]
    if frames:
        argv += ["-n", str(frames)]
    if threads:
        argv += ["-t", str(threads)]
    if streaming_text:
        argv.append("--tts-streaming-text")
    return argv + voice.tts_args() + list(extra)
