"""A wheel of a staged build, made with scikit-build-core, so `pip install` puts llama-server on PATH.

The project is rendered from templates/wheel/ into a scratch directory next to the staged binaries
it installs into the wheel's scripts directory (``SKBUILD_SCRIPTS_DIR``). The wheel is tagged
py3-none-<platform>; for cross targets the platform comes from the target's architecture
(``_PYTHON_HOST_PLATFORM``), and the resulting tag is checked.
"""

from __future__ import annotations

import shutil
import sys
import tempfile
from collections.abc import Mapping
from pathlib import Path

from q3build import __version__, proc, ui
from q3build.core import render
from q3build.core.plan import BuildPlan
from q3build.errors import BuildError
from q3build.project import Project
from q3build.release import licenses

BINARIES = ("llama-server", "llama-tts")
TEMPLATES = (("wheel/pyproject.toml.j2", "pyproject.toml"), ("wheel/CMakeLists.txt.j2", "CMakeLists.txt"))


def platform_tag(plan: BuildPlan) -> str:
    return f"linux_{plan.arch}"


def distribution_name(plan: BuildPlan) -> str:
    return f"q3tts-llama-server-{plan.target_name}"


def version(plan: BuildPlan) -> str:
    return f"{__version__}+llama.{plan.pin.upstream.tag}"


def build(project: Project, plan: BuildPlan, env: Mapping[str, str], out_dir: Path, epoch: int) -> Path:
    binaries = [b for b in BINARIES if (plan.stage_dir / "bin" / b).is_file()]
    if "llama-server" not in binaries:
        raise BuildError(f"staged build of {plan.target_name} has no bin/llama-server")
    # the wheel redistributes the same binaries as the archive: the same licence texts, flattened to
    # top-level LICENSE-<component>-<file> names so scikit-build-core's license-files take them
    third_party = licenses.components(plan)
    spdx = ["MIT", *dict.fromkeys(c.license for c in third_party if c.license != "MIT")]
    tenv = render.environment(project.templates_dir)
    ctx = {"name": distribution_name(plan), "version": version(plan), "q3build_version": __version__,
           "upstream": plan.pin.upstream, "target": plan.target_name, "binaries": binaries,
           "license": " AND ".join(spdx)}
    work = Path(tempfile.mkdtemp(prefix=".wheel-", dir=project.work))
    try:
        for template, name in TEMPLATES:
            out = render.Output(f"wheel-{name}", template, name, lambda c: c)
            (work / name).write_text(render.render(tenv, out, ctx, templates_dir=project.templates_dir))
        (work / "bin").mkdir()
        for b in binaries:
            shutil.copy2(plan.stage_dir / "bin" / b, work / "bin" / b)
        lic = project.src_dir / "LICENSE"
        if lic.is_file():
            shutil.copy2(lic, work / "LICENSE")
        if (project.src_dir / "licenses").is_dir():
            for p in sorted((project.src_dir / "licenses").iterdir()):
                if p.is_file():
                    name = p.name if p.name.startswith("LICENSE") else f"LICENSE-llama.cpp-{p.name}"
                    shutil.copy2(p, work / name)
        for c in third_party:
            for t in c.texts:
                rel = t.path[len(f"share/licenses/{c.name}/"):].replace("/", "-")
                (work / f"LICENSE-{c.name}-{rel}").write_bytes(t.data)
        benv = dict(env, SOURCE_DATE_EPOCH=str(epoch))
        if plan.target.cross:
            benv["_PYTHON_HOST_PLATFORM"] = f"linux-{plan.arch}"
        wheel_out = work / "dist"
        with ui.step(f"Building the wheel {distribution_name(plan)} (scikit-build-core)"):
            proc.stream([sys.executable, "-m", "pip", "wheel", "--no-deps", "--disable-pip-version-check",
                         "-w", wheel_out, work], log_file=plan.log_dir / "wheel.log", env=benv)
        wheels = sorted(wheel_out.glob("*.whl"))
        if len(wheels) != 1:
            raise BuildError(f"pip wheel produced {len(wheels)} wheels in {wheel_out}; see {plan.log_dir / 'wheel.log'}")
        want = f"-py3-none-{platform_tag(plan)}.whl"
        if not wheels[0].name.endswith(want):
            raise BuildError(f"wheel {wheels[0].name} is not tagged for {plan.target_name} (expected …{want})")
        out_dir.mkdir(parents=True, exist_ok=True)
        dest = out_dir / wheels[0].name
        shutil.copy2(wheels[0], dest)
        return dest
    finally:
        shutil.rmtree(work, ignore_errors=True)
