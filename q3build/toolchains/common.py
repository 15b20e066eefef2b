"""Helpers the kinds share: finding a compiler, reading its version, checking a sysroot, and
``CompilerKind``, the default behaviour of a kind whose compilers are found on PATH or at a path."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from q3build import proc
from q3build.errors import ToolMissingError
from q3build.toolchains.base import ResolvedToolchain, Settings, Tool

if TYPE_CHECKING:
    from q3build.core.plan import BuildPlan
    from q3build.core.recipe import Target

# ELF e_machine of the architectures q3build cross-builds for
ELF_MACHINES = {"riscv64": 243, "aarch64": 183, "x86_64": 62}


def find(tool: str, env: Mapping[str, str]) -> str | None:
    if "/" in tool:
        return tool if Path(tool).is_file() else None
    return proc.which(tool, env)


def version(exe: str, env) -> str:
    r = proc.run([exe, "--version"], env=env, capture=True, check=False)
    first = (r.stdout or r.stderr).strip().splitlines()
    return first[0] if first else "unknown"


def sysroot_of(target: Target) -> str | None:
    tc = target.toolchain
    if tc.sysroot and "{path}" in tc.sysroot:
        return tc.sysroot.replace("{path}", tc.path or "") if tc.path else None
    return tc.sysroot


def dev_libc_package(triple: str | None) -> str | None:
    arch = (triple or "").split("-")[0]
    return f"libc6-dev-{arch}-cross" if arch else None


def check_sysroot(target: Target, sysroot: str, package: str | None) -> None:
    """A sysroot must hold the target's C library: checked before configure (no processes)."""
    libc = Path(sysroot) / "lib" / "libc.so.6"
    how = f"; apt install {package}" if package and sysroot.startswith("/usr/") else ""
    if not libc.is_file():
        raise ToolMissingError(f"toolchain.sysroot {sysroot}: no target C library ({libc} missing){how}")
    want = ELF_MACHINES.get(target.cpu.arch)
    with open(libc, "rb") as f:
        head = f.read(20)
    machine = int.from_bytes(head[18:20], "little") if head[:4] == b"\x7fELF" else None
    if want is not None and machine != want:
        raise ToolMissingError(f"toolchain.sysroot {sysroot}: {libc.name} is not a {target.cpu.arch} library "
                               f"(ELF machine {machine}, expected {want}){how}")


def emulator_tool(target: Target) -> list[Tool]:
    emu = target.emulator
    if not emu:
        return []
    return [Tool(emu.command[0], "run target binaries on this machine", apt=emu.apt[0] if emu.apt else None)]


class CompilerKind:
    """A kind whose C and C++ compilers are executables found on PATH (or at a path): native and the
    Debian cross compilers, and the vendor toolchain. Subclasses say where the compilers are."""

    name = ""
    cross = True
    needs_triple = True
    own_keys: tuple[str, ...] = ()
    cmake_options: Mapping[str, object] = {}
    takes_path = False
    in_ci = True
    compiler_cache: str | None = None           # a cache dir of the compiler's own, below q3build's cache

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        raise NotImplementedError

    def install_hint(self, target) -> str:
        tc = target.toolchain
        pkgs = [f"apt install {' '.join(tc.apt)}" if tc.apt else None,
                f"pip install {' '.join(tc.pip)}" if tc.pip else None]
        return " or ".join(p for p in pkgs if p) or "install it"

    def resolve(self, target, env, wrapper_dir, settings: Settings) -> ResolvedToolchain:
        tc = target.toolchain
        cc, cxx = self.compilers(target, env)
        found = []
        for exe, what in ((cc, "C compiler"), (cxx, "C++ compiler")):
            path = find(exe, env)
            if path is None:
                raise ToolMissingError(f"{what} {exe!r} for target toolchain {tc.kind!r} not found; "
                                       f"{self.install_hint(target)}")
            found.append(path)
        sysroot = sysroot_of(target)
        if sysroot:
            check_sysroot(target, sysroot, self.sysroot_package(tc.triple))
        return ResolvedToolchain(kind=tc.kind, cc=found[0], cxx=found[1], cc_version=version(found[0], env),
                                 cxx_version=version(found[1], env), triple=tc.triple, sysroot=sysroot,
                                 path=tc.path if self.takes_path else None)

    def available(self, target, settings: Settings) -> tuple[bool, str]:
        return True, f"toolchain kind {target.toolchain.kind}"

    def compiler_apt(self, target) -> tuple[str | None, str | None]:
        apt = target.toolchain.apt
        return (apt[0] if apt else None), (apt[1] if len(apt) > 1 else (apt[0] if apt else None))

    def tools(self, target, env, settings: Settings) -> list[Tool]:
        tc = target.toolchain
        cc, cxx = self.compilers(target, env)
        pip = tc.pip[0] if tc.pip else None
        apt_cc, apt_cxx = self.compiler_apt(target)
        tools = [Tool(cc, "C compiler", apt=apt_cc, pip=pip)]
        if cxx != cc:
            tools.append(Tool(cxx, "C++ compiler", apt=apt_cxx, pip=pip))
        if tc.sysroot and "{" not in tc.sysroot:
            tools.append(Tool(str(Path(tc.sysroot) / "lib" / "libc.so.6"), "target C library (sysroot)",
                              apt=(tc.apt[-1] if tc.apt else None) or self.sysroot_package(tc.triple)))
        return tools + emulator_tool(target)

    def outputs(self) -> list:
        return []

    def render_context(self, plan: BuildPlan) -> dict | None:
        return None

    def build_env(self, plan: BuildPlan) -> dict[str, str]:
        return {}

    def prepare(self, plan: BuildPlan, env) -> ResolvedToolchain | None:
        return None

    def sysroot_package(self, triple: str | None) -> str | None:
        return dev_libc_package(triple)
