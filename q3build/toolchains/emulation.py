"""Running target binaries on the build machine through the recipe's emulator (qemu-user).

The emulator line comes from the recipe (``emulator.command``) with ``{sysroot}`` and ``{vlen}``
filled in. SpacemiT builds read ``SPACEMIT_CORE_ARCH`` when /proc/cpuinfo has no RISC-V ``marchid``
(as under qemu-user); an IME value there runs IME instructions, which stock qemu does not have, so
emulated runs of an IME target always use the fallback value from ``emulator.env``.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import TYPE_CHECKING

from q3build import proc, ui
from q3build.core.recipe import (
    CORE_ARCH_VAR,
    IME_FALLBACK_CORE_ARCH,
    core_arch_uses_ime,
)
from q3build.errors import CommandError, ToolMissingError

if TYPE_CHECKING:
    from q3build.core.plan import BuildPlan


def argv(plan: BuildPlan, *, vlen: int | None = None, with_env: bool = False) -> list[str]:
    """The emulator prefix. ``with_env`` prepends `env NAME=VALUE…` (for CMAKE_CROSSCOMPILING_EMULATOR)."""
    emu = plan.target.emulator
    if emu is None:
        return []
    v = vlen or emu.vlen or 0
    out = [a.replace("{sysroot}", plan.toolchain.sysroot or "").replace("{vlen}", str(v)) for a in emu.command]
    if with_env and emu.env:
        out = ["env", *(f"{k}={val}" for k, val in emu.env.items()), *out]
    return out


def environment(plan: BuildPlan, env: Mapping[str, str]) -> tuple[dict[str, str], list[str]]:
    """The environment for an emulated run and the notes to show about it."""
    t = plan.target
    emu = t.emulator
    out = dict(env)
    notes: list[str] = []
    if emu is None:
        return out, notes
    asked = env.get(CORE_ARCH_VAR)
    out.update(emu.env or {})
    if t.cpu.ime != "none" and not emu.ime:
        fallback = (emu.env or {}).get(CORE_ARCH_VAR, IME_FALLBACK_CORE_ARCH)
        if asked and core_arch_uses_ime(asked):
            notes.append(f"{CORE_ARCH_VAR}={asked} asks for SpacemiT {t.cpu.ime.upper()}, but "
                         f"{emu.command[0]} has no IME instructions (it would stop with 'Illegal instruction'); "
                         f"using {fallback}: IME compiled in but unused, ggml's RVV kernels run")
        elif asked and asked != fallback:
            notes.append(f"{CORE_ARCH_VAR}={asked} replaced by {fallback} for the emulated run")
        out[CORE_ARCH_VAR] = fallback
    elif asked:
        out[CORE_ARCH_VAR] = asked
    return out, notes


def require(plan: BuildPlan, env: Mapping[str, str]) -> str:
    """The emulator executable, or a one-line error naming the package that provides it."""
    emu = plan.target.emulator
    if emu is None:
        raise ToolMissingError(f"target {plan.target_name} has no emulator: its binaries cannot run here")
    exe = proc.which(emu.command[0], env) if "/" not in emu.command[0] else emu.command[0]
    if exe is None:
        pkg = f"; apt install {' '.join(emu.apt)}" if emu.apt else ""
        raise ToolMissingError(f"emulator {emu.command[0]} for target {plan.target_name} not found{pkg}")
    return exe


def run_logged(plan: BuildPlan, args: Sequence[str], env: Mapping[str, str], log_file, *,
               vlen: int | None = None) -> int:
    """Run a target binary under the emulator with its output streamed into ``log_file`` (fresh);
    returns the exit code."""
    require(plan, env)
    e, _ = environment(plan, env)
    log_file.parent.mkdir(parents=True, exist_ok=True)
    log_file.write_text("")
    try:
        proc.stream([*argv(plan, vlen=vlen), *map(str, args)], log_file=log_file, env=e)
    except CommandError as err:
        return err.returncode
    return 0


def run(plan: BuildPlan, args: Sequence[str], env: Mapping[str, str], *, vlen: int | None = None,
        cwd=None, announce: bool = True):
    """Run a target binary (argv ``args``) under the emulator; returns the CompletedProcess (captured)."""
    require(plan, env)
    e, notes = environment(plan, env)
    if announce:
        for n in notes:
            ui.warn(n)
    return proc.run([*argv(plan, vlen=vlen), *map(str, args)], env=e, capture=True, check=False, cwd=cwd)
