"""The faces stage: one decode pass over a view's synced window -> aligned crop video + landmark arrays + quality row."""
from __future__ import annotations

from collections import deque
from dataclasses import asdict, dataclass
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pyarrow as pa

from meadkit.atomic import atomic_path
from meadkit.corpus.sources import Source
from meadkit.faces.align import apply, crop_transform, warp
from meadkit.faces.backends import Backend, FaceBackendUnavailable, get_backend
from meadkit.faces.smooth import OneEuroParams, TrackSmoother, jitter
from meadkit.faces.track import Tracker, main_face
from meadkit.media.probe import MediaError, probe
from meadkit.media.video import VideoWriter, iter_frames, iter_planes


@dataclass
class FacesConfig:
    """Settings of the faces stage (the `[faces]` table of a pipeline TOML)."""

    backend: str = "dlib"  # dlib | fan | mediapipe
    fallback_detector: str = "mmod"  # second detector when HOG finds nothing while searching: mmod | mediapipe | none
    detect_every: int = 15  # check the track with the detector every k frames (search every k while no face)
    detect_width: int = 640  # frames are downscaled to this width for the search
    detect_upsample: int = 0  # HOG upsampling (finds smaller faces, ~4x slower)
    detect_stretch: float = 2.0  # also search on frames widened by this factor (turned faces); <= 1: off
    fallback_every: int = 30  # while searching, the slow fallback detector (~1-4 s/call) runs at most every n frames
    fallback_max: int = 1  # ... and at most this many times per view (so clips without a face stay fast)
    lost_score: float = 0.6  # tracking confidence below this -> frame has no face, detector runs again
    redetect_score: float = 0.85  # confidence below this -> the detector checks the track every 3rd frame
    crop_size: int = 256
    margin: float = 0.2  # fraction of the crop left around the template's landmarks on each side
    min_cutoff: float = 1.5  # One-Euro smoothing: cutoff (Hz) at rest
    beta: float = 2.0  # One-Euro smoothing: cutoff growth per inter-ocular distance/s of speed
    d_cutoff: float = 1.0
    mouth_min_cutoff: float = 12.0  # One-Euro cutoff at rest for lips and lower jaw (speech is fast)
    smooth_lag: int = 12  # look-ahead frames of the backward smoothing pass (frames held in memory)
    max_gap: int = 8  # gaps without a face up to this many frames are interpolated
    min_found_ratio: float = 0.9  # below this the view is 'partial'
    min_frames: int = 2  # fewer frames -> 'too_short'
    batch_size: int = 1  # frames fitted together (fan on GPU: 16 or more)
    weights_dir: Optional[str] = None  # fan weights folder (default: $TORCH_HOME/hub/checkpoints)
    device: str = "cpu"  # fan: cpu | cuda
    crf: int = 20  # H.264 quality of the crop video (ultrafast crf 20: the fidelity of veryfast crf 18, ~1.5x the size,
    preset: str = "ultrafast"  # a fifth of its encode time on grainy crops)
    single_thread: bool = True  # cv2.setNumThreads(1): parallelism comes from worker processes


#: Manifest columns of the faces stage, one row per (take, view); see manifests/faces.md.
FACES_SCHEMA = pa.schema([
    pa.field("face_status", pa.string(), nullable=False),
    pa.field("face_error", pa.string()),
    pa.field("face_backend", pa.string()),
    pa.field("face_frames", pa.int32()),
    pa.field("found_ratio", pa.float32()),
    pa.field("interpolated_frames", pa.int32()),
    pa.field("mean_score", pa.float32()),
    pa.field("jitter", pa.float32()),
    pa.field("detector_calls", pa.int32()),
])

_CHUNK = 32  # frames decoded before they are fitted (held besides the smoother's look-ahead: ~3 MB each at 1080p)

STATUSES = ("ok", "partial", "no_face", "too_short", "corrupt", "unreadable", "backend_unavailable", "error")


@dataclass
class FaceResult:
    """Outcome of one view. status is one of STATUSES; outputs exist only for 'ok' and 'partial'."""

    status: str
    error: Optional[str] = None
    backend: Optional[str] = None
    n_frames: int = 0
    found_ratio: float = 0.0
    interpolated: int = 0
    mean_score: float = float("nan")
    jitter: float = float("nan")
    detector_calls: int = 0

    def as_row(self) -> dict:
        """This result as a row of FACES_SCHEMA."""
        d = asdict(self)
        return {"face_status": d["status"], "face_error": d["error"], "face_backend": d["backend"],
                "face_frames": d["n_frames"], "found_ratio": d["found_ratio"],
                "interpolated_frames": d["interpolated"], "mean_score": d["mean_score"],
                "jitter": d["jitter"], "detector_calls": d["detector_calls"]}


class NoFaceError(ValueError):
    """No face was found in an image given to align_image."""


class _Reject(Exception):
    """Internal: abandon the outputs being written and return this result."""

    def __init__(self, result: FaceResult):
        self.result = result


def backend_for(config: FacesConfig) -> Backend:
    """The configured backend, loaded once per process; raises FaceBackendUnavailable with what is missing."""
    if config.single_thread:
        cv2.setNumThreads(1)
    return get_backend(config.backend, config.fallback_detector, config.weights_dir, config.device,
                       config.detect_upsample)


def tracker_for(backend: Backend, config: FacesConfig) -> Tracker:
    """A fresh tracker with the config's detection settings."""
    return Tracker(backend, config.detect_every, config.detect_width, config.lost_score, config.fallback_every,
                   config.redetect_score, config.detect_stretch, config.fallback_max)


def process_view(source: Source, start_frame: int, n_frames: int, video_out: Path | str,
                 arrays_out: Path | str, config: FacesConfig = FacesConfig()) -> FaceResult:
    """Track, smooth and align the face on frames [start_frame, start_frame + n_frames) of `source` in one
    decode pass; write the crop video and `.faces.npz` atomically. Bad input gives a status, never raises."""
    try:
        backend = backend_for(config)
    except (FaceBackendUnavailable, ValueError) as e:
        return FaceResult("backend_unavailable", str(e), config.backend)
    try:
        return _process(source, start_frame, n_frames, Path(video_out), Path(arrays_out), config, backend)
    except _Reject as r:
        return r.result
    except MediaError as e:
        return FaceResult("corrupt", str(e), backend.name)
    except Exception as e:  # a bug must not stop a corpus run: record it with its type
        return FaceResult("error", f"{type(e).__name__}: {e}", backend.name)


def _centre_transform(width: int, height: int, size: int) -> np.ndarray:
    s = size / min(width, height)
    return np.array([[s, 0, size / 2 - s * width / 2], [0, s, size / 2 - s * height / 2]])


def warp_i420(yuv: np.ndarray, m: np.ndarray, size: int, width: int, height: int) -> np.ndarray:
    """Aligned crop of an I420 frame ((H*3/2, W) uint8, as PyAV gives yuv420p), as an I420 crop ((size*3/2, size)):
    each plane is warped on its own, so no pixel of the frame is converted to colour (the encoder takes I420)."""
    flat, n, c = yuv.reshape(-1), width * height, (width // 2) * (height // 2)
    u = flat[n:n + c].reshape(height // 2, width // 2)
    v = flat[n + c:n + 2 * c].reshape(height // 2, width // 2)
    return warp_planes((yuv[:height], u, v), m, size)


def warp_planes(planes: tuple, m: np.ndarray, size: int) -> np.ndarray:
    """Aligned crop of a frame given as its (luma, u, v) yuv420p planes, as an I420 crop ((size*3/2, size))."""
    y, u, v = planes
    # chroma pixel (i, j) covers luma pixels 2i..2i+1: its centre is at luma 2i + 0.5
    m_uv = np.array(m, np.float64)
    m_uv[:, 2] = (m_uv[:, :2].sum(1) * 0.5 + m_uv[:, 2] - 0.5) / 2
    half = size // 2
    return np.concatenate([warp(y, m, size).ravel(), warp(u, m_uv, half).ravel(),
                           warp(v, m_uv, half).ravel()]).reshape(-1, size)


def _process(source, start_frame, n_frames, video_out, arrays_out, config, backend) -> FaceResult:
    name = backend.name
    try:
        info = probe(source)
    except MediaError as e:
        return FaceResult("unreadable", str(e), name)
    if not info.width or not info.fps:
        return FaceResult("unreadable", f"{source}: no video stream with a frame rate", name)
    if info.n_frames is not None and info.n_frames < config.min_frames:
        return FaceResult("too_short", f"the file has {info.n_frames} frame(s); at least {config.min_frames} needed", name)
    if n_frames < config.min_frames:
        return FaceResult("too_short", f"window of {n_frames} frame(s); at least {config.min_frames} needed", name)

    T, size = n_frames, config.crop_size
    fps = Fraction(info.fps)
    tracker = tracker_for(backend, config)
    params = OneEuroParams(config.min_cutoff, config.beta, config.d_cutoff, config.mouth_min_cutoff)
    smoother = TrackSmoother(T, float(fps), params, lag=max(config.smooth_lag, config.max_gap), max_gap=config.max_gap)
    lm_src = np.full((T, 68, 2), np.nan, np.float32)
    lm_crop = np.full((T, 68, 2), np.nan, np.float32)
    valid = np.zeros(T, bool)
    interpolated = np.zeros(T, bool)
    score = np.zeros(T, np.float32)
    transform = np.zeros((T, 2, 3), np.float32)
    found = np.zeros(T, bool)
    last_m: list = [None]
    contrast = 0.0
    # a grey (luma) plane is all dlib needs: decode to I420, warp the planes, encode I420 (no colour conversion)
    colour = bool(backend.needs_colour or info.width % 2 or info.height % 2 or size % 2)
    W, H = info.width, info.height

    with atomic_path(video_out) as tmp_video:
        with VideoWriter(str(tmp_video), fps, size, size, crf=config.crf, preset=config.preset,
                         pix_fmt="bgr24" if colour else "yuv420p") as writer:

            def emit(i: int, image: np.ndarray) -> None:
                pts, ok, interp = smoother.final(i)
                if ok:
                    m = last_m[0] = crop_transform(pts, size, config.margin)
                elif last_m[0] is not None:
                    m = last_m[0]
                else:  # no face yet: frame it like the first face ahead, else the frame's centre
                    ahead = next((j for j in range(i + 1, smoother.n) if smoother.valid[j]), None)
                    m = (crop_transform(smoother.raw[ahead], size, config.margin) if ahead is not None
                         else _centre_transform(W, H, size))
                writer.write(warp(image, m, size) if colour else warp_planes(image, m, size))
                transform[i], valid[i], interpolated[i] = m, ok, interp
                if ok:
                    lm_src[i], lm_crop[i] = pts, apply(m, pts)

            # decode _CHUNK frames, then fit them one by one (the tracker still sees every frame in order), then crop
            # and encode them: each step's working set (decoder, the landmark model's trees, encoder) stays in cache
            # instead of being evicted every frame (on grainy 1080p, per-frame interleaving made each fit ~2.5x slower)
            chunk_size = config.batch_size * -(-_CHUNK // config.batch_size)
            buffer: deque = deque()
            pending: list = []
            n_read = 0

            def run(chunk):
                for j in range(0, len(chunk), config.batch_size):
                    batch = chunk[j:j + config.batch_size]
                    views = [im if colour else im[0] for _, im in batch]
                    for (i, image), ob in zip(batch, tracker.step(views)):
                        smoother.push(ob.landmarks)
                        found[i] = ob.landmarks is not None
                        score[i] = ob.score if found[i] else 0.0
                        buffer.append((i, image))
                while len(buffer) > smoother.lag:
                    emit(*buffer.popleft())

            frames = (((f.index, f.image) for f in iter_frames(source, start_frame, T)) if colour
                      else iter_planes(source, start_frame, T))
            for index, image in frames:
                i = index - start_frame
                if i % config.detect_every == 0:
                    contrast = max(contrast, float((image if colour else image[0])[::8, ::8].std()))
                pending.append((i, image))
                n_read += 1
                if len(pending) == chunk_size:
                    run(pending)
                    pending = []
            if pending:
                run(pending)
            while buffer:
                emit(*buffer.popleft())

            if n_read < T:
                total = info.n_frames if info.n_frames is not None else "?"
                status = "too_short" if n_read < config.min_frames else "corrupt"
                raise _Reject(FaceResult(status, f"decoded {n_read} of the {T} frames asked for "
                                                 f"(from frame {start_frame}; the header says {total})",
                                         name, n_read, detector_calls=tracker.detector_calls))
            n_found = int(found.sum())
            base = dict(backend=name, n_frames=T, found_ratio=n_found / T, interpolated=int(interpolated.sum()),
                        detector_calls=tracker.detector_calls)
            if n_found == 0:
                why = "the frames are blank (no contrast)" if contrast < 2.0 else "the detector found no face"
                raise _Reject(FaceResult("no_face", f"no face in {T} frames: {why}", **base))
            result = FaceResult("ok", None, mean_score=float(score[found].mean()), jitter=jitter(lm_src, valid), **base)
            if result.found_ratio < config.min_found_ratio:
                result.status = "partial"
                result.error = (f"face found on {100 * result.found_ratio:.1f}% of frames "
                                f"(< {100 * config.min_found_ratio:.0f}%); frames without a face have valid=False")
        with atomic_path(arrays_out) as tmp_arrays, open(tmp_arrays, "wb") as fh:
            np.savez(fh, landmarks_src=lm_src, landmarks_crop=lm_crop, valid=valid, score=score,
                     transform=transform, interpolated=interpolated)
    return result


def align_image(image_bgr: np.ndarray, config: FacesConfig = FacesConfig()):
    """Align the main face of one still image: (crop, landmarks_crop, landmarks_src, transform 2x3 source->crop).

    Raises NoFaceError when no face is found (FaceBackendUnavailable when the backend cannot load)."""
    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError("align_image needs an H x W x 3 BGR uint8 image")
    tracker = tracker_for(backend_for(config), config)
    h, w = image_bgr.shape[:2]
    dets, stretch = tracker.search(image_bgr)
    if not dets:
        raise NoFaceError(f"no face found in the {w}x{h} image (backend {config.backend}); "
                          "use a photo with a clearly visible, roughly frontal face")
    pts = tracker.start(image_bgr, main_face(dets, w, h).box, stretch).astype(np.float32)
    m = crop_transform(pts, config.crop_size, config.margin)
    return warp(image_bgr, m, config.crop_size), apply(m, pts).astype(np.float32), pts, m.astype(np.float32)
