"""Lower-face landmark heatmaps: the refinement network's picture of where the mouth and jaw are."""
from __future__ import annotations

import torch


def landmark_heatmap(points: torch.Tensor, size: int, sigma: float | None = None) -> torch.Tensor:
    """(B, P, 2) points in pixels of a size x size crop -> (B, 1, S, S): max over Gaussian blobs, in [0, 1].

    `sigma` defaults to size / 48 pixels (1.3 px at 64, 8 px at 384); pass mouth+jaw points for the
    lower-face heatmap of the paper. A point that is NaN (a frame without a face, as the shards store it) adds no
    blob: such a frame's heatmap is empty, not NaN.
    """
    sigma = sigma if sigma is not None else max(size / 48, 1.0)
    grid = torch.arange(size, device=points.device, dtype=points.dtype)  # pixel centres at integers (OpenCV)
    dx = (grid[None, None, :] - points[..., 0:1]) ** 2  # (B, P, S) along x
    dy = (grid[None, None, :] - points[..., 1:2]) ** 2  # (B, P, S) along y
    g = torch.exp(-(dy[..., :, None] + dx[..., None, :]) / (2 * sigma**2))  # (B, P, S, S)
    return g.nan_to_num(0.0).amax(1, keepdim=True)
