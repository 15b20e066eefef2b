"""The IME2 assembler macros (templates/include/spacemit-ime2-asm.h.j2) assembled for real by the
spacemit-k3 zig wrappers: every form against the spec's field layout, and LLVM's golden words.

Uses the pinned zig (fetched into q3build's cache like `make` does); one small object per test."""

from __future__ import annotations

import os
import subprocess

import pytest

from q3build.core import plan as plan_mod
from q3build.project import Project
from q3build.toolchains import kind_of, spacemit

from ..conftest import REPO

# LLVM's MC test for xsmtvdotii (llvm/test/MC/RISCV/xsmtvdotii-valid.s), independent of the spec table
GOLDEN = {
    "vmadot v0, v31, v2, i8": 0xE22FB02B,
    "vmadot v0, v31, v2, i4": 0xC22FB02B,
    "vmadot.hp v16, v2, v8, v0, 3, i4": 0xD081382B,
    "vpack.vv v2, v4, v5, 1": 0x6652112B,
    "vnpack4.vv v1, v3, v5, 1": 0x425190AB,
    # IME1's three-operand form is the i8 form (the K1 check word)
    "vmadot v2, v0, v1": 0xE210312B,
}


@pytest.fixture(scope="module")
def assemble(tmp_path_factory):
    """Assembles inline-asm lines with the rendered spacemit-k3 zig-cc (IME2 header force-included) and
    returns the 32-bit words of .text in order."""
    work = tmp_path_factory.mktemp("ime2")
    env = {**os.environ, "Q3BUILD_WORK_DIR": str(work)}
    project = Project.discover(env, project=str(REPO))
    plan = plan_mod.resolve(project, "spacemit-k3", env, plan_mod.Options())
    # the pinned zig, fetched into q3build's cache as `make` does (nothing to do when it is there)
    kind_of(plan.target).prepare(plan, env)
    plan.write_files(plan.render_dir)
    cc = plan.render_dir / "toolchain" / "zig-cc"
    counter = iter(range(1000))

    def run(lines: list[str]) -> list[int] | str:
        n = next(counter)
        src, obj = work / f"p{n}.c", work / f"p{n}.o"
        body = "".join(f'"{ln}\\n"\n' for ln in lines)
        # naked: the function is exactly the probe lines (no prologue/epilogue words)
        src.write_text(f"__attribute__((naked)) void probe(void) {{ __asm__ volatile(\n{body}); }}\n")
        r = subprocess.run([str(cc), "-march=rv64gcv_zfh_zvfh_zba", "-O2", "-c", str(src), "-o", str(obj)],
                           capture_output=True, text=True, env=env, check=False)
        if r.returncode != 0:
            return r.stderr
        return list(spacemit.instructions(spacemit.elf_section(obj.read_bytes(), ".text")))
    return run


def test_golden_words_from_llvm(assemble):
    words = assemble(list(GOLDEN))
    assert isinstance(words, list), words
    got = {line: f"{w:#010x}" for line, w in zip(GOLDEN, words)}
    assert got == {line: f"{w:#010x}" for line, w in GOLDEN.items()}


def _forms():
    """One probe line per macro form and operand choice: (line, word the spec gives)."""
    regs = [(2, 31, 7), (30, 1, 15), (16, 24, 26), (8, 3, 0)]
    out = []
    for k, name in enumerate(spacemit.DOT_FUNCT3):
        for ty in ("i8", "i4"):
            vd, vs1, vs2 = regs[k % len(regs)]
            out.append((f"{name} v{vd}, v{vs1}, v{vs2}, {ty}", spacemit.encode(name, vd, vs1, vs2, ty=ty)))
    for k, name in enumerate(spacemit.HP_FUNCT7):
        for ty in ("i8", "i4"):
            for scale in (0, 1):
                for imm in range(8):
                    vd, vs1, vs2 = 17 + imm, 2 + scale, 4 + k     # any vd for .hp (odd ones too)
                    out.append((f"{name} v{vd}, v{vs1}, v{vs2}, v{scale}, {imm}, {ty}",
                                spacemit.encode(name, vd, vs1, vs2, ty=ty, scale=scale, imm=imm)))
    for k, name in enumerate(spacemit.PACK):
        for imm in range(4):
            vd, vs1, vs2 = (2 * imm + k, 20 + imm, 9 + k)
            out.append((f"{name} v{vd}, v{vs1}, v{vs2}, {imm}", spacemit.encode(name, vd, vs1, vs2, imm=imm)))
    return out


def test_every_form_has_the_spec_field_layout(assemble):
    forms = _forms()
    words = assemble([line for line, _ in forms])
    assert isinstance(words, list), words
    assert len(words) == len(forms)
    wrong = [(line, f"{w:#010x}", f"{want:#010x}") for (line, want), w in zip(forms, words) if w != want]
    assert wrong == []
    # and the decoder used to count IME2 words in a built binary names each one back
    names = [spacemit.mnemonic_of(w) for w in words]
    assert [n.split()[0] for n in names] == [line.split()[0] for line, _ in forms]
    combos = {(w >> 25, (w >> 12) & 7) for w in words}
    # 4 signednesses x 2 types, 3 .hp x 2 types x 2 scale regs x 8 imm3, 3 packs x 4 imm2 (vpack/vupack share funct7)
    assert len(combos) == 8 + 96 + 12


@pytest.mark.parametrize("line, message", [
    ("vmadot v2, v0, v1, i2", "vmadot: the type must be i8 or i4"),
    ("vmadotsu.hp v3, v0, v1, v2, 0, i4", "vmadotsu.hp: the scale register must be v0 or v1"),
    ("vmadot.hp v3, v0, v1, v0, 8, i8", "vmadot.hp: imm3 must be 0..7"),
    ("vnpack4.vv v1, v3, v5, 4", "vnpack4.vv: imm2 must be 0..3"),
])
def test_bad_operands_are_assembler_errors(assemble, line, message):
    err = assemble([line])
    assert isinstance(err, str) and f"error: {message}" in err
