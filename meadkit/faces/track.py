"""Follow the main speaker's face through a video: detect on a downscaled copy only now and then,
fit landmarks on every full-resolution frame from the box given by the previous frame's landmarks.

Tracking confidence is the normalised cross-correlation of the aligned upper face (eyes, nose)
with the same patch at the last confirmed detection; when it drops, the frame is marked without a
face and the detector runs again (with a slower second detector for turned faces HOG misses).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from meadkit.faces.align import STABLE, TEMPLATE_68, box_from_landmarks, similarity
from meadkit.faces.backends import Backend, Box, Detection

_PATCH_W, _PATCH_H = 32, 20
_EAGER_SEARCH = 15  # frames after a loss during which the detector runs on every frame
_PATCH_DST = (TEMPLATE_68[STABLE] - [0.05, 0.0]) * (_PATCH_W / 0.9)


@dataclass
class Observation:
    """One frame's raw result: landmarks (68, 2) in source pixels or None, confidence in [0, 1], detector ran."""

    landmarks: Optional[np.ndarray]
    score: float
    detected: bool


def iou(a: Box, b: Box) -> float:
    """Intersection over union of two boxes."""
    ix = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    iy = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = ix * iy
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def main_face(dets: Sequence[Detection], width: int, height: int) -> Detection:
    """The detection most likely to be the speaker: large and near the centre of the frame."""
    half_diag = 0.5 * np.hypot(width, height)

    def rank(d: Detection) -> float:
        x0, y0, x1, y1 = d.box
        off = np.hypot((x0 + x1) / 2 - width / 2, (y0 + y1) / 2 - height / 2) / half_diag
        return (x1 - x0) * (y1 - y0) * (1.0 - 0.5 * off)

    return max(dets, key=rank)


def upper_face_patch(image: np.ndarray, landmarks: np.ndarray) -> np.ndarray:
    """Zero-mean, unit-norm grey patch of the eyes and nose, aligned by the landmarks."""
    m = similarity(landmarks[STABLE], _PATCH_DST)
    p = cv2.warpAffine(image, m, (_PATCH_W, _PATCH_H), flags=cv2.INTER_AREA, borderMode=cv2.BORDER_REPLICATE)
    p = (cv2.cvtColor(p, cv2.COLOR_BGR2GRAY) if p.ndim == 3 else p).astype(np.float32).ravel()
    p -= p.mean()
    n = float(np.linalg.norm(p))
    return p / n if n > 1e-3 else p


class Tracker:
    """Stateful face tracker over consecutive frames (see module doc). `step` takes a batch of frames
    (one for dlib; several for batched GPU fitting) and returns one Observation per frame."""

    def __init__(self, backend: Backend, detect_every: int = 15, detect_width: int = 640,
                 lost_score: float = 0.6, fallback_every: int = 30, redetect_score: float = 0.85):
        self.backend = backend
        self.detect_every, self.detect_width = max(1, detect_every), detect_width
        self.lost_score, self.fallback_every = lost_score, max(1, fallback_every)
        self.redetect_score = redetect_score
        self.weak = False  # the last frame's confidence fell below redetect_score: detect on the next one
        self.landmarks: Optional[np.ndarray] = None  # last good landmarks (the track)
        self.anchor: Optional[np.ndarray] = None  # patch at the last confirmed detection
        self.since_detect = 0
        self.lost_frames = 0  # frames since the face was last seen (or since the start, before it is first seen)
        self.since_fallback = fallback_every  # frames since the slow fallback detector last ran in vain
        self.detector_calls = 0
        self.box_fix = np.array([0.0, 0.0, 1.0])  # learnt detector-box offset (dx, dy per side) and size ratio

    def track_box(self) -> Box:
        """Box for the next frame: from the last landmarks, corrected towards where the detector puts it on this face."""
        x0, y0, x1, y1 = box_from_landmarks(self.landmarks)
        side = x1 - x0
        cx, cy = (x0 + x1) / 2 + self.box_fix[0] * side, (y0 + y1) / 2 + self.box_fix[1] * side
        half = side * self.box_fix[2] / 2
        return cx - half, cy - half, cx + half, cy + half

    def _learn_box(self, det: Box) -> None:
        x0, y0, x1, y1 = box_from_landmarks(self.landmarks)
        side = x1 - x0
        seen = np.array([((det[0] + det[2]) - (x0 + x1)) / 2 / side, ((det[1] + det[3]) - (y0 + y1)) / 2 / side,
                         (det[2] - det[0]) / side])
        self.box_fix = 0.5 * self.box_fix + 0.5 * seen

    def detect(self, image: np.ndarray) -> list[Detection]:
        """Faces on a copy of `image` downscaled to detect_width, boxes in full-size pixels (fallback while searching)."""
        h, w = image.shape[:2]
        s = min(1.0, self.detect_width / w)
        small = cv2.resize(image, (round(w * s), round(h * s)), interpolation=cv2.INTER_AREA) if s < 1 else image
        use_fallback = (self.landmarks is None or self.lost_frames > 0) and self.since_fallback >= self.fallback_every
        self.detector_calls += 1
        dets = self.backend.detect(small, use_fallback=use_fallback)
        if use_fallback and not dets:
            self.since_fallback = 0
        return [Detection(tuple(v / s for v in d.box), d.score) for d in dets]

    def _fit(self, images: Sequence[np.ndarray], box: Box) -> list[tuple[np.ndarray, float]]:
        out = []
        for im, (pts, bscore) in zip(images, self.backend.fit(images, box)):
            if not np.isfinite(pts).all():
                out.append((pts, 0.0))
                continue
            ncc = float(np.dot(upper_face_patch(im, pts), self.anchor)) if self.anchor is not None else 1.0
            out.append((pts, max(0.0, ncc) * (1.0 if bscore is None else bscore)))
        return out

    def start(self, image: np.ndarray, box: Box) -> Optional[np.ndarray]:
        """Fit from a detector box, refit from the box those landmarks imply, make the result the new anchor."""
        (pts, _), = self.backend.fit([image], box)
        (pts, _), = self.backend.fit([image], box_from_landmarks(pts))
        self.anchor = upper_face_patch(image, pts)
        return pts

    def step(self, images: Sequence[np.ndarray]) -> list[Observation]:
        """Landmarks for the next frames of the video."""
        first = images[0]
        h, w = first.shape[:2]
        detected = refresh = False
        searching = self.landmarks is None or self.lost_frames > 0 or self.weak
        # search every frame just after a loss, then only every k frames (a clip without a face stays cheap)
        if self.since_detect >= self.detect_every or (searching and self.lost_frames < _EAGER_SEARCH):
            dets, detected = self.detect(first), True
            self.since_detect = 0
            track_box = self.track_box() if self.landmarks is not None else None
            match = [d for d in dets if track_box is not None and iou(d.box, track_box) > 0.4]
            best = max(match, key=lambda d: iou(d.box, track_box)) if match else None
            if best is not None and not searching:  # the detector agrees: learn its box geometry, renew the anchor
                self._learn_box(best.box)
                refresh = True
            elif best is not None or (dets and (track_box is None
                                                or self._fit([first], track_box)[0][1] < self.lost_score)):
                # (re)start: on the lost face where it is seen again, else on the main face in view
                self.box_fix = np.array([0.0, 0.0, 1.0])
                self.landmarks = self.start(first, (best or main_face(dets, w, h)).box)
        self.since_detect += len(images)
        self.since_fallback += len(images)
        if self.landmarks is None:
            self.lost_frames += len(images)
            return [Observation(None, 0.0, detected and i == 0) for i in range(len(images))]
        obs = []
        for i, (pts, score) in enumerate(self._fit(images, self.track_box())):
            ok = score >= self.lost_score
            obs.append(Observation(pts if ok else None, score, detected and i == 0))
            if ok:
                self.landmarks = pts
        if refresh and obs[0].landmarks is not None:
            self.anchor = upper_face_patch(first, obs[0].landmarks)
        # when lost, keep the last good landmarks: the next frames retry there and the detector runs again
        self.lost_frames = 0 if obs[-1].landmarks is not None else self.lost_frames + len(images)
        self.weak = obs[-1].score < self.redetect_score
        return obs
