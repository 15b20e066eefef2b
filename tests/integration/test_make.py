"""make on the synthetic upstream: configure, build, stage, cache key, CMAKE_ARGS, --json."""

from __future__ import annotations

import json
import os
import subprocess

import pytest

from .conftest import HOST_RECIPE


def run_make(proj, capsys, *extra):
    capsys.readouterr()
    rc = proj.q3("make", "--target", "host", "--json", *extra)
    out = capsys.readouterr()
    assert rc == 0, out.err
    return json.loads(out.out)


def test_make_stages_tools_launcher_and_unit(proj, capsys):
    s = run_make(proj, capsys)
    stage = proj.work / "stage" / "host"
    for rel in ("bin/llama-server", "bin/llama-tts", "bin/q3tts-serve", "lib/systemd/system/q3tts.service",
                "share/q3build/build-info.json"):
        assert (stage / rel).is_file(), rel
    assert os.access(stage / "bin" / "q3tts-serve", os.X_OK)
    out = subprocess.run([stage / "bin" / "llama-tts"], capture_output=True, text=True).stdout
    assert out == "llama-tts: hello from upstream\n"
    # --version carries the pin's build number and commit plus the series digest
    assert s["version"].startswith(f"version: fake (build 4242, commit {proj.upstream.commit[:7]}, q3build ")
    assert "series " in s["version"] and "overlay " in s["version"]
    assert {a["path"] for a in s["artifacts"]} >= {"bin/llama-server", "bin/llama-tts"}
    assert all(len(a["sha256"]) == 64 for a in s["artifacts"])
    assert s["configured"] is True
    log = proj.work / "build" / "host.logs" / "build.log"
    assert "Linking C executable bin/llama-server" in log.read_text()


def test_second_make_reuses_build_dir(proj, capsys):
    run_make(proj, capsys)
    s = run_make(proj, capsys)
    assert s["configured"] is False
    assert s["sync"]["changed"] is False


def test_option_change_gives_fresh_build_dir(proj, capsys):
    first = run_make(proj, capsys)
    (proj.root / "recipes" / "host.yaml").write_text(HOST_RECIPE.replace("BUILD_SHARED_LIBS: false",
                                                                         "BUILD_SHARED_LIBS: false\n    EXTRA_OPT: 7"))
    second = run_make(proj, capsys)
    assert second["cache_key"] != first["cache_key"]
    assert second["configured"] is True
    cache = (proj.work / "build" / "host" / "CMakeCache.txt").read_text()
    assert "EXTRA_OPT:STRING=7" in cache


def test_patch_changes_are_built(proj, capsys):
    from ..conftest import git
    from .conftest import add_patch
    run_make(proj, capsys)

    def greet(src):
        h = src / "tools" / "greeting.h"
        h.write_text(h.read_text().replace("hello from upstream", "hello from a patch"))
    add_patch(proj, "0001", edit=greet, subject="greeting: patched")
    git("add", "-A", cwd=proj.root)
    s = run_make(proj, capsys)
    assert s["sync"]["changed"] is True
    out = subprocess.run([proj.work / "stage" / "host" / "bin" / "llama-tts"], capture_output=True, text=True).stdout
    assert out == "llama-tts: hello from a patch\n"


def test_cmake_args_passthrough_is_applied_and_recorded(proj, capsys, monkeypatch):
    monkeypatch.setenv("CMAKE_ARGS", "-DBUILD_SHARED_LIBS=ON -DUSER_FLAG='a b'")
    s = run_make(proj, capsys)
    assert s["cmake_args"] == ["-DBUILD_SHARED_LIBS=ON", "-DUSER_FLAG=a b"]
    cache = (proj.work / "build" / "host" / "CMakeCache.txt").read_text()
    assert "USER_FLAG:UNINITIALIZED=a b" in cache
    assert "BUILD_SHARED_LIBS:BOOL=ON" in cache  # the environment wins over the recipe
    info = json.loads((proj.work / "stage" / "host" / "share" / "q3build" / "build-info.json").read_text())
    assert info["plan"]["cmake"]["cmake_args"] == s["cmake_args"]


def test_cmake_args_cannot_hide_the_series_digest(proj, capsys, monkeypatch):
    monkeypatch.setenv("CMAKE_ARGS", "-DLLAMA_BUILD_DISTRIBUTION=custom")
    capsys.readouterr()
    assert proj.q3("make", "--target", "host") == 5
    assert "did not report the series digest" in capsys.readouterr().err


def test_build_failure_names_the_log(proj, capsys):
    from .conftest import add_patch
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=lambda s: (s / "tools" / "main.c").write_text("this is not C\n"),
              subject="break the build")
    capsys.readouterr()
    assert proj.q3("make", "--target", "host") == 5
    err = capsys.readouterr().err
    assert "build failed for target host" in err and "build.log" in err
    assert "error" in err


def test_unknown_target_suggests(proj, capsys):
    assert proj.q3("make", "--target", "hots") == 2
    err = capsys.readouterr().err
    assert err.strip().splitlines()[0] == "q3build: error: unknown target 'hots' (did you mean 'host'?); known targets: host"


def test_missing_compiler_names_the_package(proj, capsys, monkeypatch):
    monkeypatch.setenv("CC", "no-such-cc")
    assert proj.q3("plan", "--target", "host") == 5
    err = capsys.readouterr().err
    assert "C compiler 'no-such-cc'" in err and "apt install build-essential" in err


def test_make_runs_named_steps_and_skips_the_ones_asked(proj, capsys):
    first = run_make(proj, capsys)
    assert first["steps"] == ["sync", "toolchain", "render", "configure", "ui", "build", "stage"]
    assert first["ui"] is None   # the synthetic pin names no web UI
    assert first["toolchain"]["kind"] == "native" and first["toolchain"]["fetch"] is None
    stage = proj.work / "stage" / "host" / "bin" / "llama-server"
    before = stage.stat().st_mtime_ns
    s = run_make(proj, capsys, "--skip", "sync", "--skip", "stage")
    assert s["steps"] == ["toolchain", "render", "configure", "ui", "build"]
    assert s["sync"] is None and s["artifacts"] == [] and stage.stat().st_mtime_ns == before


def test_skipping_configure_on_a_fresh_build_dir_says_what_to_do(proj, capsys):
    assert proj.q3("sync") == 0
    capsys.readouterr()
    assert proj.q3("make", "--target", "host", "--skip", "configure") == 5
    err = capsys.readouterr().err
    assert f"q3build: error: {proj.work / 'build' / 'host'}: not configured for target host" in err
    assert "without --skip configure" in err


def test_an_unknown_step_is_refused_with_the_choices(proj, capsys):
    with pytest.raises(SystemExit) as e:
        proj.q3("make", "--target", "host", "--skip", "link")
    assert e.value.code == 2
    assert "invalid choice: 'link' (choose from" in capsys.readouterr().err
