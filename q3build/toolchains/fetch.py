"""Toolchains q3build fetches itself from PyPI into its own cache: no root, no venv changes.

``wheel(...)`` runs ``pip download --no-deps --only-binary :all:`` with q3build's own interpreter (so
the user's index and proxy settings apply), checks the wheel's sha256 against the value pinned in the
recipe (``toolchain.wheels``: file name → sha256; a wheel without a pinned sum is refused), and
unpacks it into ``<cache>/toolchains/<package>-<version>/``. The directory appears only when complete
(unpacked beside it, then renamed) and carries a record of what it holds.
"""

from __future__ import annotations

import json
import os
import shutil
import sys
import tempfile
import zipfile
from collections.abc import Mapping
from pathlib import Path, PurePosixPath

from q3build import proc
from q3build.core.series import sha256_file
from q3build.errors import CommandError, FetchError

RECORD = "q3build-toolchain.json"


def directory(cache: Path, package: str, version: str) -> Path:
    return cache / "toolchains" / f"{package}-{version}"


def record(dest: Path) -> dict | None:
    """What a fetched toolchain directory holds, or None if it is absent or incomplete."""
    try:
        return json.loads((dest / RECORD).read_text())
    except (OSError, ValueError):
        return None


def download_argv(package: str, version: str, out: Path, python: str = sys.executable) -> list[str]:
    return [python, "-m", "pip", "download", "--no-deps", "--only-binary", ":all:", "--disable-pip-version-check",
            "--quiet", "--dest", str(out), f"{package}=={version}"]


def unpack(whl: Path, dest: Path) -> None:
    """Unpack a wheel (a zip) keeping the executable bits; refuses paths that leave ``dest``."""
    with zipfile.ZipFile(whl) as z:
        for info in z.infolist():
            name = PurePosixPath(info.filename)
            if name.is_absolute() or ".." in name.parts:
                raise FetchError(f"{whl.name}: unsafe path in the wheel: {info.filename!r}")
            out = dest.joinpath(*name.parts)
            if info.is_dir():
                out.mkdir(parents=True, exist_ok=True)
                continue
            out.parent.mkdir(parents=True, exist_ok=True)
            with z.open(info) as src, open(out, "wb") as dst:
                shutil.copyfileobj(src, dst, 1 << 20)
            mode = (info.external_attr >> 16) & 0o777
            out.chmod(0o755 if mode & 0o111 else 0o644)


def wheel(package: str, version: str, sha256: Mapping[str, str], cache: Path, env: Mapping[str, str], *,
          where: str, instead: str = "point q3build at a zig with --zig PATH") -> dict:
    """Fetch, verify and unpack ``package==version`` unless already there; returns its record.
    ``where`` names the recipe key holding the pinned sums, for the error messages."""
    dest = directory(cache, package, version)
    rec = record(dest)
    if rec is not None:
        return rec
    dest.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=f".{package}-", dir=dest.parent) as tmp:
        dl = Path(tmp) / "download"
        try:
            proc.run(download_argv(package, version, dl), env=env, capture=True)
        except CommandError as e:   # pip failed: say what was being fetched
            raise FetchError(f"pip download {package}=={version} failed: {str(e).splitlines()[0]}",
                             hint=f"check the package index settings (pip config list) or {instead}") from None
        wheels = sorted(dl.glob("*.whl"))
        if len(wheels) != 1:
            raise FetchError(f"pip download {package}=={version}: expected one wheel, got "
                             f"{[w.name for w in wheels] or 'none'}")
        whl = wheels[0]
        digest = sha256_file(whl)
        pinned = sha256.get(whl.name)
        if pinned is None:
            raise FetchError(f"{where}: no sha256 pinned for {whl.name} (the {package} wheel pip chose for this "
                             f"machine); its sha256 is {digest}: check it and add it to {where}")
        if digest != pinned:
            raise FetchError(f"{whl.name}: sha256 {digest} does not match the pinned {pinned} ({where})")
        tree = Path(tmp) / "tree"
        unpack(whl, tree)
        rec = {"package": package, "version": version, "wheel": whl.name, "sha256": digest, "dir": str(dest)}
        (tree / RECORD).write_text(json.dumps(rec, indent=2) + "\n")
        try:
            os.rename(tree, dest)
        except OSError:   # another q3build finished the same fetch first
            if record(dest) is None:
                raise
    return record(dest) or rec
