"""Follow the main speaker's face through a video: fit landmarks on every full-resolution frame from
the box given by the previous frame's landmarks; search the whole (downscaled) frame only while no
face is tracked, and check the track now and then with the detector on a small region around it.

Tracking confidence is the normalised cross-correlation of the aligned upper face (eyes, nose)
with the same patch at the last confirmed detection; when it drops, the frame is marked without a
face and the search runs again. Faces turned sideways (60-degree views) that the frontal detector
misses are looked for on a horizontally widened copy (undoing the turn's foreshortening), and then
fitted on widened regions too; a second detector (mediapipe's full-range one, or dlib's CNN) runs when HOG
finds nothing. Every fit goes through the gate (`gate.judge`): the mesh and the 68-point model are compared
and an implausible or leaping shape is not a face. When a face is found after frames without one, the
tracker also runs backwards from it over the frames the caller still holds (`backtrack`).
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, Optional, Sequence

import cv2
import numpy as np

from meadkit.faces.align import STABLE, TEMPLATE_68, box_from_landmarks, roll_angle, similarity
from meadkit.faces.backends import Backend, Box, Detection, region
from meadkit.faces.gate import Verdict, judge, jumped
from meadkit.faces.model3d import PoseFit, fit_pose

if TYPE_CHECKING:
    from meadkit.faces.stage import FacesConfig

_PATCH_W, _PATCH_H = 32, 20
_EAGER_SEARCH = 6  # frames after a loss during which the search runs on every frame
_WEAK_EVERY = 3  # while the track is weak, check it with the detector every this many frames
_SURE_UNWIDENED = 0.5  # HOG score above which an unwidened find ends the search (synth: 0.59-1.32 on 0-30 degree
# views, which the widened search never found; 60-degree views are found only widened)
_ROI_FACE = 100.0  # face box side (px) in the region the track is checked on (HOG finds faces from ~80 px)
_PATCH_DST = (TEMPLATE_68[STABLE] - [0.05, 0.0]) * (_PATCH_W / 0.9)
# A mirrored check vouches for the next frames only when it passed within this share of mirror_max, and only while
# the mesh's pose stays within _MIRROR_DRIFT degrees of the checked one. Replayed on the checks of the faces
# benchmark's 1080p 30-degree views (417; typical passes 0.4-0.8 of mirror_max), every 3rd frame at 0.7 skips 56%
# of them and lets through 3 frames a check would refuse (0.6: 49% and 1; 0.8: 61% and 4).
_MIRROR_TRUST = 0.7
_MIRROR_DRIFT = 6.0
# Both landmarkers agreeing within this share of agree_max, on a face read within frontal_yaw - _MESH_MARGIN
# degrees, let the mesh sit out the next frame(s) (`Tracker._spare`).
_MESH_TRUST = 0.5
_MESH_MARGIN = 6.0


@dataclass
class Observation:
    """One frame's raw result: accepted landmarks (68, 2) in source pixels or None, tracking confidence in [0, 1],
    whether a detector ran, the fitted shape's plausibility in [0, 1], why a fit was rejected (gate.REJECTS),
    the mesh's vertices (N, 3) when it ran and saw a face, which landmarker gave the points (fit / mesh), and
    whether the mesh sat out the frame."""

    landmarks: Optional[np.ndarray]
    score: float
    detected: bool
    quality: float = 0.0
    reject: Optional[str] = None
    mesh: Optional[np.ndarray] = None
    source: Optional[str] = None
    spared: bool = False  # the mesh sat out this frame (`Tracker._spare`)


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
    (one for dlib; several for batched GPU fitting) and returns one Observation per frame; `config` gives its
    detection, tracking and gate settings, `least_yaw` how far the face is known to be turned at least."""

    def __init__(self, backend: Backend, config: FacesConfig, least_yaw: float = 0.0):
        self.backend, self.config = backend, config
        self.least_yaw = least_yaw  # the face is known to be turned at least this far (degrees; see gate.judge)
        self.stretch = 1.0  # horizontal widening the tracked face is fitted at (> 1 for faces turned sideways)
        self.weak = False  # the last frame's confidence fell below redetect_score: check the track soon
        self.landmarks: Optional[np.ndarray] = None  # last good landmarks (the track)
        self.anchor: Optional[np.ndarray] = None  # patch at the last confirmed detection
        self.since_detect = 0
        self.lost_frames = 0  # frames since the face was last seen (or since the start, before it is first seen)
        self.since_fallback = config.fallback_every  # frames since the slow fallback detector last ran
        self.fallback_calls = 0
        self.detector_calls = 0
        self.restarted = False  # the last step started the track afresh from a detection (see backtrack)
        self.start_rejects: dict[str, int] = {}  # detections the gate refused to start on, by reason
        self.vouched, self.vouched_pose = 0, None  # frames the last mirrored check still vouches for, and its pose
        self.spared = 0  # frames the mesh may still sit out (a close agreement of both landmarkers vouches for them)
        self._clahe = cv2.createCLAHE(clipLimit=2.0, tileGridSize=(8, 8))

    def _stretches(self, first: float) -> list[float]:
        """Widening factors to detect at: `first`, then the other one (if widening is enabled)."""
        if self.config.detect_stretch <= 1.0:
            return [1.0]
        return [first, 1.0 if first != 1.0 else self.config.detect_stretch]

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

    def _search_image(self, image: np.ndarray) -> tuple[np.ndarray, float]:
        """`image` downscaled to detect_width, as grey with its contrast equalised locally (CLAHE: low-contrast and
        greyscale faces), and the scale."""
        s = min(1.0, self.config.detect_width / image.shape[1])
        small = cv2.resize(image, (round(image.shape[1] * s), round(image.shape[0] * s)),
                           interpolation=cv2.INTER_AREA) if s < 1 else image
        grey = small if small.ndim == 2 else cv2.cvtColor(small, cv2.COLOR_BGR2GRAY)
        return (self._clahe.apply(np.ascontiguousarray(grey)) if self.config.search_clahe else grey), s

    def search(self, image: np.ndarray) -> list[tuple[list[Detection], float]]:
        """Candidate faces anywhere in `image`, best first, as (detections in full-size pixels, widening): HOG on
        the downscaled frame (stopping when it is sure), the second detector (mediapipe full-range: turned faces),
        HOG on a widened copy; the slow CNN only as a last resort a few times a clip."""
        small, s = self._search_image(image)
        self.detector_calls += 1
        hog = []
        for k in self._stretches(1.0):
            if dets := self._run(self.backend.detector, small, k, 1.0):
                hog.append((dets, k))
                if k == 1.0 and max(d.score for d in dets) >= _SURE_UNWIDENED:
                    return [([Detection(tuple(v / s for v in d.box), d.score) for d in dets], k)]  # not turned
        # a turned face may also be seen unwidened, but with a much weaker score than widened: surer first
        hog.sort(key=lambda f: -max(d.score for d in f[0]))
        second = self.backend.second(small) if self.backend.second is not None else []
        found = ([(second, 1.0)] if second else []) + hog
        fb = self.backend.fallback
        if (not found and fb is not None and self.fallback_calls < self.config.fallback_max
                and self.since_fallback >= self.config.fallback_every):
            self.fallback_calls += 1
            self.since_fallback = 0
            region, x0, y0 = self._fallback_region(small, s)
            found.append((self._run(fb, region, 1.0, 1.0, x0, y0), 1.0))
        return [([Detection(tuple(v / s for v in d.box), d.score) for d in dets], k) for dets, k in found if dets]

    def _fallback_region(self, small: np.ndarray, s: float) -> tuple[np.ndarray, int, int]:
        """Where the slow fallback looks on the search image (downscaled by `s`): around a lost face (its last box and
        a side more each way: ~1/3 of a 1080p frame's pixels, and its cost, ~2 s on the whole), else everywhere;
        as (region, x0, y0)."""
        if self.landmarks is None:
            return small, 0, 0
        box = tuple(v * s for v in self.track_box())
        side = max(box[2] - box[0], box[3] - box[1])
        rx0, ry0, rx1, ry1 = region(box, side, side, small.shape[1], small.shape[0])
        if rx1 - rx0 < 8 or ry1 - ry0 < 8:  # the last box left the frame: look everywhere
            return small, 0, 0
        return np.ascontiguousarray(small[ry0:ry1, rx0:rx1]), rx0, ry0

    def check(self, image: np.ndarray, box: Box) -> tuple[list[Detection], float]:
        """Faces on a small region around `box` (scaled so a face is ~_ROI_FACE px), boxes in full-size pixels,
        and the widening they were found at (the track's first, then the other)."""
        h, w = image.shape[:2]
        side = box[3] - box[1]
        self.detector_calls += 1
        for k in self._stretches(self.stretch):
            mx, my = 0.5 * side / k, 0.5 * side
            x0, y0, x1, y1 = region(box, mx, my, w, h)
            if x1 - x0 < 8 or y1 - y0 < 8:
                break
            scale = min(1.0, _ROI_FACE / max(side, 1.0))
            dets = self._run(self.backend.detector, image[y0:y1, x0:x1], scale * k, scale, x0, y0)
            if dets:
                return dets, k
        return [], self.stretch

    def _observe(self, images: Sequence[np.ndarray], box: Box, angle: float, steady: bool = False) -> list[Observation]:
        """Fit every image in `box`, gate each fit, score it against the appearance anchor (not yet accepted).
        With a mesh, the 68-point model runs only where the gate could choose its points (the mesh's pose within
        frontal_yaw: beyond it `judge` takes the mesh's), and the mesh's mirrored fit only where the mesh's points
        are chosen; on a `steady` track's next frames, a recent check may vouch for the mirrored fit
        (`_mirror_due`) and a recent close agreement of both landmarkers for the mesh itself (`_spare`)."""
        mesher, cfg = self.backend.mesh, self.config
        fits = self.backend.fit(images, box, self.stretch) if mesher is None else None
        out = []
        for k, im in enumerate(images):
            spared = steady and mesher is not None and self.spared > 0
            if mesher is None:
                mesh, m68, pose, (pts, bscore) = None, None, None, fits[k]
            else:
                mesh, m68, pose, pts, bscore = self._fit_both(im, box, angle, spared)
            mirrored = (lambda im=im: mesher.fit68_mirrored(im, box, angle)) if mesher and not spared else None
            v = judge(pts, m68, cfg, mirrored, pose, mirror_due=not steady or self._mirror_due(pose),
                      least_yaw=self.least_yaw)
            if steady:
                self._vouch(v)
                self._spare(v, spared)
            if v.points is None:
                out.append(Observation(None, 0.0, False, v.quality, v.reject, mesh, v.source, spared))
                continue
            ncc = float(np.dot(upper_face_patch(im, v.points), self.anchor)) if self.anchor is not None else 1.0
            score = max(0.0, ncc) * (1.0 if bscore is None or v.source != "fit" else bscore)
            out.append(Observation(v.points, score, False, v.quality, None, mesh, v.source, spared))
        return out

    def _fit_both(self, image: np.ndarray, box: Box, angle: float, spared: bool):
        """The mesh (unless `spared`), its 68 points and pose, and the 68-point fit where the gate could choose it:
        (mesh, mesh68, pose, points, score)."""
        mesh = None if spared else self.backend.mesh.fit(image, box, angle)
        m68 = self.backend.mesh.to68(mesh) if mesh is not None else None
        pose = fit_pose(m68) if m68 is not None else None
        near = max(abs(pose.yaw) if pose is not None else 0.0, self.least_yaw) <= self.config.frontal_yaw
        pts, score = self.backend.fit([image], box, self.stretch)[0] if self.backend.fits68 and near else (None, None)
        return mesh, m68, pose, pts, score

    def _spare(self, v: Verdict, spared: bool) -> None:
        """After a frame where both landmarkers agreed closely on a face well inside frontal_yaw, the mesh may sit
        out the next mesh_every - 1 frames (the 68-point fit, chosen there anyway, is judged alone: plausibility,
        pose, tracking); anything else, or a spared frame's end, makes it run on the next."""
        cfg = self.config
        close = (not spared and v.points is not None and v.source == "fit" and v.agree is not None
                 and v.agree <= _MESH_TRUST * cfg.agree_max and abs(v.pose.yaw) <= cfg.frontal_yaw - _MESH_MARGIN)
        self.spared = cfg.mesh_every - 1 if close else self.spared - 1 if spared and v.points is not None else 0

    def _mirror_due(self, pose: Optional[PoseFit]) -> bool:
        """Whether the mesh's fit on this frame needs its mirrored check: yes, but for up to mirror_every - 1 frames
        after one that passed with room to spare while the head has not turned or tilted since."""
        ref = self.vouched_pose
        return (self.vouched <= 0 or pose is None or ref is None or abs(pose.yaw - ref.yaw) > _MIRROR_DRIFT
                or abs(pose.pitch - ref.pitch) > _MIRROR_DRIFT)

    def _vouch(self, v: Verdict) -> None:
        """Count this frame's verdict against the last mirrored check: a new check vouches afresh (or not at all),
        an accepted frame uses one up (where the 68-point fit was chosen, the mesh agreed with it), a refused one
        ends the vouching."""
        if v.mirror is not None:
            self.vouched = self.config.mirror_every - 1 if v.mirror <= _MIRROR_TRUST * self.config.mirror_max else 0
            self.vouched_pose = v.pose
        else:
            self.vouched = self.vouched - 1 if v.points is not None else 0

    def _accept(self, ob: Observation, previous: Optional[np.ndarray]) -> Observation:
        """The observation as the track takes it: rejected when tracking is weak or the points leapt."""
        if ob.landmarks is None:
            return ob
        lost = self.config.lost_score if ob.mesh is None else min(self.config.lost_score, self.config.mesh_lost_score)
        reject = ("weak tracking" if ob.score < lost
                  else "jump" if previous is not None and jumped(ob.landmarks, previous, self.config.jump_max)
                  else None)
        if reject is not None:
            ob.landmarks, ob.reject = None, reject
        return ob

    def start(self, image: np.ndarray, box: Box, stretch: float = 1.0) -> Optional[np.ndarray]:
        """Fit from a detector box (found at `stretch`), refit from the box those landmarks imply, make the
        result the new anchor and track. Returns the landmarks, or None (track unchanged) when the gate
        rejects the fit: the detection was not a believable face."""
        saved = self.stretch, self.landmarks, self.anchor
        self.stretch, self.anchor, self.vouched, self.spared = stretch, None, 0, 0
        ob, = self._observe([image], box, 0.0)
        if ob.landmarks is not None:
            self.landmarks = ob.landmarks
            ob, = self._observe([image], self.track_box(), roll_angle(ob.landmarks))
            if ob.landmarks is not None:
                self.landmarks, self.anchor = ob.landmarks, upper_face_patch(image, ob.landmarks)
                return ob.landmarks
        self.stretch, self.landmarks, self.anchor = saved
        self.start_rejects[ob.reject or "no fit"] = self.start_rejects.get(ob.reject or "no fit", 0) + 1
        return None

    def restart(self, image: np.ndarray, candidates: list[tuple[list[Detection], float]]) -> bool:
        """Start the track on the best believable detection: the lost face where it is seen again, else the main
        face in view, trying the candidates of each detector in turn."""
        h, w = image.shape[:2]
        track_box = self.track_box() if self.landmarks is not None else None
        for dets, k in candidates:
            match = [d for d in dets if track_box is not None and iou(d.box, track_box) > 0.4]
            best = max(match, key=lambda d: iou(d.box, track_box)) if match else main_face(dets, w, h)
            if self.start(image, best.box, k) is not None:
                return True
        return False

    def step(self, images: Sequence[np.ndarray]) -> list[Observation]:
        """Landmarks for the next frames of the video."""
        first = images[0]
        detected = refresh = self.restarted = False
        if self.landmarks is None or self.lost_frames > 0:
            # search every frame just after a loss, then only every k frames (a clip without a face stays cheap)
            if self.since_detect >= self.config.detect_every or self.lost_frames < _EAGER_SEARCH:
                candidates, detected = self.search(first), True
                self.since_detect = 0
                self.restarted = self.restart(first, candidates)
        elif self.since_detect >= (_WEAK_EVERY if self.weak else self.config.detect_every):
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
        previous = None if self.restarted or self.lost_frames > 0 else self.landmarks
        for i, ob in enumerate(self._observe(images, self.track_box(), roll_angle(self.landmarks), steady=True)):
            ob = self._accept(ob, previous)
            if ob.landmarks is None:
                self.vouched = self.spared = 0
            ob.detected = detected and i == 0
            obs.append(ob)
            if ob.landmarks is not None:
                self.landmarks = previous = ob.landmarks
        if refresh and obs[0].landmarks is not None:
            self.anchor = upper_face_patch(first, obs[0].landmarks)
        # when lost, keep the last good landmarks: the next frames retry there and the search runs again
        self.lost_frames = 0 if obs[-1].landmarks is not None else self.lost_frames + len(images)
        self.weak = obs[-1].score < self.config.redetect_score
        return obs

    def backtrack(self, images: Sequence[np.ndarray]) -> list[Observation]:
        """Track backwards from the current landmarks over `images` (the frames before the current one, latest
        first), stopping at the first frame the gate rejects; the track's own state is left as it was."""
        saved = self.landmarks, self.weak
        out = []
        for im in images:
            ob, = self._observe([im], self.track_box(), roll_angle(self.landmarks))
            ob = self._accept(ob, self.landmarks)
            if ob.landmarks is None:
                break
            out.append(ob)
            self.landmarks = ob.landmarks
        self.landmarks, self.weak = saved
        return out
