"""Losses of the baseline: L1, mouth-crop L1, perceptual, total variation, LSGAN and classifier losses.

Perceptual loss uses VGG16 when the user gives torchvision-format VGG16 weights (`--vgg-weights`,
read with `torch.load(weights_only=True)`, no torchvision needed); otherwise it uses the trained
face classifier's trunk activations (a documented substitute, announced in the training log).
"""
from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import nn

from meadkit.baseline.models import FaceClassifier, VGG16Features


def mouth_mask(mouth_px: torch.Tensor, size: int, margin: float = 0.25) -> torch.Tensor:
    """(B, 20, 2) mouth landmarks in pixels -> (B, 1, S, S) mask of their bounding box grown by `margin`; empty for a
    frame without landmarks (NaN: every comparison with it is false)."""
    lo, hi = mouth_px.amin(1), mouth_px.amax(1)  # (B, 2)
    pad = (hi - lo) * margin + 1
    lo, hi = lo - pad, hi + pad
    grid = torch.arange(size, device=mouth_px.device, dtype=mouth_px.dtype)
    inx = (grid[None] >= lo[:, 0:1]) & (grid[None] <= hi[:, 0:1])  # (B, S)
    iny = (grid[None] >= lo[:, 1:2]) & (grid[None] <= hi[:, 1:2])
    return (iny[:, :, None] & inx[:, None, :]).unsqueeze(1).to(mouth_px.dtype)


def masked_l1(output: torch.Tensor, target: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """L1 inside `mask` only (the mouth crop), averaged over the masked pixels."""
    diff = (output - target).abs() * mask
    return diff.sum() / (mask.sum() * output.shape[1]).clamp_min(1.0)


def total_variation(x: torch.Tensor) -> torch.Tensor:
    """Anisotropic total variation, summed over each image and averaged over the batch (paper weight 1e-5)."""
    tv = (x[:, :, 1:] - x[:, :, :-1]).abs().sum() + (x[:, :, :, 1:] - x[:, :, :, :-1]).abs().sum()
    return tv / x.shape[0]


def lsgan_discriminator(real_pred: torch.Tensor, fake_pred: torch.Tensor) -> torch.Tensor:
    """LSGAN discriminator loss: real patches towards 1, generated towards 0."""
    return 0.5 * (((real_pred - 1) ** 2).mean() + (fake_pred**2).mean())


def lsgan_generator(fake_pred: torch.Tensor) -> torch.Tensor:
    """LSGAN generator loss: generated patches towards 1."""
    return ((fake_pred - 1) ** 2).mean()


def classifier_loss(classifier: FaceClassifier, images: torch.Tensor, neutral: torch.Tensor, emotion: torch.Tensor,
                    level: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of the (frozen) emotion and intensity classifiers on generated images (made from `neutral`)."""
    return label_loss(*classifier(images, neutral), emotion, level)


def label_loss(e_logits: torch.Tensor, l_logits: torch.Tensor, emotion: torch.Tensor, level: torch.Tensor) -> torch.Tensor:
    """Cross-entropy of emotion and intensity logits against the labels a generator was asked for."""
    return F.cross_entropy(e_logits.float(), emotion) + F.cross_entropy(l_logits.float(), level)


class VGGWeightsError(ValueError):
    """A `--vgg-weights` file that is not a torchvision VGG16 state dict; the message says why."""


def load_vgg16(path: Path | str) -> VGG16Features:
    """VGG16 feature layers from a torchvision-format state dict file (e.g. vgg16-397923af.pth), frozen."""
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for unreadable or unsafe files
        raise VGGWeightsError(f"cannot read VGG16 weights {path}: {e}") from None
    if not isinstance(state, dict):
        raise VGGWeightsError(f"{path} does not hold a state dict")
    net = VGG16Features()
    wanted = net.features.state_dict().keys()
    missing = [k for k in wanted if f"features.{k}" not in state]
    if missing:
        raise VGGWeightsError(f"{path} is not a torchvision VGG16 state dict (missing features.{missing[0]})")
    try:
        net.features.load_state_dict({k: state[f"features.{k}"] for k in wanted})
    except RuntimeError as e:
        raise VGGWeightsError(f"{path}: VGG16 weights of the wrong shape: {e}") from None
    return net.eval().requires_grad_(False)


class PerceptualLoss(nn.Module):
    """Mean L1 distance between feature maps of a frozen network (VGG16 or the face classifier's trunk)."""

    def __init__(self, vgg: VGG16Features | None = None, classifier: FaceClassifier | None = None):
        super().__init__()
        if (vgg is None) == (classifier is None):
            raise ValueError("give exactly one of vgg, classifier")
        self.vgg, self.classifier = vgg, classifier
        self.kind = "vgg16" if vgg is not None else "classifier-features"

    def _features(self, x: torch.Tensor, neutral: torch.Tensor) -> list[torch.Tensor]:
        if self.vgg is not None:
            return self.vgg(x)
        return self.classifier.features(x, neutral)

    def forward(self, output: torch.Tensor, target: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
        """Feature distance of `output` from `target`, both faces of the actor whose neutral frame is `neutral` (the
        classifier's reference; VGG16 ignores it)."""
        fo, ft = self._features(output, neutral), self._features(target, neutral)
        return sum(F.l1_loss(a.float(), b.float().detach()) for a, b in zip(fo, ft)) / len(fo)

