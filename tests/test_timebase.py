"""Target frame rate (`[timebase] fps`): the output grid, ffmpeg's frame picks, and a prepared clip at 25 fps
against the synthetic truth."""
from __future__ import annotations

import math
from fractions import Fraction

import av
import numpy as np
import pytest

from meadkit.config import ConfigError, load_pipeline
from meadkit.timebase import TimebaseConfig, at_positions, output_grid, parse_rate

MEAD_RATES = (Fraction(65521, 2184), Fraction(1000000, 33333))


def test_rates_parse_exactly_and_bad_ones_are_refused_in_one_line():
    assert TimebaseConfig().fps == "source" and TimebaseConfig(25).fps == "25"
    assert TimebaseConfig("30000/1001").rate(Fraction(30)) == Fraction(30000, 1001)
    assert TimebaseConfig().rate(MEAD_RATES[0]) == MEAD_RATES[0]
    assert load_pipeline(overrides=["timebase.fps=25"]).timebase == load_pipeline(overrides=['timebase.fps="25/1"']).timebase
    for bad in (0, -25, "0/1", "fast", 1000, True, 25.5):
        with pytest.raises(ConfigError, match=r"timebase.fps = .*must be \"source\", a positive integer") as e:
            load_pipeline(overrides=[f"timebase.fps={bad!r}" if not isinstance(bad, str) else f"timebase.fps={bad}"])
        assert "\n" not in str(e.value)
    assert parse_rate("source") is None


@pytest.mark.parametrize("source", MEAD_RATES + (Fraction(30),), ids=["65521/2184", "1000000/33333", "30"])
@pytest.mark.parametrize("target", [Fraction(25), Fraction(30000, 1001), Fraction(24000, 1001)], ids=str)
def test_output_frames_are_the_nearest_and_ffmpeg_fps_picks_the_same_or_the_next(source, target):
    n_src = 301
    grid = output_grid(0.0, n_src, source, TimebaseConfig(str(target)))
    assert grid.n_frames == math.floor(n_src * target / source)
    exact = [min(range(n_src), key=lambda k: (abs(Fraction(k) / source - Fraction(i) / target), -k))
             for i in range(grid.n_frames)]
    np.testing.assert_array_equal(grid.nearest, exact)
    # ffmpeg's fps filter shows in slot i the last frame whose timestamp rounds to it: never earlier than the
    # nearest, at most one frame later (up to half an output frame late); on a whole-number rate ratio, the same
    picks = np.array(_ffmpeg_fps_picks(n_src, source, target)[: grid.n_frames])
    assert len(picks) == grid.n_frames and set(np.unique(picks - grid.nearest)) <= {0, 1}
    if source == 30 and target == 25:
        np.testing.assert_array_equal(picks, grid.nearest)


def _ffmpeg_fps_picks(n: int, source: Fraction, target: Fraction) -> list[int]:
    """Which input frames ffmpeg's `fps` filter (default rounding) outputs for `n` frames at `source`."""
    graph = av.filter.Graph()
    tb = 1 / source
    src = graph.add_buffer(width=32, height=32, format="gray16le", time_base=tb)
    fps, sink = graph.add("fps", f"fps={target.numerator}/{target.denominator}"), graph.add("buffersink")
    src.link_to(fps)
    fps.link_to(sink)
    graph.configure()
    picks = []
    for k in list(range(n)) + [None]:
        if k is None:
            graph.push(None)
        else:
            frame = av.VideoFrame.from_ndarray(np.full((32, 32), k, np.uint16), format="gray16le")
            frame.pts, frame.time_base = k, tb
            graph.push(frame)
        while True:
            try:
                picks.append(int(graph.pull().to_ndarray()[0, 0]))
            except (av.BlockingIOError, av.EOFError):
                break
    return picks


def test_landmarks_are_interpolated_at_the_instant_and_gaps_stay_gaps():
    t = np.arange(10, dtype=np.float64)
    values = np.stack([t, 2 * t], -1)[:, None, :].astype(np.float32)  # one point moving linearly
    valid = np.ones(10, bool)
    valid[6] = False
    out, ok = at_positions(values, valid, np.array([0.0, 2.5, 5.5, 6.0, 7.25, 9.0]))
    np.testing.assert_array_equal(ok, [True, True, False, False, True, True])
    np.testing.assert_allclose(out[ok, 0], [[0, 0], [2.5, 5], [7.25, 14.5], [9, 18]], atol=1e-6)
    assert np.isnan(out[~ok]).all()


@pytest.fixture(scope="module")
def prepared_25(tiny_corpus, tmp_path_factory):
    from meadkit.prepare import run_prepare

    raw, truth = tiny_corpus
    out = tmp_path_factory.mktemp("p25")
    run_prepare(raw, out, load_pipeline(overrides=["timebase.fps=25"]), n_jobs=1, progress=False, shards=False,
                emotion="happy")
    return raw, truth, out


@pytest.mark.slow
def test_a_clip_at_25_fps_is_on_the_grid_and_matches_the_truth_there(prepared_25, tmp_path):
    from meadkit.corpus.synth import truth_landmarks
    from meadkit.faces import process_view
    from meadkit.features import compute_features, load_features
    from meadkit.manifest import read_table
    from meadkit.media.audio import load_audio
    from meadkit.media.probe import probe
    from meadkit.media.sources import Source
    from tests.test_faces_synth import nme

    raw, truth_path, out = prepared_25
    clips = read_table(out / "manifests" / "clips.parquet")
    ok = clips[clips.face_status == "ok"]
    assert len(ok) >= 3
    sync = read_table(out / "manifests" / "sync.parquet").set_index(["take_id", "view"])
    for c in ok.itertuples():
        src = sync.loc[(c.take_id, c.view)]
        source_fps = Fraction(int(src.fps_num), int(src.fps_den))
        assert (c.fps_num, c.fps_den) == (25, 1)
        assert c.n_frames == math.floor(Fraction(int(src.n_frames)) * 25 / source_fps)
        video = probe(Source(str(out / c.crop_video)))
        assert video.fps == 25 and video.n_frames == c.n_frames
        z = np.load(out / c.faces_npz, allow_pickle=False)
        assert z["landmarks_src"].shape == (c.n_frames, 68, 2) and z["transform"].shape == (c.n_frames, 2, 3)
        # against the truth interpolated at each output instant: as accurate as the same view at its own rate
        n_src = int(src.n_frames)
        grid = output_grid(c.t0_s, n_src, source_fps, TimebaseConfig(25))
        truth = truth_landmarks(truth_path, c.take_id, c.view).astype(np.float64)
        at_instant, _ = at_positions(truth, np.ones(len(truth), bool), c.start_frame + grid.positions)
        res = process_view(Source(str(raw / c.source)), c.start_frame, n_src, tmp_path / "v.mp4", tmp_path / "v.npz")
        assert res.status == "ok"
        own = np.load(tmp_path / "v.npz", allow_pickle=False)
        at_source = nme(own["landmarks_src"], truth[c.start_frame:c.start_frame + n_src], own["valid"])
        assert nme(z["landmarks_src"], at_instant, z["valid"]) <= at_source + 0.003
        # an instant is valid where the frames around it are: no valid frame is lost but at a gap's edge
        assert z["valid"].sum() >= np.floor(own["valid"].mean() * c.n_frames) - 1
        crop = z["transform"][:, None, :, :2] @ z["landmarks_src"][..., None]
        np.testing.assert_allclose(crop[..., 0] + z["transform"][:, None, :, 2], z["landmarks_crop"], atol=1e-3)
    take = ok.iloc[0]
    recs = read_table(out / "manifests" / "recordings.parquet")
    ref = recs[(recs.take_id == take.take_id) & (recs.kind == "audio")].relpath.iloc[0]
    audio, sr = load_audio(Source(str(raw / ref)), mono=True)
    mfcc = load_features(out / take.features_npz)["mfcc28"]
    expect = compute_features(audio, sr, take.t0_s, take.n_frames, Fraction(25)).mfcc
    assert mfcc.shape == (take.n_frames, 28)
    np.testing.assert_allclose(mfcc, expect, rtol=1e-5, atol=1e-4)


@pytest.mark.slow
def test_a_window_shorter_than_one_target_frame_is_too_short_with_the_numbers(tiny_corpus, tmp_path):
    from meadkit.manifest import read_table
    from meadkit.prepare import run_prepare

    raw, _ = tiny_corpus
    run_prepare(raw, tmp_path, load_pipeline(overrides=['timebase.fps="1/3"']), n_jobs=1, progress=False,
                shards=False, stages=("sync", "features"), emotion="happy")
    status = read_table(tmp_path / "manifests" / "status.parquet")
    assert (status.status == "failed").all() and len(status) == 2
    assert status.error.str.match(r"too_short: the window's \d+ frame\(s\) at \d+/\d+ fps \([\d.]+ s\) hold no "
                                  r"frame at 1/3 fps \(needs 3.0000 s\)").all()
