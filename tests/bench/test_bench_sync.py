"""Benchmarks (pytest-benchmark): the cost of the commands users run on every build.

Timings are recorded, not asserted; compare runs with `pytest tests/bench --benchmark-compare`.
"""

from __future__ import annotations

from q3build.core import pin as pin_mod
from q3build.core import series as series_mod
from q3build.core import workspace
from q3build.project import Project

from ..integration.conftest import proj  # noqa: F401  (fixture)


def test_noop_sync(benchmark, proj):  # noqa: F811
    assert proj.q3("sync") == 0
    env = {"PATH": "/usr/bin:/bin", "HOME": str(proj.cache.parent), "Q3BUILD_CACHE_DIR": str(proj.cache)}
    project = Project.discover(env, project=str(proj.root))
    pin, series = pin_mod.load(project), series_mod.load(project)

    result = benchmark(workspace.sync, project, pin, series, env)
    assert result.changed is False
