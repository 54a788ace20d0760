"""Follow the main speaker's face through a video: fit landmarks on every full-resolution frame from
the box given by the previous frame's landmarks; search the whole (downscaled) frame only while no
face is tracked, and check the track now and then with the detector on a small region around it.

Tracking confidence is the normalised cross-correlation of the aligned upper face (eyes, nose)
with the same patch at the last confirmed detection; when it drops, the frame is marked without a
face and the search runs again. Faces turned sideways (60-degree views) that the frontal detector
misses are looked for on a horizontally widened copy (undoing the turn's foreshortening), and then
fitted on widened regions too; a slow second detector (CNN) runs at most a few times per clip.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Optional, Sequence

import cv2
import numpy as np

from meadkit.faces.align import STABLE, TEMPLATE_68, box_from_landmarks, similarity
from meadkit.faces.backends import Backend, Box, Detection

_PATCH_W, _PATCH_H = 32, 20
_EAGER_SEARCH = 6  # frames after a loss during which the search runs on every frame
_WEAK_EVERY = 3  # while the track is weak, check it with the detector every this many frames
_SURE_UNWIDENED = 0.5  # HOG score above which an unwidened find ends the search (synth: 0.59-1.32 on 0-30 degree
# views, which the widened search never found; 60-degree views are found only widened)
_ROI_FACE = 100.0  # face box side (px) in the region the track is checked on (HOG finds faces from ~80 px)
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
                 lost_score: float = 0.6, fallback_every: int = 30, redetect_score: float = 0.85,
                 detect_stretch: float = 2.0, fallback_max: int = 1):
        self.backend = backend
        self.detect_every, self.detect_width = max(1, detect_every), detect_width
        self.lost_score, self.fallback_every = lost_score, max(1, fallback_every)
        self.redetect_score = redetect_score
        self.detect_stretch, self.fallback_max = detect_stretch, fallback_max
        self.stretch = 1.0  # horizontal widening the tracked face is fitted at (> 1 for faces turned sideways)
        self.weak = False  # the last frame's confidence fell below redetect_score: check the track soon
        self.landmarks: Optional[np.ndarray] = None  # last good landmarks (the track)
        self.anchor: Optional[np.ndarray] = None  # patch at the last confirmed detection
        self.since_detect = 0
        self.lost_frames = 0  # frames since the face was last seen (or since the start, before it is first seen)
        self.since_fallback = fallback_every  # frames since the slow fallback detector last ran
        self.fallback_calls = 0
        self.detector_calls = 0

    def _stretches(self, first: float) -> list[float]:
        """Widening factors to detect at: `first`, then the other one (if widening is enabled)."""
        if self.detect_stretch <= 1.0:
            return [1.0]
        return [first, 1.0 if first != 1.0 else self.detect_stretch]

    def track_box(self) -> Box:
        """Box for the next frame: where the detector would put it on the last landmarks (placed in widened pixels,
        x times stretch, where the face looks frontal). Not nudged towards actual detector boxes: those are coarse
        (HOG's cells and pyramid steps), and fits from landmark boxes were as accurate and steadier."""
        x0, y0, x1, y1 = box_from_landmarks(self.landmarks * np.array([self.stretch, 1.0]))
        return x0 / self.stretch, y0, x1 / self.stretch, y1

    def _run(self, detector, image: np.ndarray, sx: float, sy: float, x0: float = 0.0, y0: float = 0.0):
        """Detections on `image` resized by (sx, sy), boxes mapped back to the frame (offset by x0, y0)."""
        h, w = image.shape[:2]
        size = (max(1, round(w * sx)), max(1, round(h * sy)))
        small = image if size == (w, h) else cv2.resize(
            image, size, interpolation=cv2.INTER_AREA if sx <= 1 and sy <= 1 else cv2.INTER_LINEAR)
        return [Detection((x0 + d.box[0] / sx, y0 + d.box[1] / sy, x0 + d.box[2] / sx, y0 + d.box[3] / sy), d.score)
                for d in detector(small)]

    def search(self, image: np.ndarray) -> tuple[list[Detection], float]:
        """Faces anywhere in `image` (downscaled to detect_width), boxes in full-size pixels, and the widening
        they were found at: the detector on the copy and on a widened copy (the surer one wins), else (rarely)
        the slow fallback detector."""
        s = min(1.0, self.detect_width / image.shape[1])
        small = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                           interpolation=cv2.INTER_AREA) if s < 1 else image
        self.detector_calls += 1
        # a turned face may also be seen unwidened, but with a much weaker score than widened: keep the surer
        found = []
        for k in self._stretches(1.0):
            if dets := self._run(self.backend.detector, small, k, 1.0):
                found.append((dets, k))
                if max(d.score for d in dets) >= _SURE_UNWIDENED:
                    break  # a face this clear unwidened is not turned sideways: skip the (2x dearer) widened search
        if found:
            dets, k = max(found, key=lambda f: max(d.score for d in f[0]))
            return [Detection(tuple(v / s for v in d.box), d.score) for d in dets], k
        fb = self.backend.fallback
        if (fb is not None and self.fallback_calls < self.fallback_max and self.since_fallback >= self.fallback_every):
            self.fallback_calls += 1
            self.since_fallback = 0
            dets = fb(small)
            return [Detection(tuple(v / s for v in d.box), d.score) for d in dets], 1.0
        return [], 1.0

    def check(self, image: np.ndarray, box: Box) -> tuple[list[Detection], float]:
        """Faces on a small region around `box` (scaled so a face is ~_ROI_FACE px), boxes in full-size pixels,
        and the widening they were found at (the track's first, then the other)."""
        h, w = image.shape[:2]
        side = box[3] - box[1]
        self.detector_calls += 1
        for k in self._stretches(self.stretch):
            mx, my = 0.5 * side / k, 0.5 * side
            x0, y0 = max(0, int(box[0] - mx)), max(0, int(box[1] - my))
            x1, y1 = min(w, int(box[2] + mx) + 1), min(h, int(box[3] + my) + 1)
            if x1 - x0 < 8 or y1 - y0 < 8:
                break
            scale = min(1.0, _ROI_FACE / max(side, 1.0))
            dets = self._run(self.backend.detector, image[y0:y1, x0:x1], scale * k, scale, x0, y0)
            if dets:
                return dets, k
        return [], self.stretch

    def _fit(self, images: Sequence[np.ndarray], box: Box) -> list[tuple[np.ndarray, float]]:
        out = []
        for im, (pts, bscore) in zip(images, self.backend.fit(images, box, self.stretch)):
            if not np.isfinite(pts).all():
                out.append((pts, 0.0))
                continue
            ncc = float(np.dot(upper_face_patch(im, pts), self.anchor)) if self.anchor is not None else 1.0
            out.append((pts, max(0.0, ncc) * (1.0 if bscore is None else bscore)))
        return out

    def start(self, image: np.ndarray, box: Box, stretch: float = 1.0) -> np.ndarray:
        """Fit from a detector box (found at `stretch`), refit from the box those landmarks imply, make the
        result the new anchor and track."""
        self.stretch = stretch
        (pts, _), = self.backend.fit([image], box, stretch)
        self.landmarks = pts
        (pts, _), = self.backend.fit([image], self.track_box(), stretch)
        self.landmarks, self.anchor = pts, upper_face_patch(image, pts)
        return pts

    def step(self, images: Sequence[np.ndarray]) -> list[Observation]:
        """Landmarks for the next frames of the video."""
        first = images[0]
        h, w = first.shape[:2]
        detected = refresh = False
        if self.landmarks is None or self.lost_frames > 0:
            # search every frame just after a loss, then only every k frames (a clip without a face stays cheap)
            if self.since_detect >= self.detect_every or self.lost_frames < _EAGER_SEARCH:
                (dets, k), detected = self.search(first), True
                self.since_detect = 0
                track_box = self.track_box() if self.landmarks is not None else None
                match = [d for d in dets if track_box is not None and iou(d.box, track_box) > 0.4]
                best = max(match, key=lambda d: iou(d.box, track_box)) if match else None
                if best is not None or (dets and (track_box is None
                                                  or self._fit([first], track_box)[0][1] < self.lost_score)):
                    # restart on the lost face where it is seen again, else on the main face in view
                    self.start(first, (best or main_face(dets, w, h)).box, k)
        elif self.since_detect >= (_WEAK_EVERY if self.weak else self.detect_every):
            # check the track with the detector on a small region around it (cheap)
            track_box = self.track_box()
            (dets, k), detected = self.check(first, track_box), True
            self.since_detect = 0
            best = max(dets, key=lambda d: iou(d.box, track_box)) if dets else None
            if best is not None and k == self.stretch and not self.weak and iou(best.box, track_box) > 0.4:
                refresh = True  # the detector agrees: renew the appearance anchor
            elif best is not None and (k != self.stretch or iou(best.box, track_box) > 0.4):
                self.start(first, best.box, k)  # weak track, or the face is seen better at another widening
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
        # when lost, keep the last good landmarks: the next frames retry there and the search runs again
        self.lost_frames = 0 if obs[-1].landmarks is not None else self.lost_frames + len(images)
        self.weak = obs[-1].score < self.redetect_score
        return obs
