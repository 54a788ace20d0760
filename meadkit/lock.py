"""One exclusive lock per output folder, shared by every command that writes it (index, prepare, shard, ...)."""
from __future__ import annotations

import fcntl
from pathlib import Path


class OutputBusy(RuntimeError):
    """Another meadkit process holds the output folder's lock."""


class OutputLock:
    """An exclusive, non-blocking lock on a folder (`.meadkit.lock` inside it), released when the process dies,
    so two meadkit runs never write the same folder at once."""

    def __init__(self, folder: Path | str):
        self.path = Path(folder) / ".meadkit.lock"

    def __enter__(self) -> "OutputLock":
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._fh = open(self.path, "w")
        try:
            fcntl.flock(self._fh, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._fh.close()
            raise OutputBusy(f"another meadkit process is writing {self.path.parent}; wait for it to finish") from None
        return self

    def __exit__(self, *exc) -> None:
        fcntl.flock(self._fh, fcntl.LOCK_UN)
        self._fh.close()
