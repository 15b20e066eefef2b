"""Toolchain kind ``zig``: ``zig cc`` from the PyPI ``ziglang`` wheel as the cross compiler.

Where zig comes from (``Settings.zig``, from ``--zig`` or ``Q3BUILD_ZIG``):
- default: the recipe's pinned ``ziglang==<version>``, fetched by ``make`` into q3build's cache
  (``<cache>/toolchains/ziglang-<version>/``, sha256 checked against ``toolchain.wheels``);
- ``interpreter``: the ``ziglang`` package importable in q3build's own Python;
- a path: that zig executable.
q3build renders compiler wrappers (templates/zig-wrapper.sh.j2) that run ``zig cc -target …``; zig
links against its own glibc stubs, so the recipe's sysroot is only what the emulator loads (qemu -L).
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.util
import re
from collections.abc import Mapping
from pathlib import Path

from q3build import proc
from q3build.core import render
from q3build.errors import ToolMissingError
from q3build.toolchains import fetch
from q3build.toolchains.base import ResolvedToolchain, Settings, Tool
from q3build.toolchains.common import check_sysroot, emulator_tool, sysroot_of

PACKAGE = "ziglang"
# The compiler wrappers q3build renders (templates/zig-wrapper.sh.j2), by role.
WRAPPERS = {"cc": "zig-cc", "cxx": "zig-c++", "ar": "zig-ar", "ranlib": "zig-ranlib"}
WRAPPER_DIR = "toolchain"   # below the render dir
INTERPRETER = "interpreter"
# Headers a zig recipe may force-include (toolchain.force_include), from templates/include/<name>.j2.
FORCE_INCLUDES = ("spacemit-ime1-asm.h", "spacemit-ime2-asm.h")


def zig_executable() -> str | None:
    """The zig binary shipped by the PyPI ``ziglang`` package in q3build's own interpreter."""
    spec = importlib.util.find_spec(PACKAGE)
    if spec is None or not spec.submodule_search_locations:
        return None
    exe = Path(next(iter(spec.submodule_search_locations))) / "zig"
    return str(exe) if exe.is_file() else None


def march_to_mcpu(march: str) -> str:
    """A GCC -march ISA string as a zig -mcpu value (the wrapper does the same for -march it sees)."""
    base, _, rest = march.partition("_")
    if not base.startswith("rv64"):
        raise ToolMissingError(f"cpu.march {march!r}: zig targets need an rv64 ISA string")
    out = "baseline_rv64"
    for c in base[4:]:
        if c == "g":
            out += "+m+a+f+d+zicsr+zifencei"
        elif c not in "ie":
            out += f"+{c}"
    for ext in filter(None, rest.split("_")):
        out += f"+{ext}"
    return out


def pin(target) -> str:
    v = target.toolchain.version
    return f"{PACKAGE}=={v}" if v else PACKAGE


class Zig:
    name = "zig"
    cross = True
    needs_triple = True
    own_keys = ("features", "force_include", "append_cxxflags", "glibc", "wheels")
    # zig has no OpenMP runtime, and it links its libc++ statically into every shared object, so a
    # shared build aborts at start-up ("free(): invalid pointer")
    cmake_options: Mapping[str, object] = {"GGML_OPENMP": False, "BUILD_SHARED_LIBS": False}
    takes_path = False
    in_ci = True
    compiler_cache = "zig"                       # ZIG_GLOBAL_CACHE_DIR, set by the wrappers

    # --- where zig is ----------------------------------------------------------------------
    def cached(self, target, settings: Settings) -> Path | None:
        """The cache directory the pinned wheel is (or will be) unpacked into."""
        v = target.toolchain.version
        if settings.zig is not None or settings.cache is None or not v:
            return None
        return fetch.directory(settings.cache, PACKAGE, v)

    def locate(self, target, settings: Settings) -> tuple[str | None, str]:
        """(zig executable or None if absent, where it comes from)."""
        if settings.zig == INTERPRETER or (settings.zig is None and self.cached(target, settings) is None):
            return zig_executable(), INTERPRETER
        if settings.zig is not None:
            return (settings.zig if Path(settings.zig).is_file() else None), "path"
        d = self.cached(target, settings)
        exe = d / PACKAGE / "zig"
        return (str(exe) if fetch.record(d) and exe.is_file() else None), "q3build-cache"

    def compilers(self, target, env, wrapper_dir=None) -> tuple[str, str]:
        d = wrapper_dir or Path("bin")
        return str(d / WRAPPERS["cc"]), str(d / WRAPPERS["cxx"])

    def sysroot_package(self, triple: str | None) -> str | None:
        # only qemu -L reads the sysroot (zig brings its own glibc stubs): the runtime library, not -dev
        arch = (triple or "").split("-")[0]
        return f"libc6-{arch}-cross" if arch else None

    # --- resolve ---------------------------------------------------------------------------
    def resolve(self, target, env, wrapper_dir, settings: Settings) -> ResolvedToolchain:
        tc = target.toolchain
        sysroot = sysroot_of(target)
        if sysroot:
            check_sysroot(target, sysroot, self.sysroot_package(tc.triple))
        cc, cxx = self.compilers(target, env, wrapper_dir)
        d = self.cached(target, settings)
        if d is not None:
            # the pinned wheel in q3build's cache: known without running it (and before it is fetched),
            # so `plan` and `make` agree on the toolchain id
            rec = fetch.record(d)
            desc = f"zig {tc.version} (PyPI {pin(target)})"
            return ResolvedToolchain(kind=self.name, cc=cc, cxx=cxx, cc_version=desc, cxx_version=desc,
                                     triple=tc.triple, sysroot=sysroot, zig=str(d / PACKAGE / "zig"),
                                     source="q3build-cache",
                                     fetch={"package": PACKAGE, "version": tc.version, "dir": str(d),
                                            "wheel": rec["wheel"] if rec else None,
                                            "sha256": rec["sha256"] if rec else None})
        zig, source = self.locate(target, settings)
        if zig is None:
            if source == INTERPRETER:
                raise ToolMissingError(f"zig for target toolchain 'zig' not found: the PyPI package {PACKAGE} is not "
                                       f"installed in q3build's Python; pip install {pin(target)}",
                                       hint="or leave out --zig/Q3BUILD_ZIG: make fetches the pinned zig itself")
            raise ToolMissingError(f"--zig {settings.zig}: no such file")
        version = self.version(zig, env, target)
        r = proc.run([zig, "cc", "--version"], env=env, capture=True, check=False)
        clang = next((ln for ln in r.stdout.splitlines() if "clang version" in ln), "")
        clang = re.sub(r"^.*?(clang version \S+).*$", r"\1", clang)
        desc = f"zig {version}" + (f" ({clang})" if clang else "")
        return ResolvedToolchain(kind=self.name, cc=cc, cxx=cxx, cc_version=desc, cxx_version=desc,
                                 triple=tc.triple, sysroot=sysroot, zig=zig, source=source)

    def version(self, zig: str, env, target) -> str:
        tc = target.toolchain
        r = proc.run([zig, "version"], env=env, capture=True, check=False)
        version = r.stdout.strip() or "unknown"
        if tc.version and version != tc.version:
            raise ToolMissingError(f"toolchain.version: zig {version} is installed ({zig}), the recipe needs "
                                   f"{tc.version}; pip install {pin(target)}, or leave out --zig/Q3BUILD_ZIG")
        return version

    def available(self, target, settings: Settings) -> tuple[bool, str]:
        zig, source = self.locate(target, settings)
        if source == "q3build-cache":
            if zig:
                return True, f"zig {target.toolchain.version} is in q3build's cache"
            return True, f"make fetches zig ({pin(target)}, PyPI) into q3build's cache"
        if zig is None:
            if source == INTERPRETER:
                return False, f"PyPI package {PACKAGE} is not installed"
            return False, f"--zig {settings.zig}: no such file"
        return True, (f"zig from PyPI {PACKAGE} is installed" if source == INTERPRETER else f"zig {zig}")

    def tools(self, target, env, settings: Settings) -> list[Tool]:
        tc = target.toolchain
        zig, source = self.locate(target, settings)
        purpose = "zig cc: C/C++ cross compiler (clang)"
        if source == "q3build-cache":
            d = self.cached(target, settings)
            tool = Tool(zig or str(d / PACKAGE / "zig"), purpose, pip=tc.pip[0] if tc.pip else pin(target),
                        fetch=f"make fetches {pin(target)} into {d}")
        else:
            tool = Tool(zig or ("python3 -m ziglang" if source == INTERPRETER else str(settings.zig)), purpose,
                        pip=tc.pip[0] if tc.pip else pin(target))
        tools = [tool]
        if tc.sysroot and "{" not in tc.sysroot:
            tools.append(Tool(str(Path(tc.sysroot) / "lib" / "libc.so.6"),
                              "target C library (sysroot): loaded by the emulator (-L); zig links against its own",
                              apt=self.sysroot_package(tc.triple)))
        return tools + emulator_tool(target)

    # --- make ------------------------------------------------------------------------------
    def prepare(self, plan, env) -> ResolvedToolchain | None:
        """Fetch the pinned zig into the cache if the plan uses it and it is not there yet; returns the
        toolchain with the fetched wheel recorded (None: nothing to fetch)."""
        tc = plan.target.toolchain
        f = plan.toolchain.fetch
        if not f or f.get("wheel"):
            return None
        rec = fetch.wheel(PACKAGE, tc.version, tc.wheels or {}, Path(f["dir"]).parent.parent, env,
                          where=f"recipes/{plan.target_name}.yaml toolchain.wheels")
        self.version(plan.toolchain.zig, env, plan.target)
        return dataclasses.replace(plan.toolchain, fetch={**f, "wheel": rec["wheel"], "sha256": rec["sha256"]})

    def outputs(self) -> list[render.Output]:
        """The wrappers (rendered for every zig target) and the force-include headers a recipe names;
        their context is None unless the plan's kind is zig (render_context below)."""
        def wrapper(tool):
            return lambda c: {**c, "tool": tool} if c["zig"] else None

        def header(name):
            return lambda c: c if c["zig"] and name in c["zig"]["include_names"] else None
        wrappers = [render.Output(f"zig-{role}", "zig-wrapper.sh.j2", f"{WRAPPER_DIR}/{name}",
                                  wrapper({"cxx": "c++"}.get(role, role)), executable=True)
                    for role, name in WRAPPERS.items()]
        headers = [render.Output(f"include/{name}", f"include/{name}.j2", f"include/{name}", header(name))
                   for name in FORCE_INCLUDES]
        return [*wrappers, *headers]

    def render_context(self, plan) -> dict | None:
        t = plan.target
        tc = t.toolchain
        wdir = plan.render_dir / WRAPPER_DIR
        return {
            "target": f"{tc.triple}" + (f".{tc.glibc}" if tc.glibc else ""),
            "default_mcpu": march_to_mcpu(t.cpu.march or "rv64gc"),
            "features": "".join(f"+{f}" for f in tc.features),
            "include_names": list(tc.force_include),
            "includes": [str(plan.render_dir / "include" / h) for h in tc.force_include],
            "append_cxxflags": list(tc.append_cxxflags),
            "cache_dir": str(plan.zig_cache_dir),
            "ar": str(wdir / WRAPPERS["ar"]),
            "ranlib": str(wdir / WRAPPERS["ranlib"]),
        }

    def build_env(self, plan) -> dict[str, str]:
        # the compiler is a rendered wrapper script, rewritten on every make: ccache hashes what the wrapper
        # does (its content with the zig location taken out, plus the zig version), not its mtime or path,
        # so the same zig fetched into another cache (or installed elsewhere) still hits
        h = hashlib.sha256(plan.toolchain.cc_version.encode())
        for f in plan.files:
            if f.path.startswith(f"{WRAPPER_DIR}/"):
                h.update(f.content.replace(plan.toolchain.zig or "", "zig")
                         .replace(str(plan.render_dir), "render").replace(str(plan.zig_cache_dir), "cache").encode())
        return {"CCACHE_COMPILERCHECK": f"string:{h.hexdigest()[:32]}"}


KIND = Zig()
