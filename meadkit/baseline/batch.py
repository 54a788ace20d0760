"""Turn dataset samples (dicts of uint8 frames, MFCC windows, landmarks, labels) into model-ready batches,
and pick each step's samples deterministically so a resumed run sees the same batches.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from meadkit.baseline.pca import from_units, to_units
from meadkit.config import ConfigError, recorded_tables


@dataclass
class Batch:
    """Model inputs at the training size: images in [-1, 1], landmarks in pixels of the resized crop."""

    frame: torch.Tensor  # (B, 3, S, S)
    neutral: torch.Tensor  # (B, 3, S, S)
    mfcc: torch.Tensor  # (B, context, n_mfcc): 30 x 28
    landmarks: torch.Tensor  # (B, 68, 2)
    neutral_landmarks: torch.Tensor  # (B, 68, 2) of the neutral frame; NaN where it has no face (or the data lacks them)
    emotion: torch.Tensor  # (B,) int64
    level: torch.Tensor  # (B,) int64
    valid: torch.Tensor  # (B,) bool: landmarks were found in this frame


def to_images(frames_u8: torch.Tensor, size: int) -> torch.Tensor:
    """(B, 3, H, W) uint8 -> (B, 3, size, size) float in [-1, 1] (area resampling when shrinking)."""
    x = frames_u8.float() / 127.5 - 1.0
    if x.shape[-1] != size or x.shape[-2] != size:
        mode = "area" if x.shape[-1] > size else "bilinear"
        x = F.interpolate(x, size=(size, size), mode=mode, **({} if mode == "area" else {"align_corners": False}))
    return x


def to_uint8(images: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) floats in [-1, 1] -> uint8."""
    return ((images.detach().float().clamp(-1, 1) + 1) * 127.5).round().to(torch.uint8)


def scale_landmarks(landmarks: torch.Tensor, from_size: int, to_size: int) -> torch.Tensor:
    """Landmarks in pixels of a from_size crop -> pixels of a to_size crop (pixel centres at integers)."""
    return from_units(to_units(landmarks, from_size), to_size)


def luma(images: torch.Tensor) -> torch.Tensor:
    """BT.601 luma of RGB images (..., 3, H, W) -> (..., 1, H, W)."""
    weights = torch.tensor([0.299, 0.587, 0.114], device=images.device, dtype=images.dtype).view(3, 1, 1)
    return (images * weights).sum(-3, keepdim=True)


def jitter(images: torch.Tensor, colour: float = 0.2, shift: float = 0.04, grey: float = 0.0) -> torch.Tensor:
    """Random per-image colour gain/offset, a fraction `grey` of the images made greyscale (BT.601 luma), and a
    small shift + zoom (draws from torch's global RNG, which checkpoints save): lets the classifiers generalise to
    unseen faces instead of memorising skin tones. Images of 3k channels are k RGB images stacked (a frame and its
    neutral reference): all k get the same draw."""
    b, k = images.shape[0], images.shape[1] // 3
    dev = images.device
    gain = (1 + colour * (torch.rand(b, 3, 1, 1, device=dev) * 2 - 1)).repeat(1, k, 1, 1)
    offset = (colour * (torch.rand(b, 3, 1, 1, device=dev) * 2 - 1)).repeat(1, k, 1, 1)
    x = (images * gain + offset).clamp(-1, 1)
    if grey > 0:
        rgb = x.view(b, k, 3, *x.shape[2:])
        pick = (torch.rand(b, device=dev) < grey).view(b, 1, 1, 1, 1)
        x = torch.where(pick, luma(rgb).expand_as(rgb), rgb).reshape(x.shape)
    theta = torch.zeros(b, 2, 3, device=dev)
    zoom = 1 + shift * (torch.rand(b, device=dev) * 2 - 1)
    theta[:, 0, 0] = theta[:, 1, 1] = zoom
    theta[:, :, 2] = shift * (torch.rand(b, 2, device=dev) * 2 - 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, padding_mode="border", align_corners=False)


def gather(data, indices: list[int]) -> dict[str, torch.Tensor]:
    """Samples `indices` of a dataset as a dict of stacked tensors (one `ShardDataset.batch` call when offered)."""
    if hasattr(data, "batch"):
        return data.batch(indices)
    samples = [data[i] for i in indices]
    return {k: torch.stack([torch.as_tensor(s[k]) for s in samples]) for k in samples[0]}


def make_batch(samples: dict[str, torch.Tensor], size: int, device: torch.device) -> Batch:
    """Stacked dataset samples -> a Batch on `device` at the training size."""
    src = samples["frame"].shape[-1]
    n = samples["frame"].shape[0]
    valid = samples.get("valid")
    neutral_lm = samples.get("neutral_landmarks")
    neutral_lm = torch.full((n, 68, 2), float("nan")) if neutral_lm is None else neutral_lm.float()
    return Batch(
        frame=to_images(samples["frame"], size).to(device),
        neutral=to_images(samples["neutral"], size).to(device),
        mfcc=samples["mfcc"].float().to(device),
        landmarks=scale_landmarks(samples["landmarks"].float(), src, size).to(device),
        neutral_landmarks=scale_landmarks(neutral_lm, src, size).to(device),
        emotion=samples["emotion"].long().to(device),
        level=samples["level"].long().to(device),
        valid=(torch.ones(n, dtype=torch.bool) if valid is None else valid.bool()).to(device),
    )


def step_indices(n: int, batch_size: int, seed: int, stream: int, step: int) -> list[int]:
    """Sample indices of training step `step`: epoch-wise shuffles seeded by (seed, stream, epoch)."""
    per_epoch = max(1, n // batch_size)
    epoch, pos = divmod(step, per_epoch)
    g = torch.Generator().manual_seed(seed * 1_000_003 + stream * 10_007 + epoch)
    perm = torch.randperm(n, generator=g)
    if n < batch_size:
        perm = perm.repeat(batch_size // n + 1)
    return perm[pos * batch_size : (pos + 1) * batch_size].tolist()


def class_weights(data, key: str, n: int) -> torch.Tensor:
    """Cross-entropy weights (n,) of the classes of `key` ("emotion" or "level"): inverse frame counts over `data`,
    scaled so a frame weighs 1 on average; 0 for a class the data lacks. A ShardDataset counts from its index,
    another dataset sample by sample."""
    if hasattr(data, "label_counts"):
        counts = np.asarray(data.label_counts(key, n), np.float64)
    else:
        counts = np.bincount([int(data[i][key]) for i in range(len(data))], minlength=n).astype(np.float64)
    present = counts > 0
    w = np.zeros(n)
    w[present] = counts.sum() / (present.sum() * counts[present])
    return torch.tensor(w, dtype=torch.float32)


def fixed_indices(n: int, count: int, seed: int) -> list[int]:
    """A fixed subset (e.g. for validation) of up to `count` indices, spread over the whole set."""
    if n <= count:
        return list(range(n))
    g = torch.Generator().manual_seed(seed)
    return sorted(torch.randperm(n, generator=g)[:count].tolist())


def check_paper_recipe(meta: dict, shards_dir) -> None:
    """Refuse (ConfigError, one line naming each difference) a shard set not made with the paper's recipe, the only
    one the baseline trains on: mfcc28 among its feature sets, frames at the source rate (a recorded `[timebase]
    fps`, where there is one, "source"), aligned crops (a recorded `[faces] crop`, where there is one, "aligned") and
    30-row feature windows."""
    tables = recorded_tables(meta.get("pipeline"))
    fps, crop = tables.get("timebase", {}).get("fps", "source"), tables.get("faces", {}).get("crop", "aligned")
    differs = [f"feature sets {', '.join(meta['feature_sets'])} lack mfcc28"] if "mfcc28" not in meta["feature_sets"] else []
    differs += [f"[timebase] fps = {fps!r} (the paper's: 'source')"] if fps != "source" else []
    differs += [f"[faces] crop = {crop!r} (the paper's: 'aligned')"] if crop != "aligned" else []
    context = tables.get("features", {}).get("context", 30)
    differs += [f"[features] context = {context} (the paper's: 30)"] if context != 30 else []
    if differs:
        raise ConfigError(f"{shards_dir} was not made with the paper's recipe, which the baseline needs: "
                          f"{'; '.join(differs)}. Prepare and shard with the default pipeline settings")


def open_split(shards_dir, split: str | None, cfg, verify: str = "size") -> "torch.utils.data.Dataset":
    """The shard samples (faces, mfcc28 windows as `mfcc`, labels) of one split (the index's split column),
    restricted to the config's views, of a shard set made with the paper's recipe (`check_paper_recipe`); `verify`
    is what the dataset checks on open (`shards.verify_for_reading`)."""
    from meadkit.data import ShardDataset
    from meadkit.shards import read_meta

    check_paper_recipe(read_meta(shards_dir), shards_dir)
    return ShardDataset(shards_dir, split=split, views=list(cfg.train.views) or None, seed=cfg.train.seed, verify=verify,
                        features=("mfcc28",))
