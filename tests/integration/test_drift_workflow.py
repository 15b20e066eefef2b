"""A dry run of .github/workflows/drift.yml: its `run:` steps, taken from the workflow file and run
with bash as GitHub runs them, against the synthetic upstream history of test_drift.py (a `master`
branch with a conflict, a 3-way and two patches that became upstream).

What the runner gives a job is set up here: the checkout (the project, with .github/), `python` on
PATH with q3build importable (what setup-python and `pip install -e .` do), RUNNER_TEMP,
GITHUB_WORKSPACE, GITHUB_OUTPUT and GITHUB_STEP_SUMMARY. Steps that use an action are not run;
which ones those are is checked, so a new step cannot slip past the dry run.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest
import yaml

from ..conftest import REPO, git
from .conftest import add_patch
from .test_drift import drifted, edit, upstream_commit  # noqa: F401  (drifted is a fixture)

NOT_RUN = {"actions/checkout", "actions/setup-python", "actions/upload-artifact"}
INSTALL = "Install q3build"          # pip install -e . : here q3build comes from PYTHONPATH


def drift_job() -> dict:
    return yaml.safe_load((REPO / ".github" / "workflows" / "drift.yml").read_text())["jobs"]["drift"]


class Runner:
    """What the runner gives each step: `python` on PATH with q3build importable (setup-python and
    `pip install -e .`), RUNNER_TEMP, GITHUB_WORKSPACE, GITHUB_OUTPUT, GITHUB_STEP_SUMMARY, and
    GitHub's `bash` shell (bash --noprofile --norc -eo pipefail {0})."""

    def __init__(self, tmp: Path, workspace: Path):
        self.tmp, self.workspace = tmp, workspace
        bin_dir = tmp / "bin"
        bin_dir.mkdir()
        python = bin_dir / "python"
        python.write_text(f'#!/bin/sh\nexec "{sys.executable}" "$@"\n')
        python.chmod(0o755)
        (tmp / "runner-temp").mkdir()
        self.summary = tmp / "step-summary.md"
        self.summary.touch()
        self.env = dict(os.environ, PATH=f"{bin_dir}{os.pathsep}{os.environ['PATH']}", PYTHONPATH=str(REPO),
                        RUNNER_TEMP=str(tmp / "runner-temp"), GITHUB_WORKSPACE=str(workspace),
                        GITHUB_STEP_SUMMARY=str(self.summary), CI="true", GITHUB_ACTIONS="true")
        self.steps = 0

    def run(self, script: str, env: dict) -> subprocess.CompletedProcess:
        self.steps += 1
        output = self.tmp / f"output-{self.steps}"
        output.touch()
        path = self.tmp / f"step-{self.steps}.sh"
        path.write_text(script)
        return subprocess.run(["bash", "--noprofile", "--norc", "-eo", "pipefail", str(path)], cwd=self.workspace,
                              env=dict(self.env, **env, GITHUB_OUTPUT=str(output)), capture_output=True, text=True,
                              timeout=300)


def dry_run(project: Path, tmp: Path) -> tuple[list[dict], Path]:
    """Run the drift job's steps in `project` (the checkout) until one fails. Returns the steps run
    (name, exit code, output) and the job summary file."""
    if not (project / ".github").exists():
        shutil.copytree(REPO / ".github", project / ".github")
    runner = Runner(tmp, project)
    job = drift_job()
    ran, skipped = [], []
    for step in job["steps"]:
        if "uses" in step or step.get("name") == INSTALL:
            skipped.append(step["uses"].split("@")[0] if "uses" in step else INSTALL)
            continue
        env = {**job.get("env", {}), **step.get("env", {})}
        assert "${{" not in str(env), step          # nothing here evaluates expressions
        r = runner.run(step["run"], env)
        ran.append({"name": step.get("name", step["run"].splitlines()[0]), "rc": r.returncode,
                    "stdout": r.stdout, "stderr": r.stderr})
        print(f"--- step: {ran[-1]['name']} (exit {r.returncode})\n{r.stdout}{r.stderr}")
        if r.returncode != 0:
            break
    assert skipped[:3] == ["actions/checkout", "actions/setup-python", INSTALL]
    assert set(skipped) <= NOT_RUN | {INSTALL}
    return ran, runner.summary


@pytest.fixture
def master(drifted):
    """test_drift's history, with upstream's branch named as upstream names it."""
    proj, commits = drifted
    git("branch", "master", "main", cwd=proj.upstream.repo)
    return proj, commits


def test_the_drift_job_fails_naming_each_patch_and_upstream_commit(master, tmp_path):
    proj, commits = master
    ran, summary = dry_run(proj.root, tmp_path)
    assert [s["name"] for s in ran] == ["Fetch upstream master (full history)", "q3build drift",
                                        "Patches that stopped applying or are upstream"]
    assert [s["rc"] for s in ran] == [0, 0, 1]
    assert f"upstream master: {commits['cmake']}" in ran[0]["stdout"]
    md = summary.read_text()
    # q3build's table, against master at the newest upstream commit
    assert f"## Upstream drift: {proj.upstream.commit[:9]} → master ({commits['cmake'][:9]})" in md
    for row in ("| 1 | `0001-run-fast.patch` | clean |", "| 2 | `0002-readme-five.patch` | 3-way |",
                "| 3 | `0003-main-brackets.patch` | conflict |", "| 4 | `0004-greeting-q3build.patch` | upstream |",
                "| 5 | `0005-cmake-version.patch` | upstream |"):
        assert row in md
    assert "5 patches: 1 clean, 1 3-way, 1 conflict, 2 upstream" in md
    # the gate: one error per failing patch, naming the upstream commit behind it
    errors = [x for x in ran[2]["stdout"].splitlines() if x.startswith("::error title=drift::")]
    assert len(errors) == 3, ran[2]["stdout"]
    conflict, greeting, cmake = (e[len("::error title=drift::"):] for e in errors)
    assert conflict.startswith("0003-main-brackets.patch: no longer applies at tools/main.c @@")
    assert conflict.endswith(f"upstream commit {commits['dash'][:12]} (tools: dash between tool and greeting)")
    assert greeting.startswith("0004-greeting-q3build.patch: upstream now has this change")
    assert f"upstream commit {commits['greet'][:12]} (greeting: say q3build)" in greeting
    assert cmake.startswith("0005-cmake-version.patch: upstream now has this change")
    assert f"upstream commit {commits['cmake'][:12]} (cmake: project version; commit none)" in cmake
    # the commit that only moved main.c's lines (the header comment) is named nowhere
    assert commits["header"][:12] not in ran[2]["stdout"]
    assert "::warning title=drift::0002-readme-five.patch: applies only with a three-way merge" in ran[2]["stdout"]
    assert "clean" not in "".join(errors) and "0001" not in ran[2]["stdout"]
    # and the same in the summary, under the table
    assert md.index("5 patches:") < md.index(f"### Drift against master ({commits['cmake'][:12]})")
    assert f"- **fails**: {conflict}" in md and f"- **fails**: {greeting}" in md and f"- **fails**: {cmake}" in md


def test_the_drift_job_passes_when_every_patch_still_applies(proj, tmp_path):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", subject="run fast", edit=lambda s: edit(s / "scripts/run.sh", "echo run", "echo run fast"))
    new = upstream_commit(proj.upstream.repo, "readme: intro line", ("README.md", "fake upstream\n\n",
                                                                       "fake upstream\n(intro)\n"))
    git("branch", "master", "main", cwd=proj.upstream.repo)
    ran, summary = dry_run(proj.root, tmp_path)
    assert [s["rc"] for s in ran] == [0, 0, 0]
    md = summary.read_text()
    assert f"→ master ({new[:9]})" in md and "| 1 | `0001-run-fast.patch` | clean |" in md
    assert "1 patches: 1 clean, 0 3-way, 0 conflict, 0 upstream" in md
    assert "::error" not in ran[2]["stdout"] and "### Drift against" not in md
    assert f"every patch still applies to upstream {new[:12]}" in ran[2]["stderr"]


def test_a_shallow_upstream_is_refused(proj, tmp_path):
    """The fetch step's check, on the step as written but with --depth 1 put in."""
    job = drift_job()
    fetch = next(s["run"] for s in job["steps"] if s.get("name") == "Fetch upstream master (full history)")
    assert "--depth" not in fetch
    git("branch", "master", "main", cwd=proj.upstream.repo)
    recipe = proj.root / "recipes" / "llama.cpp.yaml"          # file://: a plain path ignores --depth
    recipe.write_text(recipe.read_text().replace(f"url: {proj.upstream.repo}", f"url: file://{proj.upstream.repo}"))
    r = Runner(tmp_path, proj.root).run(fetch.replace("--single-branch", "--single-branch --depth 1", 1), job["env"])
    assert r.returncode == 1
    assert r.stdout.strip() == f"::error title=drift::file://{proj.upstream.repo} master came back shallow; " \
                               "drift needs full history"


def test_an_overlay_file_that_upstream_added_fails_naming_the_commit(proj, tmp_path):
    overlay = proj.root / "patches" / "overlay" / "tools" / "speech.c"
    overlay.parent.mkdir(parents=True)
    overlay.write_text("/* ours */\n")
    assert proj.q3("sync") == 0
    up = proj.upstream.repo
    (up / "tools" / "speech.c").write_text("/* upstream's */\n")
    git("add", "tools/speech.c", cwd=up)
    git("commit", "-q", "-m", "tools: speech", cwd=up)
    added = git("rev-parse", "HEAD", cwd=up)
    upstream_commit(up, "readme: later", ("README.md", "line six", "line 6"))
    git("branch", "master", "main", cwd=up)
    ran, summary = dry_run(proj.root, tmp_path)
    assert [s["rc"] for s in ran] == [0, 0, 1]
    assert "Overlay: files now exist upstream: tools/speech.c" in summary.read_text()
    assert ran[2]["stdout"].splitlines() == [
        f"::error title=drift::overlay file tools/speech.c: now exists upstream; upstream commit {added[:12]} (tools: speech)"]
