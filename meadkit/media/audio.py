"""Decode audio tracks (AAC in .m4a/.mp4, WAV, ...) to float32 arrays, and encode AAC, with PyAV.

PyAV bundles FFmpeg's libraries, so no system ffmpeg is needed (soundfile cannot read AAC,
and librosa.load shells out to an ffmpeg on PATH for it).
"""
from __future__ import annotations

from typing import Optional

import av
import numpy as np

from meadkit.media.sources import Source
from meadkit.media.probe import MediaError


def load_audio(source: Source, mono: bool = True) -> tuple[np.ndarray, int]:
    """Decode the first audio stream of `source` at its native sample rate.

    Returns (samples, sample_rate): float32, shape (n,) if `mono` (channel mean) else
    (channels, n). Decoders disagree by a few hundred samples on AAC's length, so the
    result is trimmed to the duration the stream header states. Raises MediaError if the
    file has no audio stream or cannot be decoded.
    """
    try:
        with source.open() as fh, av.open(fh, "r") as c:
            if not c.streams.audio:
                raise MediaError(f"{source} has no audio stream")
            stream = c.streams.audio[0]
            sr = stream.codec_context.sample_rate
            resampler = av.AudioResampler(format="fltp", layout=None, rate=sr)
            chunks = []
            for frame in c.decode(stream):
                for out in resampler.resample(frame):
                    chunks.append(out.to_ndarray())
            for out in resampler.resample(None):
                chunks.append(out.to_ndarray())
            stated = stream.duration * stream.time_base if stream.duration else None
    except MediaError:
        raise
    except (av.error.FFmpegError, OSError, ValueError) as e:
        raise MediaError(f"cannot decode audio {source}: {e}") from None
    if not chunks:
        raise MediaError(f"{source}: audio stream holds no samples")
    samples = np.concatenate(chunks, axis=1).astype(np.float32, copy=False)
    if stated is not None:
        samples = samples[:, : int(round(stated * sr))]
    return (samples.mean(axis=0) if mono else samples), sr


def add_aac_stream(container, samples: np.ndarray, sample_rate: int, bitrate: int = 128000):
    """Add an AAC stream sized for `samples` (shape (n,) or (channels, n)) to an output container."""
    channels = 1 if samples.ndim == 1 else samples.shape[0]
    stream = container.add_stream("aac", rate=sample_rate)
    stream.layout = "mono" if channels == 1 else "stereo"
    stream.bit_rate = bitrate
    return stream


def encode_audio(container, stream, samples: np.ndarray, chunk: int = 1024) -> None:
    """Encode float32 `samples` into `stream` of `container` (frame by frame, so memory stays small)."""
    data = np.atleast_2d(np.clip(samples, -1.0, 1.0)).astype(np.float32)
    layout = "mono" if data.shape[0] == 1 else "stereo"
    for start in range(0, data.shape[1], chunk):
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(data[:, start : start + chunk]), format="fltp", layout=layout)
        frame.sample_rate = stream.rate
        frame.pts = start
        for pkt in stream.encode(frame):
            container.mux(pkt)
    for pkt in stream.encode(None):
        container.mux(pkt)


def write_audio(path: str, samples: np.ndarray, sample_rate: int, fmt: Optional[str] = None) -> None:
    """Write `samples` as AAC in an .m4a (or the container `fmt` names)."""
    with av.open(path, "w", format=fmt or "ipod") as c:
        stream = add_aac_stream(c, samples, sample_rate)
        encode_audio(c, stream, samples)
