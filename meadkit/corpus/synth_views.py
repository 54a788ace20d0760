"""Camera geometry of the synthetic corpus: each MEAD view turns the actor's 3D head mesh by its
camera angles plus slow head motion and projects it through a pinhole camera; the face is painted
through that projection (`paint_mesh`) and its landmarks are the projected 3D points."""
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


def project(cam: Camera, motion: tuple, pivot: np.ndarray, pts: np.ndarray, depth: np.ndarray,
            width: int, height: int, turn: np.ndarray = np.eye(3)) -> tuple[np.ndarray, np.ndarray]:
    """Frame pixels (N, 2) and distance from the camera (N,) of face points given as face-image pixels
    `pts` plus `depth` (face-image pixels, + = away from the camera, relative to `pivot`).

    The points are first put on this camera's frontal rays (so a frontal view without motion maps the
    face image onto the frame by a pure zoom and shift), then turned about the pivot by the camera
    angles plus the head motion and seen by a pinhole camera at 2.5 frame heights (focal length =
    distance, so a frontal face keeps its pixel scale). `turn` (3x3) is applied before the camera's turn: the
    inverse of the photo's own head rotation puts a turned photo's head facing the front camera."""
    yaw, pitch, roll, dx, dy = motion
    d = 2.5 * height
    r = _rotation(cam.yaw + yaw, cam.pitch + pitch, cam.roll + roll) @ turn
    z = cam.zoom * depth
    xyz = np.column_stack([cam.zoom * (pts - pivot) * ((d + z) / d)[:, None], z]) @ r.T
    dist = xyz[:, 2] + d
    u0, v0 = cam.centre[0] + dx * width, cam.centre[1] + dy * height
    return np.column_stack([d * xyz[:, 0] / dist + u0, d * xyz[:, 1] / dist + v0]), dist


def backdrop(colour: tuple[int, int, int], width: int, height: int, rng: np.random.Generator) -> np.ndarray:
    """A studio backdrop: the actor's colour with a soft light falloff and a mottled texture (BGR uint8)."""
    yy, xx = np.mgrid[0:height, 0:width].astype(np.float32)
    cx, cy = width * rng.uniform(0.3, 0.7), height * rng.uniform(0.2, 0.5)
    light = 1.15 - 0.45 * np.hypot((xx - cx) / width, (yy - cy) / height)
    noise = cv2.resize(rng.normal(0, 1, (9, 16)).astype(np.float32), (width, height), interpolation=cv2.INTER_CUBIC)
    img = np.asarray(colour, np.float32)[None, None] * (light + 0.06 * noise)[..., None]
    return np.clip(img, 0, 255).astype(np.uint8)


def paint_mesh(frame: np.ndarray, texture: np.ndarray, src: np.ndarray, dst: np.ndarray, dist: np.ndarray,
               triangles: np.ndarray) -> None:
    """Alpha-blend a BGRA texture onto `frame` (in place) as a triangle mesh: vertices at `src` in the
    texture land at `dst` in the frame, `dist` away from the camera.

    Painter's algorithm: triangles are filled far to near into a triangle-id map, then every pixel is
    read from the texture through its triangle's affine map in one remap (a single resampling)."""
    x0, y0 = np.maximum(np.floor(dst.min(0)).astype(int), 0)
    x1, y1 = np.minimum(np.ceil(dst.max(0)).astype(int) + 1, [frame.shape[1], frame.shape[0]])
    if x1 <= x0 or y1 <= y0:
        return
    tri_id = np.zeros((y1 - y0, x1 - x0), np.int32)
    corners = np.round((dst[triangles] - [x0, y0]) * 16).astype(np.int32)
    for i in np.argsort(-dist[triangles].mean(1), kind="stable"):
        cv2.fillConvexPoly(tri_id, corners[i], int(i) + 1, cv2.LINE_8, 4)
    # affine frame->texture per triangle: [x y 1] @ A = src; collapsed (closed-lip) triangles via pinv
    d = np.concatenate([dst[triangles] - [x0, y0], np.ones((len(triangles), 3, 1))], axis=2)
    s = src[triangles]
    ok = np.abs(np.linalg.det(d)) > 1e-3
    aff = np.empty((len(triangles) + 1, 3, 2))
    aff[0] = [[0, 0], [0, 0], [-1e4, -1e4]]  # no triangle: read outside the texture (transparent)
    aff[1:][ok] = np.linalg.solve(d[ok], s[ok])
    if not ok.all():
        aff[1:][~ok] = np.linalg.pinv(d[~ok]) @ s[~ok]
    coef = np.take(aff.transpose(0, 2, 1).reshape(-1, 6).astype(np.float32), tri_id, axis=0)  # per pixel
    gx = np.arange(x1 - x0, dtype=np.float32)
    gy = np.arange(y1 - y0, dtype=np.float32)[:, None]
    mx = coef[..., 0] * gx + coef[..., 1] * gy + coef[..., 2]
    my = coef[..., 3] * gx + coef[..., 4] * gy + coef[..., 5]
    warped = cv2.remap(texture, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT, borderValue=(0, 0, 0, 0))
    a = warped[..., 3].astype(np.float32) * (1 / 255)
    roi = frame[y0:y1, x0:x1]
    roi[:] = cv2.blendLinear(cv2.cvtColor(warped, cv2.COLOR_BGRA2BGR), roi, a, 1 - a)
