"""Defects of the real MEAD release itself (`known_defects.csv`, shipped with the package), so a user can tell
the release's own problems from a broken download: `index` puts the matching entry in a row's `known` column."""
from __future__ import annotations

import csv
import functools
import io
from fnmatch import fnmatchcase
from importlib import resources
from typing import Optional


@functools.lru_cache(maxsize=None)
def known_defects() -> tuple[tuple[str, str, str], ...]:
    """(pattern, problem, source) rows of the table; `pattern` is a glob on a recording's relpath (`*` spans folders)."""
    text = resources.files("meadkit.corpus").joinpath("known_defects.csv").read_text(encoding="utf-8")
    return tuple((r["pattern"], r["problem"], r["source"]) for r in csv.DictReader(io.StringIO(text)))


def known_defect(relpath: Optional[str]) -> Optional[str]:
    """'problem (source: ...)' of the first known release defect whose pattern matches `relpath`, else None."""
    if not relpath:
        return None
    return next((f"{problem} (source: {source})" for pattern, problem, source in known_defects()
                 if fnmatchcase(relpath, pattern)), None)
