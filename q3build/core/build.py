"""Configure, build and stage a target from a plan.

The build directory is keyed by the plan's cache key: when the key changes (pin, patches,
overlay, options or toolchain), the directory is wiped and configured again, so stale objects
are never reused; ccache makes that cheap. Staging copies the built tools and the rendered
launcher and unit into a prefix tree with a build-info record.
"""

from __future__ import annotations

import dataclasses
import json
import re
import shlex
import shutil
import time
from collections.abc import Mapping
from dataclasses import dataclass, field

from q3build import proc, ui
from q3build.core import webui
from q3build.core.plan import STAGED_OUTPUTS, BuildPlan
from q3build.core.series import sha256_file
from q3build.errors import BuildError, CommandError, WorkspaceError
from q3build.project import Project, ensure_owned_dir
from q3build.toolchains import emulation, kind_of

KEY_FILE = "q3build-key.json"


@dataclass
class BuildResult:
    """What a make did: timings, ccache hits, staged artifacts, the --version check."""

    configured: bool = False
    configure_seconds: float = 0.0
    build_seconds: float = 0.0
    stage_seconds: float = 0.0
    ccache: dict = field(default_factory=dict)
    artifacts: list[dict] = field(default_factory=list)
    version_output: str = ""
    emulator: str = ""
    ui: dict | None = None          # make's ui step (core/webui.py): what was built, from what

    def to_record(self) -> dict:
        return {"configured": self.configured,
                "seconds": {"configure": round(self.configure_seconds, 2), "build": round(self.build_seconds, 2),
                            "stage": round(self.stage_seconds, 2)},
                "ccache": self.ccache, "artifacts": self.artifacts, "version": self.version_output,
                "version_checked_with": self.emulator or None, "ui": self.ui}


def build_env(project: Project, plan: BuildPlan, env: Mapping[str, str]) -> dict[str, str]:
    e = dict(env)
    e.pop("CMAKE_ARGS", None)  # already in the plan; the llama.cpp build must not read it again
    if plan.ccache:
        e.update(CCACHE_DIR=str(project.ccache_dir),
                 # paths below the workspace hash as relative: hits across clones and workspaces
                 CCACHE_BASEDIR=str(project.work), CCACHE_NOHASHDIR="true")
        e.update(kind_of(plan.target).build_env(plan))
    return e


def _ccache_stats(plan: BuildPlan, env) -> dict[str, int]:
    if not plan.ccache:
        return {}
    r = proc.run([plan.ccache, "--print-stats"], env=env, capture=True, check=False)
    stats = {}
    for line in r.stdout.splitlines():
        parts = line.split("\t")
        if len(parts) == 2 and parts[1].strip().isdigit():
            stats[parts[0]] = int(parts[1])
    return stats


def _ccache_delta(before: dict, after: dict) -> dict:
    keys = {"direct_cache_hit": "hits_direct", "preprocessed_cache_hit": "hits_preprocessed",
            "cache_miss": "misses"}
    out = {name: after.get(k, 0) - before.get(k, 0) for k, name in keys.items()}
    out["hits"] = out.pop("hits_direct") + out.pop("hits_preprocessed")
    return out


def prepare_build_dir(plan: BuildPlan) -> bool:
    """Return True if the build dir must be configured (new, or its key changed)."""
    key_file = plan.build_dir / KEY_FILE
    if plan.build_dir.exists():
        try:
            old = json.loads(key_file.read_text())["cache_key"]
        except (OSError, ValueError, KeyError):
            old = None
        if old == plan.cache_key and (plan.build_dir / "CMakeCache.txt").is_file():
            return False
        if old is None and any(plan.build_dir.iterdir()):
            raise WorkspaceError(f"{plan.build_dir}: not a q3build build directory (no {KEY_FILE}); "
                                 "refusing to delete it")
        ui.info(f"build inputs changed (cache key {str(old)[:12]} → {plan.cache_key[:12]}): fresh build directory")
        shutil.rmtree(plan.build_dir)
    return True


def fetch_toolchain(plan: BuildPlan, env: Mapping[str, str]) -> BuildPlan:
    """Fetch what the plan's toolchain kind fetches itself (zig: the pinned ziglang wheel) if it is
    missing; returns the plan with the fetched files recorded (the cache key does not change)."""
    kind = kind_of(plan.target)
    f = plan.toolchain.fetch
    if not f or f.get("wheel"):
        return plan
    with ui.step(f"Fetching {f['package']}=={f['version']} into {f['dir']}"):
        tc = kind.prepare(plan, env)
    if tc is None:
        return plan
    ui.info(f"{tc.fetch['wheel']}: sha256 {tc.fetch['sha256']} (pinned)")
    return dataclasses.replace(plan, toolchain=tc)


def configure(project: Project, plan: BuildPlan, env: Mapping[str, str], result: BuildResult) -> None:
    """Configure when the build dir is new or its cache key changed."""
    benv = build_env(project, plan, env)
    ensure_owned_dir(project.work)
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    if not prepare_build_dir(plan):
        return
    with ui.step(f"Configuring {plan.target_name} ({plan.generator})"):
        t0 = time.monotonic()
        log = plan.log_dir / "configure.log"
        log.write_text("")
        try:
            proc.stream(plan.configure_argv(), log_file=log, env=benv)
        except CommandError as e:
            raise BuildError(f"configure failed for target {plan.target_name}: see {log}\n"
                             + _first_error(e.tail)) from None
        check_ime_spec(plan, log)
        (plan.build_dir / KEY_FILE).write_text(json.dumps({"cache_key": plan.cache_key}) + "\n")
        result.configured = True
        result.configure_seconds = time.monotonic() - t0


def build(project: Project, plan: BuildPlan, env: Mapping[str, str], result: BuildResult, *,
          targets: tuple[str, ...] | None = None) -> None:
    """Build ``targets`` (default: the recipe's build_targets) in a configured build dir."""
    targets = targets or tuple(plan.target.cmake.build_targets)
    benv = build_env(project, plan, env)
    if not (plan.build_dir / KEY_FILE).is_file():
        raise BuildError(f"{plan.build_dir}: not configured for target {plan.target_name}",
                         hint=f"run `q3build make --target {plan.target_name}` without --skip configure")
    plan.log_dir.mkdir(parents=True, exist_ok=True)
    before = _ccache_stats(plan, benv)
    with ui.step(f"Building {' '.join(targets)} for {plan.target_name}"):
        t0 = time.monotonic()
        log = plan.log_dir / "build.log"
        log.write_text("")
        with ui.BuildProgress(f"{plan.target_name}") as progress:
            try:
                proc.stream(plan.build_argv(targets), log_file=log, env=benv, on_line=progress.feed)
            except CommandError as e:
                raise BuildError(f"build failed for target {plan.target_name}: see {log}\n"
                                 + _first_error(e.tail)) from None
        result.build_seconds = time.monotonic() - t0
    result.ccache = _ccache_delta(before, _ccache_stats(plan, benv)) if plan.ccache else {}


def configure_and_build(project: Project, plan: BuildPlan, env: Mapping[str, str], result: BuildResult, *,
                        targets: tuple[str, ...] | None = None) -> None:
    """Configure when needed, then build ``targets`` (default: the recipe's build_targets)."""
    configure(project, plan, env, result)
    build(project, plan, env, result, targets=targets)


def check_ime_spec(plan: BuildPlan, log) -> None:
    """ggml decides which SpacemiT IME kernels to compile by probing the assembler; a recipe that asks
    for IME must get them, not a silent RVV-only build."""
    ime = plan.target.cpu.ime
    if ime == "none" or not plan.cache_vars.get("GGML_CPU_RISCV64_SPACEMIT"):
        return
    m = re.search(r"^RISCV64_SPACEMIT_IME_SPEC: ?(.*)$", log.read_text(errors="replace"), re.MULTILINE)
    spec = m.group(1).strip() if m else ""
    want = f"RISCV64_SPACEMIT_{ime.upper()}"
    if want not in spec.split(";"):
        raise BuildError(f"configure of target {plan.target_name}: the compiler cannot assemble SpacemiT "
                         f"{ime.upper()} instructions (RISCV64_SPACEMIT_IME_SPEC is {spec or 'empty'!r}, "
                         f"cpu.ime wants {want}); see {log}")
    ui.info(f"RISCV64_SPACEMIT_IME_SPEC: {spec} (ggml's probe found the {ime.upper()} instructions)")


def _first_error(tail: str) -> str:
    lines = tail.splitlines()
    errs = [ln for ln in lines if re.search(r"\berror\b", ln, re.IGNORECASE)]
    return "  " + "\n  ".join((errs or lines)[-5:])


def stage(project: Project, plan: BuildPlan, env: Mapping[str, str], result: BuildResult) -> None:
    """Install the built tools plus rendered files into a fresh staging prefix."""
    t0 = time.monotonic()
    stage_dir = plan.stage_dir
    tmp = stage_dir.with_name(stage_dir.name + ".tmp")
    if tmp.exists():
        shutil.rmtree(tmp)
    (tmp / "bin").mkdir(parents=True)
    for t in plan.target.cmake.build_targets:
        built = plan.build_dir / "bin" / t
        if not built.is_file():
            raise BuildError(f"build of target {plan.target_name} did not produce bin/{t}")
        shutil.copy2(built, tmp / "bin" / t)
    plan.write_files(tmp, STAGED_OUTPUTS)
    server = tmp / "bin" / "llama-server"
    if not plan.target.cross:
        r = proc.run([server, "--version"], env=env, capture=True, check=False)
    elif plan.target.emulator:
        # cross targets: the staged binary runs under the emulator (qemu-user), with the emulator env
        r = emulation.run(plan, [server, "--version"], env)
        result.emulator = shlex.join(emulation.argv(plan))
    else:
        r = None
        ui.warn(f"target {plan.target_name} has no emulator: llama-server --version not checked")
    if r is not None:
        result.version_output = (r.stdout + r.stderr).strip()
        if r.returncode != 0 or plan.distribution not in result.version_output:
            how = " under the emulator" if plan.target.cross else ""
            raise BuildError(f"staged llama-server --version{how} did not report the series digest "
                             f"(exit {r.returncode}): {result.version_output[-300:]}")
    result.artifacts = [{"path": rel, "size": (tmp / rel).stat().st_size, "sha256": sha256_file(tmp / rel)}
                        for rel in plan.artifacts]
    info = {"plan": plan.to_record(), "artifacts": result.artifacts, "version_output": result.version_output,
            "version_checked_with": result.emulator or ("native" if not plan.target.cross else None),
            "ui": {"embedded": bool(webui.embedded(plan.build_dir)), **(result.ui or {})}}
    (tmp / "share" / "q3build").mkdir(parents=True, exist_ok=True)
    (tmp / "share" / "q3build" / "build-info.json").write_text(json.dumps(info, indent=2) + "\n")
    if stage_dir.exists():
        shutil.rmtree(stage_dir)
    tmp.rename(stage_dir)
    result.stage_seconds = time.monotonic() - t0
