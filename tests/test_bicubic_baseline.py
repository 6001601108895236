"""The literature's bicubic row: ``MATLABBicubic`` through ``basicsr test`` and ``hersr table``."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hersr_arch.archs.bicubic_arch import MATLABBicubic
from hersr_arch.data.matlab_resize import imresize
from hersr_arch.data.prepare import make_benchmark_layout
from hersr_arch.tools.results_table import collect_runs
from tests.helpers import run_cli

REPO = Path(__file__).resolve().parents[1]
SETS = ("Set5", "Set14", "B100", "Urban100", "Manga109")


def photo(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 8, w // 8, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.round((img + 0.05 * rng.standard_normal(img.shape)) * 255), 0, 255).astype(np.uint8)


def gray_to_color(gray: np.ndarray) -> np.ndarray:
    return np.repeat(gray[..., None], 3, axis=2)


def test_matlab_bicubic_is_imresize_of_the_8_bit_image():
    lr = photo(24, 16, seed=0)[:9, :7]
    x = torch.from_numpy(lr.transpose(2, 0, 1)[None].astype(np.float32) / 255).repeat(2, 1, 1, 1)
    out = MATLABBicubic(upscale=3)(x)
    assert out.shape == (2, 3, 27, 21) and out.dtype == torch.float32
    expected = imresize(lr, 3).transpose(2, 0, 1).astype(np.float32) / 255
    np.testing.assert_array_equal(out[1].numpy(), expected)
    assert not list(MATLABBicubic().parameters())


def test_matlab_bicubic_refuses_what_matlab_row_is_not_defined_on():
    with pytest.raises(ValueError, match="8-bit images scaled to"):
        MATLABBicubic(upscale=2)(torch.full((1, 3, 4, 4), 0.5))  # 127.5 levels
    with pytest.raises(ValueError, match="upscale must be an integer from 1 to 8, got 2.5"):
        MATLABBicubic(upscale=2.5)


def test_gray_as_y_metrics_score_a_grayscale_image_on_its_gray_value():
    """Colour images: BasicSR's Y metrics. A grayscale file (read as three equal channels): its gray
    value, not BasicSR's 16 + 219/255 * gray, which shrinks the errors and lifts PSNR."""
    from basicsr.metrics import calculate_psnr, calculate_ssim

    from hersr_arch.metrics.gray_as_y import calculate_psnr_gray_as_y, calculate_ssim_gray_as_y

    gt, sr = photo(40, 32, seed=1), photo(40, 32, seed=2)
    assert calculate_psnr_gray_as_y(sr, gt, 4) == calculate_psnr(sr, gt, 4, test_y_channel=True)
    assert calculate_ssim_gray_as_y(sr, gt, 4) == calculate_ssim(sr, gt, 4, test_y_channel=True)
    gray_gt, gray_sr = (np.repeat(img[..., :1], 3, axis=2) for img in (gt, sr))
    # Gray content in a colour file: converted to Y like any colour image, as MATLAB does.
    basicsr_y = calculate_psnr(gray_sr, gray_gt, 4, test_y_channel=True)
    assert calculate_psnr_gray_as_y(gray_sr, gray_gt, 4) == basicsr_y
    # A grayscale file (one channel, from BenchmarkPairedDataset): its gray value.
    direct = calculate_psnr(gray_sr[..., :1], gray_gt[..., :1], 4)
    assert calculate_psnr_gray_as_y(gray_sr, gray_gt[..., 0], 4) == pytest.approx(direct)
    assert calculate_ssim_gray_as_y(gray_sr, gray_gt[..., 0], 4) == pytest.approx(
        calculate_ssim(gray_sr[..., :1], gray_gt[..., :1], 4))
    assert direct < basicsr_y - 1.0  # BasicSR's Y of a gray image: ~1.3 dB higher


def test_bicubic_option_file_gives_the_matlab_row_on_the_five_benchmarks(tmp_path):
    """``basicsr test -opt options/test_bicubic_x4.yml`` on a benchmark layout made by this repo scores
    MATLAB's bicubic x4 of the LR files with the literature's metric (one set is grayscale)."""
    from hersr_arch.metrics.gray_as_y import calculate_psnr_gray_as_y

    expected = {}
    for i, name in enumerate(SETS):
        hr_dir = tmp_path / "hr" / name
        hr_dir.mkdir(parents=True)
        img = photo(44 + 4 * i, 37, seed=i)
        cv2.imwrite(str(hr_dir / "img.png"), img[..., 0] if name == "Set14" else img)
        make_benchmark_layout(hr_dir, tmp_path / "datasets" / "benchmark" / name, [4], show_progress=False)
        gt = cv2.imread(str(tmp_path / "datasets" / "benchmark" / name / "GTmod4" / "img.png"), cv2.IMREAD_UNCHANGED)
        lr = cv2.imread(str(tmp_path / "datasets" / "benchmark" / name / "LRbicx4" / "img.png"))
        expected[name] = calculate_psnr_gray_as_y(imresize(lr, 4), gt, crop_border=4)
        if name == "Set14":  # the grayscale file: scored on its gray value, not as colour
            assert gt.ndim == 2 and expected[name] < calculate_psnr_gray_as_y(imresize(lr, 4), gray_to_color(gt), 4)
    result = run_cli(["test", "-opt", REPO / "options" / "test_bicubic_x4.yml"], cwd=tmp_path)
    assert result.returncode == 0, result.stdout + result.stderr
    (run,) = collect_runs([tmp_path / "results"])
    assert (run.model, run.scale) == ("Bicubic", 4)
    assert run.network == {"type": "MATLABBicubic", "upscale": "4"}
    for name in SETS:
        assert run.metrics[name]["psnr"] == pytest.approx(expected[name], abs=1e-4), name
