"""A synthetic upstream: a small git repository with a CMake project that builds fake
`llama-server` and `llama-tts` tools, plus a q3build project pinned to it. Fast enough to run
sync, export and make for real in every test."""

from __future__ import annotations

import io
import subprocess
import tarfile
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

from q3build import cli

from ..conftest import copy_project_skeleton, git

UPSTREAM_FILES = {
    "CMakeLists.txt": """\
        cmake_minimum_required(VERSION 3.16)
        project(fake_llama C)
        set(LLAMA_BUILD_NUMBER 0 CACHE STRING "")
        set(LLAMA_BUILD_COMMIT "unknown" CACHE STRING "")
        set(LLAMA_BUILD_DISTRIBUTION "" CACHE STRING "")
        foreach(tool llama-server llama-tts)
            add_executable(${tool} tools/main.c)
            target_compile_definitions(${tool} PRIVATE
                TOOL="${tool}" BUILD_NUMBER=${LLAMA_BUILD_NUMBER}
                BUILD_COMMIT="${LLAMA_BUILD_COMMIT}" DISTRIBUTION="${LLAMA_BUILD_DISTRIBUTION}")
            set_target_properties(${tool} PROPERTIES RUNTIME_OUTPUT_DIRECTORY ${CMAKE_BINARY_DIR}/bin)
        endforeach()
        """,
    "tools/main.c": """\
        #include <stdio.h>
        #include <string.h>
        #include "greeting.h"

        int main(int argc, char ** argv) {
            if (argc > 1 && strcmp(argv[1], "--version") == 0) {
                printf("version: fake (build %d, commit %s, %s)\\n", BUILD_NUMBER, BUILD_COMMIT, DISTRIBUTION);
                return 0;
            }
            printf("%s: %s\\n", TOOL, GREETING);
            return 0;
        }
        """,
    "tools/greeting.h": """\
        #pragma once
        #define GREETING "hello from upstream"
        """,
    "README.md": "fake upstream\n\nline three\nline four\nline five\nline six\nline seven\n",
    "scripts/run.sh": "#!/bin/sh\necho run\n",
}

HOST_RECIPE = """\
schema: 1
description: test host target
toolchain:
  kind: native
cmake:
  options:
    BUILD_SHARED_LIBS: false
  build_targets: [llama-server, llama-tts]
"""


@dataclass
class Upstream:
    repo: Path
    commit: str
    tree: str


def make_upstream(path: Path) -> Upstream:
    path.mkdir(parents=True)
    git("init", "-q", cwd=path)
    for rel, text in UPSTREAM_FILES.items():
        f = path / rel
        f.parent.mkdir(parents=True, exist_ok=True)
        f.write_text(textwrap.dedent(text))
    (path / "scripts/run.sh").chmod(0o755)
    git("add", "-A", cwd=path)
    git("commit", "-q", "-m", "initial", cwd=path)
    # a second commit so history is more than one commit deep
    (path / "README.md").write_text(UPSTREAM_FILES["README.md"].replace("line three", "line 3"))
    git("commit", "-q", "-am", "readme", cwd=path)
    return Upstream(repo=path, commit=git("rev-parse", "HEAD", cwd=path),
                    tree=git("rev-parse", "HEAD^{tree}", cwd=path))


def make_tarball(upstream: Upstream, dest: Path, *, top: str = "pkg-1.0", subdir: str = "vendor/llama.cpp",
                 extra: dict[str, bytes] | None = None) -> Path:
    """An sdist-like tarball: upstream's tree under top/subdir, with a submodule-style .git file."""
    raw = subprocess.run(["git", "archive", "--format=tar", upstream.commit], cwd=upstream.repo,
                         capture_output=True, check=True).stdout
    with tarfile.open(fileobj=io.BytesIO(raw)) as src, tarfile.open(dest, "w:gz") as out:
        for m in src.getmembers():
            data = src.extractfile(m).read() if m.isfile() else None
            m.name = f"{top}/{subdir}/{m.name}".rstrip("/")
            out.addfile(m, io.BytesIO(data) if data is not None else None)
        for name, data in {f"{top}/{subdir}/.git": b"gitdir: ../../.git/modules/vendor/llama.cpp\n",
                           f"{top}/PKG-INFO": b"Name: pkg\n", **(extra or {})}.items():
            info = tarfile.TarInfo(name)
            info.size = len(data)
            out.addfile(info, io.BytesIO(data))
    return dest


def pin_yaml(upstream: Upstream, sources: str) -> str:
    return textwrap.dedent(f"""\
        schema: 1
        upstream:
          commit: {upstream.commit}
          build: 4242
          date: "2026-01-02T03:04:05+00:00"
          tree: {upstream.tree}
        sources:
        """) + textwrap.indent(textwrap.dedent(sources), "  ")


@dataclass
class Env:
    root: Path
    upstream: Upstream
    work: Path
    cache: Path

    @property
    def src(self) -> Path:
        return self.work / "src" / "llama.cpp"

    def q3(self, *args: str) -> int:
        return cli.main(["--project", str(self.root), *args])

    def write_pin(self, sources: str) -> None:
        (self.root / "recipes" / "llama.cpp.yaml").write_text(pin_yaml(self.upstream, sources))

    def write_series(self, text: str) -> None:
        (self.root / "patches" / "series.yaml").write_text(textwrap.dedent(text))


@pytest.fixture
def proj(tmp_path, monkeypatch) -> Env:
    upstream = make_upstream(tmp_path / "upstream")
    root = copy_project_skeleton(tmp_path / "project")
    # the project is itself a git repository, as a q3build checkout is
    git("init", "-q", cwd=root)
    e = Env(root=root, upstream=upstream, work=root / ".q3build", cache=tmp_path / "cache")
    e.write_pin(f"- kind: git\n  url: {upstream.repo}\n")
    e.write_series("schema: 1\npatches: []\n")
    (root / "recipes" / "host.yaml").write_text(HOST_RECIPE)
    monkeypatch.setenv("Q3BUILD_CACHE_DIR", str(e.cache))
    monkeypatch.chdir(root)
    return e


def add_patch(e: Env, name: str, *, edit, subject: str = "change", purpose: str = "test change") -> None:
    """Make a commit in the synced tree with `edit(src)`, export it, and give it metadata."""
    edit(e.src)
    git("commit", "-q", "-am", subject, cwd=e.src)
    assert e.q3("patches", "export") == 0
