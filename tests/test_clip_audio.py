"""Clip audio (`[audio]`): the cut on a click train, the config's refusals, and prepare's audio.wav against the
reference resampled independently (scipy's polyphase filter) and cut at the window's t0."""
from __future__ import annotations

from fractions import Fraction

import numpy as np
import pytest
import soundfile as sf
from click.testing import CliRunner
from scipy.signal import resample_poly

from meadkit.cli import main
from meadkit.clip_audio import cut_window, window_samples
from meadkit.config import ConfigError, load_pipeline
from meadkit.corpus.names import MEAD_FPS
from meadkit.index import source_of
from meadkit.manifest import read_table
from meadkit.media.audio import load_audio
from meadkit.prepare import run_prepare
from meadkit.take import check_stages, stages_until

SR, RATE = 48000, 16000


def _peak(x: np.ndarray) -> float:
    """The sub-sample position of the largest value of `x` (a parabola through it and its neighbours)."""
    i = int(np.argmax(x))
    if 0 < i < len(x) - 1:
        a, b, c = x[i - 1], x[i], x[i + 1]
        return i + 0.5 * (a - c) / (a - 2 * b + c)
    return float(i)


def test_a_click_lands_at_its_16k_sample_within_one():
    clicks = np.arange(0.2, 1.8, 0.1237)  # seconds on the 48 kHz clock, each on a 48 kHz sample
    x = np.zeros(2 * SR, np.float32)
    x[np.round(clicks * SR).astype(int)] = 1.0
    t0, n_frames = 0.1234567, 40
    clip = cut_window(x, SR, t0, n_frames, MEAD_FPS, RATE)
    assert clip.samples.shape == (1, round(Fraction(n_frames) / MEAD_FPS * RATE)) and clip.padded == 0
    inside = [c for c in clicks if t0 + 0.002 < c < t0 + n_frames / MEAD_FPS - 0.002]
    assert len(inside) >= 4
    start = round(t0 * RATE)
    for c in inside:
        want = np.round(c * SR) / SR * RATE - start
        got = _peak(clip.samples[0, int(want) - 8 : int(want) + 9]) + int(want) - 8
        assert abs(got - want) < 1, (c, got, want)


def test_a_window_past_the_audio_is_zero_padded_and_counted():
    x = np.ones((2, SR), np.float32) * 0.5
    clip = cut_window(x, SR, -0.01, 30, 30, RATE)  # [-0.01, 0.99): 160 samples before the audio
    assert clip.samples.shape == (2, RATE) and clip.padded == 160
    assert not clip.samples[:, :160].any() and np.allclose(clip.samples[:, 400:-400], 0.5, atol=1e-3)
    late = cut_window(x, SR, 0.5, 30, 30, RATE)
    assert late.padded == RATE // 2 and not late.samples[:, -RATE // 2 :].any()


def test_the_window_length_is_rounded_exactly():
    assert window_samples(3, Fraction(65521, 2184), RATE) == round(Fraction(3 * 2184 * RATE, 65521))
    assert window_samples(1, 32000, RATE) == 0  # half a sample: ties to even


@pytest.mark.parametrize("override, words", [
    ("audio.rate=0", "audio.rate = 0: must be >= 8000"), ("audio.rate=-16000", "must be >= 8000"),
    ("audio.channels=3", "audio.channels = 3: must be one of 1, 2"), ("audio.format=mp3", "must be one of wav"),
])
def test_a_bad_audio_setting_is_one_line_before_any_work(override, words, tmp_path):
    with pytest.raises(ConfigError, match=words):
        load_pipeline(overrides=[override])
    (tmp_path / "raw").mkdir()
    result = CliRunner().invoke(main, ["prepare", str(tmp_path / "raw"), "-o", str(tmp_path / "out"), "--set", override])
    assert result.exit_code == 2 and "Traceback" not in result.output
    assert [line for line in result.stderr.splitlines() if words in line]
    assert not (tmp_path / "out").exists()


def test_the_audio_stage_sits_after_features_and_needs_the_window():
    assert stages_until("audio") == ("sync", "features", "audio")
    check_stages(("sync", "audio"))
    with pytest.raises(ValueError, match="stage audio needs audio, window"):
        check_stages(("audio",))


@pytest.fixture(scope="module", params=[1, 2], ids=["mono", "stereo"])
def exported(request, tiny_corpus, tmp_path_factory):
    """(OUT, clips, channels) of one neutral take prepared up to the audio stage with audio.export = true."""
    raw, _ = tiny_corpus
    out = tmp_path_factory.mktemp("audio") / "out"
    pipeline = load_pipeline(overrides=["audio.export=true", f"audio.channels={request.param}"])
    summary = run_prepare(raw, out, pipeline, progress=False, stages=stages_until("audio"), shards=False,
                          actor=["M003"], emotion=["neutral"])
    assert summary.takes_total == 1 and set(summary.take_status) == {"ok"}
    return out, read_table(out / "manifests" / "clips.parquet"), request.param


def _reference(out) -> np.ndarray:
    """The take's reference audio (channels, n) at 48 kHz, decoded from RAW as the index found it."""
    rec = read_table(out / "manifests" / "recordings.parquet")
    row = rec[(rec.kind == "audio") & (rec.take_id == "M003_neutral_1_001")].iloc[0].to_dict()
    samples, sr = load_audio(source_of(row), mono=False)
    assert sr == SR
    return samples


def test_prepare_writes_the_take_window_as_16k_pcm(exported):
    out, clips, channels = exported
    assert clips["audio_wav"].nunique() == 1 and set(clips["audio_rate"]) == {RATE}
    row = clips.iloc[0]
    info = sf.info(str(out / row.audio_wav))
    n = round(Fraction(int(row.n_frames)) * Fraction(int(row.fps_den), int(row.fps_num)) * RATE)
    assert (info.samplerate, info.channels, info.subtype, info.frames) == (RATE, channels, "PCM_16", n)
    wav, _ = sf.read(str(out / row.audio_wav), dtype="float64", always_2d=True)
    ref = _reference(out)
    ref = ref.mean(axis=0, keepdims=True) if channels == 1 else ref
    start = round(row.t0_s * RATE)
    assert start >= 0 and int(row.audio_padded) == 0  # the tiny corpus's window lies inside its reference audio
    for ch in range(channels):
        want = resample_poly(ref[ch].astype(np.float64), 1, 3)[start : start + n]
        got = wav[: len(want), ch]
        lags = np.arange(-20, 21)
        xc = [np.dot(got[20:-20], want[20 + k : len(want) - 20 + k]) for k in lags]
        lag = _peak(np.array(xc)) - 20
        assert abs(lag) < 0.1, lag  # measured: -0.0001 samples
        assert np.corrcoef(got, want)[0, 1] > 0.99
    if channels == 2:  # the synthetic reference's right channel is 0.9 x its left, each with its own noise
        ratio = np.dot(wav[:, 1], wav[:, 0]) / np.dot(wav[:, 0], wav[:, 0])
        assert abs(ratio - 0.9) < 0.05 and not np.array_equal(wav[:, 0], wav[:, 1])
