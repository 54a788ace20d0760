"""Training batches of video frames read straight from a WebDataset export (`meadkit.export`): per frame its RGB
image, the feature window centred on it and its labels, as `meadkit.data.ShardDataset` gives them, with no shard set.

A sample of the export is a whole clip, and decoding its crop mp4 is the cost of reading it: each clip is decoded
once, all its frames, and then yields every frame, so one decode serves the whole clip (reaching one frame of an
mp4 means decoding the frames before it: about half the clip per sample). Batches are stacked inside the DataLoader
worker, each frame converted to RGB straight into the batch, and the batch is written into a reusable shared-memory
slot, so one batch crosses to the training process with no copy and no fresh memory, not a few hundred samples.
With `pixels="yuv"` the frames stay the decoder's planes (half the bytes at 4:2:0, and no conversion in the worker,
which on a CPU costs about as much as decoding): `yuv_to_rgb` makes them RGB where the batch lands, e.g. on the GPU.
"""
from __future__ import annotations

import io
import json
import os
from functools import partial
from typing import Iterable, Iterator, Optional

import numpy as np
import torch
import webdataset as wds
from torch.utils.data import get_worker_info

from meadkit.corpus.names import emotion_label
from meadkit.data import BatchRing, level_label, packed_batch, packed_bytes
from meadkit.features import FeaturesConfig, feature_window
from meadkit.media.sources import MemorySource
from meadkit.media.video import TO_RGB, iter_planes, planes_rgb

#: Per-frame values of a batch besides `frame`, `window`, `landmarks` and `key`, with their dtypes.
_SCALARS = {"index": torch.int64, "emotion": torch.int64, "level": torch.int64, "valid": torch.bool, "padded": torch.bool}
#: Batch slots per reading process: the DataLoader's default prefetch (2) in flight, the one being written and the
#: one the trainer holds.
RING_DEPTH = 4
#: What a batch's pixels are: RGB frames, or the decoder's planes (`yuv_to_rgb`).
PIXELS = ("rgb", "yuv")
#: `TO_RGB`'s matrices stacked, video range then full range: indexed by a batch's `full_range`.
_RGB_MATRICES = torch.as_tensor(np.stack([TO_RGB[False], TO_RGB[True]]))


def frame_batches(urls: Iterable[str] | str, batch_size: int = 256, shuffle: int = 0, feature: str = "mfcc28",
                  context: int = FeaturesConfig().context, seed: Optional[int] = None, pixels: str = "rgb") -> wds.WebDataset:
    """A webdataset pipeline (an IterableDataset) of batches of every frame of the export's clips in the shards
    `urls` (e.g. `meadkit.export.split_urls(DEST, "train")`); read it with
    `torch.utils.data.DataLoader(ds, batch_size=None, num_workers=N)` (each worker, and each node under
    torch.distributed, reads its own shards: give at least as many shards as workers).

    A batch (the last one may be smaller) holds B frames: `frame` (B, H, W, 3) uint8 RGB at the crop size, `window`
    (B, context, width) float32 of the `feature` set (rows [i - context//2, i - context//2 + context) of the clip,
    zero beyond its edges: `meadkit.features.feature_window`, as ShardDataset builds it; pass the prepare's
    `features.context` if it was not the default, the export does not record it), `landmarks` (B, 68, 2) float32 in
    crop pixels, int64 `emotion` (paper order) and `level` (0-based) as ShardDataset encodes them, `valid` (the
    face was found) and `padded` bool, and each frame's clip `key` (a list) and `index` in the clip. Every frame is
    given, as ShardDataset gives it; filter on `valid` where only found faces should count.

    Each reading process keeps `RING_DEPTH` batch slots of shared memory (~50 MB each for 256 frames of 256 px); a
    batch views its slot until its tensors are garbage-collected (a trainer that keeps more batches alive gets
    fresh memory for the next ones: safe, slower). `shuffle` > 0 shuffles the shard order and then the frames
    through a buffer of that many (each holds its decoded frame, ~100 KB at 256 px, per worker); `seed` fixes both
    orders (None: a fresh order each run). `pixels="yuv"`: instead of `frame`, the decoder's planes `y` (B, H, W),
    `u` and `v` (B, H/2, W/2 at 4:2:0) uint8 and `full_range` (B,) bool, for `yuv_to_rgb`."""
    if pixels not in PIXELS:
        raise ValueError(f"pixels must be one of {', '.join(PIXELS)}, not {pixels!r}")
    ds = wds.WebDataset(urls, shardshuffle=100 if shuffle else False, detshuffle=bool(shuffle), seed=seed,
                        nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker)
    ds = ds.compose(partial(_frames, feature=feature)).shuffle(shuffle, initial=shuffle, seed=seed)
    return ds.batched(batch_size, collation_fn=_Batcher(batch_size, context, pixels))


def yuv_to_rgb(y: torch.Tensor, u: torch.Tensor, v: torch.Tensor, full_range: torch.Tensor) -> torch.Tensor:
    """RGB (B, H, W, 3) uint8 of a `pixels="yuv"` batch, computed on the planes' device: BT.601 at each frame's
    range, each chroma sample covering its 2x2 block, by the matrices `planes_rgb` uses (equal to it within a level)."""
    h, w = y.shape[1:]
    chroma = [c.repeat_interleave(-(-h // c.shape[1]), 1).repeat_interleave(-(-w // c.shape[2]), 2)[:, :h, :w]
              for c in (u, v)]
    ycc = torch.stack([y, *chroma], -1).float()
    m = _RGB_MATRICES.to(y.device)[full_range.to(y.device).long()]  # (B, 3, 4), no per-frame host round trip
    rgb = torch.einsum("bhwc,boc->bhwo", ycc, m[:, :, :3]) + m[:, None, None, :, 3]
    return rgb.round().clamp(0, 255).to(torch.uint8)


def _frames(samples: Iterator[dict], feature: str) -> Iterator[dict]:
    """Every frame of every clip sample, in order (`_clip_frames`)."""
    for sample in samples:
        yield from _clip_frames(sample, feature)


def _clip_frames(sample: dict, feature: str) -> Iterator[dict]:
    """One clip's frames as samples: its planes (the mp4 decoded once for the whole clip; RGB when batched), the
    clip's feature rows (windowed when batched), landmarks and flags of the frame, and the clip's labels;
    ValueError where the members disagree."""
    key = sample["__key__"]
    labels = json.loads(sample["json"])
    with np.load(io.BytesIO(sample["npz"]), allow_pickle=False) as z:
        if feature not in z.files:
            raise ValueError(f"{key}: its npz holds no feature set {feature!r} (it has {labels.get('feature_sets')})")
        rows, landmarks, valid, padded = z[feature], z["landmarks_crop"], z["valid"], z["padded"]
    planes = [p for _, p in iter_planes(MemorySource(sample["mp4"], key))]
    lengths = {len(a) for a in (rows, landmarks, valid, padded)}
    if lengths != {len(planes)}:
        raise ValueError(f"{key}: its crop video has {len(planes)} frames, its npz arrays {sorted(lengths)} rows")
    emotion, level = emotion_label(labels["emotion"]), level_label(int(labels["level"]))
    for i, p in enumerate(planes):
        yield {"key": key, "index": i, "planes": p, "rows": rows, "landmarks": landmarks[i], "valid": valid[i],
               "padded": padded[i], "emotion": emotion, "level": level}


class _Batcher:
    """The pipeline's collation: a list of frame samples as one batch, written into the next slot of this process's
    `BatchRing` (made at its first batch, sized for `batch_size` frames like it; fresh memory where the slot is
    still held or too small). In a DataLoader worker the batch travels as a `_SlotBatch`."""

    def __init__(self, batch_size: int, context: int, pixels: str = "rgb"):
        self.batch_size, self.context, self.pixels = batch_size, context, pixels
        self._ring: Optional[BatchRing] = None
        self._pid = os.getpid()

    def __getstate__(self) -> dict:
        return self.__dict__ | {"_ring": None}  # a spawned worker makes its own

    def __call__(self, samples: list[dict]):
        spec = self._spec(samples, len(samples))
        if self._pid != os.getpid():  # a forked worker: never write the parent's slots
            self._ring, self._pid = None, os.getpid()
        if self._ring is None:
            self._ring = BatchRing(packed_bytes(self._spec(samples, self.batch_size)), 1, RING_DEPTH)
        k = self._ring.claim(0) if packed_bytes(spec) <= self._ring.slot_bytes else None
        in_worker = get_worker_info() is not None
        if k is None:
            batch = packed_batch(spec, shared=in_worker)
        elif in_worker:
            batch = packed_batch(spec, self._ring.slot(k))
        else:  # read in this process: handed out now, the slot is freed when the trainer drops the batch
            batch = self._ring.views(k, spec)
        self._fill(batch, samples)
        keys = [s["key"] for s in samples]
        return _SlotBatch(self._ring, k, spec, keys) if k is not None and in_worker else batch | {"key": keys}

    def _spec(self, samples: list[dict], b: int) -> dict:
        planes, width = samples[0]["planes"], samples[0]["rows"].shape[1]
        pix = ({"frame": ((b, *planes.y.shape, 3), torch.uint8)} if self.pixels == "rgb" else
               {"y": ((b, *planes.y.shape), torch.uint8), "u": ((b, *planes.u.shape), torch.uint8),
                "v": ((b, *planes.v.shape), torch.uint8), "full_range": ((b,), torch.bool)})
        return {**pix, "window": ((b, self.context, width), torch.float32),
                "landmarks": ((b, 68, 2), torch.float32), **{k: ((b,), dtype) for k, dtype in _SCALARS.items()}}

    def _fill(self, batch: dict[str, torch.Tensor], samples: list[dict]) -> None:
        """Each sample's RGB frame (converted in place), window (cut from its clip's rows) and values."""
        o = {k: v.numpy() for k, v in batch.items()}
        for j, s in enumerate(samples):
            if self.pixels == "rgb":
                planes_rgb(s["planes"], out=o["frame"][j])
            else:
                o["y"][j], o["u"][j], o["v"][j], o["full_range"][j] = s["planes"]
            o["landmarks"][j] = s["landmarks"]
            feature_window(s["rows"], s["index"], self.context, out=o["window"][j])
        for k in _SCALARS:
            o[k][:] = [s[k] for s in samples]


class _SlotBatch:
    """A batch a worker wrote into slot `k` of its ring: it travels as the ring (shared memory: torch sends a
    handle), the slot number and the layout, and arrives in the training process as the batch's tensors viewing that
    slot (`BatchRing.views`: the slot is freed when they die) and its keys."""

    def __init__(self, ring: BatchRing, k: int, spec: dict, keys: list[str]):
        self.ring, self.k, self.spec, self.keys = ring, k, spec, keys

    def __reduce__(self):
        return _slot_batch, (self.ring, self.k, self.spec, self.keys)


def _slot_batch(ring: BatchRing, k: int, spec: dict, keys: list[str]) -> dict:
    return ring.views(k, spec) | {"key": keys}
