"""The CI build matrix, read from the recipes (no processes, no toolchain probing).

A target is in the matrix when CI can build it from registries alone: every toolchain kind but
``external`` (a vendor toolchain at a user-given path, which no runner has). Each entry carries what
the workflow needs to install and run it: the apt and pip packages `q3build doctor` names, and whether validate runs the
binaries natively or under the recipe's emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from q3build.core import recipe
from q3build.project import Project
from q3build.toolchains import kind_of
from q3build.toolchains import resolve as toolchains

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

    def to_record(self) -> dict:
        return {"target": self.target, "arch": self.arch, "toolchain": self.toolchain, "cross": self.cross,
                "emulator": self.emulator, "apt": " ".join(self.apt), "pip": " ".join(self.pip),
                "runs-on": RUNNER}


def entries(project: Project) -> tuple[list[Entry], list[dict]]:
    """(matrix entries, excluded targets with the reason), in target-name order."""
    included, excluded = [], []
    for name in recipe.names(project):
        t = recipe.load(project, name)
        if not kind_of(t).in_ci:
            excluded.append({"target": name, "reason": f"toolchain kind 'external' ({t.toolchain.triple or '?'}): "
                                                       "needs a vendor toolchain given with --toolchain-path"})
            continue
        if t.cross and t.emulator is None:
            excluded.append({"target": name, "reason": "cross target without an emulator section: "
                                                       "validate cannot run its binaries in CI"})
            continue
        # the packages `q3build doctor` would ask for: build tools, compilers, sysroot, emulator
        tools = toolchains.tools_for(t, {})
        apt = tuple(dict.fromkeys([*(x.apt for x in tools if x.apt), *(t.emulator.apt if t.emulator else ())]))
        pip = tuple(dict.fromkeys([*(x.pip for x in tools if x.pip), *t.toolchain.pip]))
        included.append(Entry(target=name, arch=t.cpu.arch if t.cpu.arch != "native" else "x86_64",
                              toolchain=t.toolchain.kind, cross=t.cross,
                              emulator=t.emulator.command[0] if t.emulator else None, apt=apt, pip=pip))
    return included, excluded


def github(project: Project) -> dict:
    """The value of `strategy.matrix` (``fromJSON`` of the job output)."""
    included, _ = entries(project)
    return {"include": [e.to_record() for e in included]}
