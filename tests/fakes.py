"""A tiny hand-made prepared OUT folder (crop mp4s, faces.npz, features.npz, clips.parquet) for shard/data/baseline tests."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow as pa

from meadkit.corpus.names import MEAD_FPS, TakeKey
from meadkit.features import FeaturesConfig
from meadkit.media.sources import Source
from meadkit.manifest import write_table
from meadkit.media.audio import write_audio
from meadkit.media.video import VideoWriter, iter_frames
from meadkit.shards import resize_frame

CROP = 64
SIZE = 32
#: (actor, emotion, level, take, views, n_frames, split): a few clips of two actors, neutral ones included,
#: W009/left_30 deliberately has no neutral clip.
CLIPS = [
    ("M003", "happy", 3, 1, ("front", "left_30"), 24, "train"),
    ("M003", "neutral", 1, 1, ("front", "left_30"), 20, "train"),
    ("M003", "sad", 1, 2, ("front",), 18, "test"),
    ("W009", "angry", 2, 1, ("front", "left_30"), 22, "train"),
    ("W009", "neutral", 1, 3, ("front",), 16, "val"),
]


def _frame(seed: int, i: int) -> np.ndarray:
    """A smooth RGB test image that differs per clip (seed) and per frame (a moving bar)."""
    yy, xx = np.mgrid[0:CROP, 0:CROP]
    img = np.stack([(xx * 3 + seed * 40) % 256, (yy * 3 + seed * 17) % 256, ((xx + yy) * 2 + seed * 7) % 256], -1)
    img[:, (i * 3) % CROP : (i * 3) % CROP + 6] = (255 - seed * 9) % 256
    return img.astype(np.uint8)


def make_prepared(out: Path, clips=CLIPS, sets=("mfcc28",)) -> pd.DataFrame:
    """A tiny prepared OUT folder following the prepare contract: crop mp4s, faces.npz, features.npz (random rows of
    each feature set of `sets`), clips.parquet, and a config.toml recording `sets` unless they are the default."""
    rows, widths = [], FeaturesConfig(sets=sets).widths
    out.mkdir(parents=True, exist_ok=True)
    if sets != FeaturesConfig().sets:
        (out / "config.toml").write_text(f"[features]\nsets = {list(sets)!r}\n".replace("'", '"'))
    for n, (actor, emotion, level, take, views, t, split) in enumerate(clips):
        key = TakeKey(actor, emotion, level, take)
        d = Path("clips") / actor / key.id
        (out / d).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(n)
        feats = {name: rng.normal(size=(t, w)).astype(np.float32) for name, w in widths.items()}
        np.savez(out / d / "features.npz", **feats, padded=rng.random(t) < 0.2)
        for v, view in enumerate(views):
            seed = n * 7 + v
            with VideoWriter(str(out / d / f"{view}.mp4"), MEAD_FPS, CROP, CROP, pix_fmt="rgb24") as w:
                for i in range(t):
                    w.write(_frame(seed, i))
            lm = (rng.random((t, 68, 2)) * CROP).astype(np.float32)
            np.savez(out / d / f"{view}.faces.npz", landmarks_src=lm * 4, landmarks_crop=lm, valid=rng.random(t) < 0.9,
                     score=np.ones(t, np.float32), transform=np.zeros((t, 2, 3), np.float32))
            rows.append(dict(take_id=key.id, actor=actor, gender=actor[0], emotion=emotion, level=level, take=take, view=view,
                             split=split, status="ok", error=None, n_frames=t, crop_video=str(d / f"{view}.mp4"),
                             faces_npz=str(d / f"{view}.faces.npz"), features_npz=str(d / "features.npz"),
                             feature_sets=",".join(sets), crop_size=CROP))
    df = pd.DataFrame(rows)
    write_table(pa.Table.from_pandas(df, preserve_index=False), out / "manifests" / "clips.parquet")
    return df


def expected_clip(out: Path, row: dict, size: int = SIZE) -> dict:
    """What a shard must hold for one clip, by shard array: decoded crop frames resized (CHW), scaled landmarks, each
    feature set, valid, padded."""
    frames = np.stack([resize_frame(f.image, size).transpose(2, 0, 1)
                       for f in iter_frames(Source(str(out / row["crop_video"])), pix_fmt="rgb24")])
    with np.load(out / row["faces_npz"]) as z:
        lm, valid = z["landmarks_crop"], z["valid"]
    with np.load(out / row["features_npz"]) as z:
        feats = {k: z[k] for k in z.files}
    s = size / row["crop_size"]
    return {"frames": frames, "landmarks": ((lm.astype(np.float64) + 0.5) * s - 0.5).astype(np.float32),
            "valid": valid, **feats}


#: Sample rate of the tone test media below (MEAD's).
SR = 48000


def tone(seconds: float) -> np.ndarray:
    """A 440 Hz tone, float32 mono at SR."""
    t = np.arange(int(seconds * SR)) / SR
    return (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)


def tone_video(path: Path, seconds: float = 1.2, fps=MEAD_FPS, audio: bool = True) -> Path:
    """A small mp4 (64x48 grey ramp) at `fps`, with the tone as its audio track unless `audio` is false."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with VideoWriter(str(path), fps, 64, 48, audio=(tone(seconds), SR) if audio else None) as w:
        for i in range(int(round(seconds * float(fps)))):
            w.write(np.full((48, 64, 3), (i * 9) % 256, np.uint8))
    return path


def tone_audio(path: Path, seconds: float = 1.2) -> Path:
    """The tone as a reference audio file."""
    path.parent.mkdir(parents=True, exist_ok=True)
    write_audio(str(path), tone(seconds), SR)
    return path
