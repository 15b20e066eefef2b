"""patches export: byte-stable round trip, new patches, overlay edits, refusal cases."""

from __future__ import annotations

import hashlib

from ..conftest import git
from .conftest import add_patch


def snapshot(root):
    return {p.relative_to(root).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted((root / "patches").rglob("*")) if p.is_file()}


def shout(src):
    (src / "README.md").write_text((src / "README.md").read_text().replace("line four", "line FOUR"))


def greet(src):
    h = src / "tools" / "greeting.h"
    h.write_text(h.read_text().replace("hello from upstream", "hello from q3build"))


def test_round_trip_is_byte_stable(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=shout, subject="readme: shout")
    add_patch(proj, "0002", edit=greet, subject="greeting: say q3build")
    # hand-written metadata and comments must survive a later export
    series = proj.root / "patches" / "series.yaml"
    series.write_text(series.read_text().replace("status: pending", "status: submitted") + "# keep me\n")
    git("add", "-A", cwd=proj.root)
    git("commit", "-q", "-m", "patches", cwd=proj.root)
    assert proj.q3("sync") == 0
    before = snapshot(proj.root)
    assert proj.q3("patches", "export") == 0
    assert snapshot(proj.root) == before
    # the same check as CI: nothing in the project changed
    r = git("status", "--porcelain", "patches", cwd=proj.root)
    assert r == ""
    assert "# keep me" in series.read_text()


def test_patch_order_follows_series_not_names(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=shout, subject="readme: shout")
    add_patch(proj, "0002", edit=greet, subject="greeting: say q3build")
    files = [line.split(": ", 1)[1] for line in (proj.root / "patches" / "series.yaml").read_text().splitlines()
             if line.startswith("- file: ")]
    assert files == ["0001-readme-shout.patch", "0002-greeting-say-q3build.patch"]
    assert proj.q3("sync") == 0
    subjects = git("log", "--format=%s", "-2", cwd=proj.src).splitlines()
    assert subjects == ["greeting: say q3build", "readme: shout"]


def test_amended_patch_is_rewritten_and_checksum_updated(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=shout, subject="readme: shout")
    assert proj.q3("sync") == 0
    old_sum = hashlib.sha256(next((proj.root / "patches").glob("0001-*")).read_bytes()).hexdigest()
    (proj.src / "README.md").write_text((proj.src / "README.md").read_text() + "appended\n")
    git("commit", "-q", "-a", "--amend", "--no-edit", cwd=proj.src)
    assert proj.q3("patches", "export") == 0
    patch = next((proj.root / "patches").glob("0001-*"))
    new_sum = hashlib.sha256(patch.read_bytes()).hexdigest()
    assert new_sum != old_sum and "+appended" in patch.read_text()
    assert new_sum in (proj.root / "patches" / "series.yaml").read_text()
    assert proj.q3("sync") == 0  # tree reproduced by the series → swapped in


def test_overlay_edits_go_back_to_the_overlay(proj):
    ov = proj.root / "patches" / "overlay" / "tools" / "speech"
    ov.mkdir(parents=True)
    (ov / "speech.c").write_text("int speech;\n")
    assert proj.q3("sync") == 0
    (proj.src / "tools" / "speech" / "speech.c").write_text("int speech = 1;\n")
    (proj.src / "tools" / "speech" / "voices.c").write_text("int voices;\n")
    git("add", "-A", cwd=proj.src)
    git("commit", "-q", "-m", "speech: voices", cwd=proj.src)
    assert proj.q3("patches", "export") == 0
    assert (ov / "speech.c").read_text() == "int speech = 1;\n"
    assert (ov / "voices.c").read_text() == "int voices;\n"
    # the commit only touched overlay files: no patch is made of it
    assert not list((proj.root / "patches").glob("*.patch"))


def test_overlay_edited_since_sync_is_not_clobbered(proj, capsys):
    """Someone edits patches/overlay after the sync while the tree gets other commits: export keeps
    their copy of files the tree did not touch, and refuses (naming the file) when both changed."""
    ov = proj.root / "patches" / "overlay" / "tools" / "speech"
    ov.mkdir(parents=True)
    (ov / "speech.c").write_text("int speech;\n")
    (ov / "audio.c").write_text("int audio;\n")
    assert proj.q3("sync") == 0
    (ov / "audio.c").write_text("int audio = 2;\n")            # edited in patches/overlay only
    (proj.src / "tools" / "speech" / "speech.c").write_text("int speech = 1;\n")
    git("commit", "-q", "-am", "speech: one", cwd=proj.src)
    assert proj.q3("patches", "export") == 0
    assert (ov / "audio.c").read_text() == "int audio = 2;\n"
    assert (ov / "speech.c").read_text() == "int speech = 1;\n"
    # the tree edits it again: patches/overlay holds what the last export wrote, no conflict
    (proj.src / "tools" / "speech" / "speech.c").write_text("int speech = 2;\n")
    git("commit", "-q", "-am", "speech: two", cwd=proj.src)
    assert proj.q3("patches", "export") == 0
    assert (ov / "speech.c").read_text() == "int speech = 2;\n"
    # now both sides edit speech.c
    (ov / "speech.c").write_text("int speech = 3;\n")
    (proj.src / "tools" / "speech" / "speech.c").write_text("int speech = 4;\n")
    git("commit", "-q", "-am", "speech: four", cwd=proj.src)
    capsys.readouterr()
    assert proj.q3("patches", "export") == 4
    assert "tools/speech/speech.c" in capsys.readouterr().err
    assert (ov / "speech.c").read_text() == "int speech = 3;\n"


def test_export_refuses_uncommitted_changes(proj, capsys):
    assert proj.q3("sync") == 0
    shout(proj.src)
    assert proj.q3("patches", "export") == 4
    assert "uncommitted changes (README.md)" in capsys.readouterr().err


def test_dropped_commit_removes_its_patch(proj):
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", edit=shout, subject="readme: shout")
    add_patch(proj, "0002", edit=greet, subject="greeting: say q3build")
    git("reset", "-q", "--hard", "HEAD~1", cwd=proj.src)
    assert proj.q3("patches", "export") == 0
    names = sorted(p.name for p in (proj.root / "patches").glob("*.patch"))
    assert names == ["0001-readme-shout.patch"]
    assert "greeting" not in (proj.root / "patches" / "series.yaml").read_text()


def test_new_files_go_to_the_overlay_not_into_patches(proj, capsys):
    assert proj.q3("sync") == 0
    (proj.src / "tools" / "extra.c").write_text("int extra;\n")
    shout(proj.src)
    git("add", "-A", cwd=proj.src)
    git("commit", "-q", "-m", "readme and a new source", cwd=proj.src)
    capsys.readouterr()
    assert proj.q3("patches", "export") == 0
    assert "new file tools/extra.c → overlay/" in capsys.readouterr().err
    assert (proj.root / "patches" / "overlay" / "tools" / "extra.c").read_text() == "int extra;\n"
    patch = next((proj.root / "patches").glob("*.patch")).read_text()
    assert "README.md" in patch and "extra.c" not in patch
    # the re-synced tree (file now in the overlay commit) equals the user's: swapped in without --force
    assert proj.q3("sync") == 0
    assert git("log", "--format=%s", "-1", "--", "tools/extra.c", cwd=proj.src) == "q3build overlay: our own sources"
