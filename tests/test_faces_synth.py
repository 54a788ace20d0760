"""Faces stage against the synthetic corpus's true landmarks (front and 30-degree views)."""
from __future__ import annotations

import numpy as np
import pytest

from meadkit.media.sources import Source
from meadkit.corpus.synth import read_truth, truth_landmarks
from meadkit.faces import FacesConfig, backend_for, process_view
from meadkit.faces.align import interocular
from meadkit.faces.smooth import jitter
from meadkit.testing.face_clip import per_frame_landmarks


#: Brows, nose, eyes and mouth. The synthetic truth projects the 3D jaw, so on a turned view the far
#: jaw points lie behind the cheek, where no 2D 68-point model puts them (it follows the visible
#: outline): the jaw's error there measures that convention, not tracking, so NME leaves it out.
INNER = np.arange(17, 68)


def nme(pred, truth, ok):
    err = np.sqrt(((pred - truth)[:, INNER] ** 2).sum(-1)).mean(-1) / interocular(truth)
    return float(err[ok].mean())


@pytest.mark.slow
@pytest.mark.parametrize("view", ["front", "left_30", "right_30"])
def test_synth_views_match_truth_and_beat_per_frame_detection(tiny_corpus, tmp_path, view):
    raw, truth_path = tiny_corpus
    df = read_truth(truth_path)
    rows = df[(df.kind == "video") & (df.view == view) & df.written].sort_values("take_id").head(2)
    assert len(rows) == 2
    backend = backend_for(FacesConfig())
    for r in rows.itertuples():
        truth = truth_landmarks(truth_path, r.take_id, view).astype(np.float64)
        n = len(truth)
        src = Source(str(raw / r.relpath))
        res = process_view(src, 0, n, tmp_path / f"{r.take_id}.mp4", tmp_path / f"{r.take_id}.faces.npz")
        assert res.status == "ok", res.error
        z = np.load(tmp_path / f"{r.take_id}.faces.npz", allow_pickle=False)
        assert z["valid"].mean() >= 0.99 and res.found_ratio >= 0.97  # the target on these views
        peer, peer_ok = per_frame_landmarks(src, 0, n, backend)
        ours = nme(z["landmarks_src"], truth, z["valid"])
        assert ours < 0.08, f"{r.take_id} {view}: NME {ours:.4f}"
        assert ours <= 1.05 * nme(peer, truth, peer_ok), f"{r.take_id} {view}: {ours:.4f} vs peer"
        assert jitter(z["landmarks_src"], z["valid"]) < jitter(peer, peer_ok)


@pytest.fixture(scope="module")
def head_turns(tmp_path_factory):
    """Three actors from three different real photos (one greyscale), each in a frontal, a 30-degree, a top and a
    60-degree view rendered as a real 3D head turn, at 960x540."""
    from meadkit.corpus.synth import SynthConfig, synthesize

    raw = tmp_path_factory.mktemp("turns") / "raw"
    cfg = SynthConfig(actors=3, photos=("obama", "grace_hopper", "einstein"), emotions=("happy",), levels=(3,),
                      takes=1, seconds=1.2, views=("front", "right_30", "top", "left_60"), width=960, height=540,
                      seed=11, voice="procedural")
    return raw, synthesize(raw, cfg)


@pytest.mark.slow
def test_every_face_and_view_is_tracked_or_refused_never_garbage(head_turns, tmp_path):
    """On other people's faces and real head turns: front/30/top views are tracked on most frames within a
    bounded error; on every view, frames marked valid whose error exceeds 15% of the inter-ocular distance stay
    rare (the gate refuses fits it cannot believe, with a reason)."""
    raw, truth_path = head_turns
    df = read_truth(truth_path)
    rows = df[(df.kind == "video") & df.written].sort_values(["actor", "view"])
    assert len(rows) == 12
    for r in rows.itertuples():
        truth = truth_landmarks(truth_path, r.take_id, r.view).astype(np.float64)
        n = len(truth)
        res = process_view(Source(str(raw / r.relpath)), 0, n, tmp_path / "v.mp4", tmp_path / "v.faces.npz")
        z = np.load(tmp_path / "v.faces.npz", allow_pickle=False) if res.status in ("ok", "partial") else None
        ok = z["valid"] if z is not None else np.zeros(n, bool)
        lm = z["landmarks_src"].astype(np.float64) if z is not None else np.full_like(truth, np.nan)
        err = np.sqrt(((lm - truth) ** 2).sum(-1)).mean(-1) / interocular(truth)
        label = f"{r.actor} {r.view}: {res.status} {res.error}"
        assert (ok & (err > 0.15)).mean() <= 0.05, label
        if res.status not in ("ok", "partial"):
            assert res.error, label
        if r.view in ("front", "right_30", "top") and r.actor != "M005":  # M005: the greyscale archival photo
            assert ok.mean() >= 0.9 and err[ok].mean() < 0.12, f"{label}: valid {ok.mean():.2f}, NME {err[ok].mean():.3f}"


@pytest.mark.slow
def test_the_mirrored_check_at_a_cadence_keeps_the_same_frames_at_the_same_error(head_turns, tmp_path):
    """On real 30-degree head turns (where the mesh's points are chosen and each is checked by a second, mirrored
    mesh fit), checking every 3rd frame while the checks pass with room to spare runs far fewer mirrored fits and
    keeps the same frames valid at the same error as checking every frame."""
    from meadkit.faces.backends import MeshLandmarker

    raw, truth_path = head_turns
    df = read_truth(truth_path)
    rows = df[(df.kind == "video") & df.written & (df.view == "right_30") & (df.actor != "M005")]
    mirrored, calls = MeshLandmarker.fit68_mirrored, []

    def counted(self, *args, **kwargs):
        calls.append(1)
        return mirrored(self, *args, **kwargs)

    for r in rows.itertuples():
        truth = truth_landmarks(truth_path, r.take_id, r.view).astype(np.float64)
        seen = {}
        for every in (1, 3):
            calls.clear()
            MeshLandmarker.fit68_mirrored = counted
            try:
                res = process_view(Source(str(raw / r.relpath)), 0, len(truth), tmp_path / "v.mp4",
                                   tmp_path / "v.faces.npz", FacesConfig(mirror_every=every))
            finally:
                MeshLandmarker.fit68_mirrored = mirrored
            z = np.load(tmp_path / "v.faces.npz", allow_pickle=False)
            seen[every] = (len(calls), z["valid"], nme(z["landmarks_src"], truth, z["valid"]), res.mesh_ratio)
        (n1, ok1, e1, mesh1), (n3, ok3, e3, _) = seen[1], seen[3]
        assert mesh1 > 0.3 and n1 >= ok1.sum() * mesh1 - 2, f"{r.actor}: the mesh's points were not checked"
        assert n3 <= 0.8 * n1, f"{r.actor}: {n3} mirrored fits at a cadence of 3, {n1} on every frame"
        assert (ok1 != ok3).sum() <= 1 and abs(e3 - e1) <= 0.003, f"{r.actor}: NME {e1:.4f} -> {e3:.4f}"


@pytest.mark.slow
def test_sixty_degree_views_are_judged_at_the_turn_the_front_view_and_camera_give(head_turns, tmp_path):
    """Each actor's front view gives the head's yaw; with the 60-degree camera's angle that bounds how far its
    face is turned, and the gate refuses what it cannot hold however the mesh reads it: no frame of a 60-degree view
    is marked valid with an error over 15%, and a refused view says why."""
    from meadkit.take import least_yaw

    raw, truth_path = head_turns
    df = read_truth(truth_path)
    df = df[(df.kind == "video") & df.written]
    cfg = FacesConfig()
    for actor in sorted(df.actor.unique()):
        rows = {r.view: r for r in df[df.actor == actor].itertuples()}
        front = process_view(Source(str(raw / rows["front"].relpath)), 0, int(rows["front"].n_frames),
                             tmp_path / "f.mp4", tmp_path / "f.faces.npz", cfg)
        if front.status not in ("ok", "partial"):
            continue
        least = least_yaw("left_60", front.head_yaw, cfg.view_slack)
        r = rows["left_60"]
        truth = truth_landmarks(truth_path, r.take_id, "left_60").astype(np.float64)
        res = process_view(Source(str(raw / r.relpath)), 0, len(truth), tmp_path / "v.mp4", tmp_path / "v.faces.npz",
                           cfg, least_yaw=least)
        if least > cfg.max_yaw:
            assert res.status == "no_face" and res.n_frames == len(truth) and not (tmp_path / "v.faces.npz").exists()
            assert f"not tracked: the take's front view and this camera's angle put the face at {least:.0f}+ " \
                   f"degrees, beyond max_yaw 36" in res.error, res.error
            judged = process_view(Source(str(raw / r.relpath)), 0, len(truth), tmp_path / "v.mp4",
                                  tmp_path / "v.faces.npz", cfg, least_yaw=cfg.max_yaw - 0.5)
            assert judged.detector_calls > 0 and "not tracked" not in (judged.error or "")  # within range: tracked
        if res.status in ("ok", "partial"):
            z = np.load(tmp_path / "v.faces.npz", allow_pickle=False)
            err = np.sqrt(((z["landmarks_src"] - truth) ** 2).sum(-1)).mean(-1) / interocular(truth)
            assert not (z["valid"] & (err > 0.15)).any(), (actor, least, res.status)
