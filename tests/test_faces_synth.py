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
