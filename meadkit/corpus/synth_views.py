"""Camera geometry of the synthetic corpus: each MEAD view is a perspective warp (homography) of
the rendered face plane, combined with slow head motion; landmarks go through the same matrices."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

#: (yaw, pitch) in degrees of each camera around the face; left = positive yaw, top = positive pitch.
VIEW_ANGLES = {
    "front": (0.0, 0.0),
    "left_30": (30.0, 0.0),
    "left_60": (60.0, 0.0),
    "right_30": (-30.0, 0.0),
    "right_60": (-60.0, 0.0),
    "top": (0.0, 25.0),
    "down": (0.0, -25.0),
}
#: Face width (jaw to jaw) as a fraction of the frame height.
FACE_HEIGHT_FRACTION = 0.28


@dataclass(frozen=True)
class Camera:
    """One view's fixed mounting: angles, where the face centre lands, its zoom and roll."""

    yaw: float
    pitch: float
    roll: float
    centre: tuple[float, float]  # pixels
    zoom: float


def make_camera(view: str, width: int, height: int, rng: np.random.Generator) -> Camera:
    """The camera of `view` with a little random mounting imperfection."""
    yaw, pitch = VIEW_ANGLES[view]
    return Camera(
        yaw=yaw + float(rng.uniform(-2, 2)),
        pitch=pitch + float(rng.uniform(-2, 2)),
        roll=float(rng.uniform(-2, 2)),
        centre=(width * (0.5 + rng.uniform(-0.04, 0.04)), height * (0.46 + rng.uniform(-0.03, 0.03))),
        zoom=float(rng.uniform(0.95, 1.05)),
    )


@dataclass(frozen=True)
class HeadMotion:
    """Slow head movement as sums of sinusoids: angles in degrees, shifts as fractions of the frame."""

    phases: tuple[float, ...]
    amp_yaw: float = 4.0
    amp_pitch: float = 3.0
    amp_roll: float = 2.5
    amp_shift: float = 0.015

    def at(self, t: float) -> tuple[float, float, float, float, float]:
        """(yaw, pitch, roll, dx, dy) at time t (seconds on the reference clock)."""
        p = self.phases
        s = np.sin
        return (
            self.amp_yaw * (0.7 * s(2 * np.pi * 0.13 * t + p[0]) + 0.3 * s(2 * np.pi * 0.37 * t + p[1])),
            self.amp_pitch * s(2 * np.pi * 0.21 * t + p[2]),
            self.amp_roll * s(2 * np.pi * 0.17 * t + p[3]),
            self.amp_shift * s(2 * np.pi * 0.11 * t + p[4]),
            self.amp_shift * s(2 * np.pi * 0.19 * t + p[5]),
        )


def random_motion(rng: np.random.Generator) -> HeadMotion:
    """Head motion with random phases."""
    return HeadMotion(tuple(float(x) for x in rng.uniform(0, 2 * np.pi, 6)))


def _rotation(yaw: float, pitch: float, roll: float) -> np.ndarray:
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, np.sin(y)], [0, 1, 0], [-np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), -np.sin(p)], [0, np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def homography(cam: Camera, motion: tuple, face_centre: tuple[float, float], width: int, height: int) -> np.ndarray:
    """3x3 matrix from face-image pixels to this camera's frame pixels at one instant.

    The face image is a plane through `face_centre`, turned by the camera angles plus the head
    motion, seen by a pinhole camera at 2.5 frame heights (focal length = distance, so a frontal
    face keeps its pixel scale)."""
    yaw, pitch, roll, dx, dy = motion
    d = 2.5 * height
    r = _rotation(cam.yaw + yaw, cam.pitch + pitch, cam.roll + roll)
    plane = np.array([[1, 0, -face_centre[0]], [0, 1, -face_centre[1]], [0, 0, 1]], np.float64)
    plane[:2] *= cam.zoom
    extr = np.column_stack([r[:, 0], r[:, 1], [0, 0, d]])
    u0, v0 = cam.centre[0] + dx * width, cam.centre[1] + dy * height
    k = np.array([[d, 0, u0], [0, d, v0], [0, 0, 1]])
    h = k @ extr @ plane
    return h / h[2, 2]


def apply_h(h: np.ndarray, pts: np.ndarray) -> np.ndarray:
    """Map (N, 2) points through a homography."""
    p = np.column_stack([pts, np.ones(len(pts))]) @ h.T
    return p[:, :2] / p[:, 2:3]


def backdrop(colour: tuple[int, int, int], width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A studio backdrop: the actor's colour with a soft light falloff and a mottled texture (BGR uint8)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.2, 0.5)
    light = 1.15 - 0.45 * np.hypot((xx - cx) / width, (yy - cy) / height)
    noise = cv2.resize(rng.normal(0, 1, (9, 16)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.asarray(colour, np.float32)[None, None] * (light + 0.06 * noise)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def composite(frame: np.ndarray, face_bgra: np.ndarray, h: np.ndarray) -> None:
    """Warp the BGRA face image by `h` onto `frame` (in place), only over the face's bounding box."""
    fh, fw = face_bgra.shape[:2]
    corners = apply_h(h, np.array([[0, 0], [fw, 0], [fw, fh], [0, fh]], np.float64))
    x0, y0 = np.maximum(np.floor(corners.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(corners.max(0)).astype(int), [frame.shape[1], frame.shape[0]])
    if x1 <= x0 or y1 <= y0:
        return
    shift = np.array([[1, 0, -x0], [0, 1, -y0], [0, 0, 1]], np.float64)
    warped = cv2.warpPerspective(face_bgra, shift @ h, (int(x1 - x0), int(y1 - y0)), flags=cv2.INTER_LINEAR,
                                 borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    a = warped[..., 3].astype(np.float32) * (1 / 255)
    face = cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR)
    roi = frame[y0:y1, x0:x1]
    roi[:] = cv2.blendLinear(face, roi, a, 1 - a)
