"""Canonical 68-point template and the similarity transforms that map faces onto it.

The template is the iBUG 68-point layout of a frontal face (a dlib fit on the astronaut photo
of `skimage.data`, rotated level and made left-right symmetric), scaled so its points span the
unit square. Crops map the template's stable points (eyes, nose: not mouth or jaw, which move
with speech) to fixed places, so crops of every view and actor are comparable.
"""
from __future__ import annotations

import cv2
import numpy as np

TEMPLATE_68 = np.array([
    [0.0, 0.1958], [0.0106, 0.3273], [0.0294, 0.4534], [0.0509, 0.5823], [0.0942, 0.703],
    [0.1673, 0.815], [0.2699, 0.9019], [0.3756, 0.9749], [0.5, 1.0], [0.6244, 0.9749],
    [0.7301, 0.9019], [0.8327, 0.815], [0.9058, 0.703], [0.9491, 0.5823], [0.9706, 0.4534],
    [0.9894, 0.3273], [1.0, 0.1958],
    [0.0726, 0.0868], [0.1294, 0.0169], [0.2186, 0.0], [0.308, 0.0082], [0.3917, 0.0447],
    [0.6083, 0.0447], [0.692, 0.0082], [0.7814, 0.0], [0.8706, 0.0169], [0.9274, 0.0868],
    [0.5, 0.1482], [0.5, 0.2434], [0.5, 0.3328], [0.5, 0.4279],
    [0.392, 0.4757], [0.4459, 0.4924], [0.5, 0.5064], [0.5541, 0.4924], [0.608, 0.4757],
    [0.1757, 0.1541], [0.2323, 0.1152], [0.3028, 0.118], [0.3621, 0.1738], [0.2972, 0.1822], [0.227, 0.1794],
    [0.6379, 0.1738], [0.6972, 0.118], [0.7677, 0.1152], [0.8243, 0.1541], [0.773, 0.1794], [0.7028, 0.1822],
    [0.2541, 0.5685], [0.3461, 0.5685], [0.4379, 0.5655], [0.5, 0.5796], [0.5621, 0.5655], [0.6539, 0.5685],
    [0.7459, 0.5685], [0.6622, 0.6834], [0.5702, 0.7337], [0.5, 0.742], [0.4298, 0.7337], [0.3378, 0.6834],
    [0.2866, 0.5825], [0.4352, 0.6047], [0.5, 0.6186], [0.5648, 0.6047], [0.7134, 0.5825], [0.5648, 0.6775],
    [0.5, 0.6859], [0.4352, 0.6775],
], dtype=np.float64)

#: Points that stay put while speaking: nose bridge and base (27-35), eye contours (36-47).
STABLE = np.r_[27:36, 36:48]
LEFT_EYE, RIGHT_EYE = np.r_[36:42], np.r_[42:48]  # image-left and image-right eye
#: iBUG-68 index of each point's mirror partner (a face flipped left-right).
MIRROR_68 = np.array(
    list(range(16, -1, -1)) + list(range(26, 16, -1)) + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40] + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65])

#: dlib HOG's square face box relative to the landmarks' bounding box (side per bbox size, centre shift
#: per bbox height), measured on the template photo: the box for the next frame comes from this frame's points.
BOX_SIDE, BOX_SHIFT_Y = 0.97, -0.12


def interocular(landmarks: np.ndarray) -> np.ndarray:
    """Distance between the eye centres of (..., 68, 2) landmarks: the normaliser of NME and jitter."""
    d = landmarks[..., LEFT_EYE, :].mean(-2) - landmarks[..., RIGHT_EYE, :].mean(-2)
    return np.sqrt((d ** 2).sum(-1))


def roll_angle(landmarks: np.ndarray) -> float:
    """In-plane angle (radians) of a face's (68, 2) points: the direction of the line from the image-left to the
    image-right eye centre (y down, so positive is turned clockwise on screen)."""
    d = landmarks[RIGHT_EYE].mean(0) - landmarks[LEFT_EYE].mean(0)
    return float(np.arctan2(d[1], d[0]))


def similarity(src: np.ndarray, dst: np.ndarray) -> np.ndarray:
    """Least-squares similarity (rotation, uniform scale, translation) taking points `src` onto `dst`, as 2x3."""
    src, dst = np.asarray(src, np.float64), np.asarray(dst, np.float64)
    ms, md = src.mean(0), dst.mean(0)
    s, d = src - ms, dst - md
    var = (s ** 2).sum()
    if var <= 1e-12:
        raise ValueError("degenerate points: cannot fit a similarity transform")
    a = (s * d).sum() / var
    b = (s[:, 0] * d[:, 1] - s[:, 1] * d[:, 0]).sum() / var
    m = np.empty((2, 3))
    m[:, :2] = [[a, -b], [b, a]]
    m[:, 2] = md - m[:, :2] @ ms
    return m


def apply(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Map (..., 2) points through a 2x3 affine transform."""
    return points @ transform[:, :2].T + transform[:, 2]


def crop_template(crop_size: int, margin: float) -> np.ndarray:
    """The template placed in a crop: its unit square shrunk by `margin` (fraction of the crop) on each side."""
    return TEMPLATE_68 * crop_size * (1 - 2 * margin) + crop_size * margin


def crop_transform(landmarks: np.ndarray, crop_size: int = 256, margin: float = 0.2) -> np.ndarray:
    """Similarity taking a face's stable landmarks (source pixels) onto the template placed in the crop."""
    return similarity(landmarks[STABLE], crop_template(crop_size, margin)[STABLE])


def warp(image: np.ndarray, transform: np.ndarray, crop_size: int) -> np.ndarray:
    """The crop_size x crop_size aligned crop of `image` (edges replicated where the crop leaves the frame)."""
    return cv2.warpAffine(image, transform, (crop_size, crop_size), flags=cv2.INTER_LINEAR,
                          borderMode=cv2.BORDER_REPLICATE)


def box_from_landmarks(landmarks: np.ndarray) -> tuple[float, float, float, float]:
    """A detector-like square face box (x0, y0, x1, y1) for landmarks: where dlib HOG would put it on this face."""
    (x0, y0), (x1, y1) = landmarks.min(0), landmarks.max(0)
    half = 0.5 * BOX_SIDE * max(x1 - x0, y1 - y0)
    cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 + BOX_SHIFT_Y * (y1 - y0)
    return float(cx - half), float(cy - half), float(cx + half), float(cy + half)
