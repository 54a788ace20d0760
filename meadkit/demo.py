"""`meadkit demo`: the whole product on a small built-in synthetic corpus, step by step.

Each step is the real command a user would type, run in-process by the `run` callable the `demo` command
passes (the CLI's own entry point), so the demo proves the commands themselves: synth -> prepare -> select ->
shard -> train -> evaluate -> generate -> report. This module knows the steps, not the CLI.
"""
from __future__ import annotations

import shlex
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

#: Speaker-disjoint split of the demo actors: M032 is a `val` speaker and M037 a `test` one in MEAD's common split.
DEMO_ACTORS = "M003,W009,M005,W011,M032,M037"


@dataclass(frozen=True)
class DemoSize:
    """How big the demo is: corpus and training budget."""

    actors: str
    emotions: str
    levels: str
    seconds: float
    views: str
    resolution: str
    steps: int
    size: int


FULL = DemoSize(DEMO_ACTORS, "neutral,happy,sad,angry,surprised", "1,3", 2.0, "front,left_30", "480x270", 150, 64)
QUICK = DemoSize("M003,W009,M032,M037", "neutral,happy,sad", "3", 1.5, "front", "480x270", 20, 32)


def steps(root: Path, s: DemoSize, jobs: int) -> list[tuple[str, list[str]]]:
    """The demo's commands, in order (as argument lists for the `meadkit` CLI)."""
    raw, out, shards, run = root / "raw", root / "prepared", root / "shards", root / "run"
    face = root / "face.png"
    audio = raw / "M037" / "audio" / "happy" / "level_3" / "001.m4a"
    return [
        ("synthesize a MEAD-shaped corpus", ["synth", str(raw), "--actors", s.actors, "--emotions", s.emotions, "--levels", s.levels,
                                             "--takes", "1", "--seconds", str(s.seconds), "--views", s.views,
                                             "--resolution", s.resolution, "--seed", "0", "-j", str(jobs)]),
        ("prepare: index, sync, faces, MFCC, manifests", ["prepare", str(raw), "-o", str(out), "-j", str(jobs), "--until", "faces", "--quiet"]),
        ("select the front view", ["select", str(out), "--view", "front", "-o", str(root / "front.parquet")]),
        ("shard the selection", ["shard", str(out), "--select", str(root / "front.parquet"), "--size", str(max(s.size, 64)),
                                 "-o", str(shards), "-j", str(jobs), "--quiet"]),
        ("train the baseline briefly", ["train", str(shards), "-o", str(run), "--steps", str(s.steps), "--size", str(s.size)]),
        ("evaluate on the test speaker", ["evaluate", str(run), str(shards), "--split", "test", "--max-samples", "300"]),
        ("generate a talking face", ["generate", str(run), "--image", str(face), "--audio", str(audio), "--emotion", "happy",
                                     "--level", "3", "-o", str(root / "generated.mp4")]),
        ("write the report", ["report", str(out), "-o", str(root / "report.html"), "--run", str(run)]),
    ]


def write_face(path: Path) -> Path:
    """The input photo for `generate`: scikit-image's astronaut (a real face shipped in a package)."""
    import cv2
    from skimage import data

    path.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(path), cv2.cvtColor(data.astronaut(), cv2.COLOR_RGB2BGR))
    return path


def run_demo(root: Path | str, run: Callable[[list[str]], None], quick: bool = False, jobs: int = 2,
             echo: Callable[[str], None] = print) -> dict[str, Path]:
    """Run every step with `run(args)` (one `meadkit` command line); raise on the first failing one.
    Returns the main outputs' paths."""
    root = Path(root).resolve()
    write_face(root / "face.png")
    started = time.perf_counter()
    for title, args in steps(root, QUICK if quick else FULL, jobs):
        echo(f"\n== {title}\n$ meadkit {shlex.join(args)}")
        t = time.perf_counter()
        run(args)
        echo(f"({time.perf_counter() - t:.1f} s)")
    outputs = {
        "corpus": root / "raw",
        "manifests": root / "prepared" / "manifests",
        "shards": root / "shards",
        "run": root / "run",
        "evaluation": root / "run" / "eval_test.json",
        "generated video": root / "generated.mp4",
        "report": root / "report.html",
    }
    echo(f"\nmeadkit demo finished in {time.perf_counter() - started:.0f} s. Outputs:")
    for name, path in outputs.items():
        echo(f"  {name:16s} {path}")
    return outputs
