"""`meadkit report`: one self-contained HTML page describing a prepared OUT folder (and a training run).

Built from the manifests, plus a handful of decoded frames for the pictures. Plots are PNGs
drawn with matplotlib's Agg canvas and embedded as `data:` URIs, so the file opens without a
server. A missing manifest or stage makes its section say what is missing instead of failing.
This module assembles the page from the sections, one module each.
"""
from __future__ import annotations

from datetime import datetime, timezone
from pathlib import Path
from typing import Callable, Optional

from meadkit import __version__
from meadkit.atomic import atomic_path
from meadkit.report.audio import section_audio
from meadkit.report.completeness import section_completeness
from meadkit.report.corpus import section_overview
from meadkit.report.curation import section_curation
from meadkit.report.faces import section_faces
from meadkit.report.inputs import MANIFESTS, Inputs
from meadkit.report.page import esc
from meadkit.report.problems import section_problems
from meadkit.report.sync import section_sync
from meadkit.report.training import section_training

_CSS = """
body{font-family:system-ui,-apple-system,Segoe UI,Roboto,sans-serif;margin:0 auto;max-width:1200px;padding:0 16px 40px;color:#222}
h1{margin-top:24px}h2{border-bottom:2px solid #ddd;padding-bottom:4px;margin-top:36px}
nav a{margin-right:14px}table{border-collapse:collapse;margin:8px 0;font-size:13px}
th,td{border:1px solid #ccc;padding:3px 8px;text-align:left;vertical-align:top}th{background:#f3f3f3}
table.problems td{font-family:ui-monospace,Menlo,monospace;font-size:12px}
table.t1 tr:first-child td{font-weight:600}
.note{color:#555;font-size:14px}.error{color:#a00}img{max-width:100%;height:auto}
figure{margin:10px 0}figcaption{font-size:12px;color:#666}details{margin:6px 0}
"""


def _guard(fn: Callable[..., str], *args) -> str:
    """A section's HTML, or a readable error in its place (one broken section must not lose the page)."""
    try:
        return fn(*args)
    except Exception as e:  # reported on the page, the rest of the report still builds
        return f'<p class="error">This section could not be built: {esc(type(e).__name__)}: {esc(e)}</p>'


def render_report(out_dir: Path | str, run_dir: Optional[Path | str] = None) -> str:
    """The report's HTML text for a prepared OUT folder (and optionally a training run folder)."""
    inp = Inputs.load(out_dir)
    sections = [
        ("overview", "Corpus (the paper's Table 1)", _guard(section_overview, inp)),
        ("completeness", "Completeness", _guard(section_completeness, inp)),
        ("problems", "Problems", _guard(section_problems, inp)),
        ("sync", "Sync", _guard(section_sync, inp)),
        ("faces", "Faces", _guard(section_faces, inp)),
        ("audio", "Audio", _guard(section_audio, inp)),
        ("curation", "Curation", _guard(section_curation, inp)),
        ("training", "Training", _guard(section_training, Path(run_dir) if run_dir else None)),
    ]
    when = datetime.now(timezone.utc).strftime("%Y-%m-%d %H:%M UTC")
    nav = "".join(f'<a href="#{sid}">{esc(title)}</a>' for sid, title, _ in sections)
    body = "".join(f'<section id="{sid}"><h2>{esc(title)}</h2>{content}</section>' for sid, title, content in sections)
    return (
        f'<!DOCTYPE html><html lang="en"><head><meta charset="utf-8"><title>meadkit report: {esc(Path(out_dir).name)}</title>'
        f"<style>{_CSS}</style></head><body><h1>meadkit report</h1>"
        f'<p class="note">Prepared folder {esc(Path(out_dir).resolve())}'
        + (f"; training run {esc(Path(run_dir).resolve())}" if run_dir else "")
        + f"; generated {esc(when)} by meadkit {esc(__version__)}.</p><nav>{nav}</nav>{body}</body></html>"
    )


class ReportError(ValueError):
    """A folder the report cannot be about (nothing of `meadkit prepare` in it)."""


def build_report(out_dir: Path | str, html_path: Path | str, run_dir: Optional[Path | str] = None) -> Path:
    """Write the self-contained HTML report of a prepared OUT folder to `html_path` (atomically); a folder
    without any manifest raises ReportError (an empty report would only hide a wrong path)."""
    if not any((Path(out_dir) / "manifests" / f"{name}.parquet").exists() for name in MANIFESTS):
        raise ReportError(f"{out_dir} is not a prepared folder: no manifests/{{{','.join(MANIFESTS)}}}.parquet (run `meadkit prepare` first)")
    text = render_report(out_dir, run_dir)
    with atomic_path(html_path) as tmp:
        tmp.write_text(text, encoding="utf-8")
    return Path(html_path)
