"""Console output: one stderr console, steps with durations, progress only on a terminal."""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    TextColumn,
    TimeElapsedColumn,
)

console = Console(stderr=True, highlight=False)

_GITHUB = os.environ.get("GITHUB_ACTIONS") == "true"


def info(msg: str) -> None:
    console.print(msg)


def warn(msg: str) -> None:
    console.print(f"[yellow]warning:[/] {msg}")


@contextlib.contextmanager
def step(title: str) -> Iterator[None]:
    """Print a step header, then ✓/✗ with its duration. On GitHub Actions the step is also a log
    group; its markers go to stderr like everything else here, because stdout may hold a report
    (`--json`, `--markdown`) that a workflow redirects to a file."""
    if _GITHUB:
        print(f"::group::{title}", file=sys.stderr, flush=True)
    console.print(f"[bold]▶ {title}[/]")
    t0 = time.monotonic()
    ok = False
    try:
        yield
        ok = True
    finally:
        dt = time.monotonic() - t0
        mark = "[green]✓[/]" if ok else "[red]✗[/]"
        console.print(f"{mark} {title} ({dt:.1f} s)")
        if _GITHUB:
            print("::endgroup::", file=sys.stderr, flush=True)


# "[12/192] Building CXX object …" (ninja) or "[ 12%] Building …" (make)
_NINJA = re.compile(r"^\[(\d+)/(\d+)\]\s*(.*)")
_MAKE = re.compile(r"^\[\s*(\d+)%\]\s*(.*)")


class BuildProgress:
    """Turns build-tool output lines into a rich progress bar (only when stderr is a terminal)."""

    def __init__(self, title: str):
        self.enabled = console.is_terminal
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                                 TimeElapsedColumn(), console=console, transient=True)
        self.task = self.progress.add_task(title, total=None)
        self.done = 0
        self.total = 0

    def __enter__(self) -> "BuildProgress":
        if self.enabled:
            self.progress.start()
        return self

    def __exit__(self, *exc) -> None:
        if self.enabled:
            self.progress.stop()

    def feed(self, line: str) -> None:
        m = _NINJA.match(line)
        if m:
            self.done, self.total = int(m[1]), int(m[2])
        else:
            m = _MAKE.match(line)
            if not m:
                return
            self.done, self.total = int(m[1]), 100
        if self.enabled:
            self.progress.update(self.task, completed=self.done, total=self.total)
