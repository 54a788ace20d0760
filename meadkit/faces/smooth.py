"""Temporal smoothing of landmark tracks that removes jitter without lagging behind fast motion.

A One-Euro filter (cutoff rises with speed, so fast moves pass and slow jitter is damped) is run
forward over the track and backward over a bounded look-ahead of `lag` frames; their mean has no
lag on steady motion (the forward lag and backward lead cancel). Speeds are in inter-ocular
distances per second, so the same settings fit every face size. Short gaps (no face for up to
`max_gap` frames) are filled by linear interpolation. The settings are FacesConfig's (`min_cutoff`, `beta`,
`d_cutoff`, `mouth_min_cutoff`, `smooth_lag`, `max_gap`).
"""
from __future__ import annotations

from typing import TYPE_CHECKING, Optional

import numpy as np

from meadkit.faces.align import interocular

if TYPE_CHECKING:
    from meadkit.faces.stage import FacesConfig

_BLOCK = 32  # frames whose backward passes are computed together
SPEECH = np.r_[3:14, 48:68]  # lower jaw and lips: they move with speech much faster than the head, smoothed less


def rest_cutoff(config: FacesConfig, n: int) -> np.ndarray:
    """(n, 1) per-point cutoff (Hz) at rest: `min_cutoff`, `mouth_min_cutoff` for the mouth and jaw of 68 points."""
    c = np.full((n, 1), config.min_cutoff)
    if n == 68:
        c[SPEECH] = config.mouth_min_cutoff
    return c


def _alpha(cutoff, dt: float):
    return 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff * dt))


class OneEuro:
    """One-Euro filter state over (N, 2) points; each point gets its own speed-dependent cutoff: `min_cutoff` (Hz)
    at rest (`mouth_min_cutoff` for the mouth and jaw), growing by `beta` per inter-ocular distance/s of speed."""

    def __init__(self, config: FacesConfig):
        self.config = config
        self.x: Optional[np.ndarray] = None
        self.dx: Optional[np.ndarray] = None
        self.cutoff = None  # per-point rest cutoff, set from the first points' count

    def __call__(self, x: np.ndarray, dt: float, scale: float) -> np.ndarray:
        if self.x is None:
            self.x, self.dx = x.astype(np.float64), np.zeros_like(x, np.float64)
            self.cutoff = rest_cutoff(self.config, len(x))
            return self.x
        ad = _alpha(self.config.d_cutoff, dt)
        self.dx = ad * (x - self.x) / dt + (1 - ad) * self.dx
        speed = np.sqrt((self.dx ** 2).sum(-1, keepdims=True)) / max(scale, 1e-6)
        a = _alpha(self.cutoff + self.config.beta * speed, dt)
        self.x = a * x + (1 - a) * self.x
        return self.x


class TrackSmoother:
    """Streaming smoother for a T-frame track: `push` frames in order, then `final(i)` (in order) once frame
    i+lag is pushed; until then `revise(i, ...)` may still change frame i (e.g. a fit found by tracking backwards).

    Holds only (T, 68, 2) arrays (small), never images. Invalid frames are skipped by the filters;
    gaps up to `max_gap` frames are interpolated, longer ones restart the filters and stay NaN. The look-ahead
    `lag` is `smooth_lag`, or `max_gap` where that is longer (a gap is filled only once its end is seen).
    """

    def __init__(self, n_frames: int, fps: float, config: FacesConfig):
        self.dt, self.config = 1.0 / fps, config
        self.lag, self.max_gap = max(config.smooth_lag, config.max_gap), config.max_gap
        self.raw = np.zeros((n_frames, 68, 2))
        self.valid = np.zeros(n_frames, bool)
        self.scale = np.ones(n_frames)
        self.out = np.zeros((n_frames, 68, 2))
        self.out_valid = np.zeros(n_frames, bool)
        self.interpolated = np.zeros(n_frames, bool)
        self.n = 0
        self.n_final = 0  # frames finalised so far (frames >= this may still be revised)
        self._f = OneEuro(config)
        self._last = -1  # last valid frame the forward filter has seen
        self._back = np.zeros((n_frames, 68, 2))  # backward passes computed ahead (a block at a time) ...
        self._back_ok = np.zeros(n_frames, bool)  # ... and which still hold (a revision inside a window clears it)

    def push(self, points: Optional[np.ndarray]) -> None:
        """Add the next frame's raw landmarks (None when no face)."""
        self.n += 1
        self.revise(self.n - 1, points)

    def revise(self, i: int, points: Optional[np.ndarray]) -> None:
        """Replace the raw landmarks of pushed, not yet finalised frame i (None: no face)."""
        if not self.n_final <= i < self.n:
            raise IndexError(f"frame {i} is not open for revision (finalised {self.n_final}, pushed {self.n})")
        self.valid[i] = points is not None
        self._back_ok[max(0, i - self.lag):i + 1] = False
        if points is not None:
            self.raw[i] = points
            self.scale[i] = max(float(interocular(points)), 1.0)

    def _forward(self, i: int) -> np.ndarray:
        if self._last < 0 or i - self._last - 1 > self.max_gap:
            self._f = OneEuro(self.config)
        x = self._f(self.raw[i], self.dt * (i - self._last if self._last >= 0 else 1), self.scale[i])
        self._last = i
        return x

    def _backward(self, i: int) -> np.ndarray:
        """The backward pass at valid frame i, computed with those of the next _BLOCK frames whose windows are
        complete (all pushed): one vectorised run instead of a Python loop of `lag` filter steps per frame."""
        if not self._back_ok[i]:
            ahead = np.arange(i + 1, min(i + _BLOCK, self.n - self.lag))
            frames = np.r_[i, ahead[self.valid[ahead]]]
            self._back[frames] = self._backward_many(frames)
            self._back_ok[frames] = True
        return self._back[i]

    def _backward_many(self, frames: np.ndarray) -> np.ndarray:
        """For each valid frame i of `frames`, a fresh One-Euro filter run from frame min(i + lag, n - 1) down to i
        over the valid frames (restarting after gaps longer than max_gap), all windows stepped together; its
        output at i, (K, 68, 2). The same arithmetic, in the same order, as `OneEuro` run window by window."""
        cfg, raw = self.config, self.raw
        ends = np.minimum(frames + self.lag, self.n - 1)
        x, dx = np.zeros((len(frames), 68, 2)), np.zeros((len(frames), 68, 2))
        prev = np.full(len(frames), -1)  # the frame each window's filter took last; -1 before its first
        cutoff = rest_cutoff(cfg, 68)
        for step in range(self.lag + 1):
            j = ends - step
            active = j >= frames
            active[active] = self.valid[j[active]]
            fresh = active & ((prev < 0) | (prev - j - 1 > self.max_gap))
            x[fresh], dx[fresh] = raw[j[fresh]], 0.0
            c = np.flatnonzero(active & ~fresh)
            if len(c):
                jc, xc = j[c], x[c]
                dt = (self.dt * (prev[c] - jc))[:, None, None]
                ad = _alpha(cfg.d_cutoff, dt)
                dx[c] = dxc = ad * (raw[jc] - xc) / dt + (1 - ad) * dx[c]
                speed = np.sqrt((dxc ** 2).sum(-1, keepdims=True)) / np.maximum(self.scale[jc], 1e-6)[:, None, None]
                a = _alpha(cutoff + cfg.beta * speed, dt)
                x[c] = a * raw[jc] + (1 - a) * xc
            prev[active] = j[active]
        return x

    def final(self, i: int) -> tuple[np.ndarray, bool, bool]:
        """Smoothed landmarks of frame i (frames are finalised in order), whether it has a face, whether they
        were interpolated over a gap."""
        if i != self.n_final:
            raise IndexError(f"frames are finalised in order: expected {self.n_final}, got {i}")
        self.n_final += 1
        if self.valid[i]:
            fwd = self._forward(i)
            self.out[i] = (fwd + self._backward(i)) / 2 if self.lag else fwd
            self.out_valid[i] = True
        else:
            prev = next((j for j in range(i - 1, max(-1, i - 1 - self.max_gap), -1) if self.valid[j]), None)
            nxt = next((j for j in range(i + 1, min(self.n, i + 1 + self.max_gap)) if self.valid[j]), None)
            if prev is not None and nxt is not None and nxt - prev - 1 <= self.max_gap:
                w = (i - prev) / (nxt - prev)
                self.out[i] = (1 - w) * self.out[prev] + w * self.raw[nxt]
                self.out_valid[i] = self.interpolated[i] = True
            else:
                self.out[i] = np.nan
        return self.out[i], bool(self.out_valid[i]), bool(self.interpolated[i])


def jitter(landmarks: np.ndarray, valid: np.ndarray) -> float:
    """Mean size of the per-point second difference |x[t+1] - 2x[t] + x[t-1]| over runs of valid frames,
    in inter-ocular distances: ~0 for smooth motion, grows with frame-to-frame shake."""
    v = valid[:-2] & valid[1:-1] & valid[2:]
    if not v.any():
        return float("nan")
    acc = landmarks[2:] - 2 * landmarks[1:-1] + landmarks[:-2]
    mag = np.sqrt((acc ** 2).sum(-1)).mean(-1) / np.maximum(interocular(landmarks[1:-1]), 1e-6)
    return float(mag[v].mean())
