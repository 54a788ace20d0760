"""A user's own face photo and speech made into what the baseline eats, exactly as `prepare` makes MEAD's.

`generate` calls this one module instead of the stages: the face is aligned by the faces stage's
crop and the audio featurized by the features stage, with the settings that made the training shards.
"""
from __future__ import annotations

import math
from dataclasses import replace
from fractions import Fraction
from pathlib import Path
from typing import Optional

import cv2
import numpy as np

from meadkit.config import load_pipeline
from meadkit.faces import FacesConfig, NoFaceError, align_image
from meadkit.features import FeaturesConfig, compute_features, feature_window
from meadkit.media.audio import load_audio
from meadkit.media.sources import Source


class InputError(ValueError):
    """A photo, recording or pipeline file that cannot be used; the message says which and why."""


def pipeline_settings(source: Path | str) -> tuple[FacesConfig, FeaturesConfig]:
    """The faces and features settings that made a run's training shards, from the prepared OUT folder (its
    config.toml, written by `meadkit prepare`) or a pipeline TOML, so a user's inputs are cropped and featurized alike."""
    path = Path(source)
    if path.is_dir():
        path = path / "config.toml"
    if not path.is_file():
        raise InputError(f"no pipeline config at {path}: pass the prepared OUT folder (it holds config.toml) or a pipeline TOML")
    pipeline = load_pipeline(path)
    return pipeline.faces, pipeline.features


def align_face(image_bgr: np.ndarray, faces_config: Optional[FacesConfig] = None) -> tuple[np.ndarray, np.ndarray]:
    """The aligned RGB face crop of a photo, as the faces stage crops training frames, and its (68, 2) landmarks in
    crop pixels."""
    try:
        crop, landmarks, _, _ = align_image(image_bgr, faces_config or FacesConfig())
    except NoFaceError as e:
        raise InputError(str(e)) from None
    return cv2.cvtColor(crop, cv2.COLOR_BGR2RGB), landmarks


def speech_windows(audio_path: Path | str, fps: Fraction, config: Optional[FeaturesConfig] = None) -> tuple[np.ndarray, int, np.ndarray]:
    """The recording's samples, rate and one mfcc28 window per video frame at `fps` (as many frames as the
    speech lasts, at least one), computed as the features stage computes a clip's."""
    try:
        samples, sr = load_audio(Source(str(audio_path)))
    except Exception as err:  # MediaError and friends: report, do not trace back
        raise InputError(f"cannot read audio {audio_path}: {err}") from None
    config = replace(config or FeaturesConfig(), sets=("mfcc28",))  # the baseline's only input
    n_frames = max(1, math.floor(len(samples) / sr * fps + 0.5))
    mfcc = compute_features(samples, sr, 0.0, n_frames, fps, config).mfcc
    return samples, sr, np.stack([feature_window(mfcc, i, config.context) for i in range(n_frames)])
