"""Each manifests/*.md lists exactly the columns (name and type) of the Parquet table it documents and the arrays
(key, dtype, shape) of the .npz files, checked on a fresh `prepare` of one take and on a synthetic corpus's truth."""
from __future__ import annotations

import re
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from meadkit.config import load_pipeline
from meadkit.features import FEATURE_SETS, FeaturesConfig
from meadkit.prepare import run_prepare
from meadkit.take import STAGES

DOCS = Path(__file__).resolve().parent.parent / "manifests"
pytestmark = pytest.mark.slow


@pytest.fixture(scope="module")
def out(tiny_corpus, tmp_path_factory):
    """OUT of a full prepare (shards included) of one neutral take of the tiny corpus."""
    raw, _ = tiny_corpus
    out = tmp_path_factory.mktemp("docs") / "out"
    summary = run_prepare(raw, out, load_pipeline(), progress=False, actor=["M003"], emotion=["neutral"])
    assert summary.takes_total == 1 and "not written" not in summary.manifests["shards"]
    return out


def doc_table(page: str, heading: str) -> list[dict[str, str]]:
    """The rows (header cell -> text) of the first table under the `## ` heading of `page` that contains `heading`."""
    sections = re.split(r"^## ", (DOCS / page).read_text(), flags=re.M)
    (section,) = [s for s in sections if heading in s.splitlines()[0]]
    lines = [line for line in section.splitlines() if line.startswith("|")]
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    return [dict(zip(header, (c.strip() for c in re.split(r"(?<!\\)\|", line.strip("|"))))) for line in lines[2:]]


def documented_columns(page: str, heading: str) -> dict[str, str]:
    """{column: type} of a column table: the first cell's backticked names, the second's types (one per name,
    `int32 x4` for four, or one type for all the names)."""
    columns = {}
    for row in doc_table(page, heading):
        names = re.findall(r"`([^`]+)`", row["column"])
        types = [t for part in row["type"].split(", ") for t in _repeat(part)]
        types = types * len(names) if len(types) == 1 else types
        assert len(types) == len(names), f"{page}: types {row['type']!r} do not fit columns {names}"
        columns.update(zip(names, types))
    return columns


def _repeat(part: str) -> list[str]:
    m = re.fullmatch(r"(\S+) x(\d+)", part.strip())
    return [m.group(1)] * int(m.group(2)) if m else [part.strip()]


def doc_type(t: pa.DataType) -> str:
    """An Arrow type as the docs write it (float32 for Arrow's `float`, list<string>, ...)."""
    if pa.types.is_list(t):
        return f"list<{doc_type(t.value_type)}>"
    return {"float": "float32", "double": "float64"}.get(str(t), str(t))


def written_columns(path: Path) -> dict[str, str]:
    return {f.name: doc_type(f.type) for f in pq.read_schema(path)}


@pytest.mark.parametrize("page, heading, path", [
    ("recordings.md", "Columns", "manifests/recordings.parquet"),
    ("sync.md", "Columns", "manifests/sync.parquet"),
    ("clips.md", "clips.parquet", "manifests/clips.parquet"),
    ("clips.md", "status.parquet", "manifests/status.parquet"),
    ("shards.md", "index.parquet", "shards/index.parquet"),
])
def test_each_written_manifest_is_documented_exactly(out, page, heading, path):
    assert documented_columns(page, heading) == written_columns(out / path)


def test_the_synthetic_truth_is_documented_exactly(tiny_corpus):
    _, truth = tiny_corpus
    assert documented_columns("synth_truth.md", "Columns") == written_columns(truth)


@pytest.mark.parametrize("page, stage", [("faces.md", "faces"), ("features.md", "features")])
def test_a_stage_page_documents_the_clip_columns_the_stage_fills(out, page, stage):
    written = written_columns(out / "manifests" / "clips.parquet")
    documented = documented_columns(page, "clips.parquet")
    (adds,) = [s.adds for s in STAGES if s.name == stage]
    assert set(documented) == set(adds) and {c: written[c] for c in documented} == documented


def documented_arrays(page: str, heading: str) -> dict[str, tuple[str, tuple]]:
    """{array: (dtype, shape)} of an array table; a shape is a tuple of ints and names (T = frames)."""
    arrays = {}
    for row in doc_table(page, heading):
        (name,) = re.findall(r"`([^`]+)`", row["array"])
        text = row.get("shape, dtype") or f"{row['shape']} {row['dtype']}"
        shape, dtype = re.fullmatch(r"\(([^)]*)\)\s+(\w+)", text).groups()
        arrays[name] = (dtype, tuple(int(d) if d.strip().isdigit() else d.strip() for d in shape.split(",") if d.strip()))
    return arrays


def _fits(shape: tuple, documented: tuple) -> bool:
    return len(shape) == len(documented) and all(isinstance(d, str) or d == n for n, d in zip(shape, documented))


@pytest.mark.parametrize("page, heading, pattern, not_default", [
    ("faces.md", "Files", "clips/*/*/*.faces.npz", set()),
    # the feature sets the default pipeline does not compute are documented but not written here
    ("features.md", "features.npz", "clips/*/*/features.npz", set(FEATURE_SETS) - set(FeaturesConfig().sets)),
])
def test_each_written_array_file_is_documented_exactly(out, page, heading, pattern, not_default):
    documented, paths = documented_arrays(page, heading), sorted(out.glob(pattern))
    assert paths
    for path in paths:
        with np.load(path, allow_pickle=False) as z:
            written = {k: (str(z[k].dtype), z[k].shape) for k in z.files}
        assert set(written) == set(documented) - not_default, path
        for k, (dtype, shape) in written.items():
            assert dtype == documented[k][0] and _fits(shape, documented[k][1]), (path.name, k, dtype, shape)
