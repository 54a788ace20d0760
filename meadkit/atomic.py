"""Write files so that no partial file is ever visible under its final name (temp name, then rename)."""
from __future__ import annotations

import contextlib
import errno
import os
import uuid
from pathlib import Path
from typing import Iterator, Optional

#: Every temporary file meadkit writes carries this marker, so leftovers of a killed run can be found.
TMP_MARK = ".meadkit-tmp"


def tmp_name(final: Path | str) -> Path:
    """A unique temporary sibling of `final` (same folder, so the rename is atomic); keeps the suffix."""
    final = Path(final)
    return final.with_name(f"{final.stem}{TMP_MARK}-{uuid.uuid4().hex[:8]}{final.suffix}")


@contextlib.contextmanager
def atomic_path(final: Path | str) -> Iterator[Path]:
    """Yield a temp path to write; on success fsync and rename it to `final`, on error delete it."""
    final = Path(final)
    final.parent.mkdir(parents=True, exist_ok=True)
    tmp = tmp_name(final)
    try:
        yield tmp
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, final)
    finally:
        if tmp.exists():
            tmp.unlink()


def remove_orphans(root: Path | str) -> int:
    """Delete temp files left under `root` by a killed run; returns how many."""
    n = 0
    for p in Path(root).rglob(f"*{TMP_MARK}*"):
        if p.is_file():
            p.unlink()
            n += 1
    return n


def disk_error(e: OSError, path: Path | str) -> str:
    """One line for an OSError met while writing `path`: for a full disk, the device's free space and the
    path (so a user knows what to clear); for a read-only or unwritable place, which one; else the error."""
    import shutil

    path = Path(path)
    where = next((p for p in (path, *path.parents) if p.exists()), Path("/"))
    if e.errno == errno.ENOSPC:
        free = shutil.disk_usage(where).free / 1e9
        return f"no space left on device while writing {path}: {free:.2f} GB free on {where}"
    if e.errno in (errno.EROFS, errno.EACCES, errno.EPERM):
        return f"cannot write {path}: {os.strerror(e.errno)}"
    return f"cannot write {path}: {e.strerror or e}"


class OutputDiskError(OSError):
    """Writing OUT failed in a way no retry of one take can fix (full disk, read-only, no permission): stop the run."""

    def __str__(self) -> str:
        return str(self.strerror)


#: Errors that only a write can meet: the output's disk is full or read-only.
WRITE_ERRNOS = (errno.ENOSPC, errno.EDQUOT, errno.EROFS)


def output_error(e: BaseException, out: Path | str) -> Optional[OutputDiskError]:
    """`e` as a one-line OutputDiskError if it is a full disk, a read-only file system, or no permission on a path
    under OUT (see `meadkit.atomic.disk_error`); None for any other error (e.g. an unreadable RAW file)."""
    if isinstance(e, OutputDiskError):
        return e
    if not isinstance(e, OSError):
        return None
    where = e.filename or out
    if e.errno in WRITE_ERRNOS or (e.errno in (errno.EACCES, errno.EPERM) and is_within(where, out)):
        return OutputDiskError(e.errno, disk_error(e, where))
    return None


def is_within(path: Path | str, root: Path | str) -> bool:
    """True if `path` (resolved) is the folder `root` (resolved) or lies below it."""
    p, r = os.path.realpath(path), os.path.realpath(root)
    return p == r or p.startswith(r.rstrip(os.sep) + os.sep)
