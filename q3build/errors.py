"""Error types. Each user-facing error carries an exit code and prints as one line.

Only ``cli.main`` turns these into exit codes; nothing else calls ``sys.exit``.
"""

from __future__ import annotations


class Q3BuildError(Exception):
    """An error the user can act on: printed as one line, no traceback."""

    exit_code = 1

    def __init__(self, message: str, *, hint: str | None = None):
        super().__init__(message)
        self.hint = hint


class RecipeError(Q3BuildError):
    """A recipe, pin or series file is malformed or names something unknown."""

    exit_code = 2

    def __init__(self, problems: list[str] | str, *, hint: str | None = None):
        self.problems = [problems] if isinstance(problems, str) else list(problems)
        super().__init__("; ".join(self.problems) if len(self.problems) == 1 else
                         f"{len(self.problems)} problems:\n  " + "\n  ".join(self.problems), hint=hint)


class InputError(Q3BuildError):
    """A file or argument given on the command line is not what the command needs."""

    exit_code = 2


class FetchError(Q3BuildError):
    """No configured source produced the pinned tree."""

    exit_code = 3


class PatchError(Q3BuildError):
    """A patch failed its integrity check or did not apply."""

    exit_code = 4


class WorkspaceError(Q3BuildError):
    """The workspace is in a state we refuse to touch (local changes, foreign directory)."""

    exit_code = 4


class TemplateError(Q3BuildError):
    """A template could not be rendered (missing variable, syntax error)."""

    exit_code = 2


class ToolMissingError(Q3BuildError):
    """A system tool a target needs is not installed."""

    exit_code = 5


class BuildError(Q3BuildError):
    """Configure, build or staging failed."""

    exit_code = 5


class CheckFailed(Q3BuildError):
    """A check of a built or packaged artifact failed (validate, verify)."""

    exit_code = 6


class CommandError(Q3BuildError):
    """A subprocess failed. Carries argv, return code and the tail of its output."""

    exit_code = 5

    def __init__(self, argv: list[str], returncode: int, tail: str = "", *, log_file=None):
        import shlex

        self.argv = argv
        self.returncode = returncode
        self.tail = tail
        self.log_file = log_file
        where = f" (full log: {log_file})" if log_file else ""
        super().__init__(f"command failed with exit code {returncode}: {shlex.join(argv)}{where}")
