"""Writing video as MEAD is encoded, and reading it back as decoded."""
from fractions import Fraction

import av
import numpy as np
import pytest

from meadkit.corpus.names import MEAD_RATES
from meadkit.media.probe import probe
from meadkit.media.sources import Source
from meadkit.media.video import VideoWriter, iter_planes

W, H, N = 160, 96, 40


def _ramp(i: int) -> np.ndarray:
    """A horizontal grey ramp over the full 0..255 range with a red square moving by a pixel a frame (BGR)."""
    img = np.repeat(np.linspace(0, 255, W).astype(np.uint8)[None, :, None], H, 0).repeat(3, 2)
    img[30:60, i:i + 30] = (0, 0, 255)
    return img


@pytest.mark.parametrize("fps", MEAD_RATES, ids=str)
def test_mead_encoding_is_what_mead_ships(tmp_path, fps):
    path = tmp_path / "v.mp4"
    with VideoWriter(str(path), fps, W, H, encoding="mead", preset="ultrafast") as w:
        for i in range(N):
            w.write(_ramp(i))
    with av.open(str(path)) as c:
        s = c.streams.video[0]
        assert (s.codec_context.pix_fmt, s.codec_context.profile) == ("yuvj444p", "High 4:4:4 Predictive")
        assert s.codec_context.has_b_frames
        if fps.numerator == 1_000_000:  # 33333 us a frame: MEAD's time base
            assert s.time_base == Fraction(1, 1_000_000)
        assert sum(p.is_keyframe for p in c.demux(s) if p.size) == 1  # one keyframe for the whole clip
    info = probe(Source(str(path)))
    assert (info.fps, info.n_frames) == (fps, N)
    frames = list(iter_planes(Source(str(path))))
    assert [i for i, _ in frames] == list(range(N))
    planes = frames[0][1]
    assert planes.full_range and planes.u.shape == planes.y.shape == (H, W)
    assert planes.y[:20, :4].mean() < 8 and planes.y[:20, -4:].mean() > 247  # full range: no 16..235 squeeze


def test_the_encoding_is_checked():
    with pytest.raises(ValueError, match="encoding must be one of"):
        VideoWriter("/dev/null", Fraction(30), W, H, encoding="h265")
