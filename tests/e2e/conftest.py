"""Shared e2e fixtures."""

from __future__ import annotations

import pytest

from q3build import cli

from ..conftest import REPO


@pytest.fixture(scope="session")
def host_work(tmp_path_factory):
    """A work dir with the host target synced, built and staged once for the modules that run its
    binaries (speech service, 501 route, release, bench); incremental through ccache."""
    work = tmp_path_factory.mktemp("host-work")
    mp = pytest.MonkeyPatch()
    mp.setenv("Q3BUILD_WORK_DIR", str(work))
    try:
        assert cli.main(["--project", str(REPO), "make", "--target", "host"]) == 0
    finally:
        mp.undo()
    return work
