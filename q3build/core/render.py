"""Jinja2 rendering, set up in exactly one place.

Each output is a template plus a context function; a context of ``None`` means the output is
not generated for this target (e.g. no toolchain file for a native build). Templates are
files under ``templates/``; undefined variables are errors (StrictUndefined).
"""

from __future__ import annotations

import json
import shlex
import sys
import traceback
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path

import jinja2

from q3build.errors import TemplateError


def cmake_value(v) -> str:
    """One place that turns recipe values into CMake values: bools are ON/OFF, lists ;-joined."""
    if isinstance(v, bool):
        return "ON" if v else "OFF"
    if isinstance(v, (list, tuple)):
        return ";".join(cmake_value(x) for x in v)
    return str(v)


def cmake_quote(v) -> str:
    """A CMake quoted argument: escape backslash, quote and variable references."""
    s = cmake_value(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("$", "\\$") + '"'


def cmake_type(v) -> str:
    return "BOOL" if isinstance(v, bool) else "STRING"


def shquote(v) -> str:
    return shlex.quote(str(v))


def systemd_quote(v) -> str:
    """A double-quoted systemd value: escape backslash and quote, and double % (specifiers)."""
    s = str(v)
    return '"' + s.replace("\\", "\\\\").replace('"', '\\"').replace("%", "%%") + '"'


def systemd_exec_quote(v) -> str:
    """Like systemd_quote, and $ doubled because ExecStart= expands environment variables."""
    return systemd_quote(str(v).replace("$", "$$"))


@dataclass(frozen=True)
class Output:
    name: str                # stable id, shown by `q3build render`
    template: str            # file under templates/
    path: str                # where it is written, relative to the render dir
    context: Callable[[Mapping], Mapping | None]
    executable: bool = False


def environment(templates_dir: Path) -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.FileSystemLoader(str(templates_dir)),
        undefined=jinja2.StrictUndefined,
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        autoescape=False,
    )
    env.filters.update(cmake_value=cmake_value, cmake_quote=cmake_quote, cmake_type=cmake_type, shquote=shquote,
                       systemd_quote=systemd_quote, systemd_exec_quote=systemd_exec_quote,
                       tojson_sorted=lambda v: json.dumps(v, indent=2, sort_keys=True))
    return env


def render(env: jinja2.Environment, output: Output, context: Mapping, *, templates_dir: Path) -> str:
    try:
        template = env.get_template(output.template)
        return template.render(**context, generated_from=f"templates/{output.template}")
    except jinja2.TemplateNotFound as e:
        raise TemplateError(f"templates/{e.name}: template not found (needed for {output.name})") from None
    except jinja2.TemplateSyntaxError as e:
        raise TemplateError(f"templates/{output.template}:{e.lineno}: template syntax error: {e.message}") from None
    except jinja2.UndefinedError as e:
        line = _template_line(templates_dir / output.template)
        where = f"templates/{output.template}" + (f":{line}" if line else "")
        raise TemplateError(f"{where}: {e.message} (missing template variable while rendering {output.name})") \
            from None


def _template_line(path: Path) -> int | None:
    """The template line being rendered when the current exception was raised."""
    tb = sys.exc_info()[2]
    line = None
    for frame, lineno in traceback.walk_tb(tb):
        if Path(frame.f_code.co_filename) == path:
            line = lineno
    return line
