"""Shared fixtures: tiny synthetic MEAD corpora with ground truth, built once per test session."""
from __future__ import annotations

import dataclasses

import pytest

from fakes import SIZE, make_prepared
from meadkit.corpus.synth import SynthConfig, synthesize
from meadkit.testing.tars import pack_tars
from meadkit.shards import ShardConfig, build_shards, frame_bytes

#: 2 actors x (neutral, happy 3, sad 3) x 1 take x 4 views, 480x270, ~2 s, clean.
TINY = SynthConfig(
    actors=2, emotions=("neutral", "happy", "sad"), levels=(3,), takes=1, seconds=2.0,
    views=("front", "left_30", "right_30", "top"), width=480, height=270, seed=7, voice="procedural",
)
#: As TINY plus angry, with every defect kind injected (actor 0 keeps one clean take).
TINY_DEFECTS = dataclasses.replace(TINY, emotions=("neutral", "happy", "sad", "angry"), defects=True)


def _build(tmp_path_factory, name: str, config: SynthConfig):
    raw = tmp_path_factory.mktemp(name) / "raw"
    truth = synthesize(raw, config)
    return raw, truth


@pytest.fixture(scope="session")
def tiny_corpus(tmp_path_factory):
    """(raw_dir, truth_path) of a tiny clean corpus in MEAD's folder layout."""
    return _build(tmp_path_factory, "tiny", TINY)


@pytest.fixture(scope="session")
def tiny_defects_corpus(tmp_path_factory):
    """(raw_dir, truth_path) of a tiny corpus with each MEAD defect kind injected once (folder layout)."""
    return _build(tmp_path_factory, "tiny_defects", TINY_DEFECTS)


@pytest.fixture(scope="session")
def tiny_tar_corpus(tiny_defects_corpus, tmp_path_factory):
    """(raw_dir, truth_path) of the defects corpus as per-actor tars (`M003/video.tar`, `W009_video.tar`),
    W009's video tar cut mid-member (`corrupt_tar`). Same bytes as `synthesize(tar=True)`, packed
    from the folder corpus so the faces are rendered once."""
    raw, truth = tiny_defects_corpus
    out = tmp_path_factory.mktemp("tiny_tar") / "raw"
    return out, pack_tars(raw, truth, out, tar_naming="mixed", corrupt=True)


@pytest.fixture(scope="session")
def prepared(tmp_path_factory):
    """(OUT, clips DataFrame) of a tiny hand-made prepared folder (see tests/fakes.py)."""
    out = tmp_path_factory.mktemp("out")
    return out, make_prepared(out)


@pytest.fixture(scope="session")
def shard_set(prepared, tmp_path_factory):
    """Shards of the tiny prepared folder, bounded so that it takes several shards."""
    out, _ = prepared
    d = tmp_path_factory.mktemp("shards")
    build_shards(out, d, ShardConfig(size=SIZE, shard_bytes=50 * frame_bytes(SIZE)))
    return d
