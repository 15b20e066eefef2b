"""What every toolchain kind shares: the Kind protocol, the resolved toolchain, the tools doctor lists,
and the settings that say where toolchains come from.

A kind (native, gcc-cross, clang-cross, zig, external) is one module with one object implementing
``Kind``; ``q3build.toolchains.KINDS`` is the registry. Code outside this package asks the kind of a
target (``kind_of(target)``) instead of comparing kind names.
"""

from __future__ import annotations

import hashlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from q3build.core.plan import BuildPlan
    from q3build.core.recipe import Target


@dataclass(frozen=True)
class Tool:
    name: str          # what is looked up on PATH (or an absolute path)
    purpose: str
    apt: str | None = None
    pip: str | None = None
    required: bool = True
    fetch: str | None = None   # q3build fetches it itself when missing (what and where), no root needed


@dataclass(frozen=True, kw_only=True)
class Settings:
    """Where toolchains come from, resolved once by the plan from the command line and environment."""

    cache: Path | None = None          # q3build's cache (~/.cache/q3build): fetched toolchains live below it
    zig: str | None = None             # None: the pinned ziglang fetched into the cache; "interpreter": the
                                       # ziglang importable in q3build's Python; else a zig executable


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
    source: str | None = None       # where the compiler comes from (zig: q3build-cache, interpreter, path)
    fetch: Mapping[str, str] | None = None   # a fetched toolchain: package, version, wheel, sha256, dir

    @property
    def id(self) -> str:
        return hashlib.sha256((f"{self.kind}\0{self.cc}\0{self.cc_version}\0{self.cxx}\0{self.cxx_version}\0"
                              f"{self.triple}\0{self.sysroot}"
                              + (f"\0{self.zig}\0{self.path}" if self.zig or self.path else "")).encode()
                              ).hexdigest()[:16]

    def describe(self) -> str:
        return f"{self.kind}: {self.cc_version}"

    def to_record(self) -> dict:
        return {"kind": self.kind, "cc": self.cc, "cxx": self.cxx, "cc_version": self.cc_version,
                "cxx_version": self.cxx_version, "triple": self.triple, "sysroot": self.sysroot, "id": self.id,
                "zig": self.zig, "path": self.path, "source": self.source,
                "fetch": dict(self.fetch) if self.fetch else None}


class Kind(Protocol):
    """One toolchain kind. Everything kind-specific lives behind these members."""

    name: str
    cross: bool                                 # builds for another machine (toolchain file, emulator)
    needs_triple: bool                          # toolchain.triple is required
    own_keys: tuple[str, ...]                   # toolchain.* keys only this kind reads
    cmake_options: Mapping[str, object]         # cache variables this kind forces (a recipe may not change)
    takes_path: bool                            # --toolchain-path applies (a user-given root)
    in_ci: bool                                 # CI runners can get it from registries alone
    compiler_cache: str | None                  # the compiler's own cache dir name below q3build's cache

    def compilers(self, target: Target, env: Mapping[str, str], wrapper_dir: Path | None) -> tuple[str, str]: ...

    def resolve(self, target: Target, env: Mapping[str, str], wrapper_dir: Path,
                settings: Settings) -> ResolvedToolchain: ...

    def available(self, target: Target, settings: Settings) -> tuple[bool, str]: ...

    def tools(self, target: Target, env: Mapping[str, str], settings: Settings) -> list[Tool]: ...

    def outputs(self) -> list: ...   # render.Output of the files this kind renders (zig: wrappers)

    def render_context(self, plan: BuildPlan) -> dict | None: ...

    def build_env(self, plan: BuildPlan) -> dict[str, str]: ...

    def prepare(self, plan: BuildPlan, env: Mapping[str, str]) -> ResolvedToolchain | None: ...

    def sysroot_package(self, triple: str | None) -> str | None: ...
