"""The GitHub workflows pass the ecosystem's own checkers, offline: actionlint (with shellcheck on
every `run:` script) and zizmor's default persona, with no configuration or ignore comment that
could silence a finding. Both are pinned in the test extra and called by their path in the venv.
Beside them, the structure the project relies on (what each workflow runs, pinning, permissions).
"""

from __future__ import annotations

import json
import re
import subprocess
import sys
from pathlib import Path

import yaml

from ..conftest import REPO

VENV_BIN = Path(sys.executable).parent
WORKFLOWS = REPO / ".github" / "workflows"
FILES = sorted(WORKFLOWS.glob("*.yml"))
DEPENDABOT = REPO / ".github" / "dependabot.yml"     # keeps the pinned actions current
SHA_PIN = re.compile(r"^\s*(?:-\s*)?uses:\s*([\w.-]+/[\w./-]+)@([0-9a-f]{40}) # (v\d+\.\d+\.\d+)\s*$")


def tool(name: str) -> str:
    path = VENV_BIN / name
    assert path.is_file(), f"{path}: missing; the test extra in pyproject.toml installs {name}"
    return str(path)


def actionlint(*files: Path) -> list[dict]:
    r = subprocess.run([tool("actionlint"), "-no-color", "-format", "{{json .}}", f"-shellcheck={tool('shellcheck')}",
                        "-pyflakes=", *map(str, files)], cwd=REPO, capture_output=True, text=True, timeout=120)
    assert r.returncode in (0, 1), r.stderr          # 2: bad options, 3: actionlint failed
    findings = json.loads(r.stdout or "[]")
    assert (r.returncode == 1) == bool(findings), (r.returncode, r.stdout, r.stderr)
    return findings


def zizmor(*paths: Path) -> list[dict]:
    r = subprocess.run([tool("zizmor"), "--offline", "--no-config", "--no-ignores", "--strict-collection",
                        "--format", "json", *map(str, paths)], cwd=REPO, capture_output=True, text=True, timeout=120)
    findings = json.loads(r.stdout or "[]")
    # 0: clean; 10-14: findings (by their highest severity); anything else is zizmor failing
    assert r.returncode == 0 or 10 <= r.returncode <= 14, (r.returncode, r.stderr)
    assert (r.returncode != 0) == bool(findings), (r.returncode, r.stdout, r.stderr)
    return findings


def workflow(name: str) -> dict:
    return yaml.safe_load((WORKFLOWS / name).read_text())


def runs(job: dict) -> list[str]:
    return [s.get("run", "") for s in job["steps"]]


def test_there_are_the_three_workflows():
    assert [f.name for f in FILES] == ["build.yml", "drift.yml", "release.yml"]


def test_actionlint_finds_nothing():
    findings = actionlint(*FILES)
    assert findings == [], "\n".join(f"{f['filepath']}:{f['line']}: {f['message']} [{f['kind']}]" for f in findings)


def test_zizmor_finds_nothing():
    findings = zizmor(WORKFLOWS, DEPENDABOT)
    assert findings == [], "\n".join(f"{f['ident']}: {f['desc']} at " + ", ".join(
        f"{loc['symbolic']['key'].get('Local', {}).get('verbatim_path', '?')}:"
        f"{loc['concrete']['location']['start_point']['row'] + 1}"
        for loc in f["locations"] if loc["symbolic"].get("kind") == "Primary") for f in findings)


def test_the_checkers_catch_what_issue_18_found(tmp_path):
    """The same checkers, on build.yml with the old habits put back, report each of them: an action
    on the node20 runtime and by tag, a matrix value expanded into a script, a checkout that keeps
    its credentials, and an unquoted variable."""
    text = (WORKFLOWS / "build.yml").read_text()
    old = text.replace("actions/checkout@3d3c42e5aac5ba805825da76410c181273ba90b1 # v7.0.1", "actions/checkout@v4", 1)
    old = old.replace("\n        with:\n          persist-credentials: false\n", "\n")
    old = old.replace('python -m q3build validate --target "$TARGET"', "python -m q3build validate --target ${{ matrix.target }}")
    old = old.replace('python -m q3build sync', 'python -m q3build sync $SYNC_ARGS')
    assert old.count("@v4") == 1 and "persist-credentials" not in old and "${{ matrix.target }}\n" in old and "$SYNC_ARGS" in old
    wf = tmp_path / ".github" / "workflows"
    wf.mkdir(parents=True)
    (wf / "build.yml").write_text(old)
    lint = {(f["kind"], f["message"].split(":")[0]) for f in actionlint(wf / "build.yml")}
    assert any(k == "action" and 'runtime "node20" is deprecated' in m for k, m in lint), lint
    assert any(k == "shellcheck" for k, _ in lint), lint
    idents = {f["ident"] for f in zizmor(wf)}
    assert {"unpinned-uses", "template-injection", "artipacked"} <= idents, idents


def test_every_action_is_pinned_to_a_commit_with_its_tag():
    for f in FILES:
        for n, line in enumerate(f.read_text().splitlines(), 1):
            if re.match(r"^\s*(-\s*)?uses:", line):
                assert SHA_PIN.match(line), f"{f.name}:{n}: not `owner/repo@<40-hex sha> # vX.Y.Z`: {line.strip()}"
    # and Dependabot moves the pins (with the tag comments) to new releases
    assert [u["package-ecosystem"] for u in yaml.safe_load(DEPENDABOT.read_text())["updates"]] == ["github-actions"]


def test_least_privilege_and_no_persisted_credentials():
    for f in FILES:
        wf = yaml.safe_load(f.read_text())
        assert wf["permissions"] == {}, f"{f.name}: the workflow grants nothing; each job asks for its own"
        for name, job in wf["jobs"].items():
            assert "permissions" in job, f"{f.name}: job {name} has no permissions"
            for step in job["steps"]:
                if str(step.get("uses", "")).startswith("actions/checkout@"):
                    assert step["with"]["persist-credentials"] is False, f"{f.name}: {name}"
                # values reach scripts only through env: (no expression is expanded into a script)
                assert "${{" not in step.get("run", ""), f"{f.name}: {name}: {step.get('name')}"
    writers = {(f.name, n): j["permissions"] for f in FILES
               for n, j in yaml.safe_load(f.read_text())["jobs"].items()
               if any(v == "write" for v in j["permissions"].values())}
    assert writers == {("release.yml", "publish"): {"contents": "write", "id-token": "write",
                                                    "attestations": "write"}}


def test_build_runs_the_tests_quick_on_every_push_and_whole_nightly():
    wf = workflow("build.yml")
    on = wf[True]                                   # PyYAML reads the key `on` as True
    assert {"push", "pull_request", "schedule"} <= set(on)
    test = wf["jobs"]["test"]
    script = "\n".join(runs(test))
    assert 'scripts/test -m "not slow"' in script
    assert re.search(r'if \[ "\$EVENT_NAME" = schedule \].*\n\s*scripts/test\n', script)
    assert test["env"]["EVENT_NAME"] == "${{ github.event_name }}"
    cached = {s["with"]["path"] for s in test["steps"] if str(s.get("uses", "")).startswith("actions/cache@")}
    assert cached == {"~/.cache/pip", "~/.cache/q3build"}


def test_release_packages_verifies_attests_and_publishes():
    wf = workflow("release.yml")
    assert wf[True] == {"push": {"tags": ["v*"]}}
    jobs = wf["jobs"]
    assert any("q3build matrix --format github" in r for r in runs(jobs["matrix"]))
    build = jobs["build"]
    assert build["strategy"]["matrix"] == "${{ fromJSON(needs.matrix.outputs.matrix) }}"
    order = [next(i for i, r in enumerate(runs(build)) if f"q3build {verb}" in r)
             for verb in ("sync", "make", "validate", "package", "verify")]
    assert order == sorted(order)
    assert any("sbom.cdx.json" in r for r in runs(build))
    # no cache in a release: nothing restored from an earlier run goes into the archives
    assert not any("cache" in str(s.get("uses", "")) for j in jobs.values() for s in j["steps"])
    publish = jobs["publish"]
    uses = [str(s.get("uses", "")).split("@")[0] for s in publish["steps"]]
    assert uses.index("actions/download-artifact") < uses.index("actions/attest")
    attest = next(s for s in publish["steps"] if str(s.get("uses", "")).startswith("actions/attest@"))
    assert attest["with"] == {"subject-checksums": "dist/SHA256SUMS"}
    script = "\n".join(runs(publish))
    assert "sha256sum -- *.tar.gz *.cdx.json > SHA256SUMS" in script
    assert 'gh release create "$TAG" --verify-tag' in script and "dist/*" in script


def test_drift_runs_on_a_schedule_against_upstream_master():
    wf = workflow("drift.yml")
    assert set(wf[True]) == {"schedule", "workflow_dispatch"}
    job = wf["jobs"]["drift"]
    assert job["env"]["UPSTREAM_BRANCH"] == "master"
    script = "\n".join(runs(job))
    assert "--depth" not in script and "--filter" not in script and "--shallow" not in script
    assert 'q3build drift --ref "$UPSTREAM_BRANCH"' in script and '>> "$GITHUB_STEP_SUMMARY"' in script

