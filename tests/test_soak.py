"""The soak script (``benchmarks/soak.py``: memory stays flat over a long run) works end to end."""

import re
import subprocess
import sys

import pytest

from tests.helpers import PACKAGE_ROOT, cli_env


@pytest.mark.slow
def test_soak_script_runs_and_reports_rss(tmp_path):
    """``benchmarks/soak.py`` (2000 iterations by default, not in the suite) works end to end."""
    args = ["--iters", "20", "--data", tmp_path / "embedded", "--warmup", "5", "--val-every", "10",
            "--report-every", "10"]
    result = subprocess.run([sys.executable, PACKAGE_ROOT / "benchmarks" / "soak.py", *map(str, args)],
                            cwd=tmp_path, env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"soak: iter +20 .* RSS +\d+\.\d MiB +l_pix \d", result.stdout), result.stdout
    assert re.search(r"soak: RSS start \d+\.\d MiB \(baseline\), end \d+\.\d MiB: [-+]\d+\.\d%.*; OK$",
                     result.stdout.strip()), result.stdout
