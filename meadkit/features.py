"""Audio features: one row per video frame, each row centred exactly on its frame's synced timestamp, in one or
more feature sets (`FEATURE_SETS`): the paper's 28-dim MFCC (`mfcc28`: 14 MFCC + 14 deltas) and an 80-band log mel
spectrogram (`mel80`, the input of EAT-style audio encoders).

`mfcc28` with recipe `mead` reproduces the released MEAD code (librosa at the native rate, n_fft = 25 ms,
hop = one video frame) but cuts the analysis frames itself at the exact sample positions
`round(t_i * sr)`, `t_i = t0_s + i / fps`, because one frame of MEAD's 65521/2184 fps is not
a whole number of samples. The spectrogram -> mel -> dB -> DCT -> delta steps are librosa's own
functions, so with an integer hop the result equals `librosa.feature.mfcc` + `delta`.
`mel80` resamples the audio to `mel_rate` (soxr) and cuts its frames on the same grid: with an integer hop it
equals `librosa.feature.melspectrogram` then `log(max(mel, 1e-5))`. Differences from the papers' code are listed in
`manifests/features.md`.
"""
from __future__ import annotations

import functools
import os
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path

import librosa
import numpy as np
import soxr

from meadkit.atomic import atomic_path
from meadkit.config import ConfigError, check_fields

#: Implemented MFCC recipes (`FeaturesConfig.recipe`).
RECIPES = ("mead",)
#: Implemented feature sets (`FeaturesConfig.sets`), each an array of that name in a take's features.npz.
FEATURE_SETS = ("mfcc28", "mel80")
#: The floor of the mel80 log (EAT's and EDTalk's dynamic-range compression constant).
MEL_FLOOR = 1e-5


@dataclass(frozen=True)
class FeaturesConfig:
    """Settings of the features stage (the `[features]` table of a pipeline TOML): the feature sets to compute and
    each set's parameters (mfcc28: recipe..delta_width, mel80: mel_*)."""

    #: The feature sets every take gets, in this order.
    sets: tuple[str, ...] = field(default=("mfcc28",), metadata={"choices": FEATURE_SETS})
    recipe: str = field(default="mead", metadata={"choices": RECIPES})
    #: The original code's quirk: each 28-vector normalised by its own mean and std.
    normalize_per_frame: bool = False
    #: Fixed: mfcc28 holds 2 x 14 = 28 values per frame (the shard set's meta.json records each set's width, and
    #: the Dataset and the a2l network take it from there).
    n_mfcc: int = field(default=14, metadata={"choices": (14,)})
    #: Analysis window length in seconds: n_fft = int(window_s * sr), as the paper's code.
    window_s: float = field(default=0.025, metadata={"min": 0.005, "max": 0.2})
    #: Rows of one training window: 30 (1 s at the camera's rate, the paper's, which the baseline needs); 25 is 1 s
    #: at `[timebase] fps = 25`. The Dataset reads it from the pipeline config a shard set records, `generate` from
    #: the run's.
    context: int = field(default=30, metadata={"min": 1, "max": 1000})
    #: Width of librosa.feature.delta (its default, as the paper's code); odd.
    delta_width: int = field(default=9, metadata={"min": 3})
    #: mel80: the rate (Hz) the audio is resampled to (soxr, very high quality) before the mel spectrogram.
    mel_rate: int = field(default=16000, metadata={"min": 1})
    #: mel80: FFT length in samples at mel_rate (a shorter window is zero-padded to it, centred, as librosa.stft).
    mel_n_fft: int = field(default=2048, metadata={"min": 16})
    #: mel80: Hann window length in samples; 0 = one video frame, round(mel_rate / fps) (640 at 16 kHz, 25 fps).
    mel_win: int = field(default=0, metadata={"min": 0})
    mel_n_mels: int = field(default=80, metadata={"min": 1})
    mel_fmin: float = field(default=0.0, metadata={"min": 0.0})
    #: mel80: highest filter edge in Hz; 0 = Nyquist (mel_rate / 2).
    mel_fmax: float = field(default=0.0, metadata={"min": 0.0})

    def __post_init__(self):
        check_fields(self, "features")
        if self.delta_width % 2 == 0:
            raise ConfigError(f"features.delta_width = {self.delta_width}: must be odd")
        if not self.sets or len(set(self.sets)) != len(self.sets):
            raise ConfigError(f"features.sets = {list(self.sets)}: name one or more of {', '.join(FEATURE_SETS)}, once each")
        if self.mel_win > self.mel_n_fft:
            raise ConfigError(f"features.mel_win = {self.mel_win}: must be <= features.mel_n_fft ({self.mel_n_fft})")
        if self.mel_fmax > self.mel_rate / 2 or (self.mel_fmax or self.mel_rate / 2) <= self.mel_fmin:
            raise ConfigError(f"features.mel_fmin = {self.mel_fmin}, mel_fmax = {self.mel_fmax}: need "
                              f"mel_fmin < mel_fmax <= mel_rate / 2 = {self.mel_rate / 2} (mel_fmax 0 = mel_rate / 2)")

    @property
    def widths(self) -> dict[str, int]:
        """Values per frame of each configured set, in `sets` order (mfcc28: the coefficients and their deltas)."""
        width = {"mfcc28": 2 * self.n_mfcc, "mel80": self.mel_n_mels}
        return {name: width[name] for name in self.sets}


@dataclass(frozen=True)
class FeatureResult:
    """Each feature set's rows of one take on its synced frame grid, and which rows saw zero-padding."""

    arrays: dict[str, np.ndarray]  # set name -> (n_frames, width) float32
    padded: np.ndarray  # (n_frames,) bool: some set's analysis window extends past the audio
    audio_duration_s: float
    sample_rate: int
    recipe: str
    normalize_per_frame: bool

    @property
    def mfcc(self) -> np.ndarray:
        """The mfcc28 rows (the baseline's input)."""
        return self.arrays["mfcc28"]


def frame_centres(sr: int, t0_s: float, rows: np.ndarray, fps: Fraction) -> np.ndarray:
    """Sample index on which row i is centred: round((t0_s + i / fps) * sr) (half to even)."""
    fps = Fraction(fps)
    step = sr * fps.denominator / fps.numerator  # samples per video frame, exact to float64
    return np.rint(float(t0_s) * sr + rows * step).astype(np.int64)


def warm_up(config: FeaturesConfig, sr: int = 48000) -> None:
    """Load librosa, soxr and their compiled kernels once in this process (~5 s on first use), so that the cost is not
    billed to the first take's features time."""
    compute_features(np.zeros(sr, np.float32), sr, 0.0, 25, Fraction(25), config)


def compute_features(
    audio: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction, config: FeaturesConfig = FeaturesConfig()
) -> FeatureResult:
    """Every configured set with row i centred on reference time t0_s + i / fps (`audio` mono, or (ch, n) mixed
    down); a row is `padded` when any set's analysis window reaches outside the audio."""
    if sr <= 0 or n_frames < 0:
        raise ValueError(f"need sr > 0 and n_frames >= 0, got sr={sr}, n_frames={n_frames}")
    y = np.asarray(audio, dtype=np.float32)
    if y.ndim == 2:
        y = y.mean(axis=0)
    if y.ndim != 1:
        raise ValueError(f"audio must be (n,) or (channels, n), got shape {np.shape(audio)}")
    if not np.isfinite(y).all():
        raise ValueError("audio holds NaN or infinite samples")
    compute = {"mfcc28": _mfcc28, "mel80": _mel80}
    arrays, padded = {}, np.zeros(n_frames, bool)
    for name in config.sets:
        arrays[name], pad = compute[name](y, sr, float(t0_s), n_frames, fps, config)
        padded |= pad
    return FeatureResult(arrays=arrays, padded=padded, audio_duration_s=len(y) / sr, sample_rate=int(sr),
                         recipe=config.recipe, normalize_per_frame=config.normalize_per_frame)


def _outside(starts: np.ndarray, length: int, n_samples: int) -> np.ndarray:
    """Which windows [start, start + length) reach outside [0, n_samples)."""
    return (starts < 0) | (starts + length > n_samples)


def _mfcc28(y: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction, config: FeaturesConfig):
    """(rows, padded) of the MFCC + deltas. Like the paper's code, the spectrogram's dB floor and the deltas are
    computed over the whole audio (every grid row whose centre lies in it), then rows [0, n_frames) are kept."""
    n_fft = int(config.window_s * sr)
    lo, hi = _grid_span(len(y), sr, t0_s, n_frames, fps)
    centres = frame_centres(sr, t0_s, np.arange(lo, hi), fps)
    if n_frames == 0:
        mfcc = np.zeros((0, 2 * config.n_mfcc), np.float32)
    else:
        mfcc = _mead_mfcc(y, sr, centres, n_fft, config)[-lo : -lo + n_frames]
    if config.normalize_per_frame:
        mean = mfcc.mean(axis=1, keepdims=True)
        std = mfcc.std(axis=1, keepdims=True)
        mfcc = (mfcc - mean) / np.maximum(std, np.float32(1e-8))
    padded = _outside(centres[-lo : -lo + n_frames] - n_fft // 2, n_fft, len(y))
    return np.ascontiguousarray(mfcc, dtype=np.float32), padded


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


def _power(y: np.ndarray, centres: np.ndarray, window: np.ndarray) -> np.ndarray:
    """(freq, rows) power spectrogram of len(window)-sample frames centred at `centres` (zero outside y), as
    librosa.stft computes it: float64 windowed FFT stored as complex64, then |.|**2."""
    n_fft = len(window)
    # Zero-pad by n_fft on both sides; a frame starting further out is all zeros either way.
    padded = np.zeros(len(y) + 2 * n_fft, dtype=np.float32)
    padded[n_fft : n_fft + len(y)] = y
    starts = np.clip(centres - n_fft // 2, -n_fft, len(y)) + n_fft
    frames = np.lib.stride_tricks.sliding_window_view(padded, n_fft)[starts]
    spec = np.fft.rfft(frames * window, axis=1).astype(np.complex64)
    return (np.abs(spec) ** 2).T


def _mead_mfcc(y: np.ndarray, sr: int, centres: np.ndarray, n_fft: int, config: FeaturesConfig) -> np.ndarray:
    """(rows, width) float32: librosa's mfcc + delta on Hann frames centred at `centres` (zero outside y)."""
    power = _power(y, centres, _window(n_fft, n_fft))
    mel = np.einsum("ft,mf->mt", power, _mel_basis(sr, n_fft), optimize=True)
    m = librosa.feature.mfcc(S=librosa.power_to_db(mel), n_mfcc=config.n_mfcc)
    # librosa's interp mode needs >= width rows; shorter takes (< ~0.3 s) fall back to edge repeat.
    mode = "interp" if m.shape[1] >= config.delta_width else "nearest"
    d = librosa.feature.delta(m, width=config.delta_width, mode=mode)
    return np.concatenate([m, d], axis=0).T.astype(np.float32)


def mel_window_length(config: FeaturesConfig, fps: Fraction) -> int:
    """The mel80 Hann window in samples at mel_rate: `mel_win`, or one video frame (round(mel_rate / fps)) if 0."""
    win = config.mel_win or round(Fraction(config.mel_rate) / Fraction(fps))
    if not 0 < win <= config.mel_n_fft:
        raise ValueError(f"features.mel_win = 0 gives one frame at {float(fps):.3f} fps = {win} samples at "
                         f"{config.mel_rate} Hz, more than mel_n_fft = {config.mel_n_fft}: set mel_win or mel_n_fft")
    return win


def _mel80(y: np.ndarray, sr: int, t0_s: float, n_frames: int, fps: Fraction, config: FeaturesConfig):
    """(rows, padded) of the log mel spectrogram: `y` resampled to mel_rate (soxr VHQ), a periodic Hann window of
    mel_win samples zero-padded (centred) to mel_n_fft, |STFT|**2, librosa's Slaney mel filterbank, log(max(., 1e-5))."""
    rate, n_fft = config.mel_rate, config.mel_n_fft
    win = mel_window_length(config, fps)
    x = y if sr == rate else soxr.resample(y, sr, rate, quality="VHQ").astype(np.float32)
    centres = frame_centres(rate, t0_s, np.arange(n_frames), fps)
    basis = _mel_basis(rate, n_fft, config.mel_n_mels, config.mel_fmin, config.mel_fmax or None)
    mel = basis @ _power(x, centres, _window(win, n_fft))
    rows = np.log(np.maximum(mel, MEL_FLOOR)).T
    padded = _outside(centres - n_fft // 2 + (n_fft - win) // 2, win, len(x))
    return np.ascontiguousarray(rows, dtype=np.float32), padded


@functools.lru_cache(maxsize=8)
def _window(win: int, n_fft: int) -> np.ndarray:
    """librosa.stft's window: periodic Hann of length win, zero-padded (centred) to n_fft."""
    return librosa.util.pad_center(librosa.filters.get_window("hann", win, fftbins=True), size=n_fft)


@functools.lru_cache(maxsize=8)
def _mel_basis(sr: int, n_fft: int, n_mels: int = 128, fmin: float = 0.0, fmax: float | None = None) -> np.ndarray:
    """librosa.filters.mel (Slaney scale and area norm, its defaults); 128 bands = melspectrogram's default."""
    return librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels, fmin=fmin, fmax=fmax)


def feature_window(features: np.ndarray, i: int, context: int, out: np.ndarray | None = None) -> np.ndarray:
    """Rows [i - context//2, i - context//2 + context) of one set's `features`, zero rows beyond the clip's
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
    """Write one (T, width) float32 array per set (named by the set) and `padded` (T,) bool to an .npz,
    atomically (no pickle)."""
    arrays = {name: a.astype(np.float32, copy=False) for name, a in result.arrays.items()}
    with atomic_path(path) as tmp, open(tmp, "wb") as fh:
        np.savez(fh, **arrays, padded=result.padded.astype(bool, copy=False))
    return Path(path)


def load_features(path: Path | str) -> dict[str, np.ndarray]:
    """{set: (T, width) float32, ..., "padded": (T,) bool} from a `features.npz`; ValueError if it holds anything else."""
    try:
        with np.load(os.fspath(path), allow_pickle=False) as z:
            arrays = {k: z[k] for k in z.files}
    except (OSError, ValueError) as e:
        raise ValueError(f"{path}: not a meadkit features.npz ({e})") from None
    padded = arrays.get("padded")
    sets = [k for k in arrays if k != "padded"]
    if padded is None or padded.dtype != bool or padded.ndim != 1 or not sets or set(sets) - set(FEATURE_SETS):
        raise ValueError(f"{path}: not a meadkit features.npz (holds {sorted(arrays)}; want `padded` and sets of "
                         f"{', '.join(FEATURE_SETS)})")
    for k in sets:
        a = arrays[k]
        if a.ndim != 2 or a.dtype != np.float32 or a.shape[0] != padded.shape[0]:
            raise ValueError(f"{path}: unexpected arrays {k} {a.dtype}{a.shape}, padded {padded.dtype}{padded.shape}")
    return arrays


def feature_row(result: FeatureResult) -> dict:
    """A summary of the take's features (prepare writes feature_sets, the mfcc recipe, padded_rows and
    audio_duration_s in clips.parquet); the recipe is None without mfcc28."""
    return {
        "feature_sets": ",".join(result.arrays),
        "recipe": result.recipe if "mfcc28" in result.arrays else None,
        "rows": int(result.padded.shape[0]),
        "padded_rows": int(result.padded.sum()),
        "audio_duration_s": float(result.audio_duration_s),
        "sample_rate": result.sample_rate,
        "normalize_per_frame": result.normalize_per_frame,
    }
