"""Console output on GitHub Actions: the log groups go to stderr, never into a report on stdout."""

from __future__ import annotations

import contextlib

import pytest

from q3build import ui


@pytest.mark.parametrize("fails", [False, True])
def test_a_step_on_github_actions_groups_its_log_on_stderr(monkeypatch, capsys, fails):
    monkeypatch.setattr(ui, "_GITHUB", True)
    with pytest.raises(RuntimeError) if fails else contextlib.nullcontext():
        with ui.step("Trying 5 patch(es)"):
            print('{"report": 1}')
            if fails:
                raise RuntimeError("boom")
    out, err = capsys.readouterr()
    assert out == '{"report": 1}\n'
    lines = err.splitlines()
    assert lines[0] == "::group::Trying 5 patch(es)" and lines[-1] == "::endgroup::"
    assert lines[1] == "▶ Trying 5 patch(es)" and lines[2].startswith("✗ " if fails else "✓ ")


def test_no_groups_elsewhere(monkeypatch, capsys):
    monkeypatch.setattr(ui, "_GITHUB", False)
    with ui.step("Syncing"):
        pass
    out, err = capsys.readouterr()
    assert out == "" and "::" not in err and err.startswith("▶ Syncing")
