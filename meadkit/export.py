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
import itertools
import json
import operator
import os
import struct
import tarfile
import zipfile
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from functools import partial
from pathlib import Path
from typing import Iterable, Iterator, Optional, Union

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
_FLUSH_BYTES = 2 << 20  # a shard's written bytes handed to the disk each time this many more are written
_TAR_END = 20 * _TAR_BLOCK  # a tar's closing blocks, padded to tarfile's record size at most
_JSON_MAX = 4096
_ZIP32_MAX = 0xFFFFFFFF  # a merged npz has no zip64 records: members and offsets under 4 GB (a clip's are MBs)
_ZIP_END = struct.Struct(zipfile.structEndArchive)
_ZIP_ENTRY = struct.Struct(zipfile.structCentralDir)  # fields 12-14: name, extra, comment lengths; 18: header offset
_USTAR = struct.Struct("100s8s8s8s12s12s8s1s100s8s32s32s8s8s155s12x")  # fields NUL-padded (octal ones end in NUL)
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
    rows, keys = list(clips.itertuples(index=False)), _keys(clips)
    shards = plan_shards(list(clips["split"]), [_sample_bytes_at_most(out, row) for row in rows], config)
    plan = pd.DataFrame({"key": keys, "shard": shards, "split": clips["split"].astype("string"),
                         "take_id": clips["take_id"], "view": clips["view"]})
    selection = {"format": FORMAT, "source": str(out.resolve()), "keys": keys,
                 "shard_bytes": config.shard_bytes, "shard_samples": config.shard_samples}
    _claim(dest, selection, overwrite)
    summary = ExportSummary(samples=len(plan))
    for shard, group in itertools.groupby(zip(shards, rows, keys), key=operator.itemgetter(0)):  # shards are runs
        _, shard_rows, shard_keys = zip(*group)
        kept, size = _export_shard(out, dest, shard_rows, shard_keys, SHARD_PATTERN.format(shard))
        summary.shards_kept += kept
        summary.shards_written += not kept
        summary.bytes += size
    _write_index(dest, plan, selection, audio="audio_wav" in clips.columns and bool(clips["audio_wav"].notna().any()))
    summary.splits = plan.groupby("split")["shard"].nunique().to_dict()
    return summary


def _export_shard(out: Path, dest: Dest, rows: tuple, keys: tuple[str, ...], name: str) -> tuple[bool, int]:
    """Write shard `name` of these clips (rows of the clips table), or keep it where DEST already has it whole:
    (kept, its size)."""
    size = dest.size(name)
    if size is not None and size == _tar_bytes(map(partial(_sample, out), rows, keys)):
        return True, size
    with dest.written(name) as tmp, ThreadPoolExecutor(1) as ahead:  # the next clips' zips are read during a copy
        _write_tar(tmp, ahead.map(partial(_sample, out), rows, keys))
        return False, tmp.stat().st_size


def _dest(dest: Path | str) -> Dest:
    """DEST opened (`meadkit.storage.open_dest`), its failure as an ExportError."""
    try:
        return open_dest(dest)
    except StorageError as e:
        raise ExportError(str(e)) from None


def _tar_bytes(samples: Iterable[list["_Piece"]]) -> int:
    """The exact size of a tar of these samples (`_sample`): their pieces, the two end blocks, padded to tarfile's
    record size. A shard already under its name is kept only if it has this size (only whole shards get a final
    name, renamed or uploaded whole; this also turns away an object cut short by anything else)."""
    data = sum(_piece_size(p) for pieces in samples for p in pieces)
    return -(-(data + 2 * _TAR_BLOCK) // tarfile.RECORDSIZE) * tarfile.RECORDSIZE


def _finished_clips(out: Path, filters: dict) -> pd.DataFrame:
    clips = select(load_clips(out), status=["ok"], **filters)
    clips = clips[clips["crop_video"].notna() & clips["faces_npz"].notna() & clips["features_npz"].notna()]
    if clips.empty:
        raise ExportError(f"{out}: no finished clip (status ok, with crop video, faces and audio features) to export")
    order = {s: i for i, s in enumerate(SPLITS)}
    clips = clips.assign(_s=clips["split"].map(order).fillna(len(SPLITS)))
    return clips.sort_values(["_s", "take_id", "view"]).drop(columns="_s").reset_index(drop=True)


def plan_shards(splits: list, sizes: list[int], config: ExportConfig) -> list[int]:
    """Each sample's shard number, for samples in order with these splits and tar bytes at most `sizes`: shards in
    order, one split each, a new one when the next sample would pass `shard_bytes` (a tar's end blocks counted) or
    `shard_samples`."""
    budget = config.shard_bytes - _TAR_END
    shard, used, count, last_split, shards = -1, 0, 0, object(), []
    for split, size in zip(splits, sizes):
        if split != last_split or count == config.shard_samples or (count and used + size > budget):
            shard, used, count, last_split = shard + 1, 0, 0, split
        used, count = used + size, count + 1
        shards.append(shard)
    return shards


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


#: A piece of a tar's bytes: bytes written as they are, or `(path, n)`, the first n bytes of a file, copied by the
#: kernel and never through Python (`_append_span`).
_Piece = Union[bytes, tuple[Path, int]]


def _piece_size(piece: _Piece) -> int:
    return len(piece) if isinstance(piece, bytes) else piece[1]


def _whole(path: Path) -> list[_Piece]:
    return [(path, path.stat().st_size)]


def _sample(out: Path, row, key: str) -> list[_Piece]:
    """A clip's sample as tar pieces, each member's header, data and padding: the crop video and audio as they are,
    the merged npz, the json."""
    audio = _audio(out, row)
    with _reading(row):
        members = {"mp4": _whole(out / row.crop_video), "npz": _merged_npz((out / row.faces_npz, out / row.features_npz)),
                   "json": [_json_text(row)]} | ({"wav": _whole(audio)} if audio else {})
    pieces: list[_Piece] = []
    for ext, data in members.items():
        size = sum(map(_piece_size, data))
        pieces += [_ustar_header(f"{key}.{ext}", size), *data, bytes(-size % _TAR_BLOCK)]
    return pieces


def _ustar_header(name: str, size: int) -> bytes:
    """The ustar header tarfile writes for a regular file `name` of `size` bytes, mode 0444, owner 0, mtime 0, built
    directly (tarfile's `TarInfo.tobuf` is ~70 us a member: a fifth of an export's own time); tarfile's where a name
    needs ustar's prefix field or the size 12 octal digits."""
    raw = name.encode("utf-8", "surrogateescape")
    if len(raw) > 100 or size >= 8 ** 11:
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o444, 0
        return info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape")
    head = _USTAR.pack(raw, b"0000444", b"0000000", b"0000000", b"%011o" % size, b"00000000000", b" " * 8, b"0", b"",
                       tarfile.POSIX_MAGIC, b"", b"", b"", b"", b"")
    return head[:148] + b"%06o\0" % sum(head) + head[155:]


def _merged_npz(paths: tuple[Path, ...]) -> list[_Piece]:
    """One npz holding the arrays of several: each file's members (local headers and data, everything before its
    central directory) copied as they are, then their central directory records with the new offsets. No array is
    read, inflated or re-encoded: the sample's npz bytes are the prepared files' own."""
    pieces: list[_Piece] = []
    entries, names, base = [], set(), 0
    for path in paths:
        start, records = _zip_directory(path)
        for fields, rest in records:
            name = rest[:fields[12]]
            if name in names or max(fields[10], fields[11], base + fields[18], base + start) >= _ZIP32_MAX:
                raise ExportError(f"{path}: member {name.decode(errors='replace')} is repeated or past 4 GB; cannot merge it")
            names.add(name)
            entries.append(_ZIP_ENTRY.pack(*fields[:18], base + fields[18]) + rest)
        pieces.append((path, start))
        base += start
    directory = b"".join(entries)
    return pieces + [directory + _ZIP_END.pack(zipfile.stringEndArchive, 0, 0, len(entries), len(entries),
                                               len(directory), base, 0)]


def _zip_directory(path: Path) -> tuple[int, list[tuple[tuple, bytes]]]:
    """A zip's central directory, found by the end record at the file's very end (np.savez writes no comment): its
    offset, and each record as (its fixed fields, its name, extra and comment bytes)."""
    with open(path, "rb") as f:
        f.seek(-_ZIP_END.size, os.SEEK_END)
        sig, disk, _, count, total, size, start, comment = _ZIP_END.unpack(f.read(_ZIP_END.size))
        if sig != zipfile.stringEndArchive or disk or count != total or comment:
            raise zipfile.BadZipFile(f"{path}: not a zip with its end record last")
        f.seek(start)
        raw = f.read(size)
    records, at = [], 0
    for _ in range(count):
        fields = _ZIP_ENTRY.unpack_from(raw, at) if len(raw) >= at + _ZIP_ENTRY.size else (None,)
        if fields[0] != zipfile.stringCentralDir:
            raise zipfile.BadZipFile(f"{path}: its central directory is cut short or damaged")
        end = at + _ZIP_ENTRY.size + fields[12] + fields[13] + fields[14]
        records.append((fields, raw[at + _ZIP_ENTRY.size:end]))
        at = end
    return start, records


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


def _write_tar(path: Path, samples: Iterable[list[_Piece]]) -> None:
    """A ustar tar of the samples' pieces (`_sample`), as tarfile would write it (fixed metadata: the same input, the
    same bytes); file spans copied by the kernel (`_append_span`), the bytes between them in one write each."""
    with open(path, "wb", buffering=0) as tar:  # written by descriptor: Python's writes and the kernel's copies share one position
        written, flushed, pending = 0, 0, []
        for pieces in samples:
            for piece in pieces:
                if isinstance(piece, bytes):
                    pending.append(piece)
                    continue
                written += _write_all(tar.fileno(), b"".join(pending)) + _append_span(*piece, tar)
                pending = []
                if written - flushed >= _FLUSH_BYTES:
                    flushed = _start_writeback(tar, flushed, written)
        end = written + sum(map(len, pending)) + 2 * _TAR_BLOCK
        _write_all(tar.fileno(), b"".join(pending) + bytes(2 * _TAR_BLOCK + -end % tarfile.RECORDSIZE))


def _write_all(fd: int, data: bytes) -> int:
    """`data` written to descriptor `fd` whole (a write may take only part); its length."""
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view):]
    return len(data)


def _start_writeback(f, start: int, end: int) -> int:
    """Start writing bytes [start, end) of open file `f` to disk, without waiting (so the fsync before a shard's rename
    finds little left: 43 ms -> 5 ms for a 66 MB shard), and let the page cache drop them once written (an export
    should not evict the prepared files it reads). Where the OS has no posix_fadvise, the fsync does it all."""
    with contextlib.suppress(AttributeError, OSError):
        os.posix_fadvise(f.fileno(), start, end - start, os.POSIX_FADV_DONTNEED)
    return end


def _append_span(src: Path, length: int, dst) -> int:
    """The first `length` bytes of file `src` appended to the open file `dst`: by the kernel (copy_file_range, as a
    file copy is), or read and written where it cannot (another OS, another file system on an old kernel)."""
    done, fd, out = 0, os.open(src, os.O_RDONLY), dst.fileno()  # a bare descriptor: a third of the cost of open()
    try:
        with contextlib.suppress(AttributeError, OSError):  # both continue from the files' positions
            while done < length and (n := os.copy_file_range(fd, out, length - done)):
                done += n
        while done < length and (chunk := os.read(fd, min(length - done, 1 << 22))):
            done += _write_all(out, chunk)
    finally:
        os.close(fd)
    if done != length:
        raise ExportError(f"{src} changed while it was exported ({done} of {length} bytes)")
    return length


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
