"""package and verify on the synthetic upstream: byte-identical archives, manifest and SBOM contents,
and verify's failures on a corrupted or tampered archive."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import tarfile

import pytest

from .conftest import add_patch


def sha(path):
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def built(proj, capsys):
    (proj.root / "patches" / "overlay" / "LICENSE").write_text("MIT License (fake upstream)\n")
    assert proj.q3("sync") == 0
    add_patch(proj, "0001", subject="greeting q3build", edit=lambda s: (s / "tools/greeting.h").write_text(
        (s / "tools/greeting.h").read_text().replace("hello from upstream", "hello from q3build")))
    assert proj.q3("make", "--target", "host") == 0
    capsys.readouterr()
    return proj


def package(proj, capsys, out, *extra):
    capsys.readouterr()
    rc = proj.q3("package", "--target", "host", "--out", str(out), "--json", *extra)
    res = capsys.readouterr()
    assert rc == 0, res.err
    return json.loads(res.out)


def members(archive):
    with tarfile.open(archive) as tf:
        return tf.getmembers(), {m.name: tf.extractfile(m).read() for m in tf.getmembers() if m.isfile()}


def test_two_runs_are_byte_identical(built, capsys, tmp_path, monkeypatch):
    a = package(built, capsys, tmp_path / "a")
    b = package(built, capsys, tmp_path / "b")
    assert a["sha256"] == b["sha256"] == sha(tmp_path / "a" / a["archive"].split("/")[-1])
    assert (tmp_path / "a").iterdir().__next__().read_bytes() == (tmp_path / "b").iterdir().__next__().read_bytes()
    # the date is an input: another SOURCE_DATE_EPOCH gives other bytes, and every entry carries it
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "1700000000")
    c = package(built, capsys, tmp_path / "c")
    assert c["sha256"] != a["sha256"]
    ms, _ = members(c["archive"])
    assert {m.mtime for m in ms} == {1700000000}
    assert {(m.uid, m.gid, m.uname, m.gname) for m in ms} == {(0, 0, "root", "root")}
    assert [m.name for m in ms] == sorted(m.name for m in ms)
    with open(c["archive"], "rb") as f:
        head = f.read(10)
    assert head[4:8] == b"\0\0\0\0"      # gzip header mtime 0


def test_archive_layout_manifest_and_sbom(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    name = res["archive"].split("/")[-1]
    assert name == f"q3build-0.1.0-llama-b4242-{__import__('platform').machine()}-linux-gnu-host.tar.gz"
    ms, files = members(res["archive"])
    top = name[:-len(".tar.gz")]
    rel = {n[len(top) + 1:] for n in files}
    assert {"bin/llama-server", "bin/llama-tts", "bin/q3tts-serve", "lib/systemd/system/q3tts.service",
            "share/licenses/llama.cpp/LICENSE", "manifest.json", "sbom.cdx.json", "SHA256SUMS"} <= rel
    assert next(m for m in ms if m.name == f"{top}/bin/llama-server").mode == 0o755
    man = json.loads(files[f"{top}/manifest.json"])
    [patch] = man["patches"]
    assert patch["file"] == "0001-greeting-q3build.patch"
    assert patch["sha256"] == sha(built.root / "patches" / patch["file"])
    assert man["upstream"]["commit"] == built.upstream.commit and man["upstream"]["tag"] == "b4242"
    assert man["validation"] is None and man["emulator"] is None and man["linkage"] == "static"
    assert man["web_ui"] == {"embedded": False}   # the synthetic pin names no web UI
    assert man["recipe"]["cmake"]["build_targets"] == ["llama-server", "llama-tts"]
    bom = json.loads(files[f"{top}/sbom.cdx.json"])
    comps = {c["bom-ref"]: c for c in bom["components"]}
    assert comps["llama.cpp"]["version"] == "b4242"
    assert comps["llama.cpp"]["purl"].endswith("@" + built.upstream.commit)
    assert comps["patch:0001-greeting-q3build.patch"]["hashes"] == [{"alg": "SHA-256", "content": patch["sha256"]}]
    sums = dict(reversed(line.split("  ")) for line in files[f"{top}/SHA256SUMS"].decode().splitlines())
    assert sums["bin/llama-server"] == hashlib.sha256(files[f"{top}/bin/llama-server"]).hexdigest()
    assert "SHA256SUMS" not in sums


def test_verify_passes_and_runs_the_binary(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    assert built.q3("verify", res["archive"], "--json") == 0
    out = json.loads(capsys.readouterr().out)
    assert [(c["name"], c["status"]) for c in out["checks"]] == [
        ("archive", "ok"), ("sha256sums", "ok"), ("manifest", "ok"), ("sbom", "ok"), ("licenses", "ok"),
        ("smoke", "ok")]
    assert "native: version: fake (build 4242" in out["checks"][-1]["detail"]


def test_verify_fails_on_a_flipped_byte(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    path = tmp_path / "out" / res["archive"].split("/")[-1]
    data = bytearray(path.read_bytes())
    data[len(data) // 2] ^= 0x01
    path.write_bytes(bytes(data))
    assert built.q3("verify", str(path)) == 6
    err = capsys.readouterr().err
    assert "archive failed: corrupt or not a tar.gz" in err


def rewrite(src, dest, change):
    """Copy a tar.gz, passing each (name, data) through change."""
    with tarfile.open(src) as tf, open(dest, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as out:
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isfile() else None
            if data is not None:
                data = change(m.name, data)
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)


def test_verify_names_a_tampered_binary(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    bad = tmp_path / "tampered.tar.gz"
    rewrite(res["archive"], bad, lambda n, d: d + b"\0" if n.endswith("/bin/llama-tts") else d)
    assert built.q3("verify", str(bad)) == 6
    err = capsys.readouterr().err
    assert "sha256sums failed: bin/llama-tts: sha256 mismatch" in err


def test_verify_names_an_sbom_that_disagrees_with_the_manifest(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    bad = tmp_path / "sbom.tar.gz"

    def change(name, data):
        if name.endswith("/sbom.cdx.json"):
            return data.replace(b'"version": "b4242"', b'"version": "b9999"')
        return data
    # keep SHA256SUMS consistent so the SBOM check itself is what fails
    with tarfile.open(res["archive"]) as tf:
        sbom = next(tf.extractfile(m).read() for m in tf.getmembers() if m.name.endswith("/sbom.cdx.json"))
    old, new = hashlib.sha256(sbom).hexdigest(), hashlib.sha256(change("/sbom.cdx.json", sbom)).hexdigest()
    rewrite(res["archive"], bad, lambda n, d: change(n, d).replace(old.encode(), new.encode())
            if n.endswith(("/sbom.cdx.json", "/SHA256SUMS")) else d)
    assert built.q3("verify", str(bad)) == 6
    err = capsys.readouterr().err
    assert "sbom failed: llama.cpp is b9999" in err


def test_package_refuses_a_tree_without_a_license(proj, capsys, tmp_path):
    assert proj.q3("make", "--target", "host") == 0
    capsys.readouterr()
    assert proj.q3("package", "--target", "host", "--out", str(tmp_path)) == 5
    assert "the synced tree has no license file" in capsys.readouterr().err


def test_package_refuses_a_stale_stage_and_a_bad_epoch(built, capsys, tmp_path, monkeypatch):
    monkeypatch.setenv("SOURCE_DATE_EPOCH", "yesterday")
    assert built.q3("package", "--target", "host", "--out", str(tmp_path)) == 2
    assert "SOURCE_DATE_EPOCH='yesterday': expected a non-negative integer" in capsys.readouterr().err
    monkeypatch.delenv("SOURCE_DATE_EPOCH")
    (built.root / "recipes" / "host.yaml").write_text(
        (built.root / "recipes" / "host.yaml").read_text().replace("BUILD_SHARED_LIBS: false",
                                                                   "BUILD_SHARED_LIBS: false\n    EXTRA: 1"))
    assert built.q3("package", "--target", "host", "--out", str(tmp_path)) == 4
    err = capsys.readouterr().err
    assert "was built from other inputs than the current plan" in err and "q3build make --target host" in err


# the speech service's encoders, as recipes/host.yaml names them
LIBRARIES = """\
libraries:
  mp3:
    purpose: mp3
    cmake: Q3_SPEECH_MP3
    headers: [lame/lame.h]
    libs: [mp3lame]
    apt: [libmp3lame-dev]
    licenses:
      mp3lame: {component: LAME, spdx: LGPL-2.0-or-later}
  opus:
    purpose: opus
    cmake: Q3_SPEECH_OPUS
    headers: [opus/opus.h, ogg/ogg.h]
    libs: [opus, ogg]
    apt: [libopus-dev, libogg-dev]
    licenses:
      opus: {component: libopus, spdx: BSD-3-Clause}
      ogg: {component: libogg, spdx: BSD-3-Clause}
"""
CODECS = {"mp3lame": ("libmp3lame-dev", "lame", "3.100-6", b"LAME copyright (fake): LGPL-2+\n"),
          "opus": ("libopus-dev", "opus", "1.3.1-3", b"Opus copyright (fake): BSD-3-clause\n"),
          "ogg": ("libogg-dev", "libogg", "1.3.5-3", b"Ogg copyright (fake): BSD-3-clause\n")}


@pytest.fixture
def built_codecs(proj, capsys, tmp_path, monkeypatch):
    """The synthetic build with the encoders found in a stand-in for this machine laid out as the Debian
    -dev packages and dpkg leave it (the fake upstream does not link them; the plan's switches are ON)."""
    from q3build.toolchains import libraries
    root = tmp_path / "machine"
    status = []
    for lib, (pkg, source, version, text) in CODECS.items():
        for f in (f"usr/lib/lib{lib}.a", f"usr/share/doc/{pkg}/copyright"):
            (root / f).parent.mkdir(parents=True, exist_ok=True)
        (root / f"usr/lib/lib{lib}.a").write_bytes(b"!<arch>\n")
        (root / f"usr/share/doc/{pkg}/copyright").write_bytes(text)
        (root / "var/lib/dpkg/info").mkdir(parents=True, exist_ok=True)
        (root / f"var/lib/dpkg/info/{pkg}:amd64.list").write_text(f"/usr/lib/lib{lib}.a\n")
        status.append(f"Package: {pkg}\nStatus: install ok installed\nArchitecture: amd64\nSource: {source}\n"
                      f"Version: {version}\n")
    (root / "var/lib/dpkg/status").write_text("\n".join(status))
    for h in ("lame/lame.h", "opus/opus.h", "ogg/ogg.h"):
        (root / "usr/include" / h).parent.mkdir(parents=True, exist_ok=True)
        (root / "usr/include" / h).write_text("")
    real = libraries.search_dirs
    monkeypatch.setattr(libraries, "search_dirs", lambda target, r=None: real(target, r or str(root)))
    (proj.root / "recipes" / "host.yaml").write_text((proj.root / "recipes" / "host.yaml").read_text() + LIBRARIES)
    (proj.root / "patches" / "overlay" / "LICENSE").write_text("MIT License (fake upstream)\n")
    # a vendored library with its licence next to it, as llama.cpp's vendor/cpp-httplib/LICENSE
    (proj.root / "patches" / "overlay" / "vendor" / "fakehttp").mkdir(parents=True)
    (proj.root / "patches" / "overlay" / "vendor" / "fakehttp" / "LICENSE").write_text("MIT (fakehttp)\n")
    assert proj.q3("sync") == 0
    assert proj.q3("make", "--target", "host") == 0
    capsys.readouterr()
    return proj


def licence_records(res):
    _, files = members(res["archive"])
    top = res["archive"].split("/")[-1][:-len(".tar.gz")]
    man = json.loads(files[f"{top}/manifest.json"])
    bom = json.loads(files[f"{top}/sbom.cdx.json"])
    return ({n[len(top) + 1:]: d for n, d in files.items()}, {c["name"]: c for c in man["third_party"]},
            {c["bom-ref"]: c for c in bom["components"] if c["type"] == "library"})


def test_an_archive_with_the_codecs_carries_their_licences(built_codecs, capsys, tmp_path):
    res = package(built_codecs, capsys, tmp_path / "out")
    files, man, bom = licence_records(res)
    assert sorted(man) == ["LAME", "libogg", "libopus", "llama.cpp"]
    for lib, name, spdx in (("mp3lame", "LAME", "LGPL-2.0-or-later"), ("opus", "libopus", "BSD-3-Clause"),
                            ("ogg", "libogg", "BSD-3-Clause")):
        pkg, _, version, text = CODECS[lib]
        path = f"share/licenses/{name}/copyright"
        assert files[path] == text
        c = man[name]
        assert (c["version"], c["license"], c["linkage"], c["library"], c["archive"]) == (
            version, spdx, "static", lib, f"sysroot:usr/lib/lib{lib}.a")
        assert c["license_files"] == [{"path": path, "sha256": hashlib.sha256(text).hexdigest(),
                                       "source": f"sysroot:usr/share/doc/{pkg}/copyright"}]
        b = bom[f"lib:{lib}"]
        assert (b["name"], b["version"], b["licenses"]) == (name, version, [{"license": {"id": spdx}}])
        assert b["purl"] == f"pkg:deb/debian/{pkg}@{version}?arch=amd64"
        props = {(p["name"], p["value"]) for p in b["properties"]}
        assert {("q3build:linkage", "static"), ("q3build:license-file", path)} <= props
    assert man["llama.cpp"]["license"] == "MIT"
    assert [(t["path"], t["source"].split(":", 1)[1]) for t in man["llama.cpp"]["license_files"]] == [
        ("share/licenses/llama.cpp/LICENSE", "LICENSE"),
        ("share/licenses/llama.cpp/vendor/fakehttp/LICENSE", "vendor/fakehttp/LICENSE")]
    assert files["share/licenses/llama.cpp/vendor/fakehttp/LICENSE"] == b"MIT (fakehttp)\n"
    assert built_codecs.q3("verify", res["archive"], "--json") == 0
    checks = {c["name"]: c for c in json.loads(capsys.readouterr().out)["checks"]}
    assert checks["licenses"]["status"] == "ok"
    assert "LAME 3.100-6 LGPL-2.0-or-later static" in checks["licenses"]["detail"]


def test_an_archive_without_the_codecs_lists_none(built, capsys, tmp_path):
    res = package(built, capsys, tmp_path / "out")
    files, man, bom = licence_records(res)
    assert sorted(man) == ["llama.cpp"] and sorted(bom) == ["llama.cpp"]
    assert sorted(p for p in files if p.startswith("share/licenses/")) == ["share/licenses/llama.cpp/LICENSE"]


@pytest.mark.parametrize("how", ["removed", "altered"])
def test_verify_names_a_removed_or_altered_licence_text(built_codecs, capsys, tmp_path, how):
    res = package(built_codecs, capsys, tmp_path / "out")
    bad = tmp_path / "bad.tar.gz"
    target = "/share/licenses/libopus/copyright"
    with tarfile.open(res["archive"]) as tf, open(bad, "wb") as raw, \
            gzip.GzipFile(fileobj=raw, mode="wb", mtime=0) as gz, tarfile.open(fileobj=gz, mode="w") as out:
        for m in tf.getmembers():
            data = tf.extractfile(m).read() if m.isfile() else None
            if m.name.endswith(target):
                if how == "removed":
                    continue
                data = data.replace(b"BSD-3-clause", b"proprietary")
                m.size = len(data)
            out.addfile(m, io.BytesIO(data) if data is not None else None)
    assert built_codecs.q3("verify", str(bad)) == 6
    lines = [ln for ln in capsys.readouterr().err.splitlines() if "licenses failed" in ln]
    why = "missing from the archive" if how == "removed" else "differs from the recorded sha256"
    assert len(lines) == 1
    assert f"licenses failed: share/licenses/libopus/copyright: licence text of libopus (BSD-3-Clause) {why}" \
        in lines[0]
