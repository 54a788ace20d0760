"""Lower-face landmark heatmaps: the refinement network's picture of where the mouth and jaw are."""
from __future__ import annotations

from typing import Optional

import torch
import torch.nn.functional as F
from torch import nn

from meadkit.baseline.losses import mouth_mask
from meadkit.baseline.pca import MOUTH_IN_MOUTH_JAW


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


def mouth_region(mouth_jaw_px: torch.Tensor, size: int, margin: float = 0.25) -> torch.Tensor:
    """(B, 37, 2) mouth+jaw points in pixels -> (B, 1, S, S) soft mask in [0, 1] of the box holding the mouth and the
    chin (jaw point 8), grown by `margin` and feathered over size / 16 pixels: where refine may paint (a2l's mouth
    moves the lips and the chin); empty for a frame without landmarks."""
    box = mouth_mask(mouth_jaw_px[:, MOUTH_IN_MOUTH_JAW + [8]], size, margin)
    k = max(size // 16, 1) | 1  # odd, so the blur keeps the box centred
    return F.avg_pool2d(box, k, 1, k // 2, count_include_pad=False)


def paste(coarse: torch.Tensor, refined: torch.Tensor, region: torch.Tensor) -> torch.Tensor:
    """Refine's output inside `region` (a `mouth_region`), the coarse (n2e) face elsewhere (`refine.paste`)."""
    return coarse + region.to(coarse.dtype) * (refined - coarse)


def refine_frames(net: nn.Module, coarse: torch.Tensor, hm: torch.Tensor, mouth_jaw_px: torch.Tensor,
                  pasted: bool) -> tuple[torch.Tensor, Optional[torch.Tensor]]:
    """The refine network's faces for coarse faces and their mouth+jaw heatmap, pasted into the coarse ones inside
    `mouth_region` when `pasted` (`refine.paste`), and that region (None without paste): training and generation
    refine alike."""
    out = net(coarse, hm)
    if not pasted:
        return out, None
    region = mouth_region(mouth_jaw_px, coarse.shape[-1])
    return paste(coarse, out, region), region
