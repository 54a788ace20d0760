"""Optical flow from an actor's neutral frame to a frame: what the classifiers read as the expression, because on
aligned crops an expression is mostly a change of shape at the same places, which carries to faces no training
actor has (a classifier on the pixels learns the few training faces)."""
from __future__ import annotations

import cv2
import numpy as np
import torch
import torch.nn.functional as F

from meadkit.baseline.batch import luma

#: Flow is reported in units of this fraction of the crop side, so a typical expression move is about 1.
FLOW_UNIT = 0.05
#: Side (px) at which the "fine" flow is computed whatever the crop size: DIS runs on the CPU, and at 256 px it
#: would cost 16 times as much; at 64 px, the size it was measured at, it resolves every pixel.
FINE_SIDE = 64


def _grey_u8(images: torch.Tensor) -> np.ndarray:
    """(B, 3, S, S) RGB in [-1, 1] -> (B, S, S) uint8 luma (what DIS reads)."""
    y = luma(images.detach().float().cpu())[:, 0]
    return ((y + 1) * 127.5).round().clamp(0, 255).to(torch.uint8).numpy()


def _dis(quality: str, side: int) -> tuple[cv2.DISOpticalFlow, int]:
    """OpenCV's DIS for `quality` and the side its input is resized to (`side`, the crop's own, for "medium").

    "medium": OpenCV's medium preset on the crop (it stops at half the crop's resolution; what n2e's warp target and
    the runs before "fine" use). "fine": the fast preset (patch 8, stride 4, variational refinement) down to every
    pixel of a FINE_SIDE copy; on unseen faces a flow-only classifier reads it right 87% of the time (one seed)."""
    if quality == "medium":
        return cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_MEDIUM), side
    if quality == "fine":
        dis = cv2.DISOpticalFlow_create(cv2.DISOPTICAL_FLOW_PRESET_FAST)
        dis.setFinestScale(0)
        return dis, FINE_SIDE
    raise ValueError(f"flow quality must be 'medium' or 'fine', not {quality!r}")


def _resized(images: np.ndarray, side: int, interpolation: int) -> np.ndarray:
    return np.stack([cv2.resize(x, (side, side), interpolation=interpolation) for x in images])


@torch.no_grad()
def neutral_flow(frames: torch.Tensor, neutral: torch.Tensor, quality: str = "medium") -> torch.Tensor:
    """(B, 2, S, S) dense flow (x, y) that carries each `neutral` crop's pixels to the same row's `frames` crop, in
    units of FLOW_UNIT x S, on `frames`' device and dtype. OpenCV's DIS (see `_dis`) on the CPU, one pair at a time;
    it has no gradient (a loss through a classifier reaches the generator only by its image channels)."""
    a, b = _grey_u8(neutral), _grey_u8(frames)
    side = frames.shape[-1]
    dis, work = _dis(quality, side)
    if not len(a):
        return torch.zeros((0, 2, side, side), device=frames.device, dtype=frames.dtype)
    if work != side:
        a, b = _resized(a, work, cv2.INTER_AREA), _resized(b, work, cv2.INTER_AREA)
    flows = np.stack([dis.calc(n, f, None) for n, f in zip(a, b)])
    if work != side:
        flows = _resized(flows, side, cv2.INTER_LINEAR)
    out = torch.from_numpy(flows).permute(0, 3, 1, 2) / (FLOW_UNIT * work)
    return out.to(device=frames.device, dtype=frames.dtype)


def warp_target(neutral: torch.Tensor, frames: torch.Tensor, quality: str = "medium") -> torch.Tensor:
    """(B, S, S, 2) the flow in grid_sample's units (2 = the crop side) at which each `frames` pixel reads its
    `neutral` crop (frame(p) = neutral(p + flow(p))): the target of the neutral-to-emotion transform's warp."""
    return (neutral_flow(neutral, frames, quality) * (2 * FLOW_UNIT)).permute(0, 2, 3, 1)


def warp_as_flow(warp: torch.Tensor) -> torch.Tensor:
    """(B, 2, S, S) the flow a classifier reads (neutral -> frame, FLOW_UNIT x S units) of a (B, S, S, 2) warp in
    grid_sample's units (each frame pixel reads the neutral face at p + warp): its negative, for moves of a few
    pixels; differentiable."""
    return (-warp / (2 * FLOW_UNIT)).permute(0, 3, 1, 2)


def readback_noise(flow: torch.Tensor, sigma: float, cell: int = 4) -> torch.Tensor:
    """`flow` (B, 2, S, S) plus smooth Gaussian noise of std `sigma` (drawn on a grid of `cell`-px cells, bilinearly
    upsampled; torch's global RNG): DIS's own error on a pair is of that kind, and a generator scored through it
    must move pixels far enough to be read back from its images, not a sub-pixel pattern only the classifier sees."""
    side = flow.shape[-1]
    coarse = torch.randn(len(flow), 2, max(side // cell, 1), max(side // cell, 1), device=flow.device, dtype=flow.dtype)
    return flow + sigma * F.interpolate(coarse, size=(side, side), mode="bilinear", align_corners=False)
