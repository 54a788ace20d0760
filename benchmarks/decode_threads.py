"""Decoder threading on MEAD-encoded 1080p: one thread, slice threads or frame threads, for one clip alone
(-j 1) and for one clip per core at once (-j N), as wall frames/s and CPU ms per frame.

    python benchmarks/decode_threads.py [--seconds 4] [--threads 2] [--dir /tmp/meadkit-bench-decode]

The faces stage decodes with one thread (`iter_planes(threads=1)`): with as many workers as cores, any extra
decoder thread only adds CPU per frame. The figures say what a lone clip would gain from more.
"""
from __future__ import annotations

import argparse
import os
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import av

from meadkit.media.sources import Source
from meadkit.testing.face_clip import write_clip


def decode(path: str, threads: int, kind: str) -> tuple[int, float, float]:
    """(frames, wall s, CPU s of this process) to decode `path` to its planes with `threads` of `kind`."""
    wall, cpu, n = time.perf_counter(), time.process_time(), 0
    with Source(path).open() as fh, av.open(fh) as c:
        s = c.streams.video[0]
        s.thread_count, s.thread_type = threads, kind
        for f in c.decode(s):
            n += f.planes[0].line_size > 0
    return n, time.perf_counter() - wall, time.process_time() - cpu


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=4)
    ap.add_argument("--threads", type=int, default=2, help="decoder threads of the threaded cases")
    ap.add_argument("--dir", type=Path, default=Path("/tmp/meadkit-bench-decode"))
    args = ap.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    path = args.dir / f"mead_{args.seconds:g}s.mp4"
    if not path.exists():
        write_clip(path, round(args.seconds * 30), 0, 1920, 1080, iod_px=0.055 * 1920, encoding="mead")
    cores = os.cpu_count()
    cases = [(1, "SLICE"), (args.threads, "SLICE"), (args.threads, "FRAME")]
    print(f"{path.name}: MEAD encoding, {cores} cores, load {os.getloadavg()[0]:.1f}")
    print(f"{'case':>16} {'-j 1 f/s':>9} {'CPU ms/f':>9} {f'-j {cores} f/s':>10} {'CPU ms/f':>9}")
    for threads, kind in cases:
        n, wall, cpu = min((decode(str(path), threads, kind) for _ in range(2)), key=lambda r: r[1])
        start = time.perf_counter()
        with ProcessPoolExecutor(cores) as pool:
            runs = list(pool.map(decode, [str(path)] * cores, [threads] * cores, [kind] * cores))
        many = time.perf_counter() - start
        frames = sum(r[0] for r in runs)
        label = "1 thread" if threads == 1 else f"{threads} {kind.lower()}"
        print(f"{label:>16} {n / wall:9.1f} {1000 * cpu / n:9.2f} {frames / many:10.1f} "
              f"{1000 * sum(r[2] for r in runs) / frames:9.2f}")


if __name__ == "__main__":
    main()
