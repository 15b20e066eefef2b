"""A real OpenSSH server for the board-runner tests: bound to 127.0.0.1 on a free port, host and client
keys generated in the test's directory, the current user as the login; always stopped.

Needs Debian's openssh-server and openssh-client (scripts/bootstrap --test)."""

from __future__ import annotations

import getpass
import os
import socket
import subprocess
import time
from dataclasses import dataclass
from pathlib import Path

import pytest

from q3build.speech.server import free_port

SSHD = "/usr/sbin/sshd"
SFTP_SERVER = "/usr/lib/openssh/sftp-server"


def _keygen(path: Path) -> str:
    subprocess.run(["ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-C", "q3build-test", "-f", str(path)],
                   check=True, capture_output=True)
    return (path.with_suffix(".pub") if path.suffix else Path(f"{path}.pub")).read_text().strip()


@dataclass
class SshServer:
    port: int
    user: str
    dir: Path
    proc: subprocess.Popen

    def url(self, host: str = "127.0.0.1") -> str:
        return f"ssh://{self.user}@{host}:{self.port}"

    def client_config(self, name: str, key: Path, *, alias: str | None = None) -> Path:
        """An ssh_config for Q3BUILD_SSH_OPTIONS="-F FILE": this server's host key known, the given key."""
        cfg = self.dir / name
        alias_block = (f"Host {alias}\n  HostName 127.0.0.1\n  Port {self.port}\n  User {self.user}\n\n"
                       if alias else "")
        cfg.write_text(alias_block + f"Host *\n  IdentityFile {key}\n  IdentitiesOnly yes\n"
                       f"  UserKnownHostsFile {self.dir / 'known_hosts'}\n  StrictHostKeyChecking yes\n"
                       "  LogLevel ERROR\n")
        return cfg


def start(d: Path) -> SshServer:
    d.mkdir(parents=True, exist_ok=True)
    d.chmod(0o700)
    host_pub = _keygen(d / "host_ed25519")
    client_pub = _keygen(d / "client_ed25519")
    _keygen(d / "stranger_ed25519")            # a key the server does not know
    (d / "authorized_keys").write_text(client_pub + "\n")
    (d / "authorized_keys").chmod(0o600)
    port = free_port()
    (d / "known_hosts").write_text(f"[127.0.0.1]:{port} {' '.join(host_pub.split()[:2])}\n")
    (d / "sshd_config").write_text(
        f"Port {port}\nListenAddress 127.0.0.1\nHostKey {d / 'host_ed25519'}\nPidFile {d / 'sshd.pid'}\n"
        f"AuthorizedKeysFile {d / 'authorized_keys'}\nStrictModes no\nUsePAM no\nPasswordAuthentication no\n"
        "KbdInteractiveAuthentication no\nPubkeyAuthentication yes\nPermitRootLogin prohibit-password\n"
        "AllowTcpForwarding yes\nPermitUserEnvironment no\n"
        f"Subsystem sftp {SFTP_SERVER}\nLogLevel ERROR\n")
    if os.geteuid() == 0:
        # sshd started by root separates privileges into this directory (created by the service normally)
        Path("/run/sshd").mkdir(mode=0o755, exist_ok=True)
    with open(d / "sshd.log", "w") as log:     # the child keeps its own descriptor
        proc = subprocess.Popen([SSHD, "-D", "-e", "-f", str(d / "sshd_config")], stdout=log,
                                stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL)
    deadline = time.monotonic() + 20
    while True:
        if proc.poll() is not None:
            raise RuntimeError(f"sshd exited ({proc.returncode}): {(d / 'sshd.log').read_text()[-500:]}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=1):
                break
        except OSError:
            if time.monotonic() > deadline:
                proc.kill()
                raise RuntimeError("sshd did not listen within 20 s") from None
            time.sleep(0.1)
    return SshServer(port=port, user=getpass.getuser(), dir=d, proc=proc)


def stop(server: SshServer) -> None:
    if server.proc.poll() is None:
        server.proc.terminate()
        try:
            server.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            server.proc.kill()
            server.proc.wait()


@pytest.fixture(scope="module")
def server(tmp_path_factory):
    """An sshd for a test module, stopped after it."""
    s = start(tmp_path_factory.mktemp("sshd"))
    try:
        yield s
    finally:
        stop(s)
