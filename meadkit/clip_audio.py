"""Clip audio (`[audio]`): a take's window of the reference recording, resampled and written as 16-bit PCM WAV.

The whole reference is resampled once with soxr (VHQ; its one-shot output is delay-compensated, so output sample
k is input time k / rate) and the window is then cut on the output grid: it starts at sample round(t0_s * rate)
(so the cut is off by at most half an output sample, 31 us at 16 kHz, and untouched by the resampler's edges)
and holds exactly round(n_frames / fps * rate) samples (exact rational arithmetic, ties to even). Samples the
window has outside the reference audio (before 0 or past its end) are zeros, and counted.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import numpy as np

from meadkit.atomic import atomic_path
from meadkit.config import check_fields

#: Output formats: 16-bit PCM WAV only.
FORMATS = ("wav",)


@dataclass(frozen=True)
class AudioConfig:
    """Settings of the clip-audio stage (the `[audio]` table of a pipeline TOML)."""

    #: Write `clips/<actor>/<take_id>/audio.wav` per take (off: the stage does nothing, its columns stay null).
    export: bool = False
    #: Output sample rate in Hz.
    rate: int = field(default=16000, metadata={"min": 8000, "max": 192000})
    #: 1: the channel mean; 2: the reference's stereo (its first two channels; a mono reference is duplicated).
    channels: int = field(default=1, metadata={"choices": (1, 2)})
    format: str = field(default="wav", metadata={"choices": FORMATS})

    def __post_init__(self):
        check_fields(self, "audio")


@dataclass(frozen=True)
class ClipAudio:
    """A take's window at the output rate: float32 samples (channels, n) and how many of them are zero padding."""

    samples: np.ndarray
    rate: int
    padded: int


def window_samples(n_frames: int, fps: Fraction | float, rate: int) -> int:
    """Samples in a window of `n_frames` frames at `fps`: round(n_frames / fps * rate), exact, ties to even."""
    return round(Fraction(n_frames) / Fraction(fps) * rate)


def cut_window(audio: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction | float, rate: int) -> ClipAudio:
    """The window [t0_s, t0_s + n_frames / fps) of `audio` ((channels, n) or (n,) at `sr`, time 0 at sample 0)
    resampled to `rate`: (channels, round(n_frames / fps * rate)), zeros where the window leaves the audio."""
    import soxr

    x = np.atleast_2d(np.asarray(audio, dtype=np.float32))
    y = x if sr == rate else soxr.resample(x.T, sr, rate, quality="VHQ").T
    start, n = round(t0_s * rate), window_samples(n_frames, fps, rate)
    out = np.zeros((len(x), n), np.float32)
    lo, hi = max(start, 0), min(start + n, y.shape[1])
    if hi > lo:
        out[:, lo - start : hi - start] = y[:, lo:hi]
    return ClipAudio(out, rate, n - max(hi - lo, 0))


def as_channels(audio: np.ndarray, channels: int) -> np.ndarray:
    """`audio` ((channels, n) or (n,)) as `channels` rows: the channel mean for 1; for 2 the first two channels,
    a single one duplicated."""
    x = np.atleast_2d(audio)
    if channels == 1:
        return x.mean(axis=0, keepdims=True)
    return x[:2] if len(x) >= 2 else np.repeat(x, 2, axis=0)


def pcm16(samples: np.ndarray) -> np.ndarray:
    """Float samples (channels, n) as int16 frames (n, channels), clipped to [-1, 1] first (full scale 32767)."""
    return np.round(np.clip(samples, -1.0, 1.0) * 32767).astype(np.int16).T


def write_wav(clip: ClipAudio, path: Path) -> None:
    """Write a clip's audio as a 16-bit PCM WAV, atomically."""
    import soundfile as sf

    with atomic_path(path) as tmp:
        sf.write(str(tmp), pcm16(clip.samples), clip.rate, subtype="PCM_16", format="WAV")
