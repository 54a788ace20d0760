"""Load a trained run's networks (frozen) and run the full baseline: audio -> mouth landmarks, neutral face
+ labels -> emotional face, refinement with the landmark heatmap.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Optional

import torch
from torch import nn

from meadkit.baseline.checkpoint import load_checkpoint, stage_path
from meadkit.baseline.config import BaselineConfig
from meadkit.baseline.heatmap import landmark_heatmap, refine_frames
from meadkit.baseline.models import Audio2Landmark, FaceClassifier, NeutralToEmotion, RefineUNet
from meadkit.baseline.pca import MOUTH_JAW, from_units, to_units


def resolve_device(name: str) -> torch.device:
    """'auto' -> cuda when available else cpu; 'cuda' without a GPU raises ValueError."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name.startswith("cuda") and not torch.cuda.is_available():
        raise ValueError("--device cuda requested but torch sees no CUDA device")
    if name not in ("cpu",) and not name.startswith("cuda"):
        raise ValueError(f"unknown device {name!r} (auto, cpu or cuda)")
    return torch.device(name)


def _load(run_dir: Path | str, stage: str, key: str, build, device: torch.device) -> nn.Module:
    """Network `key` of a stage checkpoint, frozen: `build(hparams, state)` makes it, then its state is loaded."""
    ck = load_checkpoint(stage_path(run_dir, stage), device)
    state = ck["models"][key]
    model = build(ck["hparams"], state).to(device)
    model.load_state_dict(state)
    return model.eval().requires_grad_(False)


def load_classifier(run_dir: Path | str, device: torch.device) -> FaceClassifier:
    """The trained emotion/intensity classifier of a run, frozen."""
    return _load(run_dir, "classifiers", "classifier", lambda hp, state: FaceClassifier(**hp), device)


def load_n2e(run_dir: Path | str, device: torch.device) -> NeutralToEmotion:
    """The trained neutral-to-emotion transformer of a run, frozen."""
    return _load(run_dir, "n2e", "n2e", lambda hp, state: NeutralToEmotion(**hp), device)


def load_a2l(run_dir: Path | str, device: torch.device) -> Audio2Landmark:
    """The trained audio-to-landmark network (with its PCA and MFCC statistics), frozen; its MFCC width is that
    of its statistics (the width of the shards it was trained on)."""
    return _load(run_dir, "a2l", "a2l", lambda hp, state: Audio2Landmark(**hp, n_mfcc=state["mfcc_mean"].numel()), device)


def load_refine(run_dir: Path | str, device: torch.device) -> RefineUNet:
    """The trained refinement U-Net, frozen (its discriminator is only needed for training)."""
    return _load(run_dir, "refine", "refine", lambda hp, state: RefineUNet(hp["width"]), device)


@dataclass
class TrainedBaseline:
    """All networks of a trained run, at the run's image size."""

    classifier: FaceClassifier
    a2l: Audio2Landmark
    n2e: NeutralToEmotion
    refine: RefineUNet
    config: BaselineConfig

    @property
    def size(self) -> int:
        return self.config.train.size

    @torch.no_grad()
    def mouth_jaw(self, mfcc: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor,
                  neutral_landmarks: Optional[torch.Tensor] = None) -> torch.Tensor:
        """(B, context, n_mfcc) MFCC windows (+ labels, + the (B, 68, 2) landmarks of the actor's neutral face in
        pixels of the size x size crop, NaN or None where unknown) -> (B, 37, 2) mouth+jaw landmarks in those pixels."""
        anchor = None if neutral_landmarks is None else to_units(neutral_landmarks[:, MOUTH_JAW], self.size)
        return from_units(self.a2l.predict_shape(mfcc, emotion, level, anchor), self.size)

    @torch.no_grad()
    def transform(self, neutral: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
        """Neutral faces (B, 3, S, S) in [-1, 1] + labels -> coarse emotional faces."""
        return self.n2e(neutral, emotion, level)

    @torch.no_grad()
    def render(self, coarse: torch.Tensor, mouth_jaw_px: torch.Tensor) -> torch.Tensor:
        """Refine coarse emotional faces for given mouth+jaw landmarks (pixels) -> final frames in [-1, 1] (only their
        mouth region with `refine.paste`)."""
        hm = landmark_heatmap(mouth_jaw_px, self.size)
        return refine_frames(self.refine, coarse, hm, mouth_jaw_px, self.config.refine.paste)[0]

    @torch.no_grad()
    def classify(self, images: torch.Tensor, neutral: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Predicted (emotion, level) labels of face images of the actors whose neutral frames are `neutral`."""
        e, lv = self.classifier(images, neutral)
        return e.argmax(1), lv.argmax(1)


def load_run(run_dir: Path | str, device: torch.device | str = "cpu") -> TrainedBaseline:
    """Every stage of a trained run folder; a missing stage raises CheckpointError naming it."""
    device = resolve_device(str(device))
    cfg = BaselineConfig.from_json(load_checkpoint(stage_path(run_dir, "refine"), device)["config"])
    return TrainedBaseline(
        load_classifier(run_dir, device), load_a2l(run_dir, device), load_n2e(run_dir, device), load_refine(run_dir, device), cfg
    )
