"""Convert a Qwen3-TTS Hugging Face checkpoint into the model directory the speech server loads.

    DIR/talker.gguf   the talker (text + codec vocabulary, Qwen3 decoder)   --outtype
    DIR/mmproj.gguf   speaker encoder + code predictor + codec decoder       f32 / f16 / q8_0
    DIR/q3tts-model.json   what was converted, how, and the sha256 of every file

Both GGUFs come from the synced tree's own convert_hf_to_gguf.py (our patch stack applied, so
its converter writes the hparams our mtmd reads). q4_0 is made from an f16 talker with the
target's llama-quantize; in the mmproj q4_0 applies to the code predictor's matrices (read 15
times per frame), the rest stays q8_0 (its convolutions are kept f16/f32 by the converter anyway).
"""

from __future__ import annotations

import json
import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from q3build import proc, ui
from q3build.core import pin as pin_mod
from q3build.core import series as series_mod
from q3build.core import workspace
from q3build.core.series import sha256_file
from q3build.errors import InputError, Q3BuildError
from q3build.project import Project
from q3build.speech.facts import MMPROJ, TALKER

MANIFEST = "q3tts-model.json"
# talker outtype -> (converter outtype for the talker, converter outtype for the mmproj)
OUTTYPES = {"f32": ("f32", "f32"), "f16": ("f16", "f16"), "q8_0": ("q8_0", "q8_0"), "q4_0": ("f16", "q4_0")}


def check_checkpoint(hf_dir: Path) -> dict:
    """The checkpoint must be in the released layout; name the first thing that is missing."""
    if not hf_dir.is_dir():
        raise InputError(f"{hf_dir}: not a directory")
    for rel in ("config.json", "model.safetensors", "speech_tokenizer/config.json",
                "speech_tokenizer/model.safetensors"):
        if not (hf_dir / rel).is_file():
            raise InputError(f"{hf_dir}: missing {rel} (not a Qwen3-TTS checkpoint in the released layout)")
    try:
        config = json.loads((hf_dir / "config.json").read_text())
    except ValueError as e:
        raise InputError(f"{hf_dir / 'config.json'}: not valid JSON: {e}") from None
    if config.get("model_type") != "qwen3_tts":
        raise InputError(f"{hf_dir / 'config.json'}: model_type is {config.get('model_type')!r}, "
                           "expected 'qwen3_tts'")
    return config


def convert(project: Project, hf_dir: Path, out: Path, outtype: str, env: Mapping[str, str], *,
            target: str = "host") -> dict:
    if outtype not in OUTTYPES:
        raise InputError(f"--outtype {outtype!r}: expected one of {', '.join(OUTTYPES)}")
    config = check_checkpoint(hf_dir)
    pin, series = pin_mod.load(project), series_mod.load(project)
    stamp = workspace.require_synced(project, pin, series, env)
    script = project.src_dir / "convert_hf_to_gguf.py"
    talker_type, mmproj_type = OUTTYPES[outtype]
    out.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=".convert-", dir=out))
    try:
        log = tmp / "convert.log"
        talker = tmp / TALKER
        with ui.step(f"Converting talker ({talker_type})"):
            proc.stream([sys.executable, script, hf_dir, "--outfile", talker, "--outtype", talker_type],
                        log_file=log, env=env)
        with ui.step(f"Converting mmproj ({mmproj_type})"):
            proc.stream([sys.executable, script, hf_dir, "--mmproj", "--outfile", tmp / MMPROJ,
                         "--outtype", mmproj_type], log_file=log, env=env)
        if outtype == "q4_0":
            quantize = project.stage_dir(target) / "bin" / "llama-quantize"
            if not quantize.is_file():
                raise Q3BuildError(f"q4_0 needs {quantize}", hint=f"run `q3build make --target {target}` first")
            with ui.step("Quantizing talker to q4_0"):
                quantized = tmp / "talker-q4_0.gguf"
                proc.stream([quantize, talker, quantized, "q4_0"], log_file=log, env=env)
                quantized.replace(talker)
        files = []
        for name in (TALKER, MMPROJ):
            (tmp / name).replace(out / name)
            files.append({"path": str(out / name), "size": (out / name).stat().st_size,
                          "sha256": sha256_file(out / name)})
        shutil.copyfile(log, out / "convert.log")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    manifest = {
        "checkpoint": str(hf_dir.resolve()),
        "variant": config.get("tts_model_type"),
        "outtype": outtype, "talker_type": talker_type, "mmproj_type": mmproj_type,
        "checkpoint_files": {rel: sha256_file(hf_dir / rel) for rel in
                             ("config.json", "model.safetensors", "speech_tokenizer/model.safetensors")},
        "converter": {"tree": stamp.tree, "head": stamp.head, "series_digest": stamp.series_digest},
        "files": files,
    }
    (out / MANIFEST).write_text(json.dumps(manifest, indent=2) + "\n")
    return manifest
