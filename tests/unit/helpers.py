from __future__ import annotations

import shutil
from pathlib import Path

from q3build.project import Project
from q3build.toolchains import libraries
from q3build.toolchains import resolve as toolchains
from q3build.toolchains.resolve import ResolvedToolchain

from ..conftest import REPO, copy_project_skeleton

DATA = Path(__file__).resolve().parent.parent / "data"

PIN = """\
schema: 1
upstream:
  commit: 0c1e57098bba43ac29e6e3b677cdceebdd22334f
  build: 11312
  date: "2026-10-01T11:11:48+09:00"
  tree: b2da53584951ec8aa40680229509a6646a637560
sources:
  - kind: git
    url: https://example.invalid/llama.cpp.git
"""


def fake_toolchain(target, env, wrapper_dir=None, settings=None):
    tc = target.toolchain
    if tc.kind == "zig":
        ver = "zig 0.17.1 (clang version 22.1.8)"
        cc, cxx = toolchains.compilers(target, env, wrapper_dir)
        return ResolvedToolchain(kind="zig", cc=cc, cxx=cxx, cc_version=ver, cxx_version=ver, triple=tc.triple,
                                 sysroot=tc.sysroot, zig="/opt/ziglang/zig")
    if tc.kind == "external":
        root = tc.path
        cc, cxx, ver = f"{root}/bin/{tc.triple}-gcc", f"{root}/bin/{tc.triple}-g++", f"{tc.triple}-gcc (Vendor) 15.1"
        return ResolvedToolchain(kind="external", cc=cc, cxx=cxx, cc_version=ver, cxx_version=ver, triple=tc.triple,
                                 sysroot=toolchains.sysroot_of(target), path=root)
    if tc.kind == "native":
        cc, cxx, ver = "/usr/bin/cc", "/usr/bin/c++", "cc (Test) 12.2.0"
    else:
        cc, cxx, ver = f"/usr/bin/{tc.triple}-gcc", f"/usr/bin/{tc.triple}-g++", f"{tc.triple}-gcc (Test) 12.2.0"
    return ResolvedToolchain(kind=tc.kind, cc=cc, cxx=cxx, cc_version=ver, cxx_version=ver, triple=tc.triple,
                             sysroot=tc.sysroot)


def fake_find(tool, env):
    return {"ninja": "/usr/bin/ninja", "ccache": "/usr/bin/ccache"}.get(tool)


def make_project(tmp_path: Path, monkeypatch, *, recipes=("host",)) -> Project:
    root = copy_project_skeleton(tmp_path / "project")
    (root / "recipes" / "llama.cpp.yaml").write_text(PIN)
    (root / "patches" / "series.yaml").write_text("schema: 1\npatches: []\n")
    for name in recipes:
        src = REPO / "recipes" / f"{name}.yaml"
        if not src.exists():
            src = DATA / "recipes" / f"{name}.yaml"
        shutil.copy(src, root / "recipes" / f"{name}.yaml")
    monkeypatch.setattr(toolchains, "resolve", fake_toolchain)
    monkeypatch.setattr(toolchains, "find", fake_find)
    # optional libraries (recipe `libraries:`): a native target looks in an empty stand-in for this
    # machine's directories, so plans do not depend on which -dev packages are installed here
    real_search = libraries.search_dirs
    monkeypatch.setattr(libraries, "search_dirs", lambda target, root=None: real_search(
        target, root if root is not None or target.cross else str(tmp_path / "machine")))
    env = {"HOME": str(tmp_path), "PATH": "/usr/bin"}
    return Project.discover(env, project=str(root))
