"""Safe tar extraction on every Python q3build supports.

Python 3.12 (and the 3.11.4 / 3.10.12 security releases) have PEP 706's ``data`` filter; older
interpreters — Debian 12's own python3 is 3.11.2 — have neither the filter nor
``TarInfo.replace``. There the same guarantees are applied here, member by member, before
tarfile writes anything: no escaping paths (leading slashes stripped), no links that leave the destination, no
devices or FIFOs, no setuid/setgid/sticky or group/other-write bits, no ownership from the archive.
"""
from __future__ import annotations

import copy
import os
import stat
import tarfile
from pathlib import Path
from typing import Iterable


def have_data_filter() -> bool:
    return hasattr(tarfile, "data_filter")


class UnsafeMember(Exception):
    """A member that the data filter (or its fallback) refuses; the message names it."""


def with_names(member: tarfile.TarInfo, **names: str) -> tarfile.TarInfo:
    """A copy of ``member`` with ``name`` / ``linkname`` replaced (``TarInfo.replace`` where it exists)."""
    if hasattr(member, "replace"):
        return member.replace(deep=False, **names)
    m = copy.copy(member)
    for key, value in names.items():
        setattr(m, key, value)
    return m


def extract(tf: tarfile.TarFile, dest: Path, members: Iterable[tarfile.TarInfo] | None = None) -> None:
    """Extract ``members`` (default: all) of an open archive into ``dest`` with the ``data`` policy."""
    members = list(tf.getmembers() if members is None else members)
    if have_data_filter():
        try:
            tf.extractall(dest, members=members, filter="data")
        except tarfile.FilterError as e:
            raise UnsafeMember(str(e)) from None
        return
    _extract_by_hand(tf, Path(dest), members)


def _extract_by_hand(tf: tarfile.TarFile, dest: Path, members: list[tarfile.TarInfo]) -> None:
    dest.mkdir(parents=True, exist_ok=True)
    root = os.path.realpath(dest)
    for m in members:
        # one member at a time: a check that resolves paths sees the links extracted before it
        safe = sanitized(m, root)
        tf.extract(safe, root, set_attrs=True, numeric_owner=True)


def _inside(root: str, path: str) -> bool:
    return os.path.commonpath([root, path]) == root


def sanitized(m: tarfile.TarInfo, root: str) -> tarfile.TarInfo:
    """The member as the data filter would let it through, or UnsafeMember naming why not."""
    name = m.name.lstrip("/" + os.sep)  # as the data filter: an absolute name is taken as relative
    if not name:
        raise UnsafeMember(f"member {m.name!r} has an empty path")
    target = os.path.realpath(os.path.join(root, name))
    if not _inside(root, target):
        raise UnsafeMember(f"member {name!r} would be extracted to {target!r}, outside the destination")
    if m.ischr() or m.isblk() or m.isfifo() or not (m.isreg() or m.isdir() or m.issym() or m.islnk()):
        raise UnsafeMember(f"member {name!r} is a special file")
    if m.issym():
        if os.path.isabs(m.linkname):
            raise UnsafeMember(f"member {name!r} is a symlink to the absolute path {m.linkname!r}")
        link_target = os.path.realpath(os.path.join(root, os.path.dirname(name), m.linkname))
        if not _inside(root, link_target):
            raise UnsafeMember(f"member {name!r} is a symlink to {link_target!r}, outside the destination")
    if m.islnk():
        if os.path.isabs(m.linkname):
            raise UnsafeMember(f"member {name!r} is a hard link to the absolute path {m.linkname!r}")
        link_target = os.path.realpath(os.path.join(root, m.linkname))
        if not _inside(root, link_target):
            raise UnsafeMember(f"member {name!r} is a hard link to {link_target!r}, outside the destination")
    out = copy.copy(m)
    out.name = name
    mode = m.mode
    if m.isreg() or m.islnk():
        mode &= ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)
        mode |= stat.S_IRUSR | stat.S_IWUSR
        if not mode & stat.S_IXUSR:  # as the data filter: no executable bit for group/other either
            mode &= ~(stat.S_IXGRP | stat.S_IXOTH)
    elif m.isdir():
        mode = (mode & ~(stat.S_ISUID | stat.S_ISGID | stat.S_ISVTX | stat.S_IWGRP | stat.S_IWOTH)) | stat.S_IRWXU
    else:
        mode = 0o777  # symlink: its own mode is meaningless
    out.mode = mode
    # ownership is never taken from the archive: extract as the current user
    out.uid, out.gid, out.uname, out.gname = os.getuid(), os.getgid(), "", ""
    return out
