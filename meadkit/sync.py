"""Sync stage: place a take's views on its reference audio's clock and cut them to one common window.

Each view's offset is found by GCC-PHAT between the view's own audio track and the take's
reference `.m4a`; a view without audio falls back to a visual motion signal correlated with an
audio-synced view (or to the median of the other views, marked approximate, or to an explicit
`unsynced`). Convention (see the shared brief): `t_ref = t_video + offset_s`.
"""
from __future__ import annotations

import math
from collections import Counter
from dataclasses import dataclass, field
from fractions import Fraction
from typing import Callable, Optional

import av
import cv2
import numpy as np
from scipy.fft import irfft, next_fast_len, rfft

from meadkit.corpus.names import TakeKey, is_mead_rate
from meadkit.media.sources import Source
from meadkit.media.audio import load_audio
from meadkit.media.probe import MediaError, Probe
from meadkit.media.video import iter_frames
from meadkit.records import Labels, SyncRow

#: Per-view statuses. Views with `start_frame` set (ok, approximate, and low_confidence views
#: that cover the window) are cut to the take's window; the others say why not in `error`.
STATUSES = ("ok", "low_confidence", "approximate", "unsynced", "short", "unusable")
#: How a view's offset was found: its own audio track, the visual motion fallback, or the median of the other views.
METHODS = ("audio", "visual", "median")


@dataclass
class SyncConfig:
    """Parameters of the sync stage (keys of the `[sync]` table of a pipeline TOML)."""

    rate: int = field(default=16000, metadata={"min": 1000})  # common analysis sample rate of the audio correlation (Hz)
    band_lo_hz: float = field(default=100.0, metadata={"min": 0.0})  # GCC-PHAT band: bins outside it are ignored
    band_hi_hz: float = field(default=4000.0, metadata={"min": 1.0})
    phat_beta: float = field(default=0.7, metadata={"min": 0.0, "max": 1.0})  # spectral whitening exponent (1 = plain PHAT; <1 keeps some weight on loud bins)
    max_offset_s: float = field(default=1.0, metadata={"min": 0.01})  # search offsets in [-max_offset_s, +max_offset_s]
    min_confidence: float = field(default=0.4, metadata={"min": 0.0, "max": 1.0})  # below this an audio/visual estimate is `low_confidence`
    peak_exclusion_s: float = field(default=0.002, metadata={"min": 0.0})  # +- this around the audio peak (its band-limited main lobe) is not a rival peak
    fallback: str = field(default="visual", metadata={"choices": ("visual", "median", "none")})  # for views without audio: "visual" (then median), "median", or "none"
    visual_width: int = field(default=64, metadata={"min": 8})  # width of the downscaled grey frames of the motion signal
    visual_anchors: int = field(default=3, metadata={"min": 1})  # audio-synced views (most confident first) tried as visual anchors; the best match wins
    min_visual_confidence: float = field(default=0.15, metadata={"min": 0.0, "max": 1.0})  # below this the visual estimate is rejected (median is used)
    short_fraction: float = field(default=0.5, metadata={"min": 0.0, "max": 1.0})  # a view covering less than this of the others' common span is `short`


@dataclass
class ViewSync:
    """Sync result of one view: its offset on the reference clock and the frames of the window it contributes."""

    offset_s: Optional[float] = None
    confidence: Optional[float] = None
    method: Optional[str] = None
    status: str = "unsynced"
    error: Optional[str] = None
    start_frame: Optional[int] = None
    n_frames: Optional[int] = None
    video_frames: Optional[int] = None  # frames in the view's file
    fps: Optional[Fraction] = None

    @property
    def offset_frames(self) -> Optional[float]:
        """The offset in (fractional) frames of the view's rate."""
        return None if self.offset_s is None or self.fps is None else self.offset_s * float(self.fps)


@dataclass
class TakeSync:
    """Sync result of one take: the common window on the reference clock and each view's result."""

    t0_s: Optional[float] = None
    n_frames: Optional[int] = None
    fps: Optional[Fraction] = None
    status: str = "failed"
    error: Optional[str] = None
    ref_duration_s: Optional[float] = None
    views: dict[str, ViewSync] = field(default_factory=dict)


# ---------------------------------------------------------------- correlation helpers


def _mono(x: np.ndarray) -> np.ndarray:
    x = np.asarray(x, dtype=np.float64)
    if x.ndim == 1:
        return x
    return x.mean(axis=0) if x.shape[0] <= x.shape[1] else x.mean(axis=1)


def _resample(x: np.ndarray, sr: int, rate: int) -> np.ndarray:
    from scipy.signal import resample_poly  # here: scipy.signal's import is ~1 s that a run's parent process never needs

    g = math.gcd(int(sr), int(rate))
    return x if sr == rate else resample_poly(x, rate // g, int(sr) // g)


def _parabolic(y: np.ndarray, i: int) -> float:
    """Sub-sample position of the peak at `i` of `y` from a parabola through its neighbours."""
    if i <= 0 or i >= len(y) - 1:
        return float(i)
    a, b, c = y[i - 1], y[i], y[i + 1]
    den = a - 2 * b + c
    return float(i) if den >= 0 else i + 0.5 * (a - c) / den


def _peak_confidence(y: np.ndarray, i: int, exclude: int = 0) -> float:
    """How distinct the peak at `i` of the non-negative curve `y` is: 1 - (highest other peak) / peak.

    The main lobe (down to its minima, and at least +-`exclude` samples) does not count as another peak.
    """
    lo = i
    while lo > 0 and y[lo - 1] < y[lo]:
        lo -= 1
    hi = i
    while hi < len(y) - 1 and y[hi + 1] < y[hi]:
        hi += 1
    lo, hi = min(lo, max(0, i - exclude)), max(hi, i + exclude)
    rest = np.concatenate([y[:lo], y[hi + 1 :]])
    if y[i] <= 0:
        return 0.0
    second = rest.max() if rest.size else 0.0
    return float(np.clip(1.0 - second / y[i], 0.0, 1.0))


def analysis_signal(x: np.ndarray, sr: int, config: SyncConfig = SyncConfig()) -> np.ndarray:
    """`x` mono-mixed and resampled to `config.rate`: the form both signals take before correlation."""
    return _resample(_mono(x), sr, config.rate)


def estimate_offset(ref: np.ndarray, ref_sr: int, sig: np.ndarray, sig_sr: int, config: SyncConfig = SyncConfig()) -> tuple[float, float]:
    """Offset (s) of `sig` against `ref` — sig at time t equals ref at t + offset — and a confidence in [0, 1].

    GCC-PHAT (cross-spectrum divided by |cross-spectrum|**phat_beta) of both signals (mono-mixed,
    resampled to `config.rate`) restricted to the band [band_lo_hz, band_hi_hz], searched within
    +-max_offset_s, refined to sub-sample precision with a parabola on the peak.
    Confidence = 1 - (best rival peak beyond +-peak_exclusion_s) / (main peak) of |correlation|.
    """
    return _gcc_phat(analysis_signal(ref, ref_sr, config), analysis_signal(sig, sig_sr, config), config)


def _gcc_phat(r: np.ndarray, s: np.ndarray, config: SyncConfig) -> tuple[float, float]:
    """`estimate_offset` on signals already in analysis form (see `analysis_signal`)."""
    rate = config.rate
    if not np.any(r) or not np.any(s):
        return 0.0, 0.0
    n = next_fast_len(len(r) + len(s))
    cross = rfft(r, n) * np.conj(rfft(s, n))
    freqs = np.arange(len(cross)) * rate / n
    cross[(freqs < config.band_lo_hz) | (freqs > config.band_hi_hz)] = 0
    mag = np.abs(cross)
    cross = np.where(mag > mag.max() * 1e-12, cross / np.maximum(mag, 1e-300) ** config.phat_beta, 0)
    cc = irfft(cross, n)
    maxlag = min(int(config.max_offset_s * rate), n // 2 - 1)
    window = np.abs(np.concatenate([cc[n - maxlag :], cc[: maxlag + 1]]))  # lags -maxlag .. +maxlag
    i = int(np.argmax(window))
    lag = _parabolic(window, i) - maxlag
    return lag / rate, _peak_confidence(window, i, exclude=int(config.peak_exclusion_s * rate))


def _normalized_xcorr(a: np.ndarray, b: np.ndarray, maxlag: int, min_overlap: int) -> tuple[np.ndarray, np.ndarray]:
    """Pearson correlation of a[j] with b[j + L] for L in [-maxlag, maxlag] (NaN where overlap < min_overlap)."""
    lags = np.arange(-maxlag, maxlag + 1)
    out = np.full(len(lags), np.nan)
    for k, L in enumerate(lags):
        j0, j1 = max(0, -L), min(len(a), len(b) - L)
        if j1 - j0 < min_overlap:
            continue
        x, y = a[j0:j1], b[j0 + L : j1 + L]
        sx, sy = x.std(), y.std()
        if sx > 0 and sy > 0:
            out[k] = float(np.mean((x - x.mean()) * (y - y.mean())) / (sx * sy))
    return lags, out


def motion_signal(source: Source, config: SyncConfig = SyncConfig()) -> np.ndarray:
    """Per-frame motion energy of a video: mean |difference| of consecutive downscaled grey frames.

    Value i describes the change from frame i to i+1 (time (i + 0.5) / fps of the view's clock).
    Raises MediaError if the video cannot be decoded.
    """
    prev, energy = None, []
    for fr in iter_frames(source, pix_fmt="gray"):
        h, w = fr.image.shape[:2]
        small = cv2.resize(fr.image, (config.visual_width, max(1, round(h * config.visual_width / w))), interpolation=cv2.INTER_AREA)
        small = small.astype(np.float32)
        if prev is not None:
            energy.append(float(np.abs(small - prev).mean()))
        prev = small
    if len(energy) < 3:
        raise MediaError(f"{source}: too few decodable frames for a motion signal")
    return np.asarray(energy)


def visual_offset(target: np.ndarray, anchor: np.ndarray, fps: Fraction, config: SyncConfig = SyncConfig()) -> tuple[float, float]:
    """Offset (s) of a view relative to an anchor view from their motion signals, and a confidence.

    Returns d with offset_target = offset_anchor + d, i.e. target frame j shows the instant of
    anchor frame j + d * fps. Sub-frame precision from a parabola on the correlation peak.
    """
    f = float(fps)
    maxlag = int(math.ceil(2 * config.max_offset_s * f))
    lags, rho = _normalized_xcorr(target, anchor, maxlag, min_overlap=max(3, min(len(target), len(anchor)) // 2))
    y = np.nan_to_num(np.clip(rho, 0, None), nan=0.0)
    if not np.any(y > 0):
        return 0.0, 0.0
    i = int(np.argmax(y))
    return (_parabolic(y, i) - maxlag) / f, _peak_confidence(y, i) * float(y[i])


# ---------------------------------------------------------------- per-take sync


def _count_frames(source: Source) -> int:
    """Frame count from demuxed video packets (no decoding), for files whose header states none."""
    with source.open() as fh, av.open(fh, "r") as c:
        return sum(1 for p in c.demux(c.streams.video[0]) if p.size)


def _audio_view(src: Source, pr: Probe, ref: np.ndarray, config: SyncConfig) -> ViewSync:
    """Offset of a view from its own audio track against the reference (`ref` in analysis form).

    The probe's stream start times put the audio track on the video's time 0."""
    sig, sr = load_audio(src, mono=True)
    off, conf = _gcc_phat(ref, analysis_signal(sig, sr, config), config)
    v_start, a_start = pr.video_start_s or 0.0, pr.audio_start_s or 0.0
    vs = ViewSync(offset_s=off - (a_start - v_start), confidence=conf, method="audio", status="ok")
    if conf < config.min_confidence:
        vs.status = "low_confidence"
        vs.error = f"audio correlation peak not distinct (confidence {conf:.2f} < {config.min_confidence})"
    return vs


def _fallback(name: str, vs: ViewSync, motion: Callable[[str], np.ndarray], result: dict[str, ViewSync], config: SyncConfig, why: str) -> None:
    """Give a view without usable audio an offset from the visual signal or the median of the others, or mark it unsynced.

    `motion(view)` returns a view's motion signal (decoded once per take and cached by the caller).
    """
    synced = {k: r for k, r in result.items() if r.method == "audio" and r.status == "ok"}
    notes = [why]
    if config.fallback == "visual" and synced:
        try:
            target = motion(name)
            anchors = sorted(synced, key=lambda k: -synced[k].confidence)[: config.visual_anchors]
            found = []  # (confidence, offset, anchor)
            for a in anchors:
                try:
                    d, conf = visual_offset(target, motion(a), vs.fps, config)
                    found.append((conf, synced[a].offset_s + d, a))
                except MediaError as e:
                    notes.append(f"anchor {a} unreadable: {e}")
            conf, off, a = max(found, default=(0.0, None, None))
            if off is not None and conf >= config.min_visual_confidence:
                vs.offset_s, vs.confidence, vs.method, vs.status = off, conf, "visual", "ok"
                vs.error = "; ".join(notes + [f"offset from motion correlated with view {a}"])
                return
            notes.append(f"visual match not distinct (best confidence {conf:.2f} < {config.min_visual_confidence})")
        except MediaError as e:
            notes.append(f"visual fallback failed: {e}")
    if config.fallback in ("visual", "median") and synced:
        vs.offset_s = float(np.median([r.offset_s for r in synced.values()]))
        vs.method, vs.status, vs.confidence = "median", "approximate", None
        notes.append(f"offset is the median of {len(synced)} audio-synced views (accuracy unknown)")
    else:
        vs.status = "unsynced"
        notes.append("no audio-synced view to fall back on" if config.fallback != "none" else "fallback disabled")
    vs.error = "; ".join(notes)


def _span(vs: ViewSync) -> tuple[float, float]:
    return vs.offset_s, vs.offset_s + vs.video_frames / float(vs.fps)


def _overlap(spans: list[tuple[float, float]]) -> float:
    return max(0.0, min(b for _, b in spans) - max(a for a, _ in spans))


def _cut_window(ts: TakeSync, config: SyncConfig) -> None:
    """Choose t0_s / n_frames covered by the reference and every core view; set each view's start_frame."""
    views = ts.views
    core = [k for k, v in views.items() if v.status in ("ok", "approximate")]
    if not core:
        core = [k for k, v in views.items() if v.status == "low_confidence"]
    ref_span = (0.0, ts.ref_duration_s)
    while len(core) > 1:  # exclude views far shorter than the common span of the others
        cover = {}
        for k in core:
            others = _overlap([ref_span] + [_span(views[o]) for o in core if o != k])
            cover[k] = (_overlap([ref_span, _span(views[k])] + [_span(views[o]) for o in core if o != k]) / others) if others > 0 else 1.0
        worst = min(core, key=cover.get)
        if cover[worst] >= config.short_fraction:
            break
        views[worst].status = "short"
        views[worst].error = f"covers {cover[worst]:.0%} of the other views' common span (< {config.short_fraction:.0%}); excluded from the window"
        core.remove(worst)
    if not core:
        ts.error = "no view with an offset"
        return
    fps = float(ts.fps)
    t0 = max([0.0] + [views[k].offset_s for k in core])
    end = min([ts.ref_duration_s] + [_span(views[k])[1] for k in core])
    starts = {k: round((t0 - views[k].offset_s) * fps) for k in core}
    n = min([math.floor((end - t0) * fps + 1e-6)] + [views[k].video_frames - starts[k] for k in core])
    if n <= 0:
        ts.error = "the reference audio and the views share no common time span"
        for k in core:
            views[k].error = "; ".join(filter(None, [views[k].error, ts.error]))
        return
    ts.t0_s, ts.n_frames, ts.status = t0, n, "ok"
    for k in core:
        views[k].start_frame, views[k].n_frames = starts[k], n
    for k, v in views.items():  # low-confidence views join if they cover the window
        if k not in core and v.status == "low_confidence":
            s = round((t0 - v.offset_s) * fps)
            if s >= 0 and s + n <= v.video_frames:
                v.start_frame, v.n_frames = s, n
            else:
                v.error += "; does not cover the window of the other views"


def sync_take(ref: Optional[Source], ref_probe: Optional[Probe], views: dict[str, tuple[Source, Optional[Probe]]],
              config: SyncConfig = SyncConfig(), ref_audio: Optional[tuple[np.ndarray, int]] = None) -> TakeSync:
    """Sync one take: every view's offset against the reference audio, then the common window.

    `views` maps view name -> (Source, Probe or None if probing failed). `ref_audio` = (mono
    samples, rate) of `ref` if the caller already decoded it (prepare shares it with the
    features stage). Never raises for bad media: problems become statuses and readable errors
    on the take and its views.
    """
    ts = TakeSync(views={k: ViewSync() for k in views})
    _readable_views(ts, views)
    if ts.error:
        return ts
    ref_signal = _reference_signal(ts, ref, ref_probe, ref_audio, config)
    if ts.error:
        for v in ts.views.values():
            if v.status != "unusable":
                v.status, v.error = "unsynced", ts.error
        return ts
    pending = _audio_offsets(ts, views, ref_signal, config)  # audio views first: fallbacks need audio-synced anchors
    signals: dict[str, np.ndarray] = {}

    def motion(view: str) -> np.ndarray:
        if view not in signals:
            signals[view] = motion_signal(views[view][0], config)
        return signals[view]

    for k, why in pending:
        _fallback(k, ts.views[k], motion, ts.views, config, why)
    _cut_window(ts, config)
    return ts


def _readable_views(ts: TakeSync, views: dict[str, tuple[Source, Optional[Probe]]]) -> None:
    """Mark views that are not readable video, or not at the take's frame rate (which this sets), `unusable`."""
    for k, (src, pr) in views.items():
        vs = ts.views[k]
        if pr is None or pr.video_codec is None or not pr.fps_num:
            vs.status, vs.error = "unusable", "unreadable video (no probe, no video stream or no frame rate)"
            continue
        vs.fps = pr.fps
        try:
            vs.video_frames = pr.n_frames or _count_frames(src)
        except (av.error.FFmpegError, OSError) as e:
            vs.status, vs.error = "unusable", f"cannot count frames: {e}"
    rates = Counter(v.fps for v in ts.views.values() if v.status != "unusable")
    if not rates:
        ts.error = "no readable view"
        return
    ts.fps = max(rates, key=lambda r: (is_mead_rate(r), rates[r]))  # a MEAD rate wins over an odd one, then the majority
    for v in ts.views.values():
        if v.status != "unusable" and v.fps != ts.fps:
            v.status, v.error = "unusable", f"frame rate {v.fps} differs from the take's {ts.fps}"
        elif v.status != "unusable" and not v.video_frames:
            v.status, v.error = "unusable", "video has no frames"


def _reference_signal(ts: TakeSync, ref: Optional[Source], ref_probe: Optional[Probe],
                      ref_audio: Optional[tuple[np.ndarray, int]], config: SyncConfig) -> Optional[np.ndarray]:
    """The reference audio in analysis form (its duration set on `ts`), or None with `ts.error` saying why."""
    if ref is None:
        ts.error = "no reference audio for this take"
    elif ref_probe is not None and not ref_probe.has_audio:
        ts.error = f"reference {ref} has no audio stream"
    else:
        try:
            samples, sr = ref_audio if ref_audio is not None else load_audio(ref, mono=True)
            ts.ref_duration_s = len(samples) / sr
            return analysis_signal(samples, sr, config)
        except MediaError as e:
            ts.error = f"reference audio unreadable: {e}"
    return None


def _audio_offsets(ts: TakeSync, views: dict[str, tuple[Source, Optional[Probe]]], ref_signal: np.ndarray,
                   config: SyncConfig) -> list[tuple[str, str]]:
    """Offsets of the usable views from their own audio tracks; returns (view, why) of those needing a fallback."""
    pending = []
    for k, (src, pr) in views.items():
        vs = ts.views[k]
        if vs.status == "unusable":
            continue
        if not pr.has_audio:
            pending.append((k, "no audio stream"))
            continue
        try:
            fps, nf = vs.fps, vs.video_frames
            ts.views[k] = vs = _audio_view(src, pr, ref_signal, config)
            vs.fps, vs.video_frames = fps, nf
        except (MediaError, av.error.FFmpegError, OSError) as e:
            pending.append((k, f"audio track unreadable ({e})"))
    return pending


def sync_rows(take_key: TakeKey, take_sync: TakeSync) -> list[SyncRow]:
    """One row per view of a take: what `manifests/sync.parquet` holds."""
    return [
        SyncRow.labelled(
            Labels.of(take_key, view), offset_s=v.offset_s, offset_frames=v.offset_frames, confidence=v.confidence,
            method=v.method, t0_s=take_sync.t0_s, start_frame=v.start_frame, n_frames=v.n_frames,
            fps_num=v.fps.numerator if v.fps else None, fps_den=v.fps.denominator if v.fps else None,
            video_frames=v.video_frames, status=v.status, error=v.error,
        )
        for view, v in take_sync.views.items()
    ]
