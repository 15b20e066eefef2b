"""The drift job's verdict: fail when a patch no longer applies to upstream or upstream has it.

  python .github/scripts/drift_gate.py DRIFT_JSON UPSTREAM_GIT_DIR PATCHES_DIR

DRIFT_JSON is `q3build drift --json` run against UPSTREAM_GIT_DIR (a full-history clone of upstream).
Every failing patch is named with the upstream commit behind it, as a GitHub error annotation on
stdout and as a Markdown section appended to $GITHUB_STEP_SUMMARY (when set):

- conflict: the file and hunk, and the commits `q3build drift` found touching those lines;
- upstream: the commit that brought the change in (the first commit between the pin and the new
  upstream commit that adds the patch's most specific added line, in the patch's files);
- an overlay file that now exists upstream: the commit that added it.

A 3-way patch still applies (sync uses a three-way merge) and is a warning. Exit 1 when anything
fails, else 0.
"""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from pathlib import Path

_DIFF = re.compile(r"^diff --git a/(\S+) b/(\S+)$")


def git(git_dir: Path, *args: str) -> str:
    return subprocess.run(["git", f"--git-dir={git_dir}", *args], check=True, capture_output=True,
                          text=True).stdout.strip()


def patch_lines(patch: Path) -> tuple[list[str], list[str], list[str]]:
    """(files, added lines, removed lines) of a mailbox patch, in order."""
    files, added, removed = [], [], []
    in_diff = False
    for line in patch.read_text(errors="replace").splitlines():
        if m := _DIFF.match(line):
            files += [f for f in (m[1], m[2]) if f not in files]
            in_diff = True
        elif line == "-- " and in_diff:           # the mailbox signature after the last diff
            in_diff = False
        elif in_diff and line.startswith("+") and not line.startswith("+++"):
            added.append(line[1:])
        elif in_diff and line.startswith("-") and not line.startswith("---"):
            removed.append(line[1:])
    return files, added, removed


def commits(git_dir: Path, rev_range: str, *args: str) -> list[tuple[str, str]]:
    out = git(git_dir, "log", "--reverse", "--format=%H%x09%s", *args, rev_range)
    return [tuple(line.split("\t", 1)) for line in out.splitlines() if line]


def brought_upstream(git_dir: Path, pin: str, new: str, patch: Path) -> list[tuple[str, str]]:
    """The commit that made the patch's change upstream: the first one that adds (or, for a patch
    that only deletes, removes) its most specific line, in its files."""
    files, added, removed = patch_lines(patch)
    for lines in (added, removed):
        specific = max((x.strip() for x in lines), key=len, default="")
        if specific:
            found = commits(git_dir, f"{pin}..{new}", f"-S{specific}", "--", *files)
            if found:
                return found[:1]
    return []


def describe(c: tuple[str, str]) -> str:
    return f"{c[0][:12]} ({c[1]})"


def failures(report: dict, git_dir: Path, patches_dir: Path) -> tuple[list[str], list[str]]:
    """(failure lines, warning lines), each naming the patch or overlay file and the upstream commit."""
    pin, new = report["pin"], report["new"]
    no_history = f"upstream commit unknown: {new[:12]} does not descend from the pin {pin[:12]}"
    failed, warned = [], []
    for p in report["patches"]:
        name, verdict = p["patch"], p["verdict"]
        if verdict == "conflict":
            for c in p["conflicts"]:
                where = f"{c['file']} {c['hunk']}"
                if not report["history"]:
                    culprit = no_history
                elif c["commits"]:
                    culprit = "upstream commit " + ", ".join(describe((x["commit"], x["subject"])) for x in c["commits"])
                else:
                    culprit = f"no upstream commit between {pin[:12]} and {new[:12]} touched these lines"
                failed.append(f"{name}: no longer applies at {where}; {culprit}")
            if not p["conflicts"]:
                failed.append(f"{name}: no longer applies ({p['detail']})")
        elif verdict == "upstream":
            found = brought_upstream(git_dir, pin, new, patches_dir / name) if report["history"] else []
            culprit = ("upstream commit " + describe(found[0])) if found else \
                (no_history if not report["history"] else "no single upstream commit adds its lines")
            failed.append(f"{name}: upstream now has this change ({p['detail']}); {culprit}; drop the patch")
        elif verdict == "3-way":
            warned.append(f"{name}: applies only with a three-way merge; refresh it")
    overlay = report["overlay"]
    if overlay.startswith("files now exist upstream: "):
        for f in overlay[len("files now exist upstream: "):].split(", "):
            added = commits(git_dir, f"{pin}..{new}", "--diff-filter=A", "--", f) if report["history"] else []
            culprit = ("upstream commit " + describe(added[0])) if added else no_history
            failed.append(f"overlay file {f}: now exists upstream; {culprit}")
    return failed, warned


def main(argv: list[str]) -> int:
    if len(argv) != 3:
        print(__doc__.strip().splitlines()[2].strip(), file=sys.stderr)
        return 2
    try:
        report = json.loads(Path(argv[0]).read_text())
    except (OSError, ValueError) as e:
        print(f"::error title=drift::{argv[0]}: not a `q3build drift --json` report ({e})")
        return 2
    failed, warned = failures(report, Path(argv[1]), Path(argv[2]))
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
