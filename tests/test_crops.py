"""Crop modes (`[faces] crop`): aligned, fixed, box and FOMM-style tube crops against a moving face's truth."""
from __future__ import annotations

import cv2
import numpy as np
import pytest

from meadkit.config import ConfigError, load_pipeline
from meadkit.faces import FacesConfig, process_view
from meadkit.faces.align import TEMPLATE_68
from meadkit.faces.crops import Framing, tube_segments
from meadkit.media.sources import Source
from meadkit.media.video import iter_frames
from meadkit.testing.face_clip import write_clip


def _square(cx: float, cy: float, side: float) -> np.ndarray:
    """A face's 68 points (the template) whose box is the square (cx, cy, side)."""
    return TEMPLATE_68 * side + [cx - side / 2, cy - side / 2]


def test_a_tube_segment_grows_with_small_moves_and_a_jump_starts_another():
    centres = [100 + 2 * i for i in range(10)] + [400 + i for i in range(5)]  # a jump of three box sides at frame 10
    points = np.stack([_square(x, 100, 100) for x in centres])
    valid = np.ones(len(points), bool)
    valid[12] = False
    segment, boxes = tube_segments(points, valid, 0.25)
    np.testing.assert_array_equal(segment, [0] * 10 + [1] * 5)
    np.testing.assert_allclose(boxes[0], [50, 50, 168, 150])  # the union of the first segment's boxes
    assert len(boxes) == 2


def test_fixed_keeps_the_first_transform_and_box_smooths_its_side():
    cfg = FacesConfig(crop="fixed")
    fixed = Framing(cfg, 30.0)
    first = fixed(_square(100, 100, 80))
    assert fixed(_square(300, 150, 120)) is first and fixed(None) is first
    box = Framing(FacesConfig(crop="box", box_smooth_s=0.5), 30.0)
    sides = [1 / box(_square(100, 100, 80 + 20 * (i % 2)))[0, 0] for i in range(60)]  # a jaw pumping every frame
    raw = [1 / Framing(FacesConfig(crop="box", box_smooth_s=0), 30.0)(_square(100, 100, 80 + 20 * (i % 2)))[0, 0]
           for i in range(2)]
    assert np.ptp(sides[30:]) < 0.1 * abs(raw[1] - raw[0])
    m = box(_square(100, 100, 90))
    np.testing.assert_allclose(m[:, :2], np.eye(2) * m[0, 0])  # no rotation


@pytest.mark.parametrize("bad", ["crop=square", "crop_size=16", "crop_size=2048", "scale=0"])
def test_bad_crop_settings_are_one_line_errors(bad):
    with pytest.raises(ConfigError) as e:
        load_pipeline(overrides=[f"faces.{bad}"])
    assert "\n" not in str(e.value) and bad.split("=")[0] in str(e.value)
    if bad.startswith("crop="):
        assert "aligned, fixed, box, tube" in str(e.value)


@pytest.fixture(scope="module")
def moving_face(tmp_path_factory):
    d = tmp_path_factory.mktemp("moving")
    n = 90
    truth = write_clip(d / "clip.mp4", n, width=480, height=270, encoding="mead")
    return d, n, truth


@pytest.mark.slow
@pytest.mark.parametrize("mode", ["aligned", "fixed", "box", "tube"])
def test_each_mode_writes_crops_rederivable_from_its_transforms(moving_face, mode):
    d, n, truth = moving_face
    src = Source(str(d / "clip.mp4"))
    cfg = FacesConfig(crop=mode, crop_size=128)
    res = process_view(src, 0, n, d / f"{mode}.mp4", d / f"{mode}.npz", cfg)
    assert res.status == "ok", res.error
    z = np.load(d / f"{mode}.npz", allow_pickle=False)
    m, lm_src, lm_crop = z["transform"].astype(np.float64), z["landmarks_src"], z["landmarks_crop"]
    assert z["valid"].all()
    np.testing.assert_allclose(np.einsum("tij,tnj->tni", m[:, :, :2], lm_src) + m[:, None, :, 2], lm_crop, atol=1e-3)
    crops = [f.image for f in iter_frames(Source(str(d / f"{mode}.mp4")))]
    sources = [f.image for f in iter_frames(src)]
    assert len(crops) == n and crops[0].shape == (128, 128, 3)
    for k in (0, n // 2, n - 1):  # crop k is frame k warped by transform k (up to the crop's encoding)
        again = cv2.warpAffine(sources[k], m[k], (128, 128), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_REPLICATE)
        assert np.abs(again.astype(int) - crops[k]).mean() < 6
    centroid = lm_crop.mean(1)[:, 0]
    true_x = truth.mean(1)[:, 0]
    if mode in ("aligned", "box"):  # the crop follows the face: it stays put in the crop
        assert centroid.std() < 0.1 * true_x.std() * m[0, 0, 0]
    else:  # head motion kept: the face moves in the crop as the truth does
        assert np.corrcoef(centroid, true_x)[0, 1] > 0.9
    if mode in ("fixed", "tube"):
        segment = z["segment"]
        assert (segment >= 0).all()
        for s in np.unique(segment):
            assert np.ptp(m[segment == s], axis=0).max() == 0  # one transform per segment
