"""The official implementation (PyPI qwen-tts on torch CPU) is a test-time dependency: parity and the
reference side of bench need it, the build does not."""

from __future__ import annotations

import importlib.util

from q3build.errors import ToolMissingError

INSTALL = "scripts/bootstrap --test"


def installed() -> bool:
    return all(importlib.util.find_spec(m) is not None for m in ("qwen_tts", "torch"))


def require(what: str) -> None:
    """ToolMissingError (exit 5) naming the install command when the reference is not installed."""
    if not installed():
        raise ToolMissingError(f"{what} needs the official Qwen3-TTS reference (qwen-tts on torch CPU), which is "
                               f"not installed: run `{INSTALL}`")
