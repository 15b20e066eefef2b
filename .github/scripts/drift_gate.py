"""The drift job's verdict: fail when a patch no longer applies to upstream or upstream has it.

  python .github/scripts/drift_gate.py DRIFT_JSON UPSTREAM_GIT_DIR

DRIFT_JSON is `q3build drift --json` run against UPSTREAM_GIT_DIR (a full-history clone of upstream).
Every failure is named with the upstream commit behind it, as a GitHub error annotation on stdout
and as a Markdown section appended to $GITHUB_STEP_SUMMARY (when set):

- conflict: the file and hunk, and the upstream commits `q3build drift` found touching its lines;
- upstream: the upstream commit `q3build drift` found bringing the change in;
- an overlay file that now exists upstream: the upstream commit that added it.

A 3-way patch still applies (sync uses a three-way merge) and is a warning. Exit 1 when anything
fails, else 0.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

OVERLAY_CLASH = "files now exist upstream: "


def added_by(git_dir: Path, pin: str, new: str, path: str) -> list[tuple[str, str]]:
    """The upstream commits between pin and new that added path, oldest first."""
    out = subprocess.run(["git", f"--git-dir={git_dir}", "log", "--reverse", "--diff-filter=A",
                          "--format=%H%x09%s", f"{pin}..{new}", "--", path],
                         check=True, capture_output=True, text=True).stdout
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]


def describe(commits: list[tuple[str, str]]) -> str:
    return "upstream commit " + ", ".join(f"{sha[:12]} ({subject})" for sha, subject in commits)


def failures(report: dict, git_dir: Path) -> tuple[list[str], list[str]]:
    """(failure lines, warning lines), each naming the patch or overlay file and the upstream commit."""
    pin, new = report["pin"], report["new"]
    no_history = f"upstream commit unknown: {new[:12]} does not descend from the pin {pin[:12]}"
    failed, warned = [], []
    for p in report["patches"]:
        name, verdict = p["patch"], p["verdict"]
        if verdict == "conflict":
            for c in p["conflicts"]:
                found = [(x["commit"], x["subject"]) for x in c["commits"]]
                culprit = describe(found) if found else no_history if not report["history"] else \
                    f"no upstream commit between {pin[:12]} and {new[:12]} touched these lines"
                failed.append(f"{name}: no longer applies at {c['file']} {c['hunk']}; {culprit}")
            if not p["conflicts"]:
                failed.append(f"{name}: no longer applies ({p['detail']})")
        elif verdict == "upstream":
            found = [(x["commit"], x["subject"]) for x in p["commits"]]
            culprit = describe(found) if found else no_history if not report["history"] else \
                "no single upstream commit adds its lines"
            failed.append(f"{name}: upstream now has this change ({p['detail']}); {culprit}; drop the patch")
        elif verdict == "3-way":
            warned.append(f"{name}: applies only with a three-way merge; refresh it")
    if report["overlay"].startswith(OVERLAY_CLASH):
        for path in report["overlay"][len(OVERLAY_CLASH):].split(", "):
            found = added_by(git_dir, pin, new, path) if report["history"] else []
            failed.append(f"overlay file {path}: now exists upstream; " + (describe(found[:1]) if found else no_history))
    return failed, warned


def main(argv: list[str]) -> int:
    if len(argv) != 2:
        print("usage: drift_gate.py DRIFT_JSON UPSTREAM_GIT_DIR", file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(argv[0]).read_text())
    except (OSError, ValueError) as e:
        print(f"::error title=drift::{argv[0]}: not a `q3build drift --json` report ({e})")
        return 2
    failed, warned = failures(report, Path(argv[1]))
    for line in warned:
        print(f"::warning title=drift::{line}")
    for line in failed:
        print(f"::error title=drift::{line}")
    summary = os.environ.get("GITHUB_STEP_SUMMARY")
    if summary and (failed or warned):
        with open(summary, "a") as f:
            f.write(f"\n### Drift against {report['label']} ({report['new'][:12]})\n\n")
            f.writelines(f"- **fails**: {x}\n" for x in failed)
            f.writelines(f"- warning: {x}\n" for x in warned)
    if failed:
        print(f"drift: {len(failed)} failure(s) against upstream {report['new'][:12]}", file=sys.stderr)
        return 1
    print(f"drift: every patch still applies to upstream {report['new'][:12]}", file=sys.stderr)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
