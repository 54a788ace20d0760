"""Image quality of a clip's crop video: sharpness (variance of the Laplacian) and exposure (mean luma)."""
from __future__ import annotations

import cv2
import numpy as np

#: The columns `image_quality` fills.
PICTURE_COLUMNS = ("sharpness", "exposure")
#: Frames measured per clip at most (evenly spread over the clip).
MAX_MEASURED = 16


def image_quality(video: str, n_frames: int) -> dict:
    """Median sharpness and mean exposure (0-255 luma) over up to MAX_MEASURED frames of the crop video;
    NaN when it cannot be read."""
    wanted = set(np.linspace(0, max(n_frames - 1, 0), min(MAX_MEASURED, max(n_frames, 1))).round().astype(int))
    cap, sharp, luma = cv2.VideoCapture(video), [], []
    try:
        for i in range(max(wanted, default=-1) + 1):
            if not cap.grab():
                break
            if i in wanted:
                ok, frame = cap.retrieve()
                if ok:
                    grey = cv2.cvtColor(frame, cv2.COLOR_BGR2GRAY)
                    sharp.append(cv2.Laplacian(grey, cv2.CV_32F).var())
                    luma.append(grey.mean())
    finally:
        cap.release()
    if not sharp:
        return dict.fromkeys(PICTURE_COLUMNS, float("nan"))
    return {"sharpness": float(np.median(sharp)), "exposure": float(np.mean(luma))}
