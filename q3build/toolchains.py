"""Toolchain kinds as data: which compilers a target uses, and which packages provide them.

``resolve`` finds the compilers and reads their versions (the toolchain id that goes into the
cache key and the manifest). ``doctor_checks`` lists what a target needs on this machine.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from . import proc
from .errors import ToolMissingError
from .recipe import Target


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

    @property
    def id(self) -> str:
        return hashlib.sha256(f"{self.kind}\0{self.cc}\0{self.cc_version}\0{self.cxx}\0{self.cxx_version}\0"
                              f"{self.triple}\0{self.sysroot}".encode()).hexdigest()[:16]

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


def compilers(target: Target, env: Mapping[str, str]) -> tuple[str, str]:
    tc = target.toolchain
    if tc.kind == "native":
        return tc.cc or env.get("CC") or "cc", tc.cxx or env.get("CXX") or "c++"
    if tc.kind == "gcc-cross":
        return tc.cc or f"{tc.triple}-gcc", tc.cxx or f"{tc.triple}-g++"
    if tc.kind == "clang-cross":
        return tc.cc or "clang", tc.cxx or "clang++"
    if tc.kind == "external":
        root = Path(tc.path or "")
        return tc.cc or str(root / "bin" / f"{tc.triple}-gcc"), tc.cxx or str(root / "bin" / f"{tc.triple}-g++")
    raise ToolMissingError(f"toolchain kind {tc.kind!r} is not supported by this q3build yet")


def tools_for(target: Target, env: Mapping[str, str]) -> list[Tool]:
    tc = target.toolchain
    cc, cxx = compilers(target, env) if tc.kind != "zig" else ("zig", "zig")
    apt = tc.apt[0] if tc.apt else None
    pip = tc.pip[0] if tc.pip else None
    if tc.kind == "native":
        apt = apt or "build-essential"
    tools = [*BASE_TOOLS, Tool(cc, "C compiler", apt=apt, pip=pip)]
    if cxx != cc:
        tools.append(Tool(cxx, "C++ compiler", apt=tc.apt[1] if len(tc.apt) > 1 else apt, pip=pip))
    if target.emulator:
        emu = target.emulator
        tools.append(Tool(emu.command[0], "run target binaries on this machine",
                          apt=emu.apt[0] if emu.apt else None))
    return tools


def find(tool: str, env: Mapping[str, str]) -> str | None:
    if "/" in tool:
        return tool if Path(tool).is_file() else None
    return proc.which(tool, env)


def _version(exe: str, env) -> str:
    r = proc.run([exe, "--version"], env=env, capture=True, check=False)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def resolve(target: Target, env: Mapping[str, str]) -> ResolvedToolchain:
    tc = target.toolchain
    cc, cxx = compilers(target, env)
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
    return ResolvedToolchain(kind=tc.kind, cc=found[0], cxx=found[1], cc_version=_version(found[0], env),
                             cxx_version=_version(found[1], env), triple=tc.triple, sysroot=tc.sysroot)
