"""Toolchain kind ``external``: a vendor toolchain no registry provides (SpacemiT's GCC for IME2),
given by the user with --toolchain-path DIR (DIR/bin/<triple>-gcc, sysroot from the recipe)."""

from __future__ import annotations

from pathlib import Path

from q3build.errors import ToolMissingError
from q3build.toolchains.base import Settings, Tool
from q3build.toolchains.common import CompilerKind, emulator_tool


def missing(target, name: str | None = None) -> ToolMissingError:
    tc = target.toolchain
    vendor = f" ({tc.version})" if tc.version else ""
    who = f"target {name}" if name else "toolchain kind 'external'"
    return ToolMissingError(
        f"{who} needs the vendor toolchain{vendor}, which no package registry provides: "
        f"pass --toolchain-path DIR (its root, with bin/{tc.triple}-gcc)",
        hint="without it, build --target spacemit-k1 (IME1, zig from PyPI) or --target riscv64 (RVV only)")


class External(CompilerKind):
    name = "external"
    takes_path = True
    in_ci = False

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        tc = target.toolchain
        if not tc.path:
            raise missing(target)
        root = Path(tc.path)
        return tc.cc or str(root / "bin" / f"{tc.triple}-gcc"), tc.cxx or str(root / "bin" / f"{tc.triple}-g++")

    def resolve(self, target, env, wrapper_dir, settings: Settings):
        tc = target.toolchain
        if not Path(tc.path or "").is_dir():
            raise ToolMissingError(f"--toolchain-path {tc.path}: not a directory", hint=missing(target).hint)
        return super().resolve(target, env, wrapper_dir, settings)

    def available(self, target, settings: Settings) -> tuple[bool, str]:
        tc = target.toolchain
        if not tc.path:
            return False, "needs SpacemiT's own toolchain: --toolchain-path not given"
        if not (Path(tc.path) / "bin" / f"{tc.triple}-gcc").is_file():
            return False, f"--toolchain-path {tc.path} has no bin/{tc.triple}-gcc"
        return True, f"toolchain given by --toolchain-path {tc.path}"

    def tools(self, target, env, settings: Settings) -> list[Tool]:
        tc = target.toolchain
        if tc.path:
            return super().tools(target, env, settings)
        return [Tool(f"<--toolchain-path>/bin/{tc.triple}-gcc",
                     f"vendor C/C++ compiler ({tc.version or 'external'}; no package registry has it): "
                     "pass --toolchain-path DIR"), *emulator_tool(target)]


KIND = External()
