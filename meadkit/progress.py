"""Progress of long runs: a tqdm bar with failures, rate and ETA, or periodic log lines when quiet."""
from __future__ import annotations

import sys
import time

from tqdm import tqdm


class Progress:
    """Count finished items (and failures); `enabled=False` logs a line every `log_every` seconds instead."""

    def __init__(self, total: int, unit: str, enabled: bool = True, log_every: float = 60.0):
        self.total, self.unit, self.enabled, self.log_every = total, unit, enabled, log_every
        self.done = self.failed = 0
        self._last = self._start = time.monotonic()
        self._bar = tqdm(total=total, unit=f" {unit}", dynamic_ncols=True, file=sys.stderr) if enabled else None

    def update(self, ok: bool = True) -> None:
        self.done += 1
        self.failed += not ok
        if self._bar is not None:
            self._bar.set_postfix(failed=self.failed, refresh=False)
            self._bar.update(1)
        elif time.monotonic() - self._last >= self.log_every or self.done == self.total:
            self._last = time.monotonic()
            rate = self.done / max(self._last - self._start, 1e-9)
            eta = (self.total - self.done) / rate if rate else float("inf")
            print(f"{self.done}/{self.total} {self.unit}, {self.failed} failed, {rate:.2f}/s, ETA {eta:.0f} s", file=sys.stderr)

    def __enter__(self) -> "Progress":
        return self

    def __exit__(self, *exc) -> None:
        if self._bar is not None:
            self._bar.close()
