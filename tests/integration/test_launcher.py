"""The rendered q3tts-serve launcher, run for real by /bin/sh with hostile recipe values."""

from __future__ import annotations

import os
import subprocess

import pytest

from q3build.core import plan as plan_mod

NASTY_DIR = "/tmp/q3 models/it's $HOME `id` $(touch pwned)"

RECIPE = f"""\
schema: 1
description: launcher test
runtime:
  host: 127.0.0.1
  port: 18080
  threads: 3
  model_dir: "{NASTY_DIR}"
  env:
    Q3_WEIRD: "a'b\\"c $d `e` \\\\n"
  extra_args: [--alias, "qwen3 tts; rm -rf /", "$(touch pwned2)"]
"""

FAKE_SERVER = """\
#!/bin/sh
printf '%s\\n' "$@" > "$ARGS_OUT"
printf '%s' "$Q3_WEIRD" > "$ENV_OUT"
"""


def stage_launcher(proj, tmp_path, name: str, recipe: str, server: str):
    """The launcher rendered from `recipe`, staged beside a stand-in llama-server script."""
    (proj.root / "recipes" / f"{name}.yaml").write_text(recipe)
    plan = plan_mod.resolve(_project(proj), name, dict(os.environ))
    bindir = tmp_path / "stage" / "bin"
    bindir.mkdir(parents=True)
    for path, text in ((bindir / "q3tts-serve", plan.file("launcher").content), (bindir / "llama-server", server)):
        path.write_text(text)
        path.chmod(0o755)
    return bindir / "q3tts-serve"


@pytest.fixture
def launcher(proj, tmp_path):
    return stage_launcher(proj, tmp_path, "launch", RECIPE, FAKE_SERVER), tmp_path


def _project(proj):
    from q3build.project import Project
    return Project.discover(dict(os.environ), project=str(proj.root))


def run(script, tmp_path, env_extra=None, args=()):
    env = {"PATH": os.environ["PATH"], "HOME": "/nonexistent", "ARGS_OUT": str(tmp_path / "args"),
           "ENV_OUT": str(tmp_path / "env"), **(env_extra or {})}
    return subprocess.run([script, *args], env=env, capture_output=True, text=True, cwd=tmp_path)


def make_models(d):
    os.makedirs(d, exist_ok=True)
    for f in ("talker.gguf", "mmproj.gguf"):
        open(os.path.join(d, f), "w").close()


def test_values_reach_the_server_verbatim(launcher):
    script, tmp = launcher
    model_dir = str(tmp / "q3 models" / "it's $HOME `id` $(touch pwned)")
    make_models(model_dir)
    r = run(script, tmp, {"Q3TTS_MODEL_DIR": model_dir}, args=["--verbose", "two words"])
    assert r.returncode == 0, r.stderr
    args = (tmp / "args").read_text().splitlines()
    assert args == ["-m", f"{model_dir}/talker.gguf", "--mmproj", f"{model_dir}/mmproj.gguf", "-c", "512", "-np", "1",
                    "--host", "127.0.0.1", "--port", "18080", "-t", "3",
                    "--alias", "qwen3 tts; rm -rf /", "$(touch pwned2)", "--verbose", "two words"]
    assert (tmp / "env").read_text() == "a'b\"c $d `e` \\n"
    assert not list(tmp.rglob("pwned*"))


def test_recipe_default_model_dir_is_quoted(launcher):
    script, tmp = launcher
    r = run(script, tmp)
    assert r.returncode == 2
    assert r.stderr == f"q3tts-serve: model file not found: {NASTY_DIR}/talker.gguf (set Q3TTS_MODEL_DIR)\n"
    assert not list(tmp.rglob("pwned*"))


def test_environment_overrides_and_threads_auto(launcher):
    script, tmp = launcher
    make_models(str(tmp / "m"))
    r = run(script, tmp, {"Q3TTS_MODEL_DIR": str(tmp / "m"), "Q3TTS_PORT": "9999", "Q3TTS_THREADS": "0",
                          "Q3_WEIRD": "caller wins"})
    assert r.returncode == 0, r.stderr
    args = (tmp / "args").read_text().splitlines()
    assert args[args.index("--port") + 1] == "9999"
    assert args[args.index("-t") + 1] == str(os.cpu_count())
    assert (tmp / "env").read_text() == "caller wins"


def test_cpu_affinity_uses_taskset(launcher):
    script, tmp = launcher
    make_models(str(tmp / "m"))
    # a recording taskset in front of the real one
    shim = tmp / "shim"
    shim.mkdir()
    (shim / "taskset").write_text('#!/bin/sh\nprintf "%s\\n" "$@" > "$TASKSET_OUT"\nexec /usr/bin/taskset "$@"\n')
    (shim / "taskset").chmod(0o755)
    r = run(script, tmp, {"Q3TTS_MODEL_DIR": str(tmp / "m"), "Q3TTS_CPUS": "0",
                          "PATH": f"{shim}:{os.environ['PATH']}", "TASKSET_OUT": str(tmp / "taskset")})
    assert r.returncode == 0, r.stderr
    recorded = (tmp / "taskset").read_text().splitlines()
    assert recorded[:3] == ["-c", "0", str(script.parent / "llama-server")]
    assert (tmp / "args").read_text().splitlines()[0] == "-m"


AI_RECIPE = """\
schema: 1
description: launcher test, K3 placement
runtime:
  placement: ai-cores
  threads: 8
"""

PID_SERVER = """\
#!/bin/sh
printf '%s' "$$" > "$PID_OUT"
printf '%s\\n' "$@" > "$ARGS_OUT"
"""


@pytest.fixture
def ai_launcher(proj, tmp_path):
    script = stage_launcher(proj, tmp_path, "k3like", AI_RECIPE, PID_SERVER)
    make_models(str(tmp_path / "m"))
    return script, tmp_path


def test_ai_cores_placement_writes_the_server_pid_to_set_ai_thread(ai_launcher):
    script, tmp = ai_launcher
    ai = tmp / "set_ai_thread"
    ai.write_text("")
    r = run(script, tmp, {"Q3TTS_MODEL_DIR": str(tmp / "m"), "Q3TTS_AI_THREAD_FILE": str(ai),
                          "PID_OUT": str(tmp / "pid")})
    assert r.returncode == 0, r.stderr
    assert r.stderr == ""
    # the shell wrote its own id, then exec'd: the server is that process
    assert ai.read_text().strip() == (tmp / "pid").read_text()
    args = (tmp / "args").read_text().splitlines()
    assert args[args.index("-t") + 1] == "8"


def test_ai_cores_placement_without_the_proc_file_says_so_and_serves(ai_launcher):
    script, tmp = ai_launcher
    missing = tmp / "no-such-proc" / "set_ai_thread"
    r = run(script, tmp, {"Q3TTS_MODEL_DIR": str(tmp / "m"), "Q3TTS_AI_THREAD_FILE": str(missing),
                          "PID_OUT": str(tmp / "pid")})
    assert r.returncode == 0, r.stderr
    assert r.stderr == (f"q3tts-serve: {missing} not present (not a K3 kernel?): running on the default cores\n")
    assert (tmp / "pid").exists()


def test_ai_cores_placement_off_or_an_explicit_cpu_list_leaves_the_proc_file_alone(ai_launcher):
    script, tmp = ai_launcher
    ai = tmp / "set_ai_thread"
    ai.write_text("")
    for extra in ({"Q3TTS_AI_CORES": "0"}, {"Q3TTS_CPUS": "0"}):
        r = run(script, tmp, {"Q3TTS_MODEL_DIR": str(tmp / "m"), "Q3TTS_AI_THREAD_FILE": str(ai),
                              "PID_OUT": str(tmp / "pid"), **extra})
        assert r.returncode == 0, (extra, r.stderr)
        assert ai.read_text() == "", extra
