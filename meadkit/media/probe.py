"""Probe a recording's container and streams without decoding it (PyAV reads the headers only)."""
from __future__ import annotations

import struct
from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Iterator, Optional

import av
import numpy as np

from meadkit.media.sources import Source


class MediaError(RuntimeError):
    """A recording that cannot be opened or decoded; the message is meant for the user."""


@dataclass
class Probe:
    """Header facts of one recording. Video fields are None for audio-only files."""

    container: Optional[str] = None
    video_codec: Optional[str] = None
    width: Optional[int] = None
    height: Optional[int] = None
    fps_num: Optional[int] = None
    fps_den: Optional[int] = None
    n_frames: Optional[int] = None
    duration_s: Optional[float] = None
    video_start_s: Optional[float] = None
    has_audio: bool = False
    audio_codec: Optional[str] = None
    sample_rate: Optional[int] = None
    channels: Optional[int] = None
    audio_duration_s: Optional[float] = None
    audio_start_s: Optional[float] = None

    @property
    def fps(self) -> Optional[Fraction]:
        return Fraction(self.fps_num, self.fps_den) if self.fps_num else None

    def as_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_row(cls, row: dict) -> "Probe":
        """The probe fields of a manifest row (e.g. of recordings.parquet)."""
        return cls(**{f: row.get(f) for f in cls.__dataclass_fields__})


def _start_seconds(stream) -> Optional[float]:
    return float(stream.start_time * stream.time_base) if stream.start_time is not None and stream.time_base else None


def _stream_seconds(stream) -> Optional[float]:
    if stream.duration is None or stream.time_base is None:
        return None
    return float(stream.duration * stream.time_base)


def probe(source: Source) -> Probe:
    """Read stream headers of `source`; raises MediaError for an unreadable or truncated file."""
    try:
        with source.open() as fh, av.open(fh, "r") as c:
            p = Probe(container=c.format.name)
            if c.streams.video:
                v = c.streams.video[0]
                rate = v.average_rate or v.guessed_rate or v.base_rate
                p.video_codec = v.codec_context.name
                p.width, p.height = v.codec_context.width, v.codec_context.height
                if rate:
                    p.fps_num, p.fps_den = rate.numerator, rate.denominator
                p.duration_s = _stream_seconds(v)
                p.video_start_s = _start_seconds(v)
                if p.duration_s is None and c.duration:
                    p.duration_s = c.duration / 1e6
                p.n_frames = v.frames or (round(p.duration_s * rate) if p.duration_s and rate else None)
            if c.streams.audio:
                a = c.streams.audio[0]
                p.has_audio = True
                p.audio_codec = a.codec_context.name
                p.sample_rate = a.codec_context.sample_rate
                p.channels = a.codec_context.channels
                p.audio_duration_s = _stream_seconds(a)
                p.audio_start_s = _start_seconds(a)
            if not c.streams.video and not c.streams.audio:
                raise MediaError("no audio or video stream")
            return p
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError, EOFError) as e:
        raise MediaError(f"cannot read {source}: {e}") from None


#: Boxes on the way from `moov` to a track's sample table.
_STBL_PATH = (b"trak", b"mdia", b"minf", b"stbl")


def _boxes(buf: bytes, start: int = 0, end: Optional[int] = None) -> Iterator[tuple[bytes, int, int]]:
    """(type, payload start, end) of the ISO-BMFF boxes in buf[start:end]; stops at the first malformed one."""
    end = len(buf) if end is None else end
    pos = start
    while pos + 8 <= end:
        size, kind = struct.unpack_from(">I4s", buf, pos)
        head = 8
        if size == 1 and pos + 16 <= end:
            size, head = struct.unpack_from(">Q", buf, pos + 8)[0], 16
        elif size == 0:
            size = end - pos
        if size < head or pos + size > end:
            return
        yield kind, pos + head, pos + size
        pos += size


def _sample_tables(buf: bytes, start: int, end: int, depth: int = 0) -> Iterator[dict[bytes, tuple[int, int]]]:
    """{box type: (payload start, end)} of every track's `stbl` below a `moov` payload."""
    for kind, a, b in _boxes(buf, start, end):
        if kind == _STBL_PATH[depth]:
            if depth == len(_STBL_PATH) - 1:
                yield {k: (x, y) for k, x, y in _boxes(buf, a, b)}
            else:
                yield from _sample_tables(buf, a, b, depth + 1)


def _table(buf: bytes, a: int, fmt: str, width: int) -> np.ndarray:
    """The entries of a full box (version/flags, uint32 count, then `width` values of `fmt` each)."""
    (n,) = struct.unpack_from(">I", buf, a + 4)
    return np.frombuffer(buf, dtype=f">{fmt}", count=n * width, offset=a + 8).reshape(n, width).astype(np.int64)


def _track_data_end(buf: bytes, boxes: dict[bytes, tuple[int, int]]) -> int:
    """Byte just past the last sample of one track, from its chunk offsets, sample-to-chunk and sample sizes."""
    if b"stco" in boxes:
        offsets = _table(buf, boxes[b"stco"][0], "u4", 1)[:, 0]
    elif b"co64" in boxes:
        offsets = _table(buf, boxes[b"co64"][0], "u8", 1)[:, 0]
    else:
        return 0
    if not len(offsets) or b"stsc" not in boxes or b"stsz" not in boxes:
        return 0
    a = boxes[b"stsz"][0]
    fixed, count = struct.unpack_from(">II", buf, a + 4)
    sizes = np.full(count, fixed, np.int64) if fixed else np.frombuffer(buf, ">u4", count, a + 12).astype(np.int64)
    stsc = _table(buf, boxes[b"stsc"][0], "u4", 3)
    per_chunk = np.zeros(len(offsets), np.int64)
    for i, (first, n, _) in enumerate(stsc):
        stop = stsc[i + 1][0] - 1 if i + 1 < len(stsc) else len(offsets)
        per_chunk[first - 1 : stop] = n
    bounds = np.minimum(np.concatenate([[0], np.cumsum(per_chunk)]), count)
    total = np.concatenate([[0], np.cumsum(sizes)])
    return int((offsets + total[bounds[1:]] - total[bounds[:-1]]).max())


def sample_data_end(moov: bytes) -> int:
    """Byte just past the furthest sample any track of a `moov` payload points at (0 if it lists none).

    A file shorter than this cannot hold the frames its header claims (e.g. a cut `mdat`).
    """
    try:
        return max((_track_data_end(moov, t) for t in _sample_tables(moov, 0, len(moov))), default=0)
    except (struct.error, ValueError):  # a garbled table: the probe will judge the file
        return 0
