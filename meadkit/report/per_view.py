"""Per-view quality of a manifest's numbers (sync offsets, face scores): box plots with the values, and a summary table."""
from __future__ import annotations

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meadkit.report.page import new_figure

#: At most this many individual values are drawn over each box plot (a random sample beyond).
MAX_POINTS = 2000


def per_view_plot(df: pd.DataFrame, metrics: list[tuple[str, str]], views: list[str]) -> Figure:
    """Box plot with the individual values per view, one panel per (column, label) metric."""
    fig = new_figure(4.2 * len(metrics), 3.2)
    axes = fig.subplots(1, len(metrics), squeeze=False)[0]
    rng = np.random.default_rng(0)
    for ax, (col, label) in zip(axes, metrics):
        for i, view in enumerate(views):
            d = pd.to_numeric(df.loc[df["view"] == view, col], errors="coerce").dropna().to_numpy(float)
            if len(d):
                ax.boxplot([d], positions=[i], widths=0.5, showfliers=False)
                shown = d if len(d) <= MAX_POINTS else rng.choice(d, MAX_POINTS, replace=False)
                ax.scatter(i + rng.uniform(-0.15, 0.15, len(shown)), shown, s=10 if len(shown) < 200 else 3,
                           alpha=0.6 if len(shown) < 200 else 0.25, color="tab:blue", lw=0)
        ax.set_xticks(range(len(views)), views, rotation=30, fontsize=8)
        ax.set_xlim(-0.6, len(views) - 0.4)
        ax.set_title(label, fontsize=10)
        ax.grid(axis="y", alpha=0.3)
    return fig


def summary_by_view(df: pd.DataFrame, views: list[str], metrics: list[str], counts: list[str]) -> pd.DataFrame:
    """One row per view: its row count, the value counts of `counts` columns, median/min/max of `metrics` columns."""
    rows = []
    for view in views:
        d = df[df["view"] == view]
        row = {"view": view, "rows": len(d)}
        for c in counts:
            row[c] = ", ".join(f"{k} {n}" for k, n in d[c].value_counts().items())
        for m in metrics:
            x = pd.to_numeric(d[m], errors="coerce").dropna()
            row[f"{m} median"] = x.median() if len(x) else None
            row[f"{m} min"] = x.min() if len(x) else None
            row[f"{m} max"] = x.max() if len(x) else None
        rows.append(row)
    return pd.DataFrame(rows)
