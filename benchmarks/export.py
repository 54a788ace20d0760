"""WebDataset export throughput against copying the same bytes, in one run.

    python benchmarks/export.py OUT [--repeat 9] [--shard-mb 16] [--work DIR]

OUT is a prepared folder (e.g. one `benchmarks/corpus_projection.py` made). Each round exports OUT's finished
clips afresh, copies the files the export reads (crop videos, faces and feature arrays, audio) to a fresh folder
with `shutil.copyfile` (the kernel's copy), and copies them again then flushes them to disk (one `os.sync()`, the
cheapest way to make a copy durable); each timed run starts with nothing dirty (an untimed `os.sync()` before it)
and the best and the median round of each are compared. The export fsyncs every shard before giving it its name (a kept shard must be
whole after a crash: that is what resuming trusts), so the durable copy is the like-for-like baseline; the plain
copy's ratio is printed too (it stops at the page cache). Shards are bounded at `--shard-mb` (default 16: a 100 MB
OUT then makes several shards per split, each flushed to disk before its rename, as a whole-MEAD export at the
default 1 GB does). Target (issue 17): export >= 0.8x the copy's speed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import statistics
import tempfile
import time
from pathlib import Path

from meadkit.export import ExportConfig, export_webdataset
from meadkit.manifest import read_table

COLUMNS = ("crop_video", "faces_npz", "features_npz", "audio_wav")


def copy_sources(out: Path, dest: Path, durable: bool) -> int:
    """Copy every file an export of OUT reads (then flush them to disk where `durable`); bytes copied."""
    clips = read_table(out / "manifests" / "clips.parquet")
    clips = clips[clips.status == "ok"]
    files = sorted({out / p for col in COLUMNS if col in clips.columns for p in clips[col].dropna()})
    for i, f in enumerate(files):
        shutil.copyfile(f, dest / f"{i}{f.suffix}")
    if durable:
        os.sync()
    return sum(f.stat().st_size for f in files)


def timed(fn) -> float:
    t = time.perf_counter()
    fn()
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--repeat", type=int, default=9)
    ap.add_argument("--shard-mb", type=float, default=16)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-export-"))
    config = ExportConfig(shard_bytes=int(args.shard_mb * 1e6))
    runs = {"export": lambda d: export_webdataset(args.out, d, config), "copy": lambda d: copy_sources(args.out, d, False),
            "durable copy": lambda d: copy_sources(args.out, d, True)}
    summary = export_webdataset(args.out, work / "warm-up", config)  # also brings OUT's files into the page cache
    copied = copy_sources(args.out, _fresh(work / "warm-up-copy"), False)
    names, times = list(runs), {name: [] for name in runs}
    for r in range(args.repeat):  # each round in another order: no run always follows the same one
        for name in names[r % 3:] + names[:r % 3]:
            target = _fresh(work / name.replace(" ", "-"))
            os.sync()
            times[name].append(timed(lambda: runs[name](target)))
    mb, copied_mb = summary.bytes / 1e6, copied / 1e6
    print(f"{summary.samples} samples, {mb:.1f} MB in {summary.shards_written} shards from {copied_mb:.1f} MB of files "
          f"({args.repeat} rounds)")
    for how, pick in (("best", min), ("median", statistics.median)):
        speed = {name: (mb if name == "export" else copied_mb) / pick(t) for name, t in times.items()}
        print(f"{how}: " + ", ".join(f"{name} {v:.0f} MB/s" for name, v in speed.items())
              + f"; export / durable copy {speed['export'] / speed['durable copy']:.2f}x (target >= 0.8), "
              f"export / copy {speed['export'] / speed['copy']:.2f}x")
    shutil.rmtree(work, ignore_errors=True)


def _fresh(path: Path) -> Path:
    """An empty folder at `path`."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
