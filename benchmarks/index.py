"""Index throughput (files/s) on a MEAD-shaped tree and on the same corpus in per-actor tars, against a
per-file subprocess loop measured in the same run.

There is no `ffprobe` on these machines (imageio-ffmpeg ships only `ffmpeg`), so the baseline runs
`ffmpeg -hide_banner -i FILE` per file and parses its stream report from stderr - the same header
read that `ffprobe FILE` does, in one process per file. Run: `python benchmarks/index.py [--takes N] [-j N]`.
"""
from __future__ import annotations

import argparse
import re
import shutil
import subprocess
import tarfile
import tempfile
import time
from pathlib import Path

import imageio_ffmpeg
import numpy as np

from meadkit.corpus.names import MEAD_FPS, MEAD_SAMPLE_RATE, VIEWS, audio_relpath, video_relpath
from meadkit.index import index_corpus
from meadkit.media.audio import write_audio
from meadkit.media.video import VideoWriter
from meadkit.runner import Executor


def make_tree(root: Path, takes: int, seconds: float, actors: tuple[str, ...], noise: bool = False) -> list[Path]:
    """A MEAD tree: per actor, `takes` takes of happy/level_1 in all 7 views plus reference audio.

    One real clip (H.264 + AAC, 320x180, MEAD's frame rate) and one 48 kHz .m4a are encoded and
    copied to every path: probing reads headers, not pixels. `noise` makes high-bitrate frames
    (~7 Mb/s, so files and tars have realistic sizes and the `moov` index sits megabytes away).
    """
    n = int(round(seconds * MEAD_FPS))
    t = np.arange(int(seconds * MEAD_SAMPLE_RATE)) / MEAD_SAMPLE_RATE
    tone = (0.2 * np.sin(2 * np.pi * 220 * t)).astype(np.float32)
    clip, ref = root / "clip.mp4", root / "ref.m4a"
    rng = np.random.default_rng(0)
    ramp = np.linspace(0, 255, 320, dtype=np.float32)[None, :, None]
    with VideoWriter(str(clip), MEAD_FPS, 320, 180, audio=(tone, MEAD_SAMPLE_RATE)) as w:
        for i in range(n):
            image = np.broadcast_to((ramp + 4 * i) % 256, (180, 320, 3)).astype(np.uint8)
            w.write(rng.integers(0, 255, image.shape, dtype=np.uint8) if noise else image)
    write_audio(str(ref), tone, MEAD_SAMPLE_RATE)
    files = []
    for actor in actors:
        for take in range(1, takes + 1):
            paths = [(clip, root / "tree" / video_relpath(actor, v, "happy", 1, take)) for v in VIEWS]
            paths.append((ref, root / "tree" / audio_relpath(actor, "happy", 1, take)))
            for src, dst in paths:
                dst.parent.mkdir(parents=True, exist_ok=True)
                shutil.copyfile(src, dst)
                files.append(dst)
    return files


def make_tars(tree: Path, out: Path) -> None:
    """The same corpus as per-actor `video.tar` / `audio.tar` (uncompressed, as MEAD ships them)."""
    for actor_dir in sorted(p for p in tree.iterdir() if p.is_dir()):
        for kind in ("video", "audio"):
            (out / actor_dir.name).mkdir(parents=True, exist_ok=True)
            with tarfile.open(out / actor_dir.name / f"{kind}.tar", "w") as tf:
                tf.add(actor_dir / kind, arcname=kind)


_STREAM = re.compile(r"Stream #\d+:\d+.*?: (Video|Audio): (\w+)")
_DURATION = re.compile(r"Duration: (\d+):(\d+):([\d.]+)")


def subprocess_loop(files: list[Path]) -> int:
    """Baseline: one `ffmpeg -i FILE` process per file, parsing duration and streams; returns files parsed."""
    exe = imageio_ffmpeg.get_ffmpeg_exe()
    parsed = 0
    for f in files:
        err = subprocess.run([exe, "-hide_banner", "-i", str(f)], capture_output=True, text=True).stderr
        if _DURATION.search(err) and _STREAM.search(err):
            parsed += 1
    return parsed


def timed(fn, *args, **kw):
    t = time.perf_counter()
    result = fn(*args, **kw)
    return result, time.perf_counter() - t


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--takes", type=int, default=20, help="takes per actor (8 files each)")
    ap.add_argument("--actors", type=int, default=2)
    ap.add_argument("--seconds", type=float, default=3.0, help="clip length (MEAD takes last ~3-5 s)")
    ap.add_argument("--noise", action="store_true", help="high-bitrate clips (realistic file sizes, ~0.9 GB of temp data)")
    ap.add_argument("-j", "--jobs", type=int, default=2, help="processes for the parallel index run")
    args = ap.parse_args()
    actors = tuple(f"M{3 + 2 * i:03d}" for i in range(args.actors))
    with tempfile.TemporaryDirectory(prefix="meadkit-bench-index-") as tmp:
        root = Path(tmp)
        files = make_tree(root, args.takes, args.seconds, actors, args.noise)
        make_tars(root / "tree", root / "tars")
        n = len(files)
        print(f"corpus: {n} files ({len(actors)} actors x {args.takes} takes x (7 views + audio)), "
              f"{args.seconds:g} s clips at 320x180, {files[0].stat().st_size / 1e6:.2f} MB each; tars: {sum(p.stat().st_size for p in (root / 'tars').rglob('*.tar')) / 1e6:.1f} MB")
        index_corpus(root / "tree")  # warm the page cache and imports
        _, t_start = timed(index_corpus, root / "tree", executor=Executor(args.jobs, progress="off"))
        print(f"first parallel run (every parallel run starts its {args.jobs} worker processes): {t_start:.1f} s")
        parsed, t_base = timed(subprocess_loop, files)
        assert parsed == n, f"baseline parsed {parsed}/{n}"
        results = {}
        for label, where, jobs in (("tree, 1 process", "tree", 1), ("tars, 1 process", "tars", 1),
                                   (f"tree, {args.jobs} processes", "tree", args.jobs), (f"tars, {args.jobs} processes", "tars", args.jobs)):
            table, t = timed(index_corpus, root / where, executor=Executor(jobs, progress="off"))
            statuses = set(table.column("status").to_pylist())
            assert table.num_rows == n and statuses == {"ok"}, (label, table.num_rows, statuses)
            results[label] = t
        print(f"{'baseline: ffmpeg -i per file (1 process at a time)':58s} {n / t_base:8.1f} files/s")
        for label, t in results.items():
            print(f"{'meadkit index_corpus, ' + label:58s} {n / t:8.1f} files/s   x{t_base / t:.1f} vs baseline")


if __name__ == "__main__":
    main()
