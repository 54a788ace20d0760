"""A generic 3D face of the 68 iBUG points, and the pose and shape plausibility it gives a 2D fit.

`FACE_3D_68` (x right, y down, z away from the camera, nose tip at the origin, inter-ocular distance 1):
x and y are the frontal template of `align.TEMPLATE_68`; z is mediapipe FaceMesh's relative depth at the
mesh vertex nearest each dlib point, averaged over four frontal photos (astronaut, Grace Hopper, Obama,
Biden), made left-right symmetric. `fit_pose` finds the view (yaw, pitch) whose projection of this face
best matches a fit up to a similarity: its residual says whether the points are a face at all, its pose
says which way the face looks.
"""
from __future__ import annotations

from dataclasses import dataclass
from functools import lru_cache

import numpy as np

FACE_3D_68 = np.array([
    [-1.069, -0.496, 1.44], [-1.047, -0.215, 1.256], [-1.006, 0.055, 1.132], [-0.96, 0.33, 1.266],
    [-0.868, 0.588, 1.177], [-0.711, 0.828, 1.077], [-0.492, 1.014, 0.864], [-0.266, 1.17, 0.674],
    [0.0, 1.223, 0.635], [0.266, 1.17, 0.674], [0.492, 1.014, 0.864], [0.711, 0.828, 1.077],
    [0.868, 0.588, 1.177], [0.96, 0.33, 1.266], [1.006, 0.055, 1.132], [1.047, -0.215, 1.256],
    [1.069, -0.496, 1.44],
    [-0.914, -0.729, 0.867], [-0.793, -0.879, 0.602], [-0.602, -0.915, 0.502], [-0.411, -0.897, 0.418],
    [-0.232, -0.819, 0.37], [0.232, -0.819, 0.37], [0.411, -0.897, 0.418], [0.602, -0.915, 0.502],
    [0.793, -0.879, 0.602], [0.914, -0.729, 0.867],
    [0.0, -0.598, 0.377], [0.0, -0.395, 0.222], [0.0, -0.203, 0.038], [0.0, 0.0, 0.0],
    [-0.231, 0.102, 0.346], [-0.116, 0.138, 0.3], [0.0, 0.168, 0.286], [0.116, 0.138, 0.3], [0.231, 0.102, 0.346],
    [-0.693, -0.586, 0.715], [-0.572, -0.669, 0.622], [-0.422, -0.663, 0.602], [-0.295, -0.543, 0.644],
    [-0.434, -0.525, 0.621], [-0.584, -0.531, 0.645],
    [0.295, -0.543, 0.644], [0.422, -0.663, 0.602], [0.572, -0.669, 0.622], [0.693, -0.586, 0.715],
    [0.584, -0.531, 0.645], [0.434, -0.525, 0.621],
    [-0.526, 0.301, 0.653], [-0.329, 0.301, 0.447], [-0.133, 0.294, 0.331], [0.0, 0.324, 0.323],
    [0.133, 0.294, 0.331], [0.329, 0.301, 0.447], [0.526, 0.301, 0.653], [0.347, 0.546, 0.51],
    [0.15, 0.654, 0.403], [0.0, 0.672, 0.39], [-0.15, 0.654, 0.403], [-0.347, 0.546, 0.51],
    [-0.456, 0.331, 0.619], [-0.139, 0.378, 0.392], [0.0, 0.408, 0.364], [0.139, 0.378, 0.392],
    [0.456, 0.331, 0.619], [0.139, 0.534, 0.433], [0.0, 0.552, 0.415], [-0.139, 0.534, 0.433],
])

#: Points that say where a face looks and whether it is one: brows, nose, eyes (not the jaw, whose 2D
#: annotation follows the visible outline on turned faces; not the mouth, which moves with speech).
POSE_POINTS = np.r_[17:48]

_YAWS = np.arange(-80.0, 80.1, 4.0)
_PITCHES = np.arange(-44.0, 44.1, 4.0)


def rotation(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """3x3 rotation turning the face by `yaw` (about the vertical axis; positive = the face's nose moves to
    the image's right), `pitch` (positive = looks up) and `roll` (in the image plane), all in degrees."""
    y, p, r = np.radians([yaw, pitch, roll])
    ry = np.array([[np.cos(y), 0, -np.sin(y)], [0, 1, 0], [np.sin(y), 0, np.cos(y)]])
    rx = np.array([[1, 0, 0], [0, np.cos(p), np.sin(p)], [0, -np.sin(p), np.cos(p)]])
    rz = np.array([[np.cos(r), -np.sin(r), 0], [np.sin(r), np.cos(r), 0], [0, 0, 1]])
    return rz @ ry @ rx


def project(yaw: float, pitch: float, roll: float = 0.0) -> np.ndarray:
    """The generic face's 68 points seen from (yaw, pitch, roll), orthographically, (68, 2) in IOD units."""
    return (FACE_3D_68 @ rotation(yaw, pitch, roll).T)[:, :2]


@lru_cache(maxsize=1)
def _views() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Conjugated centred complex projections of POSE_POINTS over the pose grid (K, n), their energies (K,) and
    their (yaw, pitch) (K, 2)."""
    poses = np.array([(y, p) for y in _YAWS for p in _PITCHES])
    proj = np.stack([project(y, p)[POSE_POINTS] for y, p in poses])
    c = proj[..., 0] + 1j * proj[..., 1]
    c -= c.mean(1, keepdims=True)
    return np.ascontiguousarray(c.conj()), (np.abs(c) ** 2).sum(1), poses


@dataclass(frozen=True)
class PoseFit:
    """How a 2D fit matches the generic face: relative residual (0 = exact, ~1 = no resemblance) after the best
    similarity, at the best (yaw, pitch) in degrees; `roll` in degrees from that similarity."""

    residual: float
    yaw: float
    pitch: float
    roll: float


def fit_pose(points: np.ndarray) -> PoseFit:
    """The pose whose projection of the generic face best explains `points` (68, 2) up to rotation, scale and
    shift (weak perspective), on a 4-degree grid; mirror images and non-faces leave a large residual."""
    return fit_poses(points[None])[0]


def fit_poses(points: np.ndarray) -> list[PoseFit]:
    """`fit_pose` of each of N frames' points (N, 68, 2), in one matrix product (a clip's frames at once)."""
    x = points[:, POSE_POINTS, 0] + 1j * points[:, POSE_POINTS, 1]
    x = x - x.mean(1, keepdims=True)
    ex = (np.abs(x) ** 2).sum(1)
    conj, ep, poses = _views()
    cross = x @ conj.T  # (N, K): sum conj(p) x; the residual of the best similarity is ex - |cross|^2 / ep
    k = np.argmax((cross.real ** 2 + cross.imag ** 2) / ep, axis=1)
    best = cross[np.arange(len(x)), k]
    res = np.maximum(0.0, ex - np.abs(best) ** 2 / ep[k])
    out = []
    for e, r, b, (yaw, pitch) in zip(ex, res, best, poses[k]):
        if not np.isfinite(e) or e <= 1e-9:
            out.append(PoseFit(1.0, 0.0, 0.0, 0.0))
        else:
            out.append(PoseFit(float(np.sqrt(r / e)), float(yaw), float(pitch), float(np.degrees(np.angle(b)))))
    return out
