"""Build targets: ``recipes/<target>.yaml``, validated once into frozen dataclasses.

A target may ``extends:`` another; the parent is deep-merged under it before validation
(mappings merge, lists and scalars replace), so errors still point at the file that has them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path
from typing import Literal

from q3build.core import schema
from q3build.core.schema import doc
from q3build.errors import RecipeError
from q3build.project import PIN_FILE, Project
from q3build.toolchains import KINDS, kind_of

SCHEMA_VERSIONS = (1, 1)
CMakeValue = bool | int | str
VLENS = (128, 256, 512, 1024)

# SpacemiT ggml reads the core type from /proc/cpuinfo (marchid); where that has none (qemu-user shows
# the build machine's) it reads this variable. An id whose top nibble is 0xA (A60 0xA03C, A100 0xA064)
# runs the IME kernels; 0x503C (X60) keeps them compiled but unused, so ggml uses its RVV kernels.
CORE_ARCH_VAR = "SPACEMIT_CORE_ARCH"
IME_FALLBACK_CORE_ARCH = "0x503C"


def core_arch_uses_ime(value: str) -> bool:
    try:
        return (int(value, 16) >> 12) == 0xA
    except ValueError:
        return False


@dataclass(frozen=True, kw_only=True)
class Toolchain:
    kind: Literal["native", "gcc-cross", "clang-cross", "zig", "external"] = doc(
        "native: the host compiler; gcc-cross/clang-cross: a Debian cross compiler; zig: PyPI ziglang; "
        "external: a vendor toolchain at a user-given path", default="native")
    triple: str | None = doc("target triple, e.g. riscv64-linux-gnu (cross kinds)", default=None)
    cc: str | None = doc("C compiler (default: per kind; native: $CC or cc)", default=None)
    cxx: str | None = doc("C++ compiler (default: per kind; native: $CXX or c++)", default=None)
    path: str | None = doc("external: toolchain root; may be overridden with --toolchain-path", default=None)
    sysroot: str | None = doc("target sysroot (cross kinds), e.g. /usr/riscv64-linux-gnu", default=None)
    version: str | None = doc("required toolchain version (e.g. the ziglang release)", default=None)
    apt: list[str] = doc("Debian packages that provide this toolchain", default=())
    pip: list[str] = doc("PyPI packages that provide this toolchain", default=())
    link_libs: list[str] = doc("libraries appended to every link (e.g. -latomic for riscv64 gcc)", default=())
    features: list[str] = doc("zig: extra LLVM target features added to every compile on top of -march "
                              "(e.g. xsmtvdot for SpacemiT IME1)", default=())
    force_include: list[str] = doc("zig: q3build headers from templates/include/ force-included into every "
                                   "compile (e.g. spacemit-ime1-asm.h)", default=())
    append_cxxflags: list[str] = doc("zig: flags the C++ wrapper appends after CMake's, so they win "
                                     "(e.g. -std=gnu++20)", default=())
    glibc: str | None = doc("zig: glibc version the binaries link against (the target's minimum), e.g. 2.36",
                            default=None)
    wheels: dict[str, str] | None = doc("zig: sha256 of each wheel of the pinned PyPI package q3build may fetch into its "
                                 "cache (wheel file name → sha256; pip picks the one for this machine)",
                                 default=None)


@dataclass(frozen=True, kw_only=True)
class Cpu:
    arch: str = doc("target architecture as CMAKE_SYSTEM_PROCESSOR names it (x86_64, riscv64, native)",
                    default="native")
    march: str | None = doc("-march string (riscv64: e.g. rv64gcv_zfh_zvfh_zba_zicbop_zihintpause)", default=None)
    mabi: str | None = doc("-mabi (riscv64: lp64d)", default=None)
    ime: Literal["none", "ime1", "ime2"] = doc("SpacemiT IME generation (matrix extension)", default="none")
    cflags: list[str] = doc("extra C/C++ compile flags", default=())


@dataclass(frozen=True, kw_only=True)
class CMake:
    build_type: Literal["Release", "RelWithDebInfo", "Debug", "MinSizeRel"] = doc("CMAKE_BUILD_TYPE",
                                                                                   default="Release")
    generator: str | None = doc("CMake generator (default: Ninja when installed, else Unix Makefiles)",
                                default=None)
    options: dict[str, CMakeValue] = doc("cache variables (GGML_*, LLAMA_*, BUILD_SHARED_LIBS…)", default=None)
    build_targets: list[str] = doc("CMake targets to build", default=("llama-server", "llama-tts"))


@dataclass(frozen=True, kw_only=True)
class Emulator:
    command: list[str] = doc("argv prefix that runs a target binary on the build machine; "
                             "{sysroot} is replaced by the toolchain sysroot")
    env: dict[str, str] = doc("environment for emulated runs", default=None)
    apt: list[str] = doc("Debian packages that provide the emulator", default=())
    vlen: int | None = doc("RISC-V vector length in bits; {vlen} in command is replaced by it "
                           "(`q3build kernels --vlen` overrides)", default=None)
    ime: bool = doc("the emulator executes SpacemiT IME instructions (stock qemu does not)", default=False)


@dataclass(frozen=True, kw_only=True)
class Runtime:
    host: str = doc("address llama-server binds", default="127.0.0.1")
    port: int = doc("port llama-server listens on", default=8080)
    threads: int = doc("inference threads (0: all online CPUs)", default=0)
    cpu_affinity: str | None = doc("CPU list for taskset, e.g. 0-3 (none: no pinning)", default=None)
    placement: Literal["taskset", "ai-cores"] = doc(
        "where the launcher puts the server: taskset (on cpu_affinity, if set) or ai-cores (SpacemiT K3: the "
        "A100 cores through /proc/set_ai_thread when the kernel has it; taskset still wins when a CPU list "
        "is given)", default="taskset")
    model_dir: str = doc("speech model directory (talker GGUF + mmproj GGUF)", default="/var/lib/q3tts/model")
    talker: str = doc("talker GGUF file name inside model_dir", default="talker.gguf")
    mmproj: str = doc("mmproj GGUF file name inside model_dir", default="mmproj.gguf")
    env: dict[str, str] = doc("environment defaults for the server (overridable by the caller)", default=None)
    extra_args: list[str] = doc("extra llama-server arguments", default=())
    user: str = doc("systemd: account the service runs as", default="q3tts")
    install_prefix: str = doc("systemd: where the staged tree is installed on the device", default="/opt/q3tts")


@dataclass(frozen=True, kw_only=True)
class LibraryLicense:
    component: str = doc("the component's name in the release's SBOM and share/licenses/<component>/ (e.g. LAME)")
    spdx: str = doc("its SPDX licence id (e.g. LGPL-2.0-or-later)")


@dataclass(frozen=True, kw_only=True)
class Library:
    purpose: str = doc("what it gives the build, one line")
    cmake: str = doc("CMake switch the plan sets: ON when every header and archive is found, OFF otherwise "
                     "(the build leaves the feature out)")
    headers: list[str] = doc("headers that must exist, relative to an include directory (e.g. lame/lame.h)")
    libs: list[str] = doc("libraries whose static archive lib<name>.a must exist (e.g. mp3lame)")
    apt: list[str] = doc("Debian -dev packages that provide them (for the host; doctor names them)", default=())
    licenses: dict[str, LibraryLicense] = doc("for each of libs: the component and licence the release records "
                                              "(package ships its licence text when it is linked)", default=None)


@dataclass(frozen=True, kw_only=True)
class Target:
    schema: int = doc("file format version")
    description: str = doc("one line shown by `q3build targets`")
    extends: str | None = doc("target this one is based on", default=None)
    aliases: list[str] = doc("other names for this target; when several targets share an alias, the one with "
                             "the highest alias_preference whose toolchain is available is used "
                             "(not inherited by extends)", default=())
    alias_preference: int = doc("rank among the targets sharing an alias (higher is tried first)", default=0)
    alias_note: str | None = doc("why an alias prefers this target, shown by `plan` (not inherited)", default=None)
    toolchain: Toolchain = doc("compilers", default=Toolchain())
    vendor_toolchain: Toolchain | None = doc("compilers used instead of toolchain when --toolchain-path DIR is "
                                             "given (a vendor toolchain no registry has, kind external)",
                                             default=None)
    cpu: Cpu = doc("instruction set", default=Cpu())
    cmake: CMake = doc("CMake configuration", default=CMake())
    emulator: Emulator | None = doc("how to run target binaries here (cross targets)", default=None)
    runtime: Runtime = doc("launcher and service defaults", default=Runtime())
    libraries: dict[str, Library] = doc("optional libraries linked when found: for a native target in this "
                                        "machine's standard directories, for a cross target only in its "
                                        "sysroot (q3build.toolchains.libraries)", default=None)
    web_ui: bool = doc("build upstream's web UI from source (npm, Node.js) and embed it in llama-server, served "
                       "at /; false leaves it out", default=True)

    @property
    def cross(self) -> bool:
        return kind_of(self).cross


def _checks(t: Target, error) -> None:
    if not SCHEMA_VERSIONS[0] <= t.schema <= SCHEMA_VERSIONS[1]:
        error(("schema",), f"version {t.schema} is not supported (this q3build reads "
                           f"{SCHEMA_VERSIONS[0]}..{SCHEMA_VERSIONS[1]})")
    kind = kind_of(t)
    if kind.needs_triple and not t.toolchain.triple:
        error(("toolchain", "triple"), f"required for toolchain kind {t.toolchain.kind!r}")
    if t.cpu.ime != "none" and t.cpu.arch != "riscv64":
        error(("cpu", "ime"), "SpacemiT IME needs cpu.arch riscv64")
    if not (1 <= t.runtime.port <= 65535):
        error(("runtime", "port"), f"expected 1..65535, got {t.runtime.port}")
    if t.runtime.threads < 0:
        error(("runtime", "threads"), "expected 0 (all CPUs) or a positive count")
    for name in (t.cmake.options or {}):
        if not name.replace("_", "").isalnum():
            error(("cmake", "options", name), "not a valid CMake variable name")
    for section, env in (("runtime", t.runtime.env), ("emulator", t.emulator.env if t.emulator else None)):
        for name in (env or {}):
            if not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", name):
                error((section, "env", name), "not a valid environment variable name")
    for name, lib in (t.libraries or {}).items():
        if not re.fullmatch(r"[A-Z_][A-Z0-9_]*", lib.cmake):
            error(("libraries", name, "cmake"), f"{lib.cmake!r} is not a CMake switch name (upper case)")
        if not lib.headers or not lib.libs:
            error(("libraries", name), "needs at least one header and one lib")
        for i, n in enumerate(lib.libs):
            if not re.fullmatch(r"[A-Za-z0-9_+.-]+", n) or n.startswith("lib"):
                error(("libraries", name, "libs", i), f"{n!r}: expected a library name without lib/.a (e.g. mp3lame)")
            if n not in (lib.licenses or {}):
                error(("libraries", name, "licenses"), f"no entry for {n}: a linked library needs its component "
                                                       "name and SPDX licence id (the release ships its text)")
        for n, lic in (lib.licenses or {}).items():
            if n not in lib.libs:
                error(("libraries", name, "licenses", n), f"{n!r} is not one of libs ({', '.join(lib.libs)})")
            if not re.fullmatch(r"[A-Za-z0-9.+-]+( (AND|OR|WITH) [A-Za-z0-9.+-]+)*", lic.spdx):
                error(("libraries", name, "licenses", n, "spdx"), f"{lic.spdx!r} is not an SPDX licence expression")
            if not re.fullmatch(r"[A-Za-z0-9][A-Za-z0-9._+-]*", lic.component):
                error(("libraries", name, "licenses", n, "component"),
                      f"{lic.component!r}: expected a name usable as a directory (letters, digits, . _ + -)")
    if not t.cmake.build_targets:
        error(("cmake", "build_targets"), "at least one target is required")
    for i, alias in enumerate(t.aliases):
        if not re.fullmatch(r"[a-z0-9][a-z0-9._-]*", alias):
            error(("aliases", i), f"{alias!r} is not a valid target name (lower case, digits, . _ -)")
    for other in KINDS.values():
        for key in other.own_keys:
            if getattr(t.toolchain, key) and key not in kind.own_keys:
                error(("toolchain", key), f"only used by toolchain kind {other.name!r} (this is {t.toolchain.kind!r})")
    for wheel, sha in (t.toolchain.wheels or {}).items():
        if not re.fullmatch(r"[0-9a-f]{64}", sha) or not wheel.endswith(".whl"):
            error(("toolchain", "wheels", wheel), "expected <wheel file name>.whl: <sha256, 64 hex digits>")
    for i, name in enumerate(t.toolchain.force_include):
        if "/" in name or not name.endswith(".h"):
            error(("toolchain", "force_include", i), f"{name!r}: expected a header file name from templates/include/")
    if t.toolchain.glibc and not re.fullmatch(r"2\.\d+", t.toolchain.glibc):
        error(("toolchain", "glibc"), f"expected a glibc version like 2.36, got {t.toolchain.glibc!r}")
    if t.emulator and t.emulator.vlen is not None and t.emulator.vlen not in VLENS:
        error(("emulator", "vlen"), f"expected one of {', '.join(map(str, VLENS))}, got {t.emulator.vlen}")
    if t.emulator and t.cpu.ime != "none" and not t.emulator.ime:
        arch = (t.emulator.env or {}).get(CORE_ARCH_VAR)
        if arch is None:
            error(("emulator", "env"), f"cpu.ime {t.cpu.ime}: an emulator without IME needs {CORE_ARCH_VAR} "
                                       f"(e.g. {IME_FALLBACK_CORE_ARCH}: IME compiled but unused)")
        elif core_arch_uses_ime(arch):
            error(("emulator", "env", CORE_ARCH_VAR), f"{arch} enables IME, which this emulator cannot run "
                                                       f"(emulator.ime is false); use {IME_FALLBACK_CORE_ARCH}")


def names(project: Project) -> list[str]:
    pin = Path(PIN_FILE).name
    return sorted(p.stem for p in project.recipes_dir.glob("*.yaml") if p.name != pin)


NOT_INHERITED = ("description", "aliases", "alias_preference", "alias_note")


def _merge(base: dict, over: dict) -> dict:
    out = dict(base)
    for k, v in over.items():
        out[k] = _merge(out[k], v) if isinstance(v, dict) and isinstance(out.get(k), dict) else v
    return out


def _raw(project: Project, name: str, chain: tuple[str, ...]) -> tuple[dict, str, str]:
    path = project.recipes_dir / f"{name}.yaml"
    display = project.display(path)
    if name in chain:
        raise RecipeError(f"{display}: extends: cycle {' -> '.join((*chain, name))}")
    data, text = schema.read_yaml(path, display=display)
    if not isinstance(data, dict):
        raise RecipeError(f"{display}: expected a mapping at the top level")
    parent = data.get("extends")
    if parent is None:
        return data, text, display
    if not isinstance(parent, str) or parent not in names(project):
        raise RecipeError(f"{display}: extends: unknown target {parent!r} (known: {', '.join(names(project))})")
    pdata, _, _ = _raw(project, parent, (*chain, name))
    merged = _merge({k: v for k, v in pdata.items() if k not in NOT_INHERITED}, data)
    return merged, text, display


def alias_candidates(project: Project, alias: str) -> list[tuple[str, Target]]:
    """The targets that declare ``alias``, most preferred first ([] if it is no alias)."""
    found = []
    for name in names(project):
        t = load(project, name)
        if alias in t.aliases:
            found.append((name, t))
    found.sort(key=lambda nt: -nt[1].alias_preference)
    for (a, ta), (b, tb) in zip(found, found[1:]):
        if ta.alias_preference == tb.alias_preference:
            raise RecipeError(f"recipes/{a}.yaml, recipes/{b}.yaml: alias {alias!r} is declared by both with "
                              f"alias_preference {ta.alias_preference}; give them different preferences")
    return found


def all_aliases(project: Project) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for name in names(project):
        for a in load(project, name).aliases:
            out.setdefault(a, []).append(name)
    return out


def load(project: Project, name: str) -> Target:
    import difflib

    known = names(project)
    if name not in known:
        close = difflib.get_close_matches(name, known, n=1)
        hint = f" (did you mean {close[0]!r}?)" if close else ""
        raise RecipeError(f"unknown target {name!r}{hint}; known targets: {', '.join(known)}")
    data, text, display = _raw(project, name, ())
    target = schema.parse(Target, data, file=display, text=text, checks=_checks)
    for i, alias in enumerate(target.aliases):
        if alias in known:
            raise RecipeError(f"{display}: aliases[{i}]: {alias!r} is already a target name")
    return target
