"""Find MEAD recordings in a folder tree and/or per-actor tars, without extracting or trusting archives.

Tar members are only listed (header by header) and become `Source`s that read their byte
range in place; member names are never used as file-system paths. Members that are links,
devices, GNU sparse files, or have absolute/`..` names are reported as `unsafe` (naming their
archive); an archive that breaks off part-way keeps the members listed so far and is reported
`corrupt` with the reason. In a folder tree, a symbolic link is followed only if it resolves
inside RAW; one that points outside becomes an `unsafe` entry and its target is never opened.
"""
from __future__ import annotations

import os
import re
import stat
import tarfile
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Iterable, Iterator, Optional

from meadkit.atomic import is_within
from meadkit.corpus.names import ACTOR_RE
from meadkit.media.sources import Source

_TAR_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz")
_TAR_NAME_RE = re.compile(r"^(?:(?P<actor>[MW]\d{3})(?:[_-]|$))?(?P<kind>video|audio)?[^/]*$", re.IGNORECASE)
_MAGIC = ((b"\x1f\x8b", "gzip"), (b"BZh", "bzip2"), (b"\xfd7zXZ\x00", "xz"))
_TAR_MODE = {None: "r:", "gzip": "r:gz", "bzip2": "r:bz2", "xz": "r:xz"}
_BLOCK = tarfile.BLOCKSIZE


@dataclass(frozen=True)
class Entry:
    """One thing found under RAW: a file, a tar member, or a broken archive.

    `relpath` is the logical MEAD path (`M003/video/front/...`, the same whether the file sits
    in a tree or in a tar); `source` is None when the bytes cannot be read in place. A non-empty
    `status` ('unsafe', 'corrupt', 'compressed') is a verdict reached while listing.
    """

    relpath: str
    source: Optional[Source]
    actor_hint: Optional[str] = None
    kind: Optional[str] = None  # 'archive' for a row about a whole tar, else decided by the name
    size: Optional[int] = None
    status: str = ""
    error: Optional[str] = None


def is_tar_name(name: str) -> bool:
    """True for names of tar archives (plain or compressed)."""
    return name.lower().endswith(_TAR_SUFFIXES)


def discover(raw: Path | str, exclude: Iterable[Path | str] = ()) -> list[Entry]:
    """Every file under `raw` (a folder, or a single tar/media file), tars listed member by member.

    Entries come in a stable order (sorted paths; tar members in archive order). Folders in
    `exclude` (e.g. the output folder when it lies inside RAW) are skipped.
    """
    raw = Path(raw).absolute()
    if raw.is_file():
        return list(_entries_of_file(raw, raw.name, raw.parent.name))
    out: list[Entry] = []
    for path, rel, outside in walk_tree(raw, exclude):
        if outside:
            out.append(Entry(rel, None, status="unsafe", error=f"{outside}; not followed (links out of RAW are never read)"))
        else:
            out.extend(_entries_of_file(path, rel, path.parent.name))
    return out


def walk_tree(raw: Path, exclude: Iterable[Path | str] = ()) -> Iterator[tuple[Path, str, Optional[str]]]:
    """(path, relpath, reason) of every file under the folder `raw` in sorted order, without leaving RAW.

    Symbolic links (to files or folders) are followed only if they resolve inside RAW; a link
    that points outside comes back once with `reason` set ("symbolic link to ... outside RAW")
    and is never followed. Symlink loops and folders in `exclude` are skipped.
    """
    root = os.path.realpath(raw)
    skip = {os.path.realpath(p) for p in exclude}
    seen_dirs: set[str] = set()
    for dirpath, dirnames, filenames in os.walk(raw, followlinks=True):
        real = os.path.realpath(dirpath)
        if real in seen_dirs or real in skip:  # symlink loops, and the output folder
            dirnames[:] = []
            continue
        seen_dirs.add(real)
        links_out = sorted(d for d in dirnames if _outside(Path(dirpath, d), root))
        dirnames[:] = sorted(d for d in dirnames if d not in links_out)
        for name in sorted(filenames + links_out):
            path = Path(dirpath, name)
            rel = path.relative_to(raw).as_posix()
            yield path, rel, (f"symbolic link to {os.readlink(path)!r} outside RAW" if _outside(path, root) else None)


def _outside(path: Path, root: str) -> bool:
    """True for a symbolic link whose target (resolved) lies outside the folder `root`."""
    return path.is_symlink() and not is_within(path, root)


def _entries_of_file(path: Path, rel: str, parent: str) -> Iterator[Entry]:
    try:
        st = path.stat()
    except OSError as e:
        reason = f"broken symbolic link to {os.readlink(path)!r}" if path.is_symlink() else f"cannot stat: {e.strerror}"
        yield Entry(rel, None, status="corrupt", error=reason)
        return
    if not stat.S_ISREG(st.st_mode):
        yield Entry(rel, None, size=None, status="unsafe", error=f"not a regular file ({_mode_name(st.st_mode)}); not read")
        return
    if is_tar_name(path.name):
        yield from list_tar(path, rel, parent)
    else:
        yield Entry(rel, Source(str(path)), size=st.st_size)


def _mode_name(mode: int) -> str:
    for test, name in ((stat.S_ISFIFO, "fifo"), (stat.S_ISSOCK, "socket"), (stat.S_ISCHR, "character device"), (stat.S_ISBLK, "block device")):
        if test(mode):
            return name
    return "special file"


def tar_hints(tar_name: str, parent: str) -> tuple[Optional[str], Optional[str]]:
    """(actor, kind) suggested by a tar's name (`M003_video.tar`, `audio.tar`) or its folder (`M003/`)."""
    stem = tar_name
    for suffix in _TAR_SUFFIXES:
        if stem.lower().endswith(suffix):
            stem = stem[: -len(suffix)]
            break
    m = _TAR_NAME_RE.match(stem)
    actor = m.group("actor") if m and m.group("actor") else None
    kind = m.group("kind").lower() if m and m.group("kind") else None
    if actor is None and ACTOR_RE.match(parent):
        actor = parent
    return (actor.upper() if actor else None), kind


def compression_of(path: Path | str) -> Optional[str]:
    """'gzip'/'bzip2'/'xz' for a compressed file (by its magic bytes), None for a plain one."""
    with open(path, "rb") as f:
        head = f.read(6)
    return next((name for magic, name in _MAGIC if head.startswith(magic)), None)


def unsafe_reason(info: tarfile.TarInfo) -> Optional[str]:
    """Why a tar member must not be read (link, device, absolute or `..` name, sparse), or None."""
    name = info.name
    parts = re.split(r"[/\\]", name)
    if name.startswith(("/", "\\")) or re.match(r"^[A-Za-z]:", name):
        return f"absolute member name {name!r}"
    if ".." in parts:
        return f"member name {name!r} climbs out of the archive ('..')"
    if info.issym():
        return f"symbolic link member {name!r} -> {info.linkname!r}"
    if info.islnk():
        return f"hard link member {name!r} -> {info.linkname!r}"
    if info.isdev():
        return f"device or fifo member {name!r}"
    if info.issparse():
        return f"GNU sparse member {name!r} (its stored bytes leave out the holes, so they are not the file)"
    if not info.isreg():
        return f"member {name!r} is not a regular file (type {info.type!r})"
    return None


def logical_relpath(member: str, actor_hint: Optional[str], kind_hint: Optional[str]) -> str:
    """The MEAD path a tar member would have in an unpacked tree (prefixing actor/kind the tar implies)."""
    parts = [p for p in PurePosixPath(member.replace("\\", "/")).parts if p not in ("", ".")]
    prefix = []
    if actor_hint and not any(ACTOR_RE.match(p) for p in parts[:-1]):
        prefix.append(actor_hint)
    if kind_hint and kind_hint not in parts[:-1]:
        prefix.append(kind_hint)
    return "/".join(prefix + parts)


def list_tar(path: Path, rel: str, parent: str) -> Iterator[Entry]:
    """Entries for the members of one tar (read in place), plus one 'corrupt' entry if it breaks off."""
    actor, kind = tar_hints(path.name, parent)
    size = path.stat().st_size
    try:
        comp = compression_of(path)
    except OSError as e:
        yield Entry(rel, Source(str(path)), kind="archive", size=size, status="corrupt", error=f"cannot read archive: {e.strerror}")
        return
    members = 0
    problem: Optional[str] = None
    try:
        with tarfile.open(path, _TAR_MODE[comp]) as tf:
            while True:
                info = tf.next()
                if info is None:
                    break
                if info.isdir():
                    continue
                members += 1
                yield _member_entry(path, info, actor, kind, comp, size)
                if comp is None and info.isreg() and _stored_end(info, tf) > size:
                    problem = f"archive is truncated: it ends inside member {info.name!r}"
                    break
            if problem is None and comp is None:
                problem = _end_problem(path, tf.offset, size)
    except (tarfile.TarError, OSError, EOFError) as e:
        problem = f"archive breaks off after {members} members: {e}"
    if problem:
        yield Entry(rel, Source(str(path)), actor_hint=actor, kind="archive", size=size, status="corrupt",
                    error=f"{problem} ({members} members listed before it)")


def _stored_end(info: tarfile.TarInfo, tf: tarfile.TarFile) -> int:
    """Byte where a member's stored data ends: for a sparse member the next header (its `size` is the
    expanded size, not what the archive holds), else its data offset plus size."""
    return tf.offset if info.issparse() else info.offset_data + info.size


def _member_entry(path: Path, info: tarfile.TarInfo, actor: Optional[str], kind: Optional[str], comp: Optional[str], size: int) -> Entry:
    reason = unsafe_reason(info)
    if reason:
        return Entry(info.name, None, actor_hint=actor, size=info.size, status="unsafe",
                     error=f"{reason} in archive {str(path)!r}; not read")
    rel = logical_relpath(info.name, actor, kind)
    src = Source(str(path), info.name, info.offset_data, info.size)
    if comp:
        return Entry(rel, src, actor_hint=actor, size=info.size, status="compressed",
                     error=f"inside a {comp}-compressed tar: reading it in place means decompressing from the start "
                           "for every seek (very slow); unpack it or use a plain .tar")
    if info.offset_data + info.size > size:
        return Entry(rel, src, actor_hint=actor, size=info.size, status="corrupt",
                     error=f"member data truncated: the archive ends {info.offset_data + info.size - size} bytes before the member does")
    return Entry(rel, src, actor_hint=actor, size=info.size)


def _end_problem(path: Path, offset: int, size: int) -> Optional[str]:
    """Why listing stopped at `offset` if that is not a proper end-of-archive marker (zero block)."""
    if offset >= size:
        return "archive ends without an end-of-archive marker (truncated?)"
    with open(path, "rb") as f:
        f.seek(offset)
        block = f.read(_BLOCK)
    if len(block) < _BLOCK:
        return f"archive ends with a partial header at byte {offset} (truncated?)"
    if block.count(0) != _BLOCK:
        return f"invalid member header at byte {offset} (bad checksum or garbage): the rest of the archive is unreadable"
    return None
