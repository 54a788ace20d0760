"""ShardDataset: samples equal the prepared clip outputs, neutral references, filters, loaders, verification."""
from __future__ import annotations

import json
import logging
import os
import shutil

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from meadkit.corpus.names import PAPER_EMOTIONS, VIEWS, emotion_label
from meadkit.data import ShardDataset, balanced_sampler, collate_batch, make_loader
from meadkit.features import FeaturesConfig
from meadkit.shards import ShardError
from fakes import SIZE, expected_clip

MFCC_CONTEXT = FeaturesConfig().context


def _same(a: torch.Tensor, b: torch.Tensor, key: str) -> None:
    """Equal values, dtype and shape, NaN equal to NaN (a neutral frame without a face has NaN landmarks)."""
    torch.testing.assert_close(a, b, rtol=0, atol=0, equal_nan=True, msg=key)


def _window(mfcc: np.ndarray, i: int) -> np.ndarray:
    """The paper's window written out independently: pad 15 zero rows on each side, take rows [i, i+30)."""
    padded = np.concatenate([np.zeros((15, 28), np.float32), mfcc, np.zeros((15, 28), np.float32)])
    return padded[i : i + MFCC_CONTEXT]


@pytest.fixture(scope="module")
def expected(prepared):
    """Per (take_id, view): the expected arrays, from the prepared files themselves."""
    out, clips = prepared
    return {(r["take_id"], r["view"]): (r, expected_clip(out, r)) for r in clips.to_dict("records")}


def test_every_sample_equals_the_prepared_clip_outputs(shard_set, expected):
    ds = ShardDataset(shard_set)
    assert len(ds) == sum(r["n_frames"] for r, _ in expected.values())
    batch = ds.batch(list(range(len(ds))))
    seen = 0
    for c, clip in ds.clips.iterrows():
        row, exp = expected[(clip["take_id"], clip["view"])]
        for f in range(row["n_frames"]):
            j = seen + f
            np.testing.assert_array_equal(batch["frame"][j].numpy(), exp["frames"][f])
            np.testing.assert_array_equal(batch["landmarks"][j].numpy(), exp["landmarks"][f])
            np.testing.assert_array_equal(batch["mfcc"][j].numpy(), _window(exp["mfcc28"], f))
            assert batch["valid"][j] == exp["valid"][f] and batch["padded"][j] == exp["padded"][f]
            assert batch["emotion"][j] == emotion_label(row["emotion"]) and batch["level"][j] == row["level"] - 1
            assert ds.vocab["actors"][batch["actor"][j]] == row["actor"] and VIEWS[batch["view"][j]] == row["view"]
        seen += row["n_frames"]
    # the per-sample path gives the same values and types
    for i in (0, 5, len(ds) - 1):
        one = ds[i]
        assert one["frame"].shape == (3, SIZE, SIZE) and one["frame"].dtype == torch.uint8
        assert one["mfcc"].shape == (MFCC_CONTEXT, 28) and one["mfcc"].dtype == torch.float32
        assert one["emotion"].dtype == torch.int64 and one["emotion"].shape == ()
        for k, v in one.items():
            _same(v, batch[k][i], k)
    with pytest.raises(IndexError):
        ds[len(ds)]


def test_neutral_is_a_frame_of_a_neutral_clip_of_the_same_split_actor_and_view(shard_set, expected, caplog):
    """Never of another split (a train sample showing a test take's face would leak it): M003's sad take is test
    and its neutral train, W009's neutral is val and its angry train, W009/left_30 has no neutral at all."""
    with caplog.at_level(logging.WARNING, logger="meadkit.data"):
        ds = ShardDataset(shard_set, seed=3)
    lacking = [r.getMessage() for r in caplog.records if "no neutral clip" in r.getMessage()]
    assert len(lacking) == 1 and "3 split/actor/view group(s)" in lacking[0]
    assert all(g in lacking[0] for g in ("test/M003/front", "train/W009/front", "train/W009/left_30"))
    neutral = {(r["split"], r["actor"], r["view"]): e for r, e in expected.values() if r["emotion"] == "neutral"}
    batch = ds.batch(list(range(len(ds))))
    seen, picked = 0, set()
    for _, clip in ds.clips.iterrows():
        row, exp = expected[(clip["take_id"], clip["view"])]
        for f in range(row["n_frames"]):
            got, got_lm = batch["neutral"][seen + f].numpy(), batch["neutral_landmarks"][seen + f].numpy()
            group = (row["split"], row["actor"], row["view"])
            if group not in neutral:  # no neutral clip in this group: the first frame of the sample's own clip
                np.testing.assert_array_equal(got, exp["frames"][0])
            pool = neutral.get(group, exp)
            k = [m for m in range(len(pool["frames"])) if np.array_equal(pool["frames"][m], got)]
            assert k, f"neutral of {row['take_id']}/{row['view']} frame {f} is not a frame of its neutral clip"
            picked.add((row["actor"], row["view"], k[0]))
            # and its landmarks are that frame's (NaN where it has no face)
            assert any(np.array_equal(got_lm, pool["landmarks"][m] if pool["valid"][m] else np.full((68, 2), np.nan),
                                      equal_nan=True) for m in k)
        seen += row["n_frames"]
    assert len(picked) > 10  # references are spread over the neutral clip, not one fixed frame
    again = ShardDataset(shard_set, seed=3).batch(list(range(len(ds))))["neutral"]
    other = ShardDataset(shard_set, seed=4).batch(list(range(len(ds))))["neutral"]
    assert torch.equal(again, batch["neutral"]) and not torch.equal(other, batch["neutral"])


def test_filters_select_clips(shard_set, expected):
    ds = ShardDataset(shard_set, split="train", emotions=["happy", "angry"], levels=[3], views=["front"])
    assert list(ds.clips["take_id"]) == ["M003_happy_3_001"] and len(ds) == 24
    ds = ShardDataset(shard_set, actors=["W009"])
    assert set(ds.clips["actor"]) == {"W009"} and len(ds) == 22 * 2 + 16
    with pytest.raises(ShardError, match="holds 32px frames, not 64px"):
        ShardDataset(shard_set, size=64)


def test_size_checked_at_open_and_checksums_on_demand(shard_set, tmp_path):
    d = tmp_path / "s"
    shutil.copytree(shard_set, d)
    f = d / "shard-00000" / "frames.npy"
    data = bytearray(f.read_bytes())
    data[200] ^= 0xFF
    f.write_bytes(bytes(data))
    ShardDataset(d)  # same size: the cheap check passes
    with pytest.raises(ShardError, match="checksum mismatch"):
        ShardDataset(d, verify="full")
    os.truncate(f, 1000)
    with pytest.raises(ShardError, match="truncated or altered"):
        ShardDataset(d)


def _all_batches(loader) -> dict[str, torch.Tensor]:
    batches = list(loader)
    return {k: torch.cat([b[k] for b in batches]) for k in batches[0]}


def test_dataloader_with_two_workers_matches_in_process_reads(shard_set):
    ds = ShardDataset(shard_set, seed=1)
    ref = ds.batch(list(range(len(ds))))
    got = _all_batches(make_loader(ds, batch_size=16, shuffle=False, num_workers=2))
    for k in ref:
        _same(got[k], ref[k], k)
    order = lambda: torch.cat([b["mfcc"][:, 15, 0] for b in make_loader(ds, batch_size=16, num_workers=2, seed=5)])  # noqa: E731
    first = order()
    assert torch.equal(first, order()) and not torch.equal(first, ref["mfcc"][:, 15, 0])
    assert torch.equal(torch.sort(first).values, torch.sort(ref["mfcc"][:, 15, 0]).values)


@pytest.mark.parametrize("workers", [0, 2])
def test_the_plain_torch_dataloader_gives_make_loaders_batches(shard_set, workers):
    """`DataLoader(ds, batch_size=B, shuffle=True, num_workers=N)` with torch's default collate: the same batches
    (keys, dtypes, values, order) as `make_loader` drawn from the same seed."""
    ds = ShardDataset(shard_set, seed=1)
    plain = list(DataLoader(ds, batch_size=16, shuffle=True, num_workers=workers,
                            generator=torch.Generator().manual_seed(5)))
    fast = list(make_loader(ds, batch_size=16, shuffle=True, num_workers=workers, seed=5))
    assert len(plain) == len(fast) == -(-len(ds) // 16)
    for a, b in zip(plain, fast):
        assert a.keys() == b.keys()
        for k in a:
            _same(a[k], b[k], k)


def test_loader_batches_are_private_copies_across_abandoned_and_repeated_epochs(shard_set):
    ds = ShardDataset(shard_set, seed=2)
    ref = ds.batch(list(range(len(ds))))
    dl = make_loader(ds, batch_size=8, shuffle=False, num_workers=2)  # 21 batches through 3 slots per worker
    it = iter(dl)
    next(it), next(it)
    del it  # abandoned mid-epoch: batches in flight are dropped
    for _ in range(2):
        got = _all_batches(dl)  # every batch of the epoch held at once: none may alias a reused slot
        for k in ref:
            _same(got[k], ref[k], k)
    for j, b in enumerate(dl):  # batches dropped as we go: slots are reused
        for k in ref:
            _same(b[k], ref[k][8 * j : 8 * j + 8], k)
    del b, got
    assert not dl.dataset._ring._held  # every slot was freed when its batch died
    plain = DataLoader(ds, batch_size=16, num_workers=2, collate_fn=collate_batch)  # fresh shared memory per batch
    got = _all_batches(plain)
    for k in ref:
        _same(got[k], ref[k], k)


@pytest.mark.slow
def test_dataloader_with_spawned_workers(shard_set):
    ds = ShardDataset(shard_set)
    ref = ds.batch(list(range(len(ds))))
    got = _all_batches(make_loader(ds, batch_size=32, shuffle=False, num_workers=2, multiprocessing_context="spawn"))
    for k in ref:
        _same(got[k], ref[k], k)


def test_balanced_sampler_evens_out_emotions(shard_set):
    ds = ShardDataset(shard_set)
    labels = ds.sample_emotions()
    drawn = labels[np.array(list(balanced_sampler(ds, seed=0, num_samples=20000)))]
    present = np.unique(labels)
    share = np.bincount(drawn, minlength=len(PAPER_EMOTIONS))[present] / len(drawn)
    assert np.allclose(share, 1 / len(present), atol=0.02)
    assert np.array_equal(drawn, labels[np.array(list(balanced_sampler(ds, seed=0, num_samples=20000)))])
    raw = np.bincount(labels)[present] / len(labels)
    assert raw.max() - raw.min() > 0.1  # the data itself is unbalanced, so the sampler did the evening out


def _rewritten(shard_set, d, mfcc=lambda a: a, pipeline=None):
    """A copy of `shard_set` in `d` whose mfcc28 arrays are `mfcc(array)` and whose meta.json records them (layout)
    and `pipeline` as the config that made it."""
    shutil.copytree(shard_set, d)
    meta = json.loads((d / "meta.json").read_text())
    for s in meta["shards"]:
        path = d / s["name"] / "mfcc28.npy"
        np.save(path, np.ascontiguousarray(mfcc(np.load(path))))
    meta["layout"]["mfcc28"]["per_frame_shape"] = list(np.load(d / meta["shards"][0]["name"] / "mfcc28.npy").shape[1:])
    meta["pipeline"] = pipeline
    (d / "meta.json").write_text(json.dumps(meta))
    return d


def test_the_mfcc_width_comes_from_the_shard_set(shard_set, tmp_path):
    """A set whose meta.json records 12 MFCC values per frame gives (30, 12) windows, the first 12 of each row."""
    ds = ShardDataset(shard_set)
    narrow = ShardDataset(_rewritten(shard_set, tmp_path / "narrow", lambda a: a[:, :12]), verify="none")
    assert ds.mfcc_shape == (30, 28) and narrow.mfcc_shape == (30, 12)
    idx = [0, 7, len(ds) - 1]
    wide, got = ds.batch(idx)["mfcc"], narrow.batch(idx)["mfcc"]
    assert got.shape == (3, 30, 12) and torch.equal(got, wide[..., :12])
    assert narrow[5]["mfcc"].shape == (30, 12)


def test_the_window_context_comes_from_the_recorded_pipeline(shard_set, tmp_path):
    made_with = "[features]\ncontext = 30\nnormalize_per_frame = true\n"
    assert ShardDataset(_rewritten(shard_set, tmp_path / "a", pipeline=made_with), verify="none").mfcc_shape == (30, 28)
    assert ShardDataset(_rewritten(shard_set, tmp_path / "c", pipeline="[features]\ncontext = 20\n"),
                        verify="none").mfcc_shape == (20, 28)
    with pytest.raises(ShardError, match="features.context = 0: must be >= 1"):
        ShardDataset(_rewritten(shard_set, tmp_path / "b", pipeline="[features]\ncontext = 0\n"), verify="none")


@pytest.fixture(scope="module")
def two_sets(tmp_path_factory):
    """(OUT, shard set) of a tiny prepared folder made with both feature sets (mfcc28 and mel80)."""
    from fakes import make_prepared
    from meadkit.shards import ShardConfig, build_shards

    out, d = tmp_path_factory.mktemp("out2"), tmp_path_factory.mktemp("shards2")
    make_prepared(out, sets=("mfcc28", "mel80"))
    build_shards(out, d, ShardConfig(size=SIZE))
    return out, d


def test_shards_and_samples_follow_the_feature_sets(two_sets, expected):
    """Each set is its own shard array (meta.json lists it with its width); a sample holds a window of each chosen
    set under its key (mfcc28 as `mfcc`), by default every set the shard set holds."""
    from meadkit.shards import read_meta

    out, d = two_sets
    meta = read_meta(d)
    assert meta["feature_sets"] == ["mfcc28", "mel80"]
    assert meta["layout"]["mfcc28"]["per_frame_shape"] == [28] and meta["layout"]["mel80"]["per_frame_shape"] == [80]
    assert {"mfcc28.npy", "mel80.npy"} <= set(meta["shards"][0]["files"])
    both, mel = ShardDataset(d), ShardDataset(d, features=("mel80",))
    assert both.window_shapes == {"mfcc": (30, 28), "mel80": (30, 80)} and mel.window_shapes == {"mel80": (30, 80)}
    assert mel.mfcc_shape is None and "mfcc" not in mel[0]
    idx = list(range(len(both)))
    got, only = both.batch(idx), mel.batch(idx)
    assert torch.equal(got["mel80"], only["mel80"]) and set(got) - set(only) == {"mfcc"}
    seen = 0
    for _, clip in both.clips.iterrows():
        row = next(r for r, _ in expected.values() if (r["take_id"], r["view"]) == (clip["take_id"], clip["view"]))
        with np.load(out / row["features_npz"]) as z:
            m, f = z["mel80"], z["mfcc28"]
        for i in range(row["n_frames"]):
            padded = np.concatenate([np.zeros((15, 80), np.float32), m, np.zeros((15, 80), np.float32)])
            np.testing.assert_array_equal(got["mel80"][seen + i].numpy(), padded[i : i + 30])
            np.testing.assert_array_equal(got["mfcc"][seen + i].numpy(), _window(f, i))
        seen += row["n_frames"]
    with pytest.raises(ShardError, match="holds the feature sets mfcc28, mel80; asked for mel40"):
        ShardDataset(d, features=("mel40",))
