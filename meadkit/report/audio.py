"""The audio section: one take's feature rows (mfcc28, else its first set) over its reference waveform, both on the
reference clock."""
from __future__ import annotations

from typing import Optional

import numpy as np
from matplotlib.figure import Figure

from meadkit.features import load_features
from meadkit.media.probe import MediaError
from meadkit.report.inputs import PICTURE_TRIES, Inputs, first_source, frame_rate, records, reference_audio, takes_by_views
from meadkit.report.page import img_html, is_missing, new_figure, note


def audio_take(inp: Inputs) -> Optional[dict]:
    """The clips row whose features are plotted: of the first takes with the most ok views, the first whose file exists."""
    c = inp.ok_clips("features_npz")
    path = dict(zip(c["take_id"], c["features_npz"]))
    for take_id in takes_by_views(c)[:PICTURE_TRIES]:
        if inp.exists(path[take_id]):
            return records(c[c["take_id"] == take_id])[0]
    return None


def _draw_wave(ax, take_id: str, name: str, wave, t0: float, t_end: float) -> None:
    """The waveform as a min/max envelope, with the synced window shaded."""
    samples, sr = wave
    step = max(1, len(samples) // 4000)
    n = len(samples) // step * step
    env = samples[:n].reshape(-1, step)
    t = (np.arange(env.shape[0]) * step + step / 2) / sr
    ax.fill_between(t, env.min(axis=1), env.max(axis=1), color="tab:blue", lw=0)
    ax.axvspan(t0, t_end, color="orange", alpha=0.2, label="synced window")
    ax.set_ylabel("reference audio")
    ax.legend(loc="upper right", fontsize=8)
    ax.set_title(f"take {take_id}: reference audio ({sr} Hz) and {name} rows of the synced window", fontsize=10)


def _audio_figure(take_id: str, name: str, mfcc: np.ndarray, padded: np.ndarray, t0: float, fps: float, wave) -> Figure:
    """The reference waveform (min/max envelope) over one feature set's rows, both on the reference clock."""
    t_end = t0 + len(mfcc) / fps
    fig = new_figure(11, 5.2 if wave is not None else 3.4)
    axes = fig.subplots(2 if wave is not None else 1, 1, sharex=True, squeeze=False)[:, 0]
    if wave is not None:
        _draw_wave(axes[0], take_id, name, wave, t0, t_end)
    ax = axes[-1]
    std = mfcc.std(axis=0, keepdims=True)
    z = (mfcc - mfcc.mean(axis=0, keepdims=True)) / np.where(std > 0, std, 1)
    half = 0.5 / fps
    ax.imshow(z.T, aspect="auto", origin="lower", cmap="coolwarm", vmin=-3, vmax=3, interpolation="nearest",
              extent=(t0 - half, t_end - half, -0.5, mfcc.shape[1] - 0.5))
    if name == "mfcc28":
        ax.axhline(mfcc.shape[1] / 2 - 0.5, color="black", lw=0.6)
    for i in np.flatnonzero(padded):
        ax.axvspan(t0 + i / fps - half, t0 + i / fps + half, color="grey", alpha=0.5, lw=0)
    ax.set_xlim(min(0.0, t0 - half), max(t_end, len(wave[0]) / wave[1] if wave is not None else t_end))
    ax.set_ylabel("coefficient (MFCC | deltas)" if name == "mfcc28" else "mel band")
    ax.set_xlabel("time on the reference clock (s)")
    if wave is None:
        ax.set_title(f"take {take_id}: {name} rows of the synced window", fontsize=10)
    return fig


def _reference_wave(inp: Inputs, take_id: str) -> tuple[Optional[tuple], list[str]]:
    """The take's decoded reference audio (samples, rate), or None with a note saying why not."""
    from meadkit.media.audio import load_audio

    ref = None if inp.recordings is None else reference_audio(inp.recordings, take_id)
    if ref is None or ref.empty:
        return None, [note("The take's reference audio is not listed in recordings: waveform not shown.")]
    try:
        return load_audio(first_source(ref), mono=True), []
    except MediaError as e:
        return None, [note(f"Reference audio cannot be decoded: {e}")]


def section_audio(inp: Inputs) -> str:
    """The feature picture of one take (with its waveform where the reference audio decodes)."""
    missing = inp.need("clips")
    if missing:
        return missing
    row = audio_take(inp)
    if row is None:
        return note(f"No features file found (no clip with status ok names a features_npz that exists; {PICTURE_TRIES} takes tried): "
                    "the features stage did not run or failed.")
    arrays = load_features(inp.out / row["features_npz"])
    name = "mfcc28" if "mfcc28" in arrays else next(k for k in arrays if k != "padded")
    mfcc, padded = arrays[name], arrays["padded"]
    fps = float(frame_rate(row))
    t0 = float(row["t0_s"]) if not is_missing(row["t0_s"]) else 0.0
    wave, notes = _reference_wave(inp, row["take_id"])
    fig = _audio_figure(row["take_id"], name, mfcc, padded, t0, fps, wave)
    return "".join([
        note(f"{name}: {len(mfcc)} rows x {mfcc.shape[1]} values at {fps:.4f} rows/s, window from {t0:.3f} s; "
             f"{int(padded.sum())} padded rows shaded grey; each coefficient standardised for display."),
        *notes, img_html(fig, f"{name} and waveform of take {row['take_id']}"),
    ])
