"""What a profile costs: `meadkit prepare` of the same MEAD-encoded clips with each named profile, at -j 1.

Printed per profile: wall time, ms of one core per source view-frame in all and by stage, and the ratio to
`mead-paper` measured in the same run (talking-head-25 adds the tube crops' second decode pass, the 16 kHz wav
and the mel80 rows; emote-style larger crops).

    python benchmarks/profiles.py [--takes 2] [--seconds 2] [--resolution 1920x1080] [--work DIR]
"""
from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
from pathlib import Path

from prepare import run_measured  # benchmarks/prepare.py: wall time and per-process peak RSS of a command tree

from meadkit.corpus.synth import SynthConfig, synthesize
from meadkit.manifest import read_table

PROFILES = ("mead-paper", "talking-head-25", "emote-style")
STAGES = ("sync", "features", "audio", "faces")


def run(raw: Path, out: Path, profile: str) -> dict:
    """One fresh `prepare --profile` at -j 1: wall seconds, stage seconds and the source view-frames of ok clips."""
    shutil.rmtree(out, ignore_errors=True)
    wall, peaks = run_measured([sys.executable, "-m", "meadkit", "prepare", str(raw), "-o", str(out), "-j", "1",
                                "--quiet", "--profile", profile])
    m = out / "manifests"
    clips, sync, status = (read_table(m / f"{n}.parquet") for n in ("clips", "sync", "status"))
    ok = clips[clips.status == "ok"].merge(sync[["take_id", "view", "n_frames"]], on=["take_id", "view"],
                                           suffixes=("", "_source"))
    stages = {s: float(status[f"{s}_s"].fillna(0).sum()) for s in STAGES if f"{s}_s" in status}
    return dict(wall=wall, frames=int(ok.n_frames_source.sum()), clips=len(ok), stages=stages,
                rss=max(peaks.values()) / 2 ** 20)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--takes", type=int, default=2, help="takes per (actor, emotion)")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument("--work", type=Path, default=None, help="keeps the corpus for reruns")
    args = ap.parse_args()
    width, height = map(int, args.resolution.split("x"))
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-profiles-"))
    raw = work / f"raw-{args.resolution}"
    if not raw.exists():
        print(f"synthesizing {raw} ...", flush=True)
        synthesize(raw, SynthConfig(actors=2, emotions=("neutral", "happy"), levels=(3,), takes=args.takes,
                                    seconds=args.seconds, views=("front", "left_30", "right_30", "down"), width=width,
                                    height=height, seed=4, voice="procedural", encoding="mead"))
    results = {p: run(raw, work / f"out-{p}", p) for p in PROFILES}
    base = results["mead-paper"]
    per_frame = {p: 1000 * r["wall"] / r["frames"] for p, r in results.items()}
    print(f"{len(PROFILES)} profiles on {base['clips']} MEAD-encoded {args.resolution} view clips, "
          f"{base['frames']} source frames, -j 1")
    print(f"{'profile':<17}{'wall s':>8}{'ms/frame':>10}{'x paper':>9}{'peak MB':>9}  stage ms/frame")
    for p, r in results.items():
        by_stage = "  ".join(f"{s} {1000 * v / r['frames']:.2f}" for s, v in r["stages"].items())
        print(f"{p:<17}{r['wall']:>8.1f}{per_frame[p]:>10.2f}{per_frame[p] / per_frame['mead-paper']:>9.2f}"
              f"{r['rss']:>9.0f}  {by_stage}")


if __name__ == "__main__":
    main()
