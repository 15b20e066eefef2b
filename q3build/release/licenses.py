"""The licence texts and SBOM components of the third-party libraries linked into a target's binaries.

llama.cpp's own LICENSE (and its ``licenses/`` directory) comes from the synced tree. The optional
libraries of the recipe (``libraries:``, the speech service's LAME, libopus and libogg) are linked as
static archives when the build found them (the archive CMake linked, from the build directory's
cache, else the one the plan found); each linked archive becomes a component whose licence
text is taken from where the archive came from:

- a Debian root (this machine, or a sysroot made from Debian packages): the package that owns the
  archive, read from ``<root>/var/lib/dpkg/info/*.list`` (what ``dpkg -S`` reads), its version and
  architecture from ``<root>/var/lib/dpkg/status``, its text from ``usr/share/doc/<package>/copyright``
  (or that of another binary package of the same source, when a minimal image dropped it), and the
  full licences that copyright file refers to in ``usr/share/common-licenses/`` (Debian gives LGPL-2
  only by reference there), under ``share/licenses/<component>/common-licenses/``;
- otherwise (a sysroot built by hand or by another distribution): licence files (copyright,
  COPYING*, LICENSE*, LICENCE*, NOTICE*) in ``usr/share/licenses/<name>/`` or ``usr/share/doc/<name>/``
  (also under ``share/`` and ``usr/local/share/``, and first under ``<prefix>/share/`` of an archive
  installed in a prefix of its own, such as a modified LAME linked with ``make -D
  Q3_SPEECH_LIB_mp3lame=<prefix>/lib/libmp3lame.a``), and the version from the pkg-config file whose
  ``Libs:`` names the library. These headers carry no version macro, so without either the version
  is recorded as unknown.

A linked library whose licence text cannot be found is an error: the archive could not be
distributed as it stands (the LGPL requires a copy of it with the binaries, the BSD licences' second
clause their notice in the documentation of a binary distribution), so ``package`` refuses it,
naming where it looked. No processes are run.
"""

from __future__ import annotations

import hashlib
import re
from dataclasses import dataclass, field
from pathlib import Path

from q3build.core.plan import BuildPlan
from q3build.errors import BuildError
from q3build.toolchains.libraries import FoundLibrary

LICENSE_NAMES = re.compile(r"^(copyright|copying|licen[cs]e|notice)([._-].*)?$", re.IGNORECASE)
OFF = {"OFF", "FALSE", "NO", "0", "N", ""}


@dataclass(frozen=True)
class LicenseText:
    path: str           # in the archive, relative to its top directory
    data: bytes
    source: str         # where it was read: an absolute path of this machine, or sysroot:<relative path>

    @property
    def sha256(self) -> str:
        return hashlib.sha256(self.data).hexdigest()


@dataclass(frozen=True)
class Component:
    ref: str                          # SBOM bom-ref
    name: str                         # LAME, libopus, …
    version: str | None
    license: str                      # SPDX id
    linkage: str                      # static (or the llama.cpp build's linkage)
    library: str | None = None        # the recipe's lib name (mp3lame); None for llama.cpp
    archive: str | None = None        # the archive linked: /usr/lib/…/libmp3lame.a, or sysroot:usr/lib/…
    origin: dict = field(default_factory=dict)   # {"kind": "deb", "package", "version", "arch"} or files
    purl: str | None = None
    texts: tuple[LicenseText, ...] = ()

    def to_record(self) -> dict:
        return {"bom_ref": self.ref, "name": self.name, "version": self.version, "license": self.license,
                "linkage": self.linkage, "library": self.library, "archive": self.archive,
                "origin": self.origin, "purl": self.purl,
                "license_files": [{"path": t.path, "sha256": t.sha256, "source": t.source} for t in self.texts]}


def _on(value: str | None) -> bool:
    return value is not None and value.strip().upper() not in OFF


def _cmake_cache(plan: BuildPlan) -> dict[str, str]:
    """NAME → value of the build directory's CMakeCache.txt (empty when there is none)."""
    path = plan.build_dir / "CMakeCache.txt"
    out = {}
    if path.is_file():
        for line in path.read_text(errors="replace").splitlines():
            m = re.match(r"^([A-Za-z0-9_.+-]+):[A-Z]+=(.*)$", line)
            if m:
                out[m.group(1)] = m.group(2)
    return out


def linked(plan: BuildPlan) -> list[tuple[FoundLibrary, str, Path]]:
    """(found library, lib name, archive path) for every archive the build linked: its switch is not
    OFF, and the archive is the one CMake linked (the overlay's ``Q3_SPEECH_LIB_<lib>`` cache entry,
    which ``-D Q3_SPEECH_LIB_mp3lame=…`` can point at a modified build), else the one the plan found."""
    cache = _cmake_cache(plan)
    out = []
    for f in plan.libraries:
        mode = plan.cmake_value(f.library.cmake)
        if not _on(mode):
            continue
        archives = []
        for lib in f.library.libs:
            linked_ = cache.get(f"Q3_SPEECH_LIB_{lib}", "")
            archives.append(linked_ if linked_ and not linked_.endswith("NOTFOUND") else f.archive(lib))
        if None in archives:
            if str(mode).upper() == "AUTO":
                continue            # CMake did not find them either: left out
            raise BuildError(f"{f.library.cmake} is {mode} for target {plan.target_name} but "
                             f"{', '.join(f.missing)} not found in {f.where}: cannot tell which archives "
                             "were linked, so not which licence texts to ship")
        out += [(f, lib, Path(a)) for lib, a in zip(f.library.libs, archives)]
    return out


def _rel(path: Path, root: Path) -> str:
    try:
        return path.relative_to(root).as_posix()
    except ValueError:
        return path.as_posix()


def _dpkg_status(root: Path) -> dict[tuple[str, str], dict[str, str]]:
    """(package, arch) → fields of the installed packages in <root>/var/lib/dpkg/status."""
    path = root / "var/lib/dpkg/status"
    out: dict[tuple[str, str], dict[str, str]] = {}
    if not path.is_file():
        return out
    for stanza in path.read_text(errors="replace").split("\n\n"):
        fields = {}
        for line in stanza.splitlines():
            if line and not line[0].isspace() and ":" in line:
                k, _, v = line.partition(":")
                fields[k.strip()] = v.strip()
        if "Package" in fields and "installed" in fields.get("Status", "installed").split():
            out[(fields["Package"], fields.get("Architecture", ""))] = fields
    return out


def _dpkg_owner(root: Path, archive: Path, hints: tuple[str, ...]) -> tuple[str, str] | None:
    """(package, arch) whose file list has the archive, as `dpkg -S` answers (its .list files):
    the recipe's apt packages first, then every package."""
    info = root / "var/lib/dpkg/info"
    if not info.is_dir():
        return None
    rel = "/" + _rel(archive, root).lstrip("/")
    # merged /usr: /lib/x → /usr/lib/x and back
    wanted = {rel, rel[len("/usr"):] if rel.startswith("/usr/") else "/usr" + rel}
    lists = [p for h in hints for p in sorted(info.glob(f"{h}.list")) + sorted(info.glob(f"{h}:*.list"))]
    lists += [p for p in sorted(info.glob("*.list")) if p not in lists]
    for p in lists:
        try:
            if wanted & set(p.read_text(errors="replace").splitlines()):
                pkg, _, arch = p.name[:-len(".list")].partition(":")
                return pkg, arch
        except OSError:
            continue
    return None


def _os_id(root: Path) -> str:
    for p in (root / "etc/os-release", root / "usr/lib/os-release"):
        if p.is_file():
            m = re.search(r'^ID="?([a-z0-9._-]+)"?$', p.read_text(errors="replace"), re.MULTILINE)
            if m:
                return m.group(1)
    return "debian"


def _source_of(root: Path, path: Path) -> str:
    """Where a file was read, for the manifest: its path on this machine, or sysroot:<relative path>
    (the sysroot's location is this machine's business)."""
    return str(path) if root == Path("/") or not path.is_relative_to(root) else f"sysroot:{_rel(path, root)}"


def _common_licenses(root: Path, text: LicenseText, dest: str) -> tuple[list[LicenseText], list[str]]:
    """Debian copyright files give the long licences (LGPL-2, …) by reference to base-files'
    /usr/share/common-licenses: the archive needs the full texts, so it takes those along.
    (texts, the referenced paths that are missing)."""
    refs = sorted(set(re.findall(r"/usr/share/common-licenses/([A-Za-z0-9+_-]+(?:\.[A-Za-z0-9+_-]+)*)",
                                 text.data.decode(errors="replace"))))
    texts, missing = [], []
    for ref in refs:
        path = root / "usr/share/common-licenses" / ref
        if path.is_file():
            texts.append(LicenseText(f"{dest}/common-licenses/{ref}", path.read_bytes(), _source_of(root, path)))
        else:
            missing.append(f"usr/share/common-licenses/{ref}")
    return texts, missing


def _from_dpkg(root: Path, f: FoundLibrary, archive: Path, dest: str):
    owner = _dpkg_owner(root, archive, tuple(f.library.apt))
    if owner is None:
        return None
    pkg, arch = owner
    status = _dpkg_status(root)
    fields = status.get((pkg, arch)) or status.get((pkg, "")) or next(
        (v for (p, _), v in status.items() if p == pkg), {})
    version = fields.get("Version")
    arch = arch or fields.get("Architecture", "")
    source = fields.get("Source", pkg).split()[0]
    # this package's copyright, else that of another binary package built from the same source
    candidates = [pkg, *sorted(p for (p, _), v in status.items()
                               if p != pkg and v.get("Source", p).split()[0] == source)]
    looked = f"usr/share/doc/{{{','.join(candidates)}}}/copyright" if len(candidates) > 1 \
        else f"usr/share/doc/{pkg}/copyright"
    texts: tuple[LicenseText, ...] = ()
    path = next((root / "usr/share/doc" / c / "copyright" for c in candidates
                 if (root / "usr/share/doc" / c / "copyright").is_file()), None)
    if path is not None:
        text = LicenseText(f"{dest}/copyright", path.read_bytes(), _source_of(root, path))
        common, missing = _common_licenses(root, text, dest)
        if missing:     # a copyright without the licence it points to is not the licence
            looked = f"{', '.join(missing)}, which {_rel(path, root)} refers to"
        else:
            texts = (text, *common)
    purl = f"pkg:deb/{_os_id(root)}/{pkg}@{version}" + (f"?arch={arch}" if arch else "") if version else None
    origin = {"kind": "deb", "package": pkg, "version": version, "arch": arch or None, "source": source}
    return version, origin, purl, texts, looked


def _pc_version(root: Path, archive: Path, lib: str) -> str | None:
    dirs = [archive.parent / "pkgconfig", root / "usr/lib/pkgconfig", root / "usr/share/pkgconfig",
            root / "lib/pkgconfig", root / "usr/local/lib/pkgconfig"]
    for d in dirs:
        for pc in sorted(d.glob("*.pc")) if d.is_dir() else ():
            text = pc.read_text(errors="replace")
            libs = re.search(r"^Libs:(.*)$", text, re.MULTILINE)
            version = re.search(r"^Version:\s*(\S+)", text, re.MULTILINE)
            if libs and f"-l{lib}" in libs.group(1).split() and version:
                return version.group(1)
    return None


def _from_files(root: Path, name: str, lib: str, archive: Path, dest: str):
    names = sorted({name.lower(), lib, f"lib{lib}"})
    bases = [root / "usr/share", root / "share", root / "usr/local/share"]
    # an archive installed outside the standard directories (a prefix of its own: <prefix>/lib/libX.a)
    prefix = next((p.parent for p in archive.parents if p.name.startswith("lib")), archive.parent)
    if prefix / "share" not in bases and prefix != root:
        bases.insert(0, prefix / "share")
    texts: list[LicenseText] = []
    for base in bases:
        for kind in ("licenses", "doc"):
            d = base / kind
            if not d.is_dir():
                continue
            for sub in sorted(d.iterdir()):
                # the name, or the name and a version (doc/libogg-1.3.5)
                if not any(sub.name == n or re.fullmatch(re.escape(n) + r"-[0-9][0-9A-Za-z.+~-]*", sub.name)
                           for n in names) or not sub.is_dir():
                    continue
                for p in sorted(sub.iterdir()):
                    if p.is_file() and LICENSE_NAMES.match(p.name) and not any(t.path.endswith("/" + p.name)
                                                                                for t in texts):
                        texts.append(LicenseText(f"{dest}/{p.name}", p.read_bytes(), _source_of(root, p)))
            if texts:
                break
        if texts:
            break
    version = _pc_version(root, archive, lib)
    looked = f"{{usr/,usr/local/,}}share/{{licenses,doc}}/{{{','.join(names)}}}[-VERSION]/" \
             "{copyright,COPYING*,LICENSE*,LICENCE*,NOTICE*}"
    if bases[0] == prefix / "share":
        looked += f" and {_source_of(root, prefix / 'share')}/…"
    return version, {"kind": "files"}, None, tuple(texts), looked


def components(plan: BuildPlan) -> list[Component]:
    """The linked optional libraries as components, each with its licence texts; a BuildError names a
    linked library whose text was not found and where it was looked for."""
    out = []
    for f, lib, archive in linked(plan):
        meta = f.library.licenses.get(lib) if f.library.licenses else None
        if meta is None:
            raise BuildError(f"target {plan.target_name}: libraries.{f.name}.licenses has no entry for {lib}: "
                             "a linked library needs its component name and SPDX licence id")
        root = Path(f.root or "/")
        dest = f"share/licenses/{meta.component}"
        found = _from_dpkg(root, f, archive, dest) or _from_files(root, meta.component, lib, archive, dest)
        version, origin, purl, texts, looked = found
        if not texts:
            where = "this machine" if root == Path("/") else f"sysroot {root}"
            raise BuildError(
                f"{meta.component} ({_rel(archive, root)}, linked into target {plan.target_name}): no licence "
                f"text in {where} (looked for {looked}); add it there, or make and package without it "
                f"with CMAKE_ARGS=-D{f.library.cmake}=OFF")
        out.append(Component(ref=f"lib:{lib}", name=meta.component, version=version, license=meta.spdx,
                             linkage="static", library=lib, archive=_source_of(root, archive), origin=origin,
                             purl=purl, texts=texts))
    return out
