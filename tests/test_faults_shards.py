"""Issue 14 for shard sets: nothing lost (full disk, concurrent builds), nothing silent (altered shards,
foreign or escaping --select rows, damaged meta.json)."""
from __future__ import annotations

import errno
import json
import os
import shutil
from collections import namedtuple
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest
from click.testing import CliRunner

import meadkit.shards as shards
from meadkit.cli import main
from meadkit.data import ShardDataset
from meadkit.lock import OutputBusy, OutputLock
from meadkit.manifest import write_table
from meadkit.shards import (
    VERIFIED_FILE, ShardConfig, ShardError, build_shards, check_clip_paths, frame_bytes, read_meta, verify_for_reading,
    verify_shards,
)

from fakes import SIZE

CFG = ShardConfig(size=SIZE, shard_bytes=50 * frame_bytes(SIZE))


def _snapshot(d: Path) -> dict[str, bytes]:
    """Every file of a folder tree by relative path, with its bytes (the output lock's empty file aside)."""
    return {str(p.relative_to(d)): p.read_bytes() for p in sorted(d.rglob("*")) if p.is_file() and p.name != ".meadkit.lock"}


def _all_samples(d: Path) -> dict[str, np.ndarray]:
    ds = ShardDataset(d)
    return {k: v.numpy() for k, v in ds.batch(list(range(len(ds)))).items()}


@pytest.fixture
def work(prepared, tmp_path):
    """(OUT copy, clips, a built shard set of it) that a test may change."""
    out, clips = prepared
    work = tmp_path / "out"
    shutil.copytree(out, work)
    d = tmp_path / "shards"
    build_shards(work, d, CFG)
    return work, clips, d


def _change_a_clip(work: Path, clips) -> None:
    """New MFCC for the last clip, so a rebuild must rewrite its shard."""
    row = clips.iloc[-1].to_dict()
    np.savez(work / row["features_npz"], mfcc28=np.full((row["n_frames"], 28), 7.0, np.float32), padded=np.zeros(row["n_frames"], bool))


# ---------------------------------------------------------------- 2: full disk

def test_enospc_while_writing_keeps_the_old_set_valid_and_identical(work, monkeypatch):
    out, clips, d = work
    before, samples = _snapshot(d), _all_samples(d)
    _change_a_clip(out, clips)

    def full(fd, offset, length):
        raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC))

    monkeypatch.setattr(os, "posix_fallocate", full)
    with pytest.raises(ShardError, match=r"^no space left on device while writing .*shards: [\d.]+ GB free on .*, about [\d.]+ GB needed"):
        build_shards(out, d, CFG)
    verify_shards(d)
    assert _snapshot(d) == {**before, VERIFIED_FILE: (d / VERIFIED_FILE).read_bytes()}
    after = _all_samples(d)
    assert all(np.array_equal(after[k], samples[k], equal_nan=True) for k in samples)  # invalid neutral frames give NaN landmarks
    monkeypatch.undo()  # room again: the rerun finishes (resuming the staged shards) and swaps the new set in
    build_shards(out, d, CFG)
    verify_shards(d)
    assert sorted(p.name for p in d.parent.iterdir()) == ["out", "shards"]


def test_too_little_free_space_is_refused_before_writing(work, monkeypatch):
    out, clips, d = work
    before = _snapshot(d)
    _change_a_clip(out, clips)
    usage = namedtuple("usage", "total used free")
    monkeypatch.setattr(shutil, "disk_usage", lambda p: usage(10**9, 10**9 - 1000, 1000))
    monkeypatch.setattr(shards, "write_shard", lambda *a: pytest.fail("wrote a shard on a full disk"))
    with pytest.raises(ShardError, match=r"no space left on device while writing .*: 0.00 GB free .*, about 0.00 GB needed"):
        build_shards(out, d, CFG)
    assert _snapshot(d) == before


def test_shard_files_are_allocated_before_they_are_mapped(tmp_path):
    a = shards._allocated_memmap(tmp_path / "x.npy", "float32", (1000, 28))
    st = os.stat(tmp_path / "x.npy")
    assert st.st_blocks * 512 >= st.st_size  # real blocks, not a sparse file (a full disk would SIGBUS on write)
    del a


# ---------------------------------------------------------------- 3: checksums at open, non-finite values

def _nan_mfcc(shard_set: Path, tmp_path: Path) -> Path:
    """A copy of the set whose shard-00000 MFCC rows are NaN, same file size."""
    d = tmp_path / "nan"
    shutil.copytree(shard_set, d)
    (d / VERIFIED_FILE).unlink(missing_ok=True)
    m = np.load(d / "shard-00000" / "mfcc28.npy", mmap_mode="r+")
    m[:] = np.nan
    m.flush()
    del m
    return d


def test_nan_altered_shard_is_refused_by_default_and_by_train_and_evaluate(shard_set, tmp_path):
    d = _nan_mfcc(shard_set, tmp_path)
    with pytest.raises(ShardError, match="shard-00000/mfcc28.npy: sha256 checksum mismatch"):
        verify_for_reading(d, "full")
    run = tmp_path / "run"
    r = CliRunner().invoke(main, ["train", str(d), "-o", str(run), "--steps", "1"])
    assert r.exit_code != 0 and "shard-00000/mfcc28.npy: sha256 checksum mismatch" in r.output
    assert not list(run.glob("*.pt"))
    r = CliRunner().invoke(main, ["evaluate", str(tmp_path), str(d)])
    assert r.exit_code != 0 and "shard-00000/mfcc28.npy: sha256 checksum mismatch" in r.output


def test_verify_none_opts_out_of_checksums_but_nan_values_are_still_refused(shard_set, tmp_path):
    d = _nan_mfcc(shard_set, tmp_path)
    assert verify_for_reading(d, "none") is None and verify_for_reading(d, "size")["size"] == SIZE
    ds = ShardDataset(d, verify="none")
    first = int(np.flatnonzero(ds.clips["shard"].to_numpy() == 0)[0])
    with pytest.raises(ShardError, match=r"shard-00000: mfcc28.npy holds NaN or inf near row \d+"):
        ds[int(ds._c_start[first])]


def test_checksums_are_cached_by_size_and_mtime(shard_set, tmp_path, monkeypatch):
    d = tmp_path / "s"
    shutil.copytree(shard_set, d)
    (d / VERIFIED_FILE).unlink(missing_ok=True)
    n_files = 1 + sum(len(s["files"]) for s in read_meta(d)["shards"])
    calls = []
    real = shards._sha256
    monkeypatch.setattr(shards, "_sha256", lambda p: calls.append(p) or real(p))
    verify_for_reading(d, "full")
    assert len(calls) == n_files and json.loads((d / VERIFIED_FILE).read_text())["files"]
    calls.clear()
    verify_for_reading(d, "full")
    ShardDataset(d, verify="full")
    assert calls == []
    f = d / "shard-00001" / "landmarks.npy"
    os.utime(f, ns=(f.stat().st_atime_ns, f.stat().st_mtime_ns + 10**9))
    verify_for_reading(d, "full")
    assert calls == [f]
    calls.clear()
    verify_shards(d)  # `shard --verify` re-reads everything
    assert len(calls) == n_files


def test_a_prepared_clip_with_nan_mfcc_becomes_an_error_row(prepared, tmp_path):
    out, clips = prepared
    work = tmp_path / "out"
    shutil.copytree(out, work)
    row = clips.iloc[0].to_dict()
    with np.load(work / row["features_npz"]) as z:
        mfcc, padded = z["mfcc28"].copy(), z["padded"]
    mfcc[3, 5] = np.nan
    np.savez(work / row["features_npz"], mfcc28=mfcc, padded=padded)
    build_shards(work, tmp_path / "s", CFG)
    index = shards.read_index(tmp_path / "s")
    bad = index[index["take_id"] == row["take_id"]]  # both views share the take's MFCC
    assert (bad["status"] == "error").all() and bad["error"].str.contains("holds NaN or inf").all()
    assert (index[index["take_id"] != row["take_id"]]["status"] == "ok").all()


def test_meta_missing_keys_is_a_one_line_shard_error(shard_set, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(shard_set, d)
    meta = json.loads((d / "meta.json").read_text())
    del meta["vocab"], meta["shards"][1]["files"]
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ShardError, match=r"lacks key\(s\) vocab, shards\[1\]\.files: the shard set is damaged") as e:
        read_meta(d)
    assert "\n" not in str(e.value)


# ---------------------------------------------------------------- 4: one build at a time

def test_a_second_build_into_a_locked_folder_is_refused(work):
    out, clips, d = work
    before = _snapshot(d)
    with OutputLock(d):
        with pytest.raises(OutputBusy, match="another meadkit process is writing"):
            build_shards(out, d, CFG)
        r = CliRunner().invoke(main, ["shard", str(out), "--size", str(SIZE), "-o", str(d), "--quiet"])
        assert r.exit_code != 0 and "another meadkit process is writing" in (r.output + str(r.exception))
    assert _snapshot(d) == before
    verify_shards(d)
    assert sorted(p.name for p in d.parent.iterdir()) == ["out", "shards"]


def test_a_rebuild_swaps_in_the_new_set_and_leaves_no_other_folder(work, monkeypatch):
    out, clips, d = work
    verify_for_reading(d, "full")
    _change_a_clip(out, clips)
    meta = build_shards(out, d, CFG)
    assert read_meta(d) == meta
    assert sorted(p.name for p in d.parent.iterdir()) == ["out", "shards"]
    assert sorted(p.name for p in d.iterdir()) == ["index.parquet", "meta.json", *(s["name"] for s in meta["shards"]), VERIFIED_FILE]
    calls = []
    real = shards._sha256
    monkeypatch.setattr(shards, "_sha256", lambda p: calls.append(p.relative_to(d).parts[0]) or real(p))
    verify_for_reading(d, "full")  # kept shards are hard links: still verified; the rewritten one and the index are not
    assert sorted(set(calls)) == ["index.parquet", meta["shards"][-1]["name"]]


def test_a_folder_with_foreign_files_is_not_replaced(prepared, tmp_path):
    out, _ = prepared
    d = tmp_path / "mine"
    d.mkdir()
    (d / "notes.txt").write_text("keep me")
    with pytest.raises(ShardError, match="holds 'notes.txt', which is not part of a shard set"):
        build_shards(out, d, CFG)
    assert [p.name for p in d.iterdir()] == ["notes.txt"]


# ---------------------------------------------------------------- 9: --select rows must be this OUT's clips

def _shard_select(out: Path, rows, tmp_path: Path):
    subset = tmp_path / "subset.parquet"
    write_table(pa.Table.from_pandas(rows, preserve_index=False), subset)
    return CliRunner().invoke(main, ["shard", str(out), "--select", str(subset), "--size", str(SIZE), "-o", str(tmp_path / "s"), "--quiet"])


@pytest.mark.parametrize("change", [
    {"take_id": "M999_happy_3_001"},          # a clip this OUT does not have
    {"features_npz": "../other/features.npz"},          # a path escaping OUT
    {"faces_npz": "/etc/passwd"},               # an absolute path
    {"n_frames": 999},                          # another OUT's (or an older prepare's) row
])
def test_foreign_or_escaping_select_rows_are_refused_with_nothing_written(prepared, tmp_path, change):
    out, clips = prepared
    rows = clips.copy()
    for k, v in change.items():
        rows.loc[rows.index[1:3], k] = v
    r = _shard_select(out, rows, tmp_path)
    assert r.exit_code != 0
    assert f"2 row(s) of {tmp_path / 'subset.parquet'} are not clips of this OUT's manifest" in r.output
    assert f"first {rows.iloc[1]['take_id']}/{rows.iloc[1]['view']}" in r.output
    assert sorted(p.name for p in tmp_path.iterdir()) == ["subset.parquet"]


def test_paths_escaping_out_are_refused_even_from_the_manifest(prepared, tmp_path):
    out, clips = prepared
    work = tmp_path / "out"
    shutil.copytree(out, work)
    outside = tmp_path / "elsewhere.npz"
    row = clips.iloc[0]
    shutil.move(work / row["faces_npz"], outside)
    (work / row["faces_npz"]).symlink_to(outside)  # a symlink out of OUT
    with pytest.raises(ShardError, match=rf"1 selected clip\(s\) name files outside {work}, first {row['take_id']}/{row['view']}: faces_npz="):
        build_shards(work, tmp_path / "s", CFG)
    assert not (tmp_path / "s").exists()
    bad = clips.assign(crop_video=[str(work / p) for p in clips["crop_video"]])
    with pytest.raises(ShardError, match=rf"{len(clips)} selected clip\(s\) name files outside"):
        check_clip_paths(work, bad)
