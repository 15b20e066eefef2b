"""Checking a release archive on the machine it lands on: sums, manifest, SBOM, then a smoke test.

Nothing in the archive is trusted before its sums are checked; the archive is extracted with the
PEP 706 ``data`` filter. The smoke test runs the packaged ``llama-server --version`` natively when
this machine has the archive's architecture, else under the emulator the manifest records (when
it is installed here), and expects the distribution string the manifest names.
"""

from __future__ import annotations

import gzip
import json
import platform
import shutil
import tarfile
import tempfile
import zlib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from q3build import proc
from q3build.core import safetar
from q3build.core.series import sha256_file
from q3build.errors import InputError
from q3build.release.package import MANIFEST, SBOM, SUMS


@dataclass
class Check:
    name: str
    status: str          # ok, failed, skipped
    detail: str = ""

    def to_json(self) -> dict:
        return {"name": self.name, "status": self.status, "detail": self.detail}


def _extract(archive: Path, dest: Path) -> tuple[Path | None, Check]:
    try:
        # the whole gzip stream first: its CRC covers bytes a tar reader may never look at
        with gzip.open(archive, "rb") as g:
            while g.read(1 << 20):
                pass
        with tarfile.open(archive, "r:gz") as tf:
            members = tf.getmembers()
            tops = {PurePosixPath(m.name).parts[0] for m in members if m.name}
            if len(tops) != 1:
                return None, Check("archive", "failed", f"expected one top-level directory, found {sorted(tops)[:5]}")
            safetar.extract(tf, dest)
    except safetar.UnsafeMember as e:
        return None, Check("archive", "failed", f"unsafe member: {e}")
    except (tarfile.TarError, EOFError, OSError, zlib.error) as e:
        return None, Check("archive", "failed", f"corrupt or not a tar.gz: {e}")
    return dest / tops.pop(), Check("archive", "ok", f"{len(members)} entries")


def _check_sums(top: Path) -> Check:
    sums_file = top / SUMS
    if not sums_file.is_file():
        return Check("sha256sums", "failed", f"{SUMS} missing")
    listed = {}
    for n, line in enumerate(sums_file.read_text().splitlines(), 1):
        digest, sep, path = line.partition("  ")
        if not sep or len(digest) != 64:
            return Check("sha256sums", "failed", f"{SUMS}:{n}: not `<sha256>  <path>`")
        listed[path] = digest
    present = {p.relative_to(top).as_posix() for p in top.rglob("*") if p.is_file()} - {SUMS}
    problems = [f"{p}: not listed" for p in sorted(present - set(listed))]
    problems += [f"{p}: listed but missing" for p in sorted(set(listed) - present)]
    problems += [f"{p}: sha256 mismatch (listed {listed[p][:12]}…, file {sha256_file(top / p)[:12]}…)"
                 for p in sorted(present & set(listed)) if sha256_file(top / p) != listed[p]]
    if problems:
        return Check("sha256sums", "failed", "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    return Check("sha256sums", "ok", f"{len(listed)} files")


def _load_json(top: Path, name: str) -> dict | None:
    try:
        return json.loads((top / name).read_text())
    except (OSError, ValueError):
        return None


def _check_manifest(top: Path, man: dict | None) -> Check:
    if man is None:
        return Check("manifest", "failed", f"{MANIFEST} missing or not JSON")
    missing = [k for k in ("upstream", "patches", "overlay_digest", "files", "distribution", "name") if k not in man]
    if missing:
        return Check("manifest", "failed", f"{MANIFEST}: missing keys {', '.join(missing)}")
    if top.name != man["name"]:
        return Check("manifest", "failed", f"top directory {top.name} is not the manifest's name {man['name']}")
    problems = []
    for f in man["files"]:
        p = top / f["path"]
        if not p.is_file():
            problems.append(f"{f['path']}: in the manifest but not in the archive")
        elif sha256_file(p) != f["sha256"]:
            problems.append(f"{f['path']}: sha256 differs from the manifest")
        elif bool(p.stat().st_mode & 0o111) != f["executable"]:
            problems.append(f"{f['path']}: executable bit differs from the manifest")
    if problems:
        return Check("manifest", "failed", "; ".join(problems[:5]))
    return Check("manifest", "ok", f"{len(man['files'])} files, {len(man['patches'])} patches, "
                                   f"llama.cpp {man['upstream']['tag']}")


def _check_sbom(man: dict | None, bom: dict | None) -> Check:
    if bom is None:
        return Check("sbom", "failed", f"{SBOM} missing or not JSON")
    if man is None:
        return Check("sbom", "skipped", "no manifest to compare with")
    if bom.get("bomFormat") != "CycloneDX":
        return Check("sbom", "failed", f"{SBOM}: bomFormat is {bom.get('bomFormat')!r}, not CycloneDX")
    comps = {c.get("bom-ref"): c for c in bom.get("components", [])}
    problems = []
    llama = comps.get("llama.cpp")
    up = man["upstream"]
    if llama is None:
        problems.append("llama.cpp component missing")
    else:
        props = {p["name"]: p["value"] for p in llama.get("properties", [])}
        if llama.get("version") != up["tag"] or props.get("q3build:commit") != up["commit"] \
                or not str(llama.get("purl", "")).endswith("@" + up["commit"]):
            problems.append(f"llama.cpp is {llama.get('version')} {props.get('q3build:commit')}, "
                            f"the manifest pins {up['tag']} {up['commit']}")
    for p in man["patches"]:
        c = comps.get(f"patch:{p['file']}")
        sha = next((h["content"] for h in (c or {}).get("hashes", []) if h.get("alg") == "SHA-256"), None)
        if sha != p["sha256"]:
            problems.append(f"patch {p['file']}: " + ("not in the SBOM" if c is None else "sha256 differs"))
    for f in man["files"]:
        if f["path"].startswith("bin/"):
            c = comps.get(f"file:{f['path']}")
            sha = next((h["content"] for h in (c or {}).get("hashes", []) if h.get("alg") == "SHA-256"), None)
            if sha != f["sha256"]:
                problems.append(f"{f['path']}: " + ("not in the SBOM" if c is None else "sha256 differs"))
    extra = sorted(r for r in comps if str(r).startswith("patch:")
                   and r[len("patch:"):] not in {p["file"] for p in man["patches"]})
    problems += [f"{r}: in the SBOM but not in the manifest" for r in extra]
    if problems:
        return Check("sbom", "failed", "; ".join(problems[:5]))
    return Check("sbom", "ok", f"llama.cpp {up['tag']} ({up['commit'][:9]}) and {len(man['patches'])} patches match")


def _check_licenses(top: Path, man: dict | None, bom: dict | None) -> Check:
    """Every third-party component the manifest names has its licence texts in the archive with the
    recorded sha256, and the SBOM names the same components, licences and texts."""
    if man is None or bom is None:
        return Check("licenses", "skipped", "no manifest or SBOM")
    comps = man.get("third_party")
    if not comps:
        return Check("licenses", "failed", f"{MANIFEST}: no third_party components (not even llama.cpp)")
    boms = {c.get("bom-ref"): c for c in bom.get("components", [])}
    problems = []
    for c in comps:
        label = f"{c.get('name')} ({c.get('license')})"
        if not c.get("license_files"):
            problems.append(f"{label}: no licence file recorded")
        for t in c.get("license_files", []):
            p = top / t["path"]
            if not p.is_file():
                problems.append(f"{t['path']}: licence text of {label} missing from the archive")
            elif sha256_file(p) != t["sha256"]:
                problems.append(f"{t['path']}: licence text of {label} differs from the recorded sha256 "
                                f"({t['sha256'][:12]}…, file {sha256_file(p)[:12]}…)")
        b = boms.get(c.get("bom_ref"))
        if b is None:
            problems.append(f"{label}: not in the SBOM")
            continue
        ids = [x.get("license", {}).get("id") for x in b.get("licenses", [])]
        props = {(q["name"], q["value"]) for q in b.get("properties", [])}
        if ids != [c.get("license")]:
            problems.append(f"{label}: the SBOM says {', '.join(map(str, ids)) or 'no licence'}")
        want = {("q3build:license-file-sha256", f"{t['path']} {t['sha256']}") for t in c.get("license_files", [])}
        if not want <= props:
            problems.append(f"{label}: the SBOM's licence files differ from the manifest's")
    named = {c.get("bom_ref") for c in comps}
    problems += [f"{r}: a library in the SBOM without a licence record in the manifest"
                 for r in sorted(str(r) for r, b in boms.items() if b.get("type") == "library" and r not in named)]
    if problems:
        return Check("licenses", "failed", "; ".join(problems[:5]) + (" …" if len(problems) > 5 else ""))
    return Check("licenses", "ok", ", ".join(f"{c['name']} {c.get('version') or '(version unknown)'} "
                                            f"{c['license']} {c['linkage']}" for c in comps))


def smoke(top: Path, man: dict, env: Mapping[str, str]) -> Check:
    server = top / "bin" / "llama-server"
    if not server.is_file():
        return Check("smoke", "failed", "bin/llama-server missing")
    here = platform.machine()
    prefix: list[str] = []
    run_env = dict(env)
    how = "native"
    if man.get("arch") != here:
        emu = man.get("emulator")
        if not emu:
            return Check("smoke", "skipped", f"archive is {man.get('arch')}, this machine {here}, no emulator recorded")
        if proc.which(emu["argv"][0], env) is None:
            pkg = f" (apt install {' '.join(emu.get('apt', []))})" if emu.get("apt") else ""
            return Check("smoke", "skipped", f"archive is {man.get('arch')}: emulator {emu['argv'][0]} "
                                             f"not installed{pkg}")
        prefix = list(emu["argv"])
        run_env.update(emu.get("env") or {})
        how = emu["argv"][0]
    r = proc.run([*prefix, server, "--version"], env=run_env, capture=True, check=False)
    out = (r.stdout + r.stderr).strip()
    if r.returncode != 0:
        return Check("smoke", "failed", f"llama-server --version ({how}) exited {r.returncode}: {out[-200:]}")
    if man["distribution"] not in out:
        return Check("smoke", "failed", f"llama-server --version ({how}) does not report "
                                        f"{man['distribution']!r}: {out[-200:]}")
    line = next((ln for ln in out.splitlines() if ln.startswith("version:")), out.splitlines()[-1])
    return Check("smoke", "ok", f"{how}: {line}")


def verify(archive: Path, env: Mapping[str, str], *, run_smoke: bool = True) -> list[Check]:
    if not archive.is_file():
        raise InputError(f"{archive}: no such file")
    tmp = Path(tempfile.mkdtemp(prefix="q3build-verify-"))
    try:
        top, c = _extract(archive, tmp)
        checks = [c]
        if top is None:
            return checks
        checks.append(_check_sums(top))
        man, bom = _load_json(top, MANIFEST), _load_json(top, SBOM)
        checks.append(_check_manifest(top, man))
        checks.append(_check_sbom(man, bom))
        checks.append(_check_licenses(top, man, bom))
        if not run_smoke:
            checks.append(Check("smoke", "skipped", "--no-smoke"))
        elif any(c.status == "failed" for c in checks):
            checks.append(Check("smoke", "skipped", "not run on an archive that failed its checks"))
        else:
            checks.append(smoke(top, man, env))
        return checks
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


