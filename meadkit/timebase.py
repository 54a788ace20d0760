"""The output frame grid: the rate every per-frame product of a clip is written at (`[timebase] fps`).

A take's synced window holds `n` source frames from reference time t0 (window frame j at t0 + j / source_fps:
sync places each view's first frame within half a frame of t0). At a target rate F the clip has
floor(n x F / source_fps) frames, output frame i at t0 + i / F: its picture is the source frame nearest to
that instant, its landmarks are the tracked landmarks interpolated at that instant, and its feature rows are
centred on it. ffmpeg's `fps` filter picks the same frames when the rates' ratio is exact (30 -> 25); on MEAD's
rates it shows in each slot the last frame whose timestamp rounds to it, one frame later than the nearest on a
fifth of the frames (up to half an output frame late): meadkit keeps the nearest, so pictures, landmarks and
audio rows share the instant within half a source frame (a test measures both).
"""
from __future__ import annotations

import math
from dataclasses import dataclass
from fractions import Fraction
from typing import NewType, Optional

import numpy as np

from meadkit.config import ConfigError

#: A frame rate as written in a pipeline file: "source", an integer, or an exact rational ("30000/1001").
Rate = NewType("Rate", object)
MAX_FPS = 240


def parse_rate(value: object, key: str = "timebase.fps") -> Optional[Fraction]:
    """The exact rate `value` names (None for "source"); ConfigError naming what is allowed otherwise."""
    allowed = f'"source", a positive integer or an exact rational such as "30000/1001" (at most {MAX_FPS})'
    if value == "source":
        return None
    try:
        if isinstance(value, bool) or not isinstance(value, (int, str)):
            raise ValueError
        rate = Fraction(value.strip() if isinstance(value, str) else value)
    except (ValueError, ZeroDivisionError):
        raise ConfigError(f"{key} = {value!r}: must be {allowed}") from None
    if not 0 < rate <= MAX_FPS:
        raise ConfigError(f"{key} = {value!r}: must be {allowed}")
    return rate


@dataclass(frozen=True)
class TimebaseConfig:
    """The `[timebase]` table: `fps` = "source" (each clip keeps its camera's rate), or a target rate."""

    fps: Rate = "source"

    def __post_init__(self) -> None:
        rate = parse_rate(self.fps)  # stored canonically ("25", "30000/1001"), so equal rates hash alike
        object.__setattr__(self, "fps", "source" if rate is None else str(rate))

    def rate(self, source_fps: Fraction) -> Fraction:
        """The clips' rate for a take recorded at `source_fps`."""
        return parse_rate(self.fps) or Fraction(source_fps)


@dataclass(frozen=True)
class Grid:
    """A clip's output frames: `n_frames` at `fps` from reference time `t0_s`, drawn from a window of
    `source_frames` at `source_fps`."""

    t0_s: float
    n_frames: int
    fps: Fraction
    source_frames: int
    source_fps: Fraction

    @property
    def positions(self) -> np.ndarray:
        """(n_frames,) float64: where each output instant falls on the window's source frames (j = frame j)."""
        step = self.source_fps / self.fps
        return np.arange(self.n_frames) * (step.numerator / step.denominator)

    @property
    def nearest(self) -> np.ndarray:
        """(n_frames,) int64: the window frame nearest each output instant (ties to the later frame)."""
        if self.fps == self.source_fps:
            return np.arange(self.n_frames)
        return np.minimum(np.floor(self.positions + 0.5).astype(np.int64), self.source_frames - 1)

    def too_short(self) -> Optional[str]:
        """Why the window holds no output frame, or None."""
        if self.n_frames:
            return None
        return (f"the window's {self.source_frames} frame(s) at {self.source_fps} fps "
                f"({float(self.source_frames / self.source_fps):.4f} s) hold no frame at {self.fps} fps "
                f"(needs {float(1 / self.fps):.4f} s)")


def output_grid(t0_s: float, source_frames: int, source_fps: Fraction, config: TimebaseConfig) -> Grid:
    """The grid of a window of `source_frames` at `source_fps` from t0_s: floor(duration x rate) frames."""
    fps = config.rate(source_fps)
    return Grid(float(t0_s), math.floor(Fraction(source_frames) * fps / Fraction(source_fps)), fps,
                int(source_frames), Fraction(source_fps))


def at_positions(values: np.ndarray, valid: np.ndarray, positions: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Per-frame `values` (T, ...) linearly interpolated at fractional frame `positions`: valid where both frames
    around the instant are (or the instant is a frame that is); invalid instants hold NaN."""
    lo = np.clip(np.floor(positions).astype(np.int64), 0, len(values) - 1)
    hi = np.minimum(lo + 1, len(values) - 1)
    frac = np.clip(positions - lo, 0.0, 1.0).reshape(-1, *([1] * (values.ndim - 1)))
    exact = frac.reshape(-1) == 0
    ok = valid[lo] & (exact | valid[hi])
    a, b = values[lo].astype(np.float64), values[hi].astype(np.float64)
    out = np.where(frac == 0, a, a + (b - a) * frac)
    out[~ok] = np.nan
    return out.astype(values.dtype), ok
