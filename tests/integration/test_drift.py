"""`q3build drift` on a synthetic upstream history that covers every verdict."""

from __future__ import annotations

import json

import pytest

from ..conftest import git
from .conftest import add_patch


def edit(path, old, new):
    text = path.read_text()
    assert old in text, (path, old)
    path.write_text(text.replace(old, new, 1))


def upstream_commit(repo, subject, *edits):
    for rel, old, new in edits:
        edit(repo / rel, old, new)
    git("commit", "-q", "-am", subject, cwd=repo)
    return git("rev-parse", "HEAD", cwd=repo)


@pytest.fixture
def drifted(proj):
    """Five patches on the pin, then five upstream commits on top of the pin."""
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", subject="run fast",
              edit=lambda s: edit(s / "scripts/run.sh", "echo run", "echo run fast"))
    add_patch(proj, "0002", subject="readme five",
              edit=lambda s: edit(s / "README.md", "line five", "line FIVE"))
    add_patch(proj, "0003", subject="main brackets",
              edit=lambda s: edit(s / "tools/main.c", 'printf("%s: %s\\n"', 'printf("[%s] %s\\n"'))
    add_patch(proj, "0004", subject="greeting q3build",
              edit=lambda s: edit(s / "tools/greeting.h", "hello from upstream", "hello from q3build"))
    add_patch(proj, "0005", subject="cmake version",
              edit=lambda s: edit(s / "CMakeLists.txt", "project(fake_llama C)",
                                  "project(fake_llama VERSION 1.0 LANGUAGES C)"))
    up = proj.upstream.repo
    commits = {
        "header": upstream_commit(up, "main: header comment", ("tools/main.c", "#include <stdio.h>",
                                                                "/* fake tool */\n#include <stdio.h>")),
        "intro": upstream_commit(up, "readme: intro line", ("README.md", "fake upstream\n\n",
                                                             "fake upstream\n(intro)\n")),
        "dash": upstream_commit(up, "tools: dash between tool and greeting",
                                ("tools/main.c", 'printf("%s: %s\\n"', 'printf("%s - %s\\n"')),
        "greet": upstream_commit(up, "greeting: say q3build",
                                 ("tools/greeting.h", "hello from upstream", "hello from q3build")),
        "cmake": upstream_commit(up, "cmake: project version; commit none",
                                 ("CMakeLists.txt", "project(fake_llama C)", "project(fake_llama VERSION 1.0 LANGUAGES C)"),
                                 ("CMakeLists.txt", 'LLAMA_BUILD_COMMIT "unknown"', 'LLAMA_BUILD_COMMIT "none"')),
    }
    return proj, commits


def test_every_verdict_and_the_commits_behind_a_conflict(drifted, capsys):
    proj, commits = drifted
    head_before = git("rev-parse", "HEAD", cwd=proj.src)
    assert proj.q3("drift", "--ref", "main", "--json") == 0
    report = json.loads(capsys.readouterr().out)
    verdicts = {p["patch"]: p["verdict"] for p in report["patches"]}
    assert verdicts == {"0001-run-fast.patch": "clean", "0002-readme-five.patch": "3-way",
                        "0003-main-brackets.patch": "conflict", "0004-greeting-q3build.patch": "upstream",
                        "0005-cmake-version.patch": "upstream"}
    details = {p["patch"]: p["detail"] for p in report["patches"]}
    assert "reverse" in details["0004-greeting-q3build.patch"]
    assert "empty" in details["0005-cmake-version.patch"]
    # an upstream patch names the commit that brought its change in; the others name none
    brought = {p["patch"]: [c["commit"] for c in p["commits"]] for p in report["patches"]}
    assert brought == {"0001-run-fast.patch": [], "0002-readme-five.patch": [], "0003-main-brackets.patch": [],
                       "0004-greeting-q3build.patch": [commits["greet"]],
                       "0005-cmake-version.patch": [commits["cmake"]]}
    assert report["new"] == commits["cmake"] and report["history"] is True
    assert report["counts"] == {"clean": 1, "3-way": 1, "conflict": 1, "upstream": 2}
    conflict = next(p for p in report["patches"] if p["verdict"] == "conflict")
    assert "tools/main.c" in conflict["detail"]
    [hunk] = conflict["conflicts"]
    assert hunk["file"] == "tools/main.c"
    # the commit that rewrote the patched line is named; the one that only added a header line above
    # the hunk (and shifted it) is not, nor are commits to other files
    assert [c["commit"] for c in hunk["commits"]] == [commits["dash"]]
    assert hunk["commits"][0]["subject"] == "tools: dash between tool and greeting"
    # the synced tree is untouched
    assert git("rev-parse", "HEAD", cwd=proj.src) == head_before


def test_markdown_report(drifted, capsys):
    proj, commits = drifted
    assert proj.q3("drift", "--ref", commits["cmake"], "--markdown") == 0
    md = capsys.readouterr().out
    assert "| 3 | `0003-main-brackets.patch` | conflict |" in md
    assert f"  - {commits['dash'][:12]} tools: dash between tool and greeting" in md
    assert "5 patches: 1 clean, 1 3-way, 1 conflict, 2 upstream" in md
    assert f"### `0004-greeting-q3build.patch`\n\n- upstream in {commits['greet'][:12]} greeting: say q3build" in md
    assert f"- upstream in {commits['cmake'][:12]} cmake: project version; commit none" in md


def test_a_tree_without_history(drifted, tmp_path, capsys):
    proj, _ = drifted
    tree = tmp_path / "newer"
    git("worktree", "add", "-q", "--detach", str(tree), "main", cwd=proj.upstream.repo)
    assert proj.q3("drift", "--source", str(tree), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["history"] is False
    assert [p["verdict"] for p in report["patches"]] == ["clean", "3-way", "conflict", "upstream", "upstream"]
    assert report["patches"][2]["conflicts"][0]["commits"] == []
    assert report["patches"][3]["commits"] == [] and report["patches"][4]["commits"] == []


def test_unknown_ref_is_a_clear_error(drifted, capsys):
    proj, _ = drifted
    assert proj.q3("drift", "--ref", "no-such-branch") == 3
    err = capsys.readouterr().err
    assert "--ref no-such-branch: cannot fetch it from" in err


def test_a_tarball_source(drifted, tmp_path, capsys):
    proj, _ = drifted
    tarball = tmp_path / "newer.tar.gz"
    git("archive", "--format=tar.gz", "--prefix=llama.cpp-newer/", "-o", str(tarball), "main", cwd=proj.upstream.repo)
    assert proj.q3("drift", "--source", str(tarball), "--json") == 0
    report = json.loads(capsys.readouterr().out)
    assert [p["verdict"] for p in report["patches"]] == ["clean", "3-way", "conflict", "upstream", "upstream"]
    bad = tmp_path / "bad.tar.gz"
    bad.write_bytes(b"not a tarball")
    assert proj.q3("drift", "--source", str(bad)) == 2
    assert f"--source {bad}: not a readable tarball" in capsys.readouterr().err
