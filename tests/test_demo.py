"""`meadkit demo --quick` runs every command end to end and leaves each output in place."""
import json

import pytest
from click.testing import CliRunner

from meadkit.cli import main
from meadkit.media.probe import probe
from meadkit.media.sources import Source


@pytest.mark.slow
def test_quick_demo_produces_every_output(tmp_path):
    result = CliRunner().invoke(main, ["demo", str(tmp_path), "--quick", "-j", "2"])
    assert result.exit_code == 0, result.output
    for rel in ("prepared/manifests/clips.parquet", "shards/meta.json", "run/eval_test.json", "generated.mp4", "report.html"):
        assert (tmp_path / rel).exists(), rel
    video = probe(Source(str(tmp_path / "generated.mp4")))
    assert video.has_audio and video.n_frames > 10
    metrics = json.loads((tmp_path / "run" / "eval_test.json").read_text())
    assert metrics["n_samples"] > 0 and 0.0 <= metrics["emotion_accuracy_real"] <= 1.0
    assert "data:image/png;base64," in (tmp_path / "report.html").read_text()
    assert "demo finished" in result.output
