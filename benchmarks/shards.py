"""Benchmark the training loader: meadkit shards vs the one-file-per-sample pattern vs decoding mp4s, same run.

All loaders give the same sample (frame 3x128x128 uint8, 30x28 MFCC window, 68x2 landmarks, labels,
a neutral frame of the same actor and view) through a torch DataLoader with 2 workers, shuffled,
batch 256:
  shards            meadkit.data.make_loader: ShardDataset.__getitems__ (a whole batch gathered from
                    memory maps) handed over through reusable shared-memory slots
  shards, plain DL  the same batches through `DataLoader(ds, batch_size, shuffle=True, num_workers)` with
                    torch's default collate (the batch re-stacked in fresh shared memory)
  shards/item       the same shards through per-sample __getitem__ + default_collate
  (a) files      one file per sample, the original's one-pickle-per-window pattern written as .npy
                 (frame.npy, window.npy, landmarks.npy per sample; neutral = another sample's frame.npy)
  (b) mp4        decoding the aligned 256x256 crop mp4 on the fly (+ its npz arrays) per sample
Also: bytes on disk per sample (apparent and allocated), and the loader's peak anonymous memory
(main + workers) over one epoch of a shard set and of one 4x larger.

The prepared folder is synthetic but realistic: 256x256 H.264 crops of a real face photo
(skimage's astronaut) with per-frame motion, as `meadkit prepare` would write them.
Run: python benchmarks/shards.py [--clips 64 --frames 160]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import json  # noqa: E402
import shutil  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
import pyarrow as pa  # noqa: E402
import torch  # noqa: E402
from skimage import data as skdata  # noqa: E402
from torch.utils.data import DataLoader, Dataset  # noqa: E402

from meadkit.corpus.names import EMOTIONS, MEAD_FPS, VIEWS, TakeKey, emotion_label  # noqa: E402
from meadkit.media.sources import Source  # noqa: E402
from meadkit.data import ShardDataset, make_loader  # noqa: E402
from meadkit.features import FeaturesConfig, feature_window  # noqa: E402
from meadkit.manifest import write_table  # noqa: E402
from meadkit.media.video import VideoWriter, iter_frames  # noqa: E402
from meadkit.runner import Executor  # noqa: E402
from meadkit.shards import ShardConfig, build_shards, resize_frame  # noqa: E402

CROP, SIZE, BATCH, WORKERS = 256, 128, 256, 2
ACTORS = ("M003", "M005", "W009", "W011")
ORDER = ("neutral",) + tuple(e for e in EMOTIONS if e != "neutral")  # neutral clips first, so every set has some


def face_clip(seed: int, n: int):
    """Frames of an aligned face crop: a real face photo with slow head motion, a per-clip colour cast and sensor noise."""
    rng = np.random.default_rng(seed)
    face = skdata.astronaut()[10:230, 115:335]  # the face and shoulders, RGB
    gain = (0.85 + 0.3 * rng.random(3)).astype(np.float32)
    noise = rng.normal(0, 2, (8, CROP, CROP, 3)).astype(np.float32)
    for i in range(n):
        a = 2.0 * np.sin(i / 9 + seed)
        m = cv2.getRotationMatrix2D((110, 110), a, CROP / 220 * (1 + 0.02 * np.sin(i / 5)))
        m[:, 2] += [CROP / 2 - 110 + 3 * np.sin(i / 7), CROP / 2 - 110 + 2 * np.cos(i / 6)]
        img = cv2.warpAffine(face, m, (CROP, CROP), borderMode=cv2.BORDER_REFLECT) * gain
        yield np.clip(img + noise[i % len(noise)], 0, 255).astype(np.uint8)


def make_prepared(out: Path, n_clips: int, n_frames: int) -> pd.DataFrame:
    """A prepared OUT folder per the prepare contract (crop mp4s, faces.npz, features.npz, clips.parquet)."""
    rows = []
    for k in range(n_clips):
        actor, view = ACTORS[k % len(ACTORS)], VIEWS[(k // len(ACTORS)) % 2]
        emotion = ORDER[(k // (2 * len(ACTORS))) % len(ORDER)]
        key = TakeKey(actor, emotion, 1 if emotion == "neutral" else 1 + k % 3, 1 + k)
        d = Path("clips") / actor / key.id
        (out / d).mkdir(parents=True, exist_ok=True)
        rng = np.random.default_rng(k)
        t = n_frames + k % 7
        np.savez(out / d / "features.npz", mfcc28=rng.normal(size=(t, 28)).astype(np.float32), padded=np.zeros(t, bool))
        with VideoWriter(str(out / d / f"{view}.mp4"), MEAD_FPS, CROP, CROP, pix_fmt="rgb24") as w:
            for img in face_clip(k, t):
                w.write(img)
        lm = (CROP / 2 + 40 * rng.normal(size=(t, 68, 2))).astype(np.float32)
        np.savez(out / d / f"{view}.faces.npz", landmarks_src=lm, landmarks_crop=lm, valid=np.ones(t, bool),
                 score=np.ones(t, np.float32), transform=np.zeros((t, 2, 3), np.float32))
        rows.append(dict(take_id=key.id, actor=actor, gender=actor[0], emotion=emotion, level=key.level, take=key.take,
                         view=view, split="train", status="ok", error=None, n_frames=t, crop_video=str(d / f"{view}.mp4"),
                         faces_npz=str(d / f"{view}.faces.npz"), features_npz=str(d / "features.npz"),
                         feature_sets="mfcc28", crop_size=CROP))
    df = pd.DataFrame(rows)
    write_table(pa.Table.from_pandas(df, preserve_index=False), out / "manifests" / "clips.parquet")
    return df


def disk(paths) -> tuple[int, int]:
    """(apparent bytes, allocated bytes) of files."""
    st = [os.stat(p) for p in paths]
    return sum(s.st_size for s in st), sum(s.st_blocks * 512 for s in st)


# ---------------------------------------------------------------- the two baselines

def write_per_sample(ds: ShardDataset, root: Path) -> list[Path]:
    """The original's layout: one small file per sample per array (here .npy, 1000 samples per folder)."""
    files = []
    for lo in range(0, len(ds), 1024):
        b = ds.batch(list(range(lo, min(lo + 1024, len(ds)))))
        for j in range(len(b["frame"])):
            d = root / f"{(lo + j) // 1000:04d}" / f"{lo + j:07d}"
            d.mkdir(parents=True)
            for name, key in (("frame", "frame"), ("window", "mfcc"), ("landmarks", "landmarks")):
                np.save(d / f"{name}.npy", b[key][j].numpy())
                files.append(d / f"{name}.npy")
    return files


class PerSampleFiles(Dataset):
    """Opens three .npy files per sample (plus a neutral sample's frame), labels from memory."""

    def __init__(self, root: Path, ds: ShardDataset):
        self.root, self.n = root, len(ds)
        clip = np.repeat(np.arange(len(ds.clips)), ds.clips["length"].to_numpy())
        self.labels = {k: ds.clips[c].to_numpy(np.int64)[clip] for k, c in
                       (("emotion", "emotion_label"), ("actor", "actor_index"), ("view", "view_index"))}
        self.labels["level"] = ds.clips["level"].to_numpy(np.int64)[clip] - 1
        neutral = np.flatnonzero(self.labels["emotion"] == emotion_label("neutral"))
        self.neutral = neutral[np.random.default_rng(0).integers(0, len(neutral), self.n)]

    def _path(self, i: int, name: str) -> Path:
        return self.root / f"{i // 1000:04d}" / f"{i:07d}" / f"{name}.npy"

    def __len__(self):
        return self.n

    def __getitem__(self, i):
        s = {k: torch.from_numpy(np.load(self._path(i, k), allow_pickle=False)) for k in ("frame", "window", "landmarks")}
        s["neutral"] = torch.from_numpy(np.load(self._path(int(self.neutral[i]), "frame"), allow_pickle=False))
        return s | {k: torch.tensor(v[i]) for k, v in self.labels.items()}


class OnTheFlyMp4(Dataset):
    """Decodes the aligned crop mp4 up to the sample's frame (and a neutral clip's), resizes, reads the npz arrays."""

    def __init__(self, out: Path, clips: pd.DataFrame):
        self.out, self.clips = out, clips.reset_index(drop=True)
        self.start = np.concatenate([[0], np.cumsum(self.clips["n_frames"])])
        self.neutral = self.clips.index[self.clips["emotion"] == "neutral"].to_numpy()

    def __len__(self):
        return int(self.start[-1])

    def _frame(self, c: int, f: int) -> torch.Tensor:
        fr = next(iter_frames(Source(str(self.out / self.clips.at[c, "crop_video"])), start=f, count=1, pix_fmt="rgb24"))
        return torch.from_numpy(resize_frame(fr.image, SIZE).transpose(2, 0, 1).copy())

    def __getitem__(self, i):
        c = int(np.searchsorted(self.start, i, side="right") - 1)
        f = i - int(self.start[c])
        r = self.clips.loc[c]
        with np.load(self.out / r["faces_npz"]) as z:
            lm = z["landmarks_crop"][f] * (SIZE / CROP)
        with np.load(self.out / r["features_npz"]) as z:
            window = feature_window(z["mfcc28"], f, FeaturesConfig().context)
        nc = int(self.neutral[i % len(self.neutral)])
        labels = {"emotion": emotion_label(r["emotion"]), "level": r["level"] - 1, "actor": ACTORS.index(r["actor"]),
                  "view": VIEWS.index(r["view"])}
        return {"frame": self._frame(c, f), "window": torch.from_numpy(window), "landmarks": torch.from_numpy(lm),
                "neutral": self._frame(nc, i % int(self.clips.at[nc, "n_frames"]))} | {k: torch.tensor(v) for k, v in labels.items()}


class PerSampleShards(Dataset):
    """The shard set read one sample at a time (no __getitems__), to show what batch gathering buys."""

    def __init__(self, ds: ShardDataset):
        self.ds = ds

    def __len__(self):
        return len(self.ds)

    def __getitem__(self, i):
        return self.ds[i]


# ---------------------------------------------------------------- measuring

def _mem(pids) -> tuple[int, int]:
    """Summed (RssAnon, RssFile) bytes of processes."""
    anon = file = 0
    for pid in pids:
        try:
            for line in open(f"/proc/{pid}/status"):
                if line.startswith("RssAnon:"):
                    anon += int(line.split()[1]) * 1024
                elif line.startswith("RssFile:"):
                    file += int(line.split()[1]) * 1024
        except OSError:
            pass
    return anon, file


def _children() -> list[int]:
    me = str(os.getpid())
    kids = []
    for p in os.listdir("/proc"):
        if p.isdigit():
            try:
                if open(f"/proc/{p}/stat").read().rsplit(")", 1)[1].split()[1] == me:
                    kids.append(int(p))
            except OSError:
                pass
    return kids


def measure(loader: DataLoader, n_batches: int, skip: int = WORKERS, memory: bool = False) -> dict:
    """Samples/s over batches [skip, n_batches) of a fresh iteration (the first batch of each worker is
    start-up); with `memory`, also the peak memory of this process and its workers (sampled every 4 batches,
    off by default because reading /proc costs the consuming process time)."""
    t0 = None
    n = 0
    peak_anon = peak_file = 0
    before = set(_children())  # e.g. idle joblib workers: not the loader's
    it = iter(loader)
    pids = []
    for k in range(n_batches):
        try:
            b = next(it)
        except StopIteration:
            it = iter(loader)
            b = next(it)
        if k == skip:
            t0 = time.perf_counter()
        elif k > skip:
            n += len(b["frame"])
        if memory and k == 0:  # workers exist once the first batch arrived
            pids = [os.getpid(), *(set(_children()) - before)]
        if memory and k % 4 == 0:
            anon, file = _mem(pids)
            peak_anon, peak_file = max(peak_anon, anon), max(peak_file, file)
    dt = time.perf_counter() - t0
    del it
    return {"rate": n / dt, "samples": n, "seconds": dt, "anon": peak_anon, "file": peak_file, "processes": len(pids)}


def loader(ds, **kw) -> DataLoader:
    """The plain DataLoader every baseline uses (persistent workers, so rounds do not pay start-up)."""
    return DataLoader(ds, batch_size=BATCH, shuffle=True, num_workers=WORKERS, generator=torch.Generator().manual_seed(0),
                      persistent_workers=True, **kw)


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--clips", type=int, default=64)
    ap.add_argument("--frames", type=int, default=160)
    ap.add_argument("--rounds", type=int, default=3, help="alternating measuring rounds of the fast loaders")
    ap.add_argument("--mp4-batches", type=int, default=6, help="batches through the slow on-the-fly mp4 loader")
    ap.add_argument("--workdir", type=Path, default=None)
    ap.add_argument("--memory-of", type=Path, help="(internal) one epoch over this shard set; print peak memory as JSON")
    args = ap.parse_args()
    if args.memory_of:
        dsx = ShardDataset(args.memory_of)
        r = measure(make_loader(dsx, BATCH, num_workers=WORKERS), -(-len(dsx) // BATCH), memory=True)
        print(json.dumps(r | {"n": len(dsx)}))
        return
    work = Path(args.workdir or tempfile.mkdtemp(prefix="meadkit-bench-shards-"))
    print(f"machine: {os.cpu_count()} cores, load average {os.getloadavg()[0]:.2f} at start; work dir {work}", flush=True)
    try:
        out = work / "out"
        t = time.perf_counter()
        clips = make_prepared(out, args.clips, args.frames)
        print(f"prepared folder: {len(clips)} clips, {clips['n_frames'].sum()} frames of {CROP}x{CROP} ({time.perf_counter() - t:.1f} s)")

        t = time.perf_counter()
        meta = build_shards(out, work / "shards", ShardConfig(size=SIZE), executor=Executor(WORKERS, progress="log"))
        dt = time.perf_counter() - t
        print(f"meadkit shard: {meta['n_frames']} frames in {len(meta['shards'])} shard(s), {dt:.1f} s ({meta['n_frames'] / dt:.0f} frames/s)", flush=True)
        ds = ShardDataset(work / "shards")
        n = len(ds)
        files = write_per_sample(ds, work / "per_sample")

        fast = {
            "shards": (make_loader(ds, BATCH, num_workers=WORKERS), 80),
            "shards, plain DL": (loader(ds), 80),
            "shards/item": (loader(PerSampleShards(ds)), 14),
            "(a) files": (loader(PerSampleFiles(work / "per_sample", ds)), 14),
        }
        runs = {name: [] for name in fast}
        loads = []
        for _ in range(args.rounds):  # alternate, so that every loader sees the same mix of machine load
            for name, (dl, batches) in fast.items():
                runs[name].append(measure(dl, batches))
            loads.append(os.getloadavg()[0])
        del fast, dl  # shut the persistent workers down
        runs["(b) mp4"] = [measure(loader(OnTheFlyMp4(out, clips)), args.mp4_batches)]

        shard_files = [work / "shards" / s["name"] / f for s in meta["shards"] for f in s["files"]] + [work / "shards" / "index.parquet"]
        prepared_files = [out / p for c in ("crop_video", "faces_npz") for p in clips[c]] + [out / p for p in clips["features_npz"].unique()]
        on_disk = {"shards": (disk(shard_files), len(shard_files)), "(a) files": (disk(files), len(files)),
                   "(b) mp4": (disk(prepared_files), len(prepared_files))}

        print(f"\nDataLoader, {WORKERS} workers, shuffled, batch {BATCH}, {SIZE}x{SIZE} frames + neutral frame, {n} samples; "
              f"load average {min(loads):.1f}-{max(loads):.1f} during the rounds, {os.getloadavg()[0]:.1f} after (on {os.cpu_count()} shared cores)")
        print(f"{'loader':18s} {'best/s':>8s} {'median/s':>9s} {'best vs (a)':>11s} {'median vs (a)':>13s} {'B/sample on disk':>17s} {'allocated':>10s} {'files':>7s}")
        best = {k: max(r["rate"] for r in v) for k, v in runs.items()}
        med = {k: float(np.median([r["rate"] for r in v])) for k, v in runs.items()}
        for name in runs:
            ((app, alloc), nfiles) = on_disk.get(name, on_disk["shards"])
            print(f"{name:18s} {best[name]:8.0f} {med[name]:9.0f} {best[name] / best['(a) files']:10.1f}x {med[name] / med['(a) files']:12.1f}x "
                  f"{app / n:17.0f} {alloc / n:10.0f} {nfiles:7d}")
        print(f"(b) measured over {runs['(b) mp4'][0]['samples']} samples only; the prepared mp4s are {CROP}x{CROP} (what (b) decodes).")
        print(f"targets: >= 10000 samples/s: best {best['shards']:.0f} ({'met' if best['shards'] >= 10000 else 'NOT met'} under this load); "
              f">= 10x (a): best {best['shards'] / best['(a) files']:.1f}x, median {med['shards'] / med['(a) files']:.1f}x", flush=True)

        # memory: one epoch over a shard set and over one 4x larger (the same clips, four times, other take ids)
        big = pd.concat([clips.assign(take_id=clips["take_id"] + f"x{k}") for k in range(4)], ignore_index=True)
        build_shards(out, work / "shards4", ShardConfig(size=SIZE), clips=big, executor=Executor(WORKERS, progress="log"))
        print("\npeak loader memory over one epoch (main + 2 workers): anonymous = real; file-backed = mapped shard pages "
              "(page cache, reclaimable) + libraries; the batch ring is shared memory, in neither")
        for name, d in (("1x", work / "shards"), ("4x", work / "shards4")):
            # a fresh process per set, so that neither inherits the other's (or this run's) heap
            r = json.loads(subprocess.run([sys.executable, __file__, "--memory-of", str(d)], check=True,
                                          capture_output=True, text=True).stdout.splitlines()[-1])
            gb = disk(list(d.rglob("*.npy")))[0] / 1e9
            print(f"  {name}: {r['n']:6d} samples, {gb:5.2f} GB of shards, {r['processes']} processes: anon {r['anon'] / 2**20:5.0f} MiB, "
                  f"file-backed {r['file'] / 2**20:5.0f} MiB ({r['rate']:.0f} samples/s)", flush=True)
    finally:
        if args.workdir is None:
            shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
