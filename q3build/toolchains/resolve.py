"""Toolchain kinds as data: which compilers a target uses, and which packages provide them.

``resolve`` finds the compilers and reads their versions (the toolchain id that goes into the
cache key and the manifest). ``doctor_checks`` lists what a target needs on this machine.
"""

from __future__ import annotations

import hashlib
import importlib.util
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from q3build import proc
from q3build.core.recipe import Target
from q3build.errors import ToolMissingError

# The compiler wrappers q3build renders for a zig toolchain (templates/zig-wrapper.sh.j2), by role.
ZIG_WRAPPERS = {"cc": "zig-cc", "cxx": "zig-c++", "ar": "zig-ar", "ranlib": "zig-ranlib"}
ZIG_PIP = "ziglang"


@dataclass(frozen=True)
class Tool:
    name: str          # what is looked up on PATH (or an absolute path)
    purpose: str
    apt: str | None = None
    pip: str | None = None
    required: bool = True


@dataclass(frozen=True, kw_only=True)
class ResolvedToolchain:
    kind: str
    cc: str
    cxx: str
    cc_version: str
    cxx_version: str
    triple: str | None
    sysroot: str | None
    zig: str | None = None          # zig kind: the zig executable the wrappers run
    path: str | None = None         # external kind: the toolchain root (recorded in the manifest)

    @property
    def id(self) -> str:
        return hashlib.sha256((f"{self.kind}\0{self.cc}\0{self.cc_version}\0{self.cxx}\0{self.cxx_version}\0"
                              f"{self.triple}\0{self.sysroot}"
                              + (f"\0{self.zig}\0{self.path}" if self.zig or self.path else "")).encode()
                              ).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.kind}: {self.cc_version}"


# Tools every build needs, with the Debian package that provides each.
BASE_TOOLS = (
    Tool("git", "fetch and patch the source", apt="git"),
    Tool("cmake", "configure llama.cpp", apt="cmake"),
    Tool("ninja", "fast parallel builds (falls back to make)", apt="ninja-build", required=False),
    Tool("make", "build without ninja", apt="make", required=False),
    Tool("ccache", "compiler cache: warm rebuilds in seconds", apt="ccache", required=False),
)


def compilers(target: Target, env: Mapping[str, str], wrapper_dir: Path | None = None) -> tuple[str, str]:
    tc = target.toolchain
    if tc.kind == "zig":
        d = wrapper_dir or Path("bin")
        return str(d / ZIG_WRAPPERS["cc"]), str(d / ZIG_WRAPPERS["cxx"])
    if tc.kind == "native":
        return tc.cc or env.get("CC") or "cc", tc.cxx or env.get("CXX") or "c++"
    if tc.kind == "gcc-cross":
        return tc.cc or f"{tc.triple}-gcc", tc.cxx or f"{tc.triple}-g++"
    if tc.kind == "clang-cross":
        return tc.cc or "clang", tc.cxx or "clang++"
    if tc.kind == "external":
        if not tc.path:
            raise external_missing(target)
        root = Path(tc.path)
        return tc.cc or str(root / "bin" / f"{tc.triple}-gcc"), tc.cxx or str(root / "bin" / f"{tc.triple}-g++")
    raise ToolMissingError(f"toolchain kind {tc.kind!r} is not supported by this q3build yet")


def external_missing(target: Target, name: str | None = None) -> ToolMissingError:
    tc = target.toolchain
    vendor = f" ({tc.version})" if tc.version else ""
    who = f"target {name}" if name else "toolchain kind 'external'"
    return ToolMissingError(
        f"{who} needs the vendor toolchain{vendor}, which no package registry provides: "
        f"pass --toolchain-path DIR (its root, with bin/{tc.triple}-gcc)",
        hint="without it, build --target spacemit-k1 (IME1, zig from PyPI) or --target riscv64 (RVV only)")


def march_to_mcpu(march: str) -> str:
    """A GCC -march ISA string as a zig -mcpu value (the wrapper does the same for -march it sees)."""
    base, _, rest = march.partition("_")
    if not base.startswith("rv64"):
        raise ToolMissingError(f"cpu.march {march!r}: zig targets need an rv64 ISA string")
    out = "baseline_rv64"
    for c in base[4:]:
        if c == "g":
            out += "+m+a+f+d+zicsr+zifencei"
        elif c not in "ie":
            out += f"+{c}"
    for ext in filter(None, rest.split("_")):
        out += f"+{ext}"
    return out


def zig_executable() -> str | None:
    """The zig binary shipped by the PyPI ``ziglang`` package in q3build's own interpreter."""
    spec = importlib.util.find_spec("ziglang")
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "zig"
    return str(exe) if exe.is_file() else None


def tools_for(target: Target, env: Mapping[str, str]) -> list[Tool]:
    tc = target.toolchain
    tools = list(BASE_TOOLS)
    pip = tc.pip[0] if tc.pip else None
    if tc.kind == "zig":
        pin = f"{ZIG_PIP}=={tc.version}" if tc.version else ZIG_PIP
        tools.append(Tool(zig_executable() or "python3 -m ziglang", "zig cc: C/C++ cross compiler (clang)",
                          pip=pip or pin))
    elif tc.kind == "external" and not tc.path:
        tools.append(Tool(f"<--toolchain-path>/bin/{tc.triple}-gcc",
                          f"vendor C/C++ compiler ({tc.version or 'external'}; no package registry has it): "
                          "pass --toolchain-path DIR"))
    else:
        cc, cxx = compilers(target, env)
        apt = tc.apt[0] if tc.apt else None
        if tc.kind == "native":
            apt = apt or "build-essential"
        tools.append(Tool(cc, "C compiler", apt=apt, pip=pip))
        if cxx != cc:
            tools.append(Tool(cxx, "C++ compiler", apt=tc.apt[1] if len(tc.apt) > 1 else apt, pip=pip))
    if tc.sysroot and "{" not in tc.sysroot:
        tools.append(Tool(str(Path(tc.sysroot) / "lib" / "libc.so.6"), "target C library (sysroot)",
                          apt=(tc.apt[-1] if tc.kind != "zig" and tc.apt else None) or _sysroot_package(tc.triple)))
    if target.emulator:
        emu = target.emulator
        tools.append(Tool(emu.command[0], "run target binaries on this machine",
                          apt=emu.apt[0] if emu.apt else None))
    return tools


def _sysroot_package(triple: str | None) -> str | None:
    arch = (triple or "").split("-")[0]
    return f"libc6-dev-{arch}-cross" if arch else None


def find(tool: str, env: Mapping[str, str]) -> str | None:
    if "/" in tool:
        return tool if Path(tool).is_file() else None
    return proc.which(tool, env)


# ELF e_machine of the architectures q3build cross-builds for
ELF_MACHINES = {"riscv64": 243, "aarch64": 183, "x86_64": 62}


def check_sysroot(target: Target, sysroot: str) -> None:
    """A sysroot must hold the target's C library: checked before configure (no processes)."""
    tc = target.toolchain
    libc = Path(sysroot) / "lib" / "libc.so.6"
    pkg = _sysroot_package(tc.triple)
    how = f"; apt install {pkg}" if pkg and sysroot.startswith("/usr/") else ""
    if not libc.is_file():
        raise ToolMissingError(f"toolchain.sysroot {sysroot}: no target C library ({libc} missing){how}")
    want = ELF_MACHINES.get(target.cpu.arch)
    with open(libc, "rb") as f:
        head = f.read(20)
    machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
    if want is not None and machine != want:
        raise ToolMissingError(f"toolchain.sysroot {sysroot}: {libc.name} is not a {target.cpu.arch} library "
                               f"(ELF machine {machine}, expected {want}){how}")


def _version(exe: str, env) -> str:
    r = proc.run([exe, "--version"], env=env, capture=True, check=False)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def sysroot_of(target: Target) -> str | None:
    tc = target.toolchain
    if tc.sysroot and "{path}" in tc.sysroot:
        return tc.sysroot.replace("{path}", tc.path or "") if tc.path else None
    return tc.sysroot


def resolve_zig(target: Target, env: Mapping[str, str], wrapper_dir: Path) -> ResolvedToolchain:
    tc = target.toolchain
    pin = f"{ZIG_PIP}=={tc.version}" if tc.version else ZIG_PIP
    zig = zig_executable()
    if zig is None:
        raise ToolMissingError(f"zig for target toolchain 'zig' not found: the PyPI package {ZIG_PIP} is not "
                               f"installed in q3build's Python; pip install {pin}",
                               hint="scripts/bootstrap --test installs it")
    r = proc.run([zig, "version"], env=env, capture=True, check=False)
    version = r.stdout.strip() or "unknown"
    if tc.version and version != tc.version:
        raise ToolMissingError(f"toolchain.version: zig {version} is installed, the recipe needs {tc.version}; "
                               f"pip install {pin}")
    r = proc.run([zig, "cc", "--version"], env=env, capture=True, check=False)
    clang = next((ln for ln in r.stdout.splitlines() if "clang version" in ln), "")
    clang = re.sub(r"^.*?(clang version \S+).*$", r"\1", clang)
    desc = f"zig {version}" + (f" ({clang})" if clang else "")
    sysroot = sysroot_of(target)
    if sysroot:
        check_sysroot(target, sysroot)
    cc, cxx = compilers(target, env, wrapper_dir)
    return ResolvedToolchain(kind="zig", cc=cc, cxx=cxx, cc_version=desc, cxx_version=desc, triple=tc.triple,
                             sysroot=sysroot, zig=zig)


def resolve(target: Target, env: Mapping[str, str], wrapper_dir: Path | None = None) -> ResolvedToolchain:
    tc = target.toolchain
    if tc.kind == "zig":
        return resolve_zig(target, env, wrapper_dir or Path("bin"))
    cc, cxx = compilers(target, env)
    if tc.kind == "external" and not Path(tc.path or "").is_dir():
        raise ToolMissingError(f"--toolchain-path {tc.path}: not a directory", hint=external_missing(target).hint)
    found = []
    for exe, what in ((cc, "C compiler"), (cxx, "C++ compiler")):
        path = find(exe, env)
        if path is None:
            pkgs = [f"apt install {' '.join(tc.apt)}" if tc.apt else None,
                    f"pip install {' '.join(tc.pip)}" if tc.pip else None]
            if tc.kind == "native" and not tc.apt:
                pkgs = ["apt install build-essential"]
            how = " or ".join(p for p in pkgs if p) or "install it"
            raise ToolMissingError(f"{what} {exe!r} for target toolchain {tc.kind!r} not found; {how}")
        found.append(path)
    sysroot = sysroot_of(target)
    if sysroot:
        check_sysroot(target, sysroot)
    return ResolvedToolchain(kind=tc.kind, cc=found[0], cxx=found[1], cc_version=_version(found[0], env),
                             cxx_version=_version(found[1], env), triple=tc.triple, sysroot=sysroot,
                             path=tc.path if tc.kind == "external" else None)


def available(target: Target) -> tuple[bool, str]:
    """Whether the target's toolchain can be used here, and why not (no processes): for aliases."""
    tc = target.toolchain
    if tc.kind == "external":
        if not tc.path:
            return False, "needs SpacemiT's own toolchain: --toolchain-path not given"
        if not (Path(tc.path) / "bin" / f"{tc.triple}-gcc").is_file():
            return False, f"--toolchain-path {tc.path} has no bin/{tc.triple}-gcc"
        return True, f"toolchain given by --toolchain-path {tc.path}"
    if tc.kind == "zig":
        if zig_executable() is None:
            return False, f"PyPI package {ZIG_PIP} is not installed"
        return True, f"zig from PyPI {ZIG_PIP} is installed"
    return True, f"toolchain kind {tc.kind}"
