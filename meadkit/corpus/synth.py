"""A synthetic MEAD-shaped corpus with known ground truth (`meadkit synth`).

Writes MEAD's exact layout (`<actor>/video/<view>/<emotion>/level_<n>/<NNN>.mp4` and
`<actor>/audio/<emotion>/level_<n>/<NNN>.m4a`, or per-actor tars), with real-photo faces (one photo
of a pool per actor) whose expression follows emotion/level and whose mouth follows the speech, 7
camera views of a 3D head with their own offsets and lengths, optional MEAD-like defects, and a
Parquet ground-truth table.
"""
from __future__ import annotations

import functools
import os
import shutil
import tarfile
import zlib
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Optional, Sequence, Union

import cv2
import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

from meadkit.atomic import TMP_MARK, atomic_path, tmp_name
from meadkit.corpus.names import (
    ACTOR_RE, EMOTIONS, LEVELS, MEAD_FPS, MEAD_SAMPLE_RATE, RELEASED_ACTORS, VIEWS, TakeKey, audio_relpath,
    emotion_label, gender, video_relpath,
)
from meadkit.corpus.photos import BUILTIN_PHOTOS, get_photo
from meadkit.corpus.synth_face import LEVEL_GAIN, FaceModel, make_identity
from meadkit.corpus.synth_views import FACE_HEIGHT_FRACTION, backdrop, make_camera, random_motion
from meadkit.corpus.synth_voice import speech
from meadkit.manifest import write_rows
from meadkit.media.audio import write_audio
from meadkit.media.video import ENCODINGS, VideoWriter
from meadkit.records import TRUTH_SCHEMA

if TYPE_CHECKING:
    from meadkit.runner import Executor

#: Defect kinds `--defects` injects (each once), as they appear in the truth's `defects` column.
DEFECT_KINDS = ("no_audio", "truncated", "missing_view", "missing_take", "extra_level", "short_audio",
                "stray_file", "corrupt_tar")
#: Curation defects `--curation-defects` injects (each once, in the first actor's emotional takes): a view whose
#: picture lags its own audio by `CURATION_LAG_FRAMES`, a blurred view, a take copied under a new take number, and
#: a take whose left_30 and right_30 files are swapped.
CURATION_DEFECT_KINDS = ("av_lag", "blurred", "duplicate", "swapped_view")
CURATION_LAG_FRAMES = 3
BLUR_SIGMA = 2.5
SWAPPED_VIEWS = ("left_30", "right_30")
TAR_NAMINGS = ("video.tar", "actor_video.tar", "mixed")

#: The truth's per-frame columns (`TRUTH_SCHEMA`), which `read_truth` leaves out.
_HEAVY = ("landmarks", "mouth_open")


@dataclass(frozen=True)
class SynthConfig:
    """What to synthesise. Defaults give MEAD's real formats (1080p, 65521/2184 fps, 48 kHz, MEAD's encoding)."""

    actors: Union[int, Sequence[str]] = 2
    emotions: tuple[str, ...] = EMOTIONS
    levels: tuple[int, ...] = LEVELS  # neutral always gets level 1 only
    takes: int = 2  # per (emotion, level)
    seconds: float = 3.0  # reference-audio length (each view differs by up to ~0.35 s)
    views: tuple[str, ...] = VIEWS
    photos: tuple[str, ...] = BUILTIN_PHOTOS  # actor i: photo i mod len; built-in names or image paths (.pts beside)
    frontal: bool = False  # turn each head to face the front camera, as MEAD's actors do (else: the photo's own pose)
    width: int = 1920
    height: int = 1080
    fps: Fraction = MEAD_FPS
    sample_rate: int = MEAD_SAMPLE_RATE
    seed: int = 0
    defects: bool = False
    curation_defects: bool = False
    tar: bool = False
    tar_naming: str = "mixed"  # video.tar | actor_video.tar | mixed (alternating per actor)
    voice: str = "auto"  # auto (espeak-ng if on PATH) | procedural
    encoding: str = "mead"  # mead: MEAD's own yuvj444p High 4:4:4 ~2 Mb/s, one keyframe | crf: yuv420p at `crf`
    crf: int = 23
    preset: str = "ultrafast"

    def __post_init__(self):
        if isinstance(self.actors, str):
            object.__setattr__(self, "actors", (self.actors,))
        for name in ("emotions", "levels", "views", "photos") + (() if isinstance(self.actors, int) else ("actors",)):
            object.__setattr__(self, name, tuple(getattr(self, name)))  # hashable: one actor cache per config

    def actor_ids(self) -> list[str]:
        """Actor ids: the given list, or N released ids alternating men and women."""
        if not isinstance(self.actors, int):
            return list(self.actors)
        men = [a for a in RELEASED_ACTORS if a[0] == "M"]
        women = [a for a in RELEASED_ACTORS if a[0] == "W"]
        mixed = [a for pair in zip(men, women) for a in pair] + men[len(women):]
        if not 1 <= self.actors <= len(mixed):
            raise ValueError(f"actors must be 1..{len(mixed)}, got {self.actors}")
        return mixed[: self.actors]

    def take_keys(self) -> list[TakeKey]:
        """Every take to synthesise, actor-major."""
        keys = []
        for actor in self.actor_ids():
            for emo in self.emotions:
                levels = (1,) if emo == "neutral" else self.levels
                for lvl in levels:
                    keys.extend(TakeKey(actor, emo, lvl, t) for t in range(1, self.takes + 1))
        return keys

    def validate(self) -> None:
        """Raise ValueError with a readable reason for an impossible config."""
        ids = self.actor_ids()
        if any(not ACTOR_RE.match(a) for a in ids) or len(set(ids)) != len(ids):
            raise ValueError(f"actor ids must be distinct MEAD ids like M003 or W021, got {ids}")
        bad = [e for e in self.emotions if e not in EMOTIONS]
        if bad:
            raise ValueError(f"unknown emotions {bad}; choose from {', '.join(EMOTIONS)}")
        if any(v not in VIEWS for v in self.views) or not self.views:
            raise ValueError(f"views must be among {', '.join(VIEWS)}")
        if any(lv not in LEVELS for lv in self.levels):
            raise ValueError(f"levels must be among {LEVELS}")
        if not self.photos:
            raise ValueError("photos must name at least one photo")
        for p in self.photos:
            get_photo(p)  # a ValueError naming the built-ins when it is neither one nor an annotated image
        if self.encoding not in ENCODINGS:
            raise ValueError(f"encoding must be one of {ENCODINGS}")
        if Fraction(self.fps) <= 0:
            raise ValueError(f"fps must be positive, got {self.fps}")
        if self.tar_naming not in TAR_NAMINGS:
            raise ValueError(f"tar_naming must be one of {TAR_NAMINGS}")
        if self.width % 2 or self.height % 2 or self.width < 64 or self.height < 64:
            raise ValueError("width and height must be even and at least 64 (H.264 yuv420p)")
        if self.takes < 1 or self.seconds < 1.0:
            raise ValueError("need takes >= 1 and seconds >= 1")
        if self.defects and (len(self.take_keys()) < 3 or len(self.views) < 3):
            raise ValueError("defects need at least 3 takes and 3 views, so each defect hits its own file")
        if self.curation_defects and (len(self._emotional_keys()) < 4 or not set(SWAPPED_VIEWS) <= set(self.views)):
            raise ValueError(f"curation defects need 4 emotional takes of the first actor and the views {SWAPPED_VIEWS}")

    def _emotional_keys(self) -> list[TakeKey]:
        """The first actor's non-neutral takes (where curation defects go)."""
        return [k for k in self.take_keys() if k.actor == self.actor_ids()[0] and k.emotion != "neutral"]


@dataclass
class DefectPlan:
    """Where each defect goes (deterministic for the seed)."""

    views: dict = field(default_factory=dict)  # (take_id, view) -> [kinds]
    audio: dict = field(default_factory=dict)  # take_id -> [kinds]
    missing_takes: set = field(default_factory=set)
    extra_level_actor: Optional[str] = None
    corrupt_tar_actor: Optional[str] = None
    stray: Optional[str] = None  # relpath
    lag: dict = field(default_factory=dict)  # (take_id, view) -> frames the picture lags its own audio
    blurred: set = field(default_factory=set)  # (take_id, view)
    swapped: set = field(default_factory=set)  # take_ids whose SWAPPED_VIEWS files trade places
    duplicates: dict = field(default_factory=dict)  # take_id -> the TakeKey its files are copied to


def plan_curation_defects(config: SynthConfig, plan: DefectPlan) -> DefectPlan:
    """Put each curation defect once in its own emotional take of the first actor (deterministic for the seed)."""
    if not config.curation_defects:
        return plan
    keys = config._emotional_keys()
    rng = np.random.default_rng([config.seed, 0xC0BA7E])
    lag_take, blur_take, dup_take, swap_take = (keys[i] for i in rng.permutation(len(keys))[:4])
    side = [v for v in config.views if v not in SWAPPED_VIEWS + ("front",)] or ["front"]
    plan.lag[(lag_take.id, "front")] = CURATION_LAG_FRAMES
    plan.blurred.add((blur_take.id, side[int(rng.integers(len(side)))]))
    plan.swapped.add(swap_take.id)
    plan.duplicates[dup_take.id] = TakeKey(dup_take.actor, dup_take.emotion, dup_take.level, config.takes + 1)
    return plan


def plan_defects(config: SynthConfig) -> DefectPlan:
    """Put each defect kind once in the first actors' takes, leaving the other takes clean."""
    plan = DefectPlan()
    if not config.defects:
        return plan
    rng = np.random.default_rng([config.seed, 0xDEFEC7])
    actors = config.actor_ids()
    keys = config.take_keys()
    pool = []
    for a in actors[:2]:
        mine = [k for k in keys if k.actor == a]
        pool += [mine[i] for i in rng.permutation(len(mine))]
    a_take, b_take, c_take = (pool[i % len(pool)] for i in range(3))
    side = [v for v in config.views if v != "front"]
    if len(side) < 3:  # too few side views for three distinct ones: the front view may take a defect too
        side = list(config.views)
    perm = rng.permutation(len(side))
    picks = [side[perm[i % len(side)]] for i in range(3)]
    for kind, view in zip(("no_audio", "truncated", "missing_view"), picks):
        plan.views.setdefault((a_take.id, view), []).append(kind)
    plan.audio[b_take.id] = ["short_audio"]
    plan.missing_takes.add(c_take.id)
    other = actors[1] if len(actors) > 1 else actors[0]
    plan.extra_level_actor = other
    plan.corrupt_tar_actor = other if config.tar else None
    k = a_take
    plan.stray = f"{k.actor}/video/{config.views[0]}/{k.emotion}/level_{k.level}/notes.txt"
    return plan


def _rng(config: SynthConfig, *names: str) -> np.random.Generator:
    return np.random.default_rng([config.seed] + [zlib.crc32(n.encode()) for n in names])


def _video_path(key: TakeKey, view: str, plan: DefectPlan) -> str:
    if key.id in plan.swapped and view in SWAPPED_VIEWS:
        view = SWAPPED_VIEWS[1 - SWAPPED_VIEWS.index(view)]
    rel = video_relpath(key.actor, view, key.emotion, key.level, key.take)
    if key.actor == plan.extra_level_actor:
        rel = rel.replace("/video/", "/video/1/", 1)
    return rel


class _Actor:
    """Per-actor rendering state: face model (photo `index` mod the pool), cameras and backdrops (one per view)."""

    def __init__(self, config: SynthConfig, actor: str, index: int):
        rng = _rng(config, "identity", actor)
        ident = make_identity(rng, index)
        photo = get_photo(config.photos[index % len(config.photos)])
        self.photo = photo.name
        self.face = FaceModel(photo, ident, FACE_HEIGHT_FRACTION * config.height, config.frontal)
        self.female = gender(actor) == "W"
        self.f0 = float(rng.uniform(180, 240) if self.female else rng.uniform(95, 135))
        self.cameras, self.backdrops = {}, {}
        for view in config.views:
            vr = _rng(config, "camera", actor, view)
            self.cameras[view] = make_camera(view, config.width, config.height, vr)
            tone = np.clip(np.asarray(ident.backdrop) * vr.uniform(0.85, 1.15, 3), 0, 255)
            if self.face.grey:  # a black-and-white photo gets a black-and-white studio
                tone[:] = tone.mean()
            self.backdrops[view] = backdrop(tuple(tone), config.width, config.height, vr)


@dataclass
class _Timeline:
    """One take's clocks: reference length, each view's offset/length, and the rendered span.

    All sample counts are at the take's sample rate on the reference clock; `world_start` and
    `world_end` bound the speech signal, which covers the reference and every view's track."""

    n_ref: int
    offset: dict  # view -> samples (view video time 0 on the reference clock)
    n_frames: dict  # view -> frames
    n_samples: dict  # view -> samples of its own track
    shift: dict  # view -> reference frame shown by the view's frame 0
    world_start: int
    world_end: int

    @classmethod
    def draw(cls, config: SynthConfig, rng: np.random.Generator) -> "_Timeline":
        sr, fps = config.sample_rate, Fraction(config.fps)
        n_ref = int(round(config.seconds * sr * rng.uniform(0.97, 1.03)))
        off = {v: int(rng.integers(-sr // 2, sr // 2 + 1)) for v in config.views}
        n_frames = {v: int(round((n_ref / sr + rng.uniform(-0.35, 0.35)) * fps)) for v in config.views}
        n_vs = {v: int(round(n_frames[v] / fps * sr)) for v in config.views}
        shift = {v: int(round(off[v] / sr * fps)) for v in config.views}
        start = min([0] + list(off.values())) - sr // 10
        end = max([n_ref] + [off[v] + n_vs[v] for v in config.views]) + sr // 10
        return cls(n_ref, off, n_frames, n_vs, shift, start, end)

    def track(self, world: np.ndarray, view: str) -> np.ndarray:
        """The slice of the world signal a view's own microphone hears."""
        i = self.offset[view] - self.world_start
        return world[i : i + self.n_samples[view]]


def _render_take(config: SynthConfig, actor: _Actor, key: TakeKey, plan: DefectPlan, root: Path) -> list[dict]:
    """Write one take's views and reference audio under `root`; return its truth rows."""
    rng = _rng(config, "take", key.id)
    sr, fps = config.sample_rate, Fraction(config.fps)
    tl = _Timeline.draw(config, rng)
    sp_start, sp_end = 0.25, tl.n_ref / sr - 0.25
    voice = speech(config.voice, (tl.world_end - tl.world_start) / sr, sp_start, sp_end, sr, actor.f0, actor.female,
                   key.emotion, LEVEL_GAIN[key.level] if key.emotion != "neutral" else 0.0, rng, t0=tl.world_start / sr)
    missing_take = key.id in plan.missing_takes
    base = dict(actor=key.actor, gender=gender(key.actor), emotion=key.emotion, emotion_label=emotion_label(key.emotion),
                level=key.level, take=key.take, take_id=key.id, photo=actor.photo, speech_start_s=sp_start,
                speech_end_s=sp_end)

    # reference audio: stereo, a little independent noise per channel
    ref = voice.samples[-tl.world_start : -tl.world_start + tl.n_ref]
    stereo = np.stack([ref, 0.9 * ref]) + rng.normal(0, 0.002, (2, tl.n_ref)).astype(np.float32)
    a_kinds = list(plan.audio.get(key.id, [])) + (["missing_take"] if missing_take else [])
    n_written = tl.n_ref // 2 if "short_audio" in a_kinds else tl.n_ref
    a_rel = audio_relpath(key.actor, key.emotion, key.level, key.take)
    if not missing_take:
        with atomic_path(root / a_rel) as tmp:
            write_audio(str(tmp), stereo[:, :n_written], sr)
    rows = [dict(base, kind="audio", view=None, relpath=a_rel, written=not missing_take, offset_s=0.0,
                 duration_s=n_written / sr, has_audio=True, sample_rate=sr, channels=2, n_samples=n_written,
                 defects=a_kinds)]

    kinds = {v: list(plan.views.get((key.id, v), [])) + (["missing_take"] if missing_take else [])
             + (["extra_level"] if key.actor == plan.extra_level_actor else []) + _curation_kinds(plan, key, v)
             for v in config.views}
    lms, opens = _write_views(config, actor, key, tl, voice, random_motion(rng), kinds, plan, root, rng)
    for v in config.views:
        written = not (missing_take or "missing_view" in kinds[v])
        audio = "no_audio" not in kinds[v]
        rows.append(dict(base, kind="video", view=v, relpath=_video_path(key, v, plan), written=written,
                         offset_s=tl.offset[v] / sr, n_frames=tl.n_frames[v], fps_num=fps.numerator,
                         fps_den=fps.denominator, duration_s=float(tl.n_frames[v] / fps), has_audio=audio,
                         sample_rate=sr if audio else None, channels=1 if audio else None,
                         n_samples=tl.n_samples[v] if audio else None, width=config.width, height=config.height,
                         defects=kinds[v], landmarks=lms[v].reshape(-1), mouth_open=opens[v]))
    return rows + _duplicate_rows(plan, key, rows, root)


def _curation_kinds(plan: DefectPlan, key: TakeKey, view: str) -> list[str]:
    """The curation defects of one (take, view) as the truth's `defects` names them."""
    hits = [((key.id, view) in plan.lag, "av_lag"), ((key.id, view) in plan.blurred, "blurred"),
            (key.id in plan.swapped and view in SWAPPED_VIEWS, "swapped_view")]
    return [kind for hit, kind in hits if hit]


def _duplicate_rows(plan: DefectPlan, key: TakeKey, rows: list[dict], root: Path) -> list[dict]:
    """With a `duplicate` planned for this take: copy its written files under the new take number (same bytes);
    the copies' truth rows, marked `duplicate`."""
    copy = plan.duplicates.get(key.id)
    if copy is None:
        return []
    out = []
    for r in rows:
        rel = (audio_relpath(copy.actor, copy.emotion, copy.level, copy.take) if r["kind"] == "audio"
               else _video_path(copy, r["view"], plan))
        if r["written"]:
            with atomic_path(root / rel) as tmp:
                shutil.copyfile(root / r["relpath"], tmp)
        out.append(dict(r, take=copy.take, take_id=copy.id, relpath=rel, defects=list(r["defects"]) + ["duplicate"]))
    return out


def _write_views(config, actor, key, tl, voice, motion, kinds, plan, root, rng):
    """Render the take frame by frame on the reference clock and feed every camera that sees each
    instant (one target face shared by all views, turned by each); returns per-view true landmarks
    (the projected 3D landmarks) and mouth opening.

    A view's frame i shows the face at reference frame i + shift (within half a frame of its exact
    time i/fps + offset_s); the truth landmarks are those of exactly what was drawn."""
    sr, fps, views = config.sample_rate, Fraction(config.fps), config.views
    writers, tmps = {}, {}
    lms = {v: np.zeros((tl.n_frames[v], 68, 2), np.float32) for v in views}
    opens = {v: np.zeros(tl.n_frames[v], np.float32) for v in views}
    try:
        for v in views:
            if "missing_take" in kinds[v] or "missing_view" in kinds[v]:
                continue
            audio = None
            if "no_audio" not in kinds[v]:  # the camera's own microphone: quieter, its own noise
                track = tl.track(voice.samples, v) * rng.uniform(0.6, 0.9)
                audio = ((track + rng.normal(0, 0.003, len(track))).astype(np.float32), sr)
            tmps[v] = tmp_name(root / _video_path(key, v, plan))
            tmps[v].parent.mkdir(parents=True, exist_ok=True)
            writers[v] = VideoWriter(str(tmps[v]), fps, config.width, config.height, crf=config.crf,
                                     preset=config.preset, audio=audio, encoding=config.encoding)
        lag = {v: plan.lag.get((key.id, v), 0) for v in views}
        for k in range(min(tl.shift[v] - lag[v] for v in views), max(tl.shift[v] - lag[v] + tl.n_frames[v] for v in views)):
            t = float(k / fps)
            opening = float(voice.opening_at(np.array([t]))[0])
            target = actor.face.target(key.emotion, key.level, opening)
            head = motion.at(t)
            for v in views:
                i = k - tl.shift[v] + lag[v]  # a lagging picture shows at frame i what frame i - lag should show
                if not 0 <= i < tl.n_frames[v]:
                    continue
                pts, dist = actor.face.project(target, actor.cameras[v], head, config.width, config.height)
                lms[v][i] = pts[:68]
                opens[v][i] = opening
                if v in writers:
                    frame = actor.backdrops[v].copy()
                    actor.face.draw(frame, pts, dist)
                    writers[v].write(cv2.GaussianBlur(frame, (0, 0), BLUR_SIGMA) if "blurred" in kinds[v] else frame)
        for v in list(writers):
            writers.pop(v).close()
            if "truncated" in kinds[v]:
                os.truncate(tmps[v], tmps[v].stat().st_size * 3 // 5)  # drops the tail, moov atom included
            os.replace(tmps[v], root / _video_path(key, v, plan))
    finally:
        for w in writers.values():
            w.close()
        for p in tmps.values():
            if p.exists():
                p.unlink()
    return lms, opens


def tar_actor(actor: str, naming: str, corrupt: bool, stage: Path, out: Path, rows: list[dict]) -> None:
    """Pack an actor's files from `stage` into video/audio tars under `out` (deterministic headers),
    fill the rows' archive/member, and with `corrupt` cut the video tar in the middle of its last member."""
    mine = [r for r in rows if r["actor"] == actor and r["written"]]
    for part in ("video", "audio"):
        members = sorted(r["relpath"] for r in mine if r["relpath"].split("/")[1] == part)
        if not members:
            continue
        if naming == "video.tar":
            archive, names = f"{actor}/{part}.tar", [m.split("/", 1)[1] for m in members]
        else:
            archive, names = f"{actor}_{part}.tar", members
        bad = None
        with atomic_path(out / archive) as tmp:
            with tarfile.open(tmp, "w", format=tarfile.USTAR_FORMAT) as tf:
                for rel, name in zip(members, names):
                    info = tf.gettarinfo(str(stage / rel), arcname=name)
                    info.mtime, info.uid, info.gid, info.uname, info.gname, info.mode = 1_600_000_000, 0, 0, "", "", 0o644
                    with open(stage / rel, "rb") as fh:
                        tf.addfile(info, fh)
            if part == "video" and corrupt:
                with tarfile.open(tmp) as tf:
                    last = tf.getmembers()[-1]
                os.truncate(tmp, last.offset_data + last.size // 2)
                bad = members[-1]
        for r in mine:
            if r["relpath"] in members:
                r["archive"], r["member"] = archive, names[members.index(r["relpath"])]
                if r["relpath"] == bad:
                    r["defects"] = list(r["defects"]) + ["corrupt_tar"]


def actor_tar_naming(naming: str, index: int) -> str:
    """The tar naming of the `index`-th actor (`mixed` alternates the two MEAD namings)."""
    return naming if naming != "mixed" else TAR_NAMINGS[index % 2]


def default_truth_path(out_dir: Path | str) -> Path:
    """`<out_dir>.truth.parquet`: beside the corpus, not inside it."""
    out_dir = Path(out_dir)
    return out_dir.with_name(out_dir.name + ".truth.parquet")


@functools.lru_cache(maxsize=1)
def _actor_state(config: SynthConfig, actor: str, index: int) -> _Actor:
    return _Actor(config, actor, index)


def _take_job(config: SynthConfig, plan: DefectPlan, stage: Path, task: tuple[int, TakeKey]) -> list[dict]:
    """Render one take (actor index, key), in a worker process or not; the actor's state is reused across its takes."""
    index, key = task
    return _render_take(config, _actor_state(config, key.actor, index), key, plan, stage)


def synthesize(out_dir: Path | str, config: SynthConfig = SynthConfig(), truth_path: Path | str | None = None,
               executor: Optional[Executor] = None) -> Path:
    """Write a MEAD-shaped corpus under `out_dir` and its ground truth; returns the truth's path.

    Takes are rendered by `executor` (in this process if None) and taken in order; each actor's stray file and
    tars are written as soon as its last take is done."""
    config.validate()
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    truth = Path(truth_path) if truth_path else default_truth_path(out)
    plan = plan_curation_defects(config, plan_defects(config))
    stage = out / f".staging{TMP_MARK}" if config.tar else out
    actors = config.actor_ids()
    keys = config.take_keys()
    index = {a: i for i, a in enumerate(actors)}
    last_take = {k.actor: k for k in keys}
    rows: list[dict] = []
    job, tasks = functools.partial(_take_job, config, plan, stage), [(index[k.actor], k) for k in keys]
    results = executor.map(job, tasks, label="synth", unit="takes", ordered=True) if executor else (job(t) for t in tasks)
    try:
        for key, take_rows in zip(keys, results):
            rows += take_rows
            if key == last_take[key.actor]:
                _finish_actor(config, key.actor, index[key.actor], plan, stage, out, rows)
    finally:
        results.close()  # stops any workers before their staging folder goes
        _actor_state.cache_clear()
        if config.tar:
            shutil.rmtree(stage, ignore_errors=True)
    return write_rows(rows, TRUTH_SCHEMA, truth)


def _finish_actor(config: SynthConfig, actor: str, index: int, plan: DefectPlan, stage: Path, out: Path,
                  rows: list[dict]) -> None:
    """Write the actor's stray file (with --defects) and, with --tar, pack its tars and drop its staged files."""
    if plan.stray and plan.stray.startswith(actor + "/"):
        with atomic_path(stage / plan.stray) as tmp:
            tmp.write_text("camera notes: retake 3 had a flicker\n")
        rows.append(dict(kind="stray", actor=actor, gender=gender(actor), relpath=plan.stray, written=True,
                         has_audio=False, defects=["stray_file"]))
    if config.tar:
        tar_actor(actor, actor_tar_naming(config.tar_naming, index), actor == plan.corrupt_tar_actor, stage, out, rows)
        shutil.rmtree(stage / actor, ignore_errors=True)


def read_truth(path: Path | str) -> pd.DataFrame:
    """The truth table without its per-frame columns (one row per file; `defects` as Python lists,
    integer columns as nullable pandas integers so audio rows keep n_frames = <NA>)."""
    cols = [f.name for f in TRUTH_SCHEMA if f.name not in _HEAVY]
    ints = {pa.int8(): pd.Int8Dtype(), pa.int16(): pd.Int16Dtype(), pa.int32(): pd.Int32Dtype(), pa.int64(): pd.Int64Dtype()}
    df = pq.read_table(path, columns=cols).to_pandas(types_mapper=ints.get)
    df["defects"] = df["defects"].map(lambda d: [] if d is None else list(d))
    return df


def _frames_column(path: Path | str, take_id: str, view: str, column: str) -> np.ndarray:
    t = pq.read_table(path, columns=["take_id", "view", column],
                      filters=[("take_id", "=", take_id), ("view", "=", view)])
    if t.num_rows != 1:
        raise KeyError(f"no truth row for take {take_id} view {view}")
    return np.asarray(t.column(column)[0].as_py(), np.float32)


def truth_landmarks(path: Path | str, take_id: str, view: str) -> np.ndarray:
    """(T, 68, 2) float32 true landmarks (iBUG order, source pixels) of every frame of one view."""
    return _frames_column(path, take_id, view, "landmarks").reshape(-1, 68, 2)


def truth_mouth_open(path: Path | str, take_id: str, view: str) -> np.ndarray:
    """(T,) float32 speech mouth opening (0..1) that drove each frame of one view."""
    return _frames_column(path, take_id, view, "mouth_open")
