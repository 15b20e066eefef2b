"""sync: sources, verification, reproducibility, no-op, atomic failure, workspace safety."""

from __future__ import annotations

import json
import re
import shutil
import subprocess

from q3build.core import workspace
from q3build.project import Project

from ..conftest import git
from .conftest import add_patch, make_tarball


def stamp(e):
    return json.loads((e.src / ".git" / "q3build-stamp.json").read_text())


def head(e):
    return git("rev-parse", "HEAD", cwd=e.src)


def test_git_source_gives_verified_tree_and_stamp(proj):
    assert proj.q3("sync") == 0
    s = stamp(proj)
    assert s["upstream_tree"] == proj.upstream.tree
    assert s["base_commit"] == proj.upstream.commit  # the real upstream commit, with its history
    assert s["source"] == "git"
    assert (proj.src / "tools" / "main.c").is_file()
    # full history, never shallow: three-way apply needs preimages
    assert git("rev-parse", "--is-shallow-repository", cwd=proj.src) == "false"
    assert git("rev-list", "--count", "HEAD", cwd=proj.src) == "3"  # 2 upstream + overlay commit
    assert (proj.work / "CACHEDIR.TAG").is_file()


def test_second_sync_is_a_noop(proj, capsys):
    assert proj.q3("sync") == 0
    before = head(proj)
    mtime = (proj.src / "tools" / "main.c").stat().st_mtime_ns
    capsys.readouterr()
    assert proj.q3("sync", "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert out["changed"] is False
    assert head(proj) == before
    assert (proj.src / "tools" / "main.c").stat().st_mtime_ns == mtime  # tree not rewritten


def test_archive_source_gives_same_tree_as_git(proj, tmp_path):
    tarball = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz")
    digest = subprocess.run(["sha256sum", tarball], capture_output=True, text=True).stdout.split()[0]
    proj.write_pin(f"""\
        - kind: archive
          name: mirror
          url: {tarball}
          sha256: {digest}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync") == 0
    s = stamp(proj)
    assert s["source"] == "mirror"
    assert s["upstream_tree"] == proj.upstream.tree
    assert s["base_commit"] != proj.upstream.commit  # an imported parentless base commit
    assert not (proj.src / "PKG-INFO").exists()      # only the subdir was taken
    assert (proj.src / ".git").is_dir()              # the sdist's .git file was dropped
    assert (proj.src / "scripts" / "run.sh").stat().st_mode & 0o111  # exec bit kept
    # same pin, fresh workspace: same base and head commit ids (fixed identity and date)
    first = head(proj)
    shutil.rmtree(proj.work)
    assert proj.q3("sync") == 0
    assert head(proj) == first


def test_both_sources_agree(proj, tmp_path):
    tarball = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz")
    proj.write_pin(f"""\
        - kind: git
          url: {proj.upstream.repo}
        - kind: archive
          url: {tarball}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync", "--source", "git") == 0
    git_tree = stamp(proj)["tree"]
    assert proj.q3("sync", "--source", "archive") == 0
    assert stamp(proj)["source"] == "archive"
    assert stamp(proj)["tree"] == git_tree


def test_unreachable_source_falls_back_to_next(proj, tmp_path, capsys):
    tarball = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz")
    proj.write_pin(f"""\
        - kind: git
          url: {tmp_path / "no-such-repo"}
        - kind: archive
          url: {tarball}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync") == 0
    assert stamp(proj)["source"] == "archive"
    assert "source git failed" in capsys.readouterr().err


def test_no_source_reachable_is_one_error_per_source(proj, tmp_path, capsys):
    proj.write_pin(f"""\
        - kind: git
          url: {tmp_path / "no-such-repo"}
        - kind: archive
          url: {tmp_path / "no-such.tar.gz"}
        """)
    assert proj.q3("sync") == 3
    err = capsys.readouterr().err
    assert "no source produced the pinned tree" in err
    assert "git:" in err and "; archive:" in err and "no-such.tar.gz" in err
    line = next(ln for ln in err.splitlines() if ln.startswith("q3build: error:"))
    assert "no source produced" in line and "git:" in line and "archive:" in line  # one line
    assert "q3build: hint:" in err
    assert not proj.src.exists()


def test_wrong_tree_is_rejected(proj, tmp_path, capsys):
    other = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz",
                         extra={"pkg-1.0/vendor/llama.cpp/EXTRA": b"not upstream\n"})
    proj.write_pin(f"""\
        - kind: archive
          url: {other}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync") == 3
    err = capsys.readouterr().err
    assert f"the pin records {proj.upstream.tree}" in err
    assert not proj.src.exists()


def test_archive_sha256_mismatch(proj, tmp_path, capsys):
    tarball = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz")
    proj.write_pin(f"""\
        - kind: archive
          url: {tarball}
          sha256: {"ab" * 32}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync") == 3
    err = capsys.readouterr().err
    assert "sha256 mismatch" in err and "pkg-1.0.tar.gz" in err


def test_tar_filter_refuses_path_traversal(proj, tmp_path, capsys):
    tarball = make_tarball(proj.upstream, tmp_path / "pkg-1.0.tar.gz",
                           extra={"pkg-1.0/vendor/llama.cpp/../../../../evil": b"x"})
    proj.write_pin(f"""\
        - kind: archive
          url: {tarball}
          subdir: vendor/llama.cpp
        """)
    assert proj.q3("sync") == 3
    assert "unsafe member path" in capsys.readouterr().err
    assert not (tmp_path / "evil").exists()
    assert not (proj.cache.parent / "evil").exists()


def _break_readme(src):
    (src / "README.md").write_text((src / "README.md").read_text().replace("line four", "line FOUR"))


def test_patch_applies_and_reproduces(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=_break_readme, subject="readme: shout line four")
    series = (proj.root / "patches" / "series.yaml").read_text()
    assert "0001-readme-shout-line-four.patch" in series
    assert proj.q3("sync") == 0  # the exported series reproduces the user's tree: swapped in
    first = head(proj)
    shutil.rmtree(proj.work)
    assert proj.q3("sync") == 0
    assert head(proj) == first  # patched commit ids are reproducible
    assert "line FOUR" in (proj.src / "README.md").read_text()


def test_broken_patch_names_patch_file_and_hunk_and_keeps_tree(proj, capsys):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=_break_readme, subject="readme: shout line four")
    assert proj.q3("sync") == 0
    good_head = head(proj)
    good_readme = (proj.src / "README.md").read_text()
    # make the patch's context wrong, then re-record its checksum (an honest but stale patch)
    patch = next((proj.root / "patches").glob("0001-*.patch"))
    patch.write_text(patch.read_text().replace(" line five", " line 5"))
    assert proj.q3("patches", "refresh") == 0
    capsys.readouterr()
    assert proj.q3("sync") == 4
    err = capsys.readouterr().err
    assert "patch 1/1 0001-readme-shout-line-four.patch does not apply" in err
    assert "README.md: hunk #1 (@@ -1,7 +1,7 @@) context not found" in err
    # previous good tree intact
    assert head(proj) == good_head
    assert (proj.src / "README.md").read_text() == good_readme
    assert not list((proj.work / "src").glob(".llama.cpp.new-*"))


def test_patch_for_missing_file_names_the_file(proj, capsys):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=lambda s: (s / "tools" / "greeting.h").write_text("#pragma once\n"),
              subject="greeting: empty")
    patch = next((proj.root / "patches").glob("0001-*.patch"))
    # a file upstream does not have, with a preimage no repository has: no three-way rescue
    text = patch.read_text().replace("tools/greeting.h", "tools/nothere.h")
    patch.write_text(re.sub(r"^index [0-9a-f]+\.\.", "index " + "1" * 40 + "..", text, flags=re.M))
    assert proj.q3("patches", "refresh") == 0
    capsys.readouterr()
    assert proj.q3("sync") == 4
    assert "tools/nothere.h" in capsys.readouterr().err


def test_edited_patch_fails_integrity_check_before_anything(proj, capsys):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=_break_readme, subject="readme: shout line four")
    assert proj.q3("sync") == 0
    good = head(proj)
    patch = next((proj.root / "patches").glob("0001-*.patch"))
    patch.write_text(patch.read_text() + "\n")
    capsys.readouterr()
    assert proj.q3("sync") == 4
    err = capsys.readouterr().err
    assert "patch 1 0001-readme-shout-line-four.patch: sha256 mismatch" in err
    assert head(proj) == good


def test_editing_a_patch_resyncs_from_pristine(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=_break_readme, subject="readme: shout line four")
    assert proj.q3("sync") == 0
    patch = next((proj.root / "patches").glob("0001-*.patch"))
    patch.write_text(patch.read_text().replace("+line FOUR", "+line FOUR!"))
    assert proj.q3("patches", "refresh") == 0
    assert proj.q3("sync") == 0
    text = (proj.src / "README.md").read_text()
    assert "line FOUR!" in text and text.count("line FOUR") == 1
    assert git("rev-list", "--count", "HEAD", cwd=proj.src) == "4"  # upstream 2 + overlay + 1 patch


def test_local_changes_are_never_discarded_silently(proj, capsys):
    assert proj.q3("sync") == 0
    (proj.src / "README.md").write_text("my work\n")
    proj.write_series("schema: 1\npatches: []\n# touched\n")
    (proj.root / "patches" / "overlay" / "new.txt").write_text("x\n")  # forces a real re-sync
    capsys.readouterr()
    assert proj.q3("sync") == 4
    assert "uncommitted changes (README.md)" in capsys.readouterr().err
    assert (proj.src / "README.md").read_text() == "my work\n"
    assert proj.q3("sync", "--force") == 0
    assert (proj.src / "README.md").read_text() != "my work\n"


def test_unexported_commits_block_sync(proj, capsys):
    assert proj.q3("sync") == 0
    _break_readme(proj.src)
    git("commit", "-q", "-am", "local work", cwd=proj.src)
    (proj.root / "patches" / "overlay" / "new.txt").write_text("x\n")
    capsys.readouterr()
    assert proj.q3("sync") == 4
    assert "commits that are not in patches/" in capsys.readouterr().err
    assert "line FOUR" in (proj.src / "README.md").read_text()


def test_foreign_directory_is_not_replaced(proj, capsys):
    proj.src.mkdir(parents=True)
    (proj.src / "precious.txt").write_text("x")
    assert proj.q3("sync") == 4
    assert "not made by q3build" in capsys.readouterr().err
    assert (proj.src / "precious.txt").exists()


def test_git_never_escapes_into_the_enclosing_repository(proj):
    """The project is a git repo; with the tree's .git gone, git must not find the project's."""
    assert proj.q3("sync") == 0
    shutil.rmtree(proj.src / ".git")
    env = {"PATH": "/usr/bin:/bin"}
    p = Project.discover(env, project=str(proj.root))
    assert workspace.current(p, env) is None
    from q3build.project import git_env
    r = subprocess.run(["git", "rev-parse", "--show-toplevel"], cwd=proj.src, env=git_env(p, env),
                       capture_output=True, text=True)
    assert r.returncode != 0  # without the ceiling this would print the project root


def test_overlay_is_one_commit_and_must_be_new_files(proj, capsys):
    ov = proj.root / "patches" / "overlay"
    (ov / "tools" / "speech").mkdir(parents=True)
    (ov / "tools" / "speech" / "speech.c").write_text("int speech;\n")
    assert proj.q3("sync") == 0
    assert (proj.src / "tools" / "speech" / "speech.c").read_text() == "int speech;\n"
    log = git("log", "--format=%s", "-1", cwd=proj.src)
    assert log == workspace.OVERLAY_SUBJECT
    (ov / "tools" / "main.c").write_text("clash\n")
    capsys.readouterr()
    assert proj.q3("sync") == 4
    assert "overlay file tools/main.c already exists upstream" in capsys.readouterr().err


def test_series_errors_name_the_file_and_key(proj, capsys):
    proj.write_series("""\
        schema: 1
        patches:
          - file: 0001-x.patch
            purpose: x
            area: tts
            upstream: {status: maybe}
            sha256: abc
        """)
    assert proj.q3("sync") == 2
    err = capsys.readouterr().err
    assert "patches/series.yaml:6: patches[0].upstream.status: expected one of" in err
    assert "'maybe'" in err
