"""Probe a recording's container and streams without decoding it (PyAV reads the headers only)."""
from __future__ import annotations

from dataclasses import asdict, dataclass
from fractions import Fraction
from typing import Optional

import av

from meadkit.corpus.sources import Source


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
