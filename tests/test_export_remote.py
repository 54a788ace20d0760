"""Exports to object storage: a real S3 API on loopback (moto's server) through s3fs, read back with `webdataset`
streaming from it and with Hugging Face `datasets`; resume after a killed export; credentials never written."""
from __future__ import annotations

import json
import logging
import socket
import uuid

import numpy as np
import pyarrow.parquet as pq
import pytest
import webdataset as wds
from click.testing import CliRunner

from meadkit.cli import main
from meadkit.export import ExportConfig, export_webdataset, split_urls, use_fsspec

s3fs = pytest.importorskip("s3fs")
moto_server = pytest.importorskip("moto.server")
SECRET = "meadkit-test-secret-" + uuid.uuid4().hex
BUCKET = "mead-bucket"


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _aws_env(mp: pytest.MonkeyPatch, endpoint: str) -> None:
    """Fake credentials and a custom endpoint, as a user sets them (s3fs reads them; a fresh filesystem instance)."""
    for k, v in {"AWS_ACCESS_KEY_ID": "meadkit-test-key", "AWS_SECRET_ACCESS_KEY": SECRET,
                 "AWS_DEFAULT_REGION": "us-east-1", "AWS_ENDPOINT_URL": endpoint}.items():
        mp.setenv(k, v)
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture(scope="module")
def s3():
    """(s3fs filesystem, endpoint) of a moto S3 server on 127.0.0.1 holding BUCKET; stopped after the module."""
    logging.getLogger("werkzeug").setLevel(logging.ERROR)
    port = _free_port()
    server = moto_server.ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    endpoint = f"http://127.0.0.1:{port}"
    with pytest.MonkeyPatch.context() as mp:
        _aws_env(mp, endpoint)
        fs = s3fs.S3FileSystem()
        fs.mkdir(BUCKET)
        yield fs, endpoint
    server.stop()
    s3fs.S3FileSystem.clear_instance_cache()


@pytest.fixture
def prefix(s3):
    """A fresh `s3://BUCKET/<name>` for one test."""
    return f"s3://{BUCKET}/mead-{uuid.uuid4().hex[:8]}"


def _objects(fs, url: str) -> dict[str, bytes]:
    """Every object under `url`, name relative to it -> bytes."""
    root = url.removeprefix("s3://")
    fs.invalidate_cache()
    return {p[len(root) + 1:]: fs.cat_file(p) for p in fs.find(root)}


def _read(urls) -> dict:
    return {s["__key__"]: s for s in wds.WebDataset(urls, shardshuffle=False).decode()}


def test_webdataset_streams_the_s3_export_and_it_equals_the_local_one(prepared, s3, prefix, tmp_path):
    fs, _ = s3
    out, _ = prepared
    config = ExportConfig(shard_samples=2)
    export_webdataset(out, tmp_path / "wds", config)
    summary = export_webdataset(out, prefix, config)
    local = {p.name: p.read_bytes() for p in (tmp_path / "wds").glob("mead-*.tar")}
    objects = _objects(fs, prefix)
    assert {k: v for k, v in objects.items() if k.startswith("mead-")} == local  # the same bytes as a local export
    assert set(objects) == set(local) | {"index.parquet", "meta.json", "export.json"}  # no temporary object left
    assert summary.shards_written == len(local) and summary.bytes == sum(map(len, local.values()))
    assert all(SECRET.encode() not in data and b"meadkit-test-key" not in data for data in objects.values())
    use_fsspec()
    meta = json.loads(objects["meta.json"])
    for split in meta["splits"]:
        urls = split_urls(prefix, split)
        assert all(u.startswith(f"s3://{BUCKET}/") for u in urls)
        got, want = _read(urls), _read(split_urls(tmp_path / "wds", split))
        assert set(got) == set(want) and got
        for key, s in got.items():
            assert s["mp4"] == want[key]["mp4"] and s["json"] == want[key]["json"] == {**s["json"], "split": split}
            assert set(s["npz"]) == set(want[key]["npz"])
            assert all(np.array_equal(s["npz"][n], want[key]["npz"][n], equal_nan=True) for n in s["npz"])
    with fs.open(prefix + "/index.parquet") as f:
        assert pq.read_table(f).equals(pq.read_table(tmp_path / "wds" / "index.parquet"))


def test_a_killed_s3_export_leaves_no_partial_shard_and_resumes_byte_for_byte(prepared, s3, prefix, tmp_path, monkeypatch):
    fs, _ = s3
    out, _ = prepared
    config = ExportConfig(shard_samples=2)
    export_webdataset(out, tmp_path / "wds", config)
    local = {p.name: p.read_bytes() for p in (tmp_path / "wds").glob("mead-*.tar")}
    import meadkit.export

    real, calls = meadkit.export._write_tar, []

    def dies_in_the_second_shard(path, samples):
        calls.append(path)
        if len(calls) == 2:
            with open(path, "wb") as f:
                f.write(b"half a tar")  # as if killed mid-shard
            raise KeyboardInterrupt
        real(path, samples)

    monkeypatch.setattr(meadkit.export, "_write_tar", dies_in_the_second_shard)
    with pytest.raises(KeyboardInterrupt):
        export_webdataset(out, prefix, config)
    left = {k: v for k, v in _objects(fs, prefix).items() if k.startswith("mead-")}
    assert "meta.json" not in _objects(fs, prefix)  # unfinished
    assert 1 <= len(left) < len(local) and all(local[k] == v for k, v in left.items())  # whole shards only, not all
    monkeypatch.setattr(meadkit.export, "_write_tar", real)
    cut = next(k for k in sorted(local) if k not in left)
    fs.pipe_file(f"{prefix.removeprefix('s3://')}/{cut}", local[cut][:-10240])  # cut short elsewhere
    again = export_webdataset(out, prefix, config)
    assert (again.shards_kept, again.shards_written) == (len(left), len(local) - len(left))
    objects = _objects(fs, prefix)
    assert {k: v for k, v in objects.items() if k.startswith("mead-")} == local
    assert export_webdataset(out, prefix, config).shards_kept == len(local)


def test_the_hf_export_to_s3_loads_with_datasets(prepared, s3, prefix, tmp_path, monkeypatch):
    fs, endpoint = s3
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")  # the hub is never asked; datasets' offline mode also refuses s3 (loopback here)
    import datasets

    monkeypatch.setattr(datasets.config, "HF_HUB_OFFLINE", False)

    out, _ = prepared
    said = CliRunner().invoke(main, ["export", str(out), "--format", "hf", "-o", prefix])
    assert said.exit_code == 0, said.output
    assert SECRET not in said.output
    assert CliRunner().invoke(main, ["export", str(out), "--format", "hf", "-o", str(tmp_path / "hf")]).exit_code == 0
    objects = _objects(fs, prefix)
    assert all(SECRET.encode() not in data for data in objects.values())
    meta = json.loads(objects["meta.json"])
    files = {s: [f"{prefix}/{p}" for p in ps] for s, ps in meta["splits"].items()}
    loaded = datasets.load_dataset("parquet", data_files=files, cache_dir=str(tmp_path / "cache"),
                                   storage_options={"client_kwargs": {"endpoint_url": endpoint}})
    for split, names in meta["splits"].items():
        want = pq.read_table(tmp_path / "hf" / names[0]).to_pylist()
        assert [dict(r) for r in loaded[split]] == want


@pytest.mark.slow  # s3fs retries the closed port for about 6 s
def test_a_bad_scheme_or_an_unreachable_endpoint_is_one_line(prepared, tmp_path, monkeypatch):
    out, _ = prepared
    said = CliRunner().invoke(main, ["export", str(out), "-o", "foo://x/y"])
    assert said.exit_code == 1 and "Traceback" not in said.output
    assert said.output.strip().splitlines() == ["Error: cannot open foo://x/y: Protocol not known: foo"]
    _aws_env(monkeypatch, f"http://127.0.0.1:{_free_port()}")  # nothing listens there
    said = CliRunner().invoke(main, ["export", str(out), "-o", f"s3://{BUCKET}/x"])
    s3fs.S3FileSystem.clear_instance_cache()
    lines = said.output.strip().splitlines()
    assert said.exit_code == 1 and len(lines) == 1 and lines[0].startswith(f"Error: cannot list s3://{BUCKET}/x: "), said.output
    assert "Could not connect" in lines[0] and SECRET not in said.output


def test_a_missing_bucket_is_one_line(prepared, s3):
    out, _ = prepared
    said = CliRunner().invoke(main, ["export", str(out), "-o", "s3://no-such-bucket/mead"])
    assert said.exit_code == 1 and said.output.startswith("Error: cannot write s3://no-such-bucket/mead: "), said.output
    assert len(said.output.strip().splitlines()) == 1 and SECRET not in said.output


def test_shard_and_prepare_refuse_a_remote_folder_and_say_to_use_export(prepared):
    out, _ = prepared
    for command in (["shard", str(out)], ["prepare", str(out)]):
        said = CliRunner().invoke(main, [*command, "-o", "s3://bucket/shards"])
        assert said.exit_code == 2 and "must be a local folder" in said.output and "meadkit export" in said.output
