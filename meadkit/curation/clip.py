"""The per-clip curation measures of a take's views and its reference audio's fingerprint (the take worker's part)."""
from __future__ import annotations

from fractions import Fraction
from pathlib import Path
from typing import Optional

import numpy as np

from meadkit.curation.lipsync import av_offset, is_silent, mouth_opening, speech_envelope
from meadkit.curation.picture import PICTURE_COLUMNS, image_quality
from meadkit.curation.pose import POSE_COLUMNS, head_pose

#: Seconds of the reference audio its fingerprint covers, from its start.
FINGERPRINT_S = 4.0
#: The fingerprint's mel bands and hop (seconds).
FINGERPRINT_BANDS, FINGERPRINT_HOP_S = 16, 0.1


def measure_clip(faces_npz: Optional[Path], crop_video: Optional[Path], envelope: np.ndarray, silent: bool,
                 size: tuple[int, int]) -> dict:
    """One view's curation columns (NaN where a measure cannot be taken) and the threshold-free flags:
    `no_landmarks` without a valid frame, `silent` when the take's envelope holds no speech."""
    flags = ["silent"] if silent else []
    arrays = _landmarks(faces_npz)
    nan = dict.fromkeys(("av_offset_frames", "av_confidence") + POSE_COLUMNS + PICTURE_COLUMNS, float("nan"))
    values = nan | {"valid_ratio": 0.0}
    if arrays is None or not arrays[1].any():
        return values | {"quality_flags": ["no_landmarks"] + flags}
    points, valid = arrays
    values["valid_ratio"] = float(valid.mean())
    if not silent:
        mouth = np.where(valid, mouth_opening(points), np.nan)
        values["av_offset_frames"], values["av_confidence"] = av_offset(mouth, envelope)
    values |= head_pose(points, valid, *size)
    if crop_video:
        values |= image_quality(str(crop_video), len(valid))
    return values | {"quality_flags": flags}


def take_envelope(audio: tuple, t0_s: float, n_frames: int, fps: Fraction) -> tuple[np.ndarray, bool]:
    """The reference audio's speech envelope on the take's grid, and whether it is silent."""
    samples, sr = audio
    envelope = speech_envelope(samples, sr, t0_s, n_frames, fps)
    return envelope, is_silent(envelope)


def fingerprint(audio: tuple) -> list[float]:
    """A coarse spectral fingerprint of the reference audio's first FINGERPRINT_S seconds: its log mel
    spectrogram (FINGERPRINT_BANDS bands, a column per FINGERPRINT_HOP_S), standardised, rounded to 3 decimals."""
    import librosa

    samples, sr = audio
    y = np.asarray(samples[: int(FINGERPRINT_S * sr)], np.float32)
    if len(y) < sr // 10:
        return []
    hop = int(FINGERPRINT_HOP_S * sr)
    mel = librosa.feature.melspectrogram(y=y, sr=sr, n_fft=2 * hop, hop_length=hop, n_mels=FINGERPRINT_BANDS)
    x = np.log(mel + 1e-8).ravel()
    x = (x - x.mean()) / (x.std() or 1.0)
    return [round(float(v), 3) for v in x]


def _landmarks(path: Optional[Path]) -> Optional[tuple[np.ndarray, np.ndarray]]:
    """(landmarks_src, valid) of a faces.npz, or None where there is none or it cannot be read."""
    if path is None:
        return None
    try:
        with np.load(path, allow_pickle=False) as z:
            return z["landmarks_src"].astype(np.float64), z["valid"].astype(bool)
    except (OSError, KeyError, ValueError):
        return None
