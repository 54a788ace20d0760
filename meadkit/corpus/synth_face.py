"""Synthetic faces for the test corpus: a real photograph (scikit-image's astronaut), varied into
actor identities and deformed by emotion, intensity and speech with a piecewise-affine warp."""
from __future__ import annotations

import functools
import importlib.util
import os
from dataclasses import dataclass

import cv2
import numpy as np
from scipy.spatial import Delaunay

#: iBUG-68 index of each point's mirror partner (used to flip a face left-right).
MIRROR_68 = np.array(
    list(range(16, -1, -1))
    + list(range(26, 16, -1))
    + [27, 28, 29, 30, 35, 34, 33, 32, 31]
    + [45, 44, 43, 42, 47, 46, 39, 38, 37, 36, 41, 40]
    + [54, 53, 52, 51, 50, 49, 48, 59, 58, 57, 56, 55]
    + [64, 63, 62, 61, 60, 67, 66, 65]
)
INNER_MOUTH = np.arange(60, 68)
#: Crop of the astronaut photo (rows, cols) holding her head, hair and collar.
_CROP = (slice(0, 400), slice(50, 400))

# Point groups (iBUG order); horizontal offsets below are "outward from the face midline".
_BROW_IN, _BROW_MID, _BROW_OUT = [21, 22], [19, 20, 23, 24], [17, 18, 25, 26]
_BROWS = _BROW_IN + _BROW_MID + _BROW_OUT
_UPPER_LID, _LOWER_LID = [37, 38, 43, 44], [40, 41, 46, 47]
_CORNERS = [48, 54, 60, 64]
_NEAR_CORNERS_UP, _NEAR_CORNERS_LOW = [49, 53], [55, 59]
_UPPER_LIP_OUT, _UPPER_LIP_IN = [49, 50, 51, 52, 53], [61, 62, 63]
_LOWER_LIP_OUT, _LOWER_LIP_IN = [55, 56, 57, 58, 59], [65, 66, 67]
_NOSE_WING = [31, 35]

#: Per emotion at full intensity: (points, outward dx, dy, side) in inter-ocular units (y down);
#: side 0 = both sides, +1 = image-right half only (asymmetric contempt). Plus a static jaw drop.
EXPRESSIONS: dict[str, tuple[list, float]] = {
    "neutral": ([], 0.0),
    "happy": ([(_CORNERS, 0.10, -0.11, 0), (_NEAR_CORNERS_UP + _NEAR_CORNERS_LOW, 0.05, -0.05, 0),
               (_LOWER_LID, 0, -0.035, 0), (_UPPER_LID, 0, 0.015, 0), (_BROWS, 0, -0.015, 0)], 0.04),
    "sad": ([(_BROW_IN, -0.015, -0.10, 0), (_BROW_MID, 0, -0.035, 0), (_BROW_OUT, 0, 0.045, 0),
             (_UPPER_LID, 0, 0.035, 0), (_CORNERS, -0.02, 0.10, 0), (_NEAR_CORNERS_LOW + _NEAR_CORNERS_UP, 0, 0.045, 0),
             (_LOWER_LIP_OUT, 0, -0.02, 0)], 0.0),
    "angry": ([(_BROW_IN, -0.07, 0.11, 0), (_BROW_MID, -0.035, 0.075, 0), (_BROW_OUT, 0, 0.03, 0),
               (_UPPER_LID, 0, -0.02, 0), (_LOWER_LID, 0, -0.025, 0), (_CORNERS, -0.05, 0.0, 0),
               (_UPPER_LIP_OUT, 0, 0.03, 0), (_LOWER_LIP_OUT, 0, -0.03, 0), (_NOSE_WING, 0.025, 0, 0)], 0.0),
    "surprised": ([(_BROW_IN, 0, -0.16, 0), (_BROW_MID, 0, -0.17, 0), (_BROW_OUT, 0, -0.13, 0),
                   (_UPPER_LID, 0, -0.06, 0), (_LOWER_LID, 0, 0.02, 0), (_CORNERS, -0.05, 0.0, 0)], 0.30),
    "fear": ([(_BROW_IN, -0.045, -0.13, 0), (_BROW_MID, -0.02, -0.10, 0), (_BROW_OUT, 0, -0.05, 0),
              (_UPPER_LID, 0, -0.06, 0), (_LOWER_LID, 0, -0.015, 0), (_CORNERS, 0.09, 0.035, 0),
              (_NEAR_CORNERS_LOW, 0.04, 0.02, 0)], 0.10),
    "disgusted": ([(_BROW_IN, -0.03, 0.06, 0), (_BROW_MID, 0, 0.05, 0), (_LOWER_LID, 0, -0.04, 0),
                   (_UPPER_LID, 0, 0.02, 0), (_NOSE_WING, 0, -0.05, 0), ([32, 34], 0, -0.03, 0),
                   (_UPPER_LIP_OUT, 0, -0.07, 0), (_UPPER_LIP_IN, 0, -0.05, 0), (_CORNERS, -0.02, 0.04, 0),
                   (_LOWER_LIP_OUT, 0, 0.02, 0)], 0.02),
    "contempt": ([([54, 64], 0.08, -0.075, 1), ([53, 55], 0.04, -0.035, 1), ([24, 25], 0, -0.035, 1),
                  ([43, 44], 0, 0.02, 1)], 0.0),
}
#: Expression strength per intensity level (1 weak < 2 medium < 3 strong).
LEVEL_GAIN = {1: 0.4, 2: 0.7, 3: 1.0}
#: Largest speech mouth opening, in inter-ocular units.
MAX_SPEECH_OPEN = 0.32


def _predictor_path(name: str) -> str:
    spec = importlib.util.find_spec("face_recognition_models")  # importing it fails on new setuptools
    if spec is None or spec.origin is None:
        raise RuntimeError("the face-recognition-models package is not installed")
    return os.path.join(os.path.dirname(spec.origin), "models", name)


@functools.lru_cache(maxsize=1)
def base_photo() -> tuple[np.ndarray, np.ndarray]:
    """The astronaut crop (BGR uint8) and its 68 dlib landmarks in crop pixels, found once per process."""
    import dlib
    from skimage import data

    rgb = data.astronaut()
    dets, scores, _ = dlib.get_frontal_face_detector().run(rgb, 1)
    if not dets:
        raise RuntimeError("dlib found no face in skimage.data.astronaut()")
    box = dets[int(np.argmax(scores))]
    shape = dlib.shape_predictor(_predictor_path("shape_predictor_68_face_landmarks.dat"))(rgb, box)
    pts = np.array([[p.x, p.y] for p in shape.parts()], np.float64)
    pts -= [_CROP[1].start, _CROP[0].start]
    return np.ascontiguousarray(rgb[_CROP][:, :, ::-1]), pts


def inter_ocular(lm: np.ndarray) -> float:
    """Distance between the two eye centres (the unit of every face offset here)."""
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def _sides(lm: np.ndarray) -> np.ndarray:
    """-1 / 0 / +1 for points left of / on / right of the face midline."""
    mid = lm[27:31, 0].mean()
    d = (lm[:, 0] - mid) / inter_ocular(lm)
    return np.where(np.abs(d) < 0.05, 0.0, np.sign(d))


def _apply(lm: np.ndarray, moves, gain: float) -> np.ndarray:
    iod, side = inter_ocular(lm), _sides(lm)
    out = lm.copy()
    for idx, dx, dy, only in moves:
        idx = [i for i in idx if only == 0 or side[i] == only]
        out[idx, 0] += gain * dx * iod * side[idx]
        out[idx, 1] += gain * dy * iod
    return out


def expression_landmarks(neutral: np.ndarray, emotion: str, level: int) -> tuple[np.ndarray, float]:
    """Landmarks of `emotion` at intensity `level` from a neutral face, and its static jaw drop (IOD units)."""
    moves, jaw = EXPRESSIONS[emotion]
    gain = LEVEL_GAIN[level] if emotion != "neutral" else 0.0
    return _apply(neutral, moves, gain), jaw * gain


def open_mouth(lm: np.ndarray, amount: float) -> np.ndarray:
    """Drop the jaw and lower lip by `amount` inter-ocular units (upper lip lifts a little)."""
    if amount <= 0:
        return lm
    moves = [([66], 0, 1.0, 0), ([65, 67], 0, 0.95, 0), ([57], 0, 1.0, 0), ([56, 58], 0, 0.95, 0),
             ([55, 59], 0, 0.7, 0), (_CORNERS, -0.1, 0.35, 0), (_UPPER_LIP_IN, 0, -0.08, 0),
             ([8], 0, 0.85, 0), ([7, 9], 0, 0.75, 0), ([6, 10], 0, 0.55, 0), ([5, 11], 0, 0.3, 0),
             ([4, 12], 0, 0.12, 0)]
    return _apply(lm, moves, amount)


@dataclass(frozen=True)
class Identity:
    """How one actor differs from the photo: mirroring, face geometry, colouring, backdrop."""

    mirror: bool
    face_width: float  # jaw x-scale about the midline
    eye_spacing: float  # outward shift of eyes and brows (IOD units)
    jaw_length: float  # chin drop (IOD units)
    nose_length: float
    mouth_width: float
    brow_height: float
    hue: float  # OpenCV hue shift (0..180 scale)
    saturation: float
    value: float
    tint: tuple[float, float, float]  # BGR gains (skin tone)
    backdrop: tuple[int, int, int]  # BGR base colour behind the actor


def make_identity(rng: np.random.Generator, index: int) -> Identity:
    """A random actor identity; odd indices are mirrored so neighbours differ at a glance."""
    tints = [(1.0, 1.0, 1.0), (0.82, 0.9, 1.05), (0.9, 0.95, 1.0), (0.7, 0.8, 0.95), (1.05, 1.0, 0.95)]
    return Identity(
        mirror=bool(index % 2),
        face_width=float(rng.uniform(0.9, 1.1)),
        eye_spacing=float(rng.uniform(-0.06, 0.08)),
        jaw_length=float(rng.uniform(-0.08, 0.1)),
        nose_length=float(rng.uniform(-0.05, 0.05)),
        mouth_width=float(rng.uniform(-0.05, 0.05)),
        brow_height=float(rng.uniform(-0.04, 0.04)),
        hue=float(rng.uniform(-8, 8)),
        saturation=float(rng.uniform(0.75, 1.2)),
        value=float(rng.uniform(0.7, 1.12)),
        tint=tints[index % len(tints)],
        backdrop=tuple(int(c) for c in rng.integers(40, 200, 3)),
    )


class FaceModel:
    """One identity's face at a given pixel scale: renders any target landmark set by a
    piecewise-affine warp of the photo (Delaunay over the 68 points plus a fixed border box)."""

    def __init__(self, ident: Identity, scale: float):
        photo, lm = base_photo()
        photo = cv2.resize(photo, None, fx=scale, fy=scale, interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        lm = (lm + 0.5) * scale - 0.5
        if ident.mirror:
            photo = photo[:, ::-1]
            lm = lm[MIRROR_68].copy()
            lm[:, 0] = photo.shape[1] - 1 - lm[:, 0]
        self.image = np.ascontiguousarray(_recolour(photo, ident))
        self.alpha = _head_alpha(self.image.shape[:2], lm)
        self.bgra = np.dstack([self.image, self.alpha])
        self.src = lm
        self.neutral = _neutralise(_reshape(lm, ident))
        self.iod = inter_ocular(self.neutral)
        h, w = self.image.shape[:2]
        self._roi, border = _border_box(lm, w, h)
        self._src_all = np.vstack([lm, border])
        self._border = border
        self._tri = Delaunay(self._src_all).simplices
        x0, y0, x1, y1 = self._roi
        self._grid = np.mgrid[y0:y1, x0:x1].astype(np.float32)

    @property
    def size(self) -> tuple[int, int]:
        """(width, height) of the rendered face image."""
        return self.image.shape[1], self.image.shape[0]

    def target(self, emotion: str, level: int, speech_open: float) -> np.ndarray:
        """Landmarks for an emotion/level with the mouth opened by `speech_open` (0..1 of the speech range)."""
        lm, jaw = expression_landmarks(self.neutral, emotion, level)
        return open_mouth(lm, jaw + MAX_SPEECH_OPEN * speech_open)

    def render(self, target: np.ndarray) -> np.ndarray:
        """BGRA face image whose landmarks sit exactly at `target` (alpha = head and collar)."""
        x0, y0, x1, y1 = self._roi
        dst_all = np.vstack([target, self._border])
        tri_id = np.zeros((y1 - y0, x1 - x0), np.int32)
        for i, t in enumerate(self._tri):
            cv2.fillConvexPoly(tri_id, np.round(dst_all[t] - [x0, y0]).astype(np.int32), i + 1)
        # affine dst->src per triangle: [x y 1] @ A = src; collapsed (closed-lip) triangles via pinv
        d = np.concatenate([dst_all[self._tri], np.ones((len(self._tri), 3, 1))], axis=2)
        s = self._src_all[self._tri]
        ok = np.abs(np.linalg.det(d)) > 1e-3
        aff = np.empty((len(self._tri) + 1, 3, 2), np.float32)
        aff[0] = [[1, 0], [0, 1], [0, 0]]
        aff[1:][ok] = np.linalg.solve(d[ok], s[ok])
        if not ok.all():
            aff[1:][~ok] = np.linalg.pinv(d[~ok]) @ s[~ok]
        a = aff[tri_id]
        gy, gx = self._grid
        mx = gx * a[..., 0, 0] + gy * a[..., 1, 0] + a[..., 2, 0]
        my = gx * a[..., 0, 1] + gy * a[..., 1, 1] + a[..., 2, 1]
        out = self.bgra.copy()
        roi = cv2.remap(out, mx, my, cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        out[y0:y1, x0:x1] = roi
        _draw_mouth(out, target)
        return out


def _recolour(bgr: np.ndarray, ident: Identity) -> np.ndarray:
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + ident.hue) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * ident.saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * ident.value, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32) * np.array(ident.tint, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _head_alpha(shape: tuple[int, int], lm: np.ndarray) -> np.ndarray:
    """Feathered mask covering head, hair and collar, so the actor can stand on any backdrop."""
    h, w = shape
    fw = lm[16, 0] - lm[0, 0]
    cx, chin, brow = lm[27:31, 0].mean(), lm[8, 1], lm[17:27, 1].min()
    mask = np.zeros((h, w), np.uint8)
    eye_y = lm[36:48, 1].mean()
    cv2.ellipse(mask, (int(cx), int((brow + chin) / 2 - 0.28 * fw)), (int(0.74 * fw), int(0.9 * fw)), 0, 0, 360, 255, -1)
    mask[int(eye_y + 0.15 * fw):] = 0  # hair only down to the ears
    hull = cv2.convexHull(np.round(lm[:27]).astype(np.int32))
    cv2.fillConvexPoly(mask, hull, 255)
    neck = np.array([[cx - 0.36 * fw, chin - 0.35 * fw], [cx + 0.36 * fw, chin - 0.35 * fw],
                     [cx + 0.45 * fw, chin + 0.9 * fw], [cx - 0.45 * fw, chin + 0.9 * fw]])
    cv2.fillConvexPoly(mask, np.round(neck).astype(np.int32), 255)
    cv2.ellipse(mask, (int(cx), int(chin + 1.9 * fw)), (int(1.55 * fw), int(1.25 * fw)), 0, 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.5, 0.04 * fw))
    edge = 0.15 * fw  # fade out towards the crop's edges so no straight border shows
    ramp = lambda n: np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / edge, 0, 1)  # noqa: E731
    return (mask * np.outer(ramp(h), ramp(w))).astype(np.uint8)


def _reshape(lm: np.ndarray, ident: Identity) -> np.ndarray:
    iod, side = inter_ocular(lm), _sides(lm)
    out = lm.copy()
    mid = lm[27:31, 0].mean()
    out[0:17, 0] = mid + (lm[0:17, 0] - mid) * ident.face_width
    eyes_brows = list(range(17, 27)) + list(range(36, 48))
    out[eyes_brows, 0] += ident.eye_spacing * iod * side[eyes_brows]
    out[17:27, 1] += ident.brow_height * iod
    jaw_w = np.clip(1 - np.abs(np.arange(17) - 8) / 5, 0, 1)
    out[0:17, 1] += ident.jaw_length * iod * jaw_w
    out[48:68, 1] += 0.4 * ident.jaw_length * iod
    out[31:36, 1] += ident.nose_length * iod
    out[_CORNERS, 0] += ident.mouth_width * iod * side[_CORNERS]
    return out


def _neutralise(lm: np.ndarray) -> np.ndarray:
    """Close the photo's smiling mouth and lower its corners: the actor's neutral face."""
    out = lm.copy()
    iod = inter_ocular(lm)
    gap = out[[65, 66, 67], 1] - out[[63, 62, 61], 1]
    out[[65, 66, 67], 1] -= gap - 0.01 * iod
    out[[55, 56, 57, 58, 59], 1] -= 0.8 * gap.mean()
    return _apply(out, [(_CORNERS, -0.03, 0.05, 0), (_NEAR_CORNERS_UP + _NEAR_CORNERS_LOW, -0.01, 0.025, 0)], 1.0)


def _border_box(lm: np.ndarray, w: int, h: int) -> tuple[tuple[int, int, int, int], np.ndarray]:
    """A fixed frame of points around the face outside which the photo is left untouched."""
    lo, hi = lm.min(0), lm.max(0)
    m = 0.45 * (hi - lo).max()
    x0, y0 = np.maximum(np.floor(lo - m), 0).astype(int)
    x1, y1 = np.minimum(np.ceil(hi + m), [w - 1, h - 1]).astype(int)
    t = np.linspace(0, 1, 5)
    xs, ys = x0 + t * (x1 - x0), y0 + t * (y1 - y0)
    border = np.array([(x, y0) for x in xs] + [(x, y1) for x in xs] + [(x0, y) for y in ys[1:-1]] + [(x1, y) for y in ys[1:-1]], np.float64)
    return (int(x0), int(y0), int(x1) + 1, int(y1) + 1), border


def _draw_mouth(bgra: np.ndarray, lm: np.ndarray) -> None:
    """Paint the open mouth's cavity (dark) with a hint of upper teeth, inside the inner-lip polygon."""
    inner = lm[INNER_MOUTH]
    if (inner[[5, 6, 7], 1] - inner[[3, 2, 1], 1]).mean() < 1.0:
        return
    shift = 4
    poly = np.round(inner * (1 << shift)).astype(np.int32)
    cv2.fillPoly(bgra, [poly], (38, 24, 52, 255), cv2.LINE_AA, shift)
    teeth = inner[[0, 1, 2, 3, 4]].copy()
    low = teeth.copy()
    low[:, 1] += 0.25 * (inner[[0, 7, 6, 5, 4], 1] - teeth[:, 1])
    poly = np.round(np.vstack([teeth, low[::-1]]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(bgra, [poly], (200, 210, 215, 255), cv2.LINE_AA, shift)
