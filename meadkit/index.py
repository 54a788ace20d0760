"""The index stage: find every recording of a MEAD download, probe it, and say what is there and what is broken.

Output is one row per file (and per expected-but-absent take/view) in `RECORDINGS_SCHEMA`,
written to `OUT/manifests/recordings.parquet`; every row has a `status` and, unless it is
'ok', a readable `error`, and `known` names the MEAD release defect it matches (if any).
`index_into` also records RAW's fingerprint in `OUT/state/raw.json`, so a stale index is
rebuilt (`stale_index`). Later stages read recordings back with `source_of(row)`.
"""
from __future__ import annotations

import hashlib
import json
import os
import statistics
import struct
from collections import Counter, defaultdict
from dataclasses import dataclass, field, replace
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Callable, Iterable, Mapping, Optional, Sequence

import pandas as pd
import pyarrow as pa

from meadkit.config import check_fields
from meadkit.atomic import atomic_path, is_within, output_error
from meadkit.corpus.archive import Entry, discover, walk_tree
from meadkit.corpus.known import known_defect
from meadkit.corpus.names import (
    ACTOR_RE, EMOTIONS, MEAD_RATES, VIEWS, BadName, TakeKey, audio_relpath, gender, is_mead_rate, nominal_levels,
    nominal_takes, parse_path, video_relpath,
)
from meadkit.media.sources import Source
from meadkit.manifest import to_table, write_table
from meadkit.media.probe import MediaError, probe, sample_data_end
from meadkit.records import RECORDINGS_SCHEMA, Labels

if TYPE_CHECKING:
    from meadkit.runner import Executor

#: Where the stage writes its table, relative to the output folder.
RECORDINGS_PATH = Path("manifests/recordings.parquet")
#: Where OUT records which RAW its table was indexed from (resolved root and a hash of RAW's listing).
RAW_STATE_PATH = Path("state/raw.json")

#: Every status a row can have; 'ok' rows have a null `error`, all others say why.
STATUSES = ("ok", "no_audio", "short_audio", "odd_rate", "corrupt", "unrecognized", "unsafe", "compressed", "duplicate",
            "missing")
#: Statuses whose file later stages can use (a view without audio still gives frames; short audio still gives MFCC).
USABLE_STATUSES = ("ok", "no_audio", "short_audio")
#: Slot name of the reference audio where views are listed.
AUDIO_SLOT = "audio"

_KIND_BY_EXT = {".mp4": "video", ".m4a": "audio"}
_SLOT_ORDER = {v: i for i, v in enumerate(VIEWS + (AUDIO_SLOT,))}


@dataclass
class IndexConfig:
    """Settings of the index stage (the `[index]` table of a pipeline TOML)."""

    #: A take's reference audio may be this much shorter than its views' median video duration before it is
    #: flagged `short_audio`. Real MEAD mismatches are ~0.04 s; the cameras of one take differ by a few tenths.
    short_audio_tolerance_s: float = field(default=0.5, metadata={"min": 0.0})

    def __post_init__(self) -> None:
        check_fields(self, "index")


# ---------------------------------------------------------------- one file


def probe_entry(entry: Entry) -> dict:
    """The manifest row of one discovered entry: parsed name, probe fields, status and error (never raises)."""
    src = entry.source
    row = {
        "relpath": entry.relpath,
        "source_path": src.path if src else None,
        "member": src.member if src else None,
        "member_offset": src.offset if src and src.in_archive else None,
        "member_size": src.size if src and src.in_archive else None,
        "size_bytes": entry.size,
        "kind": entry.kind,
        "status": entry.status or None,
        "error": entry.error,
    }
    if entry.kind == "archive":
        return _set_actor(row, entry.actor_hint)
    try:
        name = parse_path(entry.relpath, entry.actor_hint)
    except BadName as e:
        row["kind"] = _KIND_BY_EXT.get(Path(entry.relpath).suffix.lower(), "other")
        _set_actor(row, next((p for p in Path(entry.relpath).parts if ACTOR_RE.match(p)), entry.actor_hint))
        if not row["status"]:
            row.update(status="unrecognized", error=f"unrecognized name: {e}")
        return row
    _set_key(row, name.key, name.view, name.kind)
    if not row["status"]:
        row.update(_probe_status(src, entry.size, name.kind))
    return row


def _set_actor(row: dict, actor: Optional[str]) -> dict:
    row["actor"], row["gender"] = actor, (gender(actor) if actor else None)
    return row


def _set_key(row: dict, key: TakeKey, view: Optional[str], kind: str) -> dict:
    row.update(Labels.of(key, view).to_row(), kind=kind)
    return row


def _probe_status(src: Source, size: Optional[int], kind: str) -> dict:
    """Probe fields plus the file's own status (ok / no_audio / odd_rate / corrupt)."""
    if size == 0:
        return {"status": "corrupt", "error": "empty file (0 bytes)"}
    out: dict = {}
    problems = []
    try:
        trunc = bmff_truncation(src, size)
        if trunc:
            problems.append(trunc)
        out.update(probe(src).as_dict())
    except MediaError as e:
        problems.append(str(e))
    except Exception as e:  # one bad file never stops the run
        problems.append(f"unexpected error while probing {src}: {type(e).__name__}: {e}")
    if problems:
        return {**out, "status": "corrupt", "error": "; ".join(problems)}
    if kind == "video" and not out.get("video_codec"):
        return {**out, "status": "corrupt", "error": "no video stream in a view video"}
    if kind == "video" and out.get("n_frames") == 0:
        return {**out, "status": "corrupt", "error": "video stream holds no frames"}
    rate = Fraction(out["fps_num"], out["fps_den"]) if out.get("fps_num") and out.get("fps_den") else None
    if kind == "video" and rate and not is_mead_rate(rate):
        return {**out, "status": "odd_rate", "error": (
            f"frame rate {out.get('fps_num')}/{out.get('fps_den')} is far from MEAD's "
            f"{' and '.join(map(str, MEAD_RATES))} (~30 fps): not a MEAD recording as released; not used")}
    if kind == "audio" and not out.get("has_audio"):
        return {**out, "status": "corrupt", "error": "no audio stream in the reference audio file"}
    if kind == "video" and not out.get("has_audio"):
        return {**out, "status": "no_audio", "error": "view video has no audio stream (cannot be synced by its own sound)"}
    return {**out, "status": "ok", "error": None}


#: Top-level ISO-BMFF box types; bytes after the last box that do not start one are taken as harmless padding.
_TOP_BOXES = {b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"uuid", b"moof", b"mfra", b"meta", b"pdin",
              b"styp", b"sidx", b"udta", b"pnot", b"prfl"}


def bmff_truncation(src: Source, size: Optional[int]) -> Optional[str]:
    """For an ISO-BMFF file (mp4/m4a), why it is cut short, else None: a top-level box overruns the file,
    or the sample tables of `moov` point past its end (a frame count the bytes cannot hold).

    Reads only box headers and `moov`, so it catches a truncated `mdat` even when the index (`moov`)
    survived at the front of the file and the probe would look fine.
    """
    with src.open() as fh:
        f = getattr(fh, "raw", fh)  # unbuffered: a few 16-byte header reads, not a buffer refill per box
        if size is None:
            size = f.seek(0, 2)
        problem, moov = _box_overrun(f, size)
    end = sample_data_end(moov) if moov else 0
    if problem is None and end > size:
        problem = (f"truncated: the sample tables place media data up to byte {end} but the file has only {size} bytes, "
                   "so it cannot hold the frames its header claims")
    return problem


#: The largest `moov` read to check its sample tables (MEAD's are tens of kB).
_MAX_MOOV = 64 << 20


def _box_overrun(f, size: int) -> tuple[Optional[str], bytes]:
    """(why a top-level box overruns the file or None, the `moov` payload or b'') of an ISO-BMFF stream."""
    pos, boxes, moov = 0, 0, b""
    while pos + 8 <= size and boxes < 100_000:
        f.seek(pos)
        head = f.read(16)
        box_size, box_type = struct.unpack(">I4s", head[:8])
        if (boxes == 0 and box_type != b"ftyp") or box_type not in _TOP_BOXES:
            break  # not ISO-BMFF (the probe judges it), or trailing padding / an unknown box: nothing is cut
        head_len = 8
        if box_size == 1 and len(head) == 16:
            box_size, head_len = struct.unpack(">Q", head[8:16])[0], 16
        elif box_size == 0:
            box_size = size - pos  # the last box runs to the end of the file
        name = box_type.decode("latin-1")
        if box_size < head_len:
            return f"corrupt: invalid size {box_size} of box {name!r} at byte {pos}", moov
        if pos + box_size > size:
            return f"truncated: box {name!r} at byte {pos} needs {box_size} bytes but only {size - pos} remain", moov
        if box_type == b"moov" and box_size <= _MAX_MOOV:
            f.seek(pos + head_len)
            moov = f.read(box_size - head_len)
        pos += box_size
        boxes += 1
    return None, moov


# ---------------------------------------------------------------- the whole corpus


def _probe_all(entries: list[Entry], executor: Optional[Executor],
               probe: Callable[[Entry], dict] = probe_entry) -> list[dict]:
    """Rows for `entries` in order, probed by `executor` in batches of files (in this process if None).

    A file that kills its worker process (a crash inside FFmpeg) becomes a `corrupt` row (the executor narrows
    a dead batch down to it); the run goes on.
    """
    if executor is None:
        return [probe(e) for e in entries]
    return list(executor.map(probe, entries, on_crash=_crashed_probe, label="index", unit="files",
                             ok=lambda row: row["status"] in USABLE_STATUSES, batch=64, ordered=True))


def _crashed_probe(entry: Entry, crash: BaseException) -> dict:
    """The `corrupt` row of an entry whose probing killed its worker process."""
    why = f"probing this file crashed the worker process ({type(crash).__name__})"
    return probe_entry(replace(entry, status="corrupt", error=why))  # a preset status: not probed again


def index_corpus(
    raw: Path | str,
    config: Optional[IndexConfig] = None,
    exclude: Iterable[Path | str] = (),
    executor: Optional[Executor] = None,
) -> pa.Table:
    """Discover, probe (with `executor`; in this process if None) and cross-check every recording under `raw`;
    a table in `RECORDINGS_SCHEMA`.

    `raw` is a MEAD tree, a folder of per-actor tars, a mix, or a single tar. Folders in
    `exclude` (e.g. the output folder) are skipped. Never raises on bad recordings.
    """
    config = config or IndexConfig()
    rows = _probe_all(discover(raw, exclude), executor)
    rows = cross_check(rows, config)
    for r in rows:
        r["known"] = known_defect(r.get("relpath"))
    rows.sort(key=_row_order)
    return to_table(rows, RECORDINGS_SCHEMA)


def write_recordings(table: pa.Table, out: Path | str) -> Path:
    """Write the index table to `OUT/manifests/recordings.parquet` (atomically)."""
    return write_table(table, Path(out) / RECORDINGS_PATH)


def index_into(raw: Path | str, out: Path | str, config: Optional[IndexConfig] = None,
               executor: Optional[Executor] = None, fingerprint: Optional[dict] = None) -> pa.Table:
    """Index `raw` (OUT excluded) into OUT: recordings.parquet, then OUT/state/raw.json with RAW's fingerprint
    (`fingerprint` if the caller just took it, else taken here).

    The fingerprint is taken before probing, so a RAW that changes during the run is reindexed next time.
    Disk errors writing OUT become `OutputDiskError` (one line).
    """
    fingerprint = fingerprint or raw_fingerprint(raw, [out])
    table = index_corpus(raw, config, exclude=[out], executor=executor)
    try:
        write_recordings(table, out)
        with atomic_path(Path(out) / RAW_STATE_PATH) as tmp:
            tmp.write_text(json.dumps(fingerprint, indent=1))
    except OSError as e:
        raise output_error(e, out) or e
    return table


def raw_fingerprint(raw: Path | str, exclude: Iterable[Path | str] = ()) -> dict:
    """{'root': RAW resolved, 'files': count, 'listing': sha256 of the relpath, size and mtime of every file the
    index lists}: cheap (no content is read, links out of RAW are not followed) and changes when RAW does."""
    raw = Path(raw).absolute()
    listing = [(raw, raw.name, None)] if raw.is_file() else walk_tree(raw, exclude)
    h, n = hashlib.sha256(), 0
    for path, rel, outside in listing:
        try:
            st = None if outside else path.stat()
        except OSError:
            st = None
        h.update(f"{rel}\0{st.st_size if st else -1}\0{st.st_mtime_ns if st else -1}\n".encode("utf-8", "surrogateescape"))
        n += 1
    return {"root": os.path.realpath(raw), "files": n, "listing": h.hexdigest()}


def stale_index(out: Path | str, new: dict) -> Optional[str]:
    """Why OUT's recordings.parquet does not describe the RAW whose `raw_fingerprint` is `new` (so it must be
    rebuilt), or None."""
    out = Path(out)
    if not (out / RECORDINGS_PATH).exists():
        return "no index yet"
    try:
        old = json.loads((out / RAW_STATE_PATH).read_text())
    except (OSError, json.JSONDecodeError):
        return f"{out} does not record which RAW it was indexed from"
    if old.get("root") != new["root"]:
        return f"{out} was indexed from {old.get('root')}, not {new['root']}"
    if old.get("listing") != new["listing"]:
        return f"the files under {new['root']} changed since it was indexed ({old.get('files')} files then, {new['files']} now)"
    return None


def check_out_of_raw(raw: Path | str, out: Path | str) -> Optional[str]:
    """Refuse (ValueError) an OUT that is RAW itself; for an OUT inside RAW, the note that it is skipped."""
    r, o = os.path.realpath(raw), os.path.realpath(out)
    if r == o:
        raise ValueError(f"the output folder is the raw folder ({r}): give -o a folder outside RAW")
    return f"note: the output folder {o} lies inside RAW; it is skipped while indexing" if is_within(o, r) else None




def _row_order(r: Mapping) -> tuple:
    """Sort key: by actor, take and slot; a take/view's used copy before its duplicates."""
    slot = r.get("view") or (AUDIO_SLOT if r.get("kind") == "audio" else "")
    return (r.get("actor") is None, r.get("actor") or "", r.get("emotion") or "", r.get("level") or 0,
            r.get("take") or 0, _SLOT_ORDER.get(slot, 99), r.get("status") == "duplicate", r.get("relpath") or "",
            r.get("member") or "")


def _slot(r: Mapping) -> str:
    return r["view"] if r.get("view") else AUDIO_SLOT


def _has_take(r: Mapping) -> bool:
    return r.get("take_id") is not None and r.get("kind") in ("video", "audio")


# ---------------------------------------------------------------- checks across files


def cross_check(rows: list[dict], config: IndexConfig) -> list[dict]:
    """Flag duplicates and short reference audio, and add `missing` rows; returns the extended row list."""
    _flag_duplicates(rows)
    _flag_short_audio(rows, config.short_audio_tolerance_s)
    return rows + _missing_rows(rows)


def _preference(r: Mapping, position: int) -> tuple:
    """Which copy of a take/view to keep: usable first, then a plain file before a tar member, then first found."""
    rank = 0 if r["status"] in USABLE_STATUSES else 1 if r["status"] in ("corrupt", "compressed", "odd_rate") else 2
    return (rank, r.get("member") is not None, position)


def _flag_duplicates(rows: list[dict]) -> None:
    groups: dict[tuple, list[int]] = defaultdict(list)
    for i, r in enumerate(rows):
        if _has_take(r):
            groups[(r["take_id"], _slot(r))].append(i)
    for idx in groups.values():
        if len(idx) < 2:
            continue
        keep = min(idx, key=lambda i: _preference(rows[i], i))
        kept = rows[keep]
        where = f"{kept['source_path']}:{kept['member']}" if kept.get("member") else kept["source_path"]
        for i in idx:
            if i != keep:
                r = rows[i]
                also = f" (this copy is also {r['status']}: {r['error']})" if r["status"] != "ok" else ""
                r.update(status="duplicate", error=f"same take and view as {where}, which is used instead{also}")


def _flag_short_audio(rows: list[dict], tolerance: float) -> None:
    videos: dict[str, list[float]] = defaultdict(list)
    audios: dict[str, dict] = {}
    for r in rows:
        if not _has_take(r) or r["status"] not in USABLE_STATUSES:
            continue
        if r["kind"] == "video" and r.get("duration_s"):
            videos[r["take_id"]].append(r["duration_s"])
        elif r["kind"] == "audio" and r.get("audio_duration_s") is not None:
            audios[r["take_id"]] = r
    for take_id, a in audios.items():
        if take_id not in videos:
            continue
        median = statistics.median(videos[take_id])
        short = median - a["audio_duration_s"]
        if short > tolerance:
            a.update(status="short_audio", error=(
                f"reference audio lasts {a['audio_duration_s']:.3f} s, {short:.3f} s less than the median video "
                f"duration {median:.3f} s of the take's {len(videos[take_id])} views (tolerance {tolerance} s)"))


def _missing_rows(rows: list[dict]) -> list[dict]:
    """Rows for (take, slot) pairs absent although the same take exists elsewhere and the actor has that slot."""
    actor_slots: dict[str, set[str]] = defaultdict(set)
    present: dict[TakeKey, set[str]] = defaultdict(set)
    for r in rows:
        if _has_take(r):
            actor_slots[r["actor"]].add(_slot(r))
            present[TakeKey.from_id(r["take_id"])].add(_slot(r))
    out = []
    for key in sorted(present):
        have = present[key]
        for slot in sorted(actor_slots[key.actor] - have, key=_SLOT_ORDER.get):
            view = None if slot == AUDIO_SLOT else slot
            kind = "audio" if view is None else "video"
            rel = audio_relpath(key.actor, key.emotion, key.level, key.take) if view is None else \
                video_relpath(key.actor, view, key.emotion, key.level, key.take)
            where = ", ".join(sorted(have, key=_SLOT_ORDER.get))
            row = _set_key({"relpath": rel, "status": "missing"}, key, view, kind)
            row["error"] = f"no {'reference audio' if view is None else slot + ' video'} for take {key.id}, which exists in: {where}"
            out.append(row)
    return out


# ---------------------------------------------------------------- reading the table back


def source_of(row: Mapping) -> Optional[Source]:
    """The `Source` a recordings row points at (a file, or a member of a tar read in place); None if it has none."""
    path = row.get("source_path")
    if path is None or (isinstance(path, float) and pd.isna(path)):
        return None
    member = row.get("member")
    if member is None or (isinstance(member, float) and pd.isna(member)):
        return Source(str(path))
    return Source(str(path), str(member), int(row["member_offset"]), int(row["member_size"]))


def take_sources(table: pa.Table | pd.DataFrame, statuses: Sequence[str] = USABLE_STATUSES) -> dict[str, dict[str, Source]]:
    """{take_id: {view or 'audio': Source}} for the rows whose status is in `statuses`."""
    df = _frame(table)
    df = df[df["status"].isin(list(statuses)) & df["take_id"].notna() & df["kind"].isin(["video", "audio"])]
    out: dict[str, dict[str, Source]] = defaultdict(dict)
    for r in df.to_dict("records"):
        out[r["take_id"]][r["view"] if isinstance(r["view"], str) else AUDIO_SLOT] = source_of(r)
    return dict(out)


def _frame(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    return table.to_pandas() if isinstance(table, pa.Table) else table


# ---------------------------------------------------------------- summary


def nominal_per_view() -> int:
    """Nominal takes per view (and for the reference audio) of one actor: 7 x 3 x 30 + 40 = 670."""
    return sum(nominal_takes(e) * len(nominal_levels(e)) for e in EMOTIONS)


def take_counts(table: pa.Table | pd.DataFrame) -> pd.DataFrame:
    """Per (actor, slot): takes with a file (`found`), takes with a usable file (`usable`), and `nominal`."""
    df = _frame(table)
    df = df[df["take_id"].notna() & df["kind"].isin(["video", "audio"]) & ~df["status"].isin(["missing", "duplicate"])]
    df = df.assign(slot=df["view"].fillna(AUDIO_SLOT), usable=df["status"].isin(list(USABLE_STATUSES)))
    g = df.groupby(["actor", "slot"])
    out = pd.DataFrame({"found": g["take_id"].nunique(), "usable": df[df["usable"]].groupby(["actor", "slot"])["take_id"].nunique()})
    out = out.fillna(0).astype("int64").reset_index()
    out["nominal"] = nominal_per_view()
    out["order"] = out["slot"].map(_SLOT_ORDER)
    return out.sort_values(["actor", "order"]).drop(columns="order").reset_index(drop=True)


def take_gaps(table: pa.Table | pd.DataFrame) -> list[TakeKey]:
    """Take numbers absent from every view and the audio of an (actor, emotion, level), below its highest take."""
    df = _frame(table)
    df = df[df["take_id"].notna()]
    gaps = []
    for (actor, emotion, level), takes in df.groupby(["actor", "emotion", "level"])["take"]:
        have = set(int(t) for t in takes)
        gaps += [TakeKey(actor, emotion, int(level), t) for t in range(1, max(have)) if t not in have]
    return sorted(gaps)


def absent_cells(table: pa.Table | pd.DataFrame) -> list[tuple[str, str, int]]:
    """(actor, emotion, level) cells that other actors have but this actor has no file of at all (whole takes gone)."""
    df = _frame(table)
    df = df[df["take_id"].notna()]
    have = {a: set(zip(g["emotion"], g["level"].astype(int))) for a, g in df.groupby("actor")}
    every = set().union(*have.values()) if have else set()
    return sorted((a, e, lv) for a, cells in have.items() for e, lv in every - cells)


def summarize(table: pa.Table | pd.DataFrame) -> str:
    """A readable report: per actor, takes found per view against nominal, absent takes, defects by kind."""
    df = _frame(table)
    counts = take_counts(df)
    gaps, absent = take_gaps(df), absent_cells(df)
    status = Counter(df["status"])
    n_files = int((df["status"] != "missing").sum())
    lines = [f"{n_files} files, {df['actor'].dropna().nunique()} actors: "
             + ", ".join(f"{s} {status[s]}" for s in STATUSES if status[s])]
    for actor in sorted(df["actor"].dropna().unique()):
        sub = df[df["actor"] == actor]
        c = counts[counts["actor"] == actor]
        cells = sub[sub["take_id"].notna()].groupby(["emotion", "level"]).ngroups
        lines.append(f"{actor} ({gender(actor)}): {len(sub)} rows, {cells} emotion/level cells; "
                     f"takes found (usable) / nominal {nominal_per_view()}:")
        lines.append("  " + "  ".join(f"{r.slot} {r.found} ({r.usable})" for r in c.itertuples()))
        agaps = [g for g in gaps if g.actor == actor]
        if agaps:
            lines.append(f"  numbering gaps ({len(agaps)}): " + ", ".join(f"{g.emotion}/{g.level}/{g.take:03d}" for g in agaps[:12])
                         + (" ..." if len(agaps) > 12 else ""))
        acells = [f"{e}/{lv}" for a, e, lv in absent if a == actor]
        if acells:
            lines.append(f"  emotion/level cells other actors have but this one lacks ({len(acells)}): " + ", ".join(acells))
        bad = Counter(s for s in sub["status"] if s != "ok")
        lines.append("  defects: " + (", ".join(f"{s} {bad[s]}" for s in STATUSES if bad[s]) or "none"))
    orphans = df[df["actor"].isna()]
    if len(orphans):
        bad = Counter(orphans["status"])
        lines.append("(no actor): " + ", ".join(f"{s} {bad[s]}" for s in STATUSES if bad[s]))
    archives = df[df["kind"] == "archive"]
    for r in archives.itertuples():
        lines.append(f"archive {r.relpath}: {r.status}: {r.error}")
    return "\n".join(lines)
