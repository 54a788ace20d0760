"""Audio features: equality with the paper's librosa recipe (mfcc28) and librosa's mel spectrogram (mel80),
frame-exact placement, edge cases, storage."""
from fractions import Fraction

import librosa
import numpy as np
import pytest
import soxr

from meadkit.atomic import TMP_MARK
from meadkit.corpus.names import MEAD_FPS
from meadkit.media.sources import Source
from meadkit.config import ConfigError, load_pipeline
from meadkit.features import (
    FeaturesConfig,
    compute_features,
    feature_row,
    load_features,
    feature_window,
    save_features,
)
from meadkit.media.audio import load_audio, write_audio


def speechlike(sr: int, seconds: float, seed: int = 0) -> np.ndarray:
    """A gliding, amplitude-modulated harmonic tone plus noise (non-stationary, like speech)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.4 * t)) * (1.1 + np.sin(2 * np.pi * 3 * t))
    y += 0.1 * np.sin(2 * np.pi * 1250 * t) * (t % 0.4 < 0.15) + 0.02 * rng.standard_normal(len(t))
    return y.astype(np.float32)


def paper_reference(y: np.ndarray, sr: int) -> np.ndarray:
    """The paper's code, computed directly: librosa MFCC (14) + deltas, hop = int(sr / 30)."""
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=14, n_fft=int(0.025 * sr), hop_length=int(sr / 30))
    return np.concatenate([m, librosa.feature.delta(m)], axis=0).T


def expected_padded(sr, t0_s, n_frames, fps, n_samples, window_s=0.025):
    """Rows whose n_fft window around round(t_i * sr) leaves [0, n_samples), computed with Fractions."""
    n_fft = int(window_s * sr)
    out = []
    for i in range(n_frames):
        start = round((Fraction(t0_s) + i / Fraction(fps)) * sr) - n_fft // 2
        out.append(start < 0 or start + n_fft > n_samples)
    return np.array(out)


def tone_bursts(sr, seconds, centres_s, freq=1000.0, dur_s=0.010, noise=1e-3, seed=1):
    """Hann-shaped tone bursts centred at `centres_s` over faint noise."""
    rng = np.random.default_rng(seed)
    y = noise * rng.standard_normal(int(seconds * sr))
    half = int(dur_s * sr / 2)
    env = np.hanning(2 * half + 1)
    for c in centres_s:
        k = int(round(c * sr))
        tt = np.arange(k - half, k + half + 1) / sr
        y[k - half : k + half + 1] += 0.5 * env * np.sin(2 * np.pi * freq * tt)
    return y.astype(np.float32)


@pytest.mark.parametrize("sr", [48000, 44100])
def test_offset0_exact30_matches_paper_recipe(sr):
    y = speechlike(sr, 2.3)
    ref = paper_reference(y, sr)
    res = compute_features(y, sr, 0.0, ref.shape[0], Fraction(30), FeaturesConfig())
    assert res.mfcc.shape == ref.shape == (ref.shape[0], 28)
    assert res.mfcc.dtype == np.float32
    assert np.abs(res.mfcc - ref).max() <= 1e-4
    # Row 0 is centred on sample 0, so half its window is the zero padding (librosa's center=True).
    np.testing.assert_array_equal(res.padded, expected_padded(sr, 0.0, ref.shape[0], 30, len(y)))
    assert res.padded[0] and res.recipe == "mead" and res.audio_duration_s == pytest.approx(2.3, abs=1e-4)


def test_normalize_per_frame_is_row_standardised_reference():
    sr = 48000
    y = speechlike(sr, 1.5, seed=3)
    ref = paper_reference(y, sr)
    res = compute_features(y, sr, 0.0, ref.shape[0], Fraction(30), FeaturesConfig(normalize_per_frame=True))
    want = (ref - ref.mean(axis=1, keepdims=True)) / ref.std(axis=1, keepdims=True)
    assert np.abs(res.mfcc - want).max() <= 1e-4
    assert feature_row(res)["normalize_per_frame"] is True


@pytest.mark.parametrize("sr", [48000, 44100])
def test_bursts_land_on_their_rows_with_offset_and_mead_fps(sr):
    t0, n_frames = 0.4137, 90
    rows = [3, 31, 58, 87]
    y = tone_bursts(sr, 3.6, [t0 + float(k / MEAD_FPS) for k in rows])
    res = compute_features(y, sr, t0, n_frames, MEAD_FPS)
    c0 = res.mfcc[:, 0]
    for k in rows:
        near = slice(max(k - 4, 0), min(k + 5, n_frames))
        assert np.argmax(c0[near]) + near.start == k
        # Neighbouring windows (33 ms away, 25 ms long) do not see a 10 ms burst at all.
        assert c0[k] > max(c0[k - 1], c0[k + 1] if k + 1 < n_frames else -np.inf) + 50
    assert not res.padded.any()


def test_rows_follow_the_exact_rational_rate_not_30fps():
    """Clicks 12 ms before late rows' centres: inside the 12.5 ms half-window on the exact grid,
    but 1.5 ms drift by row 3000 (30 vs 65521/2184 fps) would push them out of every window."""
    sr, t0, n_frames = 48000, 0.25, 3050
    rows = [100, 3000]
    y = np.zeros(int(102 * sr), np.float32)
    for k in rows:
        y[round((Fraction(t0) + k / MEAD_FPS - Fraction(12, 1000)) * sr)] = 1.0
    exact = compute_features(y, sr, t0, n_frames, MEAD_FPS).mfcc[:, 0]
    floor = np.median(exact)
    for k in rows:
        assert exact[k] > floor + 100
    assert np.sum(exact > floor + 1) == len(rows)
    assumed30 = compute_features(y, sr, t0, n_frames, Fraction(30)).mfcc[:, 0]
    assert assumed30[100] > floor + 100  # early rows still agree ...
    assert (assumed30[2990:3010] < floor + 1).all()  # ... the late click is missed entirely


def test_window_is_a_slice_of_the_whole_file_computation():
    sr, fps = 48000, MEAD_FPS
    y = speechlike(sr, 3.0, seed=5)
    full = compute_features(y, sr, 0.1, 80, fps)
    part = compute_features(y, sr, 0.1 + float(20 / fps), 40, fps)
    np.testing.assert_allclose(part.mfcc, full.mfcc[20:60], atol=1e-5)


@pytest.mark.parametrize("normalize", [False, True])
def test_silent_audio_is_finite_and_flagged_at_edges(normalize):
    sr, n_frames = 48000, 30
    y = np.zeros(sr, np.float32)
    res = compute_features(y, sr, 0.0, n_frames, MEAD_FPS, FeaturesConfig(normalize_per_frame=normalize))
    assert res.mfcc.shape == (n_frames, 28) and np.isfinite(res.mfcc).all()
    np.testing.assert_array_equal(res.padded, expected_padded(sr, 0.0, n_frames, MEAD_FPS, sr))
    assert res.padded[0] and not res.padded[1:].any()


def test_audio_shorter_than_one_window():
    sr = 48000
    y = speechlike(sr, 500 / sr)  # 500 samples < n_fft = 1200
    res = compute_features(y, sr, 0.0, 12, MEAD_FPS)
    assert res.mfcc.shape == (12, 28) and np.isfinite(res.mfcc).all()
    assert res.padded.all()
    assert feature_row(res)["padded_rows"] == 12


def test_audio_shorter_than_clip_flags_the_uncovered_rows():
    sr, t0, n_frames = 48000, 0.0123, 45
    y = speechlike(sr, 1.0)
    res = compute_features(y, sr, t0, n_frames, MEAD_FPS)
    want = expected_padded(sr, t0, n_frames, MEAD_FPS, len(y))
    np.testing.assert_array_equal(res.padded, want)
    assert want[-15:].all() and not want[1:25].any()
    assert np.isfinite(res.mfcc).all()


def test_stereo_m4a_through_the_real_codec(tmp_path):
    sr, t0, n_frames = 48000, 0.2, 50
    rows = [5, 25, 44]
    left = tone_bursts(sr, 2.0, [t0 + float(k / MEAD_FPS) for k in rows], dur_s=0.012)
    right = 0.01 * np.random.default_rng(2).standard_normal(len(left)).astype(np.float32)
    path = tmp_path / "take.m4a"
    write_audio(str(path), np.stack([left, right]), sr)
    y, got_sr = load_audio(Source(str(path)), mono=True)
    assert got_sr == sr and y.ndim == 1
    res = compute_features(y, got_sr, t0, n_frames, MEAD_FPS)
    assert np.isfinite(res.mfcc).all() and not res.padded.any()
    c0 = res.mfcc[:, 0]
    for k in rows:
        assert np.argmax(c0[k - 4 : k + 5]) + k - 4 == k
    # A (channels, n) array is mixed to mono the same way load_audio does.
    stereo = compute_features(np.stack([left, right]), sr, t0, n_frames, MEAD_FPS)
    mono = compute_features((left + right) / 2, sr, t0, n_frames, MEAD_FPS)
    np.testing.assert_allclose(stereo.mfcc, mono.mfcc, atol=1e-4)


def test_zero_frames_and_bad_config():
    res = compute_features(speechlike(48000, 0.5), 48000, 0.0, 0, MEAD_FPS)
    assert res.mfcc.shape == (0, 28) and res.padded.shape == (0,)
    empty = compute_features(np.zeros(0, np.float32), 48000, 0.0, 4, MEAD_FPS)
    assert empty.padded.all() and np.isfinite(empty.mfcc).all() and empty.audio_duration_s == 0.0
    with pytest.raises(ValueError, match="features.recipe = 'mfcc40': must be one of mead"):
        FeaturesConfig(recipe="mfcc40")
    with pytest.raises(ValueError, match="channels"):
        compute_features(np.zeros((2, 2, 10)), 48000, 0.0, 3, MEAD_FPS)
    with pytest.raises(ValueError, match="NaN"):
        compute_features(np.array([0.0, np.nan, 0.1] * 1000), 48000, 0.0, 3, MEAD_FPS)


@pytest.mark.parametrize("n_rows", [1, 5, 15, 29, 30, 31, 64])
def test_mfcc_window_equals_pad15_and_slice(n_rows):
    feats = np.random.default_rng(n_rows).standard_normal((n_rows, 28)).astype(np.float32)
    padded = np.concatenate([np.zeros((15, 28), np.float32), feats, np.zeros((15, 28), np.float32)])
    out = np.full((30, 28), np.nan, np.float32)  # reused buffer with stale contents
    for i in range(n_rows):
        want = padded[i : i + 30]  # original code: rows [i - 15, i + 15)
        np.testing.assert_array_equal(feature_window(feats, i, 30), want)
        assert feature_window(feats, i, 30, out=out) is out
        np.testing.assert_array_equal(out, want)
    with pytest.raises(IndexError):
        feature_window(feats, n_rows, 30)


def test_save_load_roundtrip_without_pickle(tmp_path):
    y = speechlike(48000, 1.0)
    res = compute_features(y, 48000, 0.05, 40, MEAD_FPS, FeaturesConfig(sets=("mfcc28", "mel80")))
    path = save_features(res, tmp_path / "clip" / "features.npz")
    assert not list(tmp_path.rglob(f"*{TMP_MARK}*"))
    with np.load(path, allow_pickle=False) as z:
        assert sorted(z.files) == ["mel80", "mfcc28", "padded"]
    got = load_features(path)
    assert got["mfcc28"].shape == (40, 28) and got["mel80"].shape == (40, 80) and got["mel80"].dtype == np.float32
    for k in ("mfcc28", "mel80"):
        np.testing.assert_array_equal(got[k], res.arrays[k])
    np.testing.assert_array_equal(got["padded"], res.padded)
    (tmp_path / "bad.npz").write_bytes(b"not an npz")
    with pytest.raises(ValueError, match="not a meadkit features.npz"):
        load_features(tmp_path / "bad.npz")
    np.savez(tmp_path / "old.npz", mfcc=res.mfcc, padded=res.padded)  # the former mfcc.npz
    with pytest.raises(ValueError, match="holds \\['mfcc', 'padded'\\]"):
        load_features(tmp_path / "old.npz")


def test_feature_row_columns():
    res = compute_features(speechlike(44100, 0.8), 44100, 0.0, 30, MEAD_FPS)
    row = feature_row(res)
    assert set(row) == {"feature_sets", "recipe", "rows", "padded_rows", "audio_duration_s", "sample_rate",
                        "normalize_per_frame"}
    assert row["rows"] == 30 and row["sample_rate"] == 44100 and row["recipe"] == "mead" and row["feature_sets"] == "mfcc28"
    assert row["padded_rows"] == int(res.padded.sum()) and row["audio_duration_s"] == pytest.approx(0.8, abs=1e-4)
    mel = feature_row(compute_features(speechlike(44100, 0.8), 44100, 0.0, 30, MEAD_FPS, FeaturesConfig(sets=("mel80",))))
    assert mel["feature_sets"] == "mel80" and mel["recipe"] is None


# ---------------------------------------------------------------- mel80

MEL = FeaturesConfig(sets=("mel80",))


def librosa_log_mel(y: np.ndarray, sr: int = 16000) -> np.ndarray:
    """(rows, 80): librosa's own mel spectrogram with EAT's framing (hop = win = 640 at 16 kHz, n_fft 2048), then
    log(max(mel, 1e-5))."""
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2048, hop_length=640, win_length=640, center=True,
                                         power=2.0, n_mels=80)
    return np.log(np.maximum(mel, 1e-5)).T


def test_mel80_equals_librosa_melspectrogram_on_its_hop_grid():
    """At 16 kHz, t0 = 0 and 25 fps the exact centres i * 640 are librosa's hop grid: the rows are librosa's."""
    y = speechlike(16000, 3.0)
    res = compute_features(y, 16000, 0.0, 75, Fraction(25), MEL)
    ref = librosa_log_mel(y)[:75]
    assert res.arrays["mel80"].shape == (75, 80) and res.arrays["mel80"].dtype == np.float32
    assert np.abs(res.arrays["mel80"] - ref).max() <= 1e-4
    # the window (640 samples) of row 0 starts 320 samples before the audio: padded; the last rows lie inside
    assert res.padded[0] and not res.padded[1:].any()


def one_frame_log_mel(y: np.ndarray, centre: int, sr: int = 16000, n_fft: int = 2048, win: int = 640) -> np.ndarray:
    """One row computed directly: n_fft samples centred on sample `centre` (zeros outside y), a periodic Hann of
    `win` samples in the middle, |rfft|^2, librosa's mel filters, log(max(., 1e-5))."""
    frame = np.zeros(n_fft, np.float64)
    lo = centre - n_fft // 2
    a, b = max(lo, 0), min(lo + n_fft, len(y))
    frame[a - lo : b - lo] = y[a:b]
    window = np.zeros(n_fft)
    start = (n_fft - win) // 2
    window[start : start + win] = 0.5 - 0.5 * np.cos(2 * np.pi * np.arange(win) / win)
    power = np.abs(np.fft.rfft(frame * window)) ** 2
    return np.log(np.maximum(librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=80) @ power, 1e-5))


def test_mel80_rows_are_centred_at_the_stated_instant_off_the_hop_grid():
    """At a fractional t0 and 30000/1001 fps, row i is the single frame centred on round((t0 + i / fps) * 16000),
    with one frame's samples (round(16000 / fps) = 534) as its window."""
    y, fps, t0 = speechlike(16000, 2.0, seed=3), Fraction(30000, 1001), Fraction(3137, 10000)
    res = compute_features(y, 16000, float(t0), 40, fps, MEL).arrays["mel80"]
    for i in (0, 1, 17, 39):
        centre = round((t0 + i / fps) * 16000)
        np.testing.assert_allclose(res[i], one_frame_log_mel(y, centre, win=534), atol=1e-4, err_msg=f"row {i}")


def test_mel80_resamples_to_mel_rate_with_soxr():
    """48 kHz audio is resampled (soxr VHQ) to 16 kHz first: the rows equal those of the resampled signal."""
    y = speechlike(48000, 2.0, seed=4)
    res = compute_features(y, 48000, 0.0, 50, Fraction(25), MEL).arrays["mel80"]
    want = compute_features(soxr.resample(y, 48000, 16000, quality="VHQ"), 16000, 0.0, 50, Fraction(25), MEL).arrays["mel80"]
    np.testing.assert_array_equal(res, want)
    both = compute_features(y, 48000, 0.0, 50, Fraction(25), FeaturesConfig(sets=("mfcc28", "mel80")))
    np.testing.assert_array_equal(both.arrays["mel80"], res)
    np.testing.assert_array_equal(both.mfcc, compute_features(y, 48000, 0.0, 50, Fraction(25)).mfcc)


@pytest.mark.parametrize("override, says", [
    ("features.sets=['mfcc28', 'mel40']", "features.sets = 'mel40': must be one of mfcc28, mel80"),
    ("features.sets=[]", "features.sets = []: name one or more of mfcc28, mel80"),
    ("features.sets=['mel80', 'mel80']", "once each"),
    ("features.mel_rate=0", "features.mel_rate = 0: must be >= 1"),
    ("features.mel_win=4096", "features.mel_win = 4096: must be <= features.mel_n_fft (2048)"),
    ("features.mel_fmax=9000.0", "mel_fmax <= mel_rate / 2"),
])
def test_bad_feature_sets_and_mel_settings_are_one_line_errors(override, says):
    with pytest.raises(ConfigError, match=None) as e:
        load_pipeline(overrides=[override])
    assert says in str(e.value) and "\n" not in str(e.value)


def test_mel_window_of_one_frame_must_fit_n_fft():
    """mel_win = 0 is one video frame at mel_rate: at 5 fps that is 3200 samples, more than n_fft = 2048."""
    with pytest.raises(ValueError, match="3200 samples at 16000 Hz, more than mel_n_fft = 2048"):
        compute_features(speechlike(16000, 1.0), 16000, 0.0, 5, Fraction(5), MEL)
