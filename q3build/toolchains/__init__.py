"""Toolchain kinds as data: one module per kind, each an object implementing ``base.Kind``.

``KINDS`` is the registry (listed explicitly, no discovery). A new board is a recipe; a new kind of
compiler is one module here plus its entry below.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from q3build.toolchains import cross, external, native, zig
from q3build.toolchains.base import Kind

if TYPE_CHECKING:
    from q3build.core.recipe import Target

KINDS: dict[str, Kind] = {k.name: k for k in (native.KIND, cross.GCC, cross.CLANG, zig.KIND, external.KIND)}


def kind_of(target: Target) -> Kind:
    return KINDS[target.toolchain.kind]
