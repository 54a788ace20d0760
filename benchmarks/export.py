"""WebDataset export throughput against copying the same bytes, in one run.

    python benchmarks/export.py OUT [--repeat 5] [--work DIR]

OUT is a prepared folder (e.g. one `benchmarks/corpus_projection.py` made). Each round exports OUT's finished
clips afresh, copies the files the export reads (crop videos, faces and feature arrays, audio) to a fresh folder
with `shutil.copyfile` (the kernel's copy), and copies them again then flushes them to disk (one `os.sync()`, the
cheapest way to make a copy durable); each timed run starts with nothing dirty (an untimed `os.sync()` before it)
and the best round of each counts. The export fsyncs every shard before giving it its name (a kept shard must be
whole after a crash: that is what resuming trusts), so the durable copy is the like-for-like baseline; the plain
copy's ratio is printed too (it stops at the page cache). Target (issue 17): export >= 0.8x the copy's speed.
"""
from __future__ import annotations

import argparse
import os
import shutil
import tempfile
import time
from pathlib import Path

from meadkit.export import export_webdataset
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
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-export-"))
    runs = {"export": lambda d: export_webdataset(args.out, d), "copy": lambda d: copy_sources(args.out, d, False),
            "durable copy": lambda d: copy_sources(args.out, d, True)}
    summary = export_webdataset(args.out, work / "warm-up")  # also brings OUT's files into the page cache
    copied = copy_sources(args.out, _fresh(work / "warm-up-copy"), False)
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(args.repeat):
        for name, run in runs.items():
            target = _fresh(work / name.replace(" ", "-"))
            os.sync()
            best[name] = min(best[name], timed(lambda: run(target)))
    mb, copied_mb = summary.bytes / 1e6, copied / 1e6
    print(f"{summary.samples} samples, {mb:.1f} MB of shards from {copied_mb:.1f} MB of files (best of {args.repeat})")
    print(", ".join(f"{name} {(mb if name == 'export' else copied_mb) / s:.0f} MB/s" for name, s in best.items()))
    for name in ("durable copy", "copy"):
        ratio = (mb / best["export"]) / (copied_mb / best[name])
        print(f"export / {name} speed: {ratio:.2f}x" + (" (target >= 0.8)" if name == "durable copy" else ""))
    shutil.rmtree(work, ignore_errors=True)


def _fresh(path: Path) -> Path:
    """An empty folder at `path`."""
    shutil.rmtree(path, ignore_errors=True)
    path.mkdir(parents=True)
    return path


if __name__ == "__main__":
    main()
