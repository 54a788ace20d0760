"""PCA of mouth+jaw landmark shapes (or of their changes from a neutral frame's): the audio-to-landmark network
predicts these coefficients.

Fitted on the training split; the a2l network keeps it as buffers (plain tensors in its checkpoint).
"""
from __future__ import annotations

from dataclasses import dataclass

import torch

#: Landmark indices the audio drives: jaw (0-16) and mouth (48-67) of the 68-point scheme.
MOUTH_JAW = list(range(0, 17)) + list(range(48, 68))
#: Indices of the mouth points inside MOUTH_JAW (used for the mouth error).
MOUTH_IN_MOUTH_JAW = list(range(17, 37))


def to_units(px: torch.Tensor, size: int) -> torch.Tensor:
    """Landmark pixels of a size x size crop -> crop units in [0, 1] (size-independent)."""
    return (px + 0.5) / size


def from_units(units: torch.Tensor, size: int) -> torch.Tensor:
    """Crop units -> pixels of a size x size crop (pixel centres at integers)."""
    return units * size - 0.5


@dataclass
class ShapePCA:
    """Mean (D,) and orthonormal components (k, D) of flattened mouth+jaw landmarks (or changes) in crop units [0, 1]."""

    mean: torch.Tensor
    components: torch.Tensor

    def encode(self, shapes: torch.Tensor) -> torch.Tensor:
        """(B, P, 2) landmarks in crop units -> (B, k) coefficients."""
        return (shapes.flatten(1) - self.mean) @ self.components.T

    def decode(self, coeffs: torch.Tensor) -> torch.Tensor:
        """(B, k) coefficients -> (B, P, 2) landmarks in crop units."""
        return (coeffs @ self.components + self.mean).view(coeffs.shape[0], -1, 2)

    def to(self, device) -> "ShapePCA":
        return ShapePCA(self.mean.to(device), self.components.to(device))


def fit_pca(shapes: torch.Tensor, k: int = 20) -> ShapePCA:
    """Fit a k-component PCA to (N, P, 2) shapes (k is capped by the data's rank)."""
    x = shapes.flatten(1).double()
    mean = x.mean(0)
    _, _, vh = torch.linalg.svd(x - mean, full_matrices=False)
    k = min(k, vh.shape[0])
    return ShapePCA(mean.float(), vh[:k].float().contiguous())
