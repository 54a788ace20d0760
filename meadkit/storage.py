"""A destination folder given as a local path or an fsspec URL (`s3://bucket/prefix`, `gs://...`, `memory://...`).

Files appear under their final names only when complete. Locally: a temporary sibling renamed (`meadkit.atomic`).
On object storage, where nothing renames atomically: a local temporary file uploaded to its final name when complete
(one PUT is atomic per object), so a killed run never leaves a partial object under a final name. Credentials are the
filesystem's own business (for s3fs: the AWS environment variables, `AWS_ENDPOINT_URL` for another endpoint); nothing
here writes them anywhere.
"""
from __future__ import annotations

import contextlib
import posixpath
import re
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator, Optional

from meadkit.atomic import TMP_MARK, atomic_path

_SCHEME = re.compile(r"^([A-Za-z][A-Za-z0-9+.-]+)://")


class StorageError(RuntimeError):
    """A destination that cannot be opened or reached (unknown scheme, missing filesystem package, no connection)."""


def is_url(dest: Path | str) -> bool:
    """True if `dest` names a remote place (`scheme://...`, other than `file://`), not a local folder."""
    m = _SCHEME.match(str(dest))
    return bool(m) and m.group(1).lower() not in ("file", "local")


@dataclass(frozen=True)
class Dest:
    """A folder `root` of the fsspec filesystem `fs` (`url` as the user gave it); `local` where that is this machine's disk."""

    fs: object
    root: str
    url: str
    local: bool

    def _path(self, name: str) -> str:
        return posixpath.join(self.root, name)

    def _call(self, what: str, fn, *args, missing_ok: bool = False, **kw):
        """`fn(*args, **kw)`, its failure (no connection, no bucket, no permission) as one StorageError line; with
        `missing_ok`, a FileNotFoundError (nothing there yet) is the caller's."""
        try:
            return fn(*args, **kw)
        except Exception as e:  # the filesystem's own errors (botocore, aiohttp, google-auth) share no base class
            if missing_ok and isinstance(e, FileNotFoundError):
                raise
            raise StorageError(f"cannot {what} {self.url}: {e}") from None

    def size(self, name: str) -> Optional[int]:
        """The size of file `name`, None where there is none."""
        try:
            return self._call("read", self.fs.size, self._path(name), missing_ok=True)
        except FileNotFoundError:
            return None

    def is_empty(self) -> bool:
        """True if the folder holds nothing (or does not exist)."""
        try:
            return not self._call("list", self.fs.ls, self.root, detail=False, missing_ok=True)
        except FileNotFoundError:
            return True

    def glob(self, pattern: str) -> list[str]:
        """Names (relative to the folder) of the files matching `pattern`, sorted."""
        found = self._call("list", self.fs.glob, self._path(pattern))
        base = self.fs._strip_protocol(self.root)
        return sorted(posixpath.relpath(self.fs._strip_protocol(p), base) for p in found)

    def read_text(self, name: str) -> str:
        return self._call("read", self.fs.cat_file, self._path(name)).decode()

    def remove(self, name: str) -> None:
        with contextlib.suppress(FileNotFoundError):
            self._call("write", self.fs.rm_file, self._path(name), missing_ok=True)

    @contextlib.contextmanager
    def written(self, name: str) -> Iterator[Path]:
        """Yield a local temporary path to write; on success it becomes file `name` (renamed or uploaded), on error
        it is deleted."""
        if self.local:
            with atomic_path(Path(self.root) / name) as tmp:
                yield tmp
            return
        with tempfile.TemporaryDirectory(prefix=f"meadkit{TMP_MARK}-") as tmpdir:
            tmp = Path(tmpdir) / posixpath.basename(name)
            yield tmp
            self._call("write", self.fs.put_file, str(tmp), self._path(name))

    def write_text(self, name: str, text: str) -> None:
        with self.written(name) as tmp:
            tmp.write_text(text)

    def url_of(self, name: str) -> str:
        """File `name` as a path (local) or a URL with the filesystem's scheme (remote), for a reader to open."""
        if self.local:
            return str(Path(self.root) / name)
        return self.fs.unstrip_protocol(self._path(name))


def open_dest(dest: Path | str) -> Dest:
    """The Dest of a local path or fsspec URL; an unknown scheme or a missing filesystem package (s3fs, gcsfs) as
    one StorageError line."""
    import fsspec
    from fsspec.implementations.local import LocalFileSystem

    if not is_url(dest):  # a local folder: kept as given (relative stays relative), `file://` dropped
        return Dest(LocalFileSystem(), _SCHEME.sub("", str(dest)), str(dest), True)
    try:
        fs, path = fsspec.core.url_to_fs(str(dest))
    except (ValueError, ImportError) as e:
        raise StorageError(f"cannot open {dest}: {e}") from None
    return Dest(fs, path.rstrip("/"), str(dest), False)
