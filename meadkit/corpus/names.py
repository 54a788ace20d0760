"""MEAD's vocabulary (actors, views, emotions, levels) and parsing of its irregular file paths."""
from __future__ import annotations

import re
from dataclasses import dataclass
from fractions import Fraction
from typing import Optional

#: The exact frame rate ffprobe reports for MEAD videos (about 30.0005 fps).
MEAD_FPS = Fraction(65521, 2184)
#: Every frame rate seen in the MEAD release: 65521/2184 and 1000000/33333 (~30.0003 fps, the published M030 sample).
MEAD_RATES = (MEAD_FPS, Fraction(1000000, 33333))
#: A frame rate further than this (relative) from every MEAD rate is not MEAD's (25 fps re-encodes, 60 fps phones, ...).
MEAD_RATE_TOLERANCE = 0.01
#: Sample rate of MEAD's reference `.m4a` audio.
MEAD_SAMPLE_RATE = 48000

RELEASED_ACTORS = tuple(
    "M003 M005 M007 M009 M011 M012 M013 M019 M022 M023 M024 M025 M026 M027 M028 M029 M030 "
    "M031 M032 M033 M034 M035 M037 M039 M040 M041 M042 W009 W011 W014 W015 W016 W017 W018 "
    "W019 W021 W023 W024 W025 W026 W028 W029 W033 W035 W036 W037 W038 W040".split()
)
VIEWS = ("front", "down", "top", "left_30", "left_60", "right_30", "right_60")
#: Each view camera's angle from the front camera (degrees; positive: the camera on the actor's left, as MEAD's
#: left_* views), so the yaw a face looking at the front camera shows it.
VIEW_YAW = {"front": 0.0, "left_30": 30.0, "left_60": 60.0, "right_30": -30.0, "right_60": -60.0, "top": 0.0,
            "down": 0.0}
#: Emotions as MEAD's folder names, alphabetical.
EMOTIONS = ("angry", "contempt", "disgusted", "fear", "happy", "neutral", "sad", "surprised")
#: The paper's label order; label index = position here. Used for every integer emotion label.
PAPER_EMOTIONS = ("angry", "disgusted", "contempt", "fear", "happy", "sad", "surprised", "neutral")
LEVELS = (1, 2, 3)
#: Nominal takes per (view, emotion, level) for non-neutral emotions, and for neutral level 1.
NOMINAL_TAKES = 30
NOMINAL_NEUTRAL_TAKES = 40

def is_mead_rate(fps: Optional[Fraction]) -> bool:
    """True if `fps` is within MEAD_RATE_TOLERANCE of one of MEAD's frame rates."""
    return bool(fps) and any(abs(fps / r - 1) <= MEAD_RATE_TOLERANCE for r in MEAD_RATES)


ACTOR_RE = re.compile(r"^[MW]\d{3}$")
_EMOTION_ALIASES = {"disgust": "disgusted", "surprise": "surprised", "anger": "angry"}
_VIDEO_EXT = (".mp4",)
_AUDIO_EXT = (".m4a",)


def emotion_label(emotion: str) -> int:
    """Integer label of an emotion folder name, in the paper's order."""
    return PAPER_EMOTIONS.index(emotion)


def gender(actor: str) -> str:
    """'M' or 'W' from an actor id such as M003."""
    return actor[0]


def nominal_takes(emotion: str) -> int:
    """Nominal number of takes for one (view, emotion, level)."""
    return NOMINAL_NEUTRAL_TAKES if emotion == "neutral" else NOMINAL_TAKES


def nominal_levels(emotion: str) -> tuple[int, ...]:
    """Levels recorded for an emotion: neutral has level 1 only."""
    return (1,) if emotion == "neutral" else LEVELS


@dataclass(frozen=True, order=True)
class TakeKey:
    """One performance: (actor, emotion, level, take), shared by its 7 views and its reference audio."""

    actor: str
    emotion: str
    level: int
    take: int

    @property
    def id(self) -> str:
        """A stable string id, e.g. M003_happy_3_012, usable in file names."""
        return f"{self.actor}_{self.emotion}_{self.level}_{self.take:03d}"

    @classmethod
    def from_id(cls, take_id: str) -> "TakeKey":
        actor, emotion, level, take = take_id.split("_")
        return cls(actor, emotion, int(level), int(take))


@dataclass(frozen=True)
class ParsedName:
    """What a MEAD file path says about its file."""

    kind: str  # "video" or "audio"
    actor: str
    emotion: str
    level: int
    take: int
    view: Optional[str]  # None for the reference audio

    @property
    def key(self) -> TakeKey:
        return TakeKey(self.actor, self.emotion, self.level, self.take)


class BadName(ValueError):
    """A path that does not follow MEAD's layout; the message says why."""


def parse_path(relpath: str, actor_hint: Optional[str] = None) -> ParsedName:
    """Parse a MEAD path such as `M003/video/front/happy/level_3/012.mp4`.

    Accepts the real release's irregularities: an extra numeric level under `video/`
    (`video/1/front/...`), paths inside per-actor archives that start at `video/` or
    `audio/` (the actor then comes from `actor_hint`), and emotion aliases such as
    `disgust`. Raises BadName with a readable reason otherwise.
    """
    parts = [p for p in relpath.replace("\\", "/").split("/") if p not in ("", ".")]
    if not parts:
        raise BadName("empty path")
    fname = parts[-1]
    stem, dot, ext = fname.rpartition(".")
    ext = "." + ext.lower() if dot else ""
    if ext in _VIDEO_EXT:
        kind = "video"
    elif ext in _AUDIO_EXT:
        kind = "audio"
    else:
        raise BadName(f"not a MEAD media file (extension {ext or 'none'!r})")
    if not stem.isdigit():
        raise BadName(f"take number {stem!r} is not numeric")
    take = int(stem)

    try:
        k = parts.index(kind)
    except ValueError:
        raise BadName(f"no '{kind}' folder in path") from None
    actor = next((p for p in reversed(parts[:k]) if ACTOR_RE.match(p)), None) or actor_hint
    if actor is None or not ACTOR_RE.match(actor):
        raise BadName("no actor id ([MW]NNN) in path")
    rest = parts[k + 1 : -1]
    view = None
    if kind == "video":
        while rest and rest[0].isdigit():  # the extra `video/1/` level of some actors
            rest = rest[1:]
        if len(rest) != 3:
            raise BadName(f"expected video/<view>/<emotion>/level_<n>/, got {'/'.join(rest) or 'nothing'}")
        view, rest = rest[0], rest[1:]
        if view not in VIEWS:
            raise BadName(f"unknown view {view!r}")
    elif len(rest) != 2:
        raise BadName(f"expected audio/<emotion>/level_<n>/, got {'/'.join(rest) or 'nothing'}")
    emotion = _EMOTION_ALIASES.get(rest[0].lower(), rest[0].lower())
    if emotion not in EMOTIONS:
        raise BadName(f"unknown emotion {rest[0]!r}")
    m = re.fullmatch(r"level_?(\d)", rest[1].lower())
    if not m or int(m.group(1)) not in LEVELS:
        raise BadName(f"bad intensity folder {rest[1]!r}")
    return ParsedName(kind, actor, emotion, int(m.group(1)), take, view)


def video_relpath(actor: str, view: str, emotion: str, level: int, take: int) -> str:
    """The canonical relative path of a view video."""
    return f"{actor}/video/{view}/{emotion}/level_{level}/{take:03d}.mp4"


def audio_relpath(actor: str, emotion: str, level: int, take: int) -> str:
    """The canonical relative path of a take's reference audio."""
    return f"{actor}/audio/{emotion}/level_{level}/{take:03d}.m4a"
