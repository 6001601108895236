"""``hersr bench --ablation``: every variant trains and is scored for every seed, the table says what a
difference within the seed spread means, finished runs are reused, and unknown variants are refused."""

import json

import torch

from hersr_arch.archs.hersr_arch import WindowAttention, hersr_s
from hersr_arch.bench.ablation import VARIANTS, summarize, without_shift
from tests.helpers import run_cli

HERSR_CLI = "hersr_arch.cli.hersr_cli"


def _args(tmp_path, *extra):
    return ["bench", "--ablation", *extra, "--ablation-iters", "2", "--ablation-denoise-iters", "1",
            "--proxy-eval-every", "1", "--proxy-batch", "1", "--proxy-patch", "16", "--mac-size", "24x16",
            "--rounds", "1", "--proxy-data", str(tmp_path / "embedded"), "--ablation-runs", str(tmp_path / "runs"),
            "--out", str(tmp_path / "ABLATION.md")]  # fmt: skip


def test_every_variant_trains_and_is_scored_for_two_seeds(tmp_path):
    result = run_cli(_args(tmp_path), tmp_path, module=HERSR_CLI, timeout=900)
    assert result.returncode == 0, result.stderr
    report = json.loads((tmp_path / "ABLATION.json").read_text())
    table = (tmp_path / "ABLATION.md").read_text()
    assert set(report["runs"]) == set(VARIANTS)
    for name, runs in report["runs"].items():
        assert set(runs) == {"0", "1"}, name
        for run in runs.values():
            task_iters = 2 if VARIANTS[name].task == "sr" else 1
            assert run["at_iters"][0] == task_iters and 0 < run["at_iters"][2] < 100
            if name not in ("full", "denoise-no-prompt"):  # scored at the baseline's training time
                assert run["at_time"] is not None
        costs = report["costs"][name]
        assert costs["params"] > 0 and costs["gmacs"] > 0 and costs["launches"] > 0 and costs["cpu_ms"] > 0
        assert f"| `{name}` |" in table
    assert "## x4 super-resolution" in table and "## x1 denoising, degradation prompt" in table
    assert "Command: `hersr bench --ablation" in table
    # A rerun of the same protocol reuses every finished run: nothing trains again.
    again = run_cli(_args(tmp_path, "full", "plk3"), tmp_path, module=HERSR_CLI, timeout=600)
    assert again.returncode == 0, again.stderr
    assert "ablation: seed" not in again.stderr
    rerun = json.loads((tmp_path / "ABLATION.json").read_text())
    assert rerun["runs"]["plk3"] == report["runs"]["plk3"]


def test_unknown_variant_is_refused_with_the_known_ones(tmp_path):
    result = run_cli(_args(tmp_path, "full", "no-such-thing"), tmp_path, module=HERSR_CLI, timeout=120)
    assert result.returncode == 1
    assert "unknown --ablation variant(s) ['no-such-thing']" in result.stderr
    assert all(name in result.stderr for name in VARIANTS)
    assert not (tmp_path / "runs").exists()


def test_one_seed_gives_no_spread_and_is_refused(tmp_path):
    result = run_cli(_args(tmp_path, "--ablation-seeds", "3"), tmp_path, module=HERSR_CLI, timeout=120)
    assert result.returncode == 1 and "--ablation-seeds needs two different seeds" in result.stderr


def _run(psnr: float, iters: int = 10, at_time: float | None = None) -> dict:
    point = [iters, 1.0, psnr, 0.8]
    return {"at_iters": point, "at_time": None if at_time is None else [iters + 5, 1.0, at_time, 0.8],
            "seconds_at_iters": 1.0}  # fmt: skip


def test_a_difference_within_the_seed_spread_is_no_measurable_effect():
    report = {
        "variants": {n: {"task": "sr", "change": n} for n in ("full", "a", "b", "c")},
        "runs": {
            "full": {"0": _run(30.0), "1": _run(30.2)},  # spread 0.2
            "a": {"0": _run(29.9), "1": _run(30.1)},  # -0.1: within the spread
            "b": {"0": _run(29.5), "1": _run(29.7)},  # -0.5: worse
            "c": {"0": _run(30.5, at_time=30.0), "1": _run(30.9, at_time=30.3)},  # +0.6, spread 0.4; at time +0.05
        },
    }
    rows = summarize(report)
    assert rows["full"]["verdict"] is None
    assert rows["a"]["verdict"] == "no measurable effect"
    assert rows["b"]["verdict"] == "worse" and abs(rows["b"]["delta"] + 0.5) < 1e-9
    assert rows["c"]["verdict"] == "better" and abs(rows["c"]["spread"] - 0.4) < 1e-9
    assert rows["c"]["verdict_time"] == "no measurable effect"


def test_no_shift_variant_puts_every_window_on_one_grid():
    model = hersr_s(upscale=4)
    assert any(m.shift for m in model.modules() if isinstance(m, WindowAttention))  # the preset shifts some
    without_shift(model)
    assert all(m.shift == 0 for m in model.modules() if isinstance(m, WindowAttention))
    torch.manual_seed(0)
    assert model(torch.rand(1, 3, 20, 20)).shape == (1, 3, 80, 80)
