"""Resolving a target's toolchain: the entry points the rest of q3build calls, each handed to the
target's kind (``q3build.toolchains.KINDS``).

``resolve`` finds the compilers and reads their versions (the toolchain id that goes into the cache
key and the manifest). ``tools_for`` lists what a target needs on this machine (for doctor and the CI
matrix); ``available`` says, without processes, whether a target's toolchain can be had here.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from q3build.core.recipe import Target
from q3build.toolchains import kind_of
from q3build.toolchains.base import ResolvedToolchain, Settings, Tool
from q3build.toolchains.common import check_sysroot as _check_sysroot
from q3build.toolchains.common import find, sysroot_of
from q3build.toolchains.external import missing as external_missing
from q3build.toolchains.zig import WRAPPERS as ZIG_WRAPPERS
from q3build.toolchains.zig import march_to_mcpu, zig_executable

__all__ = [
    "BASE_TOOLS",
    "ZIG_WRAPPERS",
    "ResolvedToolchain",
    "Settings",
    "Tool",
    "available",
    "check_sysroot",
    "compilers",
    "external_missing",
    "find",
    "march_to_mcpu",
    "resolve",
    "sysroot_of",
    "tools_for",
    "zig_executable",
]

# no cache known: the zig kind uses the ziglang in q3build's Python (the plan passes the real settings)
DEFAULT = Settings()

# Tools every build needs, with the Debian package that provides each.
BASE_TOOLS = (
    Tool("git", "fetch and patch the source", apt="git"),
    Tool("cmake", "configure llama.cpp", apt="cmake"),
    Tool("ninja", "fast parallel builds (falls back to make)", apt="ninja-build", required=False),
    Tool("make", "build without ninja", apt="make", required=False),
    Tool("ccache", "compiler cache: warm rebuilds in seconds", apt="ccache", required=False),
)


def compilers(target: Target, env: Mapping[str, str], wrapper_dir: Path | None = None) -> tuple[str, str]:
    return kind_of(target).compilers(target, env, wrapper_dir)


def check_sysroot(target: Target, sysroot: str) -> None:
    """A sysroot must hold the target's C library (the kind names the package that provides it)."""
    _check_sysroot(target, sysroot, kind_of(target).sysroot_package(target.toolchain.triple))


def tools_for(target: Target, env: Mapping[str, str], settings: Settings | None = None) -> list[Tool]:
    return [*BASE_TOOLS, *kind_of(target).tools(target, env, settings or DEFAULT)]


def resolve(target: Target, env: Mapping[str, str], wrapper_dir: Path | None = None,
            settings: Settings | None = None) -> ResolvedToolchain:
    return kind_of(target).resolve(target, env, wrapper_dir or Path("bin"), settings or DEFAULT)


def available(target: Target, settings: Settings | None = None) -> tuple[bool, str]:
    """Whether the target's toolchain can be used here, and why not (no processes): for aliases."""
    return kind_of(target).available(target, settings or DEFAULT)
