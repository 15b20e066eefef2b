"""Toolchain kind ``native``: this machine's compiler ($CC/$CXX, else cc/c++), no toolchain file."""

from __future__ import annotations

from q3build.toolchains.common import CompilerKind


class Native(CompilerKind):
    name = "native"
    cross = False
    needs_triple = False

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        tc = target.toolchain
        return tc.cc or env.get("CC") or "cc", tc.cxx or env.get("CXX") or "c++"

    def install_hint(self, target) -> str:
        return super().install_hint(target) if target.toolchain.apt else "apt install build-essential"

    def compiler_apt(self, target):
        apt_cc, apt_cxx = super().compiler_apt(target)
        return apt_cc or "build-essential", apt_cxx or "build-essential"


KIND = Native()
