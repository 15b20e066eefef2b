"""Following a hunk's lines through upstream diffs (drift's commit attribution), no processes."""

from __future__ import annotations

from q3build.maintainer.drift import follow, parse_u0, touches

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
