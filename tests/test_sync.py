"""Sync stage: offsets recovered against ground truth, fallbacks, statuses, and the common window."""
from __future__ import annotations

import math

import numpy as np
import pytest

from meadkit.corpus.names import MEAD_FPS, TakeKey
from meadkit.media.sources import Source
from meadkit.manifest import to_table
from meadkit.media.audio import load_audio, write_audio
from meadkit.media.probe import MediaError, probe
from meadkit.media.video import VideoWriter, iter_frames
from meadkit.records import SYNC_SCHEMA
from meadkit.sync import METHODS, STATUSES, SyncConfig, estimate_offset, sync_rows, sync_take

FPS = float(MEAD_FPS)
THIRD_FRAME = 1 / (3 * FPS)


class Performance:
    """A speech-like signal defined in continuous time, so any view can sample it at any offset and rate.

    Voiced syllables (gliding pitch, 20 harmonics with a formant-like tilt) and fricative-like
    bursts (many random high tones), gated by an irregular syllable envelope; silent before `onset_s`.
    """

    def __init__(self, seed: int = 0, onset_s: float = 0.0):
        rng = np.random.default_rng(seed)
        self.onset_s = onset_s
        self.f0, self.f0_dev, self.f0_rate, self.f0_ph = rng.uniform(110, 200), rng.uniform(15, 35), rng.uniform(0.5, 1.3), rng.uniform(0, 6.3)
        self.syl_rate, self.syl_mod, self.syl_ph = rng.uniform(2.8, 4.2), rng.uniform(0.6, 1.2), rng.uniform(0, 6.3)
        self.harm_amp = np.exp(-((np.arange(1, 21) * self.f0 - rng.uniform(500, 900)) ** 2) / (2 * 600.0**2)) + 0.15 / np.arange(1, 21)
        self.noise_f = rng.uniform(1500, 6000, 60)
        self.noise_ph = rng.uniform(0, 2 * np.pi, 60)
        self.fric_rate, self.fric_ph = rng.uniform(1.1, 1.9), rng.uniform(0, 6.3)

    def envelope(self, t: np.ndarray) -> np.ndarray:
        """Mouth opening / loudness in [0, 1] at times t (s)."""
        t = np.asarray(t, dtype=np.float64)
        ph = 2 * np.pi * self.syl_rate * t + self.syl_mod * np.sin(2 * np.pi * 0.37 * t + self.syl_ph)
        e = np.clip(np.sin(ph), 0, None) ** 2 * (0.6 + 0.4 * np.sin(2 * np.pi * 0.23 * t + self.syl_ph) ** 2)
        return np.where(t >= self.onset_s, e, 0.0)

    def audio(self, t: np.ndarray) -> np.ndarray:
        """Pressure samples at times t (s)."""
        t = np.asarray(t, dtype=np.float64)
        phase = 2 * np.pi * (self.f0 * t - self.f0_dev * np.cos(2 * np.pi * self.f0_rate * t + self.f0_ph) / (2 * np.pi * self.f0_rate))
        voiced = sum(a * np.sin(h * phase) for h, a in enumerate(self.harm_amp, start=1))
        fric_gate = np.clip(np.sin(2 * np.pi * self.fric_rate * t + self.fric_ph), 0, None) ** 4
        fric = sum(np.sin(2 * np.pi * f * t + p) for f, p in zip(self.noise_f, self.noise_ph)) / 20
        x = self.envelope(t) * voiced / self.harm_amp.sum() * 2 + fric_gate * fric * 0.3 * (t >= self.onset_s)
        return (0.3 * x).astype(np.float32)


def write_view(path, perf: Performance, offset_s: float, n_frames: int, *, sr=48000, channels=1, gain=1.0,
               snr_db=None, audio=True, x0=40, seed=0):
    """An mp4 whose frame j shows the performance at reference time offset_s + j/fps (a mouth that opens
    with the envelope, a head that drifts) and whose AAC track is the performance shifted by offset_s."""
    rng = np.random.default_rng(seed)
    track = None
    if audio:
        t = np.arange(int(n_frames / FPS * sr)) / sr
        a = perf.audio(t + offset_s) * gain
        if snr_db is not None:
            a = a + rng.normal(0, np.sqrt(np.mean(a**2) / 10 ** (snr_db / 10)), a.shape).astype(np.float32)
        track = (np.stack([a, 0.8 * a]) if channels == 2 else a, sr)
    with VideoWriter(str(path), MEAD_FPS, 160, 90, audio=track) as w:
        for j in range(n_frames):
            tr = offset_s + j / FPS
            img = np.full((90, 160, 3), 60 + 10 * (seed % 5), np.uint8)
            cx = x0 + int(12 * np.sin(2 * np.pi * 0.31 * tr))
            img[20:70, cx : cx + 60] = 170  # face
            mouth = int(2 + 14 * float(perf.envelope(tr)))
            img[50 : 50 + mouth, cx + 18 : cx + 42] = 20
            w.write(img)
    return Source(str(path))


def write_ref(path, perf: Performance, dur_s: float, sr=48000):
    write_audio(str(path), perf.audio(np.arange(int(dur_s * sr)) / sr), sr)
    return Source(str(path))


def views_arg(sources: dict):
    return {k: (s, probe(s)) for k, s in sources.items()}


# ---------------------------------------------------------------- estimate_offset on arrays


@pytest.mark.parametrize("offset", [-0.4637, -0.0211, 0.0, 0.1234567, 0.4981])
@pytest.mark.parametrize("sig_sr,channels,snr_db", [(48000, 1, None), (44100, 2, None), (48000, 1, 0.0)])
def test_estimate_offset_arrays(offset, sig_sr, channels, snr_db):
    perf = Performance(seed=3, onset_s=0.3)  # silence at the start
    ref = perf.audio(np.arange(int(2.0 * 48000)) / 48000)  # reference shorter than the view
    t = np.arange(int(3.0 * sig_sr)) / sig_sr
    sig = perf.audio(t + offset) * 0.1  # quieter
    if snr_db is not None:
        sig = sig + np.random.default_rng(1).normal(0, np.sqrt(np.mean(sig**2) / 10 ** (snr_db / 10)), sig.shape)
    if channels == 2:
        sig = np.stack([sig, 0.5 * sig])
    est, conf = estimate_offset(ref, 48000, sig, sig_sr, SyncConfig())
    assert abs(est - offset) < 0.5e-3
    assert conf > 0.5


def test_estimate_offset_unrelated_is_low_confidence():
    t = np.arange(2 * 48000) / 48000
    _, conf = estimate_offset(Performance(seed=1).audio(t), 48000, Performance(seed=2).audio(t), 48000, SyncConfig())
    assert conf < SyncConfig().min_confidence


@pytest.mark.parametrize("sr", [48000, 44100])
def test_aac_round_trip_is_sample_aligned(tmp_path, sr):
    """PyAV drops AAC's encoder priming on decode: a round trip through .m4a and .mp4 keeps time 0."""
    perf = Performance(seed=5)
    x = perf.audio(np.arange(2 * sr) / sr)
    write_audio(str(tmp_path / "a.m4a"), x, sr)
    with VideoWriter(str(tmp_path / "v.mp4"), MEAD_FPS, 160, 90, audio=(x, sr)) as w:
        for _ in range(10):
            w.write(np.zeros((90, 160, 3), np.uint8))
    for name in ("a.m4a", "v.mp4"):
        y, ysr = load_audio(Source(str(tmp_path / name)))
        assert ysr == sr and len(y) == len(x)
        est, _ = estimate_offset(x, sr, y, ysr, SyncConfig())
        assert abs(est) < 20e-6


# ---------------------------------------------------------------- whole takes written as real files

TRUE = {"front": 0.1234, "left_30": -0.4321, "right_30": 0.4567, "down": -0.2222, "top": 0.3141, "right_60": 0.05}
REF_DUR = 2.4


@pytest.fixture(scope="module")
def take(tmp_path_factory):
    """One take: reference 2.4 s with 0.35 s of silence at the start; views of 3 s (longer than the
    reference) with 48k mono, 44.1k stereo, 0 dB noise, -26 dB gain, no audio, a short view, a corrupt file."""
    d = tmp_path_factory.mktemp("take")
    perf = Performance(seed=11, onset_s=0.35)
    n = 90
    src = {
        "front": write_view(d / "front.mp4", perf, TRUE["front"], n, seed=1),
        "left_30": write_view(d / "left_30.mp4", perf, TRUE["left_30"], n, sr=44100, channels=2, seed=2, x0=30),
        "right_30": write_view(d / "right_30.mp4", perf, TRUE["right_30"], n, snr_db=0.0, seed=3, x0=60),
        "down": write_view(d / "down.mp4", perf, TRUE["down"], n, gain=0.05, seed=4, x0=50),
        "top": write_view(d / "top.mp4", perf, TRUE["top"], n, audio=False, seed=5, x0=45),
        "right_60": write_view(d / "right_60.mp4", perf, TRUE["right_60"], 30, seed=6),
    }
    (d / "left_60.mp4").write_bytes(b"\x00\x00\x00\x18ftypmp42" + bytes(500))
    ref = write_ref(d / "ref.m4a", perf, REF_DUR)
    views = views_arg(src)
    with pytest.raises(MediaError):
        probe(Source(str(d / "left_60.mp4")))
    views["left_60"] = (Source(str(d / "left_60.mp4")), None)
    return views, ref, sync_take(ref, probe(ref), views, SyncConfig())


def test_take_offsets_match_truth(take):
    _, _, ts = take
    audio = [k for k in TRUE if ts.views[k].method == "audio"]
    assert sorted(audio) == ["down", "front", "left_30", "right_30", "right_60"]
    errs = [abs(ts.views[k].offset_s - TRUE[k]) for k in audio]
    assert np.median(errs) < 1e-3 and max(errs) < THIRD_FRAME
    assert all(ts.views[k].confidence >= SyncConfig().min_confidence for k in audio)


def test_view_without_audio_uses_visual_fallback(take):
    _, _, ts = take
    top = ts.views["top"]
    assert top.method == "visual" and top.status == "ok" and "no audio stream" in top.error
    assert abs(top.offset_s - TRUE["top"]) < THIRD_FRAME


def test_statuses_of_short_and_corrupt_views(take):
    _, _, ts = take
    assert ts.views["right_60"].status == "short" and "common span" in ts.views["right_60"].error
    assert ts.views["right_60"].start_frame is None
    assert ts.views["left_60"].status == "unusable" and ts.views["left_60"].error
    assert {k for k, v in ts.views.items() if v.status == "ok"} == {"front", "left_30", "right_30", "down", "top"}


def test_window_is_common_and_inside_every_view_and_the_reference(take):
    views, _, ts = take
    assert ts.status == "ok" and ts.fps == MEAD_FPS
    assert ts.t0_s >= 0 and ts.t0_s + ts.n_frames / FPS <= REF_DUR + 1e-9
    # the others keep the long window: it is limited by the latest start and the reference's end, not by right_60
    assert ts.n_frames == math.floor((REF_DUR - TRUE["right_30"]) * FPS + 1e-6)
    for k in ("front", "left_30", "right_30", "down", "top"):
        v = ts.views[k]
        assert v.n_frames == ts.n_frames and 0 <= v.start_frame and v.start_frame + v.n_frames <= v.video_frames
        got = list(iter_frames(views[k][0], start=v.start_frame, count=v.n_frames))
        assert len(got) == ts.n_frames
        # frame start_frame + i of every view shows reference time t0 + i/fps (to half a frame + sync error)
        shown = TRUE[k] + got[0].time_s
        assert abs(shown - ts.t0_s) <= 0.5 / FPS + THIRD_FRAME


def test_rows_match_schema(take):
    _, _, ts = take
    rows = [r.to_row() for r in sync_rows(TakeKey("M003", "happy", 3, 12), ts)]
    table = to_table(rows, SYNC_SCHEMA)
    assert table.num_rows == 7 and set(table.column("take_id").to_pylist()) == {"M003_happy_3_012"}
    assert all(r["status"] in STATUSES and r["method"] in METHODS + (None,) for r in rows)
    assert all(r["error"] for r in rows if r["status"] != "ok")
    front = next(r for r in rows if r["view"] == "front")
    assert front["offset_frames"] == pytest.approx(front["offset_s"] * FPS)
    assert front["fps_num"] == 65521 and front["fps_den"] == 2184 and front["t0_s"] == ts.t0_s


# ---------------------------------------------------------------- fallbacks and failures


@pytest.fixture(scope="module")
def small_take(tmp_path_factory):
    d = tmp_path_factory.mktemp("small")
    perf = Performance(seed=21, onset_s=0.1)
    src = {
        "front": write_view(d / "front.mp4", perf, 0.2, 60, seed=1),
        "down": write_view(d / "down.mp4", perf, -0.1, 60, seed=2),
        "top": write_view(d / "top.mp4", perf, 0.05, 60, audio=False, seed=3),
        "left_30": write_view(d / "left_30.mp4", Performance(seed=99), 0.0, 60, seed=4),  # someone else's audio
    }
    return views_arg(src), write_ref(d / "ref.m4a", perf, 2.0)


def test_unrelated_audio_is_low_confidence(small_take):
    views, ref = small_take
    ts = sync_take(ref, probe(ref), views, SyncConfig())
    v = ts.views["left_30"]
    assert v.status == "low_confidence" and "confidence" in v.error
    assert ts.views["front"].status == "ok" and ts.views["down"].status == "ok"


def test_median_fallback_is_approximate(small_take):
    views, ref = small_take
    ts = sync_take(ref, probe(ref), views, SyncConfig(fallback="median"))
    top = ts.views["top"]
    assert top.method == "median" and top.status == "approximate" and "median" in top.error
    assert top.offset_s == pytest.approx(np.median([0.2, -0.1]), abs=1e-3)
    assert top.n_frames == ts.n_frames


def test_no_fallback_is_unsynced_not_zero(small_take):
    views, ref = small_take
    ts = sync_take(ref, probe(ref), views, SyncConfig(fallback="none"))
    top = ts.views["top"]
    assert top.status == "unsynced" and top.offset_s is None and top.start_frame is None and top.error


def test_missing_reference_marks_views_unsynced(small_take):
    views, _ = small_take
    ts = sync_take(None, None, views, SyncConfig())
    assert ts.status == "failed" and "reference" in ts.error
    assert all(v.status == "unsynced" and v.offset_s is None for v in ts.views.values())
    rows = [r.to_row() for r in sync_rows(TakeKey("M003", "happy", 3, 12), ts)]
    assert to_table(rows, SYNC_SCHEMA).num_rows == 4


# ---------------------------------------------------------------- the synthetic MEAD corpora (tests/conftest.py)


def _sync_corpus(raw, truth_path):
    """Sync every take of a synthetic corpus from its truth table's paths; yield (take_id, truth rows, TakeSync)."""
    from meadkit.corpus.synth import read_truth

    def maybe_probe(src):
        try:
            return probe(src)
        except MediaError:
            return None

    df = read_truth(truth_path)
    for take_id, g in df[df.kind != "stray"].groupby("take_id"):
        ref_row = g[g.kind == "audio"].iloc[0]
        if not ref_row.written:
            continue
        ref = Source(str(raw / ref_row.relpath))
        vids = g[(g.kind == "video") & g.written]
        views = {r.view: (Source(str(raw / r.relpath)),) for r in vids.itertuples()}
        views = {k: (s[0], maybe_probe(s[0])) for k, s in views.items()}
        yield take_id, vids.set_index("view"), ref_row, sync_take(ref, maybe_probe(ref), views, SyncConfig())


def _check_window(ts, ref_duration_s):
    inside = [v for v in ts.views.values() if v.start_frame is not None]
    assert ts.status == "ok" and inside
    assert ts.t0_s >= 0 and ts.t0_s + ts.n_frames / float(ts.fps) <= ref_duration_s + 1e-9
    for v in inside:
        assert v.n_frames == ts.n_frames
        assert 0 <= v.start_frame and v.start_frame + v.n_frames <= v.video_frames


@pytest.mark.slow
def test_synth_corpus_offsets_and_windows(tiny_corpus):
    raw, truth = tiny_corpus
    errs = []
    for take_id, vids, ref_row, ts in _sync_corpus(raw, truth):
        for view, row in vids.iterrows():
            v = ts.views[view]
            assert v.method == "audio" and v.status == "ok", (take_id, view, v.error)
            errs.append(abs(v.offset_s - row.offset_s))
        _check_window(ts, ref_row.duration_s)
    assert len(errs) >= 20 and np.median(errs) < 1e-3 and max(errs) < THIRD_FRAME


@pytest.mark.slow
def test_synth_defects_corpus(tiny_defects_corpus):
    raw, truth = tiny_defects_corpus
    seen = set()
    for take_id, vids, ref_row, ts in _sync_corpus(raw, truth):
        for view, row in vids.iterrows():
            v = ts.views[view]
            if "truncated" in row.defects:
                assert v.status == "unusable" and v.error and v.start_frame is None
                seen.add("truncated")
            elif not row.has_audio:
                # the synth renders each view's frames on the reference's frame grid, so the
                # pictures themselves are up to half a frame off the audio-truth offset
                assert v.method == "visual" and v.status == "ok", v.error
                assert abs(v.offset_s - row.offset_s) < 0.5 / FPS + THIRD_FRAME
                seen.add("no_audio")
            else:
                assert v.method == "audio" and abs(v.offset_s - row.offset_s) < 1e-3
        if "short_audio" in ref_row.defects:
            seen.add("short_audio")
        _check_window(ts, ref_row.duration_s)
    assert seen == {"truncated", "no_audio", "short_audio"}
