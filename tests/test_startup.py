"""Commands that never train or test through BasicSR start without importing BasicSR or torchvision
(seconds of start-up each); ``import hersr_arch`` followed by BasicSR still registers everything."""

import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hersr_arch.archs.hersr_arch import hersr_s
from tests.helpers import cli_env

HEAVY = ("basicsr", "torchvision")


def imported_modules(args: list[str], cwd) -> set[str]:
    """Modules that ``hersr <args>`` imports (from ``python -X importtime``)."""
    result = subprocess.run([sys.executable, "-X", "importtime", "-m", "hersr_arch.cli.hersr_cli", *args],
                            cwd=cwd, env=cli_env(), capture_output=True, text=True, timeout=300)  # fmt: skip
    assert result.returncode == 0, result.stderr[-2000:]
    lines = [line.split("|")[-1].strip() for line in result.stderr.splitlines() if line.startswith("import time:")]
    return set(lines[1:])  # the first line is the header


@pytest.mark.parametrize("args", [["--help"], ["upscale", "--help"], ["export", "--help"], ["table", "--help"]])
def test_help_imports_neither_basicsr_nor_torchvision(tmp_path, args):
    modules = imported_modules(args, tmp_path)
    assert "torch" in modules  # the check sees real imports
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_upscale_imports_neither_basicsr_nor_torchvision(tmp_path):
    torch.manual_seed(0)
    torch.save({"params": hersr_s(upscale=2).state_dict()}, tmp_path / "model.pth")
    cv2.imwrite(str(tmp_path / "in.png"), np.random.default_rng(0).integers(0, 256, (12, 10, 3), dtype=np.uint8))
    modules = imported_modules(["upscale", "in.png", "out", "--model", "model.pth", "--no-progress"], tmp_path)
    assert cv2.imread(str(tmp_path / "out" / "in.png")).shape == (24, 20, 3)
    assert not [m for m in modules if m.split(".")[0] in HEAVY]


def test_basicsr_imported_after_hersr_arch_has_everything_registered():
    code = (
        "import sys\n"
        "import hersr_arch\n"
        "assert 'basicsr' not in sys.modules and 'torchvision' not in sys.modules\n"
        "from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, LOSS_REGISTRY, METRIC_REGISTRY, MODEL_REGISTRY\n"
        "assert all(n in ARCH_REGISTRY for n in ('HERSR', 'hersr_s', 'hersr_m', 'hersr_l', 'MATLABBicubic'))\n"
        "assert 'HERSRModel' in MODEL_REGISTRY and 'FFTLoss' in LOSS_REGISTRY\n"
        "assert 'HERSRDegradationDataset' in DATASET_REGISTRY and 'BenchmarkPairedDataset' in DATASET_REGISTRY\n"
        "assert 'calculate_psnr_gray_as_y' in METRIC_REGISTRY\n"
    )
    result = subprocess.run([sys.executable, "-c", code], env=cli_env(), capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
