"""Train/val/test splits of takes, the field's presets by name, or a split file that reproduces a published one.

Presets (`[splits] method`):
- `speakers`: speaker-disjoint, fixed test and val actors (the split later MEAD work uses);
- `paper`: per (actor, emotion, level) the last 6 take numbers, the last 10 for neutral, are test (the MEAD
  release's README);
- `mead-4`: test actors M003, M030, W009, W015 (the set EAT and EDTalk report on), `mead4_val` other actors
  drawn by `seed` for val, the rest train;
- `sequences`: per (actor, emotion, level) the takes shuffled by `seed`, 70 / 15 / 15 % to train / val / test
  (as EMOTE's preparation does);
- `random`: each take by a seeded draw (`random_val`, `random_test`);
- `file`: read from a CSV of `take_id,split` (`file`), e.g. written by `meadkit select --export`.
All views of a take always share its split, so no take leaks between splits.
"""
from __future__ import annotations

import hashlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from meadkit.config import ConfigError, check_fields

METHODS = ("speakers", "paper", "random", "mead-4", "sequences", "file")
SPLITS = ("train", "val", "test")
MEAD4_TEST_ACTORS = ("M003", "M030", "W009", "W015")


class SplitFileError(ConfigError):
    """A split file that cannot be read, or that does not give every take exactly one known split."""


@dataclass(frozen=True)
class SplitConfig:
    """How `split` is assigned (see the module docstring for each method's provenance)."""

    method: str = field(default="speakers", metadata={"choices": METHODS})
    test_actors: tuple[str, ...] = ("M037", "M039", "M040", "M041", "M042", "W037", "W038", "W040")
    val_actors: tuple[str, ...] = ("M032", "M033", "M034", "M035", "W033", "W035", "W036")
    paper_test_takes: int = field(default=6, metadata={"min": 0})
    paper_test_takes_neutral: int = field(default=10, metadata={"min": 0})
    mead4_val: int = field(default=4, metadata={"min": 0})
    sequences_val: float = field(default=0.15, metadata={"min": 0.0, "max": 1.0})
    sequences_test: float = field(default=0.15, metadata={"min": 0.0, "max": 1.0})
    random_val: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    random_test: float = field(default=0.1, metadata={"min": 0.0, "max": 1.0})
    file: str = ""
    seed: int = 0

    def __post_init__(self) -> None:
        check_fields(self, "splits")


def assign_splits(df: pd.DataFrame, cfg: SplitConfig) -> pd.Series:
    """'train' / 'val' / 'test' for each row of a frame with actor, emotion, level, take, take_id columns."""
    if df.empty:
        return pd.Series([], dtype="string", index=df.index)
    if cfg.method == "speakers":
        split = _by_actor(df["actor"], cfg.test_actors, cfg.val_actors)
    elif cfg.method == "mead-4":
        others = sorted(set(df["actor"]) - set(MEAD4_TEST_ACTORS), key=lambda a: _unit(cfg.seed, a))
        split = _by_actor(df["actor"], MEAD4_TEST_ACTORS, others[: cfg.mead4_val])
    elif cfg.method == "paper":
        split = _paper(df, cfg)
    elif cfg.method == "sequences":
        split = _sequences(df, cfg)
    elif cfg.method == "file":
        split = df["take_id"].map(read_split_file(cfg.file, df["take_id"])).to_numpy()  # its other takes: not ours
    else:
        u = df["take_id"].map(lambda t: _unit(cfg.seed, t)).to_numpy()
        split = np.where(u < cfg.random_test, "test", np.where(u < cfg.random_test + cfg.random_val, "val", "train"))
    return pd.Series(split, index=df.index, dtype="string")


def _by_actor(actors: pd.Series, test: tuple[str, ...] | list[str], val: tuple[str, ...] | list[str]) -> np.ndarray:
    return np.where(actors.isin(test), "test", np.where(actors.isin(val), "val", "train"))


def _takes(df: pd.DataFrame) -> pd.DataFrame:
    return df[["actor", "emotion", "level", "take"]].drop_duplicates()


def _per_take(df: pd.DataFrame, takes: pd.DataFrame) -> np.ndarray:
    """The `split` of `takes` (one row per take) for every row of `df`."""
    keys = ["actor", "emotion", "level", "take"]
    return df[keys].merge(takes, how="left", on=keys)["split"].to_numpy()


def _paper(df: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Per (actor, emotion, level), the last N take numbers present (N = 6, or 10 for neutral) are test."""
    takes = _takes(df)
    rank = takes.groupby(["actor", "emotion", "level"])["take"].rank(method="dense", ascending=False)
    n = np.where(takes["emotion"] == "neutral", cfg.paper_test_takes_neutral, cfg.paper_test_takes)
    return _per_take(df, takes.assign(split=np.where(rank <= n, "test", "train")))


def _sequences(df: pd.DataFrame, cfg: SplitConfig) -> np.ndarray:
    """Per (actor, emotion, level), the takes in a seeded order: the first share train, then val, then test
    (of n takes, round(n * test) are test and round(n * val) val)."""
    takes = _takes(df)
    takes = takes.assign(u=[_unit(cfg.seed, f"{a}_{e}_{lv}_{t}") for a, e, lv, t in takes.itertuples(index=False)])
    order = takes.groupby(["actor", "emotion", "level"])["u"].rank(method="first").to_numpy() - 1
    n = takes.groupby(["actor", "emotion", "level"])["u"].transform("size").to_numpy()
    n_test, n_val = np.round(n * cfg.sequences_test), np.round(n * cfg.sequences_val)
    split = np.where(order >= n - n_test, "test", np.where(order >= n - n_test - n_val, "val", "train"))
    return _per_take(df, takes.assign(split=split))


def read_split_file(path: str | Path, take_ids, known=None) -> dict[str, str]:
    """take_id -> split from a CSV with `take_id,split` columns; SplitFileError (naming the first few) if a take of
    `take_ids` has none, a split is not train/val/test, a take has two, or (given `known`, the corpus's take ids)
    the file names a take the corpus does not have."""
    if not str(path):
        raise SplitFileError('splits.method = "file" needs splits.file = "PATH.csv" (take_id,split)')
    try:
        df = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError) as e:
        raise SplitFileError(f"cannot read the split file {path}: {e}") from None
    if not {"take_id", "split"} <= set(df.columns):
        raise SplitFileError(f"{path}: needs the columns take_id,split; has {','.join(df.columns)}")
    wanted = set(take_ids)
    problems = [("unknown take id(s)", sorted(set(df["take_id"]) - set(known)) if known is not None else []),
                ("take(s) without a split", sorted(wanted - set(df["take_id"]))),
                ("split(s) other than train/val/test", sorted(set(df["split"]) - set(SPLITS))),
                ("take(s) given twice", sorted(df.loc[df["take_id"].duplicated(), "take_id"].unique()))]
    said = [f"{n} {what}: {', '.join(ids[:5])}{', ...' if n > 5 else ''}" for what, ids in problems if (n := len(ids))]
    if said:
        raise SplitFileError(f"{path}: " + "; ".join(said))
    return dict(zip(df["take_id"], df["split"]))


def write_split_file(df: pd.DataFrame, path: str | Path) -> int:
    """Write the (take_id, split) assignment of a clips frame as CSV, one row per take; the number of takes."""
    takes = df[["take_id", "split"]].drop_duplicates().sort_values("take_id")
    takes.to_csv(path, index=False)
    return len(takes)


def _unit(seed: int, key: str) -> float:
    """A reproducible uniform number in [0, 1) for a key (a take id, an actor), independent of corpus order."""
    h = hashlib.sha256(f"{seed}:{key}".encode()).digest()
    return int.from_bytes(h[:8], "big") / 2**64
