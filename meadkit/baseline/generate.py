"""Generate an emotional talking-face video from one face photo and a speech recording with a trained run.

The face is aligned like the training crops, turned into the requested emotion and intensity once
(n2e), then each video frame gets its mouth from the audio and the photo's own mouth+jaw landmarks
(a2l -> heatmap -> refine). Frames are
written at MEAD_FPS with the input audio muxed in, so the video lasts as long as the speech.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Optional

import cv2
import numpy as np
import torch

from meadkit.atomic import atomic_path
from meadkit.baseline.batch import scale_landmarks, to_images, to_uint8
from meadkit.baseline.inference import load_run, resolve_device
from meadkit.corpus.names import MEAD_FPS, PAPER_EMOTIONS
from meadkit.inputs import align_face, speech_windows
from meadkit.media.video import VideoWriter

if TYPE_CHECKING:
    from meadkit.faces import FacesConfig
    from meadkit.features import FeaturesConfig

#: Frames rendered per forward pass.
CHUNK = 64


class GenerateError(ValueError):
    """Inputs generate cannot use (no face, bad label, unreadable audio); the message says which."""


@dataclass
class GenerateResult:
    """What was written."""

    path: Path
    n_frames: int
    fps: float
    audio_duration_s: float
    size: int


def parse_emotion(emotion: str | int) -> int:
    """An emotion name (paper names, e.g. 'happy', 'disgusted') or label index -> label index."""
    if isinstance(emotion, int) or str(emotion).isdigit():
        k = int(emotion)
        if 0 <= k < len(PAPER_EMOTIONS):
            return k
    elif str(emotion).lower() in PAPER_EMOTIONS:
        return PAPER_EMOTIONS.index(str(emotion).lower())
    raise GenerateError(f"unknown emotion {emotion!r}; use one of {', '.join(PAPER_EMOTIONS)}")


def generate(
    run_dir: Path | str,
    image_bgr: np.ndarray,
    audio_path: Path | str,
    emotion: str | int,
    level: int,
    out_path: Path | str,
    device: str = "cpu",
    out_size: Optional[int] = None,
    faces_config: Optional["FacesConfig"] = None,
    features_config: Optional["FeaturesConfig"] = None,
) -> GenerateResult:
    """Write `out_path` (H.264 + AAC mp4): the face of `image_bgr` speaking `audio_path` with `emotion` at `level` (1-3);
    faces/features settings default to the built-in ones (pass those that made the training shards)."""
    e = parse_emotion(emotion)
    if level not in (1, 2, 3):
        raise GenerateError(f"level must be 1, 2 or 3, got {level}")
    if PAPER_EMOTIONS[e] == "neutral":
        level = 1  # MEAD records neutral at level 1 only, so the networks know no other
    dev = resolve_device(device)
    model = load_run(run_dir, dev)
    crop, landmarks = align_face(image_bgr, faces_config)
    neutral = to_images(torch.from_numpy(np.ascontiguousarray(crop.transpose(2, 0, 1)))[None], model.size).to(dev)
    neutral_lm = scale_landmarks(torch.from_numpy(landmarks)[None], crop.shape[1], model.size).to(dev)
    samples, sr, windows = speech_windows(audio_path, MEAD_FPS, features_config)
    windows, n_frames, duration = torch.from_numpy(windows), len(windows), len(samples) / sr
    size = out_size or model.size
    size += size % 2  # yuv420p needs even sizes
    emotion_t, level_t = torch.tensor([e], device=dev), torch.tensor([level - 1], device=dev)
    coarse = model.transform(neutral, emotion_t, level_t)
    with atomic_path(out_path) as tmp, VideoWriter(str(tmp), MEAD_FPS, size, size, pix_fmt="rgb24", audio=(samples, sr)) as writer:
        for i in range(0, n_frames, CHUNK):
            w = windows[i : i + CHUNK].to(dev)
            mouth_jaw = model.mouth_jaw(w, emotion_t.expand(len(w)), level_t.expand(len(w)), neutral_lm.expand(len(w), -1, -1))
            frames = to_uint8(model.render(coarse.expand(len(w), -1, -1, -1), mouth_jaw)).permute(0, 2, 3, 1).cpu().numpy()
            for f in frames:
                writer.write(f if f.shape[0] == size else cv2.resize(f, (size, size), interpolation=cv2.INTER_CUBIC))
    return GenerateResult(Path(out_path), n_frames, float(MEAD_FPS), duration, size)
