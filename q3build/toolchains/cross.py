"""Toolchain kinds ``gcc-cross`` and ``clang-cross``: a Debian cross compiler on PATH
(<triple>-gcc / clang with --target), headers and libraries from the recipe's sysroot."""

from __future__ import annotations

from q3build.toolchains.common import CompilerKind


class GccCross(CompilerKind):
    name = "gcc-cross"

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        tc = target.toolchain
        return tc.cc or f"{tc.triple}-gcc", tc.cxx or f"{tc.triple}-g++"


class ClangCross(CompilerKind):
    name = "clang-cross"

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        tc = target.toolchain
        return tc.cc or "clang", tc.cxx or "clang++"


GCC = GccCross()
CLANG = ClangCross()
