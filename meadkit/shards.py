"""GPU-ready shards: prepared clips -> contiguous, fixed-dtype, memory-mappable arrays with checksums.

Layout of a shard set SHARDS/:
  shard-00000/{frames,landmarks,<each feature set>,valid,padded}.npy + shard.json   (one folder per shard)
  index.parquet   one row per selected clip: labels, split, shard, offset, length, status, error
  meta.json       format version, config, vocabularies, per-file byte sizes and sha256 (written last)
  verified.json   [bytes, mtime_ns, sha256] per file of the last passed checksum check (written by readers)
Arrays are plain `.npy` (no pickle), opened with `np.load(mmap_mode="r")`. See manifests/shards.md.
"""
from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Iterable, Iterator, Optional

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import TMP_MARK, atomic_path, disk_error, is_within, tmp_name
from meadkit.config import ConfigError, check_fields, recorded_stage
from meadkit.corpus.names import PAPER_EMOTIONS, VIEWS, emotion_label
from meadkit.media.sources import Source
from meadkit.features import FeaturesConfig
from meadkit.lock import OutputLock
from meadkit.manifest import read_table, write_table
from meadkit.media.probe import MediaError
from meadkit.media.video import iter_frames
from meadkit.records import shared_fields
from meadkit.select import select

if TYPE_CHECKING:
    from meadkit.runner import Executor

log = logging.getLogger(__name__)

#: Bumped whenever the on-disk layout changes; readers refuse any other version.
FORMAT_VERSION = 2
FORMAT_NAME = "meadkit-shards"
_VERSION_KEY = b"meadkit.shards.format_version"
_SHARD_RE = re.compile(r"^shard-(\d{5})$")
#: SHARDS/verified.json: per file [bytes, mtime_ns, sha256] of the last passed checksum check (see check_shards).
VERIFIED_FILE = "verified.json"
#: What readers check at open: every sha256 (cached by size and mtime), byte sizes only, or nothing.
VERIFY_MODES = ("full", "size", "none")
#: Top-level meta.json keys readers rely on.
_META_KEYS = ("config", "size", "layout", "feature_sets", "vocab", "n_clips", "n_failed", "n_frames", "index", "shards")
#: Columns of a clip row that name files under OUT.
_PATH_COLUMNS = ("crop_video", "faces_npz", "features_npz")

#: Columns of SHARDS/index.parquet (one row per selected clip). Labels are integer indices into meta.json's
#: vocabularies; `emotion_label` follows the paper's order (`PAPER_EMOTIONS`); `level` is MEAD's 1..3.
SHARD_INDEX_SCHEMA = pa.schema(
    [
        *shared_fields("take_id", "actor", "emotion", "level", "take", "view"),
        ("split", pa.string()),
        *shared_fields("emotion_label"),
        ("actor_index", pa.int16()),
        ("view_index", pa.int8()),
        ("shard", pa.int32()),
        ("offset", pa.int64()),
        ("length", pa.int32()),
        ("n_valid", pa.int32()),
        ("status", pa.string()),
        ("error", pa.string()),
    ],
    metadata={_VERSION_KEY: str(FORMAT_VERSION).encode()},
)


class ShardError(RuntimeError):
    """A shard set that cannot be trusted (missing, truncated, altered, other version); the message says what to do."""


class NoClipsError(ShardError):
    """Nothing to shard: no clip passed the filters (prepare notes it; a full disk or damage is a real ShardError)."""


@dataclass(frozen=True)
class ShardConfig:
    """How clips are packed: frame side `size` (square, RGB, CHW) and the byte bound of one shard."""

    size: int = field(default=128, metadata={"min": 8, "max": 4096})
    shard_bytes: int = field(default=1_000_000_000, metadata={"min": 1})

    def __post_init__(self) -> None:
        check_fields(self, "shards")


def array_specs(size: int, widths: dict[str, int]) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-frame shape and dtype of every shard array: frames (RGB, channels first), landmarks, one array per feature
    set (`widths`: set name -> values per frame, `FeaturesConfig.widths`), valid, padded. meta.json's `layout` records
    them: readers take the sets and widths from there."""
    return {
        "frames": ((3, size, size), "uint8"),
        "landmarks": ((68, 2), "float32"),
        **{name: ((width,), "float32") for name, width in widths.items()},
        "valid": ((), "bool"),
        "padded": ((), "bool"),
    }


def frame_bytes(size: int, widths: Optional[dict[str, int]] = None) -> int:
    """Bytes one frame occupies across all shard arrays (feature sets: `widths`, else the default features')."""
    specs = array_specs(size, FeaturesConfig().widths if widths is None else widths)
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in specs.values())


def recorded_widths(pipeline: Optional[str]) -> dict[str, int]:
    """The feature sets (and their widths) of the pipeline config text that made the clips (the defaults' if none)."""
    try:
        return recorded_stage(pipeline, "features").widths
    except ConfigError as e:
        raise ShardError(f"the prepared OUT's config.toml has a [features] table this meadkit refuses: {e}") from None


def parse_bytes(text: str | int) -> int:
    """'1GB' -> 10**9, '512MiB' -> 512 * 2**20, '2000000' -> 2000000."""
    if isinstance(text, int):
        return text
    m = re.fullmatch(r"\s*([0-9.]+)\s*([kmgt]?i?b?)\s*", str(text).lower())
    if not m:
        raise ValueError(f"not a byte size: {text!r} (use e.g. 1GB, 500MB, 2GiB)")
    unit = m.group(2).rstrip("b")
    mult = {"": 1, "k": 10**3, "m": 10**6, "g": 10**9, "t": 10**12, "ki": 2**10, "mi": 2**20, "gi": 2**30, "ti": 2**40}
    return int(float(m.group(1)) * mult[unit])


def shard_name(k: int) -> str:
    """Folder name of shard number k."""
    return f"shard-{k:05d}"


# ---------------------------------------------------------------- planning

@dataclass
class ShardPlan:
    """One shard to write: its number, the clips it holds (in order) and a key that changes with any input."""

    number: int
    clips: list[dict]
    n_frames: int
    widths: dict[str, int]
    key: str = ""

    @property
    def name(self) -> str:
        return shard_name(self.number)


def _stat(path: Path) -> Optional[list[int]]:
    try:
        st = path.stat()
    except OSError:
        return None
    return [st.st_size, st.st_mtime_ns]


def plan_shards(clips: pd.DataFrame, out_dir: Path | str, config: ShardConfig, widths: dict[str, int]) -> list[ShardPlan]:
    """Pack clips (in take_id, view order) into shards of at most `config.shard_bytes`, with one array per feature
    set of `widths`. A clip is never split; a clip larger than the bound alone gets a shard of its own."""
    out_dir = Path(out_dir)
    per_frame = frame_bytes(config.size, widths)
    rows = clips.sort_values(["take_id", "view"]).to_dict("records")
    plans: list[ShardPlan] = []
    cur: list[dict] = []
    n = 0
    for r in rows:
        t = int(r["n_frames"])
        if cur and (n + t) * per_frame > config.shard_bytes:
            plans.append(ShardPlan(len(plans), cur, n, widths))
            cur, n = [], 0
        if t * per_frame > config.shard_bytes:
            log.warning("clip %s/%s (%d frames) exceeds --shard-bytes alone; it gets its own shard", r["take_id"], r["view"], t)
        cur.append(r)
        n += t
    if cur:
        plans.append(ShardPlan(len(plans), cur, n, widths))
    for p in plans:
        ident = {
            "format_version": FORMAT_VERSION,
            "size": config.size,
            "features": widths,
            "clips": [
                [c["take_id"], c["view"], int(c["n_frames"]), int(c["crop_size"])]
                + [[c[k], _stat(out_dir / c[k])] for k in _PATH_COLUMNS]
                for c in p.clips
            ],
        }
        p.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return plans


# ---------------------------------------------------------------- writing

class _ClipError(ValueError):
    """A prepared clip whose files disagree with the manifest or cannot be read."""


def _load_clip_arrays(out_dir: Path, clip: dict, size: int, widths: dict[str, int]) -> dict[str, np.ndarray]:
    """Landmarks (scaled to `size`), valid, each feature set of `widths`, padded of one clip, checked against the
    manifest's n_frames and the sets' widths."""
    t = int(clip["n_frames"])
    try:
        with np.load(out_dir / clip["faces_npz"], allow_pickle=False) as z:
            lm, valid = z["landmarks_crop"], z["valid"]
        with np.load(out_dir / clip["features_npz"], allow_pickle=False) as z:
            feats, padded = {k: z[k] for k in widths}, z["padded"]
    except (OSError, KeyError, ValueError) as e:
        raise _ClipError(f"cannot read clip arrays: {e}") from None
    want = [("landmarks_crop", lm, (t, 68, 2)), ("valid", valid, (t,)), ("padded", padded, (t,))]
    for name, a, shape in want + [(k, a, (t, widths[k])) for k, a in feats.items()]:
        if a.shape != shape:
            raise _ClipError(f"{name} has shape {a.shape}, manifest n_frames={t} and the feature sets want {shape}")
    bad = [k for k, a in feats.items() if not np.isfinite(a).all()]
    if bad or not np.isfinite(lm[valid.astype(bool)]).all():
        raise _ClipError(f"{', '.join(bad) or 'landmarks_crop of a valid frame'} holds NaN or inf")
    # Pixel centres sit at integer coordinates: x' = (x + 0.5) * s - 0.5 matches cv2.resize's sampling grid.
    s = size / float(clip["crop_size"])
    lm_scaled = ((lm.astype(np.float64) + 0.5) * s - 0.5).astype(np.float32)
    return {"landmarks": lm_scaled, "valid": valid.astype(bool), "padded": padded.astype(bool),
            **{k: a.astype(np.float32) for k, a in feats.items()}}


def resize_frame(image: np.ndarray, size: int) -> np.ndarray:
    """An aligned crop (H x W x 3) resized to size x size with area averaging (identity if already that size)."""
    if image.shape[0] == size and image.shape[1] == size:
        return image
    return cv2.resize(image, (size, size), interpolation=cv2.INTER_AREA)


def _fill_frames(out_dir: Path, clip: dict, dst: np.ndarray, size: int) -> None:
    """Decode a clip's crop video once (RGB) and write its frames, resized and channels-first, into `dst`."""
    t = int(clip["n_frames"])
    crop = int(clip["crop_size"])
    n = 0
    try:
        for fr in iter_frames(Source(str(out_dir / clip["crop_video"])), pix_fmt="rgb24", threads=1):
            if n >= t:
                raise _ClipError(f"crop video has more than the manifest's {t} frames")
            if fr.image.shape[:2] != (crop, crop):
                raise _ClipError(f"crop video frames are {fr.image.shape[1]}x{fr.image.shape[0]}, manifest crop_size={crop}")
            dst[n] = resize_frame(fr.image, size).transpose(2, 0, 1)
            n += 1
    except MediaError as e:
        raise _ClipError(str(e)) from None
    if n != t:
        raise _ClipError(f"crop video has {n} frames, manifest n_frames={t}")


def _sha256(path: Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 22):
            h.update(chunk)
    return h.hexdigest()


def _file_record(path: Path) -> dict:
    return {"bytes": path.stat().st_size, "sha256": _sha256(path)}


def _read_json(path: Path) -> Optional[dict]:
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return None


def _kept(shards_dir: Path, plan: ShardPlan) -> Optional[dict]:
    """The finished shard's record if it was written from exactly this plan and its files have their sizes."""
    rec = _read_json(shards_dir / plan.name / "shard.json")
    if not rec or rec.get("key") != plan.key or rec.get("format_version") != FORMAT_VERSION:
        return None
    for fname, f in rec["files"].items():
        p = shards_dir / plan.name / fname
        if not p.is_file() or p.stat().st_size != f["bytes"]:
            return None
    return rec


def _allocated_memmap(path: Path, dtype: str, shape: tuple[int, ...]) -> np.memmap:
    """A new .npy memory map whose blocks are reserved on disk first, so that a full disk is an OSError
    (ENOSPC) here instead of a SIGBUS when the mapping is written."""
    a = np.lib.format.open_memmap(path, mode="w+", dtype=dtype, shape=shape)
    fd = os.open(path, os.O_RDWR)
    try:
        os.posix_fallocate(fd, 0, os.fstat(fd).st_size)
    except OSError as e:
        if e.errno not in (errno.EOPNOTSUPP, errno.EINVAL):  # a file system that cannot reserve: write sparse
            raise
    finally:
        os.close(fd)
    return a


def write_shard(out_dir: Path | str, shards_dir: Path | str, plan: ShardPlan, config: ShardConfig) -> dict:
    """Write one shard folder atomically (temp folder, then rename) and return its record (clips, files).

    A clip whose files are unreadable or disagree with the manifest is left out with status 'error' and a reason.
    Resumable: a finished shard written from the same plan key is kept as is.
    """
    out_dir, shards_dir = Path(out_dir), Path(shards_dir)
    kept = _kept(shards_dir, plan)
    if kept is not None:
        return kept
    cv2.setNumThreads(1)
    specs = array_specs(config.size, plan.widths)
    tmp = tmp_name(shards_dir / plan.name)
    tmp.mkdir(parents=True)
    try:
        alloc = max(plan.n_frames, 1)  # a memmap cannot be empty
        arrays = {
            k: _allocated_memmap(tmp / f"{k}.npy", dt, (alloc, *shape)) for k, (shape, dt) in specs.items()
        }
        # the frames (~99% of a shard) are mapped a clip at a time: a mapping of the whole file would hold every page
        # written in the worker's resident memory, up to shard_bytes (1 GB)
        frames = arrays.pop("frames")
        frames_at, (frame_shape, frame_dtype) = frames.offset, specs["frames"]
        row_bytes = frames[0].nbytes
        del frames
        clips, cursor = [], 0
        for c in plan.clips:
            t = int(c["n_frames"])
            rec = {"take_id": c["take_id"], "view": c["view"], "offset": -1, "length": t, "n_valid": 0, "status": "ok", "error": None}
            try:
                small = _load_clip_arrays(out_dir, c, config.size, plan.widths)
                rows = np.memmap(tmp / "frames.npy", frame_dtype, "r+", shape=(t, *frame_shape),
                                 offset=frames_at + cursor * row_bytes)
                try:
                    _fill_frames(out_dir, c, rows, config.size)
                    rows.flush()
                finally:
                    del rows
            except _ClipError as e:
                rec.update(status="error", error=f"{c['take_id']}/{c['view']}: {e}")
                log.warning("shard %s: %s", plan.name, rec["error"])
            else:
                for k, a in small.items():
                    arrays[k][cursor : cursor + t] = a
                rec.update(offset=cursor, n_valid=int(small["valid"].sum()))
                cursor += t
            clips.append(rec)
        for a in arrays.values():
            a.flush()
        if cursor < alloc:  # some clips failed: rewrite each array at its true length
            arrays["frames"] = np.load(tmp / "frames.npy", mmap_mode="r")
            for k, a in arrays.items():
                np.save(tmp / f"{k}.tmp.npy", np.asarray(a[:cursor]), allow_pickle=False)
        del a
        arrays.clear()
        files = {}
        for k in specs:
            if cursor < alloc:
                os.replace(tmp / f"{k}.tmp.npy", tmp / f"{k}.npy")
            p = tmp / f"{k}.npy"
            with open(p, "rb") as f:
                os.fsync(f.fileno())
            files[f"{k}.npy"] = _file_record(p)
        rec = {"format_version": FORMAT_VERSION, "key": plan.key, "name": plan.name, "n_frames": cursor, "clips": clips, "files": files}
        (tmp / "shard.json").write_text(json.dumps(rec, indent=1))
        final = shards_dir / plan.name
        if final.exists():
            shutil.rmtree(final)
        os.replace(tmp, final)
        return rec
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)


def _clean(shards_dir: Path, keep: set[str]) -> None:
    """Remove temp folders of a killed run and shard folders not in the current plan (ours only, by name)."""
    for p in shards_dir.iterdir():
        if p.is_dir() and (TMP_MARK in p.name or (_SHARD_RE.match(p.name) and p.name not in keep)):
            shutil.rmtree(p)


class _ShardJob:
    """`write_shard` bound to its folders and config (a class, so it pickles for process pools and Dask); a shard
    that raises gets `_crashed`'s record."""

    def __init__(self, out_dir: Path, shards_dir: Path, config: ShardConfig):
        self.out_dir, self.shards_dir, self.config = out_dir, shards_dir, config

    def __call__(self, plan: ShardPlan) -> dict:
        try:
            return write_shard(self.out_dir, self.shards_dir, plan, self.config)
        except Exception as e:  # a record of the failure keeps the build going
            return _crashed(plan, e)


def _write_shards(out_dir: Path, shards_dir: Path, config: ShardConfig, plans: list[ShardPlan],
                  executor: Optional[Executor]) -> Iterator[dict]:
    """The record of every planned shard, written by `executor` (in this process if None), in completion order."""
    job = _ShardJob(out_dir, shards_dir, config)
    if executor is None:
        return map(job, plans)
    return executor.map(job, plans, on_crash=_crashed, label="shards", unit="shards",
                        ok=lambda rec: all(c["status"] == "ok" for c in rec["clips"]))


def _crashed(plan: ShardPlan, exc: BaseException) -> dict:
    """The record of a shard that raised or whose worker died: every clip of it fails with the reason. A full disk is not
    a clip's fault: it stops the build (re-raised), so the live set is never swapped for a set of holes."""
    if isinstance(exc, OSError) and exc.errno == errno.ENOSPC:
        raise exc
    why = f"shard worker crashed: {type(exc).__name__}: {exc}"
    clips = [{"take_id": c["take_id"], "view": c["view"], "offset": -1, "length": int(c["n_frames"]), "n_valid": 0,
              "status": "error", "error": why} for c in plan.clips]
    return {"format_version": FORMAT_VERSION, "key": "", "name": plan.name, "n_frames": 0, "clips": clips, "files": {}}


def check_clip_paths(out_dir: Path | str, clips: pd.DataFrame) -> None:
    """Refuse clip rows whose file paths are absolute or resolve (through `..` or symlinks) outside OUT,
    so a hand-made selection never makes `shard` read files that are not OUT's."""
    bad = [(r, k) for r in clips.to_dict("records") for k in _PATH_COLUMNS
           if Path(r[k]).is_absolute() or not is_within(Path(out_dir) / r[k], out_dir)]
    if bad:
        (r, k), n = bad[0], len({(r["take_id"], r["view"]) for r, _ in bad})
        raise ShardError(f"{n} selected clip(s) name files outside {out_dir}, first {r['take_id']}/{r['view']}: "
                         f"{k}={r[k]!r} (paths must be relative to OUT and stay inside it)")


def check_selection(selected: pd.DataFrame, manifest: pd.DataFrame, source: Path | str) -> None:
    """Refuse rows of a --select file that are not rows of this OUT's clip manifest (same take, view,
    frame count, files and config hash), so a subset of another OUT is never mixed in."""
    cols = [c for c in ("take_id", "view", "n_frames", "crop_size", *_PATH_COLUMNS, "config_hash") if c in manifest.columns]
    missing = [c for c in cols if c not in selected.columns]
    if missing:
        raise ShardError(f"{source} lacks column(s) {', '.join(missing)} of the clip manifest: write it with `meadkit select`")
    known = set(manifest[cols].astype(str).itertuples(index=False, name=None))
    rows = selected[cols].astype(str).itertuples(index=False, name=None)
    bad = [r for r in rows if r not in known]
    if bad:
        raise ShardError(f"{len(bad)} row(s) of {source} are not clips of this OUT's manifest (another OUT, or an older "
                         f"prepare), first {bad[0][0]}/{bad[0][1]}: select again from this OUT")


def _staging(shards_dir: Path) -> Path:
    """The sibling folder a new shard set is built in (fixed name, so a killed build resumes there)."""
    return shards_dir.with_name(f"{shards_dir.name}{TMP_MARK}-next")


def _check_owned(shards_dir: Path) -> None:
    """Refuse to rebuild into a folder holding anything a shard set does not (a rebuild replaces the folder)."""
    ours = {"index.parquet", "meta.json", VERIFIED_FILE, OutputLock(shards_dir).path.name}
    for p in sorted(shards_dir.iterdir()) if shards_dir.is_dir() else []:
        if not (p.name in ours or TMP_MARK in p.name or (p.is_dir() and _SHARD_RE.match(p.name))):
            raise ShardError(f"{shards_dir} holds {p.name!r}, which is not part of a shard set: give -o an empty "
                             "folder or an existing shard set (a rebuild replaces the whole folder)")


def _link_or_copy(src: str, dst: str) -> None:
    """Hard-link a file (shard files are never rewritten in place), copying where links are not possible."""
    try:
        os.link(src, dst)
    except OSError:
        shutil.copy2(src, dst)


def _reuse(shards_dir: Path, stage: Path, plans: list[ShardPlan]) -> list[ShardPlan]:
    """Bring finished shards of the live set that match their plan into `stage` (links, no bytes copied);
    return the plans still to write."""
    todo = []
    for p in plans:
        if _kept(stage, p) is not None:
            continue
        if _kept(shards_dir, p) is None:
            todo.append(p)
            continue
        tmp = tmp_name(stage / p.name)
        shutil.copytree(shards_dir / p.name, tmp, copy_function=_link_or_copy)
        if (stage / p.name).exists():
            shutil.rmtree(stage / p.name)
        os.replace(tmp, stage / p.name)
    return todo


def _space_error(e: OSError, path: Path, needed: int) -> ShardError:
    """`disk_error`'s line for a full disk, with the bytes the build needs."""
    return ShardError(f"{disk_error(e, path)}, about {needed / 1e9:.2f} GB needed; the current shard set is untouched")


def _check_space(path: Path, needed: int) -> None:
    """Refuse a build the device holding `path` has no room for, before any byte is written."""
    if shutil.disk_usage(path).free < needed:
        raise _space_error(OSError(errno.ENOSPC, os.strerror(errno.ENOSPC)), path, needed)


def _swap(stage: Path, shards_dir: Path) -> None:
    """Replace the live set by the finished one in `stage` (two renames), carrying the checksum cache
    (its entries hold each file's size, mtime and sha256, so hard-linked shards stay verified)."""
    cache = shards_dir / VERIFIED_FILE
    if cache.is_file() and not (stage / VERIFIED_FILE).exists():
        shutil.copy2(cache, stage / VERIFIED_FILE)
    old = shards_dir.with_name(f"{shards_dir.name}{TMP_MARK}-old")
    if old.exists():
        shutil.rmtree(old)
    if shards_dir.exists():
        os.replace(shards_dir, old)
    os.replace(stage, shards_dir)
    if old.exists():
        shutil.rmtree(old)


def _write_set_files(shards_dir: Path, clips: pd.DataFrame, plans: list[ShardPlan], recs: list[dict], config: ShardConfig,
                     pipeline: Optional[str]) -> dict:
    """index.parquet, then meta.json (last: it makes the folder a finished set) of written shards, with the
    text of the pipeline config that made the clips (`pipeline`, OUT/config.toml: its features settings for the
    Dataset, all of it for generate) and the feature sets the shards hold. Returns meta."""
    actors = sorted(clips["actor"].unique())
    by_key = {(c["take_id"], c["view"]): (p.number, c) for p, rec in zip(plans, recs) for c in rec["clips"]}
    rows = []
    for r in clips.sort_values(["take_id", "view"]).to_dict("records"):
        number, c = by_key[(r["take_id"], r["view"])]
        rows.append(
            {
                **{k: r[k] for k in ("take_id", "actor", "emotion", "level", "take", "view", "split")},
                "emotion_label": emotion_label(r["emotion"]),
                "actor_index": actors.index(r["actor"]),
                "view_index": VIEWS.index(r["view"]),
                "shard": number,
                **{k: c[k] for k in ("offset", "length", "n_valid", "status", "error")},
            }
        )
    index_path = write_table(pa.Table.from_pylist(rows, schema=SHARD_INDEX_SCHEMA), shards_dir / "index.parquet")
    meta = {
        "format": FORMAT_NAME,
        "format_version": FORMAT_VERSION,
        "config": asdict(config),
        "size": config.size,
        "layout": {k: {"per_frame_shape": list(s), "dtype": d} for k, (s, d) in array_specs(config.size, plans[0].widths).items()},
        "feature_sets": list(plans[0].widths),
        "vocab": {"emotions": list(PAPER_EMOTIONS), "actors": actors, "views": list(VIEWS)},
        "n_clips": sum(r["status"] == "ok" for r in rows),
        "n_failed": sum(r["status"] != "ok" for r in rows),
        "n_frames": sum(rec["n_frames"] for rec in recs),
        "index": {"file": "index.parquet", **_file_record(index_path)},
        "shards": [{"name": rec["name"], "n_frames": rec["n_frames"], "files": rec["files"]} for rec in recs],
        "pipeline": pipeline,
    }
    with atomic_path(shards_dir / "meta.json") as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
    return meta


def build_shards(
    out_dir: Path | str,
    shards_dir: Path | str,
    config: ShardConfig = ShardConfig(),
    clips: Optional[pd.DataFrame] = None,
    executor: Optional[Executor] = None,
) -> dict:
    """Write the shard set of `clips` (default: every clip with status ok in OUT/manifests/clips.parquet).

    Holds SHARDS' output lock (a second build is refused with `OutputBusy`). The new set is built in a
    sibling folder (`_staging`; finished shards of the live set or of a killed build with the same inputs
    and config are kept, by hard link) after a free-space check, and replaces SHARDS by rename only when
    meta.json is written: until then the old set stays valid, also on a full disk (a one-line ShardError).
    Shards are written by `executor` (in this process if None). Returns meta.
    """
    out_dir, shards_dir = Path(out_dir), Path(shards_dir)
    if clips is None:
        clips = select(read_table(out_dir / "manifests" / "clips.parquet"), status=["ok"])
    if clips.empty:
        raise NoClipsError("no clips selected: nothing to shard (check the filters / --select file)")
    check_clip_paths(out_dir, clips)
    _check_owned(shards_dir)
    pipeline = out_dir / "config.toml"
    pipeline = pipeline.read_text() if pipeline.is_file() else None
    widths = recorded_widths(pipeline)
    with OutputLock(shards_dir):
        plans = plan_shards(clips, out_dir, config, widths)
        stage = _staging(shards_dir)
        needed = 0
        try:
            stage.mkdir(parents=True, exist_ok=True)
            _clean(stage, {p.name for p in plans})
            todo = _reuse(shards_dir, stage, plans)
            needed = sum(p.n_frames for p in todo) * frame_bytes(config.size, widths)
            _check_space(shards_dir, needed)
            by_name = {rec["name"]: rec for rec in _write_shards(out_dir, stage, config, plans, executor)}
            meta = _write_set_files(stage, clips, plans, [by_name[p.name] for p in plans], config, pipeline)
            _swap(stage, shards_dir)
        except OSError as e:
            if e.errno == errno.ENOSPC:
                raise _space_error(e, shards_dir, needed) from None
            raise
    return meta


# ---------------------------------------------------------------- reading and verification

def read_meta(shards_dir: Path | str) -> dict:
    """meta.json of a shard set, refusing a missing file or another format version."""
    path = Path(shards_dir) / "meta.json"
    if not path.is_file():
        raise ShardError(f"{path} is missing: {shards_dir} is not a finished shard set (run `meadkit shard`)")
    meta = _read_json(path)
    if meta is None or meta.get("format") != FORMAT_NAME:
        raise ShardError(f"{path} is not a meadkit shard set description (unreadable or wrong 'format')")
    if meta.get("format_version") != FORMAT_VERSION:
        raise ShardError(
            f"{shards_dir} was written in shard format version {meta.get('format_version')}; this meadkit reads "
            f"version {FORMAT_VERSION}: re-run `meadkit shard` to rewrite it"
        )
    missing = _missing_keys(meta)
    if missing:
        raise ShardError(f"{path} lacks key(s) {', '.join(missing)}: the shard set is damaged, re-run `meadkit shard`")
    return meta


def _missing_keys(meta: dict) -> list[str]:
    """The meta.json keys readers need that `meta` lacks (top level, the index entry, each shard entry)."""
    missing = [k for k in _META_KEYS if k not in meta]
    missing += [f"index.{k}" for k in ("file", "bytes", "sha256") if "index" in meta and k not in meta["index"]]
    for i, s in enumerate(meta.get("shards", [])):
        missing += [f"shards[{i}].{k}" for k in ("name", "n_frames", "files") if k not in s]
    return missing


def read_index(shards_dir: Path | str) -> pd.DataFrame:
    """index.parquet of a shard set, refusing an index of another format version."""
    path = Path(shards_dir) / "index.parquet"
    try:
        table = pq.read_table(path)
    except (OSError, pa.ArrowException) as e:
        raise ShardError(f"cannot read {path}: {e}") from None
    version = (table.schema.metadata or {}).get(_VERSION_KEY)
    if version != str(FORMAT_VERSION).encode():
        raise ShardError(
            f"{path} is an index of shard format version {version.decode() if version else 'unknown'}; this meadkit "
            f"reads version {FORMAT_VERSION}: re-run `meadkit shard`"
        )
    return table.to_pandas()


def check_shards(shards_dir: Path | str, meta: Optional[dict] = None, full: bool = False, cached: bool = False) -> dict:
    """Check every shard file and the index exist with their recorded byte sizes (and sha256 if `full`).

    With `cached`, a file whose size, mtime and expected sha256 match SHARDS/verified.json (written by each
    passed `full` check) is not re-hashed, so only the first open of a set, or of a changed file, pays.
    Raises ShardError listing every problem; returns meta when all is well.
    """
    shards_dir = Path(shards_dir)
    meta = meta or read_meta(shards_dir)
    files = [(meta["index"]["file"], meta["index"])]
    files += [(f"{s['name']}/{fname}", f) for s in meta["shards"] for fname, f in s["files"].items()]
    seen = _read_verified(shards_dir) if cached else {}
    problems, verified = [], {}
    for rel, f in files:
        p = shards_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        size, mtime = _stat(p)
        if size != f["bytes"]:
            problems.append(f"{rel}: {size} bytes, expected {f['bytes']} (truncated or altered)")
        elif full:
            mark = [size, mtime, f["sha256"]]
            if seen.get(rel) == mark or _sha256(p) == f["sha256"]:
                verified[rel] = mark
            else:
                problems.append(f"{rel}: sha256 checksum mismatch (altered or corrupted)")
    if problems:
        raise ShardError(
            f"shard set {shards_dir} is damaged ({len(problems)} problem(s)); re-run `meadkit shard` to rewrite it:\n  "
            + "\n  ".join(problems)
        )
    if full and verified != seen:  # nothing new was hashed: the cache already says all this
        _write_verified(shards_dir, verified)
    return meta


def _read_verified(shards_dir: Path) -> dict:
    """SHARDS/verified.json's {file: [bytes, mtime_ns, sha256]} ({} if absent or unreadable)."""
    cache = _read_json(shards_dir / VERIFIED_FILE)
    return cache.get("files", {}) if isinstance(cache, dict) else {}


def _write_verified(shards_dir: Path, verified: dict) -> None:
    """Record the files a full check passed; a folder we cannot write only costs re-hashing next time (logged)."""
    try:
        with atomic_path(shards_dir / VERIFIED_FILE) as tmp:
            tmp.write_text(json.dumps({"files": verified}, indent=1))
    except OSError as e:
        log.warning("cannot record verified checksums in %s (%s): every open will re-hash the shard set", shards_dir, e)


def verify_for_reading(shards_dir: Path | str, verify: str) -> Optional[dict]:
    """What `train`/`evaluate --verify` check before reading: 'full' (sha256, cached), 'size' or 'none'."""
    if verify not in VERIFY_MODES:
        raise ValueError(f"verify must be one of {VERIFY_MODES}, not {verify!r}")
    return None if verify == "none" else check_shards(shards_dir, full=verify == "full", cached=True)


def verify_shards(shards_dir: Path | str) -> dict:
    """Full verification: format version, presence, byte sizes and sha256 of every file. Returns meta."""
    return check_shards(shards_dir, full=True)


def open_shard(shards_dir: Path | str, name: str, arrays: Iterable[str]) -> dict[str, np.ndarray]:
    """Memory-map the `arrays` (names of meta.json's `layout`) of one shard (read-only; nothing is loaded until touched)."""
    d = Path(shards_dir) / name
    try:
        return {k: np.load(d / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in arrays}
    except (OSError, ValueError) as e:
        raise ShardError(f"cannot open shard {d}: {e} (re-run `meadkit shard`)") from None
