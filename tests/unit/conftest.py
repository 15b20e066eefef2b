"""Unit tier: no processes. Any subprocess start is a test bug."""

from __future__ import annotations

import subprocess

import pytest


@pytest.fixture(autouse=True)
def no_processes(monkeypatch):
    def refuse(*a, **k):
        raise AssertionError(f"unit tests must not start processes: {a[0] if a else k}")
    monkeypatch.setattr(subprocess, "Popen", refuse)
