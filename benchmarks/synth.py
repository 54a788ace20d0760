"""How long `meadkit synth` takes, against a baseline measured in the same run: H.264-encoding the
same kind of frames (a drifting noise texture) with the same writer settings, i.e. the floor any
generator of these files pays. Prints wall/CPU seconds, frames per second and the ratio.

    python benchmarks/synth.py                    # the default small corpus: 2 actors, 8 emotions, 1 take, 3 s, 7 views, 1080p
    python benchmarks/synth.py --resolution 480x270 --emotions neutral,happy
"""
from __future__ import annotations

import argparse
import os
import tempfile
import time
from pathlib import Path

import numpy as np

from meadkit.corpus.names import EMOTIONS, VIEWS
from meadkit.corpus.synth import SynthConfig, read_truth, synthesize
from meadkit.media.video import VideoWriter
from meadkit.runner import Executor


def _timed(fn):
    w, c = time.perf_counter(), time.process_time()
    out = fn()
    return out, time.perf_counter() - w, time.process_time() - c


def encode_baseline(config: SynthConfig, n_frames: int, path: Path) -> None:
    """Encode `n_frames` frames of a drifting noise texture with the synth's writer settings."""
    rng = np.random.default_rng(0)
    base = rng.integers(60, 200, (config.height, config.width + n_frames, 3), dtype=np.uint8)
    with VideoWriter(str(path), config.fps, config.width, config.height, crf=config.crf, preset=config.preset) as w:
        for i in range(n_frames):
            w.write(base[:, i : i + config.width])


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--emotions", default=",".join(EMOTIONS))
    ap.add_argument("--levels", default="1,2,3")
    ap.add_argument("--takes", type=int, default=1)
    ap.add_argument("--seconds", type=float, default=3.0)
    ap.add_argument("--views", default=",".join(VIEWS))
    ap.add_argument("--resolution", default="1920x1080")
    ap.add_argument("--baseline-frames", type=int, default=300, help="frames encoded for the baseline")
    a = ap.parse_args()
    w, h = (int(x) for x in a.resolution.split("x"))
    config = SynthConfig(actors=a.actors, emotions=tuple(a.emotions.split(",")), levels=tuple(int(x) for x in a.levels.split(",")),
                         takes=a.takes, seconds=a.seconds, views=tuple(a.views.split(",")), width=w, height=h,
                         voice="procedural")
    print(f"load average before: {os.getloadavg()}, cpus: {os.cpu_count()}")
    with tempfile.TemporaryDirectory() as tmp:
        truth, wall, cpu = _timed(lambda: synthesize(Path(tmp) / "corpus", config, executor=Executor()))
        df = read_truth(truth)
        frames = int(df[df.written & (df.kind == "video")].n_frames.sum())
        takes = int((df.kind == "audio").sum())
        _, bwall, bcpu = _timed(lambda: encode_baseline(config, a.baseline_frames, Path(tmp) / "base.mp4"))
    print(f"synth: {takes} takes, {frames} frames at {w}x{h}: wall {wall:.1f} s, cpu {cpu:.1f} s, "
          f"{frames / wall:.1f} frames/s wall, {1000 * cpu / frames:.1f} ms cpu/frame")
    print(f"baseline (encode only, {a.baseline_frames} frames): {1000 * bcpu / a.baseline_frames:.1f} ms cpu/frame, "
          f"{a.baseline_frames / bwall:.1f} frames/s wall")
    print(f"ratio synth/encode-only per frame: cpu {(cpu / frames) / (bcpu / a.baseline_frames):.2f}, "
          f"wall {(wall / frames) / (bwall / a.baseline_frames):.2f}")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
