"""`hersr demo` end to end on a tiny budget: dataset, train, test, table, picture."""

import shutil
from pathlib import Path

import cv2
import pytest

from hersr_arch.cli.hersr_cli import main
from tests.helpers import run_cli

pytestmark = pytest.mark.slow
ROOT = Path(__file__).resolve().parents[1]


def test_demo_runs_the_whole_pipeline(tmp_path):
    shutil.copytree(ROOT / "options" / "demo", tmp_path / "options" / "demo")
    result = run_cli(["demo", "--iters", "4"], cwd=tmp_path, module="hersr_arch.cli.hersr_cli", timeout=600)
    # Four iterations need not beat bicubic (exit status 1 then); everything else must be there.
    assert result.returncode in (0, 1), result.stdout[-3000:] + result.stderr[-3000:]
    assert "HERSR vs bicubic on the held-out images" in result.stdout
    table = (tmp_path / "results" / "demo_table.md").read_text()
    assert "HERSR_S_demo" in table and "Bicubic" in table and "embedded_test" in table
    assert (tmp_path / "results" / "demo_table.csv").is_file()
    picture = cv2.imread(str(tmp_path / "results" / "demo_comparison.png"))
    assert picture is not None and picture.shape[1] > 3 * picture.shape[0]
    if result.returncode == 1:
        assert "did not beat bicubic" in result.stderr


def test_demo_outside_the_repository_is_a_clear_error(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert main(["demo"]) == 1  # a CommandError, caught: any other exception fails this test
    assert "demo option file" in capsys.readouterr().err
    assert list(tmp_path.iterdir()) == []
