"""Speech for the synthetic corpus: espeak-ng when it is on PATH, else a procedural voice
(glottal pulses with jitter through per-syllable vowel formants, 3-6 syllables/s, pauses).
Also returns the mouth-opening track that drives the lips, so audio predicts lips."""
from __future__ import annotations

import shutil
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from scipy import signal

#: Vowel formants (F1, F2, F3 in Hz, adult male) and how far each opens the mouth (0..1).
VOWELS = {
    "a": ((730, 1090, 2440), 1.0),
    "e": ((530, 1840, 2480), 0.7),
    "i": ((270, 2290, 3010), 0.45),
    "o": ((570, 840, 2410), 0.8),
    "u": ((300, 870, 2240), 0.5),
}
#: Per emotion: (pitch factor, speaking-rate factor, pitch-range factor) at full intensity.
PROSODY = {
    "neutral": (1.0, 1.0, 1.0), "happy": (1.12, 1.08, 1.5), "sad": (0.92, 0.8, 0.6),
    "angry": (1.1, 1.1, 1.3), "surprised": (1.2, 1.0, 1.8), "fear": (1.15, 1.15, 1.2),
    "disgusted": (0.95, 0.9, 0.9), "contempt": (0.97, 0.92, 0.8),
}
_WORDS = "she had your dark suit in greasy wash water all year don't ask me to carry an oily rag like that".split()


@dataclass
class Speech:
    """Mono speech on a timeline starting at `t0` seconds, and the mouth opening sampled at `env_rate`."""

    samples: np.ndarray  # float32 (n,)
    sample_rate: int
    t0: float
    opening: np.ndarray  # float32, 0..1
    env_rate: int = 1000

    def opening_at(self, t: np.ndarray) -> np.ndarray:
        """Mouth opening (0..1) at times t (seconds, same clock as t0)."""
        x = (np.asarray(t, np.float64) - self.t0) * self.env_rate
        return np.interp(x, np.arange(len(self.opening)), self.opening, left=0.0, right=0.0).astype(np.float32)


def _resonator(freq: float, bw: float, sr: int) -> tuple[np.ndarray, np.ndarray]:
    r = np.exp(-np.pi * bw / sr)
    a = [1.0, -2 * r * np.cos(2 * np.pi * freq / sr), r * r]
    return np.array([sum(a)]), np.array(a)  # unity gain at DC


def _smooth(x: np.ndarray, n: int) -> np.ndarray:
    if n < 2:
        return x
    k = np.hanning(n)
    return np.convolve(x, k / k.sum(), mode="same")


#: Samples per second of the procedural voice's envelopes (and of its mouth-opening track).
_ENV_RATE = 1000


@dataclass
class _Syllables:
    """Envelopes of a syllable sequence, sampled at `_ENV_RATE`: loudness, mouth opening, per-vowel weights,
    consonant noise and pitch accent."""

    loud: np.ndarray
    opening: np.ndarray
    weights: dict[str, np.ndarray]
    noise: np.ndarray
    accent: np.ndarray


def _syllables(duration_s: float, start_s: float, end_s: float, t0: float, speed: float,
               rng: np.random.Generator) -> _Syllables:
    """Syllables of 0.16-0.32 s (divided by `speed`) from start_s to end_s, with pauses between phrases."""
    ne = int(round(duration_s * _ENV_RATE)) + 1
    syl = _Syllables(np.zeros(ne), np.zeros(ne), {v: np.zeros(ne) for v in VOWELS}, np.zeros(ne), np.zeros(ne))
    pos, first = start_s, True
    while True:
        if not first and rng.random() < 0.2:
            pos += rng.uniform(0.15, 0.4)  # a pause between phrases
        first = False
        dur = rng.uniform(0.16, 0.32) / speed
        if pos + dur > end_s:
            break
        i0, i1 = int((pos - t0) * _ENV_RATE), int((pos + dur - t0) * _ENV_RATE)
        u = np.linspace(0, 1, i1 - i0)
        shape = np.sin(np.pi * np.clip(u * 1.15, 0, 1)) ** 0.8 * rng.uniform(0.6, 1.0)
        v = str(rng.choice(list(VOWELS)))
        syl.loud[i0:i1] = np.maximum(syl.loud[i0:i1], shape)
        syl.weights[v][i0:i1] = 1.0
        syl.opening[i0:i1] = np.maximum(syl.opening[i0:i1], shape * VOWELS[v][1])
        syl.accent[i0:i1] = rng.normal(0, 0.05)
        if rng.random() < 0.5:  # a consonant: a short noise burst at the onset
            k = int(rng.uniform(0.03, 0.07) * _ENV_RATE)
            syl.noise[max(i0 - k // 2, 0) : i0 + k // 2] = rng.uniform(0.2, 0.5)
        pos += dur
    syl.loud, syl.opening = _smooth(syl.loud, 25), _smooth(syl.opening, 40)
    return syl


def _glottal_source(f: np.ndarray, sr: int, rng: np.random.Generator) -> np.ndarray:
    """Rosenberg-like pulses at pitch `f` (Hz per sample), differentiated, plus a little breath noise."""
    phase = np.cumsum(f / sr) % 1.0
    pulse = np.where(phase < 0.6, 0.5 * (1 - np.cos(np.pi * phase / 0.6)), np.cos(np.pi * (phase - 0.6) / 0.8))
    return np.diff(pulse, prepend=0.0) + 0.02 * rng.normal(0, 1, len(f))


def _vowels(src: np.ndarray, syl: _Syllables, up, sr: int, female: bool) -> np.ndarray:
    """`src` through each vowel's three formant resonators, mixed by the vowels' weights over time."""
    scale = 1.17 if female else 1.0
    voiced = np.zeros(len(src))
    for v, ((f1, f2, f3), _) in VOWELS.items():
        w = up(_smooth(syl.weights[v], 30))
        if not w.any():
            continue
        y = src
        for fr, bw in ((f1 * scale, 80), (f2 * scale, 100), (f3 * scale, 150)):
            b, a = _resonator(fr, bw, sr)
            y = signal.lfilter(b, a, y)
        voiced += w * y
    return voiced


def procedural_speech(
    duration_s: float, start_s: float, end_s: float, sr: int, f0: float, female: bool,
    emotion: str, level_gain: float, rng: np.random.Generator, t0: float = 0.0,
) -> Speech:
    """A voice-like signal on [t0, t0+duration_s) speaking from start_s to end_s (same clock)."""
    n = int(round(duration_s * sr))
    t = t0 + np.arange(n) / sr
    pf, rf, rngf = (1 + (p - 1) * level_gain for p in PROSODY.get(emotion, (1, 1, 1)))
    syl = _syllables(duration_s, start_s, end_s, t0, rf, rng)
    up = lambda x: np.interp(np.arange(n) / sr * _ENV_RATE, np.arange(len(x)), x)  # noqa: E731

    # glottal source: pitch with declination, accents and jitter
    decl = np.interp(t, [start_s, end_s], [1.08, 0.92])
    jitter = signal.lfilter([0.02], [1, -0.98], rng.normal(0, 0.5, n))
    src = _glottal_source(f0 * pf * (decl + rngf * up(_smooth(syl.accent, 60)) + 0.01 * jitter), sr, rng)
    voiced = _vowels(src, syl, up, sr, female) * up(syl.loud)
    hiss = signal.lfilter(*signal.butter(2, [2500, 7000], btype="band", fs=sr), rng.normal(0, 1, n))
    out = voiced / (np.abs(voiced).max() + 1e-9) + 0.3 * hiss * up(_smooth(syl.noise, 10))
    out = 0.5 * out / (np.abs(out).max() + 1e-9)
    return Speech(out.astype(np.float32), sr, t0, (syl.opening / (syl.opening.max() + 1e-9)).astype(np.float32), _ENV_RATE)


def espeak_speech(
    duration_s: float, start_s: float, end_s: float, sr: int, f0: float, female: bool,
    emotion: str, level_gain: float, rng: np.random.Generator, t0: float = 0.0,
) -> Speech:
    """A sentence spoken by espeak-ng, placed at start_s and cut at end_s; mouth opening = its envelope."""
    import soundfile

    pf, rf, _ = (1 + (p - 1) * level_gain for p in PROSODY.get(emotion, (1, 1, 1)))
    words = " ".join(rng.choice(_WORDS, size=int(rng.integers(5, 9))))
    with tempfile.TemporaryDirectory() as tmp:
        wav = Path(tmp) / "s.wav"
        cmd = ["espeak-ng", "-v", "en+f3" if female else "en", "-s", str(int(160 * rf)),
               "-p", str(int(np.clip(50 * pf * f0 / (200 if female else 120), 0, 99))), "-w", str(wav), words]
        subprocess.run(cmd, check=True, capture_output=True, timeout=60)
        x, esr = soundfile.read(wav, dtype="float32")
    x = signal.resample_poly(x, sr, esr).astype(np.float32)
    n = int(round(duration_s * sr))
    out = np.zeros(n, np.float32)
    i0 = int(round((start_s - t0) * sr))
    seg = x[: max(0, int(round((end_s - t0) * sr)) - i0)]
    out[i0 : i0 + len(seg)] = seg
    out = 0.5 * out / (np.abs(out).max() + 1e-9)
    env_rate = 1000
    hop = sr // env_rate
    rms = np.sqrt(_smooth(out.astype(np.float64) ** 2, sr // 25)[::hop])
    opening = _smooth(rms / (rms.max() + 1e-9), 40)
    return Speech(out, sr, t0, opening.astype(np.float32), env_rate)


def speech(voice: str, *args, **kwargs) -> Speech:
    """`voice` = 'auto' (espeak-ng if on PATH, else procedural) or 'procedural'."""
    if voice == "auto" and shutil.which("espeak-ng"):
        return espeak_speech(*args, **kwargs)
    if voice not in ("auto", "procedural"):
        raise ValueError(f"unknown voice {voice!r} (use 'auto' or 'procedural')")
    return procedural_speech(*args, **kwargs)
