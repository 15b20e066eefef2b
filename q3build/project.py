"""Where things live: the project (recipes, patches, templates) and the workspace and cache.

The environment is read here once, from the mapping passed in; nothing below reads os.environ.
"""

from __future__ import annotations

import dataclasses
import os
from collections.abc import Mapping
from pathlib import Path

from q3build.errors import Q3BuildError, WorkspaceError

PIN_FILE = "recipes/llama.cpp.yaml"
SERIES_FILE = "patches/series.yaml"
TAG_NAME = "CACHEDIR.TAG"
TAG_TEXT = ("Signature: 8a477f597d28d172789f06886806bc55\n"
            "# This directory is owned by q3build; `q3build clean` may delete it.\n")


def _is_project(p: Path) -> bool:
    return (p / PIN_FILE).is_file() and (p / SERIES_FILE).is_file()


def find_root(start: Path) -> Path | None:
    for p in (start, *start.parents):
        if _is_project(p):
            return p
    return None


@dataclasses.dataclass(frozen=True, kw_only=True)
class Project:
    root: Path
    work: Path
    cache: Path

    @classmethod
    def discover(cls, env: Mapping[str, str], *, project: str | None = None, cwd: Path | None = None) -> "Project":
        cwd = cwd or Path.cwd()
        if project or env.get("Q3BUILD_PROJECT"):
            root = Path(project or env["Q3BUILD_PROJECT"]).resolve()
            if not _is_project(root):
                raise Q3BuildError(f"{root}: not a q3build project (needs {PIN_FILE} and {SERIES_FILE})")
        else:
            root = find_root(cwd.resolve())
            if root is None:  # running an installed q3build from elsewhere: use its own checkout
                pkg_root = Path(__file__).resolve().parent.parent
                if not _is_project(pkg_root):
                    raise Q3BuildError(f"no q3build project found in {cwd} or its parents "
                                       f"(looked for {PIN_FILE})", hint="pass --project DIR")
                root = pkg_root
        work = Path(env["Q3BUILD_WORK_DIR"]) if env.get("Q3BUILD_WORK_DIR") else root / ".q3build"
        if env.get("Q3BUILD_CACHE_DIR"):
            cache = Path(env["Q3BUILD_CACHE_DIR"])
        else:
            xdg = env.get("XDG_CACHE_HOME") or str(Path(env.get("HOME", str(Path.home()))) / ".cache")
            cache = Path(xdg) / "q3build"
        return cls(root=root, work=work.resolve(), cache=cache.resolve())

    # --- project files -------------------------------------------------------------------
    @property
    def pin_file(self) -> Path:
        return self.root / PIN_FILE

    @property
    def recipes_dir(self) -> Path:
        return self.root / "recipes"

    @property
    def patches_dir(self) -> Path:
        return self.root / "patches"

    @property
    def series_file(self) -> Path:
        return self.root / SERIES_FILE

    @property
    def templates_dir(self) -> Path:
        return self.root / "templates"

    def display(self, path: Path) -> str:
        """A path as the user should read it in messages: relative to the project when inside."""
        try:
            return str(path.relative_to(self.root))
        except ValueError:
            return str(path)

    # --- workspace -----------------------------------------------------------------------
    @property
    def src_root(self) -> Path:
        return self.work / "src"

    @property
    def src_dir(self) -> Path:
        return self.src_root / "llama.cpp"

    def build_dir(self, target: str) -> Path:
        return self.work / "build" / target

    def stage_dir(self, target: str) -> Path:
        return self.work / "stage" / target

    def render_dir(self, target: str) -> Path:
        return self.work / "render" / target

    # --- cache (shared between workspaces and clones; safe to delete) --------------------
    @property
    def store(self) -> Path:
        """Bare git repository holding the pinned upstream objects from any source."""
        return self.cache / "upstream" / "llama.cpp.git"

    @property
    def downloads(self) -> Path:
        return self.cache / "downloads"

    @property
    def ccache_dir(self) -> Path:
        return self.cache / "ccache"


def ensure_owned_dir(path: Path) -> Path:
    """Create a q3build-owned directory (tagged), or check an existing one carries our tag."""
    if path.exists():
        if any(path.iterdir()) and not (path / TAG_NAME).is_file():
            raise WorkspaceError(f"{path}: exists and is not a q3build directory (no {TAG_NAME}); "
                                 "refusing to write into it")
    path.mkdir(parents=True, exist_ok=True)
    tag = path / TAG_NAME
    if not tag.exists():
        tag.write_text(TAG_TEXT)
    return path


def git_env(project: Project, base: Mapping[str, str]) -> dict[str, str]:
    """Environment for every git call: no escaping into an enclosing repo, no prompts,
    a fixed identity so the commits we make are reproducible."""
    env = dict(base)
    env.update({
        # stop discovery at the workspace/cache so a broken tree never resolves to the
        # repository that happens to contain it (e.g. the q3build checkout itself)
        "GIT_CEILING_DIRECTORIES": os.pathsep.join(
            str(p) for p in (project.work.parent, project.cache.parent, project.work, project.cache)),
        "GIT_TERMINAL_PROMPT": "0",
        "GIT_AUTHOR_NAME": "q3build",
        "GIT_AUTHOR_EMAIL": "q3build@invalid",
        "GIT_COMMITTER_NAME": "q3build",
        "GIT_COMMITTER_EMAIL": "q3build@invalid",
        "LC_ALL": "C",
    })
    return env
