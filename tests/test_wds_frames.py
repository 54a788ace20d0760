"""Per-frame training batches read from the WebDataset export (`meadkit.wds_frames`), and the RGB of decoded planes
(`meadkit.media.video.planes_rgb`) they are made of, checked against PyAV, the BT.601 formula and ShardDataset."""
from __future__ import annotations

from collections import Counter
from fractions import Fraction

import av
import numpy as np
import pytest
import torch

from meadkit.corpus.names import emotion_label
from meadkit.data import ShardDataset
from meadkit.export import ExportConfig, export_webdataset, split_urls
from meadkit.features import feature_window
from meadkit.manifest import read_table
from meadkit.media.sources import Source
from meadkit.media.video import Planes, VideoWriter, iter_planes, planes_rgb
from meadkit.wds_frames import frame_batches, yuv_to_rgb

W, H = 64, 48
#: How each test clip is written: VideoWriter's pixel format of its input and its encoding.
ENCODINGS = {"yuv420p": dict(pix_fmt="rgb24"), "yuvj420p": dict(pix_fmt="yuvj420p"),
             "yuvj444p": dict(pix_fmt="rgb24", encoding="mead")}


def _face_like(i: int) -> np.ndarray:
    """Skin-toned ramps that move with `i`, with a dark and a bright patch and a lip-coloured band."""
    yy, xx = np.mgrid[0:H, 0:W]
    img = np.stack([90 + xx + 2 * i, 60 + 2 * yy, 140 - xx // 2 + yy], -1)
    img[4:14, 4:20], img[4:14, 24:40], img[30:44, 8:56] = 0, 255, (170, 90, 80)
    return np.clip(img, 0, 255).astype(np.uint8)


def _write(path, pix_fmt: str, images) -> str:
    """An H.264 mp4 of RGB `images` decoding as `pix_fmt` (yuvj420p: fed as full-range I420 planes)."""
    with VideoWriter(str(path), Fraction(25), W, H, **ENCODINGS[pix_fmt]) as w:
        for img in images:
            if pix_fmt == "yuvj420p":
                img = av.VideoFrame.from_ndarray(img, format="rgb24").reformat(format="yuvj420p").to_ndarray()
            w.write(img)
    with av.open(str(path)) as c:
        assert c.streams.video[0].codec_context.pix_fmt == pix_fmt
    return str(path)


def _bt601(p: Planes) -> np.ndarray:
    """The BT.601 formula in float64 at the planes' range (chroma repeated over 2x2 blocks), rounded."""
    y, cb, cr = (np.asarray(c, np.float64) for c in (p.y, p.u, p.v))
    if cb.shape != y.shape:
        cb, cr = (c.repeat(2, 0).repeat(2, 1) for c in (cb, cr))
    cb, cr = cb - 128, cr - 128
    if not p.full_range:
        y, cb, cr = (y - 16) * 255 / 219, cb * 255 / 224, cr * 255 / 224
    rgb = np.stack([y + 1.402 * cr, y - 0.344136 * cb - 0.714136 * cr, y + 1.772 * cb], -1)
    return np.clip(np.rint(rgb), 0, 255)


@pytest.mark.parametrize("pix_fmt, vs_pyav", [("yuvj420p", 2), ("yuvj444p", 2), ("yuv420p", 3)])
def test_rgb_of_planes_equals_pyav_and_the_bt601_formula(tmp_path, pix_fmt, vs_pyav):
    """Full range within 2 levels of PyAV's rgb24; video range within 3 (swscale's own tables run up to ~3 low
    there: its G of Y=88 Cb=151 Cr=138 is 64, the formula's 66.7); every range within 1 of the formula."""
    path = _write(tmp_path / f"{pix_fmt}.mp4", pix_fmt, [_face_like(i) for i in range(4)])
    with av.open(path) as c:
        pyav = [f.to_ndarray(format="rgb24").astype(int) for f in c.decode(video=0)]
    planes = [p for _, p in iter_planes(Source(path))]
    assert len(planes) == len(pyav) == 4 and {p.full_range for p in planes} == {pix_fmt.startswith("yuvj")}
    for p, want in zip(planes, pyav):
        got = planes_rgb(p).astype(int)
        assert np.abs(got - want).max() <= vs_pyav
        assert np.abs(got - _bt601(p)).max() <= 1


@pytest.mark.parametrize("pix_fmt", ["yuvj420p", "yuv420p", "yuvj444p"])
def test_rgb_of_yuv_tensors_equals_planes_rgb(tmp_path, pix_fmt):
    """`yuv_to_rgb` (torch, for a batch's planes where it lands) gives `planes_rgb`'s pixels within a level, at each
    frame's own range (a batch mixing full and video range frames)."""
    path = _write(tmp_path / f"{pix_fmt}.mp4", pix_fmt, [_face_like(i) for i in range(3)])
    planes = [p for _, p in iter_planes(Source(path))] * 2
    flags = [p.full_range if k < 3 else not p.full_range for k, p in enumerate(planes)]
    y, u, v = (torch.from_numpy(np.stack([getattr(p, c) for p in planes])) for c in "yuv")
    got = yuv_to_rgb(y, u, v, torch.tensor(flags)).numpy().astype(int)
    for k, (p, full) in enumerate(zip(planes, flags)):
        assert np.abs(got[k] - planes_rgb(Planes(p.y, p.u, p.v, full)).astype(int)).max() <= 1, k


@pytest.mark.parametrize("pix_fmt", ["yuvj420p", "yuv420p", "yuvj444p"])
def test_black_white_and_greys_keep_their_levels(tmp_path, pix_fmt):
    """Flat black, white and two greys come back at their levels: full range read as video range would give the
    dark grey 19 and the light one 242, video range read as full range 43 and 208."""
    levels = (0, 255, 32, 224)
    path = _write(tmp_path / f"flat_{pix_fmt}.mp4", pix_fmt, [np.full((H, W, 3), v, np.uint8) for v in levels])
    for (_, p), level in zip(iter_planes(Source(path)), levels):
        assert np.abs(planes_rgb(p).astype(int) - level).max() <= 2, level


def test_odd_sizes_and_out():
    """Odd 4:2:0 sizes: the last chroma row and column cover one pixel; `out` receives the pixels."""
    rng = np.random.default_rng(0)
    y, u, v = rng.integers(0, 256, (5, 7), np.uint8), rng.integers(0, 256, (3, 4), np.uint8), rng.integers(0, 256, (3, 4), np.uint8)
    full = [np.ascontiguousarray(c.repeat(2, 0).repeat(2, 1)[:5, :7]) for c in (u, v)]
    out = np.zeros((5, 7, 3), np.uint8)
    assert planes_rgb(Planes(y, u, v, True), out=out) is out
    assert np.array_equal(out, planes_rgb(Planes(y, *full, True)))
    with pytest.raises(ValueError, match="C-contiguous"):
        planes_rgb(Planes(y, u, v, True), out=np.zeros((5, 8, 3), np.uint8)[:, :7])


@pytest.fixture(scope="module")
def export(prepared, tmp_path_factory):
    """(DEST, every shard of it, the ok clips by sample key) of the tiny prepared folder, one clip per shard."""
    out, _ = prepared
    dest = tmp_path_factory.mktemp("wds_frames") / "wds"
    export_webdataset(out, dest, ExportConfig(shard_samples=1))
    clips = read_table(out / "manifests" / "clips.parquet")
    clips = clips[clips.status == "ok"]
    urls = [u for split in sorted(set(clips.split)) for u in split_urls(dest, split)]
    return dest, urls, clips.set_index(clips.take_id + "_" + clips.view)


def _expected(out, clips) -> dict:
    """(key, frame) -> what the prepared files give directly: RGB of the decoded crop video, the mfcc28 window,
    the landmarks, the manifest's labels and the flags."""
    want = {}
    for key, row in clips.iterrows():
        frames = [planes_rgb(p) for _, p in iter_planes(Source(str(out / row.crop_video)))]
        with np.load(out / row.faces_npz) as faces, np.load(out / row.features_npz) as feats:
            lm, valid, mfcc, padded = faces["landmarks_crop"], faces["valid"], feats["mfcc28"], feats["padded"]
        assert len(frames) == row.n_frames == len(mfcc)
        for i, frame in enumerate(frames):
            want[key, i] = {"frame": frame, "window": feature_window(mfcc, i, 30), "landmarks": lm[i],
                            "emotion": emotion_label(row.emotion), "level": row.level - 1, "valid": valid[i],
                            "padded": padded[i]}
    return want


def _samples(batch) -> dict:
    """(key, frame) -> that frame's values in a batch, copied out (so the batch itself may go)."""
    return {(k, int(i)): {name: batch[name][j].numpy().copy() for name in
                          ("frame", "window", "landmarks", "emotion", "level", "valid", "padded")}
            for j, (k, i) in enumerate(zip(batch["key"], batch["index"]))}


def _check(got: dict, want: dict) -> None:
    for (key, i), values in got.items():
        for name, value in values.items():
            assert np.array_equal(value, want[key, i][name]), (key, i, name)


@pytest.mark.parametrize("keep", [False, True], ids=["batches_dropped", "batches_kept"])
def test_two_workers_give_every_frame_once_with_its_values(prepared, export, keep):
    """Dropped batches free their slots for reuse; kept ones push the workers onto fresh memory: both right."""
    out, _ = prepared
    _, urls, clips = export
    loader = torch.utils.data.DataLoader(frame_batches(urls, batch_size=16), batch_size=None, num_workers=2)
    batches = list(loader) if keep else None
    got, seen = {}, Counter()
    for batch in batches if keep else loader:
        assert batch["frame"].dtype == torch.uint8 and batch["frame"].shape[1:] == (64, 64, 3)
        assert batch["window"].dtype == torch.float32 and batch["window"].shape[1:] == (30, 28)
        seen.update(zip(batch["key"], batch["index"].tolist()))
        got |= _samples(batch)
    assert sum(seen.values()) == clips.n_frames.sum() == len(seen) and set(seen.values()) == {1}
    assert set(seen) == {(key, i) for key, n in clips.n_frames.items() for i in range(n)}
    _check(got, _expected(out, clips))


def test_windows_and_labels_equal_shard_datasets(export, shard_set):
    """The same frame's window, emotion, level, valid and padded as ShardDataset gives them."""
    _, urls, _ = export
    ds = ShardDataset(shard_set)
    start = dict(zip(ds.clips.take_id + "_" + ds.clips.view, np.concatenate([[0], np.cumsum(ds.clips.length)])))
    got = {}
    for batch in frame_batches(urls, batch_size=64):
        got |= _samples(batch)
    assert len(got) == len(ds)
    reference = ds.batch([start[key] + i for key, i in got])
    for j, values in enumerate(got.values()):
        for name, ref in (("window", "mfcc"), ("emotion", "emotion"), ("level", "level"), ("valid", "valid"),
                          ("padded", "padded")):
            assert np.array_equal(values[name], reference[ref][j].numpy()), name


def test_a_shuffled_read_gives_the_same_frames_in_another_order(export):
    _, urls, clips = export
    plain = [(k, int(i)) for b in frame_batches(urls, batch_size=16) for k, i in zip(b["key"], b["index"])]
    mixed = [(k, int(i)) for b in frame_batches(urls, batch_size=16, shuffle=64, seed=0) for k, i in zip(b["key"], b["index"])]
    again = [(k, int(i)) for b in frame_batches(urls, batch_size=16, shuffle=64, seed=0) for k, i in zip(b["key"], b["index"])]
    assert sorted(mixed) == sorted(plain) and len(plain) == clips.n_frames.sum()
    assert mixed != plain and mixed == again


def test_yuv_batches_are_the_rgb_batches_planes(prepared, export):
    """`pixels="yuv"`: the same frames and values, the pixels as planes that `yuv_to_rgb` makes the RGB frames of."""
    (out, _), (_, urls, clips) = prepared, export
    full = {key: next(iter_planes(Source(str(out / row.crop_video))))[1].full_range for key, row in clips.iterrows()}
    rgb = list(frame_batches(urls, batch_size=16))
    yuv = list(frame_batches(urls, batch_size=16, pixels="yuv"))
    assert len(rgb) == len(yuv) and "frame" not in yuv[0] and yuv[0]["y"].shape[1:] == (64, 64)
    for a, b in zip(rgb, yuv):
        assert a["key"] == b["key"] and torch.equal(a["window"], b["window"]) and torch.equal(a["index"], b["index"])
        assert b["full_range"].tolist() == [full[k] for k in b["key"]]
        assert (yuv_to_rgb(b["y"], b["u"], b["v"], b["full_range"]).int() - a["frame"].int()).abs().max() <= 1
    with pytest.raises(ValueError, match="pixels must be one of rgb, yuv"):
        frame_batches(urls, pixels="bgr")


def test_a_missing_feature_set_is_named(export):
    _, urls, _ = export
    with pytest.raises(ValueError, match="no feature set 'mel80'"):
        next(iter(frame_batches(urls, feature="mel80")))
