"""Benchmark the features stage against the paper's approach, measured in the same run (one core).

- MFCC throughput (x realtime) of meadkit's frame-exact `mead` recipe vs a direct
  librosa.feature.mfcc + delta call (the paper's code), on 60 s of 48 kHz audio;
- disk per take: one `features.npz` (mfcc28) vs the original one-file-per-frame 30x28 windows (written here
  as .npy files, not pickles, to be fair and safe), for a typical 4.1 s take and a 60 s one;
- training-loader window cuts/s: `feature_window` vs opening one stored window file per sample.

Run: python benchmarks/features.py
"""
import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS"):
    os.environ[_var] = "1"

import shutil  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402
from fractions import Fraction  # noqa: E402
from pathlib import Path  # noqa: E402

import librosa  # noqa: E402
import numpy as np  # noqa: E402

from meadkit.corpus.names import MEAD_FPS, MEAD_SAMPLE_RATE  # noqa: E402
from meadkit.media.sources import Source  # noqa: E402
from meadkit.features import FeaturesConfig, compute_features, feature_window, save_features  # noqa: E402
from meadkit.media.audio import load_audio, write_audio  # noqa: E402


def best_of(fn, repeats=5):
    """Fastest wall time of `repeats` calls (these machines are shared and noisy)."""
    times = []
    for _ in range(repeats):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def interleaved(*fns, rounds=7):
    """Fastest wall time of each function, calls alternated so that all see the same machine load."""
    best = [float("inf")] * len(fns)
    for _ in range(rounds):
        for k, fn in enumerate(fns):
            t = time.perf_counter()
            fn()
            best[k] = min(best[k], time.perf_counter() - t)
    return best


def speechlike(sr, seconds, seed=0):
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sr)) / sr
    y = 0.3 * np.sin(2 * np.pi * 180 * t * (1 + 0.05 * t)) * (1.1 + np.sin(2 * np.pi * 3 * t))
    return (y + 0.02 * rng.standard_normal(len(t))).astype(np.float32)


def paper_mfcc(y, sr):
    """The paper's code: librosa MFCC (14) + deltas with hop int(sr/30), then rows = frames."""
    m = librosa.feature.mfcc(y=y, sr=sr, n_mfcc=14, n_fft=int(0.025 * sr), hop_length=int(sr / 30))
    return np.concatenate([m, librosa.feature.delta(m)], axis=0).T


def disk_usage(paths):
    """(apparent bytes, allocated bytes, file count)."""
    st = [os.stat(p) for p in paths]
    return sum(s.st_size for s in st), sum(s.st_blocks * 512 for s in st), len(st)


def write_original_windows(feats, folder: Path):
    """The original layout: one file per video frame holding its zero-padded 30x28 window."""
    folder.mkdir(parents=True)
    padded = np.concatenate([np.zeros((15, feats.shape[1]), np.float32), feats, np.zeros((15, feats.shape[1]), np.float32)])
    paths = []
    for i in range(feats.shape[0]):
        p = folder / f"{i:05d}.npy"
        np.save(p, padded[i : i + 30])
        paths.append(p)
    return paths


def main():
    sr, fps, cfg = MEAD_SAMPLE_RATE, MEAD_FPS, FeaturesConfig()
    seconds = 60.0
    y = speechlike(sr, seconds)
    n_frames = int(seconds * fps)
    paper_mfcc(y[: sr * 2], sr)  # warm librosa/numba up before timing
    compute_features(y[: sr * 2], sr, 0.0, 50, fps, cfg)

    print(f"== MFCC throughput, {seconds:.0f} s of {sr} Hz audio, one thread ==")
    t_paper, t_mead, t_exact30 = interleaved(
        lambda: paper_mfcc(y, sr),
        lambda: compute_features(y, sr, 0.0, n_frames, fps, cfg),
        lambda: compute_features(y, sr, 0.0, int(seconds * 30), Fraction(30), cfg),
    )
    print(f"paper code (librosa, hop=int(sr/30)):     {t_paper * 1e3:7.1f} ms  {seconds / t_paper:7.0f}x realtime")
    print(f"meadkit mead @ 65521/2184 fps (exact):    {t_mead * 1e3:7.1f} ms  {seconds / t_mead:7.0f}x realtime")
    print(f"meadkit mead @ 30 fps:                    {t_exact30 * 1e3:7.1f} ms  {seconds / t_exact30:7.0f}x realtime")
    print(f"ratio meadkit / paper time: {t_mead / t_paper:.2f}")

    tmp = Path(tempfile.mkdtemp(prefix="meadkit-bench-features-"))
    try:
        m4a = tmp / "take.m4a"
        write_audio(str(m4a), np.stack([y, y]), sr)
        t_dec = best_of(lambda: load_audio(Source(str(m4a))), repeats=3)
        print(f"decode 60 s stereo .m4a (load_audio):     {t_dec * 1e3:7.1f} ms  {seconds / t_dec:7.0f}x realtime")

        print("\n== disk per take: one features.npz vs one 30x28 window file per frame ==")
        for take_s in (124 / float(fps), seconds):
            n = int(round(take_s * fps))
            res = compute_features(y[: int(take_s * sr)], sr, 0.0, n, fps, cfg)
            t0 = time.perf_counter()
            npz = save_features(res, tmp / f"ours-{n}" / "features.npz")
            t_ours = time.perf_counter() - t0
            t0 = time.perf_counter()
            files = write_original_windows(res.mfcc, tmp / f"orig-{n}")
            t_orig = time.perf_counter() - t0
            a_ours, b_ours, c_ours = disk_usage([npz])
            a_orig, b_orig, c_orig = disk_usage(files)
            print(f"take {take_s:5.1f} s ({n} frames):")
            print(f"  meadkit  : {c_ours:5d} file,  {a_ours:9d} B apparent, {b_ours:9d} B allocated, write {t_ours * 1e3:7.1f} ms")
            print(f"  original : {c_orig:5d} files, {a_orig:9d} B apparent, {b_orig:9d} B allocated, write {t_orig * 1e3:7.1f} ms")
            print(f"  ratio original/meadkit: {a_orig / a_ours:.1f}x apparent bytes, {b_orig / b_ours:.1f}x allocated, "
                  f"{c_orig}x files, {t_orig / t_ours:.0f}x write time")

        print("\n== training-loader window cuts (60 s take, random frames) ==")
        feats = compute_features(y, sr, 0.0, n_frames, fps, cfg).mfcc
        idx = np.random.default_rng(0).integers(0, n_frames, 200_000).tolist()
        out = np.empty((cfg.context, cfg.widths["mfcc28"]), np.float32)
        t_alloc = best_of(lambda: [feature_window(feats, i, cfg.context) for i in idx], repeats=3)
        t_out = best_of(lambda: [feature_window(feats, i, cfg.context, out=out) for i in idx], repeats=3)
        files = sorted((tmp / f"orig-{n_frames}").iterdir())
        few = idx[:5000]
        t_files = best_of(lambda: [np.load(files[i], allow_pickle=False) for i in few], repeats=3)
        r_alloc, r_out, r_files = len(idx) / t_alloc, len(idx) / t_out, len(few) / t_files
        print(f"feature_window (new array):        {r_alloc:10.0f} calls/s")
        print(f"feature_window (out= buffer):      {r_out:10.0f} calls/s")
        print(f"original: np.load one file each:{r_files:10.0f} calls/s (warm page cache)")
        print(f"ratio feature_window / per-file load: {r_alloc / r_files:.0f}x")
    finally:
        shutil.rmtree(tmp)


if __name__ == "__main__":
    main()
