"""Frequency-domain losses, registered in BasicSR's ``LOSS_REGISTRY``."""

import torch
from torch import nn as nn
from torch.nn import functional as F

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()

from basicsr.utils.registry import LOSS_REGISTRY  # noqa: E402

_REDUCTION_MODES = ("none", "mean", "sum")


def _rfft2_real_imag(x: torch.Tensor) -> torch.Tensor:
    """``x: (B, C, H, W)`` → orthonormal ``rfft2`` as ``(B, C, H, W // 2 + 1, 2)`` (real, imag), fp32."""
    return torch.view_as_real(torch.fft.rfft2(x.float(), norm="ortho"))


@LOSS_REGISTRY.register()
class FFTLoss(nn.Module):
    """L1 distance between the 2-D Fourier spectra of prediction and target.

    Both images go through ``torch.fft.rfft2(..., norm='ortho')`` over the last two dimensions;
    the real and imaginary parts are stacked and compared with an L1 distance. The FFT runs in
    float32 with autocast disabled (the CPU has no half-precision FFT and cuFFT only does fp16 for
    power-of-two sizes), so the loss is float32 under bf16/fp16 autocast too. With the orthonormal
    norm the spectrum has the same energy as the image (Parseval), so a ``loss_weight`` around 0.05
    to 0.1 next to an L1 pixel loss of weight 1 is usual.

    Args:
        loss_weight (float): Weight multiplying the loss. Default: 1.0.
        reduction (str): 'none' | 'mean' | 'sum', as in BasicSR's ``L1Loss``. With 'none' the
            element-wise loss has shape ``(B, C, H, W // 2 + 1, 2)``. Default: 'mean'.
    """

    def __init__(self, loss_weight: float = 1.0, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in _REDUCTION_MODES:
            raise ValueError(
                f"Unsupported reduction mode: {reduction!r}. Supported ones are: {_REDUCTION_MODES}"
            )
        self.loss_weight = loss_weight
        self.reduction = reduction

    def forward(self, pred: torch.Tensor, target: torch.Tensor) -> torch.Tensor:
        """
        Args:
            pred: ``(B, C, H, W)`` predicted images.
            target: ``(B, C, H, W)`` ground-truth images.
        """
        with torch.autocast(device_type=pred.device.type, enabled=False):
            loss = F.l1_loss(_rfft2_real_imag(pred), _rfft2_real_imag(target), reduction=self.reduction)
        return self.loss_weight * loss
