"""The cost of curation against the whole `prepare`: (curation seconds / prepare seconds) from one run.

    python benchmarks/curation.py [--resolution 480x270] [--seconds 2] [--work DIR]

Curation seconds = the take workers' curation stage (status.parquet `curation_s`, summed) plus the corpus-wide
step (`meadkit.curation.corpus.curate`, timed again on the run's records); prepare seconds = the run's wall time.
The target is <= 5%.
"""
from __future__ import annotations

import argparse
import dataclasses
import tempfile
import time
from pathlib import Path

from meadkit.config import load_pipeline
from meadkit.corpus.synth import SynthConfig, synthesize
from meadkit.curation.corpus import curate
from meadkit.manifest import read_table
from meadkit.prepare import run_prepare
from meadkit.take import load_records

#: As the curation test corpus: one actor, neutral + happy and sad at 3 levels, 4 views, curation defects.
CORPUS = SynthConfig(actors=1, emotions=("neutral", "happy", "sad"), levels=(1, 2, 3), takes=1, seconds=2.0,
                     views=("front", "left_30", "right_30", "top"), width=480, height=270, seed=7,
                     voice="procedural", curation_defects=True)


def measure(work: Path, config: SynthConfig) -> dict:
    """Synthesise, prepare once (no shards), and time both curation parts."""
    synthesize(work / "raw", config)
    pipeline = load_pipeline()
    t = time.perf_counter()
    run_prepare(work / "raw", work / "out", pipeline, progress=False, shards=False)
    prepare_s = time.perf_counter() - t
    worker_s = float(read_table(work / "out" / "manifests" / "status.parquet")["curation_s"].sum())
    records = list(load_records(work / "out").values())
    clips = [c for r in records for c in r.clips]
    t = time.perf_counter()
    curate(work / "out", clips, {r.take_id: r.fingerprint for r in records}, pipeline.curation)
    corpus_s = time.perf_counter() - t
    return {"takes": len(records), "prepare_s": prepare_s, "worker_curation_s": worker_s, "corpus_curation_s": corpus_s,
            "ratio": (worker_s + corpus_s) / prepare_s}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--resolution", default="480x270")
    ap.add_argument("--seconds", type=float, default=2.0)
    ap.add_argument("--work", type=Path, default=None)
    args = ap.parse_args()
    w, h = (int(v) for v in args.resolution.split("x"))
    config = dataclasses.replace(CORPUS, width=w, height=h, seconds=args.seconds)
    with tempfile.TemporaryDirectory() as tmp:
        r = measure(args.work or Path(tmp), config)
    print(f"{r['takes']} takes: prepare {r['prepare_s']:.1f} s, curation {r['worker_curation_s']:.2f} s in the "
          f"workers + {r['corpus_curation_s']:.2f} s over the corpus; ratio {r['ratio']:.3f} (target <= 0.05)")


if __name__ == "__main__":
    main()
