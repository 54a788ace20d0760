"""The command line: entry points, every command's help, and `meadkit sync` on the synthetic corpus."""
import subprocess
import sys

import pytest
from click.testing import CliRunner

from meadkit import __version__
from meadkit.cli import COMMANDS, main
from meadkit.corpus.synth import read_truth
from meadkit.manifest import read_table


def test_version_and_module_entry_point():
    out = subprocess.run([sys.executable, "-m", "meadkit", "--version"], capture_output=True, text=True, check=True)
    assert __version__ in out.stdout


@pytest.mark.parametrize("name", COMMANDS)
def test_every_command_explains_itself(name):
    result = CliRunner().invoke(main, [name, "--help"])
    assert result.exit_code == 0, result.output
    assert "Usage: " in result.output and len(result.output.splitlines()) > 5


def test_bad_override_is_a_usage_error_not_a_traceback(tmp_path):
    result = CliRunner().invoke(main, ["prepare", str(tmp_path), "-o", str(tmp_path / "o"), "--set", "faces.nope=1"])
    assert result.exit_code == 2 and "unknown key" in result.output and "Traceback" not in result.output


@pytest.mark.slow
def test_sync_command_recovers_offsets(tiny_corpus, tmp_path):
    raw, truth_path = tiny_corpus
    result = CliRunner().invoke(main, ["sync", str(raw), "-o", str(tmp_path), "--quiet", "--emotion", "happy"])
    assert result.exit_code == 0, result.output
    sync = read_table(tmp_path / "manifests" / "sync.parquet")
    truth = read_truth(truth_path).dropna(subset=["view"]).set_index(["take_id", "view"])["offset_s"]
    assert len(sync) and set(sync["emotion"]) == {"happy"}
    err = (sync.set_index(["take_id", "view"])["offset_s"] - truth.reindex(sync.set_index(["take_id", "view"]).index)).abs()
    assert err.max() < 1e-3
    assert not (tmp_path / "clips").exists()  # sync only: no faces or features were computed
