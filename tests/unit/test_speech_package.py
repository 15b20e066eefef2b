"""The speech package's shared pieces: the command lines every tool runs, and the reference check."""

from __future__ import annotations

from pathlib import Path

import pytest

from q3build import cli
from q3build.errors import ToolMissingError
from q3build.speech import argv, facts, reference

from ..conftest import REPO


def test_server_argv_binds_loopback_and_names_both_model_files():
    a = argv.llama_server(Path("/b/llama-server"), Path("/m"), port=8123, prefix=["qemu-riscv64", "-L", "/x"],
                          threads=2, max_frames=16, extra=argv.BENCH_NUMERICS)
    assert a[:4] == ["qemu-riscv64", "-L", "/x", "/b/llama-server"]
    assert a[4:8] == ["-m", "/m/talker.gguf", "--mmproj", "/m/mmproj.gguf"]
    assert a[a.index("--host") + 1] == "127.0.0.1" and a[a.index("--port") + 1] == "8123"
    assert a[a.index("-t") + 1] == "2" and a[a.index("--tts-max-frames") + 1] == "16"
    assert a[-len(argv.BENCH_NUMERICS):] == list(argv.BENCH_NUMERICS)
    bare = argv.llama_server(Path("/b/llama-server"), None, port=1)
    assert "-m" not in bare and "-t" not in bare


def test_bench_repack_leaves_the_weights_to_ggml_and_keeps_the_rest():
    from q3build.speech.bench.runs import Job
    assert "--no-repack" in Job(text="x", frames=1).numerics
    on = Job(text="x", frames=1, repack=True).numerics
    assert "--no-repack" not in on and on == ("-fa", "auto", *(a for a in argv.BENCH_NUMERICS if a != "--no-repack"))
    assert cli.parser().parse_args(["bench", "--repack"]).repack is True
    assert cli.parser().parse_args(["bench", "--no-repack"]).repack is False


def test_bench_attends_as_the_servers_do_unless_told_not_to():
    """Unasked, the bench runs llama's flash attention at auto (the servers' setting, on for the CPU): before
    session 14 it ran -fa off, a path the product does not take; --flash-attn off compares with those runs."""
    from q3build.speech.bench.runs import Job
    for args, fa in ((["bench"], "auto"), (["bench", "--flash-attn", "off"], "off"),
                     (["bench", "--flash-attn", "on"], "on")):
        assert cli.parser().parse_args(args).flash_attn == fa
        numerics = Job(text="x", frames=1, flash_attn=fa).numerics
        assert numerics[numerics.index("-fa") + 1] == fa and numerics.count("-fa") == 1
    with pytest.raises(SystemExit):
        cli.parser().parse_args(["bench", "--flash-attn", "yes"])
    with pytest.raises(ValueError, match="'yes'"):
        argv.bench_numerics(repack=True, flash_attn="yes")


def test_bench_repacks_as_the_servers_do_unless_told_not_to():
    """Unasked, the bench measures the product's path (ggml-cpu repacks, as llama-server does) at every
    shape, the tiny one included (until 0052-0053 ggml's AMX buffer crashed there)."""
    for args, repack in ((["bench"], True), (["bench", "--repack"], True), (["bench", "--no-repack"], False)):
        assert cli.parser().parse_args(args).repack is repack


def test_tts_argv_is_greedy_and_carries_the_voice():
    v = argv.Voice(speaker="vivian", instruct="calm", reference_wav=Path("/v/alice.wav"))
    a = argv.llama_tts(Path("/b/llama-tts"), Path("/m"), "Hi.", language="german", wav=Path("/o.wav"), voice=v,
                       frames=12, threads=2, streaming_text=True, extra=argv.PARITY_NUMERICS)
    assert a[a.index("--tts-lang") + 1] == "de"           # a name becomes its code
    assert a[a.index("-n") + 1] == "12" and "--tts-streaming-text" in a
    assert a[a.index("--top-k") + 1] == "1" and a[a.index("--temp") + 1] == "0"
    assert a[a.index("--tts-speaker") + 1] == "vivian" and a[a.index("--tts-instruct") + 1] == "calm"
    assert a[a.index("--tts-speaker-file") + 1] == "/v/alice.wav"
    assert a[a.index("-ctk") + 1] == "f32" and a[a.index("-fa") + 1] == "off"
    assert facts.lang_code("xx") == "xx"


def test_missing_model_files_names_each(tmp_path):
    (tmp_path / facts.TALKER).write_bytes(b"")
    assert facts.missing_model_files(tmp_path) == [facts.MMPROJ]


def test_reference_missing_is_exit_5_naming_the_install_command(monkeypatch):
    monkeypatch.setattr(reference, "installed", lambda: False)
    with pytest.raises(ToolMissingError) as e:
        reference.require("model parity")
    assert e.value.exit_code == 5 and "scripts/bootstrap --test" in str(e.value) and "\n" not in str(e.value)


def _checkpoint_and_stage(tmp_path, monkeypatch, *, server: bool):
    """A CustomVoice config and a host stage of empty binaries (llama-server only with `server`)."""
    hf = tmp_path / "hf"
    hf.mkdir()
    (hf / "config.json").write_text('{"tts_model_type": "custom_voice", "talker_config": {"spk_id": {"a": 1}}}')
    stage = tmp_path / "work" / "stage" / "host" / "bin"
    stage.mkdir(parents=True)
    (stage / "llama-tts").write_text("")
    if server:
        (stage / "llama-server").write_text("")   # parity runs the server's route too
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    return hf


@pytest.mark.parametrize("verb", [
    ["model", "parity", "HF", "--model", "M"],
    ["bench", "--model", "HF", "--quant", "q8_0", "--threads", "1"],
])
def test_verbs_that_need_the_reference_stop_in_one_line(verb, monkeypatch, tmp_path, capsys):
    monkeypatch.setattr(reference, "installed", lambda: False)
    hf = _checkpoint_and_stage(tmp_path, monkeypatch, server=True)
    args = [str(hf) if a == "HF" else str(tmp_path / "m") if a == "M" else a for a in verb]
    if verb[0] == "bench":
        args.append("--no-server")
    rc = cli.main(["--project", str(REPO), *args])
    err = capsys.readouterr().err
    assert rc == 5, err
    assert "scripts/bootstrap --test" in err and "Traceback" not in err


def test_tts_argv_clones_in_context_with_a_transcript():
    v = argv.Voice(reference_wav=Path("/v/alice.wav"), reference_text="Hello there.")
    a = argv.llama_tts(Path("/b/llama-tts"), Path("/m"), "Hi.", language="english", wav=Path("/o.wav"), voice=v)
    assert a[a.index("--tts-speaker-file") + 1] == "/v/alice.wav" and a[a.index("--tts-ref-text") + 1] == "Hello there."
    assert "--tts-ref-text" not in argv.llama_tts(Path("/b/llama-tts"), Path("/m"), "Hi.", language="english",
                                                  wav=Path("/o.wav"), voice=argv.Voice(reference_wav=Path("/v/a.wav")))


def test_parity_names_a_missing_server_and_a_penalty_out_of_range(monkeypatch, tmp_path, capsys):
    hf = _checkpoint_and_stage(tmp_path, monkeypatch, server=False)
    stage = tmp_path / "work" / "stage" / "host" / "bin"
    base = ["--project", str(REPO), "model", "parity", str(hf), "--model", str(tmp_path / "m")]
    assert cli.main(base) == 2
    err = capsys.readouterr().err
    assert "llama-server not found" in err and "q3build make --target host" in err
    (stage / "llama-server").write_text("")
    assert cli.main([*base, "--repetition-penalty", "3"]) == 2
    err = capsys.readouterr().err
    assert "--repetition-penalty 3 is outside 0.5 .. 2" in err and "Traceback" not in err
