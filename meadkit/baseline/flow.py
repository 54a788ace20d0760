"""Optical flow from an actor's neutral frame to a frame: what the classifiers read as the expression, because on
aligned crops an expression is mostly a change of shape at the same places, which carries to faces no training
actor has (a classifier on the pixels learns the few training faces)."""
from __future__ import annotations

import cv2
import numpy as np
import torch

from meadkit.baseline.batch import luma

#: Flow is reported in units of this fraction of the crop side, so a typical expression move is about 1.
FLOW_UNIT = 0.05


def _grey_u8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) RGB in [-1, 1] -> (B, S, S) uint8 luma (what DIS reads)."""
    y = luma(images.detach().float().cpu())[:, 0]
    return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


@torch.no_grad()
def neutral_flow(frames: torch.Tensor, neutral: torch.Tensor) -> torch.Tensor:
    """(B, 2, S, S) dense flow (x, y) that carries each `neutral` crop's pixels to the same row's `frames` crop, in
    units of FLOW_UNIT x S, on `frames`' device and dtype. OpenCV's DIS (medium preset) on the CPU, one pair at a
    time; it has no gradient (a loss through the classifier reaches the generator by its image channels)."""
    a, b = _grey_u8(neutral), _grey_u8(frames)
    dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM)
    flows = np.stack([dis.calc(n, f, None) for n, f in zip(a, b)]) if len(a) else np.zeros((0, *a.shape[1:], 2), np.float32)
    out = torch.from_numpy(flows).permute(0, 3, 1, 2) / (FLOW_UNIT * frames.shape[-1])
    return out.to(device=frames.device, dtype=frames.dtype)


def warp_target(neutral: torch.Tensor, frames: torch.Tensor) -> torch.Tensor:
    """(B, S, S, 2) the flow in grid_sample's units (2 = the crop side) at which each `frames` pixel reads its
    `neutral` crop (frame(p) = neutral(p + flow(p))): the target of the neutral-to-emotion transform's warp."""
    return (neutral_flow(neutral, frames) * (2 * FLOW_UNIT)).permute(0, 2, 3, 1)
