"""A real board in the loop: the packaged archive runs on a machine reached over ssh.

``q3build validate --target T --board ssh://[user@]host[:port]`` (and ``bench --board``) asks the
board for ``uname -m`` before anything is copied, copies the release archive and the model into a
fresh scratch directory there (``mktemp -d``), unpacks it, checks the staged ``llama-server
--version`` reports this build, starts the packaged launcher (``bin/q3tts-serve``, so the board's
own placement applies, e.g. K3's A100 cores) bound to the board's 127.0.0.1, and runs the same HTTP
checks as a local validate through an ssh port forward. The server's output comes back through ssh
into the local log; the results go to ``validation.json`` here. The server is stopped by its process
id and the scratch directory removed, also when a check fails.

The system ``ssh``/``scp`` run with argument lists (remote commands are quoted with shlex) and
read ``~/.ssh/config`` as usual (host aliases, keys, jump hosts). ``Q3BUILD_SSH_OPTIONS`` adds
options to both (e.g. ``-F FILE`` or ``-i KEY``). Password prompts are off (BatchMode): a board
that needs one is a refused login. Unreachable host, refused login and wrong architecture each end
in one line.
"""

from __future__ import annotations

import random
import shlex
import subprocess
import urllib.parse
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from q3build import ui
from q3build.errors import InputError, Q3BuildError

SSH_EXIT_CONNECTION = 255          # what ssh returns when it could not connect or log in
CONNECT_TIMEOUT = 15
SCRATCH_PREFIX = "q3build-board."


class BoardError(Q3BuildError):
    """The board could not be reached, refused the login, or is not the target's architecture."""

    exit_code = 7


@dataclass(frozen=True)
class Address:
    host: str
    user: str | None = None
    port: int | None = None

    @property
    def destination(self) -> str:
        return f"{self.user}@{self.host}" if self.user else self.host

    def __str__(self) -> str:
        return f"ssh://{self.destination}" + (f":{self.port}" if self.port else "")

    @property
    def slug(self) -> str:
        """A directory name for this board's results."""
        return "".join(c if c.isalnum() or c in ".-" else "_" for c in f"{self.host}" + (
            f"-{self.port}" if self.port else ""))


def parse(url: str) -> Address:
    what = f"--board {url}: expected ssh://[user@]host[:port]"
    u = urllib.parse.urlsplit(url)
    try:
        port = u.port
    except ValueError:
        raise InputError(f"{what} (bad port)") from None
    if u.scheme != "ssh" or not u.hostname or u.path not in ("", "/") or u.query or u.fragment or u.password:
        raise InputError(what)
    return Address(host=u.hostname, user=u.username or None, port=port)


class Board:
    def __init__(self, address: Address, env: Mapping[str, str]):
        self.address, self.env = address, dict(env)
        self.options = ["-o", "BatchMode=yes", "-o", f"ConnectTimeout={CONNECT_TIMEOUT}",
                        *shlex.split(env.get("Q3BUILD_SSH_OPTIONS", ""))]

    def ssh_argv(self, command: Sequence[str], *, ssh_options: Sequence[str] = ()) -> list[str]:
        port = ["-p", str(self.address.port)] if self.address.port else []
        return ["ssh", *self.options, *port, *ssh_options, self.address.destination, "--", shlex.join(command)]

    def _failed_connection(self, stderr: str) -> BoardError:
        lines = [ln.strip() for ln in stderr.splitlines() if ln.strip() and not ln.startswith("Warning:")]
        why = lines[-1] if lines else "ssh exited with 255 and no message"
        if "Permission denied" in why or "Too many authentication failures" in why:
            return BoardError(f"board {self.address}: the login was refused ({why}); check the user, the key "
                              "and ~/.ssh/config (password prompts are off)")
        if "Host key verification failed" in why:
            return BoardError(f"board {self.address}: {why} (its key is not in known_hosts, or changed)")
        return BoardError(f"board {self.address} is unreachable: {why}")

    def run(self, command: Sequence[str], *, check: bool = True, timeout: float | None = 600
            ) -> subprocess.CompletedProcess:
        """Run a command on the board (argv, quoted for its shell); output captured."""
        try:
            r = subprocess.run(self.ssh_argv(command), env=self.env, capture_output=True, text=True, timeout=timeout,
                               stdin=subprocess.DEVNULL, check=False)
        except subprocess.TimeoutExpired:
            raise BoardError(f"board {self.address}: {shlex.join(command)} did not finish in {timeout:.0f} s") from None
        if r.returncode == SSH_EXIT_CONNECTION:
            raise self._failed_connection(r.stderr)
        if check and r.returncode != 0:
            last = (r.stderr.strip().splitlines() or r.stdout.strip().splitlines() or ["no output"])[-1]
            raise BoardError(f"board {self.address}: `{shlex.join(command)}` failed (exit {r.returncode}): {last}")
        return r

    def machine(self) -> str:
        return self.run(["uname", "-m"]).stdout.strip()

    def copy_to(self, files: Sequence[Path], remote_dir: str) -> None:
        port = ["-P", str(self.address.port)] if self.address.port else []
        argv = ["scp", "-q", *self.options, *port, *map(str, files), f"{self.address.destination}:{remote_dir}/"]
        r = subprocess.run(argv, env=self.env, capture_output=True, text=True, stdin=subprocess.DEVNULL, check=False)
        if r.returncode != 0:
            last = (r.stderr.strip().splitlines() or ["no output"])[-1]
            raise BoardError(f"board {self.address}: copying {', '.join(f.name for f in files)} failed: {last}")

    def scratch(self) -> str:
        d = self.run(["mktemp", "-d", "-t", f"{SCRATCH_PREFIX}XXXXXXXX"]).stdout.strip()
        if SCRATCH_PREFIX not in d or not d.startswith("/"):
            raise BoardError(f"board {self.address}: mktemp -d gave {d!r}, not a scratch directory")
        return d

    def stop_server(self, scratch: str) -> None:
        """Stop the server started from ``scratch`` by the pid its shell wrote (none: nothing to stop)."""
        self.run(["sh", "-c", 'if [ -f "$1/server.pid" ]; then kill "$(cat "$1/server.pid")" 2>/dev/null; fi; true',
                  "sh", scratch], check=False, timeout=60)

    def remove(self, scratch: str) -> None:
        """Stop the server started from ``scratch`` and delete the directory."""
        if SCRATCH_PREFIX not in scratch:
            raise ValueError(scratch)
        try:
            self.stop_server(scratch)
            self.run(["rm", "-rf", scratch], check=False, timeout=60)
        except BoardError as e:
            ui.warn(f"{e}; {scratch} may be left on the board")

    def server_argv(self, scratch: str, launcher: str, env: Mapping[str, str], args: Sequence[str], *,
                    local_port: int, remote_port: int) -> list[str]:
        """ssh that forwards local_port to the board's 127.0.0.1:remote_port and runs the launcher in the
        foreground; the shell records its pid (the launcher and llama-server exec into it) for ``remove``."""
        command = ["sh", "-c", 'echo "$$" > "$1/server.pid"; shift; exec "$@"', "sh", scratch,
                   "env", *(f"{k}={v}" for k, v in env.items()), launcher, *args]
        forward = ["-o", "ExitOnForwardFailure=yes", "-L", f"127.0.0.1:{local_port}:127.0.0.1:{remote_port}"]
        return self.ssh_argv(command, ssh_options=forward)


def remote_port() -> int:
    """A port for the server on the board (its free ports are unknown here; a taken one fails /health
    with the server's own bind error in the log)."""
    return random.randrange(20000, 60000)


def check_machine(board: Board, arch: str, target: str) -> str:
    machine = board.machine()
    if machine != arch:
        raise BoardError(f"board {board.address} is {machine}, but target {target} is built for {arch}; "
                         "nothing was copied")
    return machine


def checked_with_archive(address: Address, project, plan, series, env: Mapping[str, str]) -> tuple[Board, str, Path]:
    """The board, checked to be the plan's architecture before anything else is done, its machine name,
    and the plan's release archive (packaged here) to copy there."""
    from q3build.release import package

    board = Board(address, env)
    machine = check_machine(board, plan.arch, plan.target_name)
    with ui.step(f"Packaging {plan.target_name}"):
        archive = Path(package.build(project, plan, series, env, project.work / "dist")["archive"])
    return board, machine, archive


@dataclass
class Deployed:
    """The archive unpacked on the board: where, and how to start its server through a forward."""

    board: Board
    scratch: str
    top: str                       # the archive's top directory on the board
    model: str                     # the model directory on the board
    machine: str
    version: str


def deploy(board: Board, plan, archive: Path, model: Path | None, machine: str) -> Deployed:
    """Copy and unpack the archive and the model in a scratch dir (the caller removes it with
    ``board.remove``), and check the unpacked llama-server's --version; ``check_machine`` comes first."""
    from q3build.speech.facts import model_files

    scratch = board.scratch()
    try:
        with ui.step(f"Copying {archive.name}" + (" and the model" if model else "")
                     + f" to {board.address}:{scratch}"):
            board.copy_to([archive], scratch)
            if model is not None:
                board.run(["mkdir", f"{scratch}/model"])
                board.copy_to(list(model_files(model)), f"{scratch}/model")
            board.run(["tar", "-xzf", f"{scratch}/{archive.name}", "-C", scratch])
        top = f"{scratch}/{archive.name[:-len('.tar.gz')]}"
        env = [f"{k}={v}" for k, v in (plan.target.runtime.env or {}).items()]
        r = board.run(["env", *env, f"{top}/bin/llama-server", "--version"], check=False)
        version = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or plan.distribution not in version:
            raise BoardError(f"board {board.address}: the packaged llama-server --version did not report this build "
                             f"(exit {r.returncode}): {version[-200:] or 'no output'}")
    except BaseException:
        board.remove(scratch)
        raise
    return Deployed(board=board, scratch=scratch, top=top, model=f"{scratch}/model", machine=machine,
                    version=version)


def validate(deployed: Deployed, settings, log_file: Path, *, max_frames: int) -> list:
    """The HTTP checks of a local validate, against the packaged launcher's server on the board."""
    from q3build.speech import validate as checks_mod
    from q3build.speech.server import Server, free_port

    local, remote = free_port(), remote_port()
    env = {"Q3TTS_MODEL_DIR": deployed.model, "Q3TTS_HOST": "127.0.0.1", "Q3TTS_PORT": str(remote)}
    argv = deployed.board.server_argv(deployed.scratch, f"{deployed.top}/bin/q3tts-serve", env,
                                      ["--tts-max-frames", str(max_frames)], local_port=local, remote_port=remote)
    ui.info(f"Starting q3tts-serve on {deployed.board.address} (127.0.0.1:{remote} there, forwarded to "
            f"127.0.0.1:{local}; log {log_file})")
    with Server(argv, deployed.board.env, log_file, local) as server:
        try:
            return checks_mod.check_server(server, settings, where=f"on {deployed.board.address}")
        finally:
            # stop the server on the board first: ssh then ends by itself
            deployed.board.stop_server(deployed.scratch)


def _peak_rss_mib(deployed: Deployed) -> float | None:
    """VmHWM of the server on the board (it is the process whose id the launcher's shell recorded)."""
    r = deployed.board.run(["sh", "-c", 'grep VmHWM "/proc/$(cat "$1/server.pid")/status"', "sh", deployed.scratch],
                           check=False, timeout=60)
    parts = r.stdout.split()
    return round(int(parts[1]) / 1024, 1) if r.returncode == 0 and len(parts) >= 2 and parts[1].isdigit() else None


def bench_config(deployed: Deployed, model: Path, job, threads: int, log_file: Path, *,
                 startup_timeout: float = 900) -> dict:
    """Our own figures of one configuration on the board (no reference there): the packaged launcher
    serves the model with `threads`; cold TTFA (first streamed request), the service's own figures of a
    whole request (RTF, per-stage ms), warm TTFA, and the server's peak RSS read on the board."""
    from q3build.speech.bench.runs import ttfa_figures
    from q3build.speech.facts import model_files
    from q3build.speech.server import Server, free_port

    remote_model = f"{deployed.scratch}/model-{model.name}"
    deployed.board.run(["mkdir", "-p", remote_model])
    deployed.board.copy_to(list(model_files(model)), remote_model)
    local, remote = free_port(), remote_port()
    env = {"Q3TTS_MODEL_DIR": remote_model, "Q3TTS_HOST": "127.0.0.1", "Q3TTS_PORT": str(remote),
           "Q3TTS_THREADS": str(threads)}
    argv = deployed.board.server_argv(deployed.scratch, f"{deployed.top}/bin/q3tts-serve", env,
                                      ["--tts-max-frames", str(job.frames), *job.numerics],
                                      local_port=local, remote_port=remote)
    with Server(argv, deployed.board.env, log_file, local) as server:
        try:
            why = server.wait_healthy(startup_timeout)
            if why:
                return {"ttfa_ms": None, "error": f"on {deployed.board.address}: {why}"}
            try:
                result = ttfa_figures(server.client(timeout=3600), job)
            except RuntimeError as e:
                return {"ttfa_ms": None, "error": str(e).splitlines()[0]}
            result["peak_rss_mib"] = _peak_rss_mib(deployed)
            return result
        finally:
            deployed.board.stop_server(deployed.scratch)
