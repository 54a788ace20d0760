"""A 3D head for a photo: a triangle mesh over the whole photo whose vertices carry depth, so that a
camera can turn it (`synth_views.project`) instead of warping a flat picture.

The 68 landmarks get their depth from a generic face (`FACE_3D`) fitted to the photo; rings of extra
vertices around the face take theirs from a head ellipsoid (`HEAD_CENTRE`, `HEAD_AXES`) that falls
back towards the ears and hair; beyond its outline the photo (hair, neck, shoulders) lies on a back
plane through the head centre. Depth is continuous across all three, so the mesh has no seams.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Sequence

import cv2
import numpy as np
from scipy.spatial import Delaunay

#: The 68 iBUG points in 3D (x right, y down, z away from the camera; inter-ocular distance 1, eye
#: centres' midpoint at x = y = 0, nose tip at z = 0). Made once: x, y = the mean of the frontal
#: built-in photos' truth (astronaut, grace_hopper, obama, biden; each rotated and scaled to this
#: frame); z = mediapipe FaceMesh's z (static_image_mode, refine_landmarks=False, times the image
#: width) at the mesh vertex nearest each truth point, relative to point 30, divided by the
#: photo's inter-ocular distance and averaged over the same photos; all made left-right symmetric.
FACE_3D = np.array([
    [-1.120, 0.113, 1.280], [-1.101, 0.405, 1.196], [-1.066, 0.693, 1.285], [-1.014, 0.972, 1.267],
    [-0.921, 1.241, 1.204], [-0.761, 1.478, 1.050], [-0.546, 1.669, 0.911], [-0.297, 1.815, 0.705],
    [0.000, 1.856, 0.650], [0.297, 1.815, 0.705], [0.546, 1.669, 0.911], [0.761, 1.478, 1.050],
    [0.921, 1.241, 1.204], [1.014, 0.972, 1.267], [1.066, 0.693, 1.285], [1.101, 0.405, 1.196],
    [1.120, 0.113, 1.280], [-0.925, -0.107, 0.833], [-0.806, -0.270, 0.617], [-0.607, -0.337, 0.521],
    [-0.395, -0.330, 0.435], [-0.198, -0.261, 0.399], [0.198, -0.261, 0.399], [0.395, -0.330, 0.435],
    [0.607, -0.337, 0.521], [0.806, -0.270, 0.617], [0.925, -0.107, 0.833], [0.000, -0.047, 0.390],
    [0.000, 0.153, 0.230], [0.000, 0.347, 0.066], [0.000, 0.554, 0.000], [-0.257, 0.675, 0.350],
    [-0.132, 0.708, 0.271], [0.000, 0.745, 0.293], [0.132, 0.708, 0.271], [0.257, 0.675, 0.350],
    [-0.687, 0.014, 0.718], [-0.568, -0.063, 0.635], [-0.433, -0.063, 0.621], [-0.305, 0.026, 0.663],
    [-0.435, 0.042, 0.636], [-0.572, 0.043, 0.665], [0.305, 0.026, 0.663], [0.433, -0.063, 0.621],
    [0.568, -0.063, 0.635], [0.687, 0.014, 0.718], [0.572, 0.043, 0.665], [0.435, 0.042, 0.636],
    [-0.496, 1.013, 0.656], [-0.317, 0.965, 0.445], [-0.139, 0.945, 0.330], [0.000, 0.973, 0.327],
    [0.139, 0.945, 0.330], [0.317, 0.965, 0.445], [0.496, 1.013, 0.656], [0.324, 1.165, 0.527],
    [0.147, 1.234, 0.410], [0.000, 1.250, 0.398], [-0.147, 1.234, 0.410], [-0.324, 1.165, 0.527],
    [-0.436, 1.021, 0.622], [-0.140, 1.020, 0.380], [0.000, 1.038, 0.373], [0.140, 1.020, 0.380],
    [0.436, 1.021, 0.622], [0.141, 1.111, 0.433], [0.000, 1.129, 0.431], [-0.141, 1.111, 0.433],
])
#: Head ellipsoid in FACE_3D's frame (least squares to the depths of its jaw and brow points, rounded):
#: the jaw's ends lie on its outline, so the ears and everything beyond fall on the back plane. Its
#: centre is also the pivot of every head turn.
HEAD_CENTRE = np.array([0.0, 0.0, 1.28])
HEAD_AXES = np.array([1.12, 2.28, 0.91])
#: Extra vertices: rings at these fractions of the head's outline (48 each: a smooth silhouette when
#: turned), kept where they are outside the face and inside the photo.
_RINGS = (0.45, 0.6, 0.75, 0.88, 1.0, 1.2, 1.5, 2.0)
_RING_POINTS = 48


@dataclass(frozen=True)
class Pose:
    """A weak-perspective fit of FACE_3D to a photo: photo pixels = scale * (rotation @ X)[:2] + shift."""

    scale: float  # photo pixels per inter-ocular unit
    rotation: np.ndarray  # 3x3
    shift: np.ndarray  # (2,)

    def to_photo(self, pts3: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Photo pixels (N, 2) and depth (N,) in photo pixels of FACE_3D-frame points."""
        p = self.scale * pts3 @ self.rotation.T
        return p[:, :2] + self.shift, p[:, 2]


def fit_pose(lm: np.ndarray) -> Pose:
    """The rotation, scale and shift that best map FACE_3D onto 68 photo landmarks (so a turned or
    tilted photo gets a turned or tilted head)."""
    x3 = FACE_3D - FACE_3D.mean(0)
    m = np.linalg.lstsq(x3, lm - lm.mean(0), rcond=None)[0].T  # 2x3: lm ~ m @ X
    u, s, vt = np.linalg.svd(m, full_matrices=False)
    r2 = u @ vt
    rot = np.vstack([r2, np.cross(r2[0], r2[1])])
    scale = float(s.mean())
    return Pose(scale, rot, lm.mean(0) - scale * (rot @ FACE_3D.mean(0))[:2])


@dataclass(frozen=True)
class HeadMesh:
    """Vertices (the 68 landmarks first) in photo pixels, their depth in photo pixels relative to the
    head centre (+ = away from the camera), the triangles, and the head centre in photo pixels."""

    vertices: np.ndarray  # (N, 2)
    depth: np.ndarray  # (N,)
    triangles: np.ndarray  # (T, 3)
    centre: np.ndarray  # (2,)


def _head_depth(pose: Pose, centre: np.ndarray, pts: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Depth of the ellipsoid's near surface under photo points (the back plane where they miss it), and
    each point's fraction of the way to the head's outline along its ray from the centre."""
    d_inv = pose.rotation.T / (pose.scale * HEAD_AXES)[:, None]  # photo offsets -> unit-sphere coordinates
    a = np.column_stack([pts - centre, np.zeros(len(pts))]) @ d_inv.T
    b = d_inv[:, 2]
    bb, ab = b @ b, a @ b
    disc = ab**2 - bb * ((a * a).sum(1) - 1)
    depth = (-ab - np.sqrt(np.maximum(disc, 0))) / bb
    a_perp = (a * a).sum(1) - ab**2 / bb  # |a|^2 at the ray's closest approach: 1 on the outline
    return depth, np.sqrt(np.maximum(a_perp, 0))


def head_mesh(lm: np.ndarray, size: tuple[int, int], keep_out: Sequence[np.ndarray]) -> HeadMesh:
    """The mesh of a photo of `size` (w, h) with landmarks `lm`: landmark depths from the fitted FACE_3D,
    rings on the head ellipsoid, the photo's edge on the back plane. No ring vertex lands within 0.2
    inter-ocular units of `keep_out` (landmark sets the face will be deformed to), so no triangle flips."""
    pose = fit_pose(lm)
    centre = pose.to_photo(HEAD_CENTRE[None])[0][0]
    _, lm_depth = pose.to_photo(FACE_3D - HEAD_CENTRE)
    w, h = size
    # ring directions: the outline's radius per direction from the centre, solved on the unit sphere
    ang = np.linspace(0, 2 * np.pi, _RING_POINTS, endpoint=False)
    unit = np.column_stack([np.cos(ang), np.sin(ang)])
    _, frac = _head_depth(pose, centre, centre + unit)
    rings = np.vstack([centre + unit * (r / frac)[:, None] for r in _RINGS])
    hull = cv2.convexHull(np.vstack(keep_out).astype(np.float32))
    margin = 0.2 * pose.scale
    far = np.array([cv2.pointPolygonTest(hull, (float(x), float(y)), True) < -margin for x, y in rings])
    inside = (rings[:, 0] > 0) & (rings[:, 0] < w - 1) & (rings[:, 1] > 0) & (rings[:, 1] < h - 1)
    t = np.linspace(0, 1, 5)
    xs, ys = -0.5 + t * w, -0.5 + t * h
    edge = np.array([(x, ys[0]) for x in xs] + [(x, ys[-1]) for x in xs]
                    + [(xs[0], y) for y in ys[1:-1]] + [(xs[-1], y) for y in ys[1:-1]])
    extra = np.vstack([rings[far & inside], edge])
    verts = np.vstack([lm, extra])
    depth = np.concatenate([lm_depth, _head_depth(pose, centre, extra)[0]])
    return HeadMesh(verts, depth, Delaunay(verts).simplices.astype(np.int32), centre)
