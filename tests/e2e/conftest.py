"""Shared e2e fixtures."""

from __future__ import annotations

import contextlib
import os

import pytest

from q3build import cli
from q3build.speech import argv as speech_argv
from q3build.speech.server import Server, free_port

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


@pytest.fixture(scope="session")
def built(tmp_path_factory, host_work):
    """The host build (root/work/stage/host/bin/...) with the three tiny variants converted once for the
    speech modules: root/custom_voice, root/base, root/voice_design (f32)."""
    root = tmp_path_factory.mktemp("speech")
    (root / "work").symlink_to(host_work)
    mp = pytest.MonkeyPatch()
    mp.setenv("Q3BUILD_WORK_DIR", str(host_work))
    try:
        for variant in ("custom_voice", "base", "voice_design"):
            out = root / f"hf-{variant}"
            assert cli.main(["--project", str(REPO), "model", "tiny", "--variant", variant, "--out", str(out)]) == 0
            assert cli.main(["--project", str(REPO), "model", "convert", str(out), "--out", str(root / variant)]) == 0
    finally:
        mp.undo()
    return root


# glibc fills freed memory with 0xa5 bytes and keeps no per-thread cache of freed blocks (whose first
# bytes it leaves alone), so a read through a dangling pointer sees 0xa5a5... instead of stale values
FREED_MEMORY_POISONED = {"MALLOC_PERTURB_": "165", "GLIBC_TUNABLES": "glibc.malloc.tcache_count=0"}


@contextlib.contextmanager
def speech_server(built, name, model, *extra, env=None):
    """The built llama-server with one of `built`'s models on 127.0.0.1, healthy; stopped on exit.
    `env` adds to the environment it runs in."""
    port = free_port()
    argv = speech_argv.llama_server(built / "work" / "stage" / "host" / "bin" / "llama-server", built / model,
                                    port=port, threads=2, extra=extra)
    with Server(argv, {**os.environ, **(env or {})}, built / f"{name}.log", port) as server:
        why = server.wait_healthy(60)
        if why:
            raise RuntimeError(why)
        yield server
