"""Stream frames out of a video one at a time (pixels, or planes and their RGB), and write H.264 mp4s, with PyAV."""
from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from typing import Iterator, NamedTuple, Optional

import av
import cv2
from av.video.reformatter import VideoReformatter
import numpy as np

from meadkit.media.sources import MemorySource, Source
from meadkit.media.audio import add_aac_stream, encode_audio
from meadkit.media.probe import MediaError


@dataclass
class Frame:
    """One decoded frame: its index in the file, its presentation time in seconds, its pixels (H x W x 3)."""

    index: int
    time_s: float
    image: np.ndarray


def _decoded(source: Source | MemorySource, start: int, count: Optional[int], threads: int) -> Iterator[tuple[int, float, av.VideoFrame]]:
    """(index, time_s, PyAV frame) for frames [start, start+count) of `source`, decoded one at a time."""
    stop = None if count is None else start + count
    try:
        with source.open() as fh, av.open(fh, "r") as c:
            stream = c.streams.video[0]
            stream.thread_count = threads
            tb = stream.time_base
            for i, f in enumerate(c.decode(stream)):
                if stop is not None and i >= stop:
                    break
                if i < start:
                    continue
                t = float(f.pts * tb) if f.pts is not None else i / float(stream.average_rate or 30)
                yield i, t, f
    except (av.error.FFmpegError, OSError, IndexError) as e:
        raise MediaError(f"cannot decode video {source}: {e}") from None


def iter_frames(
    source: Source,
    start: int = 0,
    count: Optional[int] = None,
    pix_fmt: str = "bgr24",
    threads: int = 1,
) -> Iterator[Frame]:
    """Decode frames [start, start+count) of `source` in order, never holding more than one.

    `pix_fmt` is 'bgr24' (OpenCV order), 'rgb24' or 'gray'. A file that ends early simply yields
    fewer frames; one that cannot be decoded at all raises MediaError.

    One scaler converts every frame (the same pixels as `to_ndarray(format=...)`, which builds a new one per frame:
    1.4 ms against 0.19 for a 256 px crop, most of a shard's packing time)."""
    scaler = VideoReformatter()
    for i, t, f in _decoded(source, start, count, threads):
        yield Frame(i, t, scaler.reformat(f, format=pix_fmt).to_ndarray())


class Planes(NamedTuple):
    """A decoded frame's Y, U, V planes (views, no copy): chroma at half (4:2:0) or full (4:4:4) resolution;
    `full_range` for JPEG-range formats (yuvj*: MEAD's yuvj444p) whose levels must not be read as video range."""

    y: np.ndarray
    u: np.ndarray
    v: np.ndarray
    full_range: bool


#: Formats whose planes are given as decoded; any other is converted to yuv420p first.
NATIVE_PLANES = {"yuv420p": False, "yuvj420p": True, "yuv444p": False, "yuvj444p": True}


def iter_planes(source: Source | MemorySource, start: int = 0, count: Optional[int] = None, threads: int = 1) -> Iterator[tuple[int, Planes]]:
    """(index, Planes) for frames [start, start+count): the decoder's own planes (4:2:0 or 4:4:4, video or full
    range) as views of the decoded frame; other formats are converted to yuv420p.

    No colour conversion and no copy into one array: on MEAD's yuvj444p a conversion to yuv420p alone costs about
    half the decoding time."""
    scaler = VideoReformatter()
    for i, _, f in _decoded(source, start, count, threads):
        if f.format.name not in NATIVE_PLANES:
            f = scaler.reformat(f, format="yuv420p")
        y, u, v = (np.frombuffer(p, np.uint8).reshape(p.height, p.line_size)[:, : p.width] for p in f.planes)
        yield i, Planes(y, u, v, NATIVE_PLANES[f.format.name])


def _to_rgb(full_range: bool) -> np.ndarray:
    """`cv2.transform`'s 3x4 matrix from (Y, Cb, Cr) pixels to (R, G, B): BT.601 (what swscale, so PyAV, assumes for
    untagged video, as prepare's crops are), at full range (JPEG levels) or video range (Y 16..235, Cb/Cr 16..240)."""
    m = np.array([[1, 0, 1.402], [1, -0.344136, -0.714136], [1, 1.772, 0]])
    if not full_range:
        m = m * [255 / 219, 255 / 224, 255 / 224]
    offset = np.array([0 if full_range else 16, 128, 128])
    return np.hstack([m, -(m @ offset)[:, None]]).astype(np.float32)


#: (full_range -> the 3x4 matrix) of `_to_rgb`: `planes_rgb` and `meadkit.wds_frames.yuv_to_rgb` convert by it.
TO_RGB = {full: _to_rgb(full) for full in (False, True)}


def planes_rgb(planes: Planes, out: Optional[np.ndarray] = None) -> np.ndarray:
    """A frame's pixels (H x W x 3 uint8 RGB, written into `out` if given: a C-contiguous array of that shape) from
    its `Planes` at their range, BT.601 (`_to_rgb`) rounded, each 4:2:0 chroma sample covering its 2x2 pixels as in
    swscale's conversion: PyAV's `to_ndarray("rgb24")` within 2 levels at full range (3 at video range, where
    swscale's fixed-point tables run up to ~3 low), in a fraction of its time (to_ndarray builds a scaler per frame).

    OpenCV's `COLOR_YUV2RGB_I420` reads every frame as video range, which would crush a full-range frame's shadows
    and clip its highlights; so the chroma is replicated into a (Y, Cb, Cr) image by `cv2.merge` (a 2x2 block's two
    rows merged apart) and one `cv2.transform` by the range's matrix makes it RGB, in place (on this layout it
    costs less than `COLOR_YCrCb2RGB`)."""
    y, u, v = planes.y, planes.u, planes.v
    h, w = y.shape
    if out is None:
        out = np.empty((h, w, 3), np.uint8)
    elif out.shape != (h, w, 3) or out.dtype != np.uint8 or not out.flags.c_contiguous:
        raise ValueError(f"out must be a C-contiguous {h}x{w}x3 uint8 array, not {out.dtype} {out.shape}")
    if u.shape == (h, w):  # 4:4:4
        cv2.merge([y, u, v], dst=out)
    elif (2 * u.shape[0], 2 * u.shape[1]) == (h, w):
        u2, v2 = (cv2.merge([c, c]).reshape(h // 2, w) for c in (u, v))  # each chroma sample twice along its row
        rows = out.reshape(h // 2, 2, w, 3)
        for k in (0, 1):  # and on both rows of its block
            cv2.merge([y[k::2], u2, v2], dst=rows[:, k])
    else:  # odd sizes: the last chroma column or row covers one pixel
        cv2.merge([y, *(cv2.resize(c, (w, h), interpolation=cv2.INTER_NEAREST) for c in (u, v))], dst=out)
    return cv2.transform(out, TO_RGB[planes.full_range], dst=out)


#: MEAD's own video encoding (see shared MEAD_FACTS.md): libx264 High 4:4:4 Predictive, yuvj444p (full range),
#: ~2 Mb/s at 1080p and ~30 fps, one keyframe per clip, B-frames.
MEAD_BIT_RATE, MEAD_PIXELS = 2_000_000, 1920 * 1080
ENCODINGS = ("crf", "mead")


def mead_bit_rate(width: int, height: int, fps: Fraction) -> int:
    """MEAD's 2 Mb/s at 1080p and 30 fps; a smaller frame gets a rate falling with the square root of its area (the
    same bits per pixel would blur a small test frame's face far more than MEAD's 1080p blurs its own)."""
    return round(MEAD_BIT_RATE * (width * height / MEAD_PIXELS) ** 0.5 * float(fps) / 30)


class VideoWriter:
    """Write frames to an H.264 mp4 at an exact rational frame rate, optionally with an AAC track.

    Use as a context manager; `write(image)` takes H x W x 3 uint8 in `pix_fmt` order (or I420 planes stacked as
    'yuv420p'/'yuvj420p'). `encoding` 'crf' is yuv420p (yuvj420p for full-range I420 input) at constant quality
    `crf`; 'mead' is MEAD's own: yuvj444p High 4:4:4 at ~2 Mb/s at 1080p (`mead_bit_rate`), one keyframe, 3 B-frames, time
    base 1/1000000 when a frame lasts whole microseconds (MEAD's 1000000/33333). `audio` = (samples float32 in
    [-1, 1] shaped (n,) or (channels, n), sample_rate) is encoded as AAC when the writer closes.
    """

    def __init__(
        self,
        path: str,
        fps: Fraction,
        width: int,
        height: int,
        crf: int = 18,
        preset: str = "veryfast",
        pix_fmt: str = "bgr24",
        threads: int = 1,
        audio: Optional[tuple[np.ndarray, int]] = None,
        encoding: str = "crf",
    ):
        if encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}, got {encoding!r}")
        fps = Fraction(fps)
        self._c = av.open(path, "w", format="mp4")
        self._v = self._c.add_stream("libx264", rate=fps)
        self._v.width, self._v.height = width, height
        if encoding == "mead":
            self._v.pix_fmt = "yuvj444p"
            self._v.bit_rate = mead_bit_rate(width, height, fps)
            self._v.options = {"g": "100000", "bf": "3", "profile": "high444", "preset": preset}
            step = Fraction(1_000_000) / fps  # a frame in microseconds
            self._tick = step if step.denominator == 1 else Fraction(1)
        else:
            self._v.pix_fmt = "yuvj420p" if pix_fmt == "yuvj420p" else "yuv420p"
            self._v.options = {"crf": str(crf), "preset": preset}
            self._tick = Fraction(1)
        if self._tick != 1:
            self._v.time_base = Fraction(1, 1_000_000)
        self._v.thread_count = threads
        self._pix_fmt = pix_fmt
        self._n = 0
        self._audio = audio
        self._a = add_aac_stream(self._c, *audio) if audio is not None else None

    def write(self, image: np.ndarray) -> None:
        frame = av.VideoFrame.from_ndarray(np.ascontiguousarray(image), format=self._pix_fmt)
        frame.pts = int(self._n * self._tick)
        if self._tick != 1:
            frame.time_base = self._v.time_base
        self._n += 1
        for pkt in self._v.encode(frame):
            self._c.mux(pkt)

    def close(self) -> None:
        for pkt in self._v.encode():
            self._c.mux(pkt)
        if self._a is not None:
            encode_audio(self._c, self._a, self._audio[0])
        self._c.close()

    def __enter__(self) -> "VideoWriter":
        return self

    def __exit__(self, *exc) -> None:
        self.close()
