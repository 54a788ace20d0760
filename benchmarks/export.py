"""WebDataset export throughput against copying the same bytes, in one run.

    python benchmarks/export.py OUT [--repeat 3] [--work DIR]

OUT is a prepared folder (e.g. one `benchmarks/corpus_projection.py` made). Each round exports OUT's finished
clips afresh and copies the files the export reads (crop videos, faces and MFCC arrays) to a fresh folder;
the best round of each counts. Target (issue 17): export >= 0.8x the copy's speed.
"""
from __future__ import annotations

import argparse
import shutil
import tempfile
import time
from pathlib import Path

from meadkit.export import export_webdataset
from meadkit.manifest import read_table


def copy_sources(out: Path, dest: Path) -> int:
    """Copy every file an export of OUT reads; bytes copied."""
    clips = read_table(out / "manifests" / "clips.parquet")
    clips = clips[clips.status == "ok"]
    files = sorted({out / p for col in ("crop_video", "faces_npz", "features_npz") for p in clips[col].dropna()})
    for i, f in enumerate(files):
        shutil.copyfile(f, dest / f"{i}{f.suffix}")
    return sum(f.stat().st_size for f in files)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("out", type=Path)
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-export-"))
    best_export = best_copy = float("inf")
    for r in range(args.repeat):
        dest, copy = work / f"wds{r}", work / f"copy{r}"
        shutil.rmtree(dest, ignore_errors=True), shutil.rmtree(copy, ignore_errors=True)
        copy.mkdir(parents=True)
        t = time.perf_counter()
        summary = export_webdataset(args.out, dest)
        best_export = min(best_export, time.perf_counter() - t)
        t = time.perf_counter()
        copied = copy_sources(args.out, copy)
        best_copy = min(best_copy, time.perf_counter() - t)
    print(f"{summary.samples} samples, {summary.bytes / 1e6:.1f} MB of shards from {copied / 1e6:.1f} MB of files")
    print(f"export {summary.bytes / 1e6 / best_export:.1f} MB/s, copy {copied / 1e6 / best_copy:.1f} MB/s: "
          f"export/copy speed {best_copy / best_export * summary.bytes / copied:.2f}x (target >= 0.8; best of {args.repeat})")


if __name__ == "__main__":
    main()
