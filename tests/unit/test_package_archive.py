"""The deterministic tar.gz writer and verify's sum and SBOM checks, on hand-made content: no processes."""

from __future__ import annotations

import hashlib
import tarfile

from q3build.release import package, verify

FILES = {"bin/tool": (b"\x7fELF tool", True), "share/doc/readme": (b"hello\n", False), "a.txt": (b"a", False)}


def test_write_archive_is_a_function_of_its_inputs(tmp_path):
    a, b = tmp_path / "a.tar.gz", tmp_path / "b.tar.gz"
    package.write_archive(a, "top", FILES, 1234567890)
    package.write_archive(b, "top", dict(reversed(list(FILES.items()))), 1234567890)
    assert a.read_bytes() == b.read_bytes()
    package.write_archive(b, "top", FILES, 1234567891)
    assert a.read_bytes() != b.read_bytes()
    with tarfile.open(a) as tf:
        ms = tf.getmembers()
    assert [m.name for m in ms] == ["top", "top/a.txt", "top/bin", "top/bin/tool", "top/share", "top/share/doc",
                                    "top/share/doc/readme"]
    modes = {m.name: m.mode for m in ms}
    assert modes["top/bin/tool"] == 0o755 and modes["top/a.txt"] == 0o644 and modes["top/bin"] == 0o755
    assert {(m.uid, m.gid, m.uname, m.mtime) for m in ms} == {(0, 0, "root", 1234567890)}


def test_sums_check_names_unlisted_and_changed_files(tmp_path):
    top = tmp_path / "top"
    (top / "bin").mkdir(parents=True)
    (top / "bin" / "tool").write_bytes(b"tool")
    (top / "extra").write_bytes(b"x")
    (top / "SHA256SUMS").write_text(f"{hashlib.sha256(b'other').hexdigest()}  bin/tool\n")
    c = verify._check_sums(top)
    assert c.status == "failed"
    assert "extra: not listed" in c.detail and "bin/tool: sha256 mismatch" in c.detail


def test_sbom_check_names_a_patch_whose_hash_differs():
    man = {"upstream": {"tag": "b1", "commit": "c" * 40}, "patches": [{"file": "0001-x.patch", "sha256": "1" * 64}],
           "files": []}
    bom = {"bomFormat": "CycloneDX", "components": [
        {"bom-ref": "llama.cpp", "version": "b1", "purl": "pkg:github/o/llama.cpp@" + "c" * 40,
         "properties": [{"name": "q3build:commit", "value": "c" * 40}]},
        {"bom-ref": "patch:0001-x.patch", "hashes": [{"alg": "SHA-256", "content": "2" * 64}]}]}
    c = verify._check_sbom(man, bom)
    assert c.status == "failed" and c.detail == "patch 0001-x.patch: sha256 differs"
    bom["components"][1]["hashes"][0]["content"] = "1" * 64
    assert verify._check_sbom(man, bom).status == "ok"
