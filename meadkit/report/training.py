"""The training section (with --run): loss curves from the run's CSV logs, and its evaluation JSON as a table and bars."""
from __future__ import annotations

import json
from pathlib import Path
from typing import Optional

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

from meadkit.corpus.names import PAPER_EMOTIONS
from meadkit.report.page import cell_text, esc, img_html, new_figure, note, panel_grid, table_html

_STEP_COLUMNS = ("step", "global_step", "iteration", "iter", "epoch")
#: At most this many metrics are plotted per loss log.
MAX_CURVES = 24


def long_metrics(df: pd.DataFrame) -> pd.DataFrame:
    """A loss log as long rows (step, split, metric, value).

    Accepts the baseline's long format (columns step, split, metric, value) and wide logs
    (a step column and one numeric column per metric); without a step column the row number is used.
    """
    step = next((c for c in _STEP_COLUMNS if c in df.columns), None)
    if {"metric", "value"} <= set(df.columns):
        out = df.assign(split=df["split"] if "split" in df.columns else "")[[c for c in (step,) if c] + ["split", "metric", "value"]]
    else:
        numeric = [c for c in df.columns if c != step and pd.api.types.is_numeric_dtype(df[c])]
        out = df.assign(split="").melt(id_vars=[c for c in (step, "split") if c], value_vars=numeric, var_name="metric")
    out = out.rename(columns={step: "step"}) if step else out.assign(step=out.groupby("metric").cumcount())
    out["value"] = pd.to_numeric(out["value"], errors="coerce")
    return out.dropna(subset=["value"])[["step", "split", "metric", "value"]]


def _loss_figure(name: str, log: pd.DataFrame) -> Figure:
    """One panel per metric (the first MAX_CURVES), a line per split; log scale for losses spanning decades."""
    metrics = list(dict.fromkeys(log["metric"]))[:MAX_CURVES]
    fig, axes = panel_grid(len(metrics), 3, 4, 2.6)
    for ax, metric in zip(axes, metrics):
        for split, g in log[log["metric"] == metric].groupby("split", sort=True):
            ax.plot(g["step"], g["value"], lw=1, marker="." if len(g) < 30 else None, label=split or None)
        values = log.loc[log["metric"] == metric, "value"]
        if values.min() > 0 and values.max() > 100 * values.min():  # losses spanning decades
            ax.set_yscale("log")
        if log.loc[log["metric"] == metric, "split"].nunique() > 1:
            ax.legend(fontsize=7)
        ax.set_title(metric, fontsize=9)
        ax.set_xlabel("step", fontsize=8)
        ax.grid(alpha=0.3)
    fig.suptitle(name, fontsize=10)
    return fig


def flatten_numbers(data, prefix: str = "") -> list[tuple[str, object]]:
    """(dotted key, value) for every number, string or short list of numbers in a JSON document."""
    out = []
    if isinstance(data, dict):
        for k, v in data.items():
            out += flatten_numbers(v, f"{prefix}.{k}" if prefix else str(k))
    elif isinstance(data, list) and data and all(isinstance(v, (dict, list)) for v in data):
        for i, v in enumerate(data):
            out += flatten_numbers(v, f"{prefix}[{i}]")
    elif isinstance(data, list):
        nums = all(isinstance(v, (int, float)) for v in data)
        out.append((prefix, ", ".join(cell_text(v) for v in data) if len(data) <= 12 or not nums
                    else f"{len(data)} values, mean {np.mean(data):.4g}"))
    else:
        out.append((prefix, data))
    return out


def _number(v) -> bool:
    """Whether a JSON value is a number (not a bool)."""
    return isinstance(v, (int, float)) and not isinstance(v, bool)


def _breakdown_figure(data: dict) -> Optional[Figure]:
    """Grouped bars of the evaluation's top-level dicts of numbers (e.g. accuracy per emotion)."""
    groups = {k: v for k, v in data.items() if isinstance(v, dict) and len(v) > 1 and all(_number(x) for x in v.values())}
    if not groups:
        return None
    keys = list(dict.fromkeys(k for g in groups.values() for k in g))
    keys = [e for e in PAPER_EMOTIONS if e in keys] + [k for k in keys if k not in PAPER_EMOTIONS]
    fig = new_figure(max(7.0, 0.5 * len(keys) * len(groups) ** 0.5 + 5), 3.2)
    ax = fig.add_subplot()
    width = 0.8 / len(groups)
    for i, (name, g) in enumerate(groups.items()):
        ax.bar(np.arange(len(keys)) + (i - (len(groups) - 1) / 2) * width, [g.get(k, np.nan) for k in keys], width, label=name)
    ax.set_xticks(range(len(keys)), keys, rotation=30, fontsize=8)
    ax.legend(fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax.grid(axis="y", alpha=0.3)
    return fig


def _confusions(data: dict) -> dict[str, dict]:
    """The evaluation's confusion matrices ({"labels": [...], "matrix": rows of counts}), by key."""
    return {k: v for k, v in data.items() if isinstance(v, dict) and set(v) == {"labels", "matrix"}}


def _confusion_figure(confusions: dict[str, dict]) -> Figure:
    """Each confusion matrix as a picture: rows the true class, columns the predicted one, shaded by the share of
    the row, with the percentage in each cell (a class that fails shows as a pale diagonal cell)."""
    fig, axes = panel_grid(len(confusions), 3, 4.2, 4.0)
    for ax, (name, c) in zip(axes, confusions.items()):
        m = np.asarray(c["matrix"], np.float64)
        share = m / np.maximum(m.sum(1, keepdims=True), 1)
        ax.imshow(share, vmin=0, vmax=1, cmap="Blues")
        for (i, j), v in np.ndenumerate(share):
            if m[i].sum():
                ax.text(j, i, f"{100 * v:.0f}", ha="center", va="center", fontsize=6,
                        color="white" if v > 0.6 else "black")
        ticks = range(len(c["labels"]))
        ax.set_xticks(ticks, c["labels"], rotation=60, fontsize=7)
        ax.set_yticks(ticks, c["labels"], fontsize=7)
        ax.set_xlabel("predicted", fontsize=8)
        ax.set_ylabel("true", fontsize=8)
        ax.set_title(name, fontsize=9)
    return fig


def _loss_curves(run: Path) -> list[str]:
    """A figure per loss log (*.csv, logs/*.csv) of the run, or why there is none."""
    parts = []
    csvs = sorted(run.glob("*.csv")) + sorted(run.glob("logs/*.csv"))
    if not csvs:
        parts.append(note(f"No loss log (*.csv or logs/*.csv) in {run}."))
    for p in csvs:
        name = str(p.relative_to(run))
        try:
            log = long_metrics(pd.read_csv(p))
        except (OSError, ValueError, pd.errors.ParserError) as e:
            parts.append(note(f"{name} cannot be read: {e}"))
            continue
        parts.append(img_html(_loss_figure(name, log), f"loss curves from {name}") if len(log) else note(f"{name} has no numeric values."))
    return parts


def _evaluations(run: Path) -> list[str]:
    """A table (and per-class bars) per evaluation (eval*.json) of the run, or why there is none."""
    parts = []
    evals = sorted(run.glob("eval*.json"))
    if not evals:
        parts.append(note(f"No eval*.json in {run} (run meadkit evaluate)."))
    for p in evals:
        try:
            data = json.loads(p.read_text())
        except (OSError, ValueError) as e:
            parts.append(note(f"{p.name} cannot be read: {e}"))
            continue
        confusions = _confusions(data) if isinstance(data, dict) else {}
        rest = {k: v for k, v in data.items() if k not in confusions} if isinstance(data, dict) else data
        parts.append(f"<h4>{esc(p.name)}</h4>" + table_html(pd.DataFrame(flatten_numbers(rest), columns=["key", "value"])))
        fig = _breakdown_figure(data) if isinstance(data, dict) else None
        if fig is not None:
            parts.append(img_html(fig, f"{p.name}: per-class figures"))
        if confusions:
            parts.append(img_html(_confusion_figure(confusions), f"{p.name}: confusion matrices (row %)"))
    return parts


def section_training(run: Optional[Path]) -> str:
    """Loss curves and evaluations of a run folder, or why there are none."""
    if run is None:
        return note("No training run given (meadkit report OUT -o report.html --run RUN adds loss curves and evaluation).")
    run = Path(run)
    if not run.is_dir():
        return note(f"Training run folder {run} does not exist.")
    return "".join(["<h3>Loss curves</h3>", *_loss_curves(run), "<h3>Evaluation</h3>", *_evaluations(run)])
