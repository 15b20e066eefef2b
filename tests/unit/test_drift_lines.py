"""Following a hunk's lines through upstream diffs (drift's commit attribution), no processes."""

from __future__ import annotations

from q3build.maintainer.drift import follow, parse_u0, specific_line, touches

DIFF = """\
diff --git a/f b/f
@@ -0,0 +1,2 @@
+new 1
+new 2
@@ -10,2 +12,3 @@
-old
-old
+x
+y
+z
@@ -20 +23,0 @@
-gone
"""


def test_parse_u0():
    assert parse_u0(DIFF) == [(0, 0, 1, 2), (10, 2, 12, 3), (20, 1, 23, 0)]


def test_touches():
    hunks = parse_u0(DIFF)
    assert not touches((1, 5), hunks[1])
    assert touches((9, 10), hunks[1]) and touches((11, 14), hunks[1])
    assert not touches((12, 19), hunks[1])
    # an insertion counts only inside the range, not at its edges
    assert touches((3, 8), (5, 0, 6, 1)) and not touches((3, 8), (8, 0, 9, 1)) and not touches((3, 8), (2, 0, 3, 1))


def test_follow_shifts_and_grows():
    hunks = parse_u0(DIFF)
    assert follow((3, 5), hunks) == (5, 7)          # two lines inserted above
    assert follow((10, 11), hunks) == (12, 14)      # rewritten lines map to what replaced them
    assert follow((21, 25), hunks) == (23, 27)      # +2 +1 -1 above


PATCH = """\
From 0000000000000000000000000000000000000000 Mon Sep 17 00:00:00 2001
Subject: [PATCH] two files

---
 a.c | 2 +-
 b.h | 1 -

diff --git a/a.c b/a.c
--- a/a.c
+++ b/a.c
@@ -1,2 +1,2 @@
 int x;
-int y = 1;
+int y = compute_the_answer();
diff --git a/b.h b/b.h
--- a/b.h
+++ b/b.h
@@ -3 +2,0 @@
-#define SOMETHING_LONGER_THAN_ANY_ADDED_LINE 1
-- 
2.47.3
"""


def test_specific_line_is_the_longest_added_line(tmp_path):
    patch = tmp_path / "p.patch"
    patch.write_text(PATCH)
    assert specific_line(patch) == (["a.c", "b.h"], "int y = compute_the_answer();")
    # a patch that only deletes: its longest removed line
    patch.write_text(PATCH.replace("+int y = compute_the_answer();\n", ""))
    assert specific_line(patch) == (["a.c", "b.h"], "#define SOMETHING_LONGER_THAN_ANY_ADDED_LINE 1")
