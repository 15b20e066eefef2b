"""Optional libraries (recipe `libraries:`, q3build.toolchains.libraries): the speech service's mp3
(LAME) and Ogg Opus (libopus, libogg) encoders are linked where found — for the host in this machine's
standard directories, for a cross target only inside its sysroot — and left out cleanly otherwise (the
plan sets their CMake switch OFF). No processes: toolchains are faked, sysroots are temporary dirs."""

from __future__ import annotations

import dataclasses
import pytest

from q3build.core import plan as plan_mod
from q3build.core import recipe
from q3build.errors import RecipeError
from q3build.toolchains import libraries
from q3build.toolchains import zig as zig_kind

from .helpers import make_project

RV = ("riscv64", "spacemit-k1", "spacemit-k3")
ENV = {"PATH": "/usr/bin"}
MP3_FILES = ("usr/include/lame/lame.h", "usr/lib/libmp3lame.a")
OPUS_FILES = ("usr/include/opus/opus.h", "usr/include/ogg/ogg.h", "usr/lib/libopus.a", "usr/lib/libogg.a")


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: "/opt/ziglang/zig")
    return make_project(tmp_path, monkeypatch, recipes=("host", *RV))


def sysroot(tmp_path, *files):
    root = tmp_path / "sysroot"
    (root / "lib").mkdir(parents=True, exist_ok=True)
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(b"")
    return root


def with_sysroot(target, root):
    return dataclasses.replace(target, toolchain=dataclasses.replace(target.toolchain, sysroot=str(root)))


def test_host_and_the_riscv64_targets_name_the_encoders(project):
    for name in ("host", *RV):
        libs = recipe.load(project, name).libraries
        assert sorted(libs) == ["mp3", "opus"], name
        assert (libs["mp3"].cmake, libs["opus"].cmake) == ("Q3_SPEECH_MP3", "Q3_SPEECH_OPUS")
        assert libs["mp3"].libs == ("mp3lame",) and libs["opus"].libs == ("opus", "ogg")
    host = recipe.load(project, "host").libraries
    # the host recipe names the Debian packages doctor and bootstrap install
    assert host["mp3"].apt == ("libmp3lame-dev",) and host["opus"].apt == ("libopus-dev", "libogg-dev")


def test_a_cross_target_looks_only_in_its_sysroot(project, tmp_path):
    rv = with_sysroot(recipe.load(project, "riscv64"), sysroot(tmp_path))
    found = libraries.find(rv)
    assert [f.found for f in found] == [False, False]
    assert all(f.where == f"sysroot {tmp_path / 'sysroot'}" for f in found)
    assert found[0].missing == ("lame/lame.h", "libmp3lame.a")
    assert libraries.cmake_switches(found) == {"Q3_SPEECH_MP3": False, "Q3_SPEECH_OPUS": False}
    assert "left out" in found[0].describe() and "apt install" not in found[0].describe()


def test_a_sysroot_that_provides_them_turns_them_on(project, tmp_path):
    rv = with_sysroot(recipe.load(project, "spacemit-k1"), sysroot(tmp_path, *MP3_FILES, *OPUS_FILES))
    found = {f.name: f for f in libraries.find(rv)}
    assert found["mp3"].found and found["opus"].found
    assert str(tmp_path / "sysroot/usr/lib/libmp3lame.a") in found["mp3"].files
    assert found["mp3"].describe().startswith("Q3_SPEECH_MP3=ON (sysroot ")


def test_a_library_is_all_or_nothing(project, tmp_path):
    # opus without ogg: the Ogg Opus encoder needs both, so it is left out, naming what is missing
    rv = with_sysroot(recipe.load(project, "riscv64"), sysroot(tmp_path, *OPUS_FILES[:1], OPUS_FILES[2]))
    opus = {f.name: f for f in libraries.find(rv)}["opus"]
    assert not opus.found and opus.missing == ("ogg/ogg.h", "libogg.a")
    # a shared library alone is not enough: the binaries are self-contained
    rv = with_sysroot(recipe.load(project, "riscv64"), sysroot(tmp_path, MP3_FILES[0], "usr/lib/libmp3lame.so"))
    assert not {f.name: f for f in libraries.find(rv)}["mp3"].found


def test_a_cross_target_without_a_sysroot_never_looks_at_the_build_machine(project):
    rv = recipe.load(project, "riscv64")
    rv = dataclasses.replace(rv, toolchain=dataclasses.replace(rv.toolchain, sysroot=None))
    found = libraries.find(rv)
    assert not any(f.found for f in found) and "no sysroot" in found[0].where


def test_the_host_looks_in_the_standard_directories(project, tmp_path):
    host = recipe.load(project, "host")
    root = sysroot(tmp_path, "usr/include/lame/lame.h", "usr/lib/x86_64-linux-gnu/libmp3lame.a")
    mp3 = {f.name: f for f in libraries.find(host, root=str(root))}["mp3"]
    if libraries._multiarch(None) != ["x86_64-linux-gnu"]:
        pytest.skip("the multiarch directory of this machine is not x86_64-linux-gnu")
    assert mp3.found


def test_the_plan_sets_each_switch_and_records_why(project, tmp_path, monkeypatch):
    # the riscv64 sysroot (Debian's cross libc) has no encoders: OFF, and the plan says so
    monkeypatch.setattr(libraries, "search_dirs", lambda target, root=None: ([], [], "sysroot /usr/riscv64-linux-gnu", None))
    plan = plan_mod.resolve(project, "riscv64", ENV)
    assert plan.cmake_value("Q3_SPEECH_MP3") == "OFF" and plan.cmake_value("Q3_SPEECH_OPUS") == "OFF"
    rec = {r["name"]: r for r in plan.to_record()["libraries"]}
    assert rec["mp3"]["found"] is False and rec["mp3"]["missing"] == ["lame/lame.h", "libmp3lame.a"]
    assert 'set(Q3_SPEECH_MP3 "OFF" CACHE BOOL "")' in plan.file("initial-cache").content


def test_the_recipe_and_the_command_line_still_win(project, monkeypatch):
    monkeypatch.setattr(libraries, "search_dirs", lambda target, root=None: ([], [], "nowhere", None))
    path = project.recipes_dir / "host.yaml"
    path.write_text(path.read_text().replace("    LLAMA_BUILD_TESTS: false", "    LLAMA_BUILD_TESTS: false\n"
                                             "    Q3_SPEECH_OPUS: true"))
    plan = plan_mod.resolve(project, "host", ENV, plan_mod.Options(cmake_defines=("Q3_SPEECH_MP3=ON",)))
    assert plan.cmake_value("Q3_SPEECH_OPUS") == "ON" and plan.cmake_value("Q3_SPEECH_MP3") == "ON"


def test_a_bad_library_entry_is_a_recipe_error(project):
    path = project.recipes_dir / "host.yaml"
    path.write_text(path.read_text() + "  aac:\n    purpose: x\n    cmake: q3-aac\n"
                    "    headers: [fdk-aac/aacenc_lib.h]\n    libs: [libfdk-aac.a]\n")
    with pytest.raises(RecipeError) as e:
        recipe.load(project, "host")
    text = "\n".join(e.value.problems)
    assert "libraries.aac.cmake" in text and "libraries.aac.libs[0]" in text
