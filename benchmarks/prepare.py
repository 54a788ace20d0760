"""End-to-end `meadkit prepare` on a synthetic corpus: frames/s at -j 1 and -j 2 (scaling), peak memory
per process, and the share of time per stage.

    python benchmarks/prepare.py [--resolution 1920x1080] [--takes 4] [--seconds 3] [--work DIR]

Each run is a fresh `python -m meadkit prepare --until faces` subprocess; a sampler records the
resident memory of every process in its tree every 0.1 s.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import psutil

from meadkit.corpus.synth import SynthConfig, synthesize
from meadkit.manifest import read_table


def run_measured(cmd: list[str]) -> tuple[float, dict[int, int]]:
    """Wall seconds of `cmd` and the peak RSS (bytes) of each process of its tree."""
    peaks: dict[int, int] = {}
    proc = subprocess.Popen(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    root = psutil.Process(proc.pid)
    done = threading.Event()

    def sample():
        while not done.is_set():
            try:
                for p in [root, *root.children(recursive=True)]:
                    try:
                        peaks[p.pid] = max(peaks.get(p.pid, 0), p.memory_info().rss)
                    except psutil.Error:
                        pass
            except psutil.Error:
                pass
            time.sleep(0.1)

    t = threading.Thread(target=sample, daemon=True)
    start = time.perf_counter()
    t.start()
    _, err = proc.communicate()
    wall = time.perf_counter() - start
    done.set()
    t.join()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{err.decode()[-2000:]}")
    return wall, peaks


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument("--takes", type=int, default=2, help="takes per emotion")
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--views", default="front,left_30,right_30")
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    work = args.work or Path(tempfile.mkdtemp(prefix="meadkit-bench-prepare-"))
    w, h = (int(v) for v in args.resolution.split("x"))
    raw = work / "raw"
    if not raw.exists():
        print(f"synthesizing {raw} ...", flush=True)
        synthesize(raw, SynthConfig(actors=2, emotions=("neutral", "happy"), levels=(3,), takes=args.takes, seconds=args.seconds,
                                    views=tuple(args.views.split(",")), width=w, height=h, seed=1, voice="procedural"))
    results = {}
    for jobs in (1, 2):
        out = work / f"out-j{jobs}"
        if out.exists():
            subprocess.run(["rm", "-rf", str(out)], check=True)
        wall, peaks = run_measured([sys.executable, "-m", "meadkit", "prepare", str(raw), "-o", str(out), "-j", str(jobs),
                                    "--until", "faces", "--quiet"])
        clips = read_table(out / "manifests" / "clips.parquet")
        status = read_table(out / "manifests" / "status.parquet")
        frames = int(clips.loc[clips.status == "ok", "n_frames"].sum())
        results[jobs] = dict(wall=wall, frames=frames, fps=frames / wall, peak_mb=max(peaks.values()) / 2**20,
                             procs=len(peaks), stages={s: float(status[f"{s}_s"].fillna(0).sum()) for s in ("sync", "features", "faces")},
                             total=float(status["total_s"].sum()), ok=int((clips.status == "ok").sum()), clips=len(clips))
    print(f"\ncorpus: {raw} at {args.resolution}, {results[1]['clips']} clips, {results[1]['frames']} view-frames (ok)")
    print(f"load average at the end: {', '.join(f'{x:.1f}' for x in psutil.getloadavg())} on {psutil.cpu_count()} cores")
    print(f"{'jobs':>4} {'wall s':>8} {'frames/s':>9} {'peak RSS/proc MB':>17} {'procs':>6}")
    for jobs, r in results.items():
        print(f"{jobs:>4} {r['wall']:8.1f} {r['fps']:9.1f} {r['peak_mb']:17.0f} {r['procs']:>6}")
    print(f"scaling -j2 / -j1: {results[2]['fps'] / results[1]['fps']:.2f}x")
    r = results[1]
    other = r["total"] - sum(r["stages"].values())
    shares = {**r["stages"], "other (record, I/O)": other}
    print("share of per-take time (-j 1): " + ", ".join(f"{k} {100 * v / r['total']:.0f}%" for k, v in shares.items()))
    print(f"index + manifests + startup outside takes (-j 1): {r['wall'] - r['total']:.1f} s of {r['wall']:.1f} s")


if __name__ == "__main__":
    main()
