"""Which landmark fit to believe on a frame, and whether to believe any: the fit-quality gate.

Two landmarkers may run on each frame: a 68-point model (dlib's, accurate on frontal faces, but it pastes a
frontal shape over a turned face) and mediapipe's face mesh (holds on turned faces; its 68 points come from a
fixed vertex map). The mesh's pose decides: near-frontal faces where both agree keep the 68-point model's
points, otherwise the mesh's. Either way the chosen shape must be a plausible face (small residual against
the generic 3D face of `model3d`) at a pose the landmarkers hold (|yaw| <= max_yaw, and not both turned and
tilted: the mesh reads such compound poses far too small), and the mesh's points
must agree with its fit on the mirrored region (a model that is guessing gives two different answers);
else the frame is rejected with a reason.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable, Optional

import numpy as np

from meadkit.faces.model3d import POSE_POINTS, PoseFit, fit_pose

#: Reasons a fitted frame is not valid (`reject` codes in `.faces.npz` are 1 + the index here; 0 = accepted).
REJECTS = ("implausible shape", "unstable fit", "jump", "weak tracking", "no fit", "pose out of range")
_INNER = np.r_[17:68]  # all but the jaw contour, whose 2D annotation differs between landmarkers on turned faces


@dataclass(frozen=True)
class Verdict:
    """The gate's decision on one frame: chosen points (68, 2) or None, which landmarker they came from, their
    plausibility in [0, 1] (1 - residual / max residual), the reason when rejected, the pose fit, and the mesh's
    disagreement with its mirrored fit where that was measured (inf where the mirrored fit saw no face) and with
    the 68-point fit where that was (face heights)."""

    points: Optional[np.ndarray]
    source: Optional[str]
    quality: float
    reject: Optional[str]
    pose: Optional[PoseFit]
    mirror: Optional[float] = None
    agree: Optional[float] = None


def face_height(points: np.ndarray) -> float:
    """Brow-to-chin distance of 68 points: a face size that, unlike the inter-ocular distance, holds when it turns."""
    return float(np.linalg.norm(points[8] - points[[19, 24]].mean(0)))


def disagreement(a: np.ndarray, b: np.ndarray) -> float:
    """Mean distance between two 68-point fits over the inner points, in face heights of `b`."""
    return float(np.sqrt(((a[_INNER] - b[_INNER]) ** 2).sum(-1)).mean() / max(face_height(b), 1e-6))


def judge(fit68: Optional[np.ndarray], mesh68: Optional[np.ndarray], config,
          mirrored: Optional[Callable[[], Optional[np.ndarray]]] = None, pose: Optional[PoseFit] = None,
          mirror_due: bool = True, least_yaw: float = 0.0) -> Verdict:
    """Choose between the 68-point fit and the mesh's 68 points (either may be None) and gate the choice.

    `config` gives residual_max (largest plausible pose residual), frontal_yaw (degrees up to which the 68-point
    model is trusted), agree_max (largest disagreement, in face heights, for it to be trusted), max_yaw (largest
    |yaw| accepted; tilt_yaw and tilt_pitch: beyond both at once, a face turned and tilted, none is) and
    mirror_max (largest disagreement of the mesh with `mirrored()`, its fit on the mirrored region, when the
    mesh's points are chosen and `mirror_due`: the tracker skips it while a recent check vouches for the fit).
    `pose` is the mesh's, if already known. `least_yaw` (degrees): the face is known, from elsewhere, to be turned
    at least this far, so a pose read as less is judged at this yaw (mediapipe's mesh reads faces turned 55-65
    degrees as 28-40: its pose alone cannot refuse them)."""
    if mesh68 is None and mirrored is not None:
        return Verdict(None, None, 0.0, "no fit", None)  # the mesh ran and saw no face: a 68-point fit alone is no proof
    agree = None
    if mesh68 is not None:
        pose = pose or fit_pose(mesh68)
        if fit68 is not None and max(abs(pose.yaw), least_yaw) <= config.frontal_yaw:
            agree = disagreement(fit68, mesh68)
        if agree is not None and agree <= config.agree_max:
            points, source, pose = fit68, "fit", fit_pose(fit68)
        else:
            points, source = mesh68, "mesh"
    elif fit68 is not None:
        points, source, pose = fit68, "fit", fit_pose(fit68)
    else:
        return Verdict(None, None, 0.0, "no fit", None)
    if not np.isfinite(points).all():
        return Verdict(None, source, 0.0, "no fit", pose)
    quality = max(0.0, 1.0 - pose.residual / config.residual_max)
    turn = max(abs(pose.yaw), least_yaw)
    reject = ("implausible shape" if quality <= 0
              else "pose out of range" if turn > config.max_yaw or (turn > config.tilt_yaw
                                                                  and abs(pose.pitch) > config.tilt_pitch)
              else None)
    mirror = None
    if reject is None and source == "mesh" and mirrored is not None and mirror_due:
        other = mirrored()
        mirror = disagreement(other, points) if other is not None else float("inf")
        if mirror > config.mirror_max:
            reject = "unstable fit"
    return Verdict(None if reject else points, source, quality, reject, pose, mirror, agree)  # quality 0: implausible


def jumped(points: np.ndarray, previous: np.ndarray, limit: float) -> bool:
    """Whether the face's pose points moved more than `limit` face heights since the previous frame (a fit that
    leapt to another place: real heads move a few hundredths of a face height per frame)."""
    d = np.sqrt(((points[POSE_POINTS] - previous[POSE_POINTS]) ** 2).sum(-1)).mean()
    return bool(d > limit * max(face_height(previous), 1e-6))
