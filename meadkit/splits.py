"""Train/val/test splits of takes: the paper's per-take split, the common speaker-disjoint one, or random.

All views of a take always share its split, so no take leaks between splits.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from meadkit.config import check_fields

METHODS = ("speakers", "paper", "random")


@dataclass
class SplitConfig:
    """How `split` is assigned. `speakers` is the speaker-disjoint split used by later work."""

    method: str = field(default="speakers", metadata={"choices": METHODS})
    test_actors: tuple[str, ...] = ("M037", "M039", "M040", "M041", "M042", "W037", "W038", "W040")
    val_actors: tuple[str, ...] = ("M032", "M033", "M034", "M035", "W033", "W035", "W036")
    paper_test_takes: int = field(default=6, metadata={"min": 0})
    paper_test_takes_neutral: int = field(default=10, metadata={"min": 0})
    random_val: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    random_test: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "splits")


def assign_splits(df: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """'train' / 'val' / 'test' for each row of a frame with actor, emotion, level, take columns."""
    if df.empty:
        return pd.Series([], dtype="string", index=df.index)
    if cfg.method == "speakers":
        split = np.where(df["actor"].isin(cfg.test_actors), "test", np.where(df["actor"].isin(cfg.val_actors), "val", "train"))
    elif cfg.method == "paper":
        split = _paper(df, cfg)
    else:
        u = df["take_id"].map(lambda t: _unit(cfg.seed, t)).to_numpy()
        split = np.where(u < cfg.random_test, "test", np.where(u < cfg.random_test + cfg.random_val, "val", "train"))
    return pd.Series(split, index=df.index, dtype="string")


def _paper(df: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Per (actor, emotion, level), the last N take numbers present (N = 6, or 10 for neutral) are test."""
    takes = df[["actor", "emotion", "level", "take"]].drop_duplicates()
    rank = takes.groupby(["actor", "emotion", "level"])["take"].rank(method="dense", ascending=False)
    n = np.where(takes["emotion"] == "neutral", cfg.paper_test_takes_neutral, cfg.paper_test_takes)
    takes = takes.assign(split=np.where(rank <= n, "test", "train"))
    merged = df[["actor", "emotion", "level", "take"]].merge(takes, how="left", on=["actor", "emotion", "level", "take"])
    return merged["split"].to_numpy()


def _unit(seed: int, take_id: str) -> float:
    """A reproducible uniform number in [0, 1) for a take, independent of corpus order."""
    h = hashlib.sha256(f"{seed}:{take_id}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64
