"""Optional libraries a target links when they are there (``libraries:`` in a recipe): the speech
service's mp3 (LAME) and Ogg Opus (libopus, libogg) encoders.

A library is found when every header and every static archive (``lib<name>.a``, so the binary stays
self-contained) it names is present: for a native target in this machine's standard directories
(what the Debian ``-dev`` packages install), for a cross target only inside its sysroot, never on the
build machine (those would be the wrong architecture). The plan turns each into its CMake switch,
ON when found and OFF otherwise, so a target without them still configures and builds, without
those formats. No processes are run.
"""

from __future__ import annotations

import sysconfig
from dataclasses import dataclass
from pathlib import Path

from q3build.core.recipe import Library, Target
from q3build.toolchains.common import sysroot_of


@dataclass(frozen=True, kw_only=True)
class FoundLibrary:
    name: str
    library: Library
    found: bool
    where: str                          # "this machine" or "sysroot DIR" (or why nothing was searched)
    files: tuple[str, ...] = ()         # the headers and archives found
    missing: tuple[str, ...] = ()       # what was looked for and not found
    root: str | None = None             # the directory searched under ("/" or the sysroot): where the
                                        # release looks for the packages' licence texts

    def archive(self, lib: str) -> str | None:
        """The static archive found for one of the recipe's libs (None when it was not found)."""
        return next((f for f in self.files if Path(f).name == f"lib{lib}.a"), None)

    def to_record(self) -> dict:
        return {"name": self.name, "cmake": self.library.cmake, "found": self.found, "where": self.where,
                "files": list(self.files), "missing": list(self.missing), "apt": list(self.library.apt),
                "purpose": self.library.purpose}

    def describe(self) -> str:
        if self.found:
            return f"{self.library.cmake}=ON ({self.where})"
        how = f"; apt install {' '.join(self.library.apt)}" if self.library.apt and self.where == "this machine" else ""
        return f"{self.library.cmake}=OFF (left out: {', '.join(self.missing)} not in {self.where}{how})"


def _multiarch(triple: str | None) -> list[str]:
    names = [triple] if triple else []
    host = sysconfig.get_config_var("MULTIARCH")
    if not triple and host:
        names.append(host)
    return names


def search_dirs(target: Target, root: str | None = None) -> tuple[list[Path], list[Path], str, Path | None]:
    """(include dirs, library dirs, where, the root they are under) for the target: the standard
    directories of this machine (native), else those of the sysroot (root overrides, for tests). A
    cross target without a sysroot has none."""
    if not target.cross:
        base = Path(root or "/")
        where = "this machine" if root is None else f"root {root}"
    else:
        sysroot = root or sysroot_of(target)
        if not sysroot:
            return [], [], "no sysroot (toolchain.sysroot unset)", None
        base = Path(sysroot)
        where = f"sysroot {sysroot}"
    arches = _multiarch(target.toolchain.triple if target.cross else None)
    incs = [base / "usr/local/include", base / "usr/include", base / "include",
            *(base / "usr/include" / a for a in arches)]
    libs = [*(base / "usr/lib" / a for a in arches), *(base / "lib" / a for a in arches),
            base / "usr/local/lib", base / "usr/lib64", base / "usr/lib", base / "lib64", base / "lib"]
    return incs, libs, where, base


def find(target: Target, root: str | None = None) -> list[FoundLibrary]:
    incs, libdirs, where, base = search_dirs(target, root)
    out = []
    for name, lib in sorted((target.libraries or {}).items()):
        files, missing = [], []
        for h in lib.headers:
            hit = next((d / h for d in incs if (d / h).is_file()), None)
            (files.append(str(hit)) if hit else missing.append(h))
        for n in lib.libs:
            hit = next((d / f"lib{n}.a" for d in libdirs if (d / f"lib{n}.a").is_file()), None)
            (files.append(str(hit)) if hit else missing.append(f"lib{n}.a"))
        out.append(FoundLibrary(name=name, library=lib, found=not missing and bool(incs), where=where,
                                files=tuple(files), missing=tuple(missing),
                                root=str(base) if base is not None else None))
    return out


def cmake_switches(found: list[FoundLibrary]) -> dict[str, bool]:
    """Each library's CMake switch; a switch shared by several libraries is ON only if all are found."""
    out: dict[str, bool] = {}
    for f in found:
        out[f.library.cmake] = out.get(f.library.cmake, True) and f.found
    return out
