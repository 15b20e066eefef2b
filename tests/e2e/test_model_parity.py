"""Tiny checkpoint → upstream converter (with our patches) → built llama-tts, compared stage by
stage with the official implementation: all three variants, both text layouts, f32 and q8_0."""

from __future__ import annotations

import json
import re
import shutil

import gguf
import numpy as np
import pytest
import soundfile as sf

from q3build import cli
from q3build.speech.bench.weights import gguf_tensor_types

from ..conftest import REPO

pytestmark = pytest.mark.slow


def q3(*args):
    return cli.main(["--project", str(REPO), *args])


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """The host build (incremental through ccache) and a tiny Base checkpoint with a reference wav."""
    root = tmp_path_factory.mktemp("parity")
    mp = pytest.MonkeyPatch()
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    try:
        assert q3("make", "--target", "host") == 0
        assert q3("model", "tiny", "--variant", "base", "--out", str(root / "hf")) == 0
        wav = (np.sin(np.arange(48000) * 2 * np.pi * 220 / 24000) * 0.3).astype(np.float32)
        sf.write(root / "ref.wav", wav, 24000)
        yield root, mp
    finally:
        mp.undo()


def parity(root, model_dir, capsys, *extra):
    capsys.readouterr()
    rc = q3("model", "parity", str(root / "hf"), "--model", str(model_dir), "--reference-wav",
            str(root / "ref.wav"), "--frames", "24", "--json", *extra)
    return rc, json.loads(capsys.readouterr().out)


def test_convert_writes_model_dir(built, capsys):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    capsys.readouterr()
    assert q3("model", "convert", str(root / "hf"), "--out", str(root / "f32"), "--json") == 0
    m = json.loads(capsys.readouterr().out)
    assert m["variant"] == "base" and m["outtype"] == "f32"
    assert {f["path"].rsplit("/", 1)[1] for f in m["files"]} == {"talker.gguf", "mmproj.gguf"}
    assert (root / "f32" / "q3tts-model.json").is_file()


VARIANT_ARGS = {
    "custom_voice": ["--speaker", "eric", "--language", "chinese"],   # a dialect speaker
    "voice_design": ["--instruct", "A calm, deep voice."],
}


@pytest.mark.parametrize("layout", ["nonstreaming", "streaming"])
@pytest.mark.parametrize("variant", ["custom_voice", "voice_design"])
def test_variants_match_the_reference(built, capsys, variant, layout):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    hf, out = root / variant, root / f"{variant}-f32"
    if not out.exists():
        assert q3("model", "tiny", "--variant", variant, "--out", str(hf)) == 0
        assert q3("model", "convert", str(hf), "--out", str(out)) == 0
    capsys.readouterr()
    rc = q3("model", "parity", str(hf), "--model", str(out), "--frames", "24", "--layout", layout, "--json",
            *VARIANT_ARGS[variant])
    report = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in report["stages"]}
    assert rc == 0 and report["first_divergence"] is None, report
    assert stages["codes"]["frames"] >= 20 and stages["codes"]["frames_identical"] == stages["codes"]["frames"]
    assert stages["prompt_embd"]["max_abs"] < 1e-6
    assert stages["waveform"]["correlation"] >= 0.9999 and stages["waveform"]["max_abs"] <= 5e-3


@pytest.mark.parametrize("layout", ["nonstreaming", "streaming"])
def test_f32_matches_the_reference_at_every_stage(built, capsys, layout):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    if not (root / "f32" / "talker.gguf").exists():
        assert q3("model", "convert", str(root / "hf"), "--out", str(root / "f32")) == 0
    rc, report = parity(root, root / "f32", capsys, "--layout", layout)
    stages = {s["name"]: s for s in report["stages"]}
    assert rc == 0 and report["first_divergence"] is None, report
    assert stages["codes"]["frames"] >= 20 and stages["codes"]["frames_identical"] == stages["codes"]["frames"]
    assert stages["waveform"]["correlation"] >= 0.9999 and stages["waveform"]["max_abs"] <= 5e-3
    # the prompts differ in length: all text up front, or only its first token
    assert stages["prompt_embd"]["rows"] == (17 if layout == "nonstreaming" else 10)
    assert stages["talker_logits"]["max_abs"] < 1e-4  # f32 end to end


def test_q8_0_reports_code_agreement(built, capsys):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    assert q3("model", "convert", str(root / "hf"), "--out", str(root / "q8"), "--outtype", "q8_0") == 0
    rc, report = parity(root, root / "q8", capsys)
    codes = next(s for s in report["stages"] if s["name"] == "codes")
    assert 0.0 <= codes["codes_equal"] <= 1.0 and codes["frames"] >= 1
    assert rc in (0, 6)  # informative: random weights make q8_0 drift


# ggml type ids (gguf header): the code predictor's matrices are read 15 times per frame
F32, F16, Q4_0, Q8_0 = 0, 1, 2, 8


def predictor_matrix_types(model_dir):
    types = gguf_tensor_types(model_dir / "mmproj.gguf")
    return {n: t for n, t in types.items()
            if n.startswith(("a.gen.code.blk.", "a.gen.code.head", "a.gen.code.proj_in"))
            and n.endswith(".weight") and not n.endswith(("norm.weight", "ln1.weight", "ln2.weight"))}


DECODER_MATRICES = re.compile(r"a\.gen\.wav\.(tfm\.blk\.\d+\.(attn_[qkv]|attn_out|ffn_gate|ffn_up|ffn_down)"
                              r"|tfm\.(in|out)_proj|up\.blk\.\d+\.pw[12])\.weight")


def predictor_loaded_matrices(model_dir):
    """The code predictor's matrices as clip loads them: a layer's q, k and v as one matrix, its gate and up
    as another, where the parts share a type (patch 0065), and the merged head as one matrix per codebook
    (patch 0064)."""
    types = predictor_matrix_types(model_dir)
    loaded = set()
    for name, t in types.items():
        if name.startswith("a.gen.code.head"):
            continue
        for parts, fused in ((("attn_q", "attn_k", "attn_v"), "attn_qkv"), (("ffn_gate", "ffn_up"), "ffn_gate_up")):
            m = re.fullmatch(r"(a\.gen\.code\.blk\.\d+\.)(\w+)\.weight", name)
            if m and m.group(2) in parts and len({types.get(f"{m.group(1)}{p}.weight") for p in parts}) == 1:
                name = f"{m.group(1)}{fused}.weight"
        loaded.add(name)
    head, = [t for t in gguf.GGUFReader(model_dir / "mmproj.gguf").tensors if t.name == "a.gen.code.head.weight"]
    return sorted(loaded) + [f"{head.name}.{g}" for g in range(int(head.shape[2]))]


def decoder_matrix_types(model_dir):
    """The codec decoder's mul_mat-only matrices (patch 0063): its transformer, projections in and out, and
    the ConvNeXt blocks' pointwise matrices."""
    return {n: t for n, t in gguf_tensor_types(model_dir / "mmproj.gguf").items() if DECODER_MATRICES.fullmatch(n)}


def test_quantised_conversions_quantise_every_predictor_matrix(built):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    if not (root / "q8").is_dir():
        assert q3("model", "convert", str(root / "hf"), "--out", str(root / "q8"), "--outtype", "q8_0") == 0
    q8 = predictor_matrix_types(root / "q8")
    assert any(n.endswith(".ffn_down.weight") for n in q8)
    assert set(q8.values()) == {Q8_0}, q8  # ffn_down included: q8_0 activations have a per-block scale
    assert q3("model", "convert", str(root / "hf"), "--out", str(root / "f16"), "--outtype", "f16") == 0
    f16 = predictor_matrix_types(root / "f16")
    # f16 weights take f16 activations, which the FFN intermediate can overflow: ffn_down stays f32
    assert {t for n, t in f16.items() if n.endswith(".ffn_down.weight")} == {F32}
    assert {t for n, t in f16.items() if not n.endswith(".ffn_down.weight")} == {F16}
    assert q3("model", "convert", str(root / "hf"), "--out", str(root / "q4"), "--outtype", "q4_0") == 0
    assert set(predictor_matrix_types(root / "q4").values()) == {Q4_0}
    tables = gguf_tensor_types(root / "q4" / "mmproj.gguf")
    # lookup tables (one row read per code) keep q8_0
    assert (tables["a.gen.code.embd.weight"], tables["a.gen.code.out_embd.weight"]) == (Q8_0, Q8_0)


def quantized(root, quant):
    """The module's tiny Base checkpoint converted at q4_0 or q8_0 (root/q4, root/q8), once per module."""
    out = root / quant
    if not out.is_dir():
        assert q3("model", "convert", str(root / "hf"), "--out", str(out), "--outtype", f"{quant}_0") == 0
    return out


def ggml_program(built, tmp_path, name: str):
    """tests/e2e/NAME.cpp compiled against the build's static ggml libraries (ggml, ggml-cpu, ggml-base)."""
    from q3build import proc

    work = built[0] / "work"
    libs = work / "build" / "host" / "ggml" / "src"
    exe = tmp_path / name
    proc.run(["g++", "-O2", "-std=c++17", "-I", str(work / "src" / "llama.cpp" / "ggml" / "include"),
              str(REPO / "tests" / "e2e" / f"{name}.cpp"),
              *(str(libs / f"lib{n}.a") for n in ("ggml", "ggml-cpu", "ggml-base")),
              "-fopenmp", "-lpthread", "-ldl", "-o", str(exe)], capture=True)
    return exe


def cpu_features() -> list[str]:
    """The features of this CPU that choose ggml-cpu's kernels, as the bench records them."""
    from q3build.speech.bench.runs import host_cpu

    return host_cpu()[1]


def test_q4_0_predictor_matrices_use_the_cpu_extra_buffers(built):
    """Patches 0037, 0063, 0064 and 0065: on a CPU whose ggml-cpu has an extra buffer type for q4_0 (CPU_REPACK on
    x86 with AVX2; AMX, which ggml-cpu asks first, on CPUs with AMX_INT8), every q4_0 matrix of the code
    predictor (its layers, input projection and per-codebook heads: 2-D, rows a multiple of 8 at any real or
    tiny shape) and of the codec decoder (its transformer and projections, the ConvNeXt pointwise matrices)
    is loaded there,
    unless --no-repack; a q8_0 model keeps all its weights in CPU except on an AMX CPU, where AMX takes
    q8_0 too (x86 does not repack q8_0). The runs must still speak: a weight in an extra buffer whose use
    its kernels lacked would abort the graph."""
    import re

    from q3build import proc
    from q3build.speech import argv as speech_argv

    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    features = cpu_features()
    if "avx2" not in features:
        pytest.skip("ggml-cpu repacks q4_0 on x86 with AVX2; this is not such a CPU")
    extra_buft = "AMX" if "amx_int8" in features else "CPU_REPACK"
    for quant in ("q4", "q8"):
        quantized(root, quant)
    tts = root / "work" / "stage" / "host" / "bin" / "llama-tts"
    voice = speech_argv.Voice(reference_wav=root / "ref.wav")
    logs = {}  # -v: clip's loader logs at info level, which llama-tts shows only verbose
    for run, quant, extra in (("q4", "q4", []), ("q8", "q8", []), ("q4-no-repack", "q4", ["--no-repack"])):
        wav = root / f"repack-{run}.wav"
        r = proc.run(speech_argv.llama_tts(tts, root / quant, "Hello.", language="english", wav=wav, voice=voice,
                                           frames=4, threads=2, extra=["-v", *extra]), capture=True, check=False)
        assert r.returncode == 0 and wav.stat().st_size > 44, (run, r.stderr[-2000:])
        logs[run] = r.stdout + r.stderr
    matrices = predictor_loaded_matrices(root / "q4")
    # every layer's q, k, v and gate, up are fused: 2 matrices a layer, not 5
    assert sum(".attn_qkv." in n or ".ffn_gate_up." in n for n in matrices) == 2 * sum(".attn_out." in n for n in matrices)
    # a q4_0 conversion keeps the decoder's matrices q8_0, which only AMX takes
    decoder_types = decoder_matrix_types(root / "q4")
    assert matrices and decoder_types
    matrices += [n for n, t in decoder_types.items() if t == Q4_0 or (t == Q8_0 and extra_buft == "AMX")]
    placed = re.compile(r"(\d+) weights \([\d.]+ MiB\) in (\S+)")  # clip's line, not the talker's
    q4_placed = placed.findall(logs["q4"])  # AMX first; a matrix it refuses (rows) can go to CPU_REPACK
    assert sum(int(n) for n, _ in q4_placed) == len(matrices) and extra_buft in {b for _, b in q4_placed}, \
        (q4_placed, len(matrices))
    assert placed.findall(logs["q4-no-repack"]) == []
    q8_placed = placed.findall(logs["q8"])
    assert (q8_placed and all(b == "AMX" for _, b in q8_placed)) if extra_buft == "AMX" else q8_placed == [], q8_placed


def split_talker_projections(src, dst):
    """A copy of talker GGUF `src` with each layer's fused attn_qkv and ffn_gate_up written apart, as q, k, v
    and gate, up (the layout of conversions before patch 0067)."""
    r = gguf.GGUFReader(src)
    arch = r.fields[gguf.Keys.General.ARCHITECTURE].contents()
    w = gguf.GGUFWriter(dst, arch)
    for field in r.fields.values():
        if field.name != gguf.Keys.General.ARCHITECTURE and not field.name.startswith("GGUF."):
            vt = field.types[0]
            w.add_key_value(field.name, field.contents(), vt,
                            sub_type=field.types[-1] if vt == gguf.GGUFValueType.ARRAY else None)
    n_kv_rows = (r.fields[f"{arch}.attention.head_count_kv"].contents()
                 * r.fields[f"{arch}.attention.key_length"].contents())
    out = []
    for t in r.tensors:
        base = t.name.rsplit(".", 2)[0]  # blk.N
        if t.name.endswith(".attn_qkv.weight"):
            n_q = t.data.shape[0] - 2 * n_kv_rows
            parts = zip(("attn_q", "attn_k", "attn_v"), np.split(t.data, [n_q, n_q + n_kv_rows]))
        elif t.name.endswith(".ffn_gate_up.weight"):
            parts = zip(("ffn_gate", "ffn_up"), np.split(t.data, 2))
        else:
            out.append((t.name, t.data, t.tensor_type))
            continue
        out += [(f"{base}.{part}.weight", np.ascontiguousarray(d), t.tensor_type) for part, d in parts]
    for name, data, tt in out:
        w.add_tensor_info(name, data.shape, data.dtype, data.nbytes, tt)
    w.write_header_to_file()
    w.write_kv_data_to_file()
    w.write_ti_data_to_file()
    for _, data, _ in out:
        w.write_tensor_data(data)
    w.close()
    return [name for name, _, _ in out]


def test_talker_projections_are_fused_and_a_split_talker_speaks_the_same(built):
    """Patches 0066-0067: a conversion writes each talker layer's q, k and v as one attn_qkv matrix and its
    gate and up as one ffn_gate_up (one product each per step); a talker with them apart, as older
    conversions wrote it, still loads, and both speak the same wav, byte for byte (the products' rows are
    the same arithmetic)."""
    from q3build import proc
    from q3build.speech import argv as speech_argv

    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    q8 = quantized(root, "q8")
    names = set(gguf_tensor_types(q8 / "talker.gguf"))
    layers = sorted({int(m.group(1)) for n in names if (m := re.fullmatch(r"blk\.(\d+)\.attn_output\.weight", n))})
    assert layers == list(range(len(layers))) and layers, sorted(names)
    for i in layers:
        assert {f"blk.{i}.attn_qkv.weight", f"blk.{i}.ffn_gate_up.weight"} <= names
        assert not {f"blk.{i}.{p}.weight" for p in ("attn_q", "attn_k", "attn_v", "ffn_gate", "ffn_up")} & names
    split = root / "q8-split"
    if split.exists():
        shutil.rmtree(split)
    shutil.copytree(q8, split)
    written = split_talker_projections(q8 / "talker.gguf", split / "talker.gguf")
    assert f"blk.{layers[-1]}.attn_v.weight" in written and "blk.0.ffn_gate_up.weight" not in written
    tts = root / "work" / "stage" / "host" / "bin" / "llama-tts"
    voice = speech_argv.Voice(reference_wav=root / "ref.wav")
    wavs = []
    for model in (q8, split):
        wav = root / f"talker-{model.name}.wav"
        r = proc.run(speech_argv.llama_tts(tts, model, "Hello there.", language="english", wav=wav, voice=voice,
                                           frames=12, threads=2), capture=True, check=False)
        assert r.returncode == 0, (model.name, r.stderr[-2000:])
        wavs.append(wav.read_bytes())
    assert len(wavs[0]) > 44 and wavs[0] == wavs[1]


def test_amx_weights_by_default_on_an_amx_cpu_and_they_run(built):
    """Patches 0052-0053: on an x86 CPU with AMX_INT8 ggml's AMX buffer takes the q8_0 weights by default
    (as upstream), and the run speaks (before 0052 ldtilecfg faulted at warm-up; before 0053 the predictor
    read past a weight); --no-repack keeps every weight in the plain CPU buffer. On a CPU without AMX no
    weight is there."""
    import re

    from q3build import proc
    from q3build.speech import argv as speech_argv

    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    q8 = quantized(root, "q8")
    amx_cpu = "amx_int8" in cpu_features()
    tts = root / "work" / "stage" / "host" / "bin" / "llama-tts"
    voice = speech_argv.Voice(reference_wav=root / "ref.wav")
    in_amx = re.compile(r"AMX model buffer size = +([\d.]+) MiB")
    for extra in ([], ["--no-repack"]):
        wav = root / f"amx-{len(extra)}.wav"
        r = proc.run(speech_argv.llama_tts(tts, q8, "Hello.", language="english", wav=wav, voice=voice,
                                           frames=4, threads=2, extra=["-v", *extra]), capture=True, check=False)
        assert r.returncode == 0 and wav.stat().st_size > 44, (extra, r.stderr[-2000:])
        placed = [float(m) for m in in_amx.findall(r.stdout + r.stderr)]
        assert (any(placed) if amx_cpu and not extra else not any(placed)), (extra, amx_cpu, placed)


def test_cpu_extra_buffer_products_match_the_plain_kernels(built, tmp_path):
    """Patches 0052, 0053, 0055, 0059 and the repacked kernels: cpu_extra_bufts_mul_mat.cpp, compiled against
    this build's ggml, multiplies every quantized type each extra buffer type takes (AMX, CPU_REPACK) at the
    talker's and the code predictor's shapes and compares with the plain CPU buffer (test-backend-ops cannot
    put a weight there); AMX must refuse a weight with one matrix per batch (0055: it overran the buffer).
    On an AMX CPU AMX must run q8_0 and q4_0, and give each of 2-4 rows the bits it gets alone (0059); on
    x86 with AVX2 CPU_REPACK must run q4_0."""
    import re

    from q3build import proc

    exe = ggml_program(built, tmp_path, "cpu_extra_bufts_mul_mat")
    r = proc.run([str(exe), "2"], capture=True, check=False)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-2000:]
    ran = {m[0]: int(m[1]) for m in re.findall(r"^(\S+) ran (\d+) failed 0$", r.stdout, re.M)}
    cases = re.findall(r"^(\S+) (\S+) k=.* ok$", r.stdout, re.M)
    features = cpu_features()
    if "amx_int8" in features:
        assert {("AMX", "q8_0"), ("AMX", "q4_0")} <= set(cases), ran
        # 0059: 2-4 rows (a decode step of a few streams) give each row the bits it gets alone
        assert len(re.findall(r"^AMX q8_0 .* rows_as_alone=yes ok$", r.stdout, re.M)) >= 3, r.stdout
    if "avx2" in features:
        assert ("CPU_REPACK", "q4_0") in set(cases), ran
    assert all(n > 0 for n in ran.values()) and len(ran) == len(re.findall(r" ran \d+ failed ", r.stdout)), r.stdout


def test_bf16_products_match_a_double_product_and_amx_takes_the_long_ones(built, tmp_path):
    """Patch 0057: cpu_bf16_mul_mat.cpp, compiled against this build's ggml, multiplies BF16 weights by BF16
    rows (contiguous, and a convolution's overlapping taps) at the codec decoder's shapes, against a double
    product of the same values (1e-5), once as it is and once with GGML_CPU_AMX_BF16=0 (tinyBLAS). Both
    must be right. On a CPU with AMX_BF16 the AMX kernel must have taken exactly the products it is for
    (a weight row count that is a multiple of 32, at least 32 rows of input): their outputs differ from
    tinyBLAS's (another order of float sums), the others' are the same bytes. Elsewhere all are the same."""
    import os
    import re

    from q3build import proc

    exe = ggml_program(built, tmp_path, "cpu_bf16_mul_mat")
    line = re.compile(r"^(\S+) m=(\d+) k=(\d+) n=(\d+) taps=\d+ rel=\S+ hash=(\w+) ok$", re.M)
    runs = {}
    for amx in ("1", "0"):
        r = proc.run([str(exe), "2"], capture=True, check=False, env={**os.environ, "GGML_CPU_AMX_BF16": amx})
        assert r.returncode == 0 and re.search(r"^ran (\d+) failed 0$", r.stdout, re.M), r.stdout + r.stderr[-2000:]
        runs[amx] = {m[0]: (int(m[1]), int(m[2]), int(m[3]), m[4]) for m in line.findall(r.stdout)}
    assert runs["1"].keys() == runs["0"].keys() and len(runs["1"]) >= 10
    amx_cpu = "amx_bf16" in cpu_features() and "avx512_bf16" in cpu_features()
    for name, (m, k, n, digest) in runs["1"].items():
        eligible = amx_cpu and m % 32 == 0 and k % 32 == 0 and n >= 32
        assert (digest != runs["0"][name][3]) == eligible, (name, eligible)


def test_a_different_checkpoint_is_caught_at_the_first_stage(built, capsys):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    assert q3("model", "tiny", "--variant", "base", "--seed", "1", "--out", str(root / "other")) == 0
    assert q3("model", "convert", str(root / "other"), "--out", str(root / "other-f32")) == 0
    rc, report = parity(root, root / "other-f32", capsys)
    assert rc == 6 and report["first_divergence"] == "speaker_embd"
    assert not next(s for s in report["stages"] if s["name"] == "codes")["ok"]


def test_convert_rejects_a_non_checkpoint(built, tmp_path, capsys):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    (tmp_path / "config.json").write_text('{"model_type": "llama"}')
    (tmp_path / "model.safetensors").write_text("")
    (tmp_path / "speech_tokenizer").mkdir()
    for f in ("config.json", "model.safetensors"):
        (tmp_path / "speech_tokenizer" / f).write_text("{}")
    assert q3("model", "convert", str(tmp_path), "--out", str(tmp_path / "out")) == 2
    assert "model_type is 'llama', expected 'qwen3_tts'" in capsys.readouterr().err


# --- in-context cloning (issue 13): a checkpoint of a seed no other test uses ----------------------

ICL_SEED = "1313"
ICL_REF_TEXT = "This is the reference speaker talking."
# long enough that the text column outgrows a 2 s reference's codec column (T1 > T2)
ICL_LONG_TEXT = ("In context cloning copies the timbre and the prosody of the reference recording, "
                 "its transcript and its codes both go into the prompt of the talker.")


@pytest.fixture(scope="module")
def icl(built):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    hf, out = root / "icl-hf", root / "icl-f32"
    if not out.exists():
        assert q3("model", "tiny", "--variant", "base", "--seed", ICL_SEED, "--out", str(hf)) == 0
        assert q3("model", "convert", str(hf), "--out", str(out)) == 0
    rng = np.random.default_rng(int(ICL_SEED))
    for name, seconds in (("icl-2s.wav", 2.0), ("icl-12s.wav", 12.0)):
        n = int(24000 * seconds)
        t = np.arange(n) / 24000
        wav = 0.3 * np.sin(2 * np.pi * (150 + 100 * t) * t) + 0.05 * rng.standard_normal(n)
        sf.write(root / name, wav.astype(np.float32), 24000, subtype="FLOAT")
    return root, hf, out


@pytest.fixture
def icl_work(built, icl):
    """The ICL checkpoint with the module's work dir set again for this test (tests/conftest.py clears
    Q3BUILD_* for every test, so without this `model parity` would run the project's own stage)."""
    built[1].setenv("Q3BUILD_WORK_DIR", str(built[0] / "work"))
    return icl


@pytest.mark.parametrize("layout", ["nonstreaming", "streaming"])
@pytest.mark.parametrize("ref, text", [("icl-2s.wav", ICL_LONG_TEXT),          # streaming: T1 > T2
                                       ("icl-12s.wav", "Hello from a tiny model.")])  # T1 <= T2, > 10 s
def test_icl_matches_the_reference(icl_work, capsys, layout, ref, text):
    root, hf, out = icl_work
    capsys.readouterr()
    rc = q3("model", "parity", str(hf), "--model", str(out), "--reference-wav", str(root / ref),
            "--reference-text", ICL_REF_TEXT, "--text", text, "--frames", "24", "--layout", layout, "--json")
    report = json.loads(capsys.readouterr().out)
    stages = {s["name"]: s for s in report["stages"]}
    assert rc == 0 and report["first_divergence"] is None, report
    # the speech encoder's codes: ceil(n / 1920) frames, every codebook the official one
    n = sf.info(str(root / ref)).frames
    assert stages["ref_codes"]["frames"] == -(-n // 1920) == stages["ref_codes"]["frames_identical"]
    assert stages["codes"]["frames"] >= 20 and stages["codes"]["frames_identical"] == stages["codes"]["frames"]
    assert stages["waveform"]["correlation"] >= 0.9999 and stages["waveform"]["max_abs"] <= 5e-3


def test_icl_reports_the_encoder_time_of_a_10_s_reference(icl, tmp_path):
    """The figure `q3build bench --reference-text` reports (reference_encode), at the tiny shape."""
    from q3build import proc
    from q3build.speech import argv as speech_argv
    from q3build.speech.bench import logs

    root, _, out = icl
    n = 240000
    t = np.arange(n) / 24000
    sf.write(tmp_path / "ref10.wav", (0.3 * np.sin(2 * np.pi * (150 + 50 * t) * t)).astype(np.float32), 24000)
    voice = speech_argv.Voice(reference_wav=tmp_path / "ref10.wav", reference_text=ICL_REF_TEXT)
    argv = speech_argv.llama_tts(root / "work" / "stage" / "host" / "bin" / "llama-tts", out, "Hello.",
                                 language="english", wav=tmp_path / "o.wav", voice=voice, frames=2, threads=2)
    r = proc.run(argv, capture=True)
    enc = logs.parse_llama_tts_log(r.stdout + r.stderr)["reference_encode"]
    assert enc["frames"] == 125 and enc["ms"] > 0
    print(f"\nspeech encoder, 10 s reference, tiny shape: {enc['ms']:.1f} ms")


# --- every mode through llama-tts and the server, the official generation defaults (issue 13) --------

MODES_SEED = "1414"
MODES_TEXT = "One two three four five six seven eight nine ten."
MODES_REF_TEXT = "This is the reference speaker talking."
MODES = {  # mode: (variant, parity arguments)
    "custom_voice": ("custom_voice", ["--speaker", "eric", "--language", "chinese"]),
    "voice_design": ("voice_design", ["--instruct", "A calm, deep voice."]),
    "base_xvector": ("base", []),
    "base_icl": ("base", ["--reference-text", MODES_REF_TEXT]),
}
# where the repetition penalty (1.05, generation_config.json) decides a greedy pick of this seed's
# random weights within the 30 frames: the official pick is not the raw argmax, so these modes fail
# unless llama-tts and the server apply the penalty as qwen-tts does (patch 0033)
PENALTY_DECIDES = {("custom_voice", "streaming"), ("voice_design", "streaming"), ("base_xvector", "streaming"),
                   ("base_icl", "nonstreaming")}


@pytest.fixture(scope="module")
def modes(built):
    root, mp = built
    mp.setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    for variant in ("custom_voice", "voice_design", "base"):
        hf, out = root / f"modes-{variant}", root / f"modes-{variant}-f32"
        if not out.exists():
            assert q3("model", "tiny", "--variant", variant, "--seed", MODES_SEED, "--out", str(hf)) == 0
            assert q3("model", "convert", str(hf), "--out", str(out)) == 0
    rng = np.random.default_rng(int(MODES_SEED))
    t = np.arange(48000) / 24000
    wav = 0.3 * np.sin(2 * np.pi * (150 + 100 * t) * t) + 0.05 * rng.standard_normal(len(t))
    sf.write(root / "modes-ref.wav", wav.astype(np.float32), 24000, subtype="FLOAT")
    return root


@pytest.mark.parametrize("layout", ["nonstreaming", "streaming"])
@pytest.mark.parametrize("mode", list(MODES))
def test_every_mode_through_llama_tts_and_the_server(built, modes, capsys, mode, layout):
    """The product path for every mode: llama-tts and llama-server's /v1/audio/speech against the official
    run, all greedy with the checkpoint's repetition penalty, on a seed no other test uses."""
    root = modes
    built[1].setenv("Q3BUILD_WORK_DIR", str(root / "work"))
    variant, extra = MODES[mode]
    if variant == "base":
        extra = ["--reference-wav", str(root / "modes-ref.wav"), *extra]
    capsys.readouterr()
    rc = q3("model", "parity", str(root / f"modes-{variant}"), "--model", str(root / f"modes-{variant}-f32"),
            "--text", MODES_TEXT, "--frames", "30", "--layout", layout, "--json", *extra)
    out = capsys.readouterr()
    assert out.out, out.err  # a failed run says why on stderr
    report = json.loads(out.out)
    stages = {s["name"]: s for s in report["stages"]}
    logits = stages["talker_logits"]
    # a failure names the stage; a near-tie of the random weights shows as a talker_logits pick that
    # differs with a max abs diff near f32 noise (~1e-6), which this message carries
    assert rc == 0 and report["first_divergence"] is None, f"{mode} {layout}: {report}"
    assert logits["penalty"] == 1.05  # the checkpoint's generation_config.json, not 1.0
    for side in ("", "server_"):
        codes, wav = stages[f"{side}codes"], stages[f"{side}waveform"]
        assert codes["frames"] >= 20 and codes["frames_identical"] == codes["frames"], (mode, layout, side, codes)
        assert wav["correlation"] >= 0.9999 and wav["max_abs"] <= 5e-3, (mode, layout, side, wav)
    assert stages["server_llama_tts"]["codes_identical"] and stages["server_llama_tts"]["max_lsb"] <= 1
    assert bool(logits["penalty_decided"]) == ((mode, layout) in PENALTY_DECIDES), logits
    if mode == "base_icl":
        assert stages["ref_codes"]["frames"] == 25 == stages["server_ref_codes"]["frames_identical"]
