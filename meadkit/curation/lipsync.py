"""Lip sync of a clip: the lag between its mouth opening (landmarks) and its reference audio's speech envelope.

Both are taken on the clip's grid (frame i at reference time t0_s + i / fps), so a view whose picture is late on
its own audio track (sync aligns views by their audio) shows a positive lag: the mouth opens `lag` frames after
the sound.
"""
from __future__ import annotations

from fractions import Fraction

import numpy as np

from meadkit.faces.align import interocular

#: Lags searched, in frames either way.
MAX_LAG = 15
#: Speech whose envelope spans less than this (dB, 95th over 10th percentile of the frames' RMS) is silence.
SILENCE_DB = 10.0
#: An envelope whose loudest frames stay under this RMS (full scale 1) is silence whatever its span.
SILENCE_RMS = 1e-4
#: Fewest (mouth, envelope) pairs a lag is scored on.
MIN_PAIRS = 10


def mouth_opening(points: np.ndarray) -> np.ndarray:
    """(T,) distance from the nose tip (33) to the lower lip (57) over the inter-ocular distance; NaN where the
    points are. It follows the jaw as the inner-lip gap does, and unlike that gap it still moves on turned views
    (on the synthetic corpus the inner-lip gap gave 3 of 60 clean clips lags of 9-15 frames, this none over 1)."""
    return np.linalg.norm(points[:, 57] - points[:, 33], axis=1) / interocular(points)


def speech_envelope(samples: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction) -> np.ndarray:
    """(n_frames,) RMS of the audio over each frame's span (one frame period centred on its instant; zeros
    outside the audio)."""
    power = np.concatenate([[0.0], np.cumsum(np.asarray(samples, np.float64) ** 2)])
    centres = (t0_s + np.arange(n_frames) * float(Fraction(1) / Fraction(fps))) * sr
    half = sr / float(fps) / 2
    lo = np.clip(np.round(centres - half).astype(np.int64), 0, len(samples))
    hi = np.clip(np.round(centres + half).astype(np.int64), 0, len(samples))
    width = np.maximum(np.round(2 * half), 1)
    return np.sqrt((power[hi] - power[lo]) / width)


def is_silent(envelope: np.ndarray) -> bool:
    """Whether an envelope holds no speech: too quiet, or too flat to tell speech from its pauses."""
    if not len(envelope) or not np.isfinite(envelope).all():
        return True
    lo, hi = np.percentile(envelope, [10, 95])
    return bool(hi < SILENCE_RMS or 20 * np.log10(hi / max(lo, 1e-12)) < SILENCE_DB)


def av_offset(mouth: np.ndarray, envelope: np.ndarray, max_lag: int = MAX_LAG) -> tuple[float, float]:
    """(lag in frames, confidence): the lag k maximising the correlation of mouth[i + k] with envelope[i]
    (positive = the picture is late), refined to a fraction of a frame by a parabola through the peak, and that
    peak correlation; (NaN, NaN) where too few frames have both."""
    lags = np.arange(-max_lag, max_lag + 1)
    scores = np.array([_correlation(mouth, envelope, k) for k in lags])
    if not np.isfinite(scores).any():
        return float("nan"), float("nan")
    j = int(np.nanargmax(scores))
    shift = 0.0
    if 0 < j < len(lags) - 1 and np.isfinite(scores[j - 1 : j + 2]).all():
        a, b, c = scores[j - 1 : j + 2]
        shift = 0.5 * (a - c) / (a - 2 * b + c) if a - 2 * b + c < 0 else 0.0
    return float(lags[j] + shift), float(scores[j])


def _correlation(mouth: np.ndarray, envelope: np.ndarray, lag: int) -> float:
    """Pearson correlation of mouth[i + lag] and envelope[i] over the frames where both are finite."""
    n = len(envelope)
    m = mouth[max(lag, 0) : n + min(lag, 0)]
    e = envelope[max(-lag, 0) : n - max(lag, 0)]
    ok = np.isfinite(m) & np.isfinite(e)
    if ok.sum() < MIN_PAIRS:
        return float("nan")
    m, e = m[ok] - m[ok].mean(), e[ok] - e[ok].mean()
    denom = np.sqrt((m * m).sum() * (e * e).sum())
    return float((m * e).sum() / denom) if denom > 0 else float("nan")
