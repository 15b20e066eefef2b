"""Everything resolved before building, in one place.

``resolve`` takes the project, a target name, the environment (as a mapping) and the command
line options and returns a frozen BuildPlan: pin, digests, toolchain, CMake cache variables,
rendered files, artifact names and the cache key. Nothing below this module reads os.environ.
Precedence: q3build defaults < recipe < CMAKE_ARGS (environment) < command line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import platform
import shlex
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from q3build import __version__, ui
from q3build.core import pin as pin_mod
from q3build.core import recipe as recipe_mod
from q3build.core import render
from q3build.core import series as series_mod
from q3build.core.pin import Pin
from q3build.core.recipe import Target
from q3build.core.series import LoadedSeries
from q3build.errors import RecipeError, ToolMissingError
from q3build.project import Project
from q3build.toolchains import KINDS, emulation, kind_of
from q3build.toolchains import libraries as libraries_mod
from q3build.toolchains import resolve as toolchains
from q3build.toolchains.base import ResolvedToolchain, Settings
from q3build.toolchains.zig import WRAPPER_DIR

# Variables q3build owns: set for every target, a recipe may not change them.
OFFLINE_OPTIONS = {
    # the default ON downloads the web UI at build time, which fails offline and is not reproducible
    "LLAMA_USE_PREBUILT_UI": False,
    # we pass ccache as an explicit launcher so the cache dir and base dir are ours
    "GGML_CCACHE": False,
}


@dataclass(frozen=True, kw_only=True)
class Options:
    """Command-line choices that affect the plan."""

    jobs: int | None = None
    toolchain_path: str | None = None
    use_ccache: bool = True
    cmake_defines: tuple[str, ...] = ()   # -D NAME=VALUE from the command line
    zig: str | None = None                 # --zig: "interpreter" or a zig executable (default: fetched)


@dataclass(frozen=True, kw_only=True)
class RenderedFile:
    name: str
    path: str
    content: str
    executable: bool
    template: str


@dataclass(frozen=True, kw_only=True)
class BuildPlan:
    target_name: str
    target: Target
    pin: Pin
    series_digest: str
    overlay_digest: str
    patches: tuple[tuple[str, str], ...]          # (file, sha256) in order
    toolchain: ResolvedToolchain
    generator: str
    cache_vars: Mapping[str, object]              # recipe + q3build variables, in -C initial cache
    cmake_args: tuple[str, ...]                   # CMAKE_ARGS passthrough + CLI -D, recorded
    jobs: int
    ccache: str | None
    src_dir: Path
    build_dir: Path
    stage_dir: Path
    render_dir: Path
    zig_cache_dir: Path | None = None
    files: tuple[RenderedFile, ...] = field(default=())
    cache_key: str = ""
    alias: str | None = None                      # the name asked for, when it was an alias
    alias_reason: str = ""                        # why the alias resolved to this target
    libraries: tuple[libraries_mod.FoundLibrary, ...] = ()   # optional libraries: found here or left out

    def cmake_value(self, name: str) -> str | None:
        """The value CMake ends up with: a -D from CMAKE_ARGS or the command line wins over the
        initial cache (it is processed first and the -C script only sets what is unset)."""
        defines = parse_defines([a for a in self.cmake_args if a.startswith("-D")], "CMAKE_ARGS")
        if name in defines:
            return defines[name]
        return render.cmake_value(self.cache_vars[name]) if name in self.cache_vars else None

    @property
    def web_ui(self) -> bool:
        """Whether make builds upstream's web UI and embeds it (the pin names one, the recipe keeps it)."""
        return bool(self.target.web_ui and self.pin.ui is not None)

    @property
    def distribution(self) -> str:
        return f"q3build {__version__} series {self.series_digest[:12]} overlay {self.overlay_digest[:12]}"

    @property
    def version_line(self) -> str:
        return f"build {self.pin.upstream.build}, commit {self.pin.upstream.commit[:7]}, {self.distribution}"

    @property
    def arch(self) -> str:
        a = self.target.cpu.arch
        return platform.machine() if a == "native" else a

    @property
    def triple(self) -> str:
        """The target triple artifacts are named by (the toolchain's, else <arch>-linux-gnu)."""
        return self.toolchain.triple or f"{self.arch}-linux-gnu"

    @property
    def archive_name(self) -> str:
        """The release archive `q3build package` writes (the one definition of its name)."""
        return f"q3build-{__version__}-llama-{self.pin.upstream.tag}-{self.triple}-{self.target_name}.tar.gz"

    @property
    def artifacts(self) -> tuple[str, ...]:
        bins = tuple(f"bin/{t}" for t in self.target.cmake.build_targets)
        return bins + tuple(f.path for f in self.files if f.name in STAGED_OUTPUTS)

    @property
    def log_dir(self) -> Path:
        return self.build_dir.parent / f"{self.target_name}.logs"

    def write_files(self, out: Path, names: tuple[str, ...] | None = None) -> list[Path]:
        """Write the rendered files (or those named) under out, each replaced atomically."""
        written = []
        for f in self.files:
            if names is not None and f.name not in names:
                continue
            path = out / f.path
            path.parent.mkdir(parents=True, exist_ok=True)
            tmp = path.with_name(path.name + ".tmp")
            tmp.write_text(f.content, encoding="utf-8")
            tmp.chmod(0o755 if f.executable else 0o644)
            tmp.replace(path)
            written.append(path)
        return written

    def file(self, name: str) -> RenderedFile | None:
        return next((f for f in self.files if f.name == name), None)

    def configure_argv(self) -> list[str]:
        argv = ["cmake", "-S", str(self.src_dir), "-B", str(self.build_dir), "-G", self.generator]
        # -D from CMAKE_ARGS and the command line come first: the -C script only sets what is unset
        argv += list(self.cmake_args)
        argv += ["-C", str(self.render_dir / "initial-cache.cmake")]
        return argv

    def build_argv(self, targets: tuple[str, ...] | None = None) -> list[str]:
        return ["cmake", "--build", str(self.build_dir), "--parallel", str(self.jobs),
                "--target", *(targets or self.target.cmake.build_targets)]

    def to_record(self) -> dict:
        """The plan as JSON data: `plan --json`, build-info.json and the release manifest read it."""
        return {
            "target": self.target_name,
            "alias": {"name": self.alias, "reason": self.alias_reason} if self.alias else None,
            "description": self.target.description,
            "q3build": __version__,
            "upstream": self.upstream_record(),
            "sources": [s.label for s in self.pin.sources],
            "series_digest": self.series_digest,
            "overlay_digest": self.overlay_digest,
            "patches": [{"file": f, "sha256": s} for f, s in self.patches],
            "version_line": self.version_line,
            "toolchain": self.toolchain.to_record(),
            "emulator": emulation.argv(self) if self.target.emulator else None,
            "cmake": {**self.cmake_record(), "configure": self.configure_argv(), "build": self.build_argv()},
            "libraries": [f.to_record() for f in self.libraries],
            "ccache": self.ccache,
            "jobs": self.jobs,
            "paths": {"src": str(self.src_dir), "build": str(self.build_dir), "stage": str(self.stage_dir),
                      "render": str(self.render_dir)},
            "rendered": [{"name": f.name, "path": f.path, "template": f.template} for f in self.files],
            "artifacts": list(self.artifacts),
            "archive": self.archive_name,
            "cache_key": self.cache_key,
            "web_ui": self.web_ui,
        }

    def upstream_record(self) -> dict:
        u = self.pin.upstream
        return {"name": u.name, "commit": u.commit, "build": u.build, "tag": u.tag, "tree": u.tree, "date": u.date}

    def cmake_record(self) -> dict:
        return {"generator": self.generator,
                "cache": {k: render.cmake_value(v) for k, v in sorted(self.cache_vars.items())},
                "cmake_args": list(self.cmake_args)}


# Outputs that are installed into the staging prefix (the rest drive the build).
STAGED_OUTPUTS = ("launcher", "systemd-unit")


def _outputs() -> list[render.Output]:
    """Every file q3build may render, in order; a kind adds its own (zig: compiler wrappers, headers)."""
    return [
        render.Output("initial-cache", "initial-cache.cmake.j2", "initial-cache.cmake", lambda c: c),
        render.Output("toolchain", "toolchain.cmake.j2", "toolchain.cmake", lambda c: c if c["cross"] else None),
        *(o for kind in KINDS.values() for o in kind.outputs()),
        render.Output("launcher", "q3tts-serve.sh.j2", "bin/q3tts-serve", lambda c: c, executable=True),
        render.Output("systemd-unit", "q3tts.service.j2", "lib/systemd/system/q3tts.service", lambda c: c),
    ]


def parse_defines(args: list[str], where: str) -> dict[str, str]:
    """-DNAME=VALUE / -DNAME:TYPE=VALUE pairs from CMAKE_ARGS or --define, for the record."""
    out = {}
    for a in args:
        body = a.removeprefix("-D")
        if "=" not in body:
            raise RecipeError(f"{where}: {a!r}: expected -DNAME=VALUE")
        name, value = body.split("=", 1)
        out[name.split(":", 1)[0]] = value
    return out


def cmake_args_from(env: Mapping[str, str], cli_defines: tuple[str, ...]) -> tuple[str, ...]:
    args = shlex.split(env.get("CMAKE_ARGS", ""))
    parse_defines([a for a in args if a.startswith("-D")], "CMAKE_ARGS")
    cli = [d if d.startswith("-D") else f"-D{d}" for d in cli_defines]
    parse_defines(cli, "--define")
    return tuple(args + cli)


def settings(project: Project, env: Mapping[str, str], options: Options) -> Settings:
    """Where toolchains come from: --zig wins over Q3BUILD_ZIG; default, q3build's cache."""
    return Settings(cache=project.cache, zig=options.zig or env.get("Q3BUILD_ZIG") or None)


def with_toolchain_path(target: Target, options: Options) -> Target:
    if options.toolchain_path and target.vendor_toolchain:
        target = dataclasses.replace(target, toolchain=target.vendor_toolchain)
    if options.toolchain_path and kind_of(target).takes_path:
        path = str(Path(options.toolchain_path).expanduser().resolve())
        return dataclasses.replace(target, toolchain=dataclasses.replace(target.toolchain, path=path))
    return target


def resolve_name(project: Project, name: str, options: Options = Options(),
                 env: Mapping[str, str] | None = None) -> tuple[str, str | None, str]:
    """A target name or an alias → (target name, alias or None, why this target)."""
    if name in recipe_mod.names(project):
        return name, None, ""
    candidates = recipe_mod.alias_candidates(project, name)
    if not candidates:
        recipe_mod.load(project, name)   # raises the unknown-target error with its suggestions
    skipped = []
    where = settings(project, env or {}, options)
    for cand, target in candidates:
        target = with_toolchain_path(target, options)
        ok, why = toolchains.available(target, where)
        if ok:
            reason = (f"{target.alias_note}; " if target.alias_note else "") + why
            reason += f"; skipped {', '.join(skipped)}" if skipped else ""
            return cand, name, reason
        if options.toolchain_path and kind_of(target).takes_path:
            # the user meant this one: do not fall back to another board silently
            raise ToolMissingError(f"alias {name!r} → {cand}: {why}")
        skipped.append(f"{cand} ({why})")
    raise ToolMissingError(f"alias {name!r}: no target has its toolchain here: {'; '.join(skipped)}",
                           hint=f"run `q3build doctor --target {candidates[-1][0]}`")


def resolve(project: Project, target_name: str, env: Mapping[str, str], options: Options = Options(), *,
            pin: Pin | None = None, series: LoadedSeries | None = None) -> BuildPlan:
    pin = pin or pin_mod.load(project)
    series = series or series_mod.load(project)
    target_name, alias, alias_reason = resolve_name(project, target_name, options, env)
    target = with_toolchain_path(recipe_mod.load(project, target_name), options)
    kind = kind_of(target)
    if options.toolchain_path and not kind.takes_path:
        ui.warn(f"target {target_name}: --toolchain-path is only used by toolchain kind 'external' "
                f"(this one is {target.toolchain.kind!r}); ignored")
    if kind.takes_path and not target.toolchain.path:
        raise toolchains.external_missing(target, target_name)
    tc = toolchains.resolve(target, env, project.render_dir(target_name) / WRAPPER_DIR,
                            settings(project, env, options))
    generator = target.cmake.generator or ("Ninja" if toolchains.find("ninja", env) else "Unix Makefiles")
    ccache = toolchains.find("ccache", env) if options.use_ccache else None
    series_digest, overlay_digest = series.digest(), series.overlay_digest()

    # options q3build owns override the recipe's, with a warning when the recipe said otherwise
    owned = [(OFFLINE_OPTIONS, "for an offline, q3build-managed build")]
    if kind.cmake_options:
        owned.append((kind.cmake_options, f"with {kind.name}"))
    managed = {k: v for options_, _ in owned for k, v in options_.items()}
    recipe_opts = dict(target.cmake.options or {})
    for options_, why in owned:
        for k, v in options_.items():
            if k in recipe_opts and recipe_opts[k] != v:
                ui.warn(f"target {target_name}: cmake.options.{k} must be {render.cmake_value(v)} {why} (kept)")
            recipe_opts.pop(k, None)
    cache_vars: dict[str, object] = {"CMAKE_BUILD_TYPE": target.cmake.build_type}
    if not target.cross:
        cache_vars.update(CMAKE_C_COMPILER=tc.cc, CMAKE_CXX_COMPILER=tc.cxx)
    # optional libraries: ON where found (a cross target: in its sysroot only), else OFF; the recipe's
    # own cmake.options and -D still win
    found_libs = tuple(libraries_mod.find(target))
    cache_vars.update(libraries_mod.cmake_switches(list(found_libs)))
    cache_vars.update(recipe_opts)
    cache_vars.update(managed)
    # upstream's UI embedding: ON takes the UI make's ui step builds (see core/webui.py), OFF embeds none
    if "LLAMA_BUILD_UI" in recipe_opts:
        ui.warn(f"target {target_name}: cmake.options.LLAMA_BUILD_UI is set by web_ui "
                f"({'true' if target.web_ui else 'false'}) (kept)")
    cache_vars["LLAMA_BUILD_UI"] = bool(target.web_ui and pin.ui is not None)
    # the synced tree's git history is ours (patch commits), so build info comes from the pin
    cache_vars.update(LLAMA_BUILD_NUMBER=pin.upstream.build, LLAMA_BUILD_COMMIT=pin.upstream.commit[:7])
    if ccache:
        cache_vars.update(CMAKE_C_COMPILER_LAUNCHER=ccache, CMAKE_CXX_COMPILER_LAUNCHER=ccache)

    plan = BuildPlan(
        target_name=target_name, target=target, pin=pin, series_digest=series_digest,
        overlay_digest=overlay_digest, patches=tuple((e.file, e.sha256) for e in series.patches),
        toolchain=tc, generator=generator, cache_vars=cache_vars,
        cmake_args=cmake_args_from(env, options.cmake_defines), jobs=options.jobs or os.cpu_count() or 2,
        ccache=ccache, src_dir=project.src_dir, build_dir=project.build_dir(target_name),
        stage_dir=project.stage_dir(target_name), render_dir=project.render_dir(target_name),
        zig_cache_dir=project.cache / kind.compiler_cache if kind.compiler_cache else None)
    # the distribution string is a cache variable too, known only once the plan exists
    cache_vars["LLAMA_BUILD_DISTRIBUTION"] = plan.distribution
    files = render_files(project, plan)
    key = _cache_key(plan, files)
    return dataclasses.replace(plan, files=files, cache_key=key, alias=alias, alias_reason=alias_reason,
                               libraries=found_libs)


def context(plan: BuildPlan) -> dict:
    t = plan.target
    rt = t.runtime
    emulator = emulation.argv(plan, with_env=True) if t.emulator else None
    zig = kind_of(t).render_context(plan)
    return {
        "q3build_version": __version__,
        "target": plan.target_name,
        "description": t.description,
        "cross": t.cross,
        "arch": plan.arch,
        "toolchain": plan.toolchain,
        "link_libs": list(t.toolchain.link_libs),
        "cpu": t.cpu,
        "cflags": ([f"-march={t.cpu.march}"] if t.cpu.march else []) + ([f"-mabi={t.cpu.mabi}"] if t.cpu.mabi else [])
        + list(t.cpu.cflags),
        "cache_vars": plan.cache_vars,
        "emulator": emulator,
        "emulator_env": dict(t.emulator.env or {}) if t.emulator else {},
        "zig": zig,
        "runtime": rt,
        "runtime_env": dict(rt.env or {}),
        "upstream": plan.pin.upstream,
        "version_line": plan.version_line,
        "build_targets": list(t.cmake.build_targets),
    }


def render_files(project: Project, plan: BuildPlan) -> tuple[RenderedFile, ...]:
    env = render.environment(project.templates_dir)
    ctx = context(plan)
    out = []
    for o in _outputs():
        c = o.context(ctx)
        if c is None:
            continue
        out.append(RenderedFile(name=o.name, path=o.path, template=o.template, executable=o.executable,
                                content=render.render(env, o, c, templates_dir=project.templates_dir)))
    return tuple(out)


def _cache_key(plan: BuildPlan, files: tuple[RenderedFile, ...]) -> str:
    """Everything that changes the build output: pin, patches, overlay, options, toolchain."""
    data = {
        "upstream": [plan.pin.upstream.commit, plan.pin.upstream.tree],
        "series": plan.series_digest, "overlay": plan.overlay_digest,
        "toolchain": plan.toolchain.id, "generator": plan.generator,
        "cmake_args": list(plan.cmake_args),
        "build_inputs": {f.name: f.content for f in files if f.name not in STAGED_OUTPUTS},
    }
    return hashlib.sha256(json.dumps(data, sort_keys=True).encode()).hexdigest()
