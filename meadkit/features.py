"""Audio features: the paper's 28-dim MFCC (14 MFCC + 14 deltas), one row per video frame,
each row centred exactly on its frame's synced timestamp.

Recipe `mead` reproduces the released MEAD code (librosa at the native rate, n_fft = 25 ms,
hop = one video frame) but cuts the analysis frames itself at the exact sample positions
`round(t_i * sr)`, `t_i = t0_s + i / fps`, because one frame of MEAD's 65521/2184 fps is not
a whole number of samples. The spectrogram -> mel -> dB -> DCT -> delta steps are librosa's own
functions, so with an integer hop the result equals `librosa.feature.mfcc` + `delta`.
Differences from the paper's code are listed in `manifests/features.md`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np

from meadkit.atomic import atomic_path
from meadkit.config import ConfigError, check_fields

#: Implemented feature recipes (`FeaturesConfig.recipe`).
RECIPES = ("mead",)


@dataclass(frozen=True)
class FeaturesConfig:
    """Settings of the features stage (the `[features]` table of a pipeline TOML)."""

    recipe: str = field(default="mead", metadata={"choices": RECIPES})
    #: The original code's quirk: each 28-vector normalised by its own mean and std.
    normalize_per_frame: bool = False
    #: Fixed: the shards hold `width` = 2 x 14 = 28 values per frame (the shard set's meta.json records it, and
    #: the Dataset and the a2l network take it from there).
    n_mfcc: int = field(default=14, metadata={"choices": (14,)})
    #: Analysis window length in seconds: n_fft = int(window_s * sr), as the paper's code.
    window_s: float = field(default=0.025, metadata={"min": 0.005, "max": 0.2})
    #: Rows of one training window (1 s): fixed, the paper's; the Dataset reads it from the pipeline config a shard
    #: set records, `generate` from the run's.
    context: int = field(default=30, metadata={"choices": (30,)})
    #: Width of librosa.feature.delta (its default, as the paper's code); odd.
    delta_width: int = field(default=9, metadata={"min": 3})

    def __post_init__(self):
        check_fields(self, "features")
        if self.delta_width % 2 == 0:
            raise ConfigError(f"features.delta_width = {self.delta_width}: must be odd")

    @property
    def width(self) -> int:
        """MFCC values per frame: the coefficients and their deltas."""
        return 2 * self.n_mfcc


@dataclass(frozen=True)
class FeatureResult:
    """MFCC rows of one take on its synced frame grid, and which rows saw zero-padding."""

    mfcc: np.ndarray  # (n_frames, width) float32
    padded: np.ndarray  # (n_frames,) bool: analysis window extends past the audio
    audio_duration_s: float
    sample_rate: int
    recipe: str
    normalize_per_frame: bool


def frame_centres(sr: int, t0_s: float, rows: np.ndarray, fps: Fraction) -> np.ndarray:
    """Sample index on which row i is centred: round((t0_s + i / fps) * sr) (half to even)."""
    fps = Fraction(fps)
    step = sr * fps.denominator / fps.numerator  # samples per video frame, exact to float64
    return np.rint(float(t0_s) * sr + rows * step).astype(np.int64)


def warm_up(config: FeaturesConfig, sr: int = 48000) -> None:
    """Load librosa and its compiled kernels once in this process (~5 s on first use), so that the cost is not
    billed to the first take's features time."""
    compute_features(np.zeros(sr, np.float32), sr, 0.0, 25, Fraction(25), config)


def compute_features(
    audio: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction, config: FeaturesConfig = FeaturesConfig()
) -> FeatureResult:
    """MFCC + deltas with row i centred on reference time t0_s + i / fps (`audio` mono, or (ch, n) mixed down).

    Like the paper's code, the spectrogram's dB floor and the deltas are computed over the
    whole audio (every grid row whose centre lies in it), then rows [0, n_frames) are kept.
    """
    if sr <= 0 or n_frames < 0:
        raise ValueError(f"need sr > 0 and n_frames >= 0, got sr={sr}, n_frames={n_frames}")
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise ValueError(f"audio must be (n,) or (channels, n), got shape {np.shape(audio)}")
    if not np.isfinite(y).all():
        raise ValueError("audio holds NaN or infinite samples")
    n_fft, t0_s = int(config.window_s * sr), float(t0_s)
    lo, hi = _grid_span(len(y), sr, t0_s, n_frames, fps)
    centres = frame_centres(sr, t0_s, np.arange(lo, hi), fps)
    if n_frames == 0:
        mfcc = np.zeros((0, config.width), np.float32)
    else:
        mfcc = _mead_mfcc(y, sr, centres, n_fft, config)[-lo : -lo + n_frames]
    if config.normalize_per_frame:
        mean = mfcc.mean(axis=1, keepdims=True)
        std = mfcc.std(axis=1, keepdims=True)
        mfcc = (mfcc - mean) / np.maximum(std, np.float32(1e-8))
    starts = centres[-lo : -lo + n_frames] - n_fft // 2
    padded = (starts < 0) | (starts + n_fft > len(y))
    return FeatureResult(
        mfcc=np.ascontiguousarray(mfcc, dtype=np.float32),
        padded=padded,
        audio_duration_s=len(y) / sr,
        sample_rate=int(sr),
        recipe=config.recipe,
        normalize_per_frame=config.normalize_per_frame,
    )


def _grid_span(n_samples: int, sr: int, t0_s: float, n_frames: int, fps: Fraction) -> tuple[int, int]:
    """Rows [lo, hi) to compute: the clip's [0, n_frames) plus every row centred within the audio."""
    step = sr * Fraction(fps).denominator / Fraction(fps).numerator
    first = int(np.ceil(-t0_s * sr / step)) - 1
    while frame_centres(sr, t0_s, np.array([first]), fps)[0] < 0:
        first += 1
    last = int(np.floor((n_samples - t0_s * sr) / step)) + 1
    while frame_centres(sr, t0_s, np.array([last]), fps)[0] > n_samples:
        last -= 1
    return min(0, first), max(n_frames, last + 1)


def _mead_mfcc(y: np.ndarray, sr: int, centres: np.ndarray, n_fft: int, config: FeaturesConfig) -> np.ndarray:
    """(rows, width) float32: librosa's mfcc + delta on Hann frames centred at `centres` (zero outside y)."""
    # Zero-pad by n_fft on both sides; a frame starting further out is all zeros either way.
    padded = np.zeros(len(y) + 2 * n_fft, dtype=np.float32)
    padded[n_fft : n_fft + len(y)] = y
    starts = np.clip(centres - n_fft // 2, -n_fft, len(y)) + n_fft
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[starts]
    # As librosa.stft: float64 windowed FFT stored as complex64, then |.|**2 (power spectrogram).
    spec = np.fft.rfft(frames * _hann(n_fft), axis=1).astype(np.complex64)
    power = (np.abs(spec) ** 2).T  # (freq, rows)
    mel = np.einsum("ft,mf->mt", power, _mel_basis(sr, n_fft), optimize=True)
    m = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=config.n_mfcc)
    # librosa's interp mode needs >= width rows; shorter takes (< ~0.3 s) fall back to edge repeat.
    mode = "interp" if m.shape[1] >= config.delta_width else "nearest"
    d = librosa.feature.delta(m, width=config.delta_width, mode=mode)
    return np.concatenate([m, d], axis=0).T.astype(np.float32)


@functools.lru_cache(maxsize=8)
def _hann(n_fft: int) -> np.ndarray:
    """librosa.stft's window: periodic Hann of length n_fft."""
    return librosa.filters.get_window("hann", n_fft, fftbins=True)


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int) -> np.ndarray:
    """librosa.feature.melspectrogram's default filterbank (128 Slaney mel bands)."""
    return librosa.filters.mel(sr=sr, n_fft=n_fft)


def mfcc_window(features: np.ndarray, i: int, context: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows [i - context//2, i - context//2 + context) of `features`, zero rows beyond the clip's
    edges (the original's pad-15-zero-frames-then-slice); written into `out` if given."""
    n = features.shape[0]
    if not 0 <= i < n:
        raise IndexError(f"frame {i} outside a clip of {n} rows")
    lo = i - context // 2
    a, b = max(lo, 0), min(lo + context, n)
    if out is None:
        out = np.zeros((context, features.shape[1]), dtype=features.dtype)
    else:
        out[: a - lo] = 0
        out[b - lo :] = 0
    out[a - lo : b - lo] = features[a:b]
    return out


def save_features(result: FeatureResult, path: Path | str) -> Path:
    """Write `mfcc` (T, D) float32 and `padded` (T,) bool to an .npz, atomically (no pickle)."""
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, mfcc=result.mfcc.astype(np.float32, copy=False), padded=result.padded.astype(bool, copy=False))
    return Path(path)


def load_features(path: Path | str) -> tuple[np.ndarray, np.ndarray]:
    """(mfcc, padded) from an `mfcc.npz`; raises ValueError if the file does not hold them."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            mfcc, padded = z["mfcc"], z["padded"]
    except (OSError, KeyError, ValueError) as e:
        raise ValueError(f"{path}: not a meadkit mfcc.npz ({e})") from None
    if mfcc.ndim != 2 or mfcc.dtype != np.float32 or padded.shape != mfcc.shape[:1] or padded.dtype != bool:
        raise ValueError(f"{path}: unexpected arrays mfcc {mfcc.dtype}{mfcc.shape}, padded {padded.dtype}{padded.shape}")
    return mfcc, padded


def feature_row(result: FeatureResult) -> dict:
    """A summary of the take's features (prepare writes recipe, padded_rows and audio_duration_s in clips.parquet)."""
    return {
        "recipe": result.recipe,
        "rows": int(result.mfcc.shape[0]),
        "padded_rows": int(result.padded.sum()),
        "audio_duration_s": float(result.audio_duration_s),
        "sample_rate": result.sample_rate,
        "normalize_per_frame": result.normalize_per_frame,
    }
