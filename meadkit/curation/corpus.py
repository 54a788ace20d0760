"""The whole-corpus curation step, run where `prepare` writes the manifests: expression strength (against the
actor's neutral face), the level-order check, duplicate takes and every flag of `[curation]`'s thresholds."""
from __future__ import annotations

import dataclasses
from collections import defaultdict
from pathlib import Path
from typing import Mapping, Optional, Sequence

import numpy as np

from meadkit.corpus.names import VIEW_YAW
from meadkit.curation import FLAGS, CurationConfig
from meadkit.curation.lipsync import mouth_opening
from meadkit.faces.align import interocular
from meadkit.records import ClipRow

#: The points expression strength compares: brows, nose, eyes and mouth (not the jaw, which speech moves most).
EXPRESSION_POINTS = np.r_[17:68]


def curate(out: Path | str, clips: Sequence[ClipRow], fingerprints: Mapping[str, list],
           config: CurationConfig) -> list[ClipRow]:
    """Copies of `clips` with expression_strength, duplicate_of and the final quality_flags (the worker's
    threshold-free flags, then those of `config`'s thresholds and of the corpus-wide checks)."""
    measured = expression_strengths(Path(out), clips)
    strength = {i: v for i, (v, _) in measured.items()}
    judged = {i: v for i, (v, iod) in measured.items() if iod >= config.min_face_iod_px}
    breaks = level_order_breaks(clips, judged)
    weak = weak_expressions(clips, judged, config.weak_expression_ratio)
    copies = duplicates(fingerprints, config.duplicate_corr)
    result = []
    for i, c in enumerate(clips):
        found = {"weak_expression": i in weak, "level_order": i in breaks, "duplicate": c.take_id in copies}
        result.append(dataclasses.replace(c, expression_strength=strength.get(i), duplicate_of=copies.get(c.take_id),
                                          quality_flags=clip_flags(c, config, found)))
    return result


def clip_flags(clip: ClipRow, config: CurationConfig, found: Mapping[str, bool]) -> Optional[list[str]]:
    """A clip's flags in FLAGS order: the worker's, its measures' against the thresholds, and `found` (the
    corpus-wide checks'); null for a clip no curation measure reached and no check flagged."""
    offset, conf, yaw = clip.av_offset_frames, clip.av_confidence, clip.yaw_deg
    hits = set(clip.quality_flags or ()) | {k for k, v in found.items() if v}
    if _finite(offset, conf) and abs(offset) > config.max_av_offset_frames and conf >= config.min_av_confidence:
        hits.add("av_offset")
    if _finite(yaw) and clip.view in VIEW_YAW and abs(yaw - VIEW_YAW[clip.view]) > config.pose_tolerance_deg:
        hits.add("pose_mismatch")
    if _finite(clip.sharpness) and clip.sharpness < config.min_sharpness:
        hits.add("blurry")
    if clip.quality_flags is None and not hits:
        return None
    return [f for f in FLAGS if f in hits]


def _finite(*values) -> bool:
    return all(v is not None and np.isfinite(v) for v in values)


def expression_strengths(out: Path, clips: Sequence[ClipRow]) -> dict[int, tuple[float, float]]:
    """By clip index: (strength, the face's median inter-ocular distance in source pixels: the expression checks
    judge only faces large enough for a level's landmark change to exceed tracking noise). Strength is the median over its closed-mouth frames (valid, mouth opening at most the clip's median:
    speech moves the mouth as much as an expression) of the mean distance of EXPRESSION_POINTS of landmarks_crop,
    Procrustes-aligned (shift, scale, rotation), from the mean shape of its actor's and view's neutral clips'
    such frames, over that shape's inter-ocular distance. Clips without valid landmarks, or whose actor and view
    have no neutral clip, get none."""
    read = {i: _crop_landmarks(out / c.faces_npz) for i, c in enumerate(clips) if c.faces_npz}
    read = {i: r for i, r in read.items() if r is not None and len(r[0])}
    shapes = {i: points for i, (points, _) in read.items()}
    neutral = defaultdict(list)
    for i, s in shapes.items():
        if clips[i].emotion == "neutral":
            neutral[(clips[i].actor, clips[i].view)].append(s)
    means = {k: _centred(np.concatenate(v).mean(0)) for k, v in neutral.items()}
    result = {}
    for i, s in shapes.items():
        mean = means.get((clips[i].actor, clips[i].view))
        if mean is not None:
            result[i] = _distance(s, mean), read[i][1]
    return result


def _centred(points: np.ndarray) -> np.ndarray:
    """(..., 68) complex points (x + iy) of (..., 68, 2) ones, centred."""
    z = points[..., 0] + 1j * points[..., 1]
    return z - z.mean(-1, keepdims=True)


def _distance(frames: np.ndarray, mean: np.ndarray) -> float:
    """Median over frames of the mean point distance between each frame, similarity-aligned onto `mean`
    (complex least squares), and `mean`, over mean's inter-ocular distance."""
    z, m = _centred(frames[:, EXPRESSION_POINTS]), mean[EXPRESSION_POINTS]
    m = m - m.mean()
    a = (z.conj() * m).sum(1) / (np.abs(z) ** 2).sum(1)
    iod = abs(mean[36:42].mean() - mean[42:48].mean())
    return float(np.median(np.abs(a[:, None] * z - m).mean(1)) / iod)


def _crop_landmarks(path: Path) -> Optional[tuple[np.ndarray, float]]:
    """(N, 68, 2) landmarks_crop of a faces.npz's valid frames whose mouth opening is at most the median of
    those, and the median inter-ocular distance of its valid landmarks_src; None where it cannot be read."""
    try:
        with np.load(path, allow_pickle=False) as z:
            points, valid = z["landmarks_crop"].astype(np.float64), z["valid"].astype(bool)
            src = z["landmarks_src"][valid].astype(np.float64)
    except (OSError, KeyError, ValueError):
        return None
    iod = interocular(src)
    points = points[valid & np.isfinite(points).all(axis=(1, 2))]
    mouth = mouth_opening(points)
    return (points[mouth <= np.median(mouth)] if len(points) else points), float(np.median(iod)) if len(iod) else 0.0


def level_order_breaks(clips: Sequence[ClipRow], strength: Mapping[int, float]) -> set[int]:
    """Clips (by index) of an emotional level L whose strength is not above the median of level L - 1, or not
    below that of level L + 1, of the same actor, emotion and view."""
    groups = defaultdict(lambda: defaultdict(dict))
    for i, s in strength.items():
        c = clips[i]
        if c.emotion != "neutral" and c.level is not None:
            groups[(c.actor, c.emotion, c.view)][c.level][i] = s
    breaks = set()
    for levels in groups.values():
        medians = {lv: float(np.median(list(v.values()))) for lv, v in levels.items()}
        for lv, members in levels.items():
            lo, hi = medians.get(lv - 1, -np.inf), medians.get(lv + 1, np.inf)
            breaks |= {i for i, s in members.items() if not lo < s < hi}
    return breaks


def level_order_share(clips: Sequence[ClipRow]) -> float:
    """Share of (actor, emotion) pairs whose median expression_strength per level rises strictly with the level
    (pairs with at least two measured levels); NaN without any."""
    by_pair = defaultdict(lambda: defaultdict(list))
    for c in clips:
        if c.emotion != "neutral" and _finite(c.expression_strength):
            by_pair[(c.actor, c.emotion)][c.level].append(c.expression_strength)
    ordered = [np.all(np.diff([np.median(v[lv]) for lv in sorted(v)]) > 0) for v in by_pair.values() if len(v) > 1]
    return float(np.mean(ordered)) if ordered else float("nan")


def weak_expressions(clips: Sequence[ClipRow], strength: Mapping[int, float], ratio: float) -> set[int]:
    """Emotional clips (by index) whose strength is below `ratio` x the median of their actor's and view's
    neutral clips."""
    neutral = defaultdict(list)
    for i, s in strength.items():
        if clips[i].emotion == "neutral":
            neutral[(clips[i].actor, clips[i].view)].append(s)
    floor = {k: ratio * float(np.median(v)) for k, v in neutral.items()}
    return {i for i, s in strength.items()
            if clips[i].emotion != "neutral" and s < floor.get((clips[i].actor, clips[i].view), -np.inf)}


def duplicates(fingerprints: Mapping[str, list], min_corr: float) -> dict[str, str]:
    """take_id -> the earlier take (by id) of the same actor whose reference-audio fingerprint correlates with
    its own at least `min_corr` (over the actor's shortest fingerprint: one matrix product per actor)."""
    by_actor = defaultdict(list)
    for take_id in sorted(fingerprints):
        if len(fingerprints[take_id]) > 1:
            by_actor[take_id.split("_", 1)[0]].append(take_id)
    found = {}
    for takes in by_actor.values():
        n = min(len(fingerprints[t]) for t in takes)
        x = np.array([fingerprints[t][:n] for t in takes], np.float64)
        x = (x - x.mean(1, keepdims=True)) / np.maximum(x.std(1, keepdims=True), 1e-9)
        corr = x @ x.T / n
        for j, later in enumerate(takes):
            match = next((takes[i] for i in np.flatnonzero(corr[:j, j] >= min_corr) if takes[i] not in found), None)
            if match:
                found[later] = match
    return found
