"""Faces stage: accuracy against known landmarks, smoothing, alignment, bad input, backends."""
from __future__ import annotations

import importlib.util

import numpy as np
import pytest

from meadkit.corpus.names import MEAD_FPS
from meadkit.media.sources import Source
from meadkit.faces import (FaceBackendUnavailable, FacesConfig, NoFaceError, align_image,
                           backend_for, process_view)
from meadkit.faces.align import STABLE, apply, crop_template, crop_transform, interocular, similarity
from meadkit.faces.backends import FAN_WEIGHTS, Detection, FanBackend, HogDetector
from meadkit.faces.smooth import OneEuro, TrackSmoother, jitter
from meadkit.testing.face_clip import per_frame_landmarks, photo, write_clip
from meadkit.faces.track import main_face
from meadkit.manifest import to_table
from meadkit.media.probe import probe
from meadkit.media.video import VideoWriter, iter_frames
from meadkit.records import CLIPS_SCHEMA

N = 60


def nme(pred, truth, ok):
    err = np.sqrt(((pred - truth) ** 2).sum(-1)).mean(-1) / interocular(truth)
    return float(err[ok].mean())


@pytest.fixture(scope="module")
def clips(tmp_path_factory):
    d = tmp_path_factory.mktemp("faceclips")
    return {yaw: (d / f"yaw{yaw}.mp4", write_clip(d / f"yaw{yaw}.mp4", N, yaw, seed=yaw)) for yaw in (0, 30)}


def run(tmp_path, path, start=0, n=N, config=FacesConfig()):
    r = process_view(Source(str(path)), start, n, tmp_path / "v.mp4", tmp_path / "v.faces.npz", config)
    return r, tmp_path / "v.mp4", tmp_path / "v.faces.npz"


@pytest.mark.slow
@pytest.mark.parametrize("yaw", [0, 30])
def test_accuracy_and_jitter_beat_per_frame_detection(clips, tmp_path, yaw):
    path, truth = clips[yaw]
    r, _, arrays = run(tmp_path, path)
    z = np.load(arrays, allow_pickle=False)
    peer, peer_ok = per_frame_landmarks(Source(str(path)), 0, N, backend_for(FacesConfig()))
    assert r.status == "ok" and r.found_ratio >= 0.99 and z["valid"].mean() >= 0.99
    ours = nme(z["landmarks_src"], truth, z["valid"])
    assert ours <= nme(peer, truth, peer_ok) * 1.02 and ours < 0.05
    assert jitter(z["landmarks_src"], z["valid"]) < 0.5 * jitter(peer, peer_ok)
    assert r.detector_calls <= N // FacesConfig().detect_every + 1


@pytest.mark.parametrize("yaw", [60, -60])
def test_faces_squeezed_sideways_are_found_on_widened_frames(tmp_path, yaw):
    """HOG misses a face foreshortened to half its width; the search on a widened copy finds it (the box is
    given in the frame's own pixels)."""
    from meadkit.faces.backends import DlibBackend
    from meadkit.faces.track import Tracker

    truth = write_clip(tmp_path / "side.mp4", 1, yaw, seed=1)[0]
    frame = next(iter(iter_frames(Source(str(tmp_path / "side.mp4"))))).image
    found = Tracker(DlibBackend(HogDetector()), FacesConfig()).search(frame)
    assert found and found[0][1] == FacesConfig().detect_stretch
    box = found[0][0][0].box
    cx, cy = truth[:, 0].mean(), truth[:, 1].mean()
    assert box[0] < cx < box[2] and box[1] < cy < box[3]
    assert not Tracker(DlibBackend(HogDetector()), FacesConfig(detect_stretch=1.0)).search(frame)


def test_outputs_follow_the_contract(clips, tmp_path):
    path, truth = clips[0]
    start, n = 7, 30
    r, video, arrays = run(tmp_path, path, start, n)
    assert r.status == "ok" and r.n_frames == n
    z = np.load(arrays, allow_pickle=False)
    assert z["landmarks_src"].shape == (n, 68, 2) and z["landmarks_src"].dtype == np.float32
    assert z["landmarks_crop"].shape == (n, 68, 2) and z["transform"].shape == (n, 2, 3)
    assert z["valid"].dtype == bool and z["score"].dtype == np.float32
    assert nme(z["landmarks_src"], truth[start:start + n], z["valid"]) < 0.05  # the window, not frame 0
    p = probe(Source(str(video)))
    assert (p.width, p.height) == (256, 256) and p.fps == MEAD_FPS
    assert sum(1 for _ in iter_frames(Source(str(video)))) == n
    # landmarks_crop = transform applied to landmarks_src, stable points near the template
    m = z["transform"][5].astype(np.float64)
    assert np.allclose(apply(m, z["landmarks_src"][5]), z["landmarks_crop"][5], atol=1e-3)
    tmpl = crop_template(256, FacesConfig().margin)
    assert np.abs(z["landmarks_crop"][:, STABLE] - tmpl[STABLE]).mean() < 4.0
    assert to_table([r.as_row()], CLIPS_SCHEMA).num_rows == 1


def test_crops_from_i420_frames_match_crops_from_bgr(tmp_path):
    import cv2

    from meadkit.faces.align import warp
    from meadkit.faces.stage import warp_i420

    write_clip(tmp_path / "c.mp4", 1, width=320, height=240)
    bgr = next(iter(iter_frames(Source(str(tmp_path / "c.mp4"))))).image
    yuv = next(iter(iter_frames(Source(str(tmp_path / "c.mp4")), pix_fmt="yuv420p"))).image
    for m in (np.array([[0.9, 0.2, -60.0], [-0.2, 0.9, -20.0]]), np.array([[2.0, 0, -500.0], [0, 2.0, -300.0]])):
        crop = cv2.cvtColor(warp_i420(yuv, m, 96, 320, 240), cv2.COLOR_YUV2BGR_I420)
        diff = np.abs(warp(bgr, m, 96).astype(int) - crop.astype(int))
        assert diff.mean() < 2.0  # same pixels up to colour-conversion rounding, also off the frame's edge


def test_similarity_and_crop_put_template_points_in_place():
    rng = np.random.default_rng(0)
    pts = rng.uniform(0, 100, (68, 2))
    a, s, t = 0.3, 1.7, np.array([12.0, -5.0])
    m_true = np.array([[s * np.cos(a), -s * np.sin(a), t[0]], [s * np.sin(a), s * np.cos(a), t[1]]])
    assert np.allclose(similarity(pts, apply(m_true, pts)), m_true)
    tmpl = crop_template(200, 0.1)
    face = apply(m_true, tmpl)  # a face that is exactly the template, moved
    m = crop_transform(face, 200, 0.1)
    assert np.allclose(apply(m, face), tmpl, atol=1e-6)
    assert tmpl.min() == pytest.approx(20) and tmpl.max() == pytest.approx(180)


def test_align_image_on_a_photo_and_on_a_blank():
    img, lm = photo()
    crop, lm_crop, lm_src, m = align_image(img, FacesConfig(crop_size=128))
    assert crop.shape == (128, 128, 3)
    assert np.sqrt(((lm_src - lm) ** 2).sum(-1)).mean() / interocular(lm) < 0.03
    assert np.abs(lm_crop[STABLE] - crop_template(128, 0.2)[STABLE]).mean() < 3.0
    with pytest.raises(NoFaceError, match="no face"):
        align_image(np.full((200, 300, 3), 90, np.uint8), FacesConfig(fallback_detector="none"))


def test_smoothing_cuts_jitter_without_lag_on_a_step():
    fps, T, step = 30.0, 80, 40
    rng = np.random.default_rng(1)
    base = crop_template(100, 0.0)  # inter-ocular distance ~50 px
    iod = float(interocular(base))
    truth = np.repeat(base[None], T, 0)
    truth[step:] += [0.6 * iod, 0.0]  # the head jumps by 0.6 inter-ocular distances in one frame
    raw = truth + rng.normal(0, 0.02 * iod, truth.shape)
    sm = TrackSmoother(T, fps, FacesConfig(smooth_lag=8, max_gap=8))
    for x in raw:
        sm.push(x)
    out = np.stack([sm.final(i)[0] for i in range(T)])
    ok = np.ones(T, bool)
    assert jitter(out, ok) < 0.5 * jitter(raw, ok)
    err = np.abs(out - truth)[..., 0].mean(-1) / iod  # per frame, in inter-ocular distances
    assert err[step + 2:].max() < 0.05 and err[:step - 2].max() < 0.05  # settled within 2 frames of the step
    assert err[step:step + 2].max() < 0.3  # never half a step behind
    assert np.abs(out - truth)[10:-10].mean() < np.abs(raw - truth)[10:-10].mean()


def test_short_gaps_are_interpolated_long_ones_are_not():
    T = 40
    base = crop_template(100, 0.0)
    sm = TrackSmoother(T, 30.0, FacesConfig(smooth_lag=5, max_gap=5))
    present = np.ones(T, bool)
    present[10:13] = False  # 3 frames: filled
    present[20:30] = False  # 10 frames: left empty
    for i in range(T):
        sm.push(base + [i, 0] if present[i] else None)
    res = [sm.final(i) for i in range(T)]
    assert all(r[1] and r[2] for r in res[10:13])
    assert np.allclose(res[11][0], base + [11, 0], atol=0.5)
    assert not any(r[1] for r in res[20:30]) and np.isnan(res[25][0]).all()


def _reference_backward(raw, valid, scale, i, lag, max_gap, config):
    """The backward pass at frame i as its definition reads: a fresh One-Euro filter, frame by frame."""
    f, prev, x = OneEuro(config), None, None
    for j in range(min(i + lag, len(raw) - 1), i - 1, -1):
        if not valid[j]:
            continue
        if prev is not None and prev - j - 1 > max_gap:
            f = OneEuro(config)
        x = f(raw[j], (1.0 / 30) * ((prev - j) if prev is not None else 1), scale[j])
        prev = j
    return x


def test_the_vectorised_backward_pass_equals_the_filter_run_frame_by_frame_through_gaps_and_revisions():
    T, cfg = 90, FacesConfig(smooth_lag=12, max_gap=3)
    rng = np.random.default_rng(4)
    base = crop_template(100, 0.0)
    raw = base + np.cumsum(rng.normal(0, 1.5, (T, 68, 2)), 0)  # a wandering, jittering face
    present = rng.random(T) > 0.15
    present[40:45] = False  # a gap longer than max_gap: the backward filter restarts across it
    sm = TrackSmoother(T, 30.0, cfg)
    seen, before, revised_at = raw.copy(), present.copy(), None
    for i in range(T):  # as the stage does: pushed in chunks, finalised up to its hold-back (15 frames) behind
        sm.push(raw[i] if present[i] else None)
        if i == 45:  # tracked backwards: frames still open (some computed ahead already) change
            revised_at = sm.n_final  # frames finalised before this saw the track as it was
            for j in (30, 33, 36):
                seen[j], present[j] = raw[j] + 0.7, True
                sm.revise(j, seen[j])
        if i % 20 == 19:
            for k in range(sm.n_final, sm.n - 15):
                sm.final(k)
    out = [sm.final(i) for i in range(sm.n_final, T)]
    assert out[-1][1] and sm.n_final == T
    checked = 0
    for track, valid, frames in ((raw, before, range(revised_at)), (seen, present, range(revised_at, T))):
        scale = np.array([max(float(interocular(p)), 1.0) for p in track])
        for i in (i for i in frames if valid[i]):
            # the output is (forward + backward) / 2: recover the backward half and compare it
            back = 2 * sm.out[i] - _forward_only(seen, present, scale, i, cfg)
            ref = _reference_backward(track, valid, scale, i, cfg.smooth_lag, cfg.max_gap, cfg)
            assert np.allclose(back, ref, rtol=0, atol=1e-9), i
            checked += 1
    assert checked == int(present.sum()) > 60


def _forward_only(raw, valid, scale, i, config):
    """The forward pass at frame i: one One-Euro filter over the valid frames up to i, restarted after long gaps."""
    f, last, x = OneEuro(config), -1, None
    for j in range(i + 1):
        if not valid[j]:
            continue
        if last < 0 or j - last - 1 > config.max_gap:
            f = OneEuro(config)
        x = f(raw[j], (1.0 / 30) * (j - last if last >= 0 else 1), scale[j])
        last = j
    return x


def test_detector_and_fitter_read_regions_cut_from_a_frame_correctly():
    """dlib reads a non-contiguous numpy view as garbage without an error: regions must be copied first."""
    img, lm = photo()
    frame = np.zeros((600, 800, 3), np.uint8)
    frame[50:50 + img.shape[0], 100:100 + img.shape[1]] = img
    region = frame[40:40 + img.shape[0] + 20, 90:90 + img.shape[1] + 20]
    assert not region.flags["C_CONTIGUOUS"]
    dets = HogDetector()(region)
    assert [d.box for d in dets] == [d.box for d in HogDetector()(region.copy())]
    cx, cy = lm.mean(0) + 10
    box = next(d.box for d in dets if d.box[0] < cx < d.box[2] and d.box[1] < cy < d.box[3])
    pts = backend_for(FacesConfig()).fit([region], box)[0][0]
    assert np.sqrt(((pts - (lm + [10, 10])) ** 2).sum(-1)).mean() / interocular(lm) < 0.05


def test_main_face_prefers_large_and_central():
    dets = [Detection((0, 0, 60, 60), 2.0), Detection((270, 150, 350, 230), 0.5), Detection((560, 300, 640, 380), 1.0)]
    assert main_face(dets, 640, 480).box == (270, 150, 350, 230)


def test_keeps_the_main_speaker_when_a_second_face_is_in_view(tmp_path):
    import cv2

    from meadkit.testing.face_clip import projection

    img, lm = photo()
    n, w, h = 20, 480, 270
    truth = []
    with VideoWriter(str(tmp_path / "two.mp4"), MEAD_FPS, w, h) as out:
        for i in range(n):
            frame = np.full((h, w, 3), 70, np.uint8)
            frame[0:150, 0:130] = img[55:205, 160:290]  # a second, smaller face off to the side
            big = projection(i / 30, 0.0, w, h, 0.14 * w)
            cv2.warpPerspective(img, big, (w, h), dst=frame, borderMode=cv2.BORDER_TRANSPARENT)
            frame[0:150, 0:130] = img[55:205, 160:290]
            q = np.c_[lm, np.ones(68)] @ big.T
            truth.append(q[:, :2] / q[:, 2:])
            out.write(frame)
    first = next(iter(iter_frames(Source(str(tmp_path / "two.mp4"))))).image
    assert len(HogDetector()(first)) == 2  # both faces are visible to the detector
    r, _, arrays = run(tmp_path, tmp_path / "two.mp4", 0, n, FacesConfig(detect_every=5))
    z = np.load(arrays, allow_pickle=False)
    assert r.status == "ok" and z["valid"].all()
    assert nme(z["landmarks_src"], np.array(truth), z["valid"]) < 0.05


def _write(path, frames, fps=MEAD_FPS):
    with VideoWriter(str(path), fps, frames[0].shape[1], frames[0].shape[0]) as w:
        for f in frames:
            w.write(f)


def test_bad_inputs_give_a_status_and_reason(tmp_path, clips):
    cfg = FacesConfig(fallback_detector="none")
    _write(tmp_path / "black.mp4", [np.zeros((180, 320, 3), np.uint8)] * 12)
    r, video, arrays = run(tmp_path, tmp_path / "black.mp4", 0, 12, cfg)
    assert r.status == "no_face" and "blank" in r.error and not video.exists() and not arrays.exists()

    write_clip(tmp_path / "empty.mp4", 12, face=False, width=320, height=180)
    r, *_ = run(tmp_path, tmp_path / "empty.mp4", 0, 12, FacesConfig(fallback_detector="none", detect_every=4))
    # searched on each of the first 6 frames, then every 4th (frame 9): a clip without a face stays cheap
    assert r.status == "no_face" and "no face" in r.error and r.detector_calls == 7

    _write(tmp_path / "one.mp4", [np.full((180, 320, 3), 128, np.uint8)])
    r, *_ = run(tmp_path, tmp_path / "one.mp4", 0, 1, cfg)
    assert r.status == "too_short" and "1 frame" in r.error

    data = clips[0][0].read_bytes()
    (tmp_path / "cut.mp4").write_bytes(data[: len(data) // 2])
    r, video, _ = run(tmp_path, tmp_path / "cut.mp4", 0, N, cfg)
    assert r.status in ("corrupt", "unreadable") and r.error and not video.exists()

    (tmp_path / "junk.mp4").write_bytes(b"not a video" * 100)
    r, *_ = run(tmp_path, tmp_path / "junk.mp4", 0, N, cfg)
    assert r.status == "unreadable" and "junk.mp4" in r.error

    r, *_ = run(tmp_path, clips[0][0], N - 5, 20, cfg)  # window runs past the end of the file
    assert r.status == "corrupt" and "decoded 5 of the 20" in r.error
    assert not list(tmp_path.glob("*meadkit-tmp*"))


def test_fan_without_weights_says_where_to_put_them(tmp_path, monkeypatch):
    """Exercises the fan backend's offline check only (no real weights here): it must fail fast with a message."""
    monkeypatch.setenv("TORCH_HOME", str(tmp_path / "torch"))
    cfg = FacesConfig(backend="fan", weights_dir=str(tmp_path / "w"))
    with pytest.raises(FaceBackendUnavailable, match=FAN_WEIGHTS) as e:
        FanBackend(HogDetector(), None, cfg)
    assert str(tmp_path / "torch" / "hub" / "checkpoints") in str(e.value)
    r = process_view(Source("nowhere.mp4"), 0, 10, tmp_path / "v.mp4", tmp_path / "v.npz", cfg)
    assert r.status == "backend_unavailable" and FAN_WEIGHTS in r.error


@pytest.mark.slow
def test_fan_code_path_with_untrained_weights(tmp_path):
    """Runs the fan fitting code on randomly initialised one-hourglass FAN weights (NOT real ones: no accuracy
    claim), to check shapes, scores, batching and the weights_dir lookup."""
    pytest.importorskip("face_alignment")
    import torch
    from face_alignment.models import FAN

    torch.manual_seed(0)
    torch.save(FAN(1).state_dict(), tmp_path / FAN_WEIGHTS)
    be = FanBackend(HogDetector(), None, FacesConfig(backend="fan", weights_dir=str(tmp_path)))
    img, lm = photo()
    out = be.fit([img, img], (170, 80, 270, 180))
    assert len(out) == 2 and out[0][0].shape == (68, 2) and 0.0 <= out[0][1] <= 1.0
    assert np.allclose(out[0][0], out[1][0])
    half = 100.0 * 200 / 195  # FAN sees a square of 200 * (w + h) / 195 px around the box's raised centre
    centre = np.array([220.0, 130.0 - 0.12 * 100])
    assert (np.abs(out[0][0] - centre) <= half + 1).all()


def test_heatmap_peaks_decode_like_fan():
    from meadkit.faces.backends import heatmap_peaks

    hm = np.zeros((1, 2, 64, 64), np.float32)
    hm[0, 0, 10, 20], hm[0, 0, 10, 21] = 0.9, 0.5  # peak at x=20, y=10, right neighbour higher
    hm[0, 1, 40, 5] = 0.7
    pts, scores = heatmap_peaks(hm)
    assert np.allclose(pts[0], [[20.75, 10.5], [5.5, 40.5]]) and np.allclose(scores[0], [0.9, 0.7])


def test_mediapipe_detector_when_installed(clips):
    if importlib.util.find_spec("mediapipe") is None:
        pytest.skip("mediapipe 0.10.21 is not installed (its opencv-contrib dependency clashes here)")
    from meadkit.faces.backends import MediapipeDetector

    frame = next(iter(iter_frames(Source(str(clips[30][0]))))).image
    dets = MediapipeDetector()(frame)
    truth = clips[30][1][0]
    assert dets and any(d.box[0] < truth[:, 0].mean() < d.box[2] for d in dets)


def test_full_range_444_frames_are_cropped_without_conversion_and_keep_their_colours(tmp_path):
    """MEAD's yuvj444p (full range) is warped plane by plane and encoded as full-range I420: the crop's colours
    equal those of a crop made from the decoded BGR frame."""
    from fractions import Fraction

    import av

    from meadkit.faces.align import warp
    from meadkit.faces.stage import warp_planes
    from meadkit.media.video import iter_planes

    write_clip(tmp_path / "c.mp4", 1, width=320, height=240)
    src = next(iter(iter_frames(Source(str(tmp_path / "c.mp4"))))).image
    with av.open(str(tmp_path / "j.mp4"), "w") as out:  # the clip as MEAD encodes: High 4:4:4, yuvj444p
        s = out.add_stream("libx264", rate=Fraction(30))
        s.width, s.height, s.pix_fmt = 320, 240, "yuvj444p"
        f = av.VideoFrame.from_ndarray(src, format="bgr24").reformat(format="yuvj444p")
        for p in list(s.encode(f)) + list(s.encode()):
            out.mux(p)
    (i, planes), = list(iter_planes(Source(str(tmp_path / "j.mp4"))))
    assert planes.full_range and planes.u.shape == planes.y.shape  # given as decoded, no conversion
    bgr = next(iter(iter_frames(Source(str(tmp_path / "j.mp4"))))).image
    m = np.array([[0.9, 0.2, -60.0], [-0.2, 0.9, -20.0]])
    with VideoWriter(str(tmp_path / "crop.mp4"), Fraction(30), 96, 96, pix_fmt="yuvj420p", crf=10) as w:
        w.write(warp_planes(planes, m, 96))
    crop = next(iter(iter_frames(Source(str(tmp_path / "crop.mp4"))))).image
    assert np.abs(crop.astype(int) - warp(bgr, m, 96).astype(int)).mean() < 3.0


def test_a_face_known_to_be_turned_beyond_max_yaw_is_not_tracked(clips, tmp_path):
    """Where the take's front view and the camera's angle put the face beyond max_yaw, the gate would refuse every
    fit: the view is `no_face` at once, saying why, without decoding it; within range it is tracked as before."""
    path, _ = clips[0]
    r, video, arrays = run(tmp_path, path, config=FacesConfig())
    assert r.status == "ok" and abs(r.head_yaw) < 10
    arrays.unlink()
    r = process_view(Source(str(path)), 0, N, video, arrays, FacesConfig(), least_yaw=41.0)
    assert (r.status, r.n_frames, r.detector_calls) == ("no_face", N, 0) and not arrays.exists()
    assert r.error.startswith("not tracked: the take's front view and this camera's angle put the face at 41+ degrees")
    # within a wider max_yaw it is tracked, judged at 41 degrees: beyond frontal_yaw, so the mesh's points are taken
    r = process_view(Source(str(path)), 0, N, video, arrays, FacesConfig(max_yaw=45.0, tilt_pitch=45.0), least_yaw=41.0)
    assert r.status == "ok" and r.detector_calls > 0 and r.mesh_ratio > 0.95


def test_the_mesh_sits_out_frames_where_both_landmarkers_agree_and_the_points_stay_the_same(clips, tmp_path):
    """On a frontal face (dlib's points chosen: the mesh agrees), the mesh runs on about every other frame; the
    landmarks and validity are those of running it on every frame, and its vertices on the frames it sat out
    (the neighbours' mean) stay within a pixel or two of a real fit."""
    from meadkit.faces.backends import MeshLandmarker

    path, truth = clips[0]
    fitted, calls, seen = MeshLandmarker.fit, [], {}

    def counted(self, *args, **kwargs):
        calls.append(1)
        return fitted(self, *args, **kwargs)

    for every in (1, 2):
        calls.clear()
        MeshLandmarker.fit = counted
        try:
            r, _, arrays = run(tmp_path, path, config=FacesConfig(mesh_every=every))
        finally:
            MeshLandmarker.fit = fitted
        z = np.load(arrays, allow_pickle=False)
        seen[every] = (len(calls), z["landmarks_src"], z["valid"], z["mesh_crop"].astype(np.float64))
        assert r.status == "ok" and r.mesh_ratio == 0.0
    (n1, lm1, ok1, mesh1), (n2, lm2, ok2, mesh2) = seen[1], seen[2]
    assert n1 >= N and n2 <= 0.6 * n1
    assert np.array_equal(ok1, ok2) and np.array_equal(lm1, lm2)
    gap = np.sqrt(((mesh1 - mesh2)[..., :2] ** 2).sum(-1)).mean(-1)
    assert np.isfinite(mesh2[ok2]).all() and gap.max() < 3.0 and gap.mean() < 1.0 and (gap == 0).sum() >= n2 - 5


def test_frames_the_mesh_sat_out_are_filled_between_its_neighbours():
    from meadkit.faces.stage import _fill_spared

    mesh = np.arange(7, dtype=np.float32)[:, None, None] * np.ones((7, 2, 3), np.float32)
    spared = np.array([True, False, True, False, True, False, True])
    mesh[spared] = np.nan  # frames the mesh sat out
    mesh[5] = np.nan  # the mesh saw no face here
    out = _fill_spared(mesh, spared)
    assert out[2].tolist() == [[2.0] * 3] * 2  # between its neighbours
    assert out[0].tolist() == [[1.0] * 3] * 2 and out[4].tolist() == [[3.0] * 3] * 2  # held from the one that saw it
    assert np.isnan(out[[5, 6]]).all()  # no neighbour saw the face: left without a mesh
    assert np.array_equal(out[[1, 3]], mesh[[1, 3]]) and np.isnan(mesh[2]).all()  # the input is left as it was


def test_the_cnn_fallback_runs_only_where_the_others_found_nothing():
    """The CNN fallback (`fallback_detector = "mmod"`, the default; ~2 s a call) finds the face on a real photo, and the
    tracker's search calls it only when HOG and the second detector found nothing, at most fallback_max times a view."""
    from meadkit.faces.backends import Backend, MmodDetector
    from meadkit.faces.track import Tracker

    assert backend_for(FacesConfig(fallback_detector="none")).fallback is None
    backend = backend_for(FacesConfig())
    assert isinstance(backend.fallback, MmodDetector)
    img, lm = photo()
    (found,) = backend.fallback(img)
    x0, y0, x1, y1 = found.box
    assert x0 < lm[:, 0].mean() < x1 and y0 < lm[:, 1].mean() < y1
    calls = []
    blind = Backend(lambda image: [], fallback=lambda image: calls.append(1) or [], second=lambda image: [])
    tracker = Tracker(blind, FacesConfig(fallback_detector="mmod", fallback_max=2, fallback_every=1))
    for _ in range(4):
        assert tracker.search(img) == []
        tracker.since_fallback += 1
    assert len(calls) == 2


def test_the_cnn_fallback_looks_around_a_lost_face_not_the_whole_frame():
    """After a track is lost, the fallback (~2 s a call on a whole search image) runs on the region of the face's last
    box and a side more each way, and what it finds there is given in the frame's pixels; with no face seen yet it
    looks at the whole search image."""
    from meadkit.faces.backends import Backend
    from meadkit.faces.track import Tracker

    img, lm = photo()
    frame = np.full((1080, 1920, 3), 128, np.uint8)  # the photo in a 1080p frame, as a MEAD face is
    frame[300:300 + img.shape[0], 700:700 + img.shape[1]] = img
    lm = lm + [700, 300]
    seen = []

    def fallback(image):
        seen.append(image.shape[:2])
        return [Detection((10.0, 20.0, 50.0, 60.0), 1.0)]

    blind = Backend(lambda image: [], fallback=fallback, second=lambda image: [])
    tracker = Tracker(blind, FacesConfig(detect_width=640))
    ((dets, _),) = tracker.search(frame)
    assert seen[-1] == (360, 640) and dets[0].box == (30.0, 60.0, 150.0, 180.0)  # the whole search image, at scale 1/3
    tracker.landmarks, tracker.fallback_calls, tracker.since_fallback = lm.astype(np.float32), 0, 30
    x0, y0, x1, y1 = tracker.track_box()
    ((dets, _),) = tracker.search(frame)
    h, w = seen[-1]
    side = max(x1 - x0, y1 - y0) / 3  # in search-image pixels
    assert h * w < 0.5 * 360 * 640 and 2.9 * side <= min(h, w) <= 3.1 * side + 2
    rx0, ry0 = dets[0].box[0] - 30.0, dets[0].box[1] - 60.0  # the region's corner, in frame pixels
    assert rx0 <= x0 <= rx0 + 3 * side + 3 and ry0 <= y0 <= ry0 + 3 * side + 3
