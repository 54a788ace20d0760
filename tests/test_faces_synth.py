"""Faces stage against the synthetic corpus's true landmarks (front and 30-degree views)."""
from __future__ import annotations

import numpy as np
import pytest

from meadkit.corpus.sources import Source
from meadkit.corpus.synth import read_truth, truth_landmarks
from meadkit.faces import FacesConfig, backend_for, process_view
from meadkit.faces.align import interocular
from meadkit.faces.smooth import jitter
from meadkit.faces.testclip import per_frame_landmarks


def nme(pred, truth, ok):
    err = np.sqrt(((pred - truth) ** 2).sum(-1)).mean(-1) / interocular(truth)
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
        assert z["valid"].mean() >= 0.99 and res.found_ratio >= 0.99
        peer, peer_ok = per_frame_landmarks(src, 0, n, backend)
        ours = nme(z["landmarks_src"], truth, z["valid"])
        assert ours < 0.08, f"{r.take_id} {view}: NME {ours:.4f}"
        assert ours <= 1.05 * nme(peer, truth, peer_ok), f"{r.take_id} {view}: {ours:.4f} vs peer"
        assert jitter(z["landmarks_src"], z["valid"]) < jitter(peer, peer_ok)
