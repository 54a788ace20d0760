"""Does the baseline learn? Synthetic corpus -> `meadkit prepare` -> `meadkit train` (CPU) -> `meadkit evaluate`.

A speaker-disjoint synthetic corpus (front view, every emotion and level) goes through the user's
commands; the run is trained on the train actors only and evaluated on unseen test actors. Targets
(issue 9), all from `meadkit evaluate` output:
  - emotion accuracy of the classifiers on real test frames >= 90%;
  - on frames generated for the same labels >= 0.9x that;
  - audio-to-landmark mouth error >= 30% below the mean-shape baseline (measured in the same run);
  - training on CPU in <= ~15 minutes (all four stages).

    python benchmarks/baseline.py [--work /tmp/meadkit-bench-baseline] [--jobs 2] [--threads 1] [--set TABLE.KEY=VALUE ...]

The corpus and prepared folder are reused if present; the run folder is retrained from scratch.
Writes benchmarks/results/baseline.json.
"""
from __future__ import annotations

import argparse
import json
import os
import platform
import shutil
import subprocess
import sys
import time
from pathlib import Path

import torch

from meadkit.corpus.synth import SynthConfig, synthesize

#: Speaker-disjoint with the default split (meadkit.splits.SplitConfig): M037/W037 are test actors,
#: M032/W033 validation actors, the others train.
TRAIN_ACTORS = ["M003", "W009", "M005", "W011", "M007", "W014"]
VAL_ACTORS = ["M032", "W033"]
TEST_ACTORS = ["M037", "W037"]
RESULT = Path(__file__).resolve().parent / "results" / "baseline.json"


def run(cmd: list[str]) -> float:
    """Run a meadkit command, echoing it; returns its wall time in seconds."""
    print("$ meadkit " + " ".join(cmd), flush=True)
    t = time.perf_counter()
    subprocess.run([sys.executable, "-m", "meadkit", *cmd], check=True)
    return time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--work", type=Path, default=Path("/tmp/meadkit-bench-baseline"))
    ap.add_argument("--jobs", type=int, default=2, help="prepare worker processes")
    ap.add_argument("--threads", type=int, default=1, help="torch threads for training (1 is fastest on a busy machine)")
    ap.add_argument("--takes", type=int, default=1, help="takes per (actor, emotion, level)")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--set", dest="overrides", action="append", default=[], help="extra `meadkit train --set` overrides")
    ap.add_argument("--out", type=Path, default=RESULT)
    args = ap.parse_args()

    raw, prepared, run_dir = args.work / "raw", args.work / "out", args.work / "run"
    shards = prepared / "shards"
    times: dict[str, float] = {}
    if not (raw / TEST_ACTORS[-1]).exists():
        t = time.perf_counter()
        cfg = SynthConfig(actors=TRAIN_ACTORS + VAL_ACTORS + TEST_ACTORS, takes=args.takes, seconds=args.seconds,
                          views=("front",), width=640, height=360, seed=0)
        synthesize(raw, cfg)
        times["synth_s"] = time.perf_counter() - t
    if not (shards / "meta.json").exists():
        times["prepare_s"] = run(["prepare", str(raw), "-o", str(prepared), "-j", str(args.jobs), "--quiet"])
    shutil.rmtree(run_dir, ignore_errors=True)
    sets = sum((["--set", s] for s in [f"train.threads={args.threads}", *args.overrides]), [])
    times["train_s"] = run(["train", str(shards), "-o", str(run_dir), "--device", "cpu", *sets])
    eval_json = args.work / "eval_test.json"
    times["evaluate_s"] = run(["evaluate", str(run_dir), str(shards), "--split", "test", "--max-samples", "0", "-o", str(eval_json)])
    metrics = json.loads(eval_json.read_text())
    val = json.loads((run_dir / "config.json").read_text())
    stage_times = {line.split(":")[0]: float(line.split(" in ")[1].split()[0])
                   for line in (run_dir / "train.log").read_text().splitlines() if " steps in " in line}

    real, gen = metrics["emotion_accuracy_real"], metrics["emotion_accuracy_generated"]
    checks = {
        "emotion_accuracy_real >= 0.90": real >= 0.90,
        "emotion_accuracy_generated >= 0.9 x real": gen >= 0.9 * real,
        "a2l mouth error >= 30% below mean shape": metrics["a2l_error_reduction"] >= 0.30,
        "training <= 15 min": times["train_s"] <= 15 * 60,
    }
    result = {
        "what": "meadkit train/evaluate on a speaker-disjoint synthetic corpus (CPU)",
        "corpus": {"train_actors": TRAIN_ACTORS, "val_actors": VAL_ACTORS, "test_actors": TEST_ACTORS, "views": ["front"],
                   "takes_per_emotion_level": args.takes, "seconds": args.seconds, "source_size": "640x360"},
        "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(), "torch": torch.__version__,
                    "threads_used": args.threads, "note": "2 cores shared with other jobs while this ran"},
        "config": val,
        "times_s": {k: round(v, 1) for k, v in times.items()},
        "train_stage_times_s": stage_times,
        "eval": metrics,
        "ratios": {"generated_over_real_emotion_accuracy": metrics["generated_to_real_ratio"],
                   "a2l_error_over_mean_shape_error": metrics["a2l_mouth_error_px"] / metrics["mean_shape_mouth_error_px"]},
        "checks": checks,
        "pass": all(checks.values()),
    }
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(result, indent=2) + "\n")
    print(json.dumps({"times_s": result["times_s"], "ratios": result["ratios"], "checks": checks}, indent=2))


if __name__ == "__main__":
    main()
