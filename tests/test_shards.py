"""Shard writing: round trip against the prepared clip files, bounds, resume, failures, corruption."""
from __future__ import annotations

import json
import os
import shutil
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from click.testing import CliRunner

from meadkit.corpus.names import emotion_label
from meadkit.manifest import write_table
from meadkit.shards import (
    FORMAT_VERSION,
    ShardConfig,
    ShardError,
    build_shards,
    check_shards,
    frame_bytes,
    parse_bytes,
    read_index,
    read_meta,
    verify_shards,
)

from fakes import SIZE, expected_clip


def _copy(shard_set: Path, tmp_path: Path) -> Path:
    d = tmp_path / "shards"
    shutil.copytree(shard_set, d)
    return d


def test_round_trip_shards_equal_prepared_outputs(prepared, shard_set):
    out, clips = prepared
    meta = read_meta(shard_set)
    index = read_index(shard_set)
    assert meta["format_version"] == FORMAT_VERSION and meta["size"] == SIZE
    assert len(index) == len(clips) and (index["status"] == "ok").all()
    assert meta["n_frames"] == clips["n_frames"].sum()
    for row in clips.to_dict("records"):
        r = index[(index["take_id"] == row["take_id"]) & (index["view"] == row["view"])].iloc[0]
        d = shard_set / f"shard-{r['shard']:05d}"
        sl = slice(r["offset"], r["offset"] + r["length"])
        exp = expected_clip(out, row)
        for k, a in exp.items():
            got = np.load(d / f"{k}.npy", mmap_mode="r")[sl]
            np.testing.assert_array_equal(got, a, err_msg=f"{row['take_id']}/{row['view']} {k}")
        assert r["emotion_label"] == emotion_label(row["emotion"])
        assert meta["vocab"]["actors"][r["actor_index"]] == row["actor"]
        assert meta["vocab"]["views"][r["view_index"]] == row["view"]
        assert r["n_valid"] == exp["valid"].sum() and r["split"] == row["split"]


def test_shards_respect_the_byte_bound_and_never_split_clips(shard_set):
    meta = read_meta(shard_set)
    index = read_index(shard_set)
    bound = 50 * frame_bytes(SIZE)
    assert len(meta["shards"]) >= 3
    for s in meta["shards"]:
        assert s["n_frames"] * frame_bytes(SIZE) <= bound
        header_bytes = sum(f["bytes"] for f in s["files"].values()) - s["n_frames"] * frame_bytes(SIZE)
        assert 0 < header_bytes <= 5 * 128  # five .npy headers, nothing else
    for k, g in index.groupby("shard"):
        spans = sorted(zip(g["offset"], g["length"]))
        assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
        assert spans[-1][0] + spans[-1][1] == meta["shards"][k]["n_frames"]


def test_oversized_clip_gets_its_own_shard(prepared, tmp_path):
    out, _ = prepared
    meta = build_shards(out, tmp_path / "s", ShardConfig(size=SIZE, shard_bytes=10 * frame_bytes(SIZE)))
    index = read_index(tmp_path / "s")
    assert len(meta["shards"]) == len(index) and index["shard"].is_unique


def test_rerun_keeps_finished_shards_and_rewrites_changed_ones(prepared, tmp_path):
    out, clips = prepared
    work = tmp_path / "out"
    shutil.copytree(out, work)
    cfg = ShardConfig(size=SIZE, shard_bytes=50 * frame_bytes(SIZE))
    d = tmp_path / "s"
    meta1 = build_shards(work, d, cfg)
    stamps = {s["name"]: (d / s["name"] / "frames.npy").stat().st_mtime_ns for s in meta1["shards"]}
    meta2 = build_shards(work, d, cfg)
    assert meta2["shards"] == meta1["shards"]
    assert stamps == {s["name"]: (d / s["name"] / "frames.npy").stat().st_mtime_ns for s in meta2["shards"]}
    # change one clip's MFCC: only its shard is rewritten, with the new values
    row = clips.iloc[-1].to_dict()
    new = np.full((row["n_frames"], 28), 7.0, np.float32)
    np.savez(work / row["features_npz"], mfcc28=new, padded=np.zeros(row["n_frames"], bool))
    meta3 = build_shards(work, d, cfg)
    index = read_index(d)
    r = index[index["take_id"] == row["take_id"]].iloc[0]
    changed = f"shard-{r['shard']:05d}"
    for s in meta3["shards"]:
        same = (d / s["name"] / "frames.npy").stat().st_mtime_ns == stamps[s["name"]]
        assert same == (s["name"] != changed)
    np.testing.assert_array_equal(np.load(d / changed / "mfcc28.npy")[r["offset"] : r["offset"] + r["length"]], new)
    verify_shards(d)


def test_bad_clip_becomes_an_error_row_and_others_are_kept(prepared, tmp_path):
    out, clips = prepared
    work = tmp_path / "out"
    shutil.copytree(out, work)
    bad = clips.iloc[0].to_dict()
    np.savez(work / bad["faces_npz"], landmarks_crop=np.zeros((3, 68, 2), np.float32), valid=np.ones(3, bool))
    missing = clips.iloc[2].to_dict()
    (work / missing["crop_video"]).unlink()
    meta = build_shards(work, tmp_path / "s", ShardConfig(size=SIZE))
    index = read_index(tmp_path / "s").set_index(["take_id", "view"])
    assert meta["n_failed"] == 2 and meta["n_clips"] == len(clips) - 2
    assert "landmarks_crop has shape (3, 68, 2)" in index.loc[(bad["take_id"], bad["view"]), "error"]
    assert index.loc[(missing["take_id"], missing["view"]), "status"] == "error"
    assert "cannot decode" in index.loc[(missing["take_id"], missing["view"]), "error"]
    ok = index[index["status"] == "ok"]
    assert meta["n_frames"] == ok["length"].sum() == read_meta(tmp_path / "s")["shards"][0]["n_frames"]
    spans = sorted(zip(ok["offset"], ok["length"]))
    assert spans[0][0] == 0 and all(a + n == b for (a, n), (b, _) in zip(spans, spans[1:]))
    verify_shards(tmp_path / "s")
    assert np.load(tmp_path / "s" / "shard-00000" / "frames.npy", mmap_mode="r").shape[0] == meta["n_frames"]


def test_truncated_shard_file_is_refused(shard_set, tmp_path):
    d = _copy(shard_set, tmp_path)
    f = d / "shard-00001" / "frames.npy"
    os.truncate(f, f.stat().st_size - 100)
    with pytest.raises(ShardError, match=r"shard-00001/frames.npy: \d+ bytes, expected \d+ \(truncated"):
        check_shards(d)


def test_flipped_byte_is_caught_by_full_verification(shard_set, tmp_path):
    d = _copy(shard_set, tmp_path)
    f = d / "shard-00000" / "landmarks.npy"
    data = bytearray(f.read_bytes())
    data[-5] ^= 0x01
    f.write_bytes(bytes(data))
    check_shards(d)  # sizes still match: the cheap check cannot see it
    with pytest.raises(ShardError, match="shard-00000/landmarks.npy: sha256 checksum mismatch"):
        verify_shards(d)


def test_missing_shard_is_refused(shard_set, tmp_path):
    d = _copy(shard_set, tmp_path)
    shutil.rmtree(d / "shard-00002")
    with pytest.raises(ShardError, match=r"shard-00002/frames.npy: missing"):
        check_shards(d)


def test_other_format_version_is_refused(shard_set, tmp_path):
    d = _copy(shard_set, tmp_path)
    meta = json.loads((d / "meta.json").read_text())
    meta["format_version"] = FORMAT_VERSION + 1
    (d / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(ShardError, match=f"format version {FORMAT_VERSION + 1}; this meadkit reads version {FORMAT_VERSION}"):
        read_meta(d)
    table = pq.read_table(shard_set / "index.parquet")
    pq.write_table(table.replace_schema_metadata({b"meadkit.shards.format_version": b"0"}), d / "index.parquet")
    with pytest.raises(ShardError, match="index of shard format version 0"):
        read_index(d)


def test_unfinished_set_is_refused(tmp_path):
    with pytest.raises(ShardError, match="not a finished shard set"):
        read_meta(tmp_path)


def test_parse_bytes():
    assert parse_bytes("1GB") == 10**9 and parse_bytes("512MiB") == 512 * 2**20 and parse_bytes("1000") == 1000
    with pytest.raises(ValueError, match="not a byte size"):
        parse_bytes("lots")


def test_command_filters_and_select_file(prepared, tmp_path):
    out, clips = prepared
    from meadkit.cli import main

    r = CliRunner().invoke(main, ["shard", str(out), "--emotion", "happy,neutral", "--view", "front", "--size", str(SIZE),
                                  "--shard-bytes", "1MB", "-o", str(tmp_path / "a"), "--verify", "--quiet"])
    assert r.exit_code == 0, r.output
    index = read_index(tmp_path / "a")
    want = clips[clips["emotion"].isin(["happy", "neutral"]) & (clips["view"] == "front")]
    assert sorted(index["take_id"]) == sorted(want["take_id"]) and "(verified)" in r.output
    subset = tmp_path / "subset.parquet"
    write_table(pa.Table.from_pandas(clips[clips["actor"] == "W009"], preserve_index=False), subset)
    r = CliRunner().invoke(main, ["shard", str(out), "--select", str(subset), "--size", str(SIZE), "-o", str(tmp_path / "b"), "--quiet"])
    assert r.exit_code == 0, r.output
    assert set(read_index(tmp_path / "b")["actor"]) == {"W009"}
    r = CliRunner().invoke(main, ["shard", str(out), "--actor", "M999", "-o", str(tmp_path / "c"), "--quiet"])
    assert r.exit_code != 0 and "no clips selected" in r.output


def test_frames_are_written_a_clip_at_a_time_not_through_a_mapping_of_the_whole_shard(prepared, tmp_path, monkeypatch):
    """A mapping of the whole frames file holds every page written in the worker's resident memory (a 1 GB shard:
    1 GB); each clip's rows are mapped, filled and unmapped instead. The shard is the same."""
    out, clips = prepared
    written = []
    real = np.memmap

    def recording(filename, dtype=np.uint8, mode="r+", offset=0, shape=None, order="C"):
        if mode in ("r+", "w+") and str(filename).endswith("frames.npy"):
            written.append(shape[0])
        return real(filename, dtype=dtype, mode=mode, offset=offset, shape=shape, order=order)

    monkeypatch.setattr(np, "memmap", recording)
    build_shards(out, tmp_path / "one", ShardConfig(size=SIZE, shard_bytes=10 ** 9))
    meta = read_meta(tmp_path / "one")
    assert len(meta["shards"]) == 1 and meta["n_frames"] == clips["n_frames"].sum()
    # the file is allocated whole once (nothing written through that map), then every write is one clip's rows
    assert written[0] == meta["n_frames"] and sorted(written[1:]) == sorted(clips["n_frames"])
    monkeypatch.undo()
    index = read_index(tmp_path / "one")
    for row in clips.to_dict("records"):
        r = index[(index["take_id"] == row["take_id"]) & (index["view"] == row["view"])].iloc[0]
        got = np.load(tmp_path / "one" / "shard-00000" / "frames.npy", mmap_mode="r")[r["offset"]:r["offset"] + r["length"]]
        np.testing.assert_array_equal(got, expected_clip(out, row)["frames"])
