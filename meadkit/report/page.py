"""HTML pieces of the report page: escaping, notes, tables, and matplotlib figures embedded as PNG `data:` URIs."""
from __future__ import annotations

import base64
import html
import io
import math

import numpy as np
import pandas as pd
from matplotlib.figure import Figure

DPI = 100


def esc(value) -> str:
    """HTML-escaped text of any value."""
    return html.escape(str(value), quote=True)


def is_missing(value) -> bool:
    """Whether a manifest value is absent (None, pandas NA or NaN)."""
    return value is None or value is pd.NA or (isinstance(value, float) and math.isnan(value))


def cell_text(value) -> str:
    """A value as shown in a table: blank when missing, 4 significant digits for floats."""
    if is_missing(value):
        return ""
    if isinstance(value, (float, np.floating)):
        return f"{value:.4g}"
    return str(value)


def table_html(df: pd.DataFrame, cls: str = "") -> str:
    """An escaped HTML table of a DataFrame (columns as header, no index); long paths may wrap after '/'."""
    head = "".join(f"<th>{esc(c)}</th>" for c in df.columns)
    body = "".join("<tr>" + "".join(f"<td>{esc(cell_text(v)).replace('/', '/<wbr>')}</td>" for v in row) + "</tr>"
                   for row in df.itertuples(index=False))
    return f'<table class="{esc(cls)}"><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>'


def note(text: str) -> str:
    """An escaped explanatory paragraph (what a section shows, or why it cannot)."""
    return f'<p class="note">{esc(text)}</p>'


def new_figure(width: float, height: float) -> Figure:
    """A figure of this size (inches) on the Agg canvas, laid out by matplotlib (no pyplot state)."""
    return Figure(figsize=(width, height), dpi=DPI, layout="constrained")


def panel_grid(n: int, max_cols: int, panel_w: float, panel_h: float) -> tuple[Figure, list]:
    """A figure of `n` panels in rows of at most `max_cols` (each panel_w x panel_h inches); spare cells hidden."""
    cols = min(max_cols, n)
    rows = math.ceil(n / cols)
    axes = new_figure(panel_w * cols, panel_h * rows).subplots(rows, cols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_axis_off()
    return axes[0].figure, list(axes[:n])


def img_html(fig: Figure, alt: str) -> str:
    """The figure as an embedded PNG `<img>`."""
    buf = io.BytesIO()
    fig.savefig(buf, format="png")
    data = base64.b64encode(buf.getvalue()).decode("ascii")
    return f'<figure><img alt="{esc(alt)}" src="data:image/png;base64,{data}"><figcaption>{esc(alt)}</figcaption></figure>'
