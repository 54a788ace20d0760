"""Redraw the pictures beside this script, to check the synthetic faces by eye:

- photo_truth.png: every built-in photo's face with its 68 true landmarks, numbered;
- synth_views.png: one actor per built-in photo (as `meadkit synth` renders it) in all 7 views,
  true landmarks drawn.

    python tests/pictures/make_pictures.py
"""
from __future__ import annotations

from pathlib import Path

import cv2
import numpy as np
from PIL import Image

from meadkit.corpus.names import VIEWS
from meadkit.corpus.photos import BUILTIN_PHOTOS, get_photo
from meadkit.corpus.synth import SynthConfig, _Actor

HERE = Path(__file__).parent


def _save(img: np.ndarray, path: Path, colours: int = 256) -> None:
    """PNG with an adaptive palette: small enough to keep in the repository."""
    Image.fromarray(img[:, :, ::-1]).quantize(colours, dither=Image.Dither.NONE).save(path, optimize=True)


def photo_truth(panel: int = 380) -> np.ndarray:
    """Each photo's face (its landmarks' box and a margin), points numbered."""
    panels = []
    for name in BUILTIN_PHOTOS:
        photo = get_photo(name)
        lm = photo.landmarks
        centre = (lm.min(0) + lm.max(0)) / 2
        s = panel / (1.3 * np.ptp(lm, axis=0).max())
        m = np.array([[s, 0, panel * 0.55 - s * centre[0]], [0, s, panel / 2 - s * centre[1]]])
        img = cv2.warpAffine(photo.image(), m, (int(panel * 1.1), panel), flags=cv2.INTER_CUBIC)
        pts = lm * s + m[:, 2]
        for i, (x, y) in enumerate(pts):
            cv2.circle(img, (int(round(x)), int(round(y))), 2, (0, 255, 0), -1, cv2.LINE_AA)
            cv2.putText(img, str(i), (int(x) + 2, int(y) - 2), cv2.FONT_HERSHEY_PLAIN, 0.7, (0, 0, 255), 1, cv2.LINE_AA)
        cv2.putText(img, name, (6, 18), cv2.FONT_HERSHEY_SIMPLEX, 0.55, (255, 255, 255), 2, cv2.LINE_AA)
        panels.append(img)
    panels.append(np.zeros_like(panels[0]))
    return np.vstack([np.hstack(panels[:3]), np.hstack(panels[3:])])


def synth_views(size: int = 150, height: int = 360) -> np.ndarray:
    """One actor per photo, each view's frame at t = 1 s (happy, level 3, mid-speech), cropped around the head."""
    config = SynthConfig(actors=len(BUILTIN_PHOTOS), width=height * 16 // 9, height=height, voice="procedural")
    rows = []
    for index, actor_id in enumerate(config.actor_ids()):
        actor = _Actor(config, actor_id, index)
        target = actor.face.target("happy", 3, 0.5)
        row = []
        for view in VIEWS:
            frame = actor.backdrops[view].copy()
            pts, dist = actor.face.project(target, actor.cameras[view], (0, 0, 0, 0, 0), config.width, config.height)
            actor.face.draw(frame, pts, dist)
            for x, y in pts[:68]:
                cv2.circle(frame, (int(round(x)), int(round(y))), 1, (0, 255, 0), -1)
            cx, cy = np.round(pts[:68].mean(0)).astype(int)
            r = int(0.55 * height * 0.6)
            crop = cv2.copyMakeBorder(frame, r, r, r, r, cv2.BORDER_REPLICATE)[cy : cy + 2 * r, cx : cx + 2 * r]
            crop = cv2.resize(crop, (size, size), interpolation=cv2.INTER_AREA)
            cv2.putText(crop, f"{actor.photo} {view}", (3, 11), cv2.FONT_HERSHEY_PLAIN, 0.7, (255, 255, 255), 1)
            row.append(crop)
        rows.append(np.hstack(row))
    return np.vstack(rows)


if __name__ == "__main__":
    _save(photo_truth(), HERE / "photo_truth.png")
    _save(synth_views(), HERE / "synth_views.png")
