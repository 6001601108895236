"""PSNR/SSIM on Y as the MATLAB scripts behind the literature's bicubic row compute them.

Those scripts score a grayscale image on its gray value; only colour images go through
``rgb2ycbcr``. BasicSR reads a grayscale file as three equal channels and scores
``Y = 16 + 219/255 * gray``, which shrinks the errors by 219/255: Set14's grayscale ``bridge``
alone lifts Set14's bicubic PSNR by 0.09 dB at every scale. With ``BenchmarkPairedDataset``, a
grayscale GT file arrives here as a single-channel image and is scored on its gray value; colour
images are scored exactly as BasicSR's metrics with ``test_y_channel``. The network rows of recent
papers (SwinIR, SAFMN, ...) are BasicSR's numbers, so HERSR's test files keep BasicSR's metric; the
bicubic option files use these, and print the bicubic row as the literature prints it.
"""

from __future__ import annotations

import numpy as np

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()

from basicsr.metrics.psnr_ssim import calculate_psnr, calculate_ssim  # noqa: E402
from basicsr.utils.registry import METRIC_REGISTRY  # noqa: E402


def _is_gray(img: np.ndarray, input_order: str) -> bool:
    """Whether ``img`` holds one channel (a grayscale GT file read by ``BenchmarkPairedDataset``)."""
    return img.ndim == 2 or img.shape[0 if input_order == "CHW" else -1] == 1


def _gray(img: np.ndarray, input_order: str) -> np.ndarray:
    """The first channel as ``(H, W, 1)`` (an output for a gray input has equal channels)."""
    if img.ndim == 2:
        return img[..., None]
    return img[:1].transpose(1, 2, 0) if input_order == "CHW" else img[..., :1]


@METRIC_REGISTRY.register()
def calculate_psnr_gray_as_y(img, img2, crop_border, input_order="HWC", **kwargs):
    """PSNR on Y (``img``, ``img2``: uint8 BGR as BasicSR passes them); a single-channel ground truth
    ``img2`` is scored on its gray value."""
    if _is_gray(img2, input_order):
        return calculate_psnr(_gray(img, input_order), _gray(img2, input_order), crop_border, "HWC")
    return calculate_psnr(img, img2, crop_border, input_order, test_y_channel=True)


@METRIC_REGISTRY.register()
def calculate_ssim_gray_as_y(img, img2, crop_border, input_order="HWC", **kwargs):
    """SSIM on Y, with a single-channel ground truth scored on its gray value (see the module docstring)."""
    if _is_gray(img2, input_order):
        return calculate_ssim(_gray(img, input_order), _gray(img2, input_order), crop_border, "HWC")
    return calculate_ssim(img, img2, crop_border, input_order, test_y_channel=True)
