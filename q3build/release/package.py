"""Release archives: a deterministic tar.gz of a staged build with its manifest, sums and SBOM.

Determinism: entries sorted by path, owner root (0/0), modes 0755/0644, every mtime
SOURCE_DATE_EPOCH (default: the pin's commit date), gzip header mtime 0 and no file name. The
manifest and SBOM carry no wall-clock time and no path of this machine's workspace, so packaging the
same staged build twice gives the same bytes.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import io
import json
import os
import tarfile
import uuid
from collections.abc import Mapping
from pathlib import Path

from q3build import __version__
from q3build.core import schema
from q3build.core.plan import BuildPlan
from q3build.core.series import LoadedSeries
from q3build.errors import BuildError, InputError, WorkspaceError
from q3build.project import Project
from q3build.release import licenses
from q3build.toolchains import emulation

MANIFEST = "manifest.json"
SBOM = "sbom.cdx.json"
SUMS = "SHA256SUMS"
VALIDATION = "share/q3build/validation.json"
MANIFEST_SCHEMA = 1


def source_date_epoch(env: Mapping[str, str], plan: BuildPlan) -> int:
    raw = env.get("SOURCE_DATE_EPOCH")
    if raw is None or raw == "":
        return int(dt.datetime.fromisoformat(plan.pin.upstream.date).timestamp())
    if not raw.isdigit():
        raise InputError(f"SOURCE_DATE_EPOCH={raw!r}: expected a non-negative integer (seconds since 1970)")
    return int(raw)


def _sha256(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _iso(epoch: int) -> str:
    return dt.datetime.fromtimestamp(epoch, dt.timezone.utc).strftime("%Y-%m-%dT%H:%M:%SZ")


def validation_path(project: Project, target: str) -> Path:
    return project.work / "validate" / target / "validation.json"


def staged_build_info(plan: BuildPlan) -> dict:
    info_file = plan.stage_dir / "share" / "q3build" / "build-info.json"
    if not info_file.is_file():
        raise WorkspaceError(f"no staged build for target {plan.target_name} in {plan.stage_dir}",
                             hint=f"run `q3build make --target {plan.target_name}` first")
    info = json.loads(info_file.read_text())
    if info.get("plan", {}).get("cache_key") != plan.cache_key:
        raise WorkspaceError(f"{plan.stage_dir} was built from other inputs than the current plan "
                             f"(cache key {str(info.get('plan', {}).get('cache_key'))[:12]} ≠ {plan.cache_key[:12]})",
                             hint=f"run `q3build make --target {plan.target_name}`")
    return info


def collect_files(project: Project, plan: BuildPlan,
                  third_party: list[licenses.Component] | None = None) -> dict[str, tuple[bytes, bool]]:
    """Archive path (relative to the top directory) → (content, executable), before the generated files;
    with the licence texts of the third-party components (see licenses.py)."""
    files: dict[str, tuple[bytes, bool]] = {}
    stage = plan.stage_dir
    for rel in plan.artifacts:
        p = stage / rel
        if not p.is_file():
            raise BuildError(f"staged build of {plan.target_name} has no {rel}")
        files[rel] = (p.read_bytes(), bool(p.stat().st_mode & 0o111))
    src = project.src_dir
    if not (src / ".git").is_dir():
        raise WorkspaceError(f"no synced source tree in {src} to take llama.cpp's licenses from",
                             hint="run `q3build sync`")
    if not (src / "LICENSE").is_file():
        raise BuildError(f"{src / 'LICENSE'}: the synced tree has no license file; refusing to package without it")
    files["share/licenses/llama.cpp/LICENSE"] = ((src / "LICENSE").read_bytes(), False)
    lic_dir = src / "licenses"
    if lic_dir.is_dir():
        for p in sorted(lic_dir.iterdir()):
            if p.is_file():
                files[f"share/licenses/llama.cpp/{p.name}"] = (p.read_bytes(), False)
    # the vendored libraries that keep their licence next to them (vendor/cpp-httplib/LICENSE)
    vendor = src / "vendor"
    if vendor.is_dir():
        for p in sorted(vendor.glob("*/*")):
            if p.is_file() and licenses.LICENSE_NAMES.match(p.name):
                files[f"share/licenses/llama.cpp/vendor/{p.parent.name}/{p.name}"] = (p.read_bytes(), False)
    for c in third_party or ():
        for t in c.texts:
            files[t.path] = (t.data, False)
    return files


def llama_component(plan: BuildPlan, files: dict[str, tuple[bytes, bool]], linkage: str) -> licenses.Component:
    """llama.cpp itself as a licence record: its LICENSE, licenses/ and vendor/*/LICENSE texts as packaged."""
    up = plan.pin.upstream
    texts = []
    for p, (data, _) in sorted(files.items()):
        if p.startswith("share/licenses/llama.cpp/"):
            rel = p[len("share/licenses/llama.cpp/"):]
            where = rel if rel == "LICENSE" or rel.startswith("vendor/") else f"licenses/{rel}"
            texts.append(licenses.LicenseText(p, data, f"llama.cpp@{up.commit}:{where}"))
    return licenses.Component(ref="llama.cpp", name=up.name, version=up.tag, license="MIT", linkage=linkage,
                              origin={"kind": "pin", "commit": up.commit}, purl=_purl(plan), texts=tuple(texts))


def _linkage(plan: BuildPlan) -> str:
    return ("static" if str(plan.cmake_value("BUILD_SHARED_LIBS")).upper() in ("OFF", "FALSE", "0")
            else "shared (rpath $ORIGIN/../lib)")


def manifest(project: Project, plan: BuildPlan, series: LoadedSeries, info: dict, files: dict, epoch: int,
             validation: dict | None, third_party: list[licenses.Component] = ()) -> dict:
    t = plan.target
    entries = {e.file: e for e in series.patches}
    emu = None
    if t.emulator:
        emu = {"argv": emulation.argv(plan), "env": dict(t.emulator.env or {}), "apt": list(t.emulator.apt)}
    return {
        "schema": MANIFEST_SCHEMA,
        "name": plan.archive_name[:-len(".tar.gz")],
        "q3build": __version__,
        "target": plan.target_name, "variant": plan.target_name, "triple": plan.triple, "arch": plan.arch,
        "cross": t.cross,
        "source_date_epoch": epoch,
        "upstream": {**plan.upstream_record(), "sources": [s.label for s in plan.pin.sources]},
        "series_digest": plan.series_digest,
        "overlay_digest": plan.overlay_digest,
        "patches": [{"file": f, "sha256": s, "purpose": entries[f].purpose if f in entries else None,
                     "upstream_status": entries[f].upstream.status if f in entries else None}
                    for f, s in plan.patches],
        "overlay": [{"path": r.as_posix(), "sha256": _sha256((series.overlay_dir / r).read_bytes())}
                    for r in series.overlay_files()],
        "distribution": plan.distribution,
        "version_output": info.get("version_output", ""),
        "version_checked_with": info.get("version_checked_with"),
        # the web UI embedded in llama-server and what it was built from (not the timings: reproducible)
        "web_ui": {k: v for k, v in (info.get("ui") or {}).items()
                   if k in ("embedded", "source", "source_tree", "lock_sha256")}
                  | ({"node": {k: v for k, v in info["ui"]["node"].items() if k != "node"}}
                     if (info.get("ui") or {}).get("node") else {}),
        "recipe": schema.to_record(t),
        "cmake": plan.cmake_record(),
        "toolchain": _toolchain(plan),
        "linkage": _linkage(plan),
        # what the binaries contain from others, with the licence texts shipped for each (verify checks them)
        "third_party": [llama_component(plan, files, _linkage(plan)).to_record(),
                        *(c.to_record() for c in third_party)],
        "emulator": emu,
        "cache_key": plan.cache_key,
        "validation": validation,
        "files": [{"path": p, "sha256": _sha256(data), "size": len(data), "executable": ex}
                  for p, (data, ex) in sorted(files.items())],
    }


def _toolchain(plan: BuildPlan) -> dict:
    """The toolchain as the manifest records it: no path of this machine (cache dir, compiler location)."""
    rec = plan.toolchain.to_record()
    fetched = {k: v for k, v in (rec["fetch"] or {}).items() if k != "dir"} or None
    return {"kind": rec["kind"], "triple": rec["triple"], "cc_version": rec["cc_version"],
            "cxx_version": rec["cxx_version"], "zig": plan.target.toolchain.version if rec["zig"] else None,
            "source": rec["source"], "fetch": fetched}


def _purl(plan: BuildPlan) -> str:
    for s in plan.pin.sources:
        if s.kind == "git" and s.url and "github.com/" in s.url:
            path = s.url.split("github.com/", 1)[1].removesuffix(".git").strip("/")
            return f"pkg:github/{path}@{plan.pin.upstream.commit}"
    return f"pkg:generic/{plan.pin.upstream.name}@{plan.pin.upstream.commit}"


def sbom(plan: BuildPlan, man: dict, epoch: int) -> dict:
    """CycloneDX 1.5 JSON: llama.cpp at its pin, the libraries linked into the binaries (licence id,
    linkage, licence text in the archive), each patch and the overlay with sha256, the binaries."""
    up = plan.pin.upstream
    llama = {"type": "library", "bom-ref": "llama.cpp", "name": up.name, "version": up.tag, "purl": _purl(plan),
             "licenses": [{"license": {"id": "MIT"}}],
             "properties": [{"name": "q3build:commit", "value": up.commit},
                            {"name": "q3build:git-tree", "value": up.tree}]}
    patches = [{"type": "file", "bom-ref": f"patch:{p['file']}", "name": p["file"],
                "hashes": [{"alg": "SHA-256", "content": p["sha256"]}],
                "properties": [{"name": "q3build:patch-index", "value": str(i)},
                               {"name": "q3build:applies-to", "value": f"llama.cpp@{up.commit}"}]}
               for i, p in enumerate(man["patches"], 1)]
    overlay = [{"type": "file", "bom-ref": f"overlay:{o['path']}", "name": o["path"],
                "hashes": [{"alg": "SHA-256", "content": o["sha256"]}],
                "properties": [{"name": "q3build:overlay-digest", "value": plan.overlay_digest}]}
               for o in man["overlay"]]
    binaries = [{"type": "file", "bom-ref": f"file:{f['path']}", "name": f["path"],
                 "hashes": [{"alg": "SHA-256", "content": f["sha256"]}]}
                for f in man["files"] if f["path"].startswith("bin/")]
    libs = [{"type": "library", "bom-ref": c["bom_ref"], "name": c["name"],
             **({"version": c["version"]} if c["version"] else {}),
             **({"purl": c["purl"]} if c["purl"] else {}),
             "licenses": [{"license": {"id": c["license"]}}],
             "properties": [{"name": "q3build:linkage", "value": c["linkage"]},
                            {"name": "q3build:archive", "value": c["archive"]},
                            *({"name": "q3build:license-file", "value": t["path"]} for t in c["license_files"]),
                            *({"name": "q3build:license-file-sha256", "value": f"{t['path']} {t['sha256']}"}
                              for t in c["license_files"])]}
            for c in man.get("third_party", []) if c["bom_ref"] != "llama.cpp"]
    # llama.cpp's licence texts as packaged
    llama_texts = next((c["license_files"] for c in man.get("third_party", []) if c["bom_ref"] == "llama.cpp"), [])
    llama["properties"] += [{"name": "q3build:license-file", "value": t["path"]} for t in llama_texts]
    llama["properties"] += [{"name": "q3build:license-file-sha256", "value": f"{t['path']} {t['sha256']}"}
                            for t in llama_texts]
    refs = ["llama.cpp", *(c["bom-ref"] for c in libs + patches + overlay)]
    body = {
        "bomFormat": "CycloneDX", "specVersion": "1.5", "version": 1,
        "metadata": {"timestamp": _iso(epoch),
                     "tools": {"components": [{"type": "application", "name": "q3build", "version": __version__}]},
                     "component": {"type": "application", "bom-ref": man["name"], "name": man["name"],
                                   "version": __version__}},
        "components": [llama, *libs, *patches, *overlay, *binaries],
        "dependencies": [{"ref": man["name"], "dependsOn": refs}],
    }
    # a serial number derived from the content: the same build gives the same SBOM
    body["serialNumber"] = "urn:uuid:" + str(uuid.uuid5(uuid.NAMESPACE_URL, _sha256(_json(body))))
    return body


def _json(data) -> bytes:
    return (json.dumps(data, indent=2, sort_keys=True) + "\n").encode()


def write_archive(dest: Path, top: str, files: dict[str, tuple[bytes, bool]], epoch: int) -> None:
    """Deterministic tar.gz of files under top/ (directories included, sorted)."""
    dirs = {top}
    for path in files:
        parts = path.split("/")[:-1]
        for i in range(1, len(parts) + 1):
            dirs.add(f"{top}/{'/'.join(parts[:i])}")
    entries = sorted([(d, None, True) for d in dirs] + [(f"{top}/{p}", data, ex) for p, (data, ex) in files.items()])
    tmp = dest.with_name(dest.name + ".tmp")
    with open(tmp, "wb") as raw, \
            gzip.GzipFile(filename="", mode="wb", fileobj=raw, mtime=0, compresslevel=9) as gz, \
            tarfile.open(fileobj=gz, mode="w", format=tarfile.GNU_FORMAT) as tar:
        for name, data, ex in entries:
            info = tarfile.TarInfo(name)
            info.mtime = epoch
            info.uid = info.gid = 0
            info.uname = info.gname = "root"
            if data is None:
                info.type = tarfile.DIRTYPE
                info.mode = 0o755
                tar.addfile(info)
            else:
                info.size = len(data)
                info.mode = 0o755 if ex else 0o644
                tar.addfile(info, io.BytesIO(data))
    os.replace(tmp, dest)


def build(project: Project, plan: BuildPlan, series: LoadedSeries, env: Mapping[str, str], out_dir: Path) -> dict:
    info = staged_build_info(plan)
    epoch = source_date_epoch(env, plan)
    third_party = licenses.components(plan)
    files = collect_files(project, plan, third_party)
    validation = None
    vfile = validation_path(project, plan.target_name)
    if vfile.is_file():
        v = json.loads(vfile.read_text())
        if v.get("cache_key") == plan.cache_key:
            files[VALIDATION] = (vfile.read_bytes(), False)
            validation = {"ok": v.get("ok"), "emulator": v.get("emulator"),
                          "checks": [{"name": c["name"], "status": c["status"]} for c in v.get("checks", [])]}
    man = manifest(project, plan, series, info, files, epoch, validation, third_party)
    files[MANIFEST] = (_json(man), False)
    files[SBOM] = (_json(sbom(plan, man, epoch)), False)
    sums = "".join(f"{_sha256(data)}  {p}\n" for p, (data, _) in sorted(files.items()))
    files[SUMS] = (sums.encode(), False)
    out_dir.mkdir(parents=True, exist_ok=True)
    dest = out_dir / plan.archive_name
    write_archive(dest, man["name"], files, epoch)
    digest = _sha256(dest.read_bytes())
    return {"archive": str(dest), "sha256": digest, "size": dest.stat().st_size, "files": len(files),
            "source_date_epoch": epoch, "validated": validation is not None and bool(validation.get("ok"))}
