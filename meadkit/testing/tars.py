"""A folder corpus repacked as per-actor tars, so tests render a synthetic corpus once and use both layouts."""
from __future__ import annotations

from pathlib import Path

import pyarrow.parquet as pq

from meadkit.corpus.synth import TRUTH_SCHEMA, actor_tar_naming, default_truth_path, tar_actor
from meadkit.manifest import write_rows


def pack_tars(src_dir: Path | str, src_truth: Path | str, out_dir: Path | str, tar_naming: str = "mixed",
              corrupt: bool = True, truth_path: Path | str | None = None) -> Path:
    """Repack a folder corpus written by `synthesize` as per-actor tars, as `synthesize(tar=True)` would
    (with `corrupt`, the actor carrying `extra_level` — else the second — gets a corrupt video tar).
    Returns the new truth's path. Lets tests reuse one rendering for both layouts."""
    src, out = Path(src_dir), Path(out_dir)
    rows = pq.read_table(src_truth).to_pylist()
    actors = list(dict.fromkeys(r["actor"] for r in rows))
    extra = [r["actor"] for r in rows if "extra_level" in (r["defects"] or [])]
    bad = (extra[0] if extra else actors[min(1, len(actors) - 1)]) if corrupt else None
    for index, actor in enumerate(actors):
        tar_actor(actor, actor_tar_naming(tar_naming, index), actor == bad, src, out, rows)
    return write_rows(rows, TRUTH_SCHEMA, Path(truth_path) if truth_path else default_truth_path(out))
