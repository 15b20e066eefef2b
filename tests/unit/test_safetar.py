"""Safe extraction: the same guarantees with PEP 706's filter and without it (Debian 12's python 3.11.2)."""

from __future__ import annotations

import io
import os
import stat
import tarfile

import pytest

from q3build.core import safetar, sources
from q3build.errors import FetchError


# the fallback always runs (hiding the filter); the PEP 706 path where this interpreter has it
@pytest.fixture(params=["fallback"] + (["pep706"] if safetar.have_data_filter() else []))
def mode(request, monkeypatch):
    if request.param == "fallback":
        # hide what Python < 3.11.4 lacks, whatever Python runs the suite
        monkeypatch.delattr(tarfile, "data_filter", raising=False)
        monkeypatch.delattr(tarfile.TarInfo, "replace", raising=False)
        assert not safetar.have_data_filter()
    return request.param


def archive(tmp_path, *entries):
    """entries: (name, kind, extra) with kind file|dir|sym|lnk|chr|fifo."""
    path = tmp_path / "a.tar"
    with tarfile.open(path, "w") as tf:
        for name, kind, extra in entries:
            info = tarfile.TarInfo(name)
            data = b""
            if kind == "file":
                data = extra.get("data", b"x")
                info.size = len(data)
                info.mode = extra.get("mode", 0o644)
            elif kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, extra.get("mode", 0o755)
            elif kind == "sym":
                info.type, info.linkname = tarfile.SYMTYPE, extra["to"]
            elif kind == "lnk":
                info.type, info.linkname = tarfile.LNKTYPE, extra["to"]
            elif kind == "chr":
                info.type, info.devmajor, info.devminor = tarfile.CHRTYPE, 1, 3
            elif kind == "fifo":
                info.type = tarfile.FIFOTYPE
            info.uid, info.gid, info.uname, info.gname = 4242, 4242, "mallory", "mallory"
            tf.addfile(info, io.BytesIO(data) if kind == "file" else None)
    return path


def extract(path, dest):
    with tarfile.open(path) as tf:
        safetar.extract(tf, dest)


def test_a_good_tree_extracts_with_sane_modes(mode, tmp_path):
    path = archive(tmp_path,
                   ("top", "dir", {"mode": 0o777}),
                   ("top/run.sh", "file", {"data": b"#!/bin/sh\n", "mode": 0o4777}),
                   ("top/data.txt", "file", {"data": b"hello", "mode": 0o666}),
                   ("top/link", "sym", {"to": "data.txt"}),
                   ("top/hard", "lnk", {"to": "top/data.txt"}))
    dest = tmp_path / "out"
    extract(path, dest)
    run = dest / "top" / "run.sh"
    assert stat.S_IMODE(run.stat().st_mode) == 0o755          # setuid and group/other write gone
    assert stat.S_IMODE((dest / "top" / "data.txt").stat().st_mode) == 0o644
    assert (dest / "top" / "link").is_symlink() and (dest / "top" / "link").read_bytes() == b"hello"
    assert (dest / "top" / "hard").read_bytes() == b"hello"
    assert not stat.S_IMODE((dest / "top").stat().st_mode) & stat.S_IWOTH
    assert run.stat().st_uid == os.getuid()                  # no ownership from the archive


@pytest.mark.parametrize("entries", [
    [("../evil", "file", {})],
    [("a/../../evil", "file", {})],
    [("dev", "chr", {})],
    [("pipe", "fifo", {})],
    [("abs", "sym", {"to": "/etc/passwd"})],
    [("up", "sym", {"to": "../../etc"})],
    [("hl", "lnk", {"to": "../outside"})],
    # a link that stays inside, then a member written through a link pointing out
    [("d", "dir", {}), ("d/esc", "sym", {"to": ".."}), ("d/esc/../../evil", "file", {})],
], ids=["dotdot", "nested-dotdot", "chardev", "fifo", "abs-symlink", "out-symlink", "out-hardlink",
        "through-link"])
def test_unsafe_members_are_refused_and_nothing_lands_outside(mode, tmp_path, entries):
    path = archive(tmp_path, *entries)
    dest = tmp_path / "out" / "inner"
    with pytest.raises(safetar.UnsafeMember):
        extract(path, dest)
    assert not (tmp_path / "evil").exists() and not (tmp_path / "out" / "evil").exists()
    assert not (tmp_path / "outside").exists()


def test_extract_tree_strips_and_relocates_without_the_filter(mode, tmp_path):
    path = tmp_path / "src.tar.gz"
    with tarfile.open(path, "w:gz") as tf:
        for name, data in [("pkg-1.0/vendor/llama.cpp/CMakeLists.txt", b"project(x)"),
                           ("pkg-1.0/vendor/llama.cpp/tools/a.c", b"int a;"),
                           ("pkg-1.0/setup.py", b"")]:
            info = tarfile.TarInfo(name)
            info.size = len(data)
            tf.addfile(info, io.BytesIO(data))
        link = tarfile.TarInfo("pkg-1.0/vendor/llama.cpp/tools/b.c")
        link.type, link.linkname = tarfile.LNKTYPE, "pkg-1.0/vendor/llama.cpp/tools/a.c"
        tf.addfile(link)
    dest = tmp_path / "tree"
    sources.extract_tree(path, dest, strip=1, subdir="vendor/llama.cpp")
    assert sorted(p.relative_to(dest).as_posix() for p in dest.rglob("*") if p.is_file()) == \
        ["CMakeLists.txt", "tools/a.c", "tools/b.c"]
    assert (dest / "tools" / "b.c").read_bytes() == b"int a;"


def test_extract_tree_names_an_unsafe_member(mode, tmp_path):
    path = tmp_path / "src.tar"
    with tarfile.open(path, "w") as tf:
        info = tarfile.TarInfo("pkg/llama.cpp/dev")
        info.type = tarfile.CHRTYPE
        tf.addfile(info)
    with pytest.raises(FetchError, match="src.tar: refusing unsafe member: .*dev"):
        sources.extract_tree(path, tmp_path / "tree", strip=1, subdir="llama.cpp")


def test_an_absolute_member_lands_inside(mode, tmp_path):
    """As PEP 706's data filter does: leading slashes are stripped, the file stays under dest."""
    path = archive(tmp_path, ("/q3build-safetar-probe/evil", "file", {"data": b"e"}))
    extract(path, tmp_path / "out")
    assert (tmp_path / "out" / "q3build-safetar-probe" / "evil").read_bytes() == b"e"
    assert not os.path.exists("/q3build-safetar-probe")
