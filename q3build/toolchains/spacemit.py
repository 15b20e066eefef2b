"""SpacemiT IME instruction words: the spec's encodings, and counting them in a built binary.

Every IME instruction is an R-type word on the custom-1 major opcode 0x2B (vd bits 11:7, vs1 19:15,
vs2 24:20) with funct3/funct7 from SpacemiT's IME extension spec, ch. 8 (table in
templates/include/spacemit-ime2-asm.h.j2, which emits them with `.insn r` for zig's LLVM 22).
``encode`` is the spec written as code, for checking what the assembler macros produce;
``count_words`` decodes a riscv64 ELF's .text linearly and counts the IME words by mnemonic.
"""

from __future__ import annotations

import struct
from collections import Counter
from pathlib import Path

OPCODE = 0x2B
# vmadot{u,us,su,}: funct3 by signedness; funct7 by element type
DOT_FUNCT3 = {"vmadotu": 0, "vmadotus": 1, "vmadotsu": 2, "vmadot": 3}
DOT_FUNCT7 = {"i8": 0x71, "i4": 0x61}
# .hp forms: funct3 is imm3; funct7 by element type, +1 when the scale register is v1
HP_FUNCT7 = {"vmadot.hp": {"i8": 0x78, "i4": 0x68}, "vmadotu.hp": {"i8": 0x76, "i4": 0x66},
             "vmadotsu.hp": {"i8": 0x7A, "i4": 0x6A}}
# packs: (funct7, funct3 base added to imm2)
PACK = {"vpack.vv": (0x33, 0), "vupack.vv": (0x33, 4), "vnpack4.vv": (0x21, 0)}


def word(funct7: int, funct3: int, vd: int, vs1: int, vs2: int) -> int:
    return (funct7 << 25) | (vs2 << 20) | (vs1 << 15) | (funct3 << 12) | (vd << 7) | OPCODE


def encode(mnemonic: str, vd: int, vs1: int, vs2: int, *, ty: str = "i8", scale: int = 0, imm: int = 0) -> int:
    """The spec's word for one instruction (registers as numbers: v16 → 16)."""
    if mnemonic in DOT_FUNCT3:
        return word(DOT_FUNCT7[ty], DOT_FUNCT3[mnemonic], vd, vs1, vs2)
    if mnemonic in HP_FUNCT7:
        return word(HP_FUNCT7[mnemonic][ty] + scale, imm, vd, vs1, vs2)
    funct7, base = PACK[mnemonic]
    return word(funct7, base + imm, vd, vs1, vs2)


def mnemonic_of(w: int) -> str | None:
    """The IME mnemonic a 32-bit word encodes (with its type/scale/imm form), or None."""
    if w & 0x7F != OPCODE:
        return None
    funct7, funct3 = w >> 25, (w >> 12) & 7
    for ty, f7 in DOT_FUNCT7.items():
        if funct7 == f7:
            name = next(n for n, f3 in DOT_FUNCT3.items() if f3 == funct3)
            return f"{name} {ty}"
    for name, by_ty in HP_FUNCT7.items():
        for ty, f7 in by_ty.items():
            if funct7 in (f7, f7 + 1):
                return f"{name} v{funct7 - f7} {ty}"
    for name, (f7, base) in PACK.items():
        if funct7 == f7 and base <= funct3 < base + 4:
            return name
    return None


# the words only IME2 has (IME1 is vmadot i8 alone)
def is_ime2(name: str) -> bool:
    return name != "vmadot i8"


def elf_section(data: bytes, name: str) -> bytes:
    """A section's bytes from a little-endian ELF64 file (enough for riscv64 objects and executables)."""
    if data[:4] != b"\x7fELF" or data[4] != 2 or data[5] != 1:
        raise ValueError("not a little-endian ELF64 file")
    shoff, = struct.unpack_from("<Q", data, 0x28)
    shentsize, shnum, shstrndx = struct.unpack_from("<HHH", data, 0x3A)

    def header(i):
        return struct.unpack_from("<IIQQQQ", data, shoff + i * shentsize)
    strtab = header(shstrndx)
    names = data[strtab[4]:strtab[4] + strtab[5]]
    for i in range(shnum):
        sh_name, _, _, _, off, size = header(i)
        if names[sh_name:names.index(b"\0", sh_name)].decode() == name:
            return data[off:off + size]
    raise ValueError(f"no {name} section")


def instructions(text: bytes):
    """32-bit instruction words of a RISC-V code section, decoded linearly (16-bit RVC ones skipped)."""
    i = 0
    while i + 2 <= len(text):
        half = text[i] | (text[i + 1] << 8)
        if half & 3 != 3:
            i += 2
            continue
        if i + 4 > len(text):
            break
        yield struct.unpack_from("<I", text, i)[0]
        i += 4


def count_words(path: Path) -> Counter:
    """IME words in an ELF's .text, by mnemonic form ("vmadot i8", "vpack.vv", …)."""
    text = elf_section(Path(path).read_bytes(), ".text")
    return Counter(n for n in map(mnemonic_of, instructions(text)) if n)
