"""The licence texts of the libraries linked into a target (q3build.release.licenses): taken from the
Debian package that owns each archive (this machine, or a Debian-made sysroot), else from the sysroot's
licence files; a linked library without one is an error naming where it was looked for. No processes:
the machine and the sysroot are temporary directories laid out as dpkg and the -dev packages do."""

from __future__ import annotations

import pytest

from q3build.core import plan as plan_mod
from q3build.core import recipe
from q3build.errors import BuildError, RecipeError
from q3build.release import licenses
from q3build.toolchains import libraries
from q3build.toolchains import zig as zig_kind

from .helpers import make_project

ENV = {"PATH": "/usr/bin"}
HEADERS = ("usr/include/lame/lame.h", "usr/include/opus/opus.h", "usr/include/ogg/ogg.h")
ARCHIVES = {"mp3lame": "usr/lib/libmp3lame.a", "opus": "usr/lib/libopus.a", "ogg": "usr/lib/libogg.a"}
# (package, source, version, the archive it installs, its copyright text or None)
DEBIAN = [("libmp3lame-dev", "lame", "3.100-6", "mp3lame",
           b"LAME: LGPL-2+ (fake)\n the full text is in `/usr/share/common-licenses/LGPL-2'.\n"),
          ("libopus-dev", "opus", "1.3.1-3", "opus", b"Opus: BSD-3-clause (fake)\n"),
          ("libogg-dev", "libogg", "1.3.5-3", "ogg", b"Ogg: BSD-3-clause (fake)\n")]


@pytest.fixture
def project(tmp_path, monkeypatch):
    monkeypatch.setattr(zig_kind, "zig_executable", lambda: "/opt/ziglang/zig")
    return make_project(tmp_path, monkeypatch, recipes=("host", "riscv64"))


def touch(root, *files, data=b""):
    for f in files:
        (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f).write_bytes(data)


def debian_root(root, packages=DEBIAN, *, extra_status=""):
    """A root as dpkg leaves it: headers and archives, info/<pkg>:amd64.list, status, the copyrights."""
    touch(root, *HEADERS, *ARCHIVES.values())
    info = root / "var/lib/dpkg/info"
    info.mkdir(parents=True, exist_ok=True)
    status = []
    for pkg, source, version, lib, copyright in packages:
        (info / f"{pkg}:amd64.list").write_text(f"/.\n/usr\n/usr/lib\n/{ARCHIVES[lib]}\n/usr/share/doc/{pkg}\n")
        status.append(f"Package: {pkg}\nStatus: install ok installed\nArchitecture: amd64\n"
                      f"Source: {source}\nVersion: {version}\nDescription: x\n more\n")
        if copyright is not None:
            touch(root, f"usr/share/doc/{pkg}/copyright", data=copyright)
    (root / "var/lib/dpkg/status").write_text("\n".join(status) + extra_status)
    touch(root, "usr/share/common-licenses/LGPL-2", data=b"GNU LIBRARY GENERAL PUBLIC LICENSE Version 2\n")
    return root


def by_name(plan):
    return {c.name: c for c in licenses.components(plan)}


def test_the_host_takes_each_text_from_the_debian_package_that_owns_the_archive(project, tmp_path):
    # the unit helpers stand tmp_path/machine in for this machine's / (tests/unit/helpers.py)
    debian_root(tmp_path / "machine")
    comps = by_name(plan_mod.resolve(project, "host", ENV))
    assert sorted(comps) == ["LAME", "libogg", "libopus"]
    lame = comps["LAME"]
    assert (lame.version, lame.license, lame.linkage, lame.archive) == (
        "3.100-6", "LGPL-2.0-or-later", "static", "sysroot:usr/lib/libmp3lame.a")
    assert lame.purl == "pkg:deb/debian/libmp3lame-dev@3.100-6?arch=amd64"
    assert lame.origin == {"kind": "deb", "package": "libmp3lame-dev", "version": "3.100-6", "arch": "amd64",
                           "source": "lame"}
    # the copyright file and the full LGPL it refers to (Debian gives it only by reference)
    text, lgpl = lame.texts
    assert text.path == "share/licenses/LAME/copyright" and text.data == DEBIAN[0][4]
    assert text.source == "sysroot:usr/share/doc/libmp3lame-dev/copyright"
    assert lgpl.path == "share/licenses/LAME/common-licenses/LGPL-2" and lgpl.data.startswith(b"GNU LIBRARY")
    assert {(c.license, c.version) for c in (comps["libopus"], comps["libogg"])} == {
        ("BSD-3-Clause", "1.3.1-3"), ("BSD-3-Clause", "1.3.5-3")}
    assert comps["libogg"].texts[0].data == DEBIAN[2][4]


def test_a_minimal_image_without_the_dev_packages_copyright_uses_its_sources_other_package(project, tmp_path):
    # docker-slim style: libopus-dev's doc directory is gone, libopus0 (same source) kept its copyright
    root = debian_root(tmp_path / "machine", [*DEBIAN[:1], DEBIAN[1][:4] + (None,), *DEBIAN[2:]],
                       extra_status="\nPackage: libopus0\nStatus: install ok installed\nArchitecture: amd64\n"
                                    "Source: opus\nVersion: 1.3.1-3\n")
    touch(root, "usr/share/doc/libopus0/copyright", data=b"Opus runtime copyright\n")
    opus = by_name(plan_mod.resolve(project, "host", ENV))["libopus"]
    assert [t.data for t in opus.texts] == [b"Opus runtime copyright\n"]
    assert opus.texts[0].source.endswith("usr/share/doc/libopus0/copyright")
    # neither has it: the error names the package and both places looked at
    (root / "usr/share/doc/libopus0/copyright").unlink()
    with pytest.raises(BuildError) as e:
        licenses.components(plan_mod.resolve(project, "host", ENV))
    assert str(e.value).startswith("libopus (usr/lib/libopus.a, linked into target host): no licence text in ")
    assert "usr/share/doc/{libopus-dev,libopus0}/copyright" in str(e.value)
    assert str(e.value).endswith("or make and package without it with CMAKE_ARGS=-DQ3_SPEECH_OPUS=OFF")


def test_a_copyright_whose_referenced_licence_is_missing_is_refused(project, tmp_path):
    root = debian_root(tmp_path / "machine")
    (root / "usr/share/common-licenses/LGPL-2").unlink()
    with pytest.raises(BuildError) as e:
        licenses.components(plan_mod.resolve(project, "host", ENV))
    assert "LAME (usr/lib/libmp3lame.a, linked into target host): no licence text in " in str(e.value)
    assert "usr/share/common-licenses/LGPL-2, which usr/share/doc/libmp3lame-dev/copyright refers to" in str(e.value)


def test_a_modified_lame_linked_from_its_own_prefix_ships_that_prefix_text(project, tmp_path):
    # the relinking route the README describes: make -D Q3_SPEECH_LIB_mp3lame=<prefix>/lib/libmp3lame.a
    debian_root(tmp_path / "machine")
    prefix = tmp_path / "lame-mod"
    touch(prefix, "lib/libmp3lame.a")
    touch(prefix, "share/doc/lame/COPYING", data=b"LGPL (modified LAME)\n")
    plan = plan_mod.resolve(project, "host", ENV)
    plan.build_dir.mkdir(parents=True)
    (plan.build_dir / "CMakeCache.txt").write_text(
        f"Q3_SPEECH_LIB_mp3lame:FILEPATH={prefix}/lib/libmp3lame.a\n"
        "Q3_SPEECH_LIB_ogg:FILEPATH=Q3_SPEECH_LIB_ogg-NOTFOUND\n")
    comps = by_name(plan)
    assert comps["LAME"].archive == str(prefix / "lib/libmp3lame.a") and comps["LAME"].origin == {"kind": "files"}
    assert [(t.path, t.data) for t in comps["LAME"].texts] == [
        ("share/licenses/LAME/COPYING", b"LGPL (modified LAME)\n")]
    assert comps["libogg"].archive == "sysroot:usr/lib/libogg.a"      # not in CMake's cache: the plan's
    (prefix / "share/doc/lame/COPYING").unlink()
    with pytest.raises(BuildError) as e:
        licenses.components(plan)
    assert f"and {prefix}/share/…" in str(e.value)


def test_a_library_switched_off_or_not_found_ships_no_text(project, tmp_path):
    debian_root(tmp_path / "machine")
    plan = plan_mod.resolve(project, "host", ENV, plan_mod.Options(cmake_defines=("Q3_SPEECH_MP3=OFF",)))
    assert sorted(by_name(plan)) == ["libogg", "libopus"]
    (tmp_path / "machine" / ARCHIVES["ogg"]).unlink()       # opus needs ogg: the whole switch is OFF
    assert sorted(by_name(plan_mod.resolve(project, "host", ENV))) == ["LAME"]


def test_a_sysroot_without_dpkg_gives_its_own_licence_files_and_pkg_config_versions(project, tmp_path,
                                                                                   monkeypatch):
    sysroot = tmp_path / "sysroot"
    touch(sysroot, *HEADERS, *ARCHIVES.values())
    touch(sysroot, "usr/share/licenses/libopus/COPYING", data=b"opus COPYING\n")
    touch(sysroot, "usr/share/doc/libogg-1.3.5/COPYING", "usr/share/doc/libogg-1.3.5/README", data=b"ogg\n")
    touch(sysroot, "usr/lib/pkgconfig/opus.pc", data=b"Name: Opus\nVersion: 1.5.2\nLibs: -L${libdir} -lopus\n")
    real = libraries.search_dirs
    monkeypatch.setattr(libraries, "search_dirs", lambda target, root=None: real(target, root or str(sysroot)))
    plan = plan_mod.resolve(project, "riscv64", ENV)
    # LAME is linked and the sysroot has no text for it: package refuses, saying where it looked
    with pytest.raises(BuildError) as e:
        licenses.components(plan)
    msg = str(e.value)
    assert msg.startswith(f"LAME (usr/lib/libmp3lame.a, linked into target riscv64): no licence text in "
                          f"sysroot {sysroot} (looked for ")
    assert "share/{licenses,doc}/{lame,libmp3lame,mp3lame}" in msg and "\n" not in msg
    touch(sysroot, "usr/share/doc/lame/COPYING", "usr/share/doc/lame/LICENSE", data=b"LAME LGPL\n")
    comps = by_name(plan)
    assert [t.path for t in comps["LAME"].texts] == ["share/licenses/LAME/COPYING", "share/licenses/LAME/LICENSE"]
    assert comps["LAME"].version is None and comps["LAME"].origin == {"kind": "files"}
    assert comps["libopus"].version == "1.5.2" and comps["libopus"].texts[0].data == b"opus COPYING\n"
    assert [t.path for t in comps["libogg"].texts] == ["share/licenses/libogg/COPYING"]   # not the README
    assert comps["libogg"].texts[0].source == "sysroot:usr/share/doc/libogg-1.3.5/COPYING"


def test_every_linked_library_names_its_licence_in_the_recipe(project):
    path = project.recipes_dir / "host.yaml"
    text = path.read_text()
    path.write_text(text.replace("      ogg: {component: libogg, spdx: BSD-3-Clause}\n", ""))
    with pytest.raises(RecipeError) as e:
        recipe.load(project, "host")
    assert any("libraries.opus.licenses" in p and "no entry for ogg" in p for p in e.value.problems)
    path.write_text(text.replace("spdx: BSD-3-Clause}", "spdx: BSD 3 clause}", 1))
    with pytest.raises(RecipeError) as e:
        recipe.load(project, "host")
    assert any("'BSD 3 clause' is not an SPDX licence expression" in p for p in e.value.problems)
