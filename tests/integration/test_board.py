"""The board runner (`validate --board ssh://…`) against a real sshd on 127.0.0.1 started by the test,
with keys generated here: what goes over ssh works, and an unreachable host, a refused key and a board
of another architecture each end in one line before anything is copied.

The whole run on the "board" (the host target, packaged, unpacked and served there) is in
tests/e2e/test_board.py."""

from __future__ import annotations

import platform
from pathlib import Path

import pytest

from q3build import cli
from q3build.release import board as board_mod
from q3build.speech.server import free_port

from ..conftest import REPO
from ..sshd import server  # noqa: F401  (fixture)


@pytest.fixture
def ssh_env(server, monkeypatch, tmp_path):
    """The client side: this server's key known, the authorised key, work dir in tmp."""
    cfg = server.client_config("ssh_config", server.dir / "client_ed25519", alias="q3board")
    monkeypatch.setenv("Q3BUILD_SSH_OPTIONS", f"-F {cfg}")
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    return cfg


def q3(capsys, *args) -> tuple[int, list[str]]:
    capsys.readouterr()
    rc = cli.main(["--project", str(REPO), *args])
    return rc, capsys.readouterr().err.splitlines()


def _scratch_dirs() -> set[Path]:
    return set(Path("/tmp").glob(f"{board_mod.SCRATCH_PREFIX}*"))


def test_commands_copies_and_cleanup_over_ssh(server, ssh_env, tmp_path):
    import os
    b = board_mod.Board(board_mod.parse(server.url()), dict(os.environ))
    assert b.machine() == platform.machine()
    scratch = b.scratch()
    assert Path(scratch).is_dir() and board_mod.SCRATCH_PREFIX in scratch
    payload = tmp_path / "it's a file $(touch pwned)"
    payload.write_text("hello board\n")
    b.copy_to([payload], scratch)
    # arguments reach the remote side verbatim (quoted for its shell)
    r = b.run(["cat", f"{scratch}/{payload.name}"])
    assert r.stdout == "hello board\n"
    b.remove(scratch)
    assert not Path(scratch).exists()
    # the remote shell runs in the login's home: nothing there was executed from the name
    assert not (Path.home() / "pwned").exists() and not list(tmp_path.rglob("pwned"))


def test_host_alias_from_the_ssh_config_is_honoured(server, ssh_env):
    import os
    # user, port and address come from the config's `Host q3board`, as from ~/.ssh/config
    b = board_mod.Board(board_mod.parse("ssh://q3board"), dict(os.environ))
    assert b.machine() == platform.machine()


def test_unreachable_board_is_one_line(server, ssh_env, capsys):
    port = free_port()        # nobody listens there
    before = _scratch_dirs()
    rc, err = q3(capsys, "validate", "--target", "host", "--board", f"ssh://127.0.0.1:{port}")
    assert rc == 7
    assert err == [(f"q3build: error: board ssh://127.0.0.1:{port} is unreachable: ssh: connect to host 127.0.0.1 "
                    f"port {port}: Connection refused")]
    assert _scratch_dirs() == before


def test_refused_key_is_one_line(server, monkeypatch, tmp_path, capsys):
    cfg = server.client_config("stranger_config", server.dir / "stranger_ed25519")
    monkeypatch.setenv("Q3BUILD_SSH_OPTIONS", f"-F {cfg}")
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    rc, err = q3(capsys, "validate", "--target", "host", "--board", server.url())
    assert rc == 7 and len(err) == 1
    assert err[0].startswith(f"q3build: error: board {server.url()}: the login was refused (")
    assert "Permission denied (publickey)" in err[0]


def test_wrong_architecture_is_one_line_and_copies_nothing(server, ssh_env, capsys, tmp_path):
    before = _scratch_dirs()
    rc, err = q3(capsys, "validate", "--target", "riscv64", "--board", server.url())
    assert rc == 7
    assert err == [(f"q3build: error: board {server.url()} is {platform.machine()}, but target riscv64 is built "
                    "for riscv64; nothing was copied")]
    assert _scratch_dirs() == before
    assert not (tmp_path / "work" / "dist").exists()


@pytest.mark.parametrize("url, why", [
    ("http://host", "expected ssh://[user@]host[:port]"),
    ("ssh://", "expected ssh://[user@]host[:port]"),
    ("ssh://host:notaport", "expected ssh://[user@]host[:port] (bad port)"),
    ("ssh://user:secret@host", "expected ssh://[user@]host[:port]"),
    ("ssh://host/some/path", "expected ssh://[user@]host[:port]"),
])
def test_bad_board_urls(url, why, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("Q3BUILD_WORK_DIR", str(tmp_path / "work"))
    rc, err = q3(capsys, "validate", "--target", "host", "--board", url)
    assert rc == 2 and err == [f"q3build: error: --board {url}: {why}"]
