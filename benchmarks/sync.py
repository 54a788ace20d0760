"""Sync cost per take (CPU seconds per minute of reference audio) next to decoding the same views' video,
measured in the same run on synthetic MEAD takes (7 views, exact MEAD frame rate, 48 kHz AAC).

Three numbers per take, best of `--rounds` interleaved rounds, one thread:
- sync: `sync_take` with every view's own audio track (the normal case);
- sync + visual fallback: the same with one view treated as having no audio (its motion signal and
  up to `visual_anchors` anchors' are decoded, so this one costs about as much as decoding);
- decode: every view's frames through `iter_frames` (decode only, bgr24), what faces must do anyway.

Run: python benchmarks/sync.py [--takes 2] [--seconds 4] [--width 960 --height 540]
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ[_var] = "1"

import argparse  # noqa: E402
import dataclasses  # noqa: E402
import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402

from meadkit.corpus.names import VIEWS  # noqa: E402
from meadkit.media.sources import Source  # noqa: E402
from meadkit.corpus.synth import SynthConfig, read_truth, synthesize  # noqa: E402
from meadkit.media.probe import probe  # noqa: E402
from meadkit.media.video import iter_frames  # noqa: E402
from meadkit.sync import SyncConfig, sync_take  # noqa: E402


def cpu(fn):
    """CPU seconds (this process) of one call."""
    t = time.process_time()
    fn()
    return time.process_time() - t


def main():
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--takes", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=4.0, help="reference-audio length per take (MEAD: ~3-5 s)")
    ap.add_argument("--width", type=int, default=960)
    ap.add_argument("--height", type=int, default=540)
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    cv2.setNumThreads(1)

    tmp = Path(tempfile.mkdtemp(prefix="bench_sync_"))
    try:
        t = time.perf_counter()
        truth = synthesize(tmp / "raw", SynthConfig(actors=1, emotions=("happy",), levels=(3,), takes=args.takes,
                                                    seconds=args.seconds, views=VIEWS, width=args.width,
                                                    height=args.height, voice="procedural"))
        print(f"synthesised {args.takes} takes x {len(VIEWS)} views at {args.width}x{args.height} "
              f"in {time.perf_counter() - t:.0f} s")
        df = read_truth(truth)
        config = SyncConfig()
        totals = {"sync": 0.0, "sync + visual fallback": 0.0, "decode": 0.0}
        minutes = 0.0
        for take_id, g in df.groupby("take_id"):
            ref_row = g[g.kind == "audio"].iloc[0]
            ref = Source(str(tmp / "raw" / ref_row.relpath))
            ref_probe = probe(ref)
            views = {r.view: (Source(str(tmp / "raw" / r.relpath)),) for r in g[g.kind == "video"].itertuples()}
            views = {k: (s[0], probe(s[0])) for k, s in views.items()}
            mute = dict(views, top=(views["top"][0], dataclasses.replace(views["top"][1], has_audio=False)))
            jobs = {
                "sync": lambda: sync_take(ref, ref_probe, views, config),
                "sync + visual fallback": lambda: sync_take(ref, ref_probe, mute, config),
                "decode": lambda: [sum(1 for _ in iter_frames(s)) for s, _ in views.values()],
            }
            best = {k: float("inf") for k in jobs}
            for _ in range(args.rounds):
                for k, fn in jobs.items():
                    best[k] = min(best[k], cpu(fn))
            ts = sync_take(ref, ref_probe, mute, config)
            assert ts.status == "ok" and ts.views["top"].method == "visual", ts.views["top"].error
            minutes += ref_row.duration_s / 60
            for k in jobs:
                totals[k] += best[k]
            print(f"{take_id}: {ref_row.duration_s:.2f} s audio, " + ", ".join(f"{k} {v:.3f} s" for k, v in best.items()))
        print(f"\nCPU seconds per minute of reference audio (7 views, {args.width}x{args.height}, one thread):")
        for k, v in totals.items():
            print(f"  {k:<24s} {v / minutes:8.2f}")
        print(f"  decode / sync ratio      {totals['decode'] / totals['sync']:8.1f}x")
        print(f"  decode / (sync+visual)   {totals['decode'] / totals['sync + visual fallback']:8.1f}x")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    main()
