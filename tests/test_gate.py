"""The fit-quality gate: pose from the generic 3D face, choice between landmarkers, rejection with a reason,
backward tracking from a late find, and the smoother's revisions."""
from __future__ import annotations

import numpy as np
import pytest

from meadkit.media.sources import Source
from meadkit.faces import FacesConfig, process_view
from meadkit.faces.align import interocular
from meadkit.faces.backends import DlibBackend, HogDetector
from meadkit.faces.gate import disagreement, face_height, judge, jumped
from meadkit.faces.model3d import PoseFit, fit_pose, fit_poses, project
from meadkit.faces.smooth import TrackSmoother
from meadkit.testing.face_clip import write_clip

CFG = FacesConfig()


def face(yaw=0.0, pitch=0.0, roll=0.0, scale=60.0, at=(300.0, 200.0)):
    return project(yaw, pitch, roll) * scale + np.array(at)


@pytest.mark.parametrize("yaw,pitch,roll", [(0, 0, 0), (30, 0, 8), (-60, 0, 0), (0, 24, 0), (0, -24, -5), (44, 8, 0)])
def test_pose_of_the_generic_face_is_recovered(yaw, pitch, roll):
    p = fit_pose(face(yaw, pitch, roll))
    assert abs(p.yaw - yaw) <= 2 and abs(p.pitch - pitch) <= 2 and abs(p.roll - roll) <= 1
    assert p.residual < 0.02  # off the 4-degree grid by up to 2 degrees


def test_non_faces_leave_a_large_residual():
    rng = np.random.default_rng(0)
    assert fit_pose(rng.uniform(0, 100, (68, 2))).residual > 0.8
    upside_down = face() * [1, -1]
    assert fit_pose(upside_down).residual > 0.5
    assert fit_pose(np.zeros((68, 2))).residual == 1.0


def test_a_clip_of_poses_fitted_at_once_gives_each_frame_its_own_pose():
    cases = [(0, 0, 0), (30, 0, 8), (-60, 0, 0), (0, 24, 0), (44, 8, 0)]
    frames = np.stack([face(*c) for c in cases] + [np.full((68, 2), np.nan), np.zeros((68, 2))])
    poses = fit_poses(frames)
    for p, (yaw, pitch, roll) in zip(poses, cases):
        assert abs(p.yaw - yaw) <= 2 and abs(p.pitch - pitch) <= 2 and abs(p.roll - roll) <= 1 and p.residual < 0.02
    assert poses[-2] == poses[-1] == PoseFit(1.0, 0.0, 0.0, 0.0)  # no face: no pose, and no error
    for one, p in zip(map(fit_pose, frames), poses):  # one frame at a time: the same fit (to the last bits)
        assert (one.yaw, one.pitch) == (p.yaw, p.pitch) and np.allclose([one.residual, one.roll], [p.residual, p.roll],
                                                                        rtol=0, atol=1e-6)


def test_judge_keeps_the_68_point_fit_on_a_frontal_face_where_the_mesh_agrees():
    rng = np.random.default_rng(1)
    fit = face(4) + rng.normal(0, 0.5, (68, 2))
    mesh = face(6) + rng.normal(0, 0.5, (68, 2))
    v = judge(fit, mesh, CFG)
    assert v.source == "fit" and v.points is fit and v.reject is None and v.quality > 0.8


def test_judge_takes_the_mesh_when_the_face_is_turned_or_the_fits_disagree():
    turned = face(30)
    frontal_paste = face(0, at=(290.0, 205.0))  # a frontal shape over a turned face (dlib's failure)
    v = judge(frontal_paste, turned, CFG, mirrored=lambda: turned + 0.3)
    assert v.source == "mesh" and v.points is turned and abs(v.pose.yaw - 30) <= 2 and v.reject is None
    far = face(0, at=(330.0, 200.0))  # frontal, but 0.5 face heights apart: one of them is wrong; the mesh holds
    assert disagreement(far, face()) > CFG.agree_max
    assert judge(far, face(), CFG).source == "mesh"


def test_judge_rejects_faces_turned_too_far_and_mesh_fits_that_change_when_mirrored():
    v = judge(face(0), face(50), CFG)
    assert v.points is None and v.reject == "pose out of range" and abs(v.pose.yaw - 50) <= 2 and v.quality > 0.8
    h = face_height(face(30))
    v = judge(None, face(30), CFG, mirrored=lambda: face(30) + [0.1 * h, 0])  # the mirrored fit lands elsewhere
    assert v.points is None and v.reject == "unstable fit"
    assert judge(None, face(30), CFG, mirrored=lambda: None).reject == "unstable fit"
    assert judge(None, face(30), CFG, mirrored=lambda: face(30) + [0.01 * h, 0]).reject is None


def test_judge_rejects_implausible_shapes_with_a_reason():
    rng = np.random.default_rng(2)
    v = judge(rng.uniform(250, 350, (68, 2)), None, CFG)
    assert v.points is None and v.reject == "implausible shape" and v.quality == 0.0
    assert judge(None, None, CFG).reject == "no fit"
    nan = face()
    nan[3] = np.nan
    assert judge(nan, None, CFG).reject == "no fit"


def test_jumps_are_measured_in_face_heights():
    a = face()
    h = face_height(a)
    assert not jumped(a + [0.05 * h, 0], a, CFG.jump_max)
    assert jumped(a + [0.5 * h, 0], a, CFG.jump_max)


def test_smoother_takes_revisions_until_a_frame_is_final():
    sm = TrackSmoother(10, 30.0, FacesConfig(smooth_lag=3, max_gap=3))
    base = face()
    for _ in range(5):
        sm.push(None)
    sm.revise(2, base)
    assert sm.valid[2] and not sm.valid[1]
    for i in range(2):
        sm.final(i)
    with pytest.raises(IndexError):
        sm.revise(1, base)
    with pytest.raises(IndexError):
        sm.final(3)  # frames are finalised in order
    pts, ok, _ = sm.final(2)
    assert ok and np.allclose(pts, base)


class _LateDetector(HogDetector):
    """HOG that sees nothing for its first `blind` calls: a hard face the search finds only later."""

    def __init__(self, blind: int):
        super().__init__()
        self.blind = blind

    def __call__(self, image):
        self.blind -= 1
        return [] if self.blind >= 0 else super().__call__(image)


def _run(tmp_path, backend, n, path, cfg):
    import meadkit.faces.stage as stage

    orig = stage.backend_for
    stage.backend_for = lambda config: backend
    try:
        r = process_view(Source(str(path)), 0, n, tmp_path / "v.mp4", tmp_path / "v.faces.npz", cfg)
    finally:
        stage.backend_for = orig
    return r, (np.load(tmp_path / "v.faces.npz", allow_pickle=False) if r.status in ("ok", "partial") else None)


def test_a_face_found_late_is_tracked_backwards_over_the_frames_before(tmp_path):
    n = 40
    truth = write_clip(tmp_path / "c.mp4", n, 0, seed=4)
    # blind for the eager searches of frames 0-5: the next search (frame 15) finds the face
    cfg = FacesConfig(backend="dlib", fallback_detector="none")
    r, z = _run(tmp_path, DlibBackend(_LateDetector(blind=6)), n, tmp_path / "c.mp4", cfg)
    assert r.status == "ok" and r.found_ratio == 1.0 and z["valid"].all()
    err = np.sqrt(((z["landmarks_src"] - truth) ** 2).sum(-1)).mean(-1) / interocular(truth)
    assert err[:15].max() < 0.06 and err.mean() < 0.05  # the frames before the find are right too


def test_frames_whose_fit_the_gate_rejects_are_invalid_and_the_clip_says_why(tmp_path):
    n = 40
    write_clip(tmp_path / "c.mp4", n, 0, seed=5)

    class Garbled(DlibBackend):
        """dlib, but frames 10-29 come back as a scrambled shape (a fit gone wrong)."""

        calls = 0

        def fit(self, images, box, stretch=1.0):
            out = super().fit(images, box, stretch)
            Garbled.calls += 1
            if 12 <= Garbled.calls < 32:  # two fits per start, then one per frame
                out = [(pts[np.random.default_rng(0).permutation(68)], s) for pts, s in out]
            return out

    cfg = FacesConfig(backend="dlib", fallback_detector="none")
    r, z = _run(tmp_path, Garbled(HogDetector()), n, tmp_path / "c.mp4", cfg)
    assert r.status == "partial" and "fit rejected on" in r.error and "implausible shape" in r.error
    bad = ~z["valid"]
    assert 15 <= bad.sum() <= 22 and not bad[:8].any() and not bad[-6:].any()
    assert (z["quality"][bad] == 0).all() and (z["quality"][~bad] > 0.5).all()
    assert (z["reject"][bad] == 1).sum() >= 15  # code 1 = REJECTS[0] = implausible shape


@pytest.mark.parametrize("yaw,pitch,ok", [(32, 0, True), (32, -8, True), (8, -24, True), (28, -16, True), (34, -14, False), (-34, 16, False)])
def test_judge_rejects_faces_both_turned_and_tilted(yaw, pitch, ok):
    """Beyond tilt_yaw and tilt_pitch at once the mesh's fits were garbage on the benchmark; either alone is fine."""
    v = judge(None, face(yaw, pitch), CFG, mirrored=lambda: face(yaw, pitch))
    assert (v.reject is None) == ok and (ok or v.reject == "pose out of range")


def _verdict(mirror, yaw=30.0, points=True, source="mesh"):
    from meadkit.faces.gate import Verdict
    from meadkit.faces.model3d import PoseFit

    return Verdict(face(yaw) if points else None, source, 0.9, None if points else "unstable fit",
                   PoseFit(0.01, yaw, 0.0, 0.0), mirror)


def test_a_mirrored_check_vouches_for_the_next_frames_only_with_room_to_spare_and_a_steady_head():
    """The tracker's cadence of the mirrored check: a pass well inside mirror_max spares the next mirror_every - 1
    frames; a narrow pass, a failed check, a frame the gate refused or a turn of the head make the next one due."""
    from meadkit.faces.model3d import PoseFit
    from meadkit.faces.track import Tracker

    t = Tracker(backend=None, config=FacesConfig(mirror_every=3))
    pose = PoseFit(0.01, 30.0, 0.0, 0.0)
    assert t._mirror_due(pose)  # nothing checked yet
    t._vouch(_verdict(0.5 * CFG.mirror_max))
    assert not t._mirror_due(pose)
    t._vouch(_verdict(None))
    assert not t._mirror_due(pose)
    t._vouch(_verdict(None))
    assert t._mirror_due(pose)  # two frames spared, the third is checked
    t._vouch(_verdict(0.5 * CFG.mirror_max))
    assert t._mirror_due(PoseFit(0.01, 38.0, 0.0, 0.0)) and t._mirror_due(PoseFit(0.01, 30.0, -8.0, 0.0))
    t._vouch(_verdict(None, points=False))  # refused (e.g. implausible): no vouching through it
    assert t._mirror_due(pose)
    t._vouch(_verdict(0.8 * CFG.mirror_max))  # passed, but narrowly: check again next frame
    assert t._mirror_due(pose)
    t._vouch(_verdict(0.5 * CFG.mirror_max))
    t._vouch(_verdict(None, source="fit"))  # the 68-point fit was chosen (the mesh agreed with it): a frame used up
    assert not t._mirror_due(pose)
    t._vouch(_verdict(None))
    assert t._mirror_due(pose)
    every = Tracker(backend=None, config=FacesConfig(mirror_every=1))
    every._vouch(_verdict(0.1 * CFG.mirror_max))
    assert every._mirror_due(pose)


def test_judge_skips_the_mirrored_fit_only_when_told_and_reports_what_it_measured():
    h = face_height(face(30))
    calls = []

    def mirrored():
        calls.append(1)
        return face(30) + [0.01 * h, 0]

    v = judge(None, face(30), CFG, mirrored=mirrored)
    assert calls == [1] and v.reject is None and v.mirror == pytest.approx(0.01, rel=0.05)
    v = judge(None, face(30), CFG, mirrored=mirrored, mirror_due=False)
    assert calls == [1] and v.reject is None and v.mirror is None
    assert judge(None, face(30), CFG, mirrored=lambda: None).mirror == float("inf")
    assert judge(face(4), face(6), CFG, mirrored=mirrored).mirror is None and calls == [1]  # the fit was chosen


def test_a_face_known_to_be_turned_far_is_refused_whatever_yaw_its_fit_reads():
    """The mesh reads faces turned 55-65 degrees as 28-40: with the turn known from elsewhere (the take's front view
    and the camera's angle), the gate judges the fit at that turn. A smaller known turn changes nothing."""
    turned = face(30)
    assert judge(None, turned, CFG, mirrored=lambda: turned).reject is None
    v = judge(None, turned, CFG, mirrored=lambda: turned, least_yaw=45.0)
    assert v.points is None and v.reject == "pose out of range" and abs(v.pose.yaw - 30) <= 2
    assert judge(None, turned, CFG, mirrored=lambda: turned, least_yaw=20.0).reject is None
    # near-frontal fits agree, but a known turn beyond frontal_yaw means the 68-point model is not trusted there
    assert judge(face(4), face(6), CFG).source == "fit"
    assert judge(face(4), face(6), CFG, mirrored=lambda: face(6), least_yaw=25.0).source == "mesh"


def test_the_mesh_sits_out_a_frame_only_after_a_close_agreement_on_a_frontal_face():
    from meadkit.faces.gate import Verdict
    from meadkit.faces.model3d import PoseFit
    from meadkit.faces.track import Tracker

    def fitted(agree, yaw=4.0, source="fit", points=True):
        return Verdict(face(yaw) if points else None, source, 0.9, None if points else "implausible shape",
                       PoseFit(0.01, yaw, 0.0, 0.0), None, agree)

    t = Tracker(backend=None, config=FacesConfig(mesh_every=2))
    t._spare(fitted(0.4 * CFG.agree_max), spared=False)
    assert t.spared == 1
    t._spare(fitted(None), spared=True)  # the spared frame passed: the mesh runs on the next
    assert t.spared == 0
    for v in (fitted(0.6 * CFG.agree_max), fitted(0.1 * CFG.agree_max, yaw=16.0), fitted(None, source="mesh"),
              fitted(0.1 * CFG.agree_max, points=False)):
        t.spared = 0
        t._spare(v, spared=False)
        assert t.spared == 0, v  # a loose agreement, a face near frontal_yaw, the mesh's points, a refusal
    t.spared = 1
    t._spare(fitted(None, points=False), spared=True)
    assert t.spared == 0
    every = Tracker(backend=None, config=FacesConfig(mesh_every=1))
    every._spare(fitted(0.1 * CFG.agree_max), spared=False)
    assert every.spared == 0
    assert judge(face(4), face(6), CFG).agree == pytest.approx(disagreement(face(4), face(6)))
    assert judge(face(4), face(40), CFG).agree is None  # beyond frontal_yaw the fits are not compared
