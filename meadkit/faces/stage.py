"""The faces stage: one decode pass over a view's synced window -> aligned crop video + landmark arrays + quality row."""
from __future__ import annotations

from collections import deque
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from meadkit.atomic import WRITE_ERRNOS, atomic_path
from meadkit.config import check_fields
from meadkit.media.sources import Source
from meadkit.faces.align import apply, crop_transform, warp
from meadkit.faces.crops import CROP_MODES, Framing, tube_transforms
from meadkit.faces.backends import Backend, FaceBackendUnavailable, get_backend
from meadkit.faces.gate import REJECTS
from meadkit.faces.model3d import fit_poses
from meadkit.faces.smooth import TrackSmoother, jitter
from meadkit.faces.track import Tracker
from meadkit.media.probe import MediaError, Probe, probe
from meadkit.media.video import VideoWriter, iter_frames, iter_planes
from meadkit.timebase import Grid, TimebaseConfig, at_positions, output_grid


@dataclass(frozen=True)
class FacesConfig:
    """Settings of the faces stage (the `[faces]` table of a pipeline TOML)."""

    backend: str = field(default="hybrid", metadata={"choices": ("hybrid", "dlib", "mesh", "fan")})  # hybrid (dlib + mediapipe mesh, gated) | dlib (frontal faces only) | mesh | fan
    fallback_detector: str = field(default="mmod", metadata={"choices": ("mmod", "mediapipe", "none")})  # last-resort detector when no other finds a face while searching:
    # mmod (dlib's CNN: ~2 s a call at 640 px, at most fallback_max a view; it finds faces the others miss at the start of some views) | mediapipe | none
    detect_every: int = field(default=15, metadata={"min": 1})  # check the track with the detector every k frames (search every k while no face)
    detect_width: int = field(default=640, metadata={"min": 32})  # frames are downscaled to this width for the search
    detect_upsample: int = field(default=0, metadata={"min": 0, "max": 3})  # HOG upsampling (finds smaller faces, ~4x slower)
    detect_stretch: float = field(default=2.0, metadata={"min": 0.0})  # also search on frames widened by this factor (turned faces); <= 1: off
    search_clahe: bool = True  # equalise contrast locally (CLAHE) on the search image: low-contrast, greyscale faces
    fallback_every: int = field(default=30, metadata={"min": 1})  # while searching, the slow fallback detector (~1-4 s/call) runs at most every n frames
    fallback_max: int = field(default=1, metadata={"min": 0})  # ... and at most this many times per view (so clips without a face stay fast)
    lost_score: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # tracking confidence below this -> frame has no face, detector runs again ...
    mesh_lost_score: float = field(default=0.3, metadata={"min": 0.0, "max": 1.0})  # ... or below this where the mesh also saw the face (a second witness: blurry
    # greyscale faces keep their frames; on the benchmark no frame above 15% NME got through)
    redetect_score: float = field(default=0.85, metadata={"min": 0.0, "max": 1.0})  # confidence below this -> the detector checks the track every 3rd frame
    residual_max: float = field(default=0.18, metadata={"min": 0.0})  # gate: largest residual of a fit against the generic 3D face at its pose
    frontal_yaw: float = field(default=20.0, metadata={"min": 0.0, "max": 90.0})  # gate: the 68-point model is trusted up to this yaw (degrees, from the mesh) ...
    agree_max: float = field(default=0.06, metadata={"min": 0.0})  # ... and while it agrees with the mesh within this many face heights
    jump_max: float = field(default=0.3, metadata={"min": 0.0})  # gate: a fit whose face moved more than this many face heights in one frame is rejected
    max_yaw: float = field(default=36.0, metadata={"min": 0.0, "max": 90.0})  # gate: faces turned further (as the chosen fit reads them) are rejected: the
    # landmarkers measured 20-50% NME on rendered 60-degree head turns
    tilt_yaw: float = field(default=30.0, metadata={"min": 0.0, "max": 90.0})  # gate: a face read as turned beyond this ...
    tilt_pitch: float = field(default=10.0, metadata={"min": 0.0, "max": 90.0})  # ... and tilted beyond this (degrees) is rejected
    mirror_max: float = field(default=0.025, metadata={"min": 0.0})  # gate: the mesh's points must agree with its fit on the mirrored region (face heights)
    view_slack: float = field(default=15.0, metadata={"min": 0.0, "max": 90.0})  # gate, in prepare: each view's face is taken as turned at
    # least |front view's head yaw + the camera's angle| - this (degrees: the head's motion within a take), so a 60-degree view is refused
    # where the mesh misreads it as 30 (it does on 55-65 degree turns); 90: off
    mesh_every: int = field(default=2, metadata={"min": 1})  # tracking: after a frame where dlib and the mesh agree closely (half agree_max) on a
    # face well inside frontal_yaw, the mesh sits out up to this many - 1 frames (its vertices there: the neighbours' mean); 1: every frame
    mirror_every: int = field(default=3, metadata={"min": 1})  # gate: a mirrored check passed with room to spare vouches for up to this many
    # frames while the head holds its pose (the check is a second mesh run: half the cost of a turned view); 1: every frame
    keep_mesh: bool = True  # also write the mesh's vertices (T, 478, 3) to .faces.npz (hybrid and mesh backends)
    crop: str = field(default="aligned", metadata={"choices": CROP_MODES})  # how crops follow the face: aligned | fixed | box | tube (meadkit/faces/crops.py)
    crop_size: int = field(default=256, metadata={"min": 32, "max": 1024})
    margin: float = field(default=0.2, metadata={"min": 0.0, "max": 0.45})  # aligned, fixed: fraction of the crop left around the template's landmarks on each side
    scale: float = field(default=1.35, metadata={"min": 0.5, "max": 4.0})  # box, tube: crop side over the landmark box's larger side
    shift_y: float = field(default=-0.1, metadata={"min": -1.0, "max": 1.0})  # box, tube: crop centre moved down by this x its side (negative: up)
    box_smooth_s: float = field(default=0.5, metadata={"min": 0.0})  # box: time constant (s) of the crop side's smoothing (0: none)
    tube_iou: float = field(default=0.25, metadata={"min": 0.0, "max": 1.0})  # tube: a frame whose box overlaps the segment's by less starts a new segment
    min_cutoff: float = field(default=1.5, metadata={"min": 0.001})  # One-Euro smoothing: cutoff (Hz) at rest
    beta: float = field(default=2.0, metadata={"min": 0.0})  # One-Euro smoothing: cutoff growth per inter-ocular distance/s of speed
    d_cutoff: float = field(default=1.0, metadata={"min": 0.001})
    mouth_min_cutoff: float = field(default=12.0, metadata={"min": 0.001})  # One-Euro cutoff at rest for lips and lower jaw (speech is fast)
    smooth_lag: int = field(default=12, metadata={"min": 0})  # look-ahead frames of the backward smoothing pass (frames held in memory)
    max_gap: int = field(default=8, metadata={"min": 0})  # gaps without a face up to this many frames are interpolated
    min_found_ratio: float = field(default=0.9, metadata={"min": 0.0, "max": 1.0})  # below this the view is 'partial'
    min_frames: int = field(default=2, metadata={"min": 1})  # fewer frames -> 'too_short'
    batch_size: int = field(default=1, metadata={"min": 1})  # frames fitted together (fan on GPU: 16 or more)
    weights_dir: Optional[str] = None  # fan weights folder (default: $TORCH_HOME/hub/checkpoints)
    device: str = "cpu"  # fan: cpu | cuda
    crf: int = field(default=20, metadata={"min": 0, "max": 51})  # H.264 quality of the crop video (ultrafast crf 20: the fidelity of veryfast crf 18, ~1.5x the size,
    preset: str = field(default="ultrafast", metadata={"choices": ("ultrafast", "superfast", "veryfast", "faster", "fast", "medium", "slow", "slower", "veryslow")})  # a fifth of its encode time on grainy crops)
    single_thread: bool = True  # cv2.setNumThreads(1): parallelism comes from worker processes

    def __post_init__(self) -> None:
        check_fields(self, "faces")


#: Landmarker codes of `.faces.npz` `landmarker` (1 + index; 0 = no face on the frame).
LANDMARKERS = ("fit", "mesh")
MESH_POINTS = 478  # mediapipe's refined mesh (468 face vertices + 10 iris points)

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
    rejected: float = 0.0
    mesh_ratio: float = 0.0
    head_yaw: float = float("nan")  # median yaw (degrees, `model3d.fit_pose`'s sign) of the frames fitted with a face

    def as_row(self) -> dict:
        """This result as columns (face_status, face_error, quality; clips.parquet keeps those it has)."""
        d = asdict(self)
        return {"face_status": d["status"], "face_error": d["error"], "face_backend": d["backend"],
                "face_frames": d["n_frames"], "found_ratio": d["found_ratio"],
                "interpolated_frames": d["interpolated"], "mean_score": d["mean_score"],
                "jitter": d["jitter"], "detector_calls": d["detector_calls"], "rejected_ratio": d["rejected"],
                "mesh_ratio": d["mesh_ratio"]}


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
    return get_backend(config)


def tracker_for(backend: Backend, config: FacesConfig, least_yaw: float = 0.0) -> Tracker:
    """A fresh tracker with the config's detection settings, for a face known to be turned at least `least_yaw`."""
    return Tracker(backend, config, least_yaw)


def process_view(source: Source, start_frame: int, n_frames: int, video_out: Path | str,
                 arrays_out: Path | str, config: FacesConfig = FacesConfig(),
                 out_fps: Optional[Fraction] = None, least_yaw: float = 0.0) -> FaceResult:
    """Track, smooth and align the face on frames [start_frame, start_frame + n_frames) of `source` in one
    decode pass; write the crop video and `.faces.npz` atomically, at `out_fps` (default: the source's rate; see
    `meadkit.timebase`). `least_yaw`: the face is known (from the take's front view and this camera's angle) to be
    turned at least this many degrees; fits read as turned less are judged at it (`gate.judge`).
    Bad input gives a status; only a full or read-only output disk raises (OSError)."""
    try:
        backend = backend_for(config)
    except (FaceBackendUnavailable, ValueError) as e:
        return FaceResult("backend_unavailable", str(e), config.backend)
    try:
        return _process(source, start_frame, n_frames, Path(video_out), Path(arrays_out), config, backend, out_fps,
                        least_yaw)
    except _Reject as r:
        return r.result
    except MediaError as e:
        return FaceResult("corrupt", str(e), backend.name)
    except Exception as e:  # a bug must not stop a corpus run: record it with its type
        if isinstance(e, OSError) and e.errno in WRITE_ERRNOS:  # the output's disk, not this view: stop the run
            raise
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
    """Aligned crop of a frame given as its (luma, u, v) planes, chroma at half (yuv420p) or full (yuv444p)
    resolution, as an I420 crop ((size*3/2, size))."""
    y, u, v = planes[:3]
    m_uv = np.array(m, np.float64)
    if u.shape == y.shape:  # 4:4:4: chroma on the luma grid; crop chroma pixel i covers crop luma 2i..2i+1
        m_uv = np.hstack([m_uv[:, :2] / 2, (m_uv[:, 2:] - 0.5) / 2])
    else:  # 4:2:0: chroma pixel (i, j) covers luma pixels 2i..2i+1: its centre is at luma 2i + 0.5
        m_uv[:, 2] = (m_uv[:, :2].sum(1) * 0.5 + m_uv[:, 2] - 0.5) / 2
    half = size // 2
    return np.concatenate([warp(y, m, size).ravel(), warp(u, m_uv, half).ravel(),
                           warp(v, m_uv, half).ravel()]).reshape(-1, size)


class _Track:
    """Per-frame arrays of one view's track, filled from the tracker's observations (see manifests/faces.md)."""

    def __init__(self, T: int, mesh_points: int):
        self.found = np.zeros(T, bool)
        self.score = np.zeros(T, np.float32)
        self.quality = np.zeros(T, np.float32)
        self.reject = np.zeros(T, np.uint8)
        self.landmarker = np.zeros(T, np.uint8)
        self.mesh = np.full((T, mesh_points, 3), np.nan, np.float32)
        self.spared = np.zeros(T, bool)  # frames the mesh sat out (`Tracker._spare`)

    def record(self, i: int, ob) -> None:
        self.found[i] = ob.landmarks is not None
        self.score[i] = ob.score if self.found[i] else 0.0
        self.quality[i] = ob.quality
        self.reject[i] = 1 + REJECTS.index(ob.reject) if ob.reject else 0
        self.landmarker[i] = LANDMARKERS.index(ob.source) + 1 if self.found[i] and ob.source else 0
        self.spared[i] = ob.spared
        if ob.mesh is not None and self.mesh.shape[1] == len(ob.mesh):
            self.mesh[i] = ob.mesh
        else:
            self.mesh[i] = np.nan

    def rejections(self) -> tuple[float, str]:
        """Fraction of frames whose fit the gate refused, and the commonest reason."""
        refused = self.reject[~self.found]
        refused = refused[(refused > 0) & (refused != 1 + REJECTS.index("no fit"))]  # "no fit": no face seen
        if not len(refused):
            return 0.0, ""
        return len(refused) / len(self.found), REJECTS[int(np.bincount(refused).argmax()) - 1]


def _process(source, start_frame, n_frames, video_out, arrays_out, config, backend, out_fps, least_yaw) -> FaceResult:
    info = _probe_window(source, n_frames, config, backend.name)
    grid = output_grid(0.0, n_frames, Fraction(info.fps), TimebaseConfig(str(out_fps) if out_fps else "source"))
    if grid.too_short():
        raise _Reject(FaceResult("too_short", grid.too_short(), backend.name))
    if least_yaw > config.max_yaw:  # the gate would refuse every fit: spare the decode and the models
        raise _Reject(FaceResult("no_face", f"not tracked: the take's front view and this camera's angle put the face "
                                            f"at {least_yaw:.0f}+ degrees, beyond max_yaw {config.max_yaw:g} (every fit "
                                            "would be refused; faces.view_slack=90 turns this off)", backend.name,
                                 grid.source_frames))
    with atomic_path(video_out) as tmp_video, ExitStack() as stack:
        view = _ViewPass(info, grid, config, backend, lambda fmt: stack.enter_context(VideoWriter(
            str(tmp_video), grid.fps, config.crop_size, config.crop_size, crf=config.crf,
            preset=config.preset, pix_fmt=fmt)), least_yaw)
        n_read = view.decode(source, start_frame)
        if view.framing is None and n_read == view.T:
            view.recrop(source, start_frame)
        result = view.outcome(n_read, start_frame, info)
        stack.close()  # the crop video is complete before its arrays are written
        with atomic_path(arrays_out) as tmp_arrays, open(tmp_arrays, "wb") as fh:
            np.savez(fh, **view.arrays())
    return result


def _probe_window(source, n_frames: int, config: FacesConfig, name: str) -> Probe:
    """The probed video of `source`; _Reject when it is unreadable or too short for the window."""
    try:
        info = probe(source)
    except MediaError as e:
        raise _Reject(FaceResult("unreadable", str(e), name)) from None
    if not info.width or not info.fps:
        raise _Reject(FaceResult("unreadable", f"{source}: no video stream with a frame rate", name))
    if info.n_frames is not None and info.n_frames < config.min_frames:
        raise _Reject(FaceResult("too_short", f"the file has {info.n_frames} frame(s); "
                                              f"at least {config.min_frames} needed", name))
    if n_frames < config.min_frames:
        raise _Reject(FaceResult("too_short", f"window of {n_frames} frame(s); at least {config.min_frames} needed",
                                 name))
    return info


class _ViewPass:
    """One decode pass over a view's window: fit each frame, smooth, crop and encode it once the smoother's
    look-ahead has passed, and fill the per-frame arrays of `.faces.npz`. The pass tracks every source frame and
    writes the grid's frames: each one's nearest source frame, landmarks interpolated at its instant.
    `open_writer(pix_fmt)` opens the crop video (at the first frame, which tells its colour range)."""

    def __init__(self, info: Probe, grid: Grid, config: FacesConfig, backend: Backend, open_writer,
                 least_yaw: float = 0.0):
        T, self.size, self.config, self.name = grid.source_frames, config.crop_size, config, backend.name
        self.fps, self.W, self.H, self.T = Fraction(info.fps), info.width, info.height, T
        self.grid, self.picks = grid, np.bincount(grid.nearest, minlength=T)  # crops written of each source frame
        self.tracker = tracker_for(backend, config, least_yaw)
        self.smoother = TrackSmoother(T, float(self.fps), config)
        # frames held back before they are cropped: the smoother's look-ahead, and room to track backwards from a
        # face found by the next search (which runs at least every detect_every frames)
        self.delay = max(self.smoother.lag, config.detect_every)
        self.lm_src = np.full((T, 68, 2), np.nan, np.float32)
        self.lm_crop = np.full((T, 68, 2), np.nan, np.float32)
        self.valid = np.zeros(T, bool)
        self.interpolated = np.zeros(T, bool)
        self.transform = np.zeros((T, 2, 3), np.float32)
        self.track = _Track(T, MESH_POINTS if backend.mesh is not None and config.keep_mesh else 0)
        self.framing = None if config.crop == "tube" else Framing(config, float(self.fps))
        self.segment = np.full(T, 0 if config.crop == "fixed" else -1, np.int16)  # tube: set by recrop
        self.contrast = 0.0
        # a grey (luma) plane is all dlib needs: decode to I420, warp the planes, encode I420 (no colour conversion)
        self.colour = bool(backend.needs_colour or info.width % 2 or info.height % 2 or self.size % 2)
        self._open_writer, self._writer = open_writer, None
        self.buffer: deque = deque()

    def _write(self, image, m: np.ndarray) -> None:
        """Encode the crop of `image` through `m`; the writer opens at the first frame: crops keep the source's
        range (MEAD is full range)."""
        if self._writer is None:
            self._writer = self._open_writer("bgr24" if self.colour else "yuvj420p" if image.full_range else "yuv420p")
        self._writer.write(warp(image, m, self.size) if self.colour else warp_planes(image, m, self.size))

    def _emit(self, i: int, image) -> None:
        """Crop and encode frame i with its smoothed landmarks (else the last crop, else the face ahead's); in tube
        mode only record them (`recrop` writes the crops)."""
        pts, ok, interp = self.smoother.final(i)
        self.valid[i], self.interpolated[i] = ok, interp
        if ok:
            self.lm_src[i] = pts
        if self.framing is None:
            return
        m = self.framing(pts if ok else None)
        if m is None:  # no face yet: frame it like the first face ahead, else the frame's centre
            sm = self.smoother
            ahead = next((j for j in range(i + 1, sm.n) if sm.valid[j]), None)
            m = self.framing.peek(sm.raw[ahead]) if ahead is not None else _centre_transform(self.W, self.H, self.size)
        for _ in range(self.picks[i]):
            self._write(image, m)
        self.transform[i] = m
        if ok:
            self.lm_crop[i] = apply(m, pts)

    def recrop(self, source, start_frame: int) -> None:
        """Tube mode: each segment's transform from the whole track, then a second decode pass writes the crops."""
        transform, self.segment = tube_transforms(self.lm_src, self.valid, self.config, self.W, self.H)
        self.transform[:] = transform
        self.lm_crop[self.valid] = _through(self.transform[self.valid], self.lm_src[self.valid])
        for index, image in self._frames(source, start_frame):
            for _ in range(self.picks[index - start_frame]):
                self._write(image, self.transform[index - start_frame])

    def _frames(self, source, start_frame: int):
        """(index, image) of the window's frames as the pass works on them: BGR images, or planes."""
        if self.colour:
            return ((f.index, f.image) for f in iter_frames(source, start_frame, self.T))
        return iter_planes(source, start_frame, self.T)

    def _tracked(self, image):
        """What the tracker sees of a decoded frame: the BGR image, or the luma plane of its planes."""
        return image if self.colour else image[0]

    def _backfill(self) -> None:
        """Track backwards from a face just found over the held frames before it that have none."""
        lost = []
        for j, image in reversed(self.buffer):
            if self.track.found[j]:
                break
            lost.append((j, image))
        for (j, _), ob in zip(lost, self.tracker.backtrack([self._tracked(im) for _, im in lost])):
            self.smoother.revise(j, ob.landmarks)
            self.track.record(j, ob)

    def _run(self, chunk: list) -> None:
        """Fit the decoded frames of `chunk` in batches, then crop the frames that left the look-ahead."""
        batch_size = self.config.batch_size
        for j in range(0, len(chunk), batch_size):
            batch = chunk[j:j + batch_size]
            for (i, image), ob in zip(batch, self.tracker.step([self._tracked(im) for _, im in batch])):
                if self.tracker.restarted and ob.landmarks is not None and i == batch[0][0]:
                    self._backfill()
                self.smoother.push(ob.landmarks)
                self.track.record(i, ob)
                self.buffer.append((i, image))
        while len(self.buffer) > self.delay:
            self._emit(*self.buffer.popleft())

    def decode(self, source, start_frame: int) -> int:
        """Run the pass over frames [start_frame, start_frame + T); returns how many were decoded.

        Decodes _CHUNK frames, then fits them one by one (the tracker still sees every frame in order), then
        crops and encodes them: each step's working set (decoder, the landmark model's trees, encoder) stays in
        cache instead of being evicted every frame (on grainy 1080p, per-frame interleaving made each fit ~2.5x
        slower)."""
        config = self.config
        chunk_size = config.batch_size * -(-_CHUNK // config.batch_size)
        pending: list = []
        n_read = 0
        for index, image in self._frames(source, start_frame):
            i = index - start_frame
            if i % config.detect_every == 0:
                self.contrast = max(self.contrast, float(self._tracked(image)[::8, ::8].std()))
            pending.append((i, image))
            n_read += 1
            if len(pending) == chunk_size:
                self._run(pending)
                pending = []
        if pending:
            self._run(pending)
        while self.buffer:
            self._emit(*self.buffer.popleft())
        return n_read

    def outcome(self, n_read: int, start_frame: int, info: Probe) -> FaceResult:
        """The view's result ('ok' or 'partial'); _Reject when frames were missing or no face was found."""
        T, track, tracker, config = self.T, self.track, self.tracker, self.config
        if n_read < T:
            total = info.n_frames if info.n_frames is not None else "?"
            status = "too_short" if n_read < config.min_frames else "corrupt"
            raise _Reject(FaceResult(status, f"decoded {n_read} of the {T} frames asked for "
                                             f"(from frame {start_frame}; the header says {total})",
                                     self.name, n_read, detector_calls=tracker.detector_calls))
        n_found = int(track.found.sum())
        refused, why = track.rejections()
        base = dict(backend=self.name, n_frames=T, found_ratio=n_found / T, interpolated=int(self.interpolated.sum()),
                    detector_calls=tracker.detector_calls, rejected=refused,
                    mesh_ratio=float((track.landmarker == 1 + LANDMARKERS.index("mesh")).mean()))
        gate_note = f"fit rejected on {100 * refused:.0f}% of frames: {why}" if refused else ""
        if n_found == 0:
            raise _Reject(FaceResult("no_face", f"no face in {T} frames: {gate_note or self._why_no_face()}", **base))
        result = FaceResult("ok", None, mean_score=float(track.score[track.found].mean()),
                            jitter=jitter(self.lm_src, self.valid), head_yaw=self._head_yaw(), **base)
        if result.found_ratio < config.min_found_ratio:
            result.status = "partial"
            result.error = (f"face found on {100 * result.found_ratio:.1f}% of frames "
                            f"(< {100 * config.min_found_ratio:.0f}%)" + (f"; {gate_note}" if gate_note else "")
                            + "; frames without a face have valid=False")
        return result

    def _head_yaw(self) -> float:
        """Median yaw of the frames fitted with a face (not those interpolated), by `fit_poses`; NaN without any."""
        fitted = np.flatnonzero(self.valid & ~self.interpolated)
        return float(np.median([p.yaw for p in fit_poses(self.lm_src[fitted])])) if len(fitted) else float("nan")

    def _why_no_face(self) -> str:
        """Why no frame has a face when the gate refused none of the track's fits."""
        starts = self.tracker.start_rejects
        if starts:
            return (f"faces detected {sum(starts.values())} time(s), but every fit was rejected ("
                    + ", ".join(f"{k}: {v}" for k, v in sorted(starts.items())) + ")")
        return "the frames are blank (no contrast)" if self.contrast < 2.0 else "the detector found no face"

    def arrays(self) -> dict[str, np.ndarray]:
        """The arrays of `.faces.npz` on the grid (see manifests/faces.md): landmarks at each output instant, the
        rest (and the transform) of the frame whose picture it shows."""
        track, near = self.track, self.grid.nearest
        transform, lm_src, lm_crop, valid = self.transform[near], self.lm_src, self.lm_crop, self.valid
        if self.grid.fps != self.grid.source_fps:
            lm_src, valid = at_positions(self.lm_src, self.valid, self.grid.positions)
            lm_crop = _through(transform, lm_src).astype(np.float32)
        arrays = dict(landmarks_src=lm_src, landmarks_crop=lm_crop, valid=valid, score=track.score[near],
                      quality=track.quality[near], reject=track.reject[near], landmarker=track.landmarker[near],
                      transform=transform, interpolated=self.interpolated[near])
        arrays["segment"] = self.segment[near]
        if track.mesh.shape[1]:
            arrays["mesh_crop"] = _mesh_in_crop(_fill_spared(track.mesh, track.spared)[near], transform)
        return arrays


def _through(transform: np.ndarray, points: np.ndarray) -> np.ndarray:
    """Points (T, N, 2) mapped through each frame's 2x3 transform (T, 2, 3), in float64."""
    t = transform.astype(np.float64)
    return np.einsum("tij,tnj->tni", t[:, :, :2], points.astype(np.float64)) + t[:, None, :, 2]


def _fill_spared(mesh: np.ndarray, spared: np.ndarray) -> np.ndarray:
    """The mesh (T, N, 3) with the frames it sat out filled in: linearly between the nearest frames before and after
    where it ran and saw the face, or as the one of them that did (the window's last frame); else left NaN."""
    out, ran = mesh.copy(), np.flatnonzero(~spared)
    for i in np.flatnonzero(spared):
        k = np.searchsorted(ran, i)
        seen = [j for j in ran[max(k - 1, 0):k + 1] if np.isfinite(mesh[j, 0, 0])]  # the frames before and after
        if len(seen) == 2:
            a, b = seen
            out[i] = mesh[a] + (i - a) / (b - a) * (mesh[b] - mesh[a])
        elif seen:
            out[i] = mesh[seen[0]]
    return out


def _mesh_in_crop(mesh: np.ndarray, transform: np.ndarray) -> np.ndarray:
    """Mesh vertices (T, N, 3) in source pixels -> crop pixels (x, y through each frame's transform, z scaled
    alike), as float16 (steps of a quarter pixel at most in a 512 px crop; half the size of float32)."""
    xy = _through(transform, mesh[..., :2])
    scale = np.sqrt(np.abs(np.linalg.det(transform[:, :, :2].astype(np.float64))))[:, None, None]
    return np.concatenate([xy, mesh[..., 2:] * scale], -1).astype(np.float16)


def align_image(image_bgr: np.ndarray, config: FacesConfig = FacesConfig()):
    """Align the main face of one still image: (crop, landmarks_crop, landmarks_src, transform 2x3 source->crop).

    Raises NoFaceError when no face is found (FaceBackendUnavailable when the backend cannot load)."""
    if image_bgr is None or image_bgr.ndim != 3 or image_bgr.shape[2] != 3:
        raise ValueError("align_image needs an H x W x 3 BGR uint8 image")
    tracker = tracker_for(backend_for(config), config)
    h, w = image_bgr.shape[:2]
    if not tracker.restart(image_bgr, tracker.search(image_bgr)):
        raise NoFaceError(f"no face found in the {w}x{h} image (backend {config.backend}); "
                          "use a photo with a clearly visible, roughly frontal face")
    pts = tracker.landmarks.astype(np.float32)
    m = crop_transform(pts, config.crop_size, config.margin)
    return warp(image_bgr, m, config.crop_size), apply(m, pts).astype(np.float32), pts, m.astype(np.float32)
