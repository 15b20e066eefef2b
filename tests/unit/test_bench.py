"""q3build bench: log parsing, per-frame arithmetic, weight bytes from GGUF headers, the Markdown
table and the option parsing. No processes (the unit fixture refuses them)."""

from __future__ import annotations

import struct

import pytest

from q3build.commands import bench as bench_cmd
from q3build.errors import InputError
from q3build.speech.bench import logs, report, runs, weights

LOG = """\
load_tensors: ...
frames generated: 10, speed: 3.21 frames/s
generated 48 frames, 184364 bytes of WAV audio (24000 Hz)
timings: prompt eval 0.21s + generation 9.87s + vocoder 0.00s = total 10.08s
         output audio = 3.84s (audio time = 0.38x process time)
stages: prompt 210.50 ms (14 tokens), talker 3120.25 ms (48 steps), code predictor 5900.00 ms (48 frames), \
codec decode 840.00 ms (48 frames)
wrote out.wav
"""


def test_parse_llama_tts_log_reads_frames_timings_and_stages():
    p = logs.parse_llama_tts_log(LOG)
    assert p["frames"] == 48
    assert p["timings"] == {"prompt_s": 0.21, "generation_s": 9.87, "vocoder_s": 0.0, "total_s": 10.08}
    raw = p["stages_raw"]
    assert raw["prompt_ms"] == 210.5 and raw["prompt_tokens"] == 14
    assert raw["talker_ms"] == 3120.25 and raw["talker_steps"] == 48
    assert raw["predictor_ms"] == 5900.0 and raw["predictor_frames"] == 48
    assert raw["decode_ms"] == 840.0 and raw["decode_frames"] == 48
    assert isinstance(raw["talker_steps"], int)


def test_parse_without_stage_line_leaves_stages_out():
    p = logs.parse_llama_tts_log("\n".join(ln for ln in LOG.splitlines() if not ln.startswith("stages:")))
    assert "stages_raw" not in p and p["frames"] == 48


def test_parse_stage_line_must_match_whole_format():
    broken = LOG.replace("code predictor", "predictor")
    assert "stages_raw" not in logs.parse_llama_tts_log(broken)


def test_per_frame_stages_and_dominant():
    raw = logs.parse_llama_tts_log(LOG)["stages_raw"]
    st = logs.per_frame_stages(raw)
    assert st["talker_ms_per_step"] == pytest.approx(3120.25 / 48)
    assert st["predictor_ms_per_frame"] == pytest.approx(5900 / 48)
    assert st["decode_ms_per_frame"] == pytest.approx(840 / 48)
    name, share = logs.dominant_stage(st)
    assert name == "predictor"
    assert share == pytest.approx(5900 / (210.5 + 3120.25 + 5900 + 840))


def test_per_frame_stages_with_zero_counts_is_none_not_a_crash():
    st = logs.per_frame_stages({"prompt_ms": 1.0, "talker_ms": 0.0, "talker_steps": 0, "predictor_ms": 0.0,
                                 "predictor_frames": 0, "decode_ms": 0.0, "decode_frames": 0})
    assert st["talker_ms_per_step"] is None and st["decode_ms_per_frame"] is None


def test_summarize_rtf_is_wall_over_audio():
    s = logs.summarize(50, 8.0)          # 50 frames = 4 s of audio
    assert s["audio_s"] == pytest.approx(4.0)
    assert s["rtf"] == pytest.approx(2.0)
    assert s["frames_per_s"] == pytest.approx(6.25)
    assert logs.summarize(0, 1.0)["rtf"] is None


def _gguf(tensors: list[tuple[str, int]], *, kv: list[tuple[str, int, bytes]] = (), alignment: int = 32) -> bytes:
    """A GGUF v3 header with the given (name, data bytes) tensors laid out in order, then zeros."""
    def s(text: str) -> bytes:
        b = text.encode()
        return struct.pack("<Q", len(b)) + b

    head = b"GGUF" + struct.pack("<IQQ", 3, len(tensors), len(kv))
    for key, vtype, payload in kv:
        head += s(key) + struct.pack("<I", vtype) + payload
    offset, infos = 0, b""
    for name, nbytes in tensors:
        infos += s(name) + struct.pack("<I", 1) + struct.pack("<Q", nbytes // 4) + struct.pack("<IQ", 0, offset)
        offset += -(-nbytes // alignment) * alignment
    data = head + infos
    data += b"\0" * (-len(data) % alignment)
    return data + b"\0" * offset


def test_gguf_tensor_bytes_from_offsets(tmp_path):
    strings = struct.pack("<IQ", 8, 2) + struct.pack("<Q", 1) + b"a" + struct.pack("<Q", 2) + b"bc"
    kv = [("general.name", 8, struct.pack("<Q", 3) + b"abc"), ("tokenizer.tokens", 9, strings),
          ("general.alignment", 4, struct.pack("<I", 32)), ("scores", 9, struct.pack("<IQ", 6, 3) + b"\0" * 12)]
    f = tmp_path / "m.gguf"
    f.write_bytes(_gguf([("token_embd.weight", 1024), ("blk.0.attn_q.weight", 64), ("output.weight", 96)], kv=kv))
    got = weights.gguf_tensor_bytes(f)
    assert got == {"token_embd.weight": 1024, "blk.0.attn_q.weight": 64, "output.weight": 96}


def test_gguf_rejects_other_files(tmp_path):
    f = tmp_path / "x.gguf"
    f.write_bytes(b"NOPE" + b"\0" * 64)
    with pytest.raises(ValueError):
        weights.gguf_tensor_bytes(f)


def test_weight_bytes_per_frame_counts_predictor_passes():
    talker = {"token_embd.weight": 10_000, "blk.0.attn_q.weight": 100, "output.weight": 30, "output_norm.weight": 2}
    mmproj = {"a.gen.code.blk.0.attn_q.weight": 40, "a.gen.code.blk.0.ffn_down.weight": 60,
              "a.gen.code.output_norm.weight": 1, "a.gen.code.head.weight": 150, "a.gen.code.embd.weight": 9999,
              "a.gen.code.out_embd.weight": 7777, "a.gen.wav.tfm.blk.0.attn_q.weight": 5555}
    w = weights.weight_bytes_per_frame(talker, mmproj)
    assert w["talker_bytes"] == 132                 # token embedding is a row lookup
    assert w["predictor_layer_bytes"] == 101
    assert w["predictor_bytes"] == 101 * 15 + 150   # layers every pass, the stacked heads once
    assert w["bytes_per_frame"] == 132 + 101 * 15 + 150


def test_bandwidth_share():
    r = weights.bandwidth_share(2_000_000_000, 5.0, 20.0)   # 2 GB/frame × 5 frames/s = 10 GB/s
    assert r["weight_read_gbps"] == pytest.approx(10.0)
    assert r["bandwidth_share"] == pytest.approx(0.5)
    assert weights.bandwidth_share(1, None, 20.0)["bandwidth_share"] is None


def test_combine_ratio_and_speedup():
    c = runs.combine({"rtf": 0.5}, {"rtf": 2.0})
    assert c["rtf_ratio"] == pytest.approx(0.25) and c["speedup"] == pytest.approx(4.0)
    assert runs.combine({"rtf": 0.5}, None) == {}


def _doc():
    raw = logs.parse_llama_tts_log(LOG)["stages_raw"]
    ours = {**logs.summarize(48, 10.08), "peak_rss_mib": 1234.0, "stages": logs.per_frame_stages(raw)}
    ref_raw = {"prompt_ms": 300.0, "prompt_tokens": 14, "talker_ms": 4000.0, "talker_steps": 48,
               "predictor_ms": 20000.0, "predictor_frames": 48, "decode_ms": 500.0, "decode_frames": 48}
    ref = {**logs.summarize(48, 25.0), "peak_rss_mib": 5000.0, "stages": logs.per_frame_stages(ref_raw)}
    w = weights.weight_bytes_per_frame({"blk.0.w": 500_000_000}, {"a.gen.code.blk.0.w": 50_000_000})
    c = {"quant": "q8_0", "threads": 2, "ours": ours, "reference": ref, "weights": w, **runs.combine(ours, ref),
         **weights.bandwidth_share(w["bytes_per_frame"], ours["frames_per_s"], 20.0),
         "server": {"ttfa_ms": 612.4}}
    return {"shape": "0.6b", "frames": 48, "machine": {"cpu": "Test CPU", "cpus": 2, "loadavg": 0.1},
            "bandwidth": [{"threads": 2, "gbps": 20.0}], "build": "version: x", "configs": [c],
            "notes": ["a note"]}


def test_markdown_table_has_the_figures():
    doc = _doc()
    md = report.render_markdown([doc])
    c = doc["configs"][0]
    row = next(ln for ln in md.splitlines() if ln.startswith("| q8_0 |"))
    cells = [x.strip() for x in row.strip("|").split("|")]
    assert cells[:3] == ["q8_0", "2", "48"]
    assert cells[3] == f"{c['ours']['rtf']:.2f}" and cells[4] == f"{c['reference']['rtf']:.2f}"
    assert cells[5] == f"{c['rtf_ratio']:.2f}"
    assert cells[6] == "612"
    assert cells[11].startswith("predictor ")
    assert cells[15] == f"{c['bandwidth_share'] * 100:.0f}%"
    assert "## 0.6b shape, 48 frames" in md and "20.0 GB/s on 2 threads" in md and "- a note" in md
    # whether ggml-cpu repacked the weights changes the kernels measured: each run says which
    assert "not repacked (--no-repack)" in md
    assert "repacked by ggml-cpu, as the servers run them" in report.render_markdown([{**doc, "repack": True}])
    # and whether llama ran flash attention (documents before session 14 have no key: they ran -fa off)
    assert "flash attention off (-fa off)" in md
    assert "flash attention auto (on for the CPU), as the servers run" in report.render_markdown(
        [{**doc, "flash_attn": "auto"}])
    ref_row = next(ln for ln in md.splitlines() if ln.startswith("| 2 | "))
    assert f"{c['reference']['rtf']:.2f}" in ref_row


def test_the_cpu_is_named_with_the_features_that_choose_its_kernels():
    cpuinfo = ("processor\t: 0\nmodel name\t: Intel(R) Xeon(R) Processor\n"
               "flags\t\t: fpu sse2 avx2 avx512f avx512_vnni amx_tile amx_int8\n\n"
               "processor\t: 1\nmodel name\t: other\nflags\t\t: fpu\n")
    assert runs.cpu_description(cpuinfo) == ("Intel(R) Xeon(R) Processor", ["avx2", "avx512f", "avx512_vnni", "amx_int8"])
    assert runs.cpu_description("processor\t: 0\nisa\t\t: rv64imafdcv\n") == ("?", [])
    doc = _doc()
    doc["machine"]["cpu_features"] = ["avx2", "amx_int8"]
    assert "Machine: Test CPU (AVX2, AMX_INT8), 2 CPUs;" in report.render_markdown([doc])
    assert "Machine: Test CPU, 2 CPUs;" in report.render_markdown([_doc()])  # runs from before the field


def test_markdown_without_reference_or_server_shows_dashes():
    doc = _doc()
    c = doc["configs"][0]
    c["reference"], c["server"] = None, {"ttfa_ms": None}
    c.pop("rtf_ratio"), c.pop("speedup")
    row = next(ln for ln in report.render_markdown([doc]).splitlines() if ln.startswith("| q8_0 |"))
    cells = [x.strip() for x in row.strip("|").split("|")]
    assert cells[4] == cells[5] == cells[6] == "–"


def test_parse_threads_and_quants():
    assert bench_cmd.parse_threads("1,all", 2) == (1, 2)
    assert bench_cmd.parse_threads("all,2", 2) == (2,)
    with pytest.raises(InputError):
        bench_cmd.parse_threads("0", 2)
    with pytest.raises(InputError):
        bench_cmd.parse_threads("two", 2)
    assert bench_cmd.parse_quants("q8_0, f16") == ("q8_0", "f16")
    with pytest.raises(InputError):
        bench_cmd.parse_quants("q5_k")


def test_shape_name_matches_released_geometry():
    from q3build.speech.model import shapes, tiny

    assert runs.shape_name(tiny.model_config(shapes.SHAPE_0_6B, "custom_voice")) == "0.6b"
    assert runs.shape_name(tiny.model_config(shapes.SHAPE_1_7B, "base")) == "1.7b"
    assert runs.shape_name({"talker_config": {"hidden_size": 7}}).startswith("custom")


def _qwen_tts_config_module(rel: str):
    """One of the official package's config modules, loaded by path (`import qwen_tts` would pull
    in torch and the whole model)."""
    import importlib.util

    spec = importlib.util.find_spec("qwen_tts")
    if spec is None or not spec.submodule_search_locations:
        pytest.skip("qwen-tts is not installed")
    path = __import__("pathlib").Path(list(spec.submodule_search_locations)[0]) / rel
    mspec = importlib.util.spec_from_file_location(f"_q3_{path.stem}", path)
    mod = importlib.util.module_from_spec(mspec)
    mspec.loader.exec_module(mod)
    return mod


def test_released_shapes_agree_with_the_official_config_classes():
    """The values shapes.py cites as the official config classes' defaults are those defaults."""
    from q3build.speech.model import shapes

    cfg = _qwen_tts_config_module("core/models/configuration_qwen3_tts.py")
    tok = _qwen_tts_config_module("core/tokenizer_12hz/configuration_qwen3_tts_tokenizer_v2.py")
    p = cfg.Qwen3TTSTalkerCodePredictorConfig()
    s = cfg.Qwen3TTSSpeakerEncoderConfig()
    t = cfg.Qwen3TTSTalkerConfig()
    d = tok.Qwen3TTSTokenizerV2DecoderConfig(codebook_dim=512)
    for shape in (shapes.SHAPE_0_6B, shapes.SHAPE_1_7B):
        sp = shape.predictor
        assert (sp.hidden, sp.layers, sp.heads, sp.kv_heads, sp.head_dim, sp.ffn, sp.vocab) == \
            (p.hidden_size, p.num_hidden_layers, p.num_attention_heads, p.num_key_value_heads, p.head_dim,
             p.intermediate_size, p.vocab_size)
        sk = shape.speaker
        assert (list(sk.channels), sk.attention, sk.se, sk.res2net_scale, list(sk.kernels), list(sk.dilations)) == \
            (s.enc_channels, s.enc_attention_channels, s.enc_se_channels, s.enc_res2net_scale, s.enc_kernel_sizes,
             s.enc_dilations)
        sd = shape.decoder
        assert (sd.latent, sd.layers, sd.heads, sd.kv_heads, sd.decoder_dim, sd.sliding_window, sd.codebook_size,
                sd.quantizers, tuple(sd.upsample_rates), tuple(sd.upsampling_ratios)) == \
            (d.latent_dim, d.num_hidden_layers, d.num_attention_heads, d.num_key_value_heads, d.decoder_dim,
             d.sliding_window, d.codebook_size, d.num_quantizers, tuple(d.upsample_rates), tuple(d.upsampling_ratios))
        assert (shape.talker.text_hidden, shape.talker.codec_vocab) == (t.text_hidden_size, t.vocab_size)
        # head_dim × heads is the attention width; mrope sections cover half the head (rotary pairs)
        assert sum(shape.talker.mrope_section) == shape.talker.head_dim // 2
    # the 0.6B talker is as wide as the predictor (no small_to_mtp_projection), the 1.7B one is not
    assert shapes.SHAPE_0_6B.talker.hidden == p.hidden_size != shapes.SHAPE_1_7B.talker.hidden


def test_analysis_names_dominant_stage_bandwidth_and_fixed_cost():
    doc = _doc()
    tiny = _doc()
    tiny["shape"] = "tiny"
    t_raw = {"prompt_ms": 20.0, "prompt_tokens": 14, "talker_ms": 48.0, "talker_steps": 48,
             "predictor_ms": 1200.0, "predictor_frames": 48, "decode_ms": 96.0, "decode_frames": 48}
    tiny["configs"][0]["ours"]["stages"] = logs.per_frame_stages(t_raw)
    notes = report.analysis(doc, [tiny])
    assert len(notes) == 1
    n = notes[0]
    assert n.startswith("q8_0, 2 threads, llama-tts: predictor dominates (")
    c = doc["configs"][0]
    assert f"{c['bandwidth_share']:.0%} of the measured read bandwidth" in n
    # tiny predictor 25 ms/frame of the 0.6B's 5900/48 ms
    assert f"predictor 25.0 of {5900 / 48:.1f} ms ({25 / (5900 / 48):.0%})" in n
    assert report.analysis(tiny, [tiny]) == []           # no observations about the tiny run itself
    md = report.render_markdown([doc, tiny])
    assert n in md


def test_kv_cache_bytes_from_metadata():
    meta = {"general.architecture": "qwen3tts", "qwen3tts.block_count": 28, "qwen3tts.context_length": 32768,
            "qwen3tts.attention.head_count_kv": 8, "qwen3tts.attention.key_length": 128,
            "qwen3tts.attention.value_length": 128}
    assert weights.kv_cache_bytes(meta) == 32768 * 28 * 8 * 256 * 2
    assert weights.kv_cache_bytes(meta, n_ctx=1000) == 1000 * 28 * 8 * 256 * 2
    # no key_length: embedding / heads
    meta2 = {k: v for k, v in meta.items() if "length" not in k or k.endswith("context_length")}
    meta2.update({"qwen3tts.embedding_length": 2048, "qwen3tts.attention.head_count": 16})
    assert weights.kv_cache_bytes(meta2) == 32768 * 28 * 8 * 256 * 2
    assert weights.kv_cache_bytes({}) is None


def test_gguf_header_keeps_scalar_metadata(tmp_path):
    kv = [("general.architecture", 8, struct.pack("<Q", 8) + b"qwen3tts"),
          ("qwen3tts.block_count", 4, struct.pack("<I", 28))]
    f = tmp_path / "m.gguf"
    f.write_bytes(_gguf([("a", 32)], kv=kv))
    meta, tensors, types = weights.read_gguf_header(f)
    assert meta == {"general.architecture": "qwen3tts", "qwen3tts.block_count": 28} and tensors == {"a": 32}
    assert types == {"a": 0}


def test_analysis_names_the_f32_share_of_the_predictor():
    doc = _doc()
    w = doc["configs"][0]["weights"]
    w["predictor_f32_matrix_bytes"] = 30_000_000
    note = next(n for n in report.analysis(doc) if "code predictor reads" in n)
    assert note == (f"q8_0: the code predictor reads 50 MB per pass ({w['predictor_bytes'] / w['bytes_per_frame']:.0%} "
                    "of the weight bytes of a frame), of which 30 MB are matrices the converter keeps in f32.")


def test_best_of_keeps_the_fastest_and_every_time():
    times = iter([3.0, 1.5, 2.0])
    r = runs.best_of(3, lambda: {"synth_s": next(times), "tag": "x"})
    assert r["synth_s"] == 1.5 and r["synth_s_runs"] == [3.0, 1.5, 2.0]
    assert runs.best_of(0, lambda: {"synth_s": 4.0})["synth_s_runs"] == [4.0]


def test_parse_server_headers():
    h = {"X-Speech-Frames": "48", "X-Wall-Seconds": "12.000", "X-Speech-Stages-Ms":
         "prompt=300.0 talker=2400.0 code=7200.0 decode=1920.0"}
    r = logs.parse_server_headers(h)
    assert r["frames"] == 48 and r["rtf"] == pytest.approx(12.0 / 3.84)
    assert r["stages"]["predictor_ms_per_frame"] == pytest.approx(150.0)
    assert r["stages"]["decode_ms_per_frame"] == pytest.approx(40.0)
    assert logs.parse_server_headers({"X-Speech-Frames": "48"}) is None
    assert logs.parse_server_headers({**h, "X-Speech-Stages-Ms": "garbage"}) is None


def test_server_table_and_analysis():
    doc = _doc()
    c = doc["configs"][0]
    c["server"]["synthesis"] = logs.parse_server_headers(
        {"X-Speech-Frames": "48", "X-Wall-Seconds": "12.000",
         "X-Speech-Stages-Ms": "prompt=300.0 talker=2400.0 code=7200.0 decode=1920.0"})
    md = report.render_markdown([doc])
    row = next(ln for ln in md.splitlines() if ln.startswith("| q8_0 | 2 | 48 | 3.12 |"))
    cells = [x.strip() for x in row.strip("|").split("|")]
    assert cells[4] == f"{c['reference']['rtf']:.2f}"
    assert cells[5] == f"{3.125 / c['reference']['rtf']:.2f}"
    assert cells[6] == "612 / –" and cells[11].startswith("predictor ")
    assert any(n.startswith("q8_0, 2 threads, llama-server: predictor dominates") for n in report.analysis(doc))


DECODER_LOG = """\
mtmd_helper_gen_audio: decoded 1 of a 1-frame batch in 40.5 ms
mtmd_helper_gen_audio: decoded 1 of a 1-frame batch in 30.0 ms
mtmd_helper_gen_audio: decoded 2 of a 2-frame batch in 50.0 ms
mtmd_helper_gen_audio: decoded 3 of a 4-frame batch in 90.0 ms (not committed)
mtmd_helper_gen_audio: decoded 4 of a 4-frame batch in 80.0 ms
"""


def test_decoder_cost_curve_keeps_the_fastest_full_call_of_each_size():
    c = logs.decoder_cost_curve(DECODER_LOG)
    assert c["curve"] == {"1": {"ms_per_call": 30.0, "ms_per_frame": 30.0, "calls": 2},
                          "2": {"ms_per_call": 50.0, "ms_per_frame": 25.0, "calls": 1},
                          "4": {"ms_per_call": 80.0, "ms_per_frame": 20.0, "calls": 1}}
    assert len(c["calls"]) == 5 and c["calls"][3] == {"frames": 3, "batch": 4, "ms": 90.0}
    assert logs.decoder_cost_curve("no decoder here") is None


def test_decoder_curve_table():
    doc = _doc()
    doc["decoder_curve"] = [{"quant": "q8_0", "threads": 2, **logs.decoder_cost_curve(DECODER_LOG)}]
    md = report.render_markdown([doc])
    assert "| quant | threads | 1 frame | 2 frames | 4 frames |" in md
    assert "| q8_0 | 2 | 30 / 30.0 | 50 / 25.0 | 80 / 20.0 |" in md


def test_decoder_curve_option_takes_powers_of_two(tmp_path, monkeypatch, capsys):
    from q3build import cli
    from ..conftest import REPO
    rc = cli.main(["--project", str(REPO), "bench", "--model", str(tmp_path), "--decoder-curve", "12", "--no-reference"])
    assert rc == 2 and "--decoder-curve 12: expected 0 or a power of two" in capsys.readouterr().err


def test_parse_llama_tts_log_reads_the_reference_encoder_time():
    p = logs.parse_llama_tts_log(LOG + "\nreference: 2000 codes encoded in 812.5 ms\n")
    assert p["reference_encode"] == {"frames": 125, "ms": 812.5}
    assert "reference_encode" not in logs.parse_llama_tts_log(LOG)


def test_clone_table_gives_the_encoder_time_and_the_cached_voice_ttfa():
    doc = _doc()
    assert "Cloned voice" not in report.render_markdown([doc])   # not a cloning run: no table
    c = doc["configs"][0]
    c["ours"]["reference_encode"] = {"frames": 125, "ms": 812.4}
    c["server"].update(ttfa_warm_ms=455.2, voice={"mode": "icl", "recording_s": 10.0})
    md = report.render_markdown([doc])
    assert "Cloned voice" in md
    row = [ln for ln in md.splitlines() if ln.startswith("| q8_0 | 2 | icl |")]
    assert row == ["| q8_0 | 2 | icl | 10.0 | 125 | 812 | 612 / 455 |"]


def test_summary_stage_line_names_each_stage_and_dashes_a_missing_one():
    line = bench_cmd.stages_text({"talker_ms_per_step": 25.383, "predictor_ms_per_frame": 67.86,
                                  "decode_ms_per_frame": None})
    assert line == "talker 25.38 ms/step  predictor 67.86  decode – ms/frame"
    assert len(f"  llama-tts {bench_cmd.stages_text({k: 1000.0 for k in ('talker_ms_per_step', 'predictor_ms_per_frame', 'decode_ms_per_frame')})}") <= 80


# --- bench --slots: memory per speech slot --------------------------------------------------------

SLOT_LOG = """\
0.05.923 I llama_kv_cache: size = 140.00 MiB
0.12.001 I speech: slot 1: talker context of 1280 cells: KV cache 140.60 MiB, compute buffer 16.51 MiB
0.11.999 I speech: slot 0: talker context of 1280 cells: KV cache 140.60 MiB, compute buffer 16.51 MiB
0.12.002 I speech: slot 2: talker context of 1280 cells: KV cache 140.60 MiB
"""


def test_slot_lines_are_read_in_slot_order_and_whole():
    from q3build.speech.bench import slots

    got = slots.parse_slot_lines(SLOT_LOG)
    assert got == [{"slot": 0, "cells": 1280, "kv_mib": 140.6, "compute_mib": 16.51},
                   {"slot": 1, "cells": 1280, "kv_mib": 140.6, "compute_mib": 16.51}]  # slot 2's line is cut
    assert slots.parse_slot_lines("no speech here") == []


def test_slot_counts():
    from q3build.speech.bench import slots

    assert slots.parse_counts("4,1") == (1, 4)
    assert slots.parse_counts("2, 2") == (2,)
    for bad in ("", "0,1", "-1", "one"):
        with pytest.raises(ValueError):
            slots.parse_counts(bad)


def test_slot_summary_is_the_cost_of_one_extra_slot():
    from q3build.speech.bench import slots

    # one shared compute buffer: each of 4 slots shows a quarter of 16 MiB, the single slot all of its 10
    per = [{"slot": i, "cells": 1280, "kv_mib": 140.0, "compute_mib": 4.0} for i in range(4)]
    one = [{"slot": 0, "cells": 1280, "kv_mib": 140.0, "compute_mib": 10.0}]
    runs_ = [{"slots": 4, "idle_mib": 1900.0, "peak_mib": 2000.0, "per_slot": per},
             {"slots": 1, "idle_mib": 1450.0, "peak_mib": 1400.0, "per_slot": one}]
    s = slots.summarize(runs_)
    # (4 x 144 - 150) / 3 = 142: the KV cache and what the shared buffer grows by, per extra slot
    assert s == {"per_extra_slot_mib": 200.0, "per_extra_slot_idle_mib": 150.0, "reserved_per_slot_mib": 142.0,
                 "cells_per_slot": 1280}
    # one count only: what its largest slot reserves
    assert slots.summarize([{"slots": 4, "idle_mib": 1.0, "peak_mib": 2.0, "per_slot": per}])["reserved_per_slot_mib"] \
        == 144.0
    # one count only, no log lines: nothing to subtract
    assert slots.summarize([{"slots": 1, "idle_mib": 1.0, "peak_mib": 2.0, "per_slot": []}]) == {}


def test_slot_markdown_has_a_row_per_document():
    from q3build.speech.bench import slots

    doc = {"kind": "slots", "quant": "q8_0", "threads": 2, "machine": {"cpu": "AMD EPYC", "loadavg": 3.1},
           "runs": [{"slots": 4, "idle_mib": 1900.0, "peak_mib": 2000.0}, {"slots": 1, "idle_mib": 1450.0,
                                                                           "peak_mib": 1400.0}],
           "per_extra_slot_mib": 200.0, "reserved_per_slot_mib": 153.0, "cells_per_slot": 1280}
    text = slots.render_markdown([doc, {**doc, "per_extra_slot_mib": None, "reserved_per_slot_mib": None}],
                                 names=["after", "before"])
    rows = text.splitlines()
    assert len(rows) == 4
    assert rows[2] == "| after | AMD EPYC (3.1) | q8_0, 2 | 1 / 4 | 1400 (1450) / 2000 (1900) | 200 | 153.0 (1280) |"
    assert rows[3].endswith("| – | – |")


def test_markdown_does_not_mix_slot_documents_with_speed_runs(tmp_path):
    import argparse

    (tmp_path / "s.json").write_text('{"kind": "slots", "runs": []}')
    (tmp_path / "r.json").write_text('{"configs": []}')
    args = argparse.Namespace(markdown=[str(tmp_path / "s.json"), str(tmp_path / "r.json")], out=None)
    with pytest.raises(InputError, match="rendered on their own"):
        bench_cmd.run(args, None)


# --- bench --streams: throughput of concurrent streams ---------------------------------------------

def test_stream_counts():
    from q3build.speech.bench import streams

    assert streams.parse_counts("8,1,2,4") == (1, 2, 4, 8)
    assert streams.parse_counts(" 2, 2,") == (2,)
    for bad, why in (("0", "'0' is not a number"), ("x", "'x' is not a number"), ("", "no number"),
                     ("1,-2", "'-2'"), ("65", "from 1 to 64"), ("1.5", "'1.5'")):
        with pytest.raises(ValueError, match=why):
            streams.parse_counts(bad)


def test_stream_record_from_timestamps_and_bytes():
    from q3build.speech.bench import streams

    # 24 frames of s16le at 24 kHz: 1.92 s of audio; sent 0.5 s after the run's first request
    r = streams.stream_record(3, sent=100.5, first=101.25, end=104.34, n_bytes=24 * 1920 * 2, t0=100.0,
                              frames_requested=24)
    assert r["stream"] == 3 and r["sent_s"] == pytest.approx(0.5) and r["end_s"] == pytest.approx(4.34)
    assert r["ttfa_ms"] == pytest.approx(750.0)
    assert r["audio_s"] == pytest.approx(1.92) and r["frames"] == 24
    assert r["wall_s"] == pytest.approx(3.84) and r["rtf"] == pytest.approx(2.0)
    empty = streams.stream_record(0, sent=1.0, first=None, end=2.0, n_bytes=0, t0=1.0, frames_requested=24)
    assert empty["ttfa_ms"] is None and empty["rtf"] is None and empty["audio_s"] == 0


def test_aggregate_is_all_audio_over_first_sent_to_last_finished():
    from q3build.speech.bench import streams

    rec = [streams.stream_record(0, sent=0.0, first=0.4, end=4.0, n_bytes=48000 * 2, t0=0.0, frames_requested=25),
           streams.stream_record(1, sent=0.1, first=0.9, end=6.0, n_bytes=48000 * 2, t0=0.0, frames_requested=25),
           streams.stream_record(2, sent=0.2, first=0.6, end=3.0, n_bytes=48000, t0=0.0, frames_requested=25)]
    a = streams.aggregate(rec)
    # 2 + 2 + 1 s of audio over 6.0 s (sent at 0.0, the last done at 6.0) — not the sum or mean of walls
    assert a["audio_s"] == pytest.approx(5.0) and a["wall_s"] == pytest.approx(6.0)
    assert a["audio_per_wall_s"] == pytest.approx(5.0 / 6.0)
    assert a["rtf_mean"] == pytest.approx((4.0 / 2 + 5.9 / 2 + 2.8 / 1) / 3) and a["rtf_max"] == pytest.approx(2.95)
    assert a["ttfa_ms_mean"] == pytest.approx(1600 / 3) and a["ttfa_ms_max"] == pytest.approx(800.0)
    assert a["short_streams"] == [2]   # 12.5 of 25 frames: ended early (EOS), named
    with pytest.raises(ValueError):
        streams.aggregate([])


def test_summarize_orders_by_streams_and_takes_the_ratio_to_one_stream():
    from q3build.speech.bench import streams

    out = streams.summarize([{"streams": 4, "audio_per_wall_s": 1.5}, {"streams": 1, "audio_per_wall_s": 0.5},
                             {"streams": 2, "audio_per_wall_s": None}])
    assert [r["streams"] for r in out] == [1, 2, 4]
    assert [r["ratio_to_1"] for r in out] == [pytest.approx(1.0), None, pytest.approx(3.0)]
    # without a run of one stream there is nothing to compare with
    assert streams.summarize([{"streams": 2, "audio_per_wall_s": 1.0}])[0]["ratio_to_1"] is None


def test_stream_bodies_differ_in_text_and_seed_and_stream_pcm():
    from q3build.speech.bench import streams

    bodies = [streams.stream_body(i, 24, voice="vivian") for i in range(8)]
    assert len({b["input"] for b in bodies}) == 8 and [b["seed"] for b in bodies] == list(range(8))
    assert all(b["stream_format"] == "audio" and b["response_format"] == "pcm" and b["max_frames"] == 24
               and b["top_k"] == 1 and b["voice"] == "vivian" for b in bodies)


def _streams_doc():
    from q3build.speech.bench import streams

    def run(n, apw, rtf, ttfa):
        return {"streams": n, "audio_per_wall_s": apw, "rtf_mean": rtf, "rtf_max": rtf * 1.1,
                "ttfa_ms_mean": ttfa, "ttfa_ms_max": ttfa * 2, "wall_s": 10.0 * n, "peak_mib": 1400.0 + 160 * n,
                "idle_mib": 1300.0 + 150 * n, "short_streams": [1] if n == 2 else [],
                **({"loadavg": 2.0} if n == 1 else {})}

    return {"kind": "streams", "shape": "0.6b", "quant": "q8_0", "threads": 2, "frames": 24, "build": "version: x",
            "machine": {"cpu": "AMD EPYC", "cpus": 2, "loadavg": 3.1, "loadavg_after": 4.2},
            "runs": streams.summarize([run(2, 0.4, 5.0, 900.0), run(1, 0.25, 4.0, 500.0)]), "notes": ["a note"]}


def test_streams_markdown_has_a_row_per_count():
    from q3build.speech.bench import streams

    md = streams.render_markdown([_streams_doc()], ["before"])
    rows = [ln for ln in md.splitlines() if ln.startswith("| ")]
    assert rows[0].startswith("| streams | aggregate audio s / wall s | ratio to 1 stream |")
    assert rows[1] == "| 1 | 0.250 | 1.00 | 4.00 / 4.40 | 500 / 1000 | 10.0 | 1560 (1450) | 2.00 |"
    assert rows[2] == "| 2 | 0.400 | 1.60 | 5.00 / 5.50 | 900 / 1800 | 20.0 | 1720 (1600) | – |"
    assert "## Concurrent streams: before (0.6b shape, q8_0, 2 threads, 24 frames)" in md
    assert "AMD EPYC, 2 CPUs; load average 3.1 → 4.2" in md
    # a document from before session 14 has no flash_attn: those all ran -fa off
    assert "`q3build bench --model CKPT --streams 1,2 --quant q8_0 --threads 2 --frames 24 --flash-attn off`" in md
    assert "--frames 24 --flash-attn auto`" in streams.render_markdown([{**_streams_doc(), "flash_attn": "auto"}],
                                                                      ["after"])
    assert "- a note" in md and "2 streams: stream(s) 1" in md


def test_markdown_puts_stream_documents_after_the_speed_runs_not_in_their_tables(tmp_path, capsys):
    import argparse
    import json

    (tmp_path / "speed.json").write_text(json.dumps(_doc()))
    (tmp_path / "before.json").write_text(json.dumps(_streams_doc()))
    args = argparse.Namespace(markdown=[str(tmp_path / "before.json"), str(tmp_path / "speed.json")], out=None)
    assert bench_cmd.run(args, None) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Performance")
    assert md.index("## 0.6b shape, 48 frames") < md.index("## Concurrent streams: before")
    speed_table = md[md.index("## 0.6b shape"):md.index("## Concurrent streams")]
    assert "| 1 | 0.250 |" not in speed_table
    # stream documents alone: their own page
    args.markdown = [str(tmp_path / "before.json")]
    assert bench_cmd.run(args, None) == 0
    md = capsys.readouterr().out
    assert md.startswith("# Concurrent streams\n") and "| 2 | 0.400 | 1.60 |" in md and "# Performance" not in md
    # slot documents still stay apart
    (tmp_path / "s.json").write_text('{"kind": "slots", "runs": []}')
    args.markdown = [str(tmp_path / "s.json"), str(tmp_path / "before.json")]
    with pytest.raises(InputError, match="rendered on their own"):
        bench_cmd.run(args, None)


@pytest.mark.parametrize("spec, why", [("0", "'0' is not a number of streams"), ("x", "'x' is not a number"),
                                        ("1,,y", "'y'")])
def test_bad_streams_option_is_a_one_line_error(tmp_path, capsys, spec, why):
    from q3build import cli
    from ..conftest import REPO
    rc = cli.main(["--project", str(REPO), "bench", "--model", str(tmp_path), "--streams", spec])
    err = capsys.readouterr().err
    assert rc == 2 and f"--streams {spec!r}: {why}" in err
    assert "Traceback" not in err and len(err.strip().splitlines()) <= 2   # the error line (and at most a hint)


def test_streams_and_slots_are_separate_runs(tmp_path, capsys):
    from q3build import cli
    from ..conftest import REPO
    rc = cli.main(["--project", str(REPO), "bench", "--model", str(tmp_path), "--streams", "1", "--slots", "1"])
    assert rc == 2 and "--streams and --slots are separate runs" in capsys.readouterr().err


class _FakeStream:
    def __init__(self, status, chunks, text=""):
        self.status_code, self.chunks, self.text = status, chunks, text

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        return False

    def iter_content(self, chunk_size=None):
        for c in self.chunks:
            if isinstance(c, Exception):
                raise c
            yield c


class _FakeClient:
    """Answers each body by its seed and records the seeds it was asked for."""

    def __init__(self, answers):
        import threading
        self.answers, self.seen, self.lock = answers, [], threading.Lock()

    def speech(self, body, *, stream=False):
        assert stream and body["stream_format"] == "audio"
        with self.lock:
            self.seen.append(body["seed"])
        return self.answers[body["seed"]]


def test_concurrent_streams_count_bytes_skip_empty_chunks_and_name_failures():
    import requests

    from q3build.speech.bench import streams

    bodies = [streams.stream_body(i, 2, voice="v") for i in range(3)]
    ok = _FakeClient({0: _FakeStream(200, [b"", b"\0" * 3840, b"\0" * 3840]), 1: _FakeStream(200, [b"\0" * 3840]),
                      2: _FakeStream(200, [])})
    recs = streams.concurrent_streams(ok, bodies, 2)
    assert sorted(ok.seen) == [0, 1, 2]
    assert [r["bytes"] for r in recs] == [7680, 3840, 0] and [r["frames"] for r in recs] == [2, 1, 0]
    assert recs[2]["ttfa_ms"] is None and recs[0]["ttfa_ms"] >= 0 and min(r["sent_s"] for r in recs) == 0
    bad = _FakeClient({0: _FakeStream(200, [b"\0" * 3840]), 1: _FakeStream(503, [], text='{"error": "busy"}'),
                       2: _FakeStream(200, [b"\0" * 3840, requests.exceptions.ChunkedEncodingError("cut")])})
    with pytest.raises(RuntimeError) as e:
        streams.concurrent_streams(bad, bodies, 2)
    assert str(e.value) == 'stream 1: HTTP 503: {"error": "busy"}; stream 2: the stream broke after 3840 bytes: cut'
