"""A moving real face with known landmarks, written as an H.264 clip: ground truth for faces tests and benchmarks.

The astronaut photo of `skimage.data` is projected into the frame as a plane turned by `yaw`
degrees (perspective), drifting and rolling slowly, over a textured backdrop, with camera noise.
Its 68 landmarks come from one dlib fit on the 2x-upscaled still and are carried through the
same projection, so each frame's true landmarks are exact.
"""
from __future__ import annotations

from fractions import Fraction
from functools import lru_cache
from pathlib import Path

import cv2
import numpy as np

from meadkit.corpus.names import MEAD_FPS
from meadkit.faces.align import STABLE, interocular
from meadkit.faces.backends import HogDetector, dlib_model_path
from meadkit.media.video import VideoWriter


@lru_cache(maxsize=1)
def photo() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut photo (BGR) and its 68 landmarks (dlib fit at 2x, in photo pixels)."""
    import dlib
    from skimage import data

    bgr = cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR)
    big = cv2.resize(bgr, None, fx=2, fy=2, interpolation=cv2.INTER_CUBIC)
    det = max(HogDetector()(big), key=lambda d: d.score)
    sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
    s = sp(cv2.cvtColor(big, cv2.COLOR_BGR2GRAY), dlib.rectangle(*[int(v) for v in det.box]))
    return bgr, np.array([(p.x, p.y) for p in s.parts()], np.float64) / 2


def projection(t: float, yaw_deg: float, width: int, height: int, iod_px: float) -> np.ndarray:
    """3x3 homography photo -> frame at time t (s): yaw turn, slow drift of ~0.3 face widths, +-3 degree roll."""
    _, lm = photo()
    c = lm[STABLE].mean(0)
    u = np.radians(yaw_deg)
    f = 4.0 * interocular(lm)
    turn = np.array([[f * np.cos(u), 0, 0], [0, f, 0], [np.sin(u), 0, f]]) @ np.array([[1, 0, -c[0]], [0, 1, -c[1]], [0, 0, 1]])
    s = iod_px / interocular(lm)
    r = np.radians(3.0 * np.sin(2 * np.pi * t / 2.9))
    dx = 0.3 * iod_px * np.sin(2 * np.pi * t / 3.7)
    dy = 0.15 * iod_px * np.sin(2 * np.pi * t / 2.3)
    place = np.array([[s * np.cos(r), -s * np.sin(r), width / 2 + dx], [s * np.sin(r), s * np.cos(r), height * 0.45 + dy], [0, 0, 1]])
    return place @ turn


def _project(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    q = np.c_[pts, np.ones(len(pts))] @ h.T
    return q[:, :2] / q[:, 2:]


def write_clip(path: Path | str, n_frames: int, yaw_deg: float = 0.0, width: int = 480, height: int = 270,
               iod_px: float | None = None, noise: float = 4.0, seed: int = 0, fps: Fraction = MEAD_FPS,
               face: bool = True, encoding: str = "crf") -> np.ndarray:
    """Write the clip (`encoding` as `VideoWriter`'s: 'mead' for MEAD's own); return its true landmarks
    (n_frames, 68, 2). `face=False` writes the backdrop only."""
    img, lm = photo()
    rng = np.random.default_rng(seed)
    iod_px = iod_px or 0.11 * width
    back = cv2.resize(rng.integers(40, 200, (height // 16 + 1, width // 16 + 1, 3), dtype=np.uint8), (width, height),
                      interpolation=cv2.INTER_CUBIC)
    truth = np.zeros((n_frames, 68, 2))
    grain = rng.normal(0, noise, (5, height, width, 3)).astype(np.int16) if noise else None
    with VideoWriter(str(path), fps, width, height, crf=20, encoding=encoding) as w:
        for i in range(n_frames):
            h = projection(i / float(fps), yaw_deg, width, height, iod_px)
            frame = back.copy()
            if face:
                cv2.warpPerspective(img, h, (width, height), dst=frame, flags=cv2.INTER_LINEAR,
                                    borderMode=cv2.BORDER_TRANSPARENT)
                truth[i] = _project(h, lm)
            if noise:  # camera noise: a fresh pick of pre-drawn grain each frame
                frame = np.clip(frame + grain[rng.integers(5)], 0, 255).astype(np.uint8)
            w.write(frame)
    return truth


def per_frame_landmarks(source, start: int, n_frames: int, backend) -> tuple[np.ndarray, np.ndarray]:
    """The common peer approach, for comparison: detect on every full-resolution frame, fit in the main box,
    no tracking or smoothing. Returns landmarks (T, 68, 2) (NaN where nothing was found) and found (T,)."""
    from meadkit.faces.track import main_face
    from meadkit.media.video import iter_frames

    out = np.full((n_frames, 68, 2), np.nan)
    for k, fr in enumerate(iter_frames(source, start, n_frames)):
        dets = backend.detector(fr.image)
        if dets:
            h, w = fr.image.shape[:2]
            out[k] = backend.fit([fr.image], main_face(dets, w, h).box)[0][0]
    return out, np.isfinite(out[:, 0, 0])
