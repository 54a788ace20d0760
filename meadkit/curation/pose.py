"""Head pose of a clip: `cv2.solvePnP` of its 68 points on the generic 3D face (`meadkit.faces.model3d`).

Angles in degrees, in MEAD's view convention: yaw positive where the camera is on the actor's left (`left_30`
reads about +30), pitch positive where the camera looks down on the face (`top`), roll positive where the face
turns clockwise in the picture (the generic face reads a frontal view a few degrees pitched down).
"""
from __future__ import annotations

import cv2
import numpy as np

from meadkit.faces.model3d import FACE_3D_68, POSE_POINTS

#: The pose columns `head_pose` fills.
POSE_COLUMNS = ("yaw_deg", "pitch_deg", "roll_deg", "pose_range_deg")
#: Frames posed per clip at most (evenly spread): the pose changes slowly.
MAX_POSED = 30
#: Focal length of the assumed camera, in picture widths (a ~50 degree field of view).
FOCAL_WIDTHS = 1.1


def frame_pose(points: np.ndarray, width: int, height: int) -> tuple[float, float, float]:
    """(yaw, pitch, roll) in degrees of one frame's (68, 2) source-pixel points; NaN when solvePnP fails."""
    f = FOCAL_WIDTHS * width
    camera = np.array([[f, 0, width / 2], [0, f, height / 2], [0, 0, 1]], np.float64)
    model = np.ascontiguousarray(FACE_3D_68[POSE_POINTS], np.float64)
    image = np.ascontiguousarray(points[POSE_POINTS], np.float64)
    ok, rvec, _ = cv2.solvePnP(model, image, camera, None, flags=cv2.SOLVEPNP_EPNP)
    if ok:
        ok, rvec, _ = cv2.solvePnP(model, image, camera, None, rvec, _, useExtrinsicGuess=True)
    if not ok:
        return float("nan"), float("nan"), float("nan")
    r = cv2.Rodrigues(rvec)[0]
    yaw = np.degrees(np.arcsin(np.clip(-r[2, 0], -1, 1)))
    pitch = np.degrees(np.arctan2(r[2, 1], r[2, 2]))
    roll = np.degrees(np.arctan2(r[1, 0], r[0, 0]))
    return float(yaw), float(pitch), float(roll)


def head_pose(points: np.ndarray, valid: np.ndarray, width: int, height: int) -> dict:
    """Median yaw, pitch and roll over up to MAX_POSED valid frames of (T, 68, 2) points, and pose_range_deg
    (the widest 5-95 percentile span of the three); NaN without a valid frame."""
    idx = np.flatnonzero(valid & np.isfinite(points).all(axis=(1, 2)))
    if not len(idx):
        return dict.fromkeys(POSE_COLUMNS, float("nan"))
    idx = idx[np.linspace(0, len(idx) - 1, min(MAX_POSED, len(idx))).round().astype(int)]
    poses = np.array([frame_pose(points[i], width, height) for i in idx])
    med = np.nanmedian(poses, axis=0)
    span = np.nanpercentile(poses, 95, axis=0) - np.nanpercentile(poses, 5, axis=0)
    return {"yaw_deg": float(med[0]), "pitch_deg": float(med[1]), "roll_deg": float(med[2]),
            "pose_range_deg": float(np.nanmax(span))}
