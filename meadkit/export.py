"""A prepared OUT as WebDataset tar shards: one sample per clip (take x view), streamable by any WebDataset reader.

A sample's members share its `__key__` (`<take_id>_<view>`): `mp4` the crop video as prepare wrote it, `npz` the
clip's arrays (the faces arrays of `manifests/faces.md` and the take's feature sets and `padded`; no pickle), `json` its
labels, split, frame rate, sync figures and provenance, and `wav` the take's clip audio (`audio.wav`, 16-bit PCM)
where prepare wrote one (`[audio] export`). Shards `DEST/mead-%06d.tar` hold one split each (so a trainer points
at one split's list in `DEST/meta.json`) and are bounded by bytes and samples. Each shard appears under its name
only when complete (`meadkit.storage`: renamed locally, uploaded whole to object storage); a rerun keeps the
complete ones and writes the rest (the assignment of samples to shards is a pure function of the selection and the
bounds, and a tar's bytes a function of its samples). `DEST/export.json` (the selection) is written first, to claim
DEST; `DEST/index.parquet` (every sample's shard) and then meta.json after the shards.

DEST is a local folder or an fsspec URL (`s3://bucket/prefix`, `gs://...`); see `meadkit.storage`.

`export_hf` writes the same clips as a Hugging Face `datasets` Parquet dataset: `DEST/data/<split>.parquet`,
one row per clip with its labels, split, sync figures, the crop video's bytes (`video`), the take's audio.wav
bytes (`audio`, null where none was prepared) and the per-frame arrays as list columns (`FACE_ARRAYS`, the
feature sets, `padded`), loadable with `datasets.load_dataset("parquet", data_files=...)`.
"""
from __future__ import annotations

import contextlib
import json
import os
import struct
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterator, Optional

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.select import load_clips, select
from meadkit.splits import SPLITS
from meadkit.storage import Dest, StorageError, open_dest

FORMAT = "meadkit-webdataset-1"
HF_FORMAT = "meadkit-hf-parquet-1"
#: Per-frame arrays of a clip's .faces.npz carried as list columns of the HF rows (then those of its features.npz:
#: each feature set and `padded`).
FACE_ARRAYS = ("landmarks_src", "landmarks_crop", "valid", "score", "transform")
HF_ROW_GROUP = 256  # clips per Parquet row group
SHARD_PATTERN = "mead-{:06d}.tar"
_TAR_BLOCK = 512
_TAR_END = 20 * _TAR_BLOCK  # a tar's closing blocks, padded to tarfile's record size at most
_JSON_MAX = 4096
_ZIP32_MAX = 0xFFFFFFFF  # a merged npz has no zip64 records: members and offsets under 4 GB (a clip's are MBs)
#: Clip columns carried into each sample's json.
JSON_COLUMNS = ("take_id", "actor", "gender", "emotion", "level", "take", "view", "split", "fps_num", "fps_den",
                "offset_s", "sync_confidence", "sync_method", "t0_s", "start_frame", "n_frames", "found_ratio",
                "mean_score", "jitter", "face_backend", "crop_size", "feature_sets", "mfcc_recipe", "config_hash", "source")


class ExportError(RuntimeError):
    """An export that cannot be made (reason in the message): a destination holding other data or out of reach, no clips."""


@dataclass(frozen=True)
class ExportConfig:
    """Bounds of a shard: at most `shard_bytes` bytes (one oversized sample alone excepted) and `shard_samples`
    samples."""

    shard_bytes: int = 1_000_000_000
    shard_samples: int = 10_000


@dataclass
class ExportSummary:
    samples: int = 0
    shards_written: int = 0
    shards_kept: int = 0
    bytes: int = 0
    splits: dict = field(default_factory=dict)


def export_webdataset(out: Path | str, dest: Path | str, config: ExportConfig = ExportConfig(),
                      overwrite: bool = False, **filters) -> ExportSummary:
    """Write OUT's finished clips (status ok, after structured `filters`) as WebDataset shards under DEST (a local
    folder or an fsspec URL)."""
    out, dest = Path(out), _dest(dest)
    clips = _finished_clips(out, filters)
    plan = plan_shards(clips, lambda row: _sample_bytes_at_most(out, row), config)
    selection = {"format": FORMAT, "source": str(out.resolve()), "keys": list(plan["key"]),
                 "shard_bytes": config.shard_bytes, "shard_samples": config.shard_samples}
    _claim(dest, selection, overwrite)
    summary = ExportSummary(samples=len(plan))
    for shard, rows in plan.groupby("shard", sort=True).groups.items():  # plan rows are clips rows, in order
        kept, size = _export_shard(out, dest, clips.loc[rows], plan.loc[rows, "key"], SHARD_PATTERN.format(int(shard)))
        summary.shards_kept += kept
        summary.shards_written += not kept
        summary.bytes += size
    _write_index(dest, plan, selection, audio="audio_wav" in clips.columns and bool(clips["audio_wav"].notna().any()))
    summary.splits = plan.groupby("split")["shard"].nunique().to_dict()
    return summary


def _export_shard(out: Path, dest: Dest, clips: pd.DataFrame, keys: pd.Series, name: str) -> tuple[bool, int]:
    """Write shard `name` of these clips, or keep it where DEST already has it whole: (kept, its size)."""
    rows = list(clips.itertuples(index=False))
    size = dest.size(name)
    if size is not None and size == _tar_bytes([_sample(out, row) for row in rows]):
        return True, size
    with dest.written(name) as tmp, ThreadPoolExecutor(1) as ahead:  # the next clips' zips are read during a copy
        _write_tar(tmp, zip(keys, ahead.map(partial(_sample, out), rows)))
        return False, tmp.stat().st_size


def _dest(dest: Path | str) -> Dest:
    """DEST opened (`meadkit.storage.open_dest`), its failure as an ExportError."""
    try:
        return open_dest(dest)
    except StorageError as e:
        raise ExportError(str(e)) from None


def _tar_bytes(samples: list[dict[str, "_Member"]]) -> int:
    """The exact size of a tar of these samples: each member's header and padded data, the two end blocks, padded
    to tarfile's record size. A shard already under its name is kept only if it has this size (only whole shards
    get a final name, renamed or uploaded whole; this also turns away an object cut short by anything else)."""
    data = sum(_member_bytes(m.size) for members in samples for m in members.values())
    return -(-(data + 2 * _TAR_BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _finished_clips(out: Path, filters: dict) -> pd.DataFrame:
    clips = select(load_clips(out), status=["ok"], **filters)
    clips = clips[clips["crop_video"].notna() & clips["faces_npz"].notna() & clips["features_npz"].notna()]
    if clips.empty:
        raise ExportError(f"{out}: no finished clip (status ok, with crop video, faces and audio features) to export")
    order = {s: i for i, s in enumerate(SPLITS)}
    clips = clips.assign(_s=clips["split"].map(order).fillna(len(SPLITS)))
    return clips.sort_values(["_s", "take_id", "view"]).drop(columns="_s").reset_index(drop=True)


def plan_shards(clips: pd.DataFrame, size_of, config: ExportConfig) -> pd.DataFrame:
    """Each clip's sample key, split and shard number: shards in order, one split each, a new one when the next
    sample would pass `shard_bytes` (its tar bytes at most `size_of(row)`; a tar's end blocks counted) or
    `shard_samples`."""
    budget = config.shard_bytes - _TAR_END
    shard, used, count, last_split, shards = -1, 0, 0, object(), []
    for row in clips.itertuples(index=False):
        size = size_of(row)
        if row.split != last_split or count == config.shard_samples or (count and used + size > budget):
            shard, used, count, last_split = shard + 1, 0, 0, row.split
        used, count = used + size, count + 1
        shards.append(shard)
    return pd.DataFrame({"key": _keys(clips),
                         "shard": shards, "split": clips["split"].astype("string"),
                         "take_id": clips["take_id"], "view": clips["view"]})


def _keys(clips: pd.DataFrame) -> list[str]:
    """Each clip's sample key, `<take_id>_<view>`."""
    return [f"{t}_{v}" for t, v in zip(clips["take_id"], clips["view"])]


def _member_bytes(n: int) -> int:
    return _TAR_BLOCK + -(-n // _TAR_BLOCK) * _TAR_BLOCK


def _sample_bytes_at_most(out: Path, row) -> int:
    """An upper bound of a clip's sample in a tar, from its files' sizes alone (the sample's npz holds the members
    of the faces and features files and one central directory no longer than theirs, so it is no larger than both;
    its json is under `_JSON_MAX`)."""
    with _reading(row):
        arrays = (out / row.faces_npz).stat().st_size + (out / row.features_npz).stat().st_size
        audio = _audio(out, row)
        wav = _member_bytes(audio.stat().st_size) if audio else 0
        return _member_bytes((out / row.crop_video).stat().st_size) + _member_bytes(arrays) + _member_bytes(_JSON_MAX) + wav


@contextlib.contextmanager
def _reading(row) -> Iterator[None]:
    """A clip's missing or unreadable prepared file as one ExportError line naming the clip (before any shard of it
    gets its name)."""
    try:
        yield
    except (OSError, zipfile.BadZipFile) as e:
        raise ExportError(f"{row.take_id}/{row.view}: cannot read its prepared files ({e}); prepare it again, "
                          "or leave it out with a filter") from None


def _audio(out: Path, row) -> Optional[Path]:
    """The clip's take audio.wav, or None where prepare wrote none (`[audio] export` off, or an OUT made before it)."""
    rel = getattr(row, "audio_wav", None)
    return out / rel if isinstance(rel, str) else None


@dataclass(frozen=True)
class _Member:
    """A tar member's data: leading spans of files, `(path, length)` each, then `tail` bytes. Files are copied by
    the kernel, never through Python (`_append_span`)."""

    spans: tuple[tuple[Path, int], ...] = ()
    tail: bytes = b""

    @property
    def size(self) -> int:
        return sum(n for _, n in self.spans) + len(self.tail)


def _whole(path: Path) -> _Member:
    return _Member(((path, path.stat().st_size),))


def _sample(out: Path, row) -> dict[str, _Member]:
    """A clip's sample members by extension: the crop video and audio as they are, the merged npz, the json."""
    audio = _audio(out, row)
    with _reading(row):
        return {"mp4": _whole(out / row.crop_video), "npz": _merged_npz((out / row.faces_npz, out / row.features_npz)),
                "json": _Member(tail=_json_text(row))} | ({"wav": _whole(audio)} if audio else {})


def _merged_npz(paths: tuple[Path, ...]) -> _Member:
    """One npz holding the arrays of several: each file's members (local headers and data, everything before its
    central directory) copied as they are, then a central directory naming them at their new offsets. No array is
    read, inflated or re-encoded: the sample's npz bytes are the prepared files' own."""
    spans, entries, names, base = [], [], set(), 0
    for path in paths:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if info.filename in names or max(info.file_size, info.compress_size, base + z.start_dir) > _ZIP32_MAX:
                    raise ExportError(f"{path}: member {info.filename} is repeated or past 4 GB; cannot merge it")
                names.add(info.filename)
                entries.append(_central_entry(info, base + info.header_offset))
            spans.append((path, z.start_dir))
            base += z.start_dir
    directory = b"".join(entries)
    end = struct.pack(zipfile.structEndArchive, zipfile.stringEndArchive, 0, 0, len(entries), len(entries),
                      len(directory), base, 0)
    return _Member(tuple(spans), directory + end)


def _central_entry(info: zipfile.ZipInfo, offset: int) -> bytes:
    """A zip central directory record for member `info`, whose local header now starts at `offset`."""
    y, mo, d, h, mi, s = info.date_time
    name = info.filename.encode("utf-8")
    return struct.pack(zipfile.structCentralDir, zipfile.stringCentralDir, info.create_version, info.create_system,
                       info.extract_version, info.reserved, info.flag_bits, info.compress_type,
                       h << 11 | mi << 5 | s // 2, (y - 1980) << 9 | mo << 5 | d, info.CRC, info.compress_size,
                       info.file_size, len(name), 0, 0, 0, info.internal_attr, info.external_attr, offset) + name


def _json_text(row) -> bytes:
    """A clip's sample json: its `JSON_COLUMNS` and crop video path, at most `_JSON_MAX` bytes."""
    meta = {c: _plain(getattr(row, c, None)) for c in JSON_COLUMNS} | {"crop_video": row.crop_video}
    text = json.dumps(meta, sort_keys=True).encode()
    if len(text) > _JSON_MAX:
        raise ExportError(f"{row.take_id}/{row.view}: its json is {len(text)} bytes (> {_JSON_MAX})")
    return text


def _plain(v):
    if v is None or (isinstance(v, float) and np.isnan(v)):
        return None
    return v.item() if hasattr(v, "item") else v


def _write_tar(path: Path, samples: Iterator[tuple[str, dict[str, _Member]]]) -> None:
    """A ustar tar of the samples' members, `<key>.<ext>` each, with fixed metadata (the same input, the same
    bytes), as tarfile would write it; member data copied by the kernel (`_append_span`)."""
    with open(path, "wb", buffering=0) as tar:  # unbuffered: Python's writes and the kernel's copies share one position
        for key, members in samples:
            for ext, member in members.items():
                info = tarfile.TarInfo(f"{key}.{ext}")
                info.size, info.mode, info.mtime = member.size, 0o444, 0
                tar.write(info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"))
                for src, length in member.spans:
                    _append_span(src, tar, length)
                tar.write(member.tail + bytes(-member.size % _TAR_BLOCK))
        end = tar.tell() + 2 * _TAR_BLOCK
        tar.write(bytes(2 * _TAR_BLOCK + -end % tarfile.RECORDSIZE))


def _append_span(src: Path, dst, length: int) -> None:
    """The first `length` bytes of file `src` appended to the open file `dst`: by the kernel (copy_file_range, as a
    file copy is), or read and written where it cannot (another OS, another file system on an old kernel)."""
    done = 0
    with open(src, "rb", buffering=0) as f:
        with contextlib.suppress(AttributeError, OSError):  # both continue from the files' positions
            while done < length and (n := os.copy_file_range(f.fileno(), dst.fileno(), length - done)):
                done += n
        while done < length and (chunk := f.read(min(length - done, 1 << 22))):
            dst.write(chunk)
            done += len(chunk)
    if done != length:
        raise ExportError(f"{src} changed while it was exported ({done} of {length} bytes)")


def _claim(dest: Dest, selection: dict, overwrite: bool) -> None:
    """Make DEST ours: new, or an export of this same selection (resumed); refuse anything else unless
    `overwrite` (which removes a previous export's shards, never other files)."""
    if not dest.is_empty():
        before = json.loads(dest.read_text("export.json")) if dest.size("export.json") is not None else {}
        ours = before.get("format") in (FORMAT, HF_FORMAT)
        if not ours and not overwrite:
            raise ExportError(f"{dest.url} exists and holds other data; choose an empty folder or pass --overwrite")
        if before == selection:
            return
        if not overwrite:
            raise ExportError(f"{dest.url} holds an export of another selection; pass --overwrite to replace it")
        for name in dest.glob("mead-*.tar") + dest.glob("data/*.parquet") + ["index.parquet", "meta.json", "export.json"]:
            dest.remove(name)
    dest.write_text("export.json", json.dumps(selection))


def _write_index(dest: Dest, plan: pd.DataFrame, selection: dict, audio: bool) -> None:
    """DEST/index.parquet (sample -> shard) and DEST/meta.json (the shard list of each split, the members: `wav`
    where some sample has `audio`)."""
    names = plan["shard"].map(lambda k: SHARD_PATTERN.format(int(k)))
    index = plan.assign(shard=names)
    with dest.written("index.parquet") as tmp:
        pq.write_table(pa.Table.from_pandas(index, preserve_index=False), tmp, compression="zstd")
    splits = {str(s): sorted(set(g["shard"])) for s, g in index.groupby("split")}
    _write_meta(dest, selection, len(index), splits, members=["mp4", "npz", "json"] + (["wav"] if audio else []))


def _write_meta(dest: Dest, selection: dict, samples: int, splits: dict[str, list[str]], **more) -> None:
    """DEST/meta.json: the export's format, source, sample count and each split's files (written last: an export
    without it is unfinished)."""
    meta = {"format": selection["format"], "source": selection["source"], "samples": samples, "splits": splits} | more
    dest.write_text("meta.json", json.dumps(meta, indent=1))


def split_urls(dest: Path | str, split: str) -> list[str]:
    """The shard paths (local DEST) or URLs (remote DEST: open them with `use_fsspec`) of one split of an export,
    for `webdataset.WebDataset(urls)`."""
    dest = _dest(dest)
    meta = json.loads(dest.read_text("meta.json"))
    return [dest.url_of(name) for name in meta["splits"].get(split, [])]


def use_fsspec(*schemes: str) -> None:
    """Let webdataset open URLs of these schemes (default s3, gs) through fsspec: webdataset 1.0's `gopen` has no s3
    handler (and opens gs with the gsutil program). Call it in each process that reads (DataLoader workers started
    by fork inherit it; by spawn, call it in `worker_init_fn`)."""
    import webdataset

    for scheme in schemes or ("s3", "gs"):
        webdataset.gopen_schemes[scheme] = _fsspec_gopen


def _fsspec_gopen(url: str, mode: str = "rb", bufsize: int = 8192, **kw):
    """A webdataset `gopen` handler: the object at `url` opened for streaming by fsspec (credentials from the
    environment, as fsspec's filesystem reads them)."""
    import fsspec

    return fsspec.open(url, mode).open()


def export_hf(out: Path | str, dest: Path | str, overwrite: bool = False, **filters) -> ExportSummary:
    """Write OUT's finished clips as a Parquet dataset for Hugging Face `datasets`, one file per split (each written
    locally, then renamed or uploaded whole)."""
    out, dest = Path(out), _dest(dest)
    clips = _finished_clips(out, filters)
    selection = {"format": HF_FORMAT, "source": str(out.resolve()), "keys": _keys(clips)}
    _claim(dest, selection, overwrite)
    summary = ExportSummary(samples=len(clips))
    files = {}
    for split, rows in clips.groupby("split", sort=False):
        name = f"data/{split}.parquet"
        with dest.written(name) as tmp:  # row groups of HF_ROW_GROUP clips: memory stays bounded by one group
            writer, labels = None, _labels(rows).schema  # one schema for every group, also where one lacks values
            for start in range(0, len(rows), HF_ROW_GROUP):
                table = _hf_table(out, rows.iloc[start:start + HF_ROW_GROUP], labels)
                writer = writer or pq.ParquetWriter(tmp, table.schema, compression="zstd")
                writer.write_table(table)
            writer.close()
            summary.bytes += tmp.stat().st_size
        files[str(split)] = [name]
    summary.shards_written, summary.splits = len(files), {s: 1 for s in files}
    _write_meta(dest, selection, len(clips), files)
    return summary


def _labels(clips: pd.DataFrame, schema: pa.Schema | None = None) -> pa.Table:
    """The clips' json columns as a table, typed as the manifest types them (or by `schema`)."""
    labels = clips[[c for c in JSON_COLUMNS if c in clips.columns]].reset_index(drop=True)
    return pa.Table.from_pandas(labels, schema=schema, preserve_index=False).replace_schema_metadata(None)


def _hf_table(out: Path, clips: pd.DataFrame, labels: pa.Schema) -> pa.Table:
    """One row per clip: its json columns (typed by `labels`), `key`, the crop video's and audio.wav's bytes (audio
    null where none was prepared) and each `hf_arrays`
    array as a list (over frames) of fixed-size lists."""
    arrays: dict[str, list[np.ndarray]] = {name: [] for name in hf_arrays(clips)}
    videos, audios = [], []
    for row in clips.itertuples(index=False):
        with np.load(out / row.faces_npz, allow_pickle=False) as faces, np.load(out / row.features_npz, allow_pickle=False) as feats:
            for name in arrays:
                arrays[name].append((faces if name in FACE_ARRAYS else feats)[name])
        videos.append((out / row.crop_video).read_bytes())
        audio = _audio(out, row)
        audios.append(audio.read_bytes() if audio else None)
    table = _labels(clips, labels)
    columns = dict(zip(table.column_names, table.columns))
    columns["key"] = pa.array(_keys(clips))
    columns["video"] = pa.array(videos, pa.binary())
    columns["audio"] = pa.array(audios, pa.binary())
    for name, per_clip in arrays.items():
        columns[name] = _frames_list(per_clip)
    return pa.table(columns)


def hf_arrays(clips: pd.DataFrame) -> tuple[str, ...]:
    """The per-frame arrays of the clips' HF rows: `FACE_ARRAYS`, their feature sets (one choice for all), `padded`."""
    sets = clips["feature_sets"].unique()
    if len(sets) != 1:
        raise ExportError(f"the clips to export hold different feature sets ({', '.join(map(str, sets))}): "
                          "export one prepare's clips at a time")
    return (*FACE_ARRAYS, *str(sets[0]).split(","), "padded")


def _frames_list(per_clip: list[np.ndarray]) -> pa.Array:
    """Arrays of shape (T_i, *shape), one per clip, as a list array of T_i fixed-size (nested) lists each."""
    stacked = np.concatenate(per_clip)
    values = pa.array(stacked.reshape(-1))
    for size in reversed(stacked.shape[1:]):
        values = pa.FixedSizeListArray.from_arrays(values, size)
    offsets = np.concatenate([[0], np.cumsum([len(a) for a in per_clip])]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets), values)
