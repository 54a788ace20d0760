"""torch Dataset over a shard set: per video frame, the face, a window of each chosen feature set (context x width:
shapes as the shard set's meta.json records them, e.g. 30x28 MFCC), landmarks, labels and a neutral reference face,
gathered from memory maps (no per-sample file opens, no pickle, flat memory).
"""
from __future__ import annotations

import copy
import logging
import math
import os
import weakref
from collections.abc import Sequence
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, WeightedRandomSampler, default_collate, get_worker_info

from meadkit.config import ConfigError, recorded_stage
from meadkit.corpus.names import PAPER_EMOTIONS, VIEWS, emotion_label
from meadkit.features import feature_window
from meadkit.shards import ShardError, open_shard, read_index, read_meta, verify_for_reading
from meadkit.splits import SPLITS

log = logging.getLogger(__name__)


#: The sample key of a feature set's windows where it is not the set's name (the baseline reads `mfcc`).
SAMPLE_KEYS = {"mfcc28": "mfcc"}


def window_shapes(meta: dict) -> dict[str, tuple[int, int]]:
    """(context, width) of the windows of each feature set a shard set holds: `features.context` of the pipeline
    config that made its clips (meta's `pipeline` text; the defaults where none was recorded) and the per-frame
    width of the set's arrays (meta's `layout`)."""
    context = recorded_stage(meta.get("pipeline"), "features").context
    return {name: (context, *meta["layout"][name]["per_frame_shape"]) for name in meta["feature_sets"]}


def _splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each element (deterministic across processes and platforms)."""
    x = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
    x = (x ^ (x >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    x = (x ^ (x >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return x ^ (x >> np.uint64(31))


def _layout(spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> tuple[dict[str, tuple[int, int]], int]:
    """Byte (offset, length) of each tensor of a batch packed into one buffer (64-byte aligned), and the total."""
    where, n = {}, 0
    for k, (shape, dtype) in spec.items():
        size = math.prod(shape) * torch.empty(0, dtype=dtype).element_size()
        where[k] = (n, size)
        n += -(-size // 64) * 64
    return where, n


def _views(flat: torch.Tensor, spec, where) -> dict[str, torch.Tensor]:
    """The batch's tensors as views of one flat uint8 buffer laid out by `_layout`."""
    return {k: flat[o : o + n].view(spec[k][1]).view(spec[k][0]) for k, (o, n) in where.items()}


def _buffer(nbytes: int, shared: bool) -> torch.Tensor:
    """A flat uint8 buffer; in shared memory if `shared` (what torch's default_collate does inside workers)."""
    storage = torch.UntypedStorage._new_shared(nbytes) if shared else torch.UntypedStorage(nbytes)
    return torch.empty(0, dtype=torch.uint8).set_(storage)


def packed_batch(spec: dict[str, tuple[tuple[int, ...], torch.dtype]], flat: Optional[torch.Tensor] = None,
                 shared: bool = False) -> dict[str, torch.Tensor]:
    """Empty tensors of `spec` (name -> (shape, dtype)) as views of one flat buffer: `flat` (e.g. a `BatchRing`
    slot), or a new one, in shared memory if `shared` (a worker's batch then crosses to the main process as it is)."""
    where, nbytes = _layout(spec)
    return _views(_buffer(nbytes, shared) if flat is None else flat, spec, where)


def packed_bytes(spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> int:
    """The bytes of one flat buffer holding the tensors of `spec` (`packed_batch`): a `BatchRing` slot's size."""
    return _layout(spec)[1]


def level_label(level):
    """The 0-based intensity label of MEAD's level 1..3 (an int or an integer array): every sample's `level`."""
    return level - 1


class BatchRing:
    """Reusable shared-memory batch slots, `depth` per worker, allocated (and faulted in) once.

    Fresh shared memory per batch costs more than gathering the batch (the kernel allocates and zeroes
    ~26 MB of tmpfs pages per 256 samples). A worker writes a batch into its next slot and returns only
    the slot number; the main process hands out tensors that view the slot (no copy) and marks the slot
    free when the last of them is garbage-collected. A worker whose next slot is still held (the consumer
    keeps batches) falls back to fresh shared memory, so a slot is never rewritten while it can be read.
    `make_loader`'s workers share one ring made before they start; a `meadkit.wds_frames` reader makes its own
    (one worker's) and sends it along with each batch, as torch sends shared memory: a handle.
    """

    def __init__(self, slot_bytes: int, n_workers: int, depth: int):
        self.slot_bytes, self.depth = slot_bytes, depth
        self.buf = torch.zeros(n_workers * depth * slot_bytes, dtype=torch.uint8).share_memory_()
        self.busy = torch.zeros(n_workers * depth, dtype=torch.uint8).share_memory_()
        self._written = 0  # per process: each worker counts its own batches
        self._held: set[int] = set()  # main process: slots whose batch is still referenced

    def claim(self, worker: int) -> Optional[int]:
        """Worker side: the slot for this worker's next batch, or None if its consumer still holds it."""
        k = worker * self.depth + self._written % self.depth
        self._written += 1
        busy = self.busy.numpy()
        if busy[k]:
            return None
        busy[k] = 1
        return k

    def slot(self, k: int) -> torch.Tensor:
        return self.buf[k * self.slot_bytes : (k + 1) * self.slot_bytes]

    def hand_out(self, k: int, nbytes: int) -> torch.Tensor:
        """Main side: the first `nbytes` of slot k as a tensor; the slot is freed when its last view dies."""
        arr = self.buf.numpy()[k * self.slot_bytes : k * self.slot_bytes + nbytes]  # kept alive by the tensor's storage
        self._held.add(k)
        weakref.finalize(arr, self._release, k).atexit = False
        return torch.from_numpy(arr)

    def views(self, k: int, spec: dict[str, tuple[tuple[int, ...], torch.dtype]]) -> dict[str, torch.Tensor]:
        """Main side: the batch of layout `spec` written into slot k (`packed_batch(spec, ring.slot(k))`), as views
        of the slot (no copy), which is freed when the last of them dies."""
        where, nbytes = _layout(spec)
        return _views(self.hand_out(k, nbytes), spec, where)

    def _release(self, k: int) -> None:
        self._held.discard(k)
        self.busy.numpy()[k] = 0

    def reset(self) -> None:
        """Main side, before an iteration: free the slots of batches an abandoned iteration dropped unseen."""
        busy = self.busy.numpy()
        for k in range(len(busy)):
            if k not in self._held:
                busy[k] = 0


class ShardDataset(Dataset):
    """Training samples (one per video frame) of the clips in a shard set that pass the filters.

    A sample is a dict of tensors: `frame` and `neutral` (3,S,S) uint8 RGB, one f32 window per chosen feature set
    (`features`, default every set the shard set holds) under its sample key (`mfcc` for mfcc28, else the set's
    name) of shape `window_shapes[key]` (context, width: 30x28 for mfcc28; rows [i - context//2, i - context//2 +
    context) of the clip, zero beyond its edges), `landmarks`
    (68,2) f32 in frame pixels, `valid` and `padded` bool, and int64 `emotion` (paper order), `level`
    (0-based), `actor` (index into `vocab['actors']`), `view` (index into VIEWS). `neutral` is a frame of a
    neutral clip of the same actor and view, fixed per sample by `seed`, and `neutral_landmarks` (68,2) its
    landmarks (NaN where that frame has no face). `__getitems__` gathers a whole
    batch at once (what DataLoader calls); memory maps open lazily once per worker process. Load with
    `make_loader` (batched collation, reusable shared-memory batch slots).
    """

    def __init__(
        self,
        shards_dir: Path | str,
        split: Optional[Iterable[str] | str] = None,
        emotions: Optional[Iterable[str]] = None,
        levels: Optional[Iterable[int]] = None,
        actors: Optional[Iterable[str]] = None,
        views: Optional[Iterable[str]] = None,
        size: Optional[int] = None,
        seed: int = 0,
        verify: str = "size",
        features: Optional[Iterable[str]] = None,
    ):
        self.dir = Path(shards_dir)
        self.meta = verify_for_reading(self.dir, verify) or read_meta(self.dir)
        if size is not None and size != self.meta["size"]:
            raise ShardError(f"{self.dir} holds {self.meta['size']}px frames, not {size}px: shard again with --size {size}")
        self.size, self.seed = self.meta["size"], int(seed)
        self._init_features(features)
        self.vocab = self.meta["vocab"]
        index = read_index(self.dir)
        usable = index[(index["status"] == "ok") & (index["length"] > 0)].reset_index(drop=True)
        keep = np.ones(len(usable), dtype=bool)
        for col, values in (("split", split), ("emotion", emotions), ("level", levels), ("actor", actors), ("view", views)):
            if values is not None:
                keep &= usable[col].isin([values] if isinstance(values, (str, int)) else list(values)).to_numpy()
        #: The selected clips (rows of index.parquet), in sample order.
        self.clips = usable[keep].reset_index(drop=True)
        c = self.clips
        self._c_shard = c["shard"].to_numpy(np.int64)
        self._c_offset = c["offset"].to_numpy(np.int64)
        self._c_len = c["length"].to_numpy(np.int64)
        self._c_start = np.concatenate([[0], np.cumsum(self._c_len)])
        self._c_labels = {
            "emotion": c["emotion_label"].to_numpy(np.int64),
            "level": level_label(c["level"].to_numpy(np.int64)),
            "actor": c["actor_index"].to_numpy(np.int64),
            "view": c["view_index"].to_numpy(np.int64),
        }
        self._shard_base = np.concatenate([[0], np.cumsum([s["n_frames"] for s in self.meta["shards"]])]).astype(np.int64)
        self._shard_names = [s["name"] for s in self.meta["shards"]]
        self._init_neutral(usable)
        self._maps: dict[int, dict[str, np.ndarray]] = {}
        self._pid = os.getpid()
        self._ring: Optional[BatchRing] = None  # set by make_loader on its own copy
        self._ring_batch = 0

    def label_counts(self, key: str, n: int) -> np.ndarray:
        """Frames per value (0..n-1) of a label ("emotion", "level" 0-based, "actor", "view") over the selection."""
        return np.bincount(self._c_labels[key], weights=self._c_len, minlength=n).astype(np.int64)

    def _init_features(self, features: Optional[Iterable[str]]) -> None:
        """The chosen feature sets (`self.features`), their sample keys and window shapes (`self.window_shapes`, by
        key; `self.mfcc_shape` is mfcc28's, None when it is not chosen)."""
        try:
            shapes = window_shapes(self.meta)
        except ConfigError as e:
            raise ShardError(f"{self.dir / 'meta.json'} records a pipeline config this meadkit refuses: {e}") from None
        self.features = tuple(shapes) if features is None else tuple([features] if isinstance(features, str) else features)
        missing = [name for name in self.features if name not in shapes]
        if missing or not self.features:
            raise ShardError(f"{self.dir} holds the feature sets {', '.join(shapes)}; asked for "
                             f"{', '.join(missing) or 'none'}: shard a prepared OUT made with those sets")
        self._keys = {name: SAMPLE_KEYS.get(name, name) for name in self.features}
        #: (context, width) of each chosen set's windows, by sample key.
        self.window_shapes = {self._keys[name]: shapes[name] for name in self.features}
        self.mfcc_shape = self.window_shapes.get(SAMPLE_KEYS["mfcc28"])

    def _init_neutral(self, usable) -> None:
        """Per (split, actor, view) group: the frames of its neutral clips, to draw reference faces from (of the
        sample's own split only: a train sample never shows a test take's face)."""
        n_actors, n_views = len(self.vocab["actors"]), len(VIEWS)
        n_groups = (len(SPLITS) + 1) * n_actors * n_views

        def group(df) -> np.ndarray:
            split = df["split"].map({s: i for i, s in enumerate(SPLITS)}).fillna(len(SPLITS)).to_numpy(np.int64)
            return (split * n_actors + df["actor_index"].to_numpy(np.int64)) * n_views + df["view_index"].to_numpy(np.int64)

        neutral = usable[usable["emotion_label"] == emotion_label("neutral")].copy()
        neutral["group"] = group(neutral)
        neutral = neutral.sort_values(["group", "take_id"])
        lens = neutral["length"].to_numpy(np.int64)
        self._n_start = np.concatenate([[0], np.cumsum(lens)])
        self._n_shard = neutral["shard"].to_numpy(np.int64)
        self._n_offset = neutral["offset"].to_numpy(np.int64)
        g = neutral["group"].to_numpy(np.int64)
        self._g_total = np.bincount(g, weights=lens, minlength=n_groups).astype(np.int64)
        self._g_start = np.concatenate([[0], np.cumsum(self._g_total)[:-1]]).astype(np.int64)
        self._c_group = group(self.clips)
        lacking = sorted({((SPLITS + ("no split",))[k // (n_actors * n_views)], self.vocab["actors"][k // n_views % n_actors],
                           VIEWS[k % n_views]) for k in np.unique(self._c_group) if self._g_total[k] == 0})
        if lacking:
            log.warning("no neutral clip in the same split for %d split/actor/view group(s) (%s); their samples use "
                        "the first frame of their own clip as the neutral reference", len(lacking),
                        ", ".join("/".join(g) for g in lacking))

    def __len__(self) -> int:
        return int(self._c_start[-1])

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps never travel to workers; each opens its own
        return state

    def _open(self, k: int) -> dict[str, np.ndarray]:
        """Memory-map shard k once per process; plain ndarray views skip np.memmap's per-access overhead."""
        arrays = ("frames", "landmarks", "valid", "padded", *self.features)
        maps = self._maps[k] = {n: a.view(np.ndarray) for n, a in open_shard(self.dir, self._shard_names[k], arrays).items()}
        return maps

    def _locate(self, idx: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(clip, frame within clip) of sample indices."""
        if idx.size and (idx.min() < 0 or idx.max() >= len(self)):
            raise IndexError(f"sample index out of range for a dataset of {len(self)} samples")
        clip = np.searchsorted(self._c_start, idx, side="right") - 1
        return clip, idx - self._c_start[clip]

    def _neutral_of(self, clip: np.ndarray, frame: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """(shard, position) of each sample's neutral reference frame, a pure function of (seed, sample)."""
        shard, pos = self._c_shard[clip], self._c_offset[clip] + frame
        h = _splitmix64(_splitmix64(np.full(clip.shape, self.seed, dtype=np.int64)) ^ (self._shard_base[shard] + pos).astype(np.uint64))
        g = self._c_group[clip]
        total = self._g_total[g]
        k = self._g_start[g] + (h % np.maximum(total, 1).astype(np.uint64)).astype(np.int64)
        nc = np.clip(np.searchsorted(self._n_start, k, side="right") - 1, 0, max(len(self._n_shard) - 1, 0))
        has = total > 0
        if not has.any():
            return shard, self._c_offset[clip]
        n_shard = np.where(has, self._n_shard[nc], shard)
        n_pos = np.where(has, self._n_offset[nc] + (k - self._n_start[nc]), self._c_offset[clip])
        return n_shard, n_pos

    def _spec(self, b: int) -> dict[str, tuple[tuple[int, ...], torch.dtype]]:
        s = self.size
        return {
            "frame": ((b, 3, s, s), torch.uint8),
            "neutral": ((b, 3, s, s), torch.uint8),
            **{key: ((b, *shape), torch.float32) for key, shape in self.window_shapes.items()},
            "landmarks": ((b, 68, 2), torch.float32),
            "neutral_landmarks": ((b, 68, 2), torch.float32),
            "valid": ((b,), torch.bool),
            "padded": ((b,), torch.bool),
            **{k: ((b,), torch.int64) for k in self._c_labels},
        }

    def _gather(self, indices, flat: Optional[torch.Tensor] = None, shared: bool = False) -> dict[str, torch.Tensor]:
        """Stacked tensors of the samples `indices` (batch first), all views of one buffer (`flat` if given)."""
        idx = np.asarray(indices, dtype=np.int64).reshape(-1)
        clip, frame = self._locate(idx)
        shard, pos = self._c_shard[clip], self._c_offset[clip] + frame
        n_shard, n_pos = self._neutral_of(clip, frame)
        out = packed_batch(self._spec(len(idx)), flat, shared)
        o = {k: v.numpy() for k, v in out.items()}
        if self._pid != os.getpid():  # a forked worker: open its own maps
            self._maps, self._pid = {}, os.getpid()
        c_start, c_end = self._c_offset[clip], self._c_offset[clip] + self._c_len[clip]
        for j, (sh, p, nsh, npos, f, a, e) in enumerate(zip(shard.tolist(), pos.tolist(), n_shard.tolist(), n_pos.tolist(),
                                                             frame.tolist(), c_start.tolist(), c_end.tolist())):
            m = self._maps.get(sh) or self._open(sh)
            o["frame"][j] = m["frames"][p]
            nm = self._maps.get(nsh) or self._open(nsh)
            o["neutral"][j] = nm["frames"][npos]
            o["neutral_landmarks"][j] = nm["landmarks"][npos] if nm["valid"][npos] else np.nan
            o["landmarks"][j] = m["landmarks"][p]
            for name, key in self._keys.items():
                feature_window(m[name][a:e], f, self.window_shapes[key][0], out=o[key][j])
        for k in ("valid", "padded"):  # one fancy-index per shard for the 1-byte arrays
            for sh in np.unique(shard).tolist():
                sel = shard == sh
                o[k][sel] = self._maps[sh][k][pos[sel]]
        for k, v in self._c_labels.items():
            o[k][:] = v[clip]
        self._refuse_non_finite(o, shard, pos)
        return out

    def _refuse_non_finite(self, o: dict[str, np.ndarray], shard: np.ndarray, pos: np.ndarray) -> None:
        """Raise ShardError if a gathered feature window, or the landmarks of a valid frame, hold NaN or inf:
        damage no checksum was asked to see (training on it would only report loss=nan)."""
        bad = {name: ~np.isfinite(o[key]).all(axis=(1, 2)) for name, key in self._keys.items()}
        bad["landmarks"] = o["valid"] & ~np.isfinite(o["landmarks"]).all(axis=(1, 2))
        for k, rows in bad.items():
            if rows.any():
                j = int(np.flatnonzero(rows)[0])
                raise ShardError(f"{self.dir / self._shard_names[shard[j]]}: {k}.npy holds NaN or inf near row {pos[j]} "
                                 f"({int(rows.sum())} sample(s) of this batch); re-run `meadkit shard` (or check the prepared clip)")

    def batch(self, indices) -> dict[str, torch.Tensor]:
        """The samples `indices` as one dict of stacked tensors (batch first), gathered in one pass."""
        return self._gather(indices)

    def __getitems__(self, indices):
        """A whole batch, what DataLoader calls: a `GatheredBatch` (a list of samples to torch's default collate,
        the stacked tensors themselves to `collate_batch`). Under `make_loader`'s workers the batch is written
        to a reusable shared slot and only its number travels (the loader hands out views of it)."""
        info = get_worker_info()
        if info is None:
            return GatheredBatch(self._gather(indices))
        k = self._ring.claim(info.id) if self._ring is not None and len(indices) <= self._ring_batch else None
        if k is None:
            return GatheredBatch(self._gather(indices, shared=True))
        self._gather(indices, flat=self._ring.slot(k))
        return {"_ring_slot": k, "_n": len(indices)}

    def _from_ring(self, batch: dict) -> dict[str, torch.Tensor]:
        """Main process: the batch a worker wrote into a ring slot, as views of that slot (no copy)."""
        return self._ring.views(batch["_ring_slot"], self._spec(batch["_n"]))

    def __getitem__(self, i: int) -> dict[str, torch.Tensor]:
        """One sample (the batch path with a batch of one)."""
        i = int(i)
        if i < 0:
            i += len(self)
        return {k: v[0] for k, v in self._gather([i]).items()}

    def sample_emotions(self) -> np.ndarray:
        """Emotion label (paper order) of every sample, in sample order."""
        return np.repeat(self._c_labels["emotion"], self._c_len)


def balanced_sampler(dataset: ShardDataset, seed: int = 0, num_samples: Optional[int] = None) -> WeightedRandomSampler:
    """Draw samples (with replacement) so that every emotion present is equally likely."""
    labels = dataset.sample_emotions()
    counts = np.bincount(labels, minlength=len(PAPER_EMOTIONS)).astype(np.float64)
    weights = 1.0 / counts[labels]
    return WeightedRandomSampler(torch.from_numpy(weights), num_samples or len(labels), replacement=True,
                                 generator=torch.Generator().manual_seed(seed))


class GatheredBatch(Sequence):
    """A batch gathered whole (`stacked`: batch-first tensors) that reads as a list of per-sample dicts, made on
    demand, so that `DataLoader(ds, batch_size=...)` with torch's default collate gives the same batches as
    `make_loader`; `collate_batch` takes `stacked` as it is (no second stacking)."""

    def __init__(self, stacked: dict[str, torch.Tensor]):
        self.stacked = stacked
        self._n = len(next(iter(stacked.values())))

    def __len__(self) -> int:
        return self._n

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[j] for j in range(*i.indices(self._n))]
        if not -self._n <= i < self._n:
            raise IndexError(i)
        return {k: v[i] for k, v in self.stacked.items()}


def collate_batch(batch):
    """A batch gathered by `__getitems__` as its stacked tensors (or a ring slot's note, as it is); a list of
    samples collated by torch's default collate."""
    if isinstance(batch, GatheredBatch):
        return batch.stacked
    return batch if isinstance(batch, dict) else default_collate(batch)


class _RingLoader(DataLoader):
    """A DataLoader whose workers hand batches over through `BatchRing` slots."""

    def __iter__(self):
        ring = self.dataset._ring
        ring.reset()
        for batch in super().__iter__():
            if "_ring_slot" in batch:
                batch = self.dataset._from_ring(batch)
                if self.pin_memory:
                    batch = {k: v.pin_memory() for k, v in batch.items()}
            yield batch


def make_loader(dataset: ShardDataset, batch_size: int = 256, shuffle: bool = True, num_workers: int = 0,
                seed: int = 0, balanced: bool = False, sampler=None, prefetch_factor: int = 2, **kwargs) -> DataLoader:
    """A DataLoader over `dataset` that gathers whole batches, shuffled (or emotion-balanced, or drawn by
    `sampler`) from `seed`.

    With workers, batches travel through a ring of reusable shared-memory slots (workers * (prefetch_factor
    + 2) batches, allocated once; ~26 MB per 256-sample batch at 128 px) and workers are persistent. A
    batch's tensors view its slot until they are garbage-collected; keeping many batches alive is safe
    (workers then use fresh shared memory) but slower.
    """
    if balanced:
        sampler = balanced_sampler(dataset, seed)
    common = dict(batch_size=batch_size, shuffle=shuffle and sampler is None, sampler=sampler, num_workers=num_workers,
                  collate_fn=collate_batch, generator=torch.Generator().manual_seed(seed), **kwargs)
    if num_workers == 0:
        return DataLoader(dataset, **common)
    ds = copy.copy(dataset)  # the ring belongs to this loader only
    ds._ring = BatchRing(packed_bytes(dataset._spec(batch_size)), num_workers, prefetch_factor + 2)
    ds._ring_batch = batch_size
    return _RingLoader(ds, prefetch_factor=prefetch_factor, persistent_workers=True, **common)
