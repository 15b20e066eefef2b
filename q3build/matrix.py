"""The CI build matrix, read from the recipes (no processes, no toolchain probing).

A target is in the matrix when CI can build it from registries alone: every toolchain kind but
``external`` (a vendor toolchain at a user-given path, which no runner has). Each entry carries what
the workflow needs to install and run it: apt and pip packages, and whether validate runs the
binaries natively or under the recipe's emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from . import recipe
from .project import Project

RUNNER = "ubuntu-24.04"


@dataclass(frozen=True)
class Entry:
    target: str
    arch: str
    toolchain: str
    cross: bool
    emulator: str | None
    apt: tuple[str, ...]
    pip: tuple[str, ...]

    def to_json(self) -> dict:
        return {"target": self.target, "arch": self.arch, "toolchain": self.toolchain, "cross": self.cross,
                "emulator": self.emulator, "apt": " ".join(self.apt), "pip": " ".join(self.pip),
                "runs-on": RUNNER}


def entries(project: Project) -> tuple[list[Entry], list[dict]]:
    """(matrix entries, excluded targets with the reason), in target-name order."""
    included, excluded = [], []
    for name in recipe.names(project):
        t = recipe.load(project, name)
        if t.toolchain.kind == "external":
            excluded.append({"target": name, "reason": f"toolchain kind 'external' ({t.toolchain.triple or '?'}): "
                                                       "needs a vendor toolchain given with --toolchain-path"})
            continue
        if t.cross and t.emulator is None:
            excluded.append({"target": name, "reason": "cross target without an emulator section: "
                                                       "validate cannot run its binaries in CI"})
            continue
        apt = tuple(dict.fromkeys([*t.toolchain.apt, *(t.emulator.apt if t.emulator else ())]))
        included.append(Entry(target=name, arch=t.cpu.arch if t.cpu.arch != "native" else "x86_64",
                              toolchain=t.toolchain.kind, cross=t.cross,
                              emulator=t.emulator.command[0] if t.emulator else None,
                              apt=apt, pip=tuple(t.toolchain.pip)))
    return included, excluded


def github(project: Project) -> dict:
    """The value of `strategy.matrix` (``fromJSON`` of the job output)."""
    included, _ = entries(project)
    return {"include": [e.to_json() for e in included]}
