"""Progress of long runs: a tqdm bar with failures, rate and ETA, periodic log lines when quiet, or nothing."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm

#: How a run shows its progress: a live bar, a log line every `log_every` seconds (and at the end), or not at all.
PROGRESS_MODES = ("bar", "log", "off")


class Progress:
    """Count finished items (and failures) of a run of `total`, shown as `mode` says (see `PROGRESS_MODES`)."""

    def __init__(self, total: int, unit: str, mode: str = "bar", label: str = "", log_every: float = 60.0):
        if mode not in PROGRESS_MODES:
            raise ValueError(f"progress must be one of {PROGRESS_MODES}, not {mode!r}")
        self.total, self.unit, self.mode, self.log_every = total, unit, mode, log_every
        self.done = self.failed = 0
        self._last = self._start = time.monotonic()
        self._bar = None
        if mode == "bar":
            self._bar = tqdm(total=total, desc=label or None, unit=f" {unit}", dynamic_ncols=True, file=sys.stderr)

    def update(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
        elif self.mode == "log" and (time.monotonic() - self._last >= self.log_every or self.done == self.total):
            self._last = time.monotonic()
            rate = self.done / max(self._last - self._start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            print(f"{self.done}/{self.total} {self.unit}, {self.failed} failed, {rate:.2f}/s, ETA {eta:.0f} s", file=sys.stderr)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
