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


@pytest.fixture
def launcher(proj, tmp_path):
    (proj.root / "recipes" / "launch.yaml").write_text(RECIPE)
    plan = plan_mod.resolve(_project(proj), "launch", dict(os.environ))
    bindir = tmp_path / "stage" / "bin"
    bindir.mkdir(parents=True)
    script = bindir / "q3tts-serve"
    script.write_text(plan.file("launcher").content)
    script.chmod(0o755)
    server = bindir / "llama-server"
    server.write_text(FAKE_SERVER)
    server.chmod(0o755)
    return script, tmp_path


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
