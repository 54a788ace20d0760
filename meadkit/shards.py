"""GPU-ready shards: prepared clips -> contiguous, fixed-dtype, memory-mappable arrays with checksums.

Layout of a shard set SHARDS/:
  shard-00000/{frames,landmarks,mfcc,valid,padded}.npy + shard.json   (one folder per shard)
  index.parquet   one row per selected clip: labels, split, shard, offset, length, status, error
  meta.json       format version, config, vocabularies, per-file byte sizes and sha256 (written last)
Arrays are plain `.npy` (no pickle), opened with `np.load(mmap_mode="r")`. See manifests/shards.md.
"""
from __future__ import annotations

import hashlib
import json
import logging
import os
import re
import shutil
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Optional

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import TMP_MARK, atomic_path, tmp_name
from meadkit.corpus.names import PAPER_EMOTIONS, VIEWS, emotion_label
from meadkit.corpus.sources import Source
from meadkit.manifest import read_table, write_table
from meadkit.media.probe import MediaError
from meadkit.media.video import iter_frames
from meadkit.runner import run_tasks
from meadkit.select import select

log = logging.getLogger(__name__)

#: Bumped whenever the on-disk layout changes; readers refuse any other version.
FORMAT_VERSION = 1
FORMAT_NAME = "meadkit-shards"
_VERSION_KEY = b"meadkit.shards.format_version"
_SHARD_RE = re.compile(r"^shard-(\d{5})$")

#: Columns of SHARDS/index.parquet (one row per selected clip). Labels are integer indices into meta.json's
#: vocabularies; `emotion_label` follows the paper's order (`PAPER_EMOTIONS`); `level` is MEAD's 1..3.
SHARD_INDEX_SCHEMA = pa.schema(
    [
        ("take_id", pa.string()),
        ("actor", pa.string()),
        ("emotion", pa.string()),
        ("level", pa.int8()),
        ("take", pa.int16()),
        ("view", pa.string()),
        ("split", pa.string()),
        ("emotion_label", pa.int8()),
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


@dataclass(frozen=True)
class ShardConfig:
    """How clips are packed: frame side `size` (square, RGB, CHW) and the byte bound of one shard."""

    size: int = 128
    shard_bytes: int = 1_000_000_000


def array_specs(size: int) -> dict[str, tuple[tuple[int, ...], str]]:
    """Per-frame shape and dtype of every shard array (frames are RGB, channels first)."""
    return {
        "frames": ((3, size, size), "uint8"),
        "landmarks": ((68, 2), "float32"),
        "mfcc": ((28,), "float32"),
        "valid": ((), "bool"),
        "padded": ((), "bool"),
    }


def frame_bytes(size: int) -> int:
    """Bytes one frame occupies across all shard arrays."""
    return sum(int(np.prod(shape, dtype=np.int64)) * np.dtype(dt).itemsize for shape, dt in array_specs(size).values())


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


def plan_shards(clips: pd.DataFrame, out_dir: Path | str, config: ShardConfig) -> list[ShardPlan]:
    """Pack clips (in take_id, view order) into shards of at most `config.shard_bytes`.

    A clip is never split; a clip larger than the bound alone gets a shard of its own.
    """
    out_dir = Path(out_dir)
    per_frame = frame_bytes(config.size)
    rows = clips.sort_values(["take_id", "view"]).to_dict("records")
    plans: list[ShardPlan] = []
    cur: list[dict] = []
    n = 0
    for r in rows:
        t = int(r["n_frames"])
        if cur and (n + t) * per_frame > config.shard_bytes:
            plans.append(ShardPlan(len(plans), cur, n))
            cur, n = [], 0
        if t * per_frame > config.shard_bytes:
            log.warning("clip %s/%s (%d frames) exceeds --shard-bytes alone; it gets its own shard", r["take_id"], r["view"], t)
        cur.append(r)
        n += t
    if cur:
        plans.append(ShardPlan(len(plans), cur, n))
    for p in plans:
        ident = {
            "format_version": FORMAT_VERSION,
            "size": config.size,
            "clips": [
                [c["take_id"], c["view"], int(c["n_frames"]), int(c["crop_size"])]
                + [[c[k], _stat(out_dir / c[k])] for k in ("crop_video", "faces_npz", "mfcc_npz")]
                for c in p.clips
            ],
        }
        p.key = hashlib.sha256(json.dumps(ident, sort_keys=True).encode()).hexdigest()
    return plans


# ---------------------------------------------------------------- writing

class _ClipError(ValueError):
    """A prepared clip whose files disagree with the manifest or cannot be read."""


def _load_clip_arrays(out_dir: Path, clip: dict, size: int) -> dict[str, np.ndarray]:
    """Landmarks (scaled to `size`), valid, MFCC, padded of one clip, checked against the manifest's n_frames."""
    t = int(clip["n_frames"])
    try:
        with np.load(out_dir / clip["faces_npz"], allow_pickle=False) as z:
            lm, valid = z["landmarks_crop"], z["valid"]
        with np.load(out_dir / clip["mfcc_npz"], allow_pickle=False) as z:
            mfcc, padded = z["mfcc"], z["padded"]
    except (OSError, KeyError, ValueError) as e:
        raise _ClipError(f"cannot read clip arrays: {e}") from None
    for name, a, shape in (("landmarks_crop", lm, (t, 68, 2)), ("valid", valid, (t,)), ("mfcc", mfcc, (t, 28)), ("padded", padded, (t,))):
        if a.shape != shape:
            raise _ClipError(f"{name} has shape {a.shape}, manifest n_frames={t} wants {shape}")
    # Pixel centres sit at integer coordinates: x' = (x + 0.5) * s - 0.5 matches cv2.resize's sampling grid.
    s = size / float(clip["crop_size"])
    lm_scaled = ((lm.astype(np.float64) + 0.5) * s - 0.5).astype(np.float32)
    return {"landmarks": lm_scaled, "valid": valid.astype(bool), "mfcc": mfcc.astype(np.float32), "padded": padded.astype(bool)}


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
    specs = array_specs(config.size)
    tmp = tmp_name(shards_dir / plan.name)
    tmp.mkdir(parents=True)
    try:
        alloc = max(plan.n_frames, 1)  # a memmap cannot be empty
        arrays = {
            k: np.lib.format.open_memmap(tmp / f"{k}.npy", mode="w+", dtype=dt, shape=(alloc, *shape))
            for k, (shape, dt) in specs.items()
        }
        clips, cursor = [], 0
        for c in plan.clips:
            t = int(c["n_frames"])
            rec = {"take_id": c["take_id"], "view": c["view"], "offset": -1, "length": t, "n_valid": 0, "status": "ok", "error": None}
            try:
                small = _load_clip_arrays(out_dir, c, config.size)
                _fill_frames(out_dir, c, arrays["frames"][cursor : cursor + t], config.size)
            except _ClipError as e:
                rec.update(status="error", error=f"{c['take_id']}/{c['view']}: {e}")
                log.warning("shard %s: %s", plan.name, rec["error"])
            else:
                for k, a in small.items():
                    arrays[k][cursor : cursor + t] = a
                rec.update(offset=cursor, n_valid=int(small["valid"].sum()))
                cursor += t
            clips.append(rec)
        for k, a in arrays.items():
            a.flush()
            if cursor < alloc:  # some clips failed: rewrite the array at its true length
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
    """`write_shard` bound to its folders and config (a class, so it pickles for process pools and Dask)."""

    def __init__(self, out_dir: Path, shards_dir: Path, config: ShardConfig):
        self.out_dir, self.shards_dir, self.config = out_dir, shards_dir, config

    def __call__(self, plan: ShardPlan) -> dict:
        return write_shard(self.out_dir, self.shards_dir, plan, self.config)


def _crashed(plan: ShardPlan, exc: BaseException) -> dict:
    """The record of a shard whose worker died: every clip of it fails with the reason."""
    why = f"shard worker crashed: {type(exc).__name__}: {exc}"
    clips = [{"take_id": c["take_id"], "view": c["view"], "offset": -1, "length": int(c["n_frames"]), "n_valid": 0,
              "status": "error", "error": why} for c in plan.clips]
    return {"format_version": FORMAT_VERSION, "key": "", "name": plan.name, "n_frames": 0, "clips": clips, "files": {}}


def build_shards(
    out_dir: Path | str,
    shards_dir: Path | str,
    config: ShardConfig = ShardConfig(),
    clips: Optional[pd.DataFrame] = None,
    n_jobs: int = 1,
    backend: str = "local",
    scheduler=None,
    progress: bool = False,
) -> dict:
    """Write the shard set of `clips` (default: every clip with status ok in OUT/manifests/clips.parquet).

    Shards are written in parallel (`meadkit.runner`: local processes or Dask, one thread each),
    finished shards of an earlier run with the same inputs and config are kept, and meta.json is
    written last. Returns meta.
    """
    from meadkit.progress import Progress

    out_dir, shards_dir = Path(out_dir), Path(shards_dir)
    if clips is None:
        clips = select(read_table(out_dir / "manifests" / "clips.parquet"), status=["ok"])
    if clips.empty:
        raise ShardError("no clips selected: nothing to shard (check the filters / --select file)")
    shards_dir.mkdir(parents=True, exist_ok=True)
    plans = plan_shards(clips, out_dir, config)
    _clean(shards_dir, {p.name for p in plans})
    meta_path = shards_dir / "meta.json"
    if meta_path.exists():
        meta_path.unlink()  # the set is being rewritten: readers must not trust it until the new meta lands
    by_name = {}
    with Progress(len(plans), "shards", enabled=progress) as bar:
        for rec in run_tasks(_ShardJob(out_dir, shards_dir, config), plans, n_jobs, backend, scheduler, on_crash=_crashed):
            by_name[rec["name"]] = rec
            bar.update(ok=all(c["status"] == "ok" for c in rec["clips"]))
    recs = [by_name[p.name] for p in plans]

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
        "layout": {k: {"per_frame_shape": list(s), "dtype": d} for k, (s, d) in array_specs(config.size).items()},
        "vocab": {"emotions": list(PAPER_EMOTIONS), "actors": actors, "views": list(VIEWS)},
        "n_clips": sum(r["status"] == "ok" for r in rows),
        "n_failed": sum(r["status"] != "ok" for r in rows),
        "n_frames": sum(rec["n_frames"] for rec in recs),
        "index": {"file": "index.parquet", **_file_record(index_path)},
        "shards": [{"name": rec["name"], "n_frames": rec["n_frames"], "files": rec["files"]} for rec in recs],
    }
    with atomic_path(meta_path) as tmp:
        tmp.write_text(json.dumps(meta, indent=1))
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
    return meta


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


def check_shards(shards_dir: Path | str, meta: Optional[dict] = None, full: bool = False) -> dict:
    """Check every shard file and the index exist with their recorded byte sizes (and sha256 if `full`).

    Raises ShardError listing every problem; returns meta when all is well.
    """
    shards_dir = Path(shards_dir)
    meta = meta or read_meta(shards_dir)
    files = [(meta["index"]["file"], meta["index"])]
    files += [(f"{s['name']}/{fname}", f) for s in meta["shards"] for fname, f in s["files"].items()]
    problems = []
    for rel, f in files:
        p = shards_dir / rel
        if not p.is_file():
            problems.append(f"{rel}: missing")
            continue
        size = p.stat().st_size
        if size != f["bytes"]:
            problems.append(f"{rel}: {size} bytes, expected {f['bytes']} (truncated or altered)")
        elif full and _sha256(p) != f["sha256"]:
            problems.append(f"{rel}: sha256 checksum mismatch (altered or corrupted)")
    if problems:
        raise ShardError(
            f"shard set {shards_dir} is damaged ({len(problems)} problem(s)); re-run `meadkit shard` to rewrite it:\n  "
            + "\n  ".join(problems)
        )
    return meta


def verify_shards(shards_dir: Path | str) -> dict:
    """Full verification: format version, presence, byte sizes and sha256 of every file. Returns meta."""
    return check_shards(shards_dir, full=True)


def open_shard(shards_dir: Path | str, name: str) -> dict[str, np.ndarray]:
    """Memory-map every array of one shard (read-only; nothing is loaded until touched)."""
    d = Path(shards_dir) / name
    try:
        return {k: np.load(d / f"{k}.npy", mmap_mode="r", allow_pickle=False) for k in array_specs(1)}
    except (OSError, ValueError) as e:
        raise ShardError(f"cannot open shard {d}: {e} (re-run `meadkit shard`)") from None
