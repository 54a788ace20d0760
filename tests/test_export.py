"""The WebDataset export, read back with the real `webdataset` library and checked against the prepared files."""
from __future__ import annotations

import json
import tarfile

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import soundfile as sf
import torch
import webdataset as wds

from fakes import make_prepared
from meadkit.export import ExportConfig, ExportError, export_hf, export_webdataset, split_urls
from meadkit.manifest import read_table, write_table


def _ok_clips(out):
    clips = read_table(out / "manifests" / "clips.parquet")
    return clips[clips.status == "ok"].set_index(clips[clips.status == "ok"].take_id + "_" + clips[clips.status == "ok"].view)


def _read(urls, **kw) -> dict:
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False, **kw).decode()}


def test_every_sample_equals_the_prepared_files_and_each_shard_holds_one_split(prepared, tmp_path):
    out, _ = prepared
    clips = _ok_clips(out)
    dest = tmp_path / "wds"
    summary = export_webdataset(out, dest, ExportConfig(shard_samples=2))
    meta = json.loads((dest / "meta.json").read_text())
    assert summary.samples == meta["samples"] == len(clips)
    seen = {}
    for split, names in meta["splits"].items():
        got = _read(split_urls(dest, split))
        assert {s["json"]["split"] for s in got.values()} == {split} and all(len(_read([str(dest / n)])) <= 2 for n in names)
        seen |= got
    assert set(seen) == set(clips.index)
    for key, s in seen.items():
        row = clips.loc[key]
        assert s["mp4"] == (out / row.crop_video).read_bytes()
        with np.load(out / row.faces_npz) as faces, np.load(out / row.features_npz) as feats:
            want = dict(faces) | dict(feats)
        assert set(feats) == {*row.feature_sets.split(","), "padded"}
        assert set(s["npz"]) == set(want)
        for name, array in want.items():
            assert s["npz"][name].dtype == array.dtype and np.array_equal(s["npz"][name], array, equal_nan=True), name
        labels = {c: s["json"][c] for c in ("take_id", "actor", "gender", "emotion", "level", "take", "view", "split",
                                             "n_frames", "fps_num", "fps_den") if c in row.index}  # the fake has no fps
        assert labels == {c: (row[c].item() if hasattr(row[c], "item") else row[c]) for c in labels}
    index = read_table(dest / "index.parquet")
    assert sorted(index.key) == sorted(clips.index) and set(index.shard) == {n for v in meta["splits"].values() for n in v}


def test_split_by_node_and_worker_give_every_sample_once(prepared, tmp_path):
    out, _ = prepared
    dest = tmp_path / "wds"
    export_webdataset(out, dest, ExportConfig(shard_samples=1))
    urls = sorted(str(p) for p in dest.glob("mead-*.tar"))
    pipeline = (wds.WebDataset(urls, shardshuffle=False, nodesplitter=wds.split_by_node, workersplitter=wds.split_by_worker)
                .decode().to_tuple("__key__"))
    keys = [k for (k,) in torch.utils.data.DataLoader(pipeline, batch_size=None, num_workers=2)]
    assert sorted(keys) == sorted(_ok_clips(out).index)


def test_shards_are_bounded_and_a_rerun_keeps_finished_ones_byte_for_byte(prepared, tmp_path):
    out, _ = prepared
    dest = tmp_path / "wds"
    sizes = [sum((out / p).stat().st_size for p in files) for files in _ok_clips(out)[["crop_video", "faces_npz", "features_npz"]].values]
    bound = int(2.5 * max(sizes)) + 20 * 512  # about two samples a shard
    first = export_webdataset(out, dest, ExportConfig(shard_bytes=bound))
    shards = sorted(dest.glob("mead-*.tar"))
    assert first.shards_written == len(shards) > 2 and all(p.stat().st_size <= bound for p in shards)
    before = {p.name: p.read_bytes() for p in shards}
    shards[1].unlink()  # as if the run had been killed while writing it
    again = export_webdataset(out, dest, ExportConfig(shard_bytes=bound))
    assert (again.shards_kept, again.shards_written) == (len(shards) - 1, 1)
    assert {p.name: p.read_bytes() for p in sorted(dest.glob("mead-*.tar"))} == before
    assert export_webdataset(out, dest, ExportConfig(shard_bytes=bound)).shards_kept == len(shards)  # sizes as planned


def test_an_export_made_later_has_the_same_bytes(prepared, tmp_path, monkeypatch):
    """No clock in a shard (its npz members are the prepared files' own bytes, its tar headers carry time 0): a
    shard rewritten on resume equals the first one."""
    import time

    out, _ = prepared
    export_webdataset(out, tmp_path / "a")
    monkeypatch.setattr(time, "time", lambda: 2e9)  # 2033
    export_webdataset(out, tmp_path / "b")
    names = sorted(p.name for p in (tmp_path / "a").glob("mead-*.tar"))
    assert names and all((tmp_path / "a" / n).read_bytes() == (tmp_path / "b" / n).read_bytes() for n in names)


def test_a_shard_is_the_tar_that_tarfile_writes_of_its_members(prepared, tmp_path):
    """The member headers are built directly (not by tarfile, for speed): the shard equals, byte for byte, the ustar
    tar that tarfile itself writes of the same members (mode 0444, owner 0, time 0), long names included."""
    import io

    from meadkit.export import _ustar_header

    out, _ = prepared
    export_webdataset(out, tmp_path / "wds")
    for shard in sorted((tmp_path / "wds").glob("mead-*.tar")):
        with tarfile.open(shard) as tar:
            members = [(m.name, tar.extractfile(m).read()) for m in tar]
        again = io.BytesIO()
        with tarfile.open(fileobj=again, mode="w", format=tarfile.USTAR_FORMAT) as tar:
            for name, data in members:
                info = tarfile.TarInfo(name)
                info.size, info.mode, info.mtime = len(data), 0o444, 0
                tar.addfile(info, io.BytesIO(data))
        assert len(members) >= 3 and again.getvalue() == shard.read_bytes()
    for name, size in (("x" * 100, 5), ("p" * 120 + "/x.mp4", 7), ("é.json", 8 ** 11 - 1)):  # prefix field, UTF-8, 11 digits
        info = tarfile.TarInfo(name)
        info.size, info.mode, info.mtime = size, 0o444, 0
        assert _ustar_header(name, size) == info.tobuf(tarfile.USTAR_FORMAT, "utf-8", "surrogateescape"), name


def test_a_destination_holding_other_data_is_refused_unless_overwritten(prepared, tmp_path):
    out, _ = prepared
    dest = tmp_path / "wds"
    dest.mkdir()
    (dest / "notes.txt").write_text("mine")
    with pytest.raises(ExportError, match="holds other data"):
        export_webdataset(out, dest)
    export_webdataset(out, dest, overwrite=True)
    assert (dest / "notes.txt").read_text() == "mine"  # --overwrite replaces an export, never other files
    with pytest.raises(ExportError, match="another selection"):
        export_webdataset(out, dest, ExportConfig(shard_samples=1))
    with pytest.raises(ExportError, match="no finished clip"):
        export_webdataset(out, tmp_path / "none", actor=["M099"])


def test_the_hf_export_loads_with_datasets_and_equals_the_prepared_files(prepared, tmp_path, monkeypatch):
    from click.testing import CliRunner

    from meadkit.cli import main

    monkeypatch.setenv("HF_DATASETS_OFFLINE", "1")
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr("meadkit.export.HF_ROW_GROUP", 2)  # several row groups per split file
    import datasets

    out, _ = prepared
    clips = _ok_clips(out)
    dest = tmp_path / "hf"
    said = CliRunner().invoke(main, ["export", str(out), "--format", "hf", "-o", str(dest)])
    assert said.exit_code == 0, said.output
    meta = json.loads((dest / "meta.json").read_text())
    assert set(meta["splits"]) == set(clips.split)
    loaded = datasets.load_dataset("parquet", data_files={s: [str(dest / p) for p in ps] for s, ps in meta["splits"].items()},
                                   cache_dir=str(tmp_path / "cache"))
    assert sum(len(loaded[s]) for s in loaded) == len(clips)
    for split in loaded:
        for r in loaded[split]:
            row = clips.loc[r["key"]]
            assert r["split"] == split == row.split and (r["take_id"], r["view"], r["level"]) == (row.take_id, row.view, row.level)
            assert r["video"] == (out / row.crop_video).read_bytes()
            with np.load(out / row.faces_npz) as faces, np.load(out / row.features_npz) as feats:
                for name in ("landmarks_src", "landmarks_crop", "valid", "score", "transform"):
                    assert np.array_equal(np.asarray(r[name], faces[name].dtype), faces[name], equal_nan=True), name
                for name in row.feature_sets.split(","):
                    assert np.array_equal(np.asarray(r[name], np.float32), feats[name]), name
                assert np.array_equal(np.asarray(r["padded"]), feats["padded"])


@pytest.fixture(scope="module")
def with_audio(tmp_path_factory):
    """(OUT, clips) of the fake prepared folder where one take (both its views) has audio.wav, the others none."""
    out = tmp_path_factory.mktemp("with_audio")
    clips = make_prepared(out)
    take, actor = clips.take_id.iloc[0], clips.actor.iloc[0]
    wav = f"clips/{actor}/{take}/audio.wav"
    sf.write(str(out / wav), (np.sin(np.arange(8000) / 7) * 8000).astype(np.int16), 16000, subtype="PCM_16")
    mine = clips.take_id == take
    clips = clips.assign(audio_wav=np.where(mine, wav, None), audio_rate=pd.array(np.where(mine, 16000, None), "Int32"))
    write_table(pa.Table.from_pandas(clips, preserve_index=False), out / "manifests" / "clips.parquet")
    return out, _ok_clips(out)


def test_a_sample_carries_its_take_wav_where_prepared(with_audio, tmp_path):
    out, clips = with_audio
    dest = tmp_path / "wds"
    export_webdataset(out, dest)
    assert json.loads((dest / "meta.json").read_text())["members"] == ["mp4", "npz", "json", "wav"]
    got = _read(sorted(str(p) for p in dest.glob("mead-*.tar")))
    assert set(got) == set(clips.index)
    for key, s in got.items():
        rel = clips.loc[key, "audio_wav"]
        assert s.get("wav") == ((out / rel).read_bytes() if isinstance(rel, str) else None), key
    assert sum("wav" in s for s in got.values()) == clips.audio_wav.notna().sum() == 2
    assert export_webdataset(out, dest).shards_written == 0  # the wav members' sizes planned exactly too


def test_the_hf_rows_carry_the_wav_bytes_or_null(with_audio, tmp_path):
    out, clips = with_audio
    dest = tmp_path / "hf"
    export_hf(out, dest)
    rows = [r for p in sorted(dest.glob("data/*.parquet")) for r in pq.read_table(p).to_pylist()]
    assert len(rows) == len(clips)
    for r in rows:
        rel = clips.loc[r["key"], "audio_wav"]
        assert r["audio"] == ((out / rel).read_bytes() if isinstance(rel, str) else None), r["key"]


def test_a_sample_npz_holds_every_feature_set(tmp_path):
    """Clips prepared with mfcc28 and mel80: each sample's npz carries both sets and padded, as in features.npz."""
    from fakes import make_prepared

    out = tmp_path / "out"
    make_prepared(out, sets=("mfcc28", "mel80"))
    export_webdataset(out, tmp_path / "wds")
    got = _read(split_urls(tmp_path / "wds", "train"))
    assert got
    for key, s in got.items():
        row = _ok_clips(out).loc[key]
        assert s["json"]["feature_sets"] == "mfcc28,mel80"
        with np.load(out / row.features_npz) as feats:
            for name in ("mfcc28", "mel80", "padded"):
                assert np.array_equal(s["npz"][name], feats[name]), name


def test_without_kernel_copies_the_shards_are_the_same_bytes(prepared, tmp_path, monkeypatch):
    """Where copy_file_range is missing (macOS) or refused (another file system), the member data is read and written:
    the same shards, byte for byte; and the merged npz is a sound zip (every member's CRC checks)."""
    import os
    import zipfile

    out, _ = prepared
    export_webdataset(out, tmp_path / "kernel")
    monkeypatch.delattr(os, "copy_file_range")
    export_webdataset(out, tmp_path / "python")
    names = sorted(p.name for p in (tmp_path / "kernel").glob("mead-*.tar"))
    assert names and all((tmp_path / "kernel" / n).read_bytes() == (tmp_path / "python" / n).read_bytes() for n in names)
    with tarfile.open(tmp_path / "python" / names[0]) as tar:
        npz = next(m for m in tar.getmembers() if m.name.endswith(".npz"))
        with zipfile.ZipFile(tar.extractfile(npz)) as z:
            assert z.testzip() is None and len(z.namelist()) == len(set(z.namelist())) > 5


def test_an_unreadable_prepared_file_is_one_error_naming_its_clip(tmp_path):
    """A clip whose faces.npz is corrupt (or whose crop video is gone): ExportError naming the clip, no shard."""
    out = tmp_path / "out"
    make_prepared(out)
    clips = _ok_clips(out)
    (out / clips.iloc[0].faces_npz).write_bytes(b"not a zip")
    with pytest.raises(ExportError, match=f"{clips.iloc[0].take_id}/{clips.iloc[0].view}: cannot read"):
        export_webdataset(out, tmp_path / "wds")
    assert not (tmp_path / "wds" / "meta.json").exists()
    for shard in (tmp_path / "wds").glob("mead-*.tar"):  # a shard written alongside is whole, and not the bad clip's
        with tarfile.open(shard) as tar:
            assert not any(m.name.startswith(f"{clips.iloc[0].take_id}_{clips.iloc[0].view}.") for m in tar)
    (out / clips.iloc[1].crop_video).unlink()
    with pytest.raises(ExportError, match=f"{clips.iloc[1].take_id}/{clips.iloc[1].view}: cannot read"):
        export_webdataset(out, tmp_path / "wds2")
