"""Where a recording's bytes live: a plain file, a byte range inside an uncompressed tar, or memory.

Tar members are read in place through a bounded, seekable window on the archive, so a
19 GB `video.tar` is never extracted and member names are never used as paths.
"""
from __future__ import annotations

import io
import os
from dataclasses import dataclass, field
from typing import BinaryIO, Optional


@dataclass(frozen=True)
class Source:
    """A readable recording: `path` is a file, or a tar holding `member` at byte `offset`."""

    path: str
    member: Optional[str] = None
    offset: int = 0
    size: Optional[int] = None

    @property
    def in_archive(self) -> bool:
        return self.member is not None

    def open(self) -> BinaryIO:
        """A seekable binary stream of the recording's bytes."""
        if not self.in_archive:
            return open(self.path, "rb")
        return io.BufferedReader(_Window(self.path, self.offset, self.size or 0), buffer_size=1 << 16)

    def __str__(self) -> str:
        return f"{self.path}:{self.member}" if self.in_archive else self.path


@dataclass(frozen=True)
class MemorySource:
    """A recording's bytes already in memory (e.g. a WebDataset sample's `mp4` member), read wherever a Source is;
    `name` says which recording in messages."""

    data: bytes = field(repr=False)
    name: str = "<memory>"

    def open(self) -> BinaryIO:
        return io.BytesIO(self.data)

    def __str__(self) -> str:
        return self.name


class _Window(io.RawIOBase):
    """Read-only view of bytes [offset, offset+size) of a file."""

    def __init__(self, path: str, offset: int, size: int):
        self._f = open(path, "rb")
        self._start, self._size, self._pos = offset, size, 0

    def readable(self) -> bool:
        return True

    def seekable(self) -> bool:
        return True

    def tell(self) -> int:
        return self._pos

    def seek(self, pos: int, whence: int = os.SEEK_SET) -> int:
        base = {os.SEEK_SET: 0, os.SEEK_CUR: self._pos, os.SEEK_END: self._size}[whence]
        self._pos = max(0, base + pos)
        return self._pos

    def readinto(self, buf) -> int:
        n = max(0, min(len(buf), self._size - self._pos))
        if n == 0:
            return 0
        self._f.seek(self._start + self._pos)
        got = self._f.readinto(memoryview(buf)[:n])
        self._pos += got
        return got

    def close(self) -> None:
        if not self.closed:
            self._f.close()
        super().close()
