"""riscv64 and SpacemiT K1/K3 for real: zig cross builds of the pinned tree, run under qemu-user.

Needs what `scripts/bootstrap --test` installs (qemu-user, libc6-riscv64-cross; make fetches zig 0.17.1 itself).
Cold: ~4-5 min per build on 2 cores (zig's libc++ bootstrap once per machine, in the q3build cache);
ccache and the zig cache make reruns take seconds. The kernel tests run under qemu (several minutes).
"""

from __future__ import annotations

import json
import shutil
import subprocess

import pytest

from q3build import cli
from q3build.toolchains import spacemit

from ..conftest import REPO

pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def work(tmp_path_factory):
    """One workspace for the module: the kernel tests reuse the riscv64 build directory."""
    return tmp_path_factory.mktemp("rvwork")


@pytest.fixture
def q3(work, monkeypatch, capsys):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(work))

    def call(*args) -> tuple[int, dict | None]:
        capsys.readouterr()
        rc = cli.main(["--project", str(REPO), *args])
        captured = capsys.readouterr()
        call.err = captured.err
        out = captured.out
        return rc, json.loads(out) if "--json" in args and out.strip().startswith("{") else None
    return call


def file_of(path) -> str:
    if not shutil.which("file"):
        pytest.skip("`file` is not installed (scripts/bootstrap --test installs it)")
    return subprocess.run(["file", "-b", str(path)], capture_output=True, text=True, check=True).stdout.strip()


def test_make_riscv64_runs_version_under_qemu(q3, work):
    assert q3("sync", "--source", "pypi-sdist")[0] == 0
    rc, s = q3("make", "--target", "riscv64", "--json")
    assert rc == 0, s
    assert s["version_checked_with"].startswith("qemu-riscv64 -L /usr/riscv64-linux-gnu -cpu rv64,v=true,vlen=256")
    info = json.loads((work / "stage" / "riscv64" / "share" / "q3build" / "build-info.json").read_text())
    assert f"build 11312, commit 0c1e570, q3build 0.1.0 series {info['plan']['series_digest'][:12]}" in s["version"]
    server = work / "stage" / "riscv64" / "bin" / "llama-server"
    desc = file_of(server)
    # one binary per tool: libc++ linked in, only glibc (>= 2.36) needed on the board
    assert desc.startswith("ELF 64-bit LSB") and "UCB RISC-V" in desc and "double-float ABI" in desc
    assert "ld-linux-riscv64-lp64d.so.1" in desc
    assert info["plan"]["toolchain"]["kind"] == "zig"
    # the plan names the pinned zig without running it; the compiler cmake found is its clang 22
    assert info["plan"]["toolchain"]["cc_version"].startswith("zig 0.17.1 (PyPI ziglang==0.17.1")
    found = next((work / "build" / "riscv64" / "CMakeFiles").glob("*/CMakeCCompiler.cmake")).read_text()
    assert 'set(CMAKE_C_COMPILER_ID "Clang")' in found and 'set(CMAKE_C_COMPILER_VERSION "22.' in found
    assert info["plan"]["cmake"]["cache"]["BUILD_SHARED_LIBS"] == "OFF"
    assert info["version_checked_with"].startswith("qemu-riscv64 ")
    # the web UI, target-independent, is embedded in the cross build as in the native one
    assert info["ui"]["embedded"] is True and info["plan"]["cmake"]["cache"]["LLAMA_BUILD_UI"] == "ON"
    # the same build again: nothing configured or compiled
    rc, again = q3("make", "--target", "riscv64", "--json")
    assert rc == 0 and again["configured"] is False
    assert again["ccache"].get("misses", 0) == 0


def test_kernels_riscv64_pass_under_qemu(q3):
    rc, s = q3("kernels", "--target", "riscv64", "--json")
    assert s is not None, "no JSON summary"
    runs = {(r["test"], r["vlen"], r["op"]): r for r in s["runs"]}
    ops = ("MUL_MAT", "GET_ROWS", "ROPE", "RMS_NORM", "SOFT_MAX", "IM2COL", "CONV_TRANSPOSE_1D", "SNAKE_FUSE")
    assert set(runs) == {("test-quantize-fns", v, None) for v in (128, 256, 1024)} | {
        ("test-backend-ops", 256, op) for op in ops}
    for key, r in runs.items():
        assert r["ok"], (key, r["failures"], r["tail"])
    qf = runs[("test-quantize-fns", 256, None)]
    for t in ("q4_0", "q8_0", "f16"):
        assert qf["cases"].get(t, 0) >= 2, qf["cases"]
    for op in ops:
        assert runs[("test-backend-ops", 256, op)]["cases"].get(op, 0) > 0, op
    assert rc == 0


def test_make_spacemit_alias_builds_k3_with_ime2_and_runs_with_the_fallback(q3, work, monkeypatch):
    # the user's environment asks for IME2: qemu cannot run it, so the emulated run says so and uses 0x503C
    monkeypatch.setenv("SPACEMIT_CORE_ARCH", "0xA064")
    rc, s = q3("make", "--target", "spacemit", "--json")
    assert rc == 0, s
    assert s["target"] == "spacemit-k3" and s["alias"] == "spacemit"
    assert s["alias_reason"].startswith("K3 is the board of the SpacemiT llama.cpp fork's published figures")
    assert "series" in s["version"]
    # the A100 code runs at its own vector length under qemu
    assert "vlen=1024" in s["version_checked_with"]
    assert "SPACEMIT_CORE_ARCH=0xA064 asks for SpacemiT IME2, but qemu-riscv64 has no IME instructions" in \
        " ".join(q3.err.split())
    log = (work / "build" / "spacemit-k3.logs" / "configure.log").read_text()
    assert "RISCV64_SPACEMIT_IME_SPEC: RISCV64_SPACEMIT_IME1;RISCV64_SPACEMIT_IME2" in log
    assert "RISCV64_SPACEMIT_IME_SPEC: RISCV64_SPACEMIT_IME1;RISCV64_SPACEMIT_IME2" in q3.err
    server = work / "stage" / "spacemit-k3" / "bin" / "llama-server"
    desc = file_of(server)
    assert "UCB RISC-V" in desc and "double-float ABI" in desc
    info = json.loads((work / "stage" / "spacemit-k3" / "share" / "q3build" / "build-info.json").read_text())
    assert info["plan"]["toolchain"]["kind"] == "zig" and info["plan"]["toolchain"]["path"] is None
    # the IME2 kernels are in the binary: every family the kernels use, by its spec encoding
    words = spacemit.count_words(server)
    print(f"\nIME words in spacemit-k3 llama-server: {dict(sorted(words.items()))}")
    families = {name.split()[0] for name in words if spacemit.is_ime2(name)}
    assert {"vmadotu", "vmadotsu", "vmadot.hp", "vmadotu.hp", "vmadotsu.hp", "vpack.vv", "vupack.vv",
            "vnpack4.vv"} <= families
    assert words.get("vmadot i8", 0) > 0  # vmadot's i8 form is IME1's encoding, counted as such
    assert sum(n for name, n in words.items() if spacemit.is_ime2(name)) >= 100
    launcher = (work / "stage" / "spacemit-k3" / "bin" / "q3tts-serve").read_text()
    assert "SPACEMIT_CORE_ARCH=0xA064" in launcher and "Q3TTS_AI_THREAD_FILE=/proc/set_ai_thread" in launcher


def test_every_ime_line_of_the_pinned_kernels_assembles_to_its_spec_word(work, tmp_path):
    """Each distinct IME asm line in ggml's ime1/ime2 kernels, assembled by the spacemit-k3 wrappers."""
    import re

    src = work / "src" / "llama.cpp" / "ggml" / "src" / "ggml-cpu" / "spacemit"
    pattern = re.compile(r'"\s*((?:vmadot[a-z.]*|vpack\.vv|vupack\.vv|vnpack4\.vv)\s[^"\\]*?)\s*(?:\\n|")')
    lines = sorted({" ".join(m.group(1).split()) for f in ("ime1_kernels.cpp", "ime2_kernels.cpp")
                    for m in pattern.finditer((src / f).read_text())})
    assert len(lines) > 200, lines[:5]
    expected = [_spec_word(ln) for ln in lines]
    words = _assemble(work, tmp_path, lines)
    wrong = [(ln, f"{w:#010x}", f"{e:#010x}") for ln, w, e in zip(lines, words, expected) if w != e]
    assert len(words) == len(lines) and wrong == []


def _spec_word(line: str) -> int:
    name, rest = line.split(" ", 1)
    ops = [o.strip() for o in rest.split(",")]
    vd, vs1, vs2 = (int(o[1:]) for o in ops[:3])
    if name in spacemit.DOT_FUNCT3:
        return spacemit.encode(name, vd, vs1, vs2, ty=ops[3] if len(ops) > 3 else "i8")
    if name in spacemit.HP_FUNCT7:
        return spacemit.encode(name, vd, vs1, vs2, scale=int(ops[3][1:]), imm=int(ops[4]), ty=ops[5])
    return spacemit.encode(name, vd, vs1, vs2, imm=int(ops[3]))


def _assemble(work, tmp_path, lines) -> list[int]:
    cc = work / "render" / "spacemit-k3" / "toolchain" / "zig-cc"
    body = "".join(f'"{ln}\\n"\n' for ln in lines)
    (tmp_path / "k.c").write_text(f"__attribute__((naked)) void k(void) {{ __asm__ volatile(\n{body}); }}\n")
    r = subprocess.run([str(cc), "-march=rv64gcv_zfh_zvfh_zba", "-c", str(tmp_path / "k.c"), "-o",
                        str(tmp_path / "k.o")], capture_output=True, text=True, check=False)
    assert r.returncode == 0, r.stderr[-2000:]
    return list(spacemit.instructions(spacemit.elf_section((tmp_path / "k.o").read_bytes(), ".text")))


def test_make_spacemit_k1_has_ime1_only_and_runs_with_the_fallback(q3, work, monkeypatch):
    # the user's environment asks for IME1: qemu cannot run it, so the emulated run says so and uses 0x503C
    monkeypatch.setenv("SPACEMIT_CORE_ARCH", "0xA03C")
    rc, s = q3("make", "--target", "spacemit-k1", "--json")
    assert rc == 0, s
    assert s["target"] == "spacemit-k1" and "series" in s["version"]
    assert "SPACEMIT_CORE_ARCH=0xA03C asks for SpacemiT IME1, but qemu-riscv64 has no IME instructions" in \
        " ".join(q3.err.split())
    log = (work / "build" / "spacemit-k1.logs" / "configure.log").read_text()
    assert "RISCV64_SPACEMIT_IME_SPEC: RISCV64_SPACEMIT_IME1\n" in log
    server = work / "stage" / "spacemit-k1" / "bin" / "llama-server"
    assert "UCB RISC-V" in file_of(server)
    words = spacemit.count_words(server)
    assert words["vmadot i8"] > 0 and not [n for n in words if spacemit.is_ime2(n)], words
    launcher = (work / "stage" / "spacemit-k1" / "bin" / "q3tts-serve").read_text()
    assert "SPACEMIT_CORE_ARCH=0xA03C" in launcher and "set_ai_thread" not in launcher


def test_spacemit_k3_with_a_missing_toolchain_path_is_one_clear_line(q3, tmp_path):
    rc, _ = q3("make", "--target", "spacemit-k3", "--toolchain-path", str(tmp_path / "nowhere"))
    err = q3.err.splitlines()
    assert rc == 5
    assert err[0] == f"q3build: error: --toolchain-path {tmp_path / 'nowhere'}: not a directory"


def _speak(server_argv, env, log, body, dump):
    """Starts a llama-server (argv may be emulated), sends one speech request, stops it; returns the
    WAV bytes and the greedy codes the helper dumped."""
    import numpy as np
    import requests

    from q3build.speech.server import Server, free_port

    port = free_port()
    env = {**env, "MTMD_GEN_AUDIO_DUMP": str(dump)}
    dump.mkdir(parents=True, exist_ok=True)
    with Server([*server_argv, "--host", "127.0.0.1", "--port", str(port)], env, log, port) as s:
        why = s.wait_healthy(300)
        assert why is None, why
        r = requests.post(f"{s.base}/v1/audio/speech", json=body, timeout=600)
        assert r.status_code == 200, r.text
    return r.content, np.fromfile(dump / "codes.i32", dtype=np.int32)


@pytest.mark.parametrize("target", ["riscv64", "spacemit-k3"])
def test_tiny_speech_under_qemu_has_the_x86_greedy_codes(q3, work, tmp_path, target):
    """The riscv64 llama-server under qemu (RVV, VLEN 256; spacemit-k3: the A100 build at VLEN 1024 with
    the non-IME fallback) answers a speech request with a valid 24 kHz WAV whose greedy codes equal the
    native build's; prints the wall time of the emulated run."""
    import io
    import os
    import time

    import numpy as np
    import soundfile as sf

    from q3build.core import plan as plan_mod
    from q3build.project import Project
    from q3build.toolchains import emulation

    assert q3("make", "--target", target)[0] == 0
    assert q3("make", "--target", "host")[0] == 0
    assert q3("model", "tiny", "--variant", "custom_voice", "--out", str(tmp_path / "hf"))[0] == 0
    assert q3("model", "convert", str(tmp_path / "hf"), "--out", str(tmp_path / "model"))[0] == 0
    model = ["-m", str(tmp_path / "model" / "talker.gguf"), "--mmproj", str(tmp_path / "model" / "mmproj.gguf"),
             "-c", "512", "-np", "1", "-t", "2",
             # f32 end to end, as parity runs: CPU flash attention and an f16 cache round differently per ISA
             "-fa", "off", "-ctk", "f32", "-ctv", "f32"]
    text = "Hello from a RISC-V board."
    body = {"input": text, "voice": "vivian", "language": "english", "top_k": 1, "seed": 1, "max_frames": 12,
            "response_format": "wav"}

    native = [str(work / "stage" / "host" / "bin" / "llama-server"), *model]
    x86_wav, x86_codes = _speak(native, os.environ, tmp_path / "x86.log", body, tmp_path / "dump-x86")

    plan = plan_mod.resolve(Project.discover(os.environ, project=str(REPO)), target, os.environ,
                            plan_mod.Options())
    env, _ = emulation.environment(plan, os.environ)
    if target == "spacemit-k3":
        # IME compiled in, the fallback chosen: qemu has no IME instructions
        assert env["SPACEMIT_CORE_ARCH"] == "0x503C" and "vlen=1024" in emulation.argv(plan)[-1]
    emulated = [*emulation.argv(plan), str(work / "stage" / target / "bin" / "llama-server"), *model]
    t0 = time.monotonic()
    rv_wav, rv_codes = _speak(emulated, env, tmp_path / "rv.log", body, tmp_path / "dump-rv")
    wall = time.monotonic() - t0
    print(f"\nqemu {target} speech run (start, load, 12 frames, stop): {wall:.1f} s wall")

    info = sf.info(io.BytesIO(rv_wav))
    assert (info.samplerate, info.channels, info.subtype) == (24000, 1, "PCM_16") and info.frames > 0
    assert x86_codes.size >= 16 and x86_codes.size % 16 == 0
    np.testing.assert_array_equal(rv_codes, x86_codes)

    # llama-tts, the same request on the command line: the same codes natively and under qemu
    tts_args = [*model[:4], "-t", "2", "-fa", "off", "-ctk", "f32", "-ctv", "f32", "-p", text,
                "--tts-speaker", "vivian", "--tts-lang", "english", "-n", "12", "--top-k", "1", "-s", "1"]
    for name, prefix, run_env in (("x86", [], os.environ), ("rv", emulation.argv(plan), env)):
        dump = tmp_path / f"tts-{name}"
        dump.mkdir()
        tool = work / "stage" / ("host" if name == "x86" else target) / "bin" / "llama-tts"
        r = subprocess.run([*prefix, str(tool), *tts_args, "-o", str(dump / "out.wav")], capture_output=True,
                           text=True, env={**run_env, "MTMD_GEN_AUDIO_DUMP": str(dump)}, timeout=600)
        assert r.returncode == 0, r.stderr[-2000:]
        np.testing.assert_array_equal(np.fromfile(dump / "codes.i32", dtype=np.int32), x86_codes, err_msg=name)
