"""Crop modes (`[faces] crop`): how each frame's source -> crop transform follows the tracked face.

- `aligned`: a similarity per frame taking the eyes and nose onto a fixed template (rotation, scale and
  position normalised: the paper's crops).
- `fixed`: one similarity, that of the first frame with a face, for the whole clip (EAMM, EAT: head motion
  stays in the picture).
- `box`: a square per frame around the landmarks (`scale` x the larger side of their box, centre moved by
  `shift_y` x the side, negative is up: EMOTE's 1.35 / -0.1), no rotation; its side follows a one-pole
  smoother with a `box_smooth_s` time constant so speech does not pump the zoom (the centre comes from the
  already smoothed landmarks).
- `tube`: FOMM-style segments (EDTalk, DreamTalk, StyleTalk): the per-frame boxes are joined into one box per
  segment, a new segment starting where a frame's box overlaps the segment's joined box by IoU below
  `tube_iou`; each segment's box, enlarged by `scale`, is one fixed transform (head motion kept, no jitter).
  It needs the whole segment before its first crop, so this mode decodes the window twice.
Each transform is written per frame, so any mode's crops are re-derived from `landmarks_src`.
"""
from __future__ import annotations

import math
from typing import Optional

import numpy as np

from meadkit.faces.align import crop_transform

CROP_MODES = ("aligned", "fixed", "box", "tube")


def landmark_box(points: np.ndarray, scale: float, shift_y: float) -> tuple[float, float, float]:
    """(cx, cy, side) of the square box of (68, 2) points: `scale` x their box's larger side, centre moved
    down by `shift_y` x the side."""
    (x0, y0), (x1, y1) = np.nanmin(points, 0), np.nanmax(points, 0)
    side = scale * max(x1 - x0, y1 - y0)
    return float((x0 + x1) / 2), float((y0 + y1) / 2 + shift_y * side), float(side)


def box_transform(cx: float, cy: float, side: float, size: int) -> np.ndarray:
    """The 2x3 transform taking the square (cx, cy, side) onto a size x size crop (scale and shift only)."""
    s = size / max(side, 1e-6)
    return np.array([[s, 0.0, size / 2 - s * cx], [0.0, s, size / 2 - s * cy]])


class Framing:
    """Per-frame transforms of the streaming modes (aligned, fixed, box), fed the smoothed landmarks in order."""

    def __init__(self, config, fps: float):
        self.mode, self.size, self.config = config.crop, config.crop_size, config
        self.keep = math.exp(-1.0 / (fps * config.box_smooth_s)) if config.box_smooth_s > 0 else 0.0
        self.fixed: Optional[np.ndarray] = None
        self.side: Optional[float] = None
        self.last: Optional[np.ndarray] = None

    def __call__(self, points: Optional[np.ndarray]) -> Optional[np.ndarray]:
        """The transform of the next frame (its points, or None where it has no face: the last transform)."""
        if points is not None:
            self.last = self.peek(points, commit=True)
        return self.last

    def peek(self, points: np.ndarray, commit: bool = False) -> np.ndarray:
        """The transform these points give (`commit`: as the next frame's, updating the smoothed state)."""
        c = self.config
        if self.mode == "aligned":
            return crop_transform(points, self.size, c.margin)
        if self.mode == "fixed":
            m = self.fixed if self.fixed is not None else crop_transform(points, self.size, c.margin)
            if commit:
                self.fixed = m
            return m
        cx, cy, side = landmark_box(points, c.scale, c.shift_y)
        if self.side is not None:
            side = self.keep * self.side + (1 - self.keep) * side
        if commit:
            self.side = side
        return box_transform(cx, cy, side, self.size)


def _iou(a: np.ndarray, b: np.ndarray) -> float:
    """Intersection over union of two (x0, y0, x1, y1) boxes."""
    w = max(0.0, min(a[2], b[2]) - max(a[0], b[0]))
    h = max(0.0, min(a[3], b[3]) - max(a[1], b[1]))
    inter = w * h
    union = (a[2] - a[0]) * (a[3] - a[1]) + (b[2] - b[0]) * (b[3] - b[1]) - inter
    return inter / union if union > 0 else 0.0


def tube_segments(points: np.ndarray, valid: np.ndarray, iou_min: float) -> tuple[np.ndarray, list[np.ndarray]]:
    """Segment id per frame (T,) int16 and each segment's joined (x0, y0, x1, y1) box of the landmark boxes
    (frames without a face join the current segment; before the first face, the first segment)."""
    segment, boxes = np.zeros(len(valid), np.int16), []
    for i in np.flatnonzero(valid):
        box = np.r_[np.nanmin(points[i], 0), np.nanmax(points[i], 0)]
        if boxes and _iou(boxes[-1], box) >= iou_min:
            boxes[-1] = np.r_[np.minimum(boxes[-1][:2], box[:2]), np.maximum(boxes[-1][2:], box[2:])]
        else:
            boxes.append(box)
        segment[i:] = len(boxes) - 1
    return segment, boxes


def tube_transforms(points: np.ndarray, valid: np.ndarray, config, width: int, height: int
                    ) -> tuple[np.ndarray, np.ndarray]:
    """(T, 2, 3) transforms and (T,) segment ids of a tube-cropped track; the frame's centre if it has no face."""
    segment, boxes = tube_segments(points, valid, config.tube_iou)
    if not boxes:
        boxes = [np.array([0.0, 0.0, width, height], np.float64)]
    per_segment = []
    for x0, y0, x1, y1 in boxes:
        side = config.scale * max(x1 - x0, y1 - y0)
        per_segment.append(box_transform((x0 + x1) / 2, (y0 + y1) / 2 + config.shift_y * side, side, config.crop_size))
    return np.stack(per_segment)[segment], segment
