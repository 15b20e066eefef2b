"""Toolchain kinds as data, and the zig that q3build fetches into its own cache. No processes: pip
is replaced by a function that writes the wheel it would have downloaded."""

from __future__ import annotations

import dataclasses
import hashlib
import json
import shutil
import typing
import zipfile
from pathlib import Path

import pytest

from q3build import proc
from q3build.core import plan as plan_mod
from q3build.core import recipe
from q3build.core.recipe import Toolchain
from q3build.errors import FetchError
from q3build.toolchains import KINDS, fetch, kind_of
from q3build.toolchains import resolve as toolchains
from q3build.toolchains import zig as zig_kind
from q3build.toolchains.base import Settings

from .helpers import make_project

WHEEL = "ziglang-0.17.1-py3-none-manylinux_2_12_x86_64.manylinux2010_x86_64.musllinux_1_1_x86_64.whl"
ENV = {"PATH": "/usr/bin"}


def test_the_registry_is_the_schema():
    assert set(typing.get_args(typing.get_type_hints(Toolchain)["kind"])) == set(KINDS)
    for name, kind in KINDS.items():
        assert kind.name == name
        for key in kind.own_keys:
            assert key in {f.name for f in dataclasses.fields(Toolchain)}, (name, key)
    assert [n for n, k in KINDS.items() if not k.cross] == ["native"]
    assert [n for n, k in KINDS.items() if not k.in_ci] == ["external"]
    assert [n for n, k in KINDS.items() if k.takes_path] == ["external"]


def test_a_zig_only_key_on_another_kind_is_refused(tmp_path, monkeypatch):
    project = make_project(tmp_path, monkeypatch, recipes=("host",))
    (project.recipes_dir / "x.yaml").write_text(
        "schema: 1\ndescription: x\ntoolchain:\n  kind: native\n  wheels:\n    a.whl: '" + "0" * 64 + "'\n")
    with pytest.raises(Exception) as e:
        recipe.load(project, "x")
    assert "toolchain.wheels: only used by toolchain kind 'zig' (this is 'native')" in str(e.value)


def fake_wheel(path, zig_body=b"#!/bin/sh\necho 0.17.1\n"):
    with zipfile.ZipFile(path, "w") as z:
        info = zipfile.ZipInfo("ziglang/zig")
        info.external_attr = 0o100755 << 16
        z.writestr(info, zig_body)
        z.writestr("ziglang/lib/std/std.zig", b"// std\n")
        z.writestr("ziglang-0.17.1.dist-info/RECORD", b"")
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def pip(monkeypatch, tmp_path):
    """Stands in for `python -m pip download`: writes the wheel into --dest and records the argv."""
    calls = []
    src = tmp_path / WHEEL
    digest = fake_wheel(src)

    def run(argv, **kw):
        calls.append(list(map(str, argv)))
        dest = Path(argv[argv.index("--dest") + 1])
        dest.mkdir(parents=True, exist_ok=True)
        shutil.copy(src, dest / WHEEL)
    monkeypatch.setattr(proc, "run", run)
    return calls, digest


def test_fetch_checks_the_pinned_sha256_and_unpacks_with_the_executable_bit(tmp_path, pip):
    calls, digest = pip
    cache = tmp_path / "cache"
    rec = fetch.wheel("ziglang", "0.17.1", {WHEEL: digest}, cache, ENV, where="recipes/riscv64.yaml toolchain.wheels")
    d = cache / "toolchains" / "ziglang-0.17.1"
    assert rec == {"package": "ziglang", "version": "0.17.1", "wheel": WHEEL, "sha256": digest, "dir": str(d)}
    assert (d / "ziglang" / "zig").stat().st_mode & 0o111 and (d / "ziglang" / "lib" / "std" / "std.zig").is_file()
    assert json.loads((d / fetch.RECORD).read_text()) == rec
    argv = calls[0]
    assert argv[1:5] == ["-m", "pip", "download", "--no-deps"] and "--only-binary" in argv
    assert argv[-1] == "ziglang==0.17.1"
    # a second fetch finds it in the cache: no pip
    assert fetch.wheel("ziglang", "0.17.1", {WHEEL: digest}, cache, ENV, where="x") == rec
    assert len(calls) == 1
    # nothing half-made is left beside it
    assert sorted(p.name for p in (cache / "toolchains").iterdir()) == ["ziglang-0.17.1"]


def test_fetch_refuses_a_wrong_or_missing_sha256(tmp_path, pip):
    where = "recipes/riscv64.yaml toolchain.wheels"
    with pytest.raises(FetchError) as e:
        fetch.wheel("ziglang", "0.17.1", {WHEEL: "0" * 64}, tmp_path / "c1", ENV, where=where)
    assert f"{WHEEL}: sha256 {pip[1]} does not match the pinned {'0' * 64} ({where})" == str(e.value)
    with pytest.raises(FetchError) as e:
        fetch.wheel("ziglang", "0.17.1", {"other.whl": "0" * 64}, tmp_path / "c2", ENV, where=where)
    assert str(e.value).startswith(f"{where}: no sha256 pinned for {WHEEL}")
    assert not (tmp_path / "c1" / "toolchains" / "ziglang-0.17.1").exists()
    assert not (tmp_path / "c2" / "toolchains" / "ziglang-0.17.1").exists()


def test_unpack_refuses_paths_outside_the_directory(tmp_path):
    whl = tmp_path / "evil.whl"
    with zipfile.ZipFile(whl, "w") as z:
        z.writestr("../escape", b"x")
    with pytest.raises(FetchError, match="unsafe path in the wheel: '../escape'"):
        fetch.unpack(whl, tmp_path / "out")
    assert not (tmp_path / "escape").exists()


@pytest.fixture
def rv_project(tmp_path, monkeypatch):
    project = make_project(tmp_path, monkeypatch, recipes=("host", "riscv64", "spacemit-k1", "spacemit-k3"))
    monkeypatch.setattr(toolchains, "resolve", lambda t, env, wdir=None, settings=None:
                        kind_of(t).resolve(t, env, wdir, settings or Settings()))
    monkeypatch.setattr(zig_kind, "check_sysroot", lambda *a: None)
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: None)   # no ziglang in q3build's Python
    return project


def test_plan_uses_the_pinned_zig_in_the_cache_without_running_it(rv_project):
    plan = plan_mod.resolve(rv_project, "spacemit", ENV)
    assert plan.target_name == "spacemit-k3"      # the alias note first, then the toolchain's state
    assert plan.alias_reason.split("; ", 1)[1].startswith("make fetches zig (ziglang==0.17.1, PyPI) into q3build's cache")
    d = rv_project.cache / "toolchains" / "ziglang-0.17.1"
    tc = plan.to_record()["toolchain"]
    assert tc["zig"] == str(d / "ziglang" / "zig") and tc["source"] == "q3build-cache"
    assert tc["fetch"] == {"package": "ziglang", "version": "0.17.1", "dir": str(d), "wheel": None, "sha256": None}
    # once fetched, the plan records the wheel, and the cache key (the build dir) stays the same
    (d / "ziglang").mkdir(parents=True)
    (d / "ziglang" / "zig").write_text("")
    (d / fetch.RECORD).write_text(json.dumps({"wheel": WHEEL, "sha256": "ab" * 32}))
    after = plan_mod.resolve(rv_project, "spacemit", ENV)
    assert after.toolchain.fetch["wheel"] == WHEEL and after.cache_key == plan.cache_key
    assert after.alias_reason.split("; ", 1)[1].startswith("zig 0.17.1 is in q3build's cache")
    wrapper = after.file("zig-cc").content
    assert f"zig={d / 'ziglang' / 'zig'}\n" in wrapper


def test_interpreter_zig_is_used_only_when_asked(rv_project):
    with pytest.raises(Exception) as e:
        plan_mod.resolve(rv_project, "riscv64", {**ENV, "Q3BUILD_ZIG": "interpreter"})
    assert "the PyPI package ziglang is not installed in q3build's Python; pip install ziglang==0.17.1" in str(e.value)
    # an alias skips the zig target then, like any target whose toolchain is missing
    with pytest.raises(Exception) as e:
        plan_mod.resolve(rv_project, "spacemit", ENV, plan_mod.Options(zig="interpreter"))
    assert "spacemit-k1 (PyPI package ziglang is not installed)" in str(e.value)


def test_doctor_lists_the_fetched_zig_as_fetched_and_only_apt_for_root(rv_project):
    where = plan_mod.settings(rv_project, ENV, plan_mod.Options())
    tools = {t.purpose.split(":")[0]: t for t in toolchains.tools_for(recipe.load(rv_project, "riscv64"), ENV, where)}
    zig = tools["zig cc"]
    assert zig.fetch and "make fetches ziglang==0.17.1 into" in zig.fetch
    assert tools["target C library (sysroot)"].apt == "libc6-riscv64-cross"
    assert tools["run target binaries on this machine"].apt == "qemu-user"


def test_ccache_hashes_the_wrapper_not_where_zig_lives(rv_project, tmp_path):
    a = plan_mod.resolve(rv_project, "riscv64", ENV)
    other = dataclasses.replace(rv_project, cache=tmp_path / "elsewhere")
    b = plan_mod.resolve(other, "riscv64", ENV)
    ka, kb = kind_of(a.target).build_env(a), kind_of(b.target).build_env(b)
    assert a.toolchain.zig != b.toolchain.zig
    assert ka == kb and ka["CCACHE_COMPILERCHECK"].startswith("string:")
    k1 = plan_mod.resolve(rv_project, "spacemit-k1", ENV)
    assert kind_of(k1.target).build_env(k1) != ka   # other wrapper flags: other hash
