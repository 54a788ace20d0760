"""Reading a WebDataset export for training (`meadkit.wds_frames.frame_batches`) against decoding its mp4s, one run.

    python benchmarks/export_read.py OUT [--workers 2] [--batch 256] [--shuffle 0] [--split all] [--rounds 3] [--work DIR]

OUT is a prepared folder. It is exported afresh to a temporary folder (shards of `--shard-samples` clips, so that
each worker has shards of its own), then each round reads the split (or all of them) through
`DataLoader(frame_batches(urls, batch, shuffle), batch_size=None, num_workers=N, persistent_workers=True)`, an epoch,
and decodes the same mp4s in this one process: PyAV alone, planes untouched (what any reader pays), and with each
frame made RGB by `planes_rgb`. Samples/s count every batch of the epoch (round 1 also starts the workers; the best
round counts), with RGB frames (`pixels="rgb"`) and with the decoder's planes (`pixels="yuv"`, made RGB where the
batch lands: `yuv_to_rgb`). Per worker: its share of the rate, and frames per CPU-second of its own (from /proc: on a
shared machine that one stays put while the wall rate follows what else runs). Target (issue 17): >= 5,000 samples/s.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

import av
import torch
import webdataset as wds

from meadkit.export import ExportConfig, export_webdataset, split_urls
from meadkit.media.sources import MemorySource
from meadkit.media.video import iter_planes, planes_rgb
from meadkit.splits import SPLITS
from meadkit.wds_frames import PIXELS, frame_batches

TARGET = 5000


def _cpu_s(pids) -> float:
    """User + system CPU seconds so far of processes (from /proc/PID/stat)."""
    ticks = 0
    for pid in pids:
        with open(f"/proc/{pid}/stat") as f:
            fields = f.read().rsplit(")", 1)[1].split()
        ticks += int(fields[11]) + int(fields[12])
    return ticks / os.sysconf("SC_CLK_TCK")


def _workers() -> list[int]:
    """Pids of this process's children (the DataLoader's workers)."""
    me, kids = str(os.getpid()), []
    for p in filter(str.isdigit, os.listdir("/proc")):
        try:
            with open(f"/proc/{p}/stat") as f:
                if f.read().rsplit(")", 1)[1].split()[1] == me:
                    kids.append(int(p))
        except OSError:
            pass
    return kids


def read_epoch(loader) -> tuple[int, float, float]:
    """(samples, wall s, CPU s of the workers, or of this process without) of one epoch of `loader`."""
    t = time.perf_counter()
    batches = iter(loader)  # starts the workers (the first time)
    pids = _workers() or [os.getpid()]
    cpu, n = _cpu_s(pids), 0
    for batch in batches:
        n += len(batch["key"])
    return n, time.perf_counter() - t, _cpu_s(pids) - cpu


def decode_rate(mp4s: list[bytes], rgb: bool) -> float:
    """Frames/s of decoding the mp4s in this process (one decoder thread): planes untouched, or made RGB."""
    n, t = 0, time.perf_counter()
    for data in mp4s:
        if rgb:
            for _, planes in iter_planes(MemorySource(data)):
                planes_rgb(planes)
                n += 1
        else:
            with av.open(MemorySource(data).open()) as c:
                n += sum(1 for _ in c.decode(c.streams.video[0]))
    return n / (time.perf_counter() - t)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--workers", type=int, default=2)
    ap.add_argument("--batch", type=int, default=256)
    ap.add_argument("--shuffle", type=int, default=0, help="frames in each worker's shuffle buffer (0: none)")
    ap.add_argument("--split", choices=("all", *SPLITS), default="all")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--shard-samples", type=int, default=8)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-read-"))
    dest = work / "wds"
    shutil.rmtree(dest, ignore_errors=True)
    summary = export_webdataset(args.out, dest, ExportConfig(shard_samples=args.shard_samples))
    urls = [u for s in (SPLITS if args.split == "all" else (args.split,)) for u in split_urls(dest, s)]
    mp4s = [m for (m,) in wds.WebDataset(urls, shardshuffle=False).to_tuple("mp4")]
    loaders = {pixels: torch.utils.data.DataLoader(frame_batches(urls, args.batch, args.shuffle, pixels=pixels), batch_size=None,
                                                   num_workers=args.workers, persistent_workers=args.workers > 0)
               for pixels in PIXELS}
    best = {"decode": 0.0, "decode_rgb": 0.0} | {pixels: (0.0, 0.0) for pixels in PIXELS}
    for _ in range(args.rounds):
        for pixels, loader in loaders.items():
            n, wall, cpu = read_epoch(loader)
            best[pixels] = max(best[pixels], (n / wall, n / cpu if cpu else float("nan")))
        best["decode"] = max(best["decode"], decode_rate(mp4s, rgb=False))
        best["decode_rgb"] = max(best["decode_rgb"], decode_rate(mp4s, rgb=True))
    print(f"{len(mp4s)} clips ({args.split}), {n} frames in {len(urls)} shards of {summary.samples} exported; "
          f"{os.cpu_count()} cores, load {os.getloadavg()[0]:.1f}")
    print(f"decode only (PyAV, 1 process):        {best['decode']:7.0f} frames/s")
    print(f"decode + RGB (planes_rgb, 1 process): {best['decode_rgb']:7.0f} frames/s")
    for pixels in PIXELS:
        (rate, per_cpu), alone = best[pixels], best["decode_rgb" if pixels == "rgb" else "decode"]
        print(f"frame_batches(pixels={pixels!r}), {args.workers} workers, batch {args.batch}, shuffle {args.shuffle}: "
              f"{rate:7.0f} samples/s = {rate / best['decode']:.2f}x decode-only; per worker "
              f"{rate / max(args.workers, 1):.0f}/s ({per_cpu:.0f} per CPU-second of its own = {per_cpu / alone:.2f}x "
              f"{'decode + RGB' if pixels == 'rgb' else 'decode-only'}); target >= {TARGET} samples/s: "
              f"{'met' if rate >= TARGET else 'NOT met'} (best of {args.rounds})")
    if args.work is None:
        shutil.rmtree(work)


if __name__ == "__main__":
    main()
