"""MATLAB bicubic up-sampling as a network: the literature's "Bicubic" row through ``basicsr test``.

Every SR paper's bicubic baseline is MATLAB's ``imresize(lr, s, 'bicubic')`` of the 8-bit LR
image, scored like the networks (Y channel, ``crop_border = s``). Registered in BasicSR's
``ARCH_REGISTRY`` as ``MATLABBicubic``, it runs through the same test option files, metrics and
``hersr table`` as HERSR (``options/test_bicubic_x{2,3,4}.yml``). It has no parameters.

This is not PyTorch's bicubic (``F.interpolate``, ``a = -0.75``), which is what an untrained
HERSR returns and scores 0.1-0.2 dB higher on the x4 benchmarks.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from hersr_arch.data.matlab_resize import imresize


class MATLABBicubic(nn.Module):
    """``x: (B, C, H, W)`` holding 8-bit levels in [0, 1] -> ``(B, C, sH, sW)``: MATLAB's
    ``imresize(uint8 image, upscale, 'bicubic')`` of each image, divided by 255.

    The input must hold 8-bit levels (``k / 255``), as BasicSR's loaders give for image files;
    anything else is refused, since MATLAB's row is defined on the 8-bit image.
    """

    def __init__(self, upscale: int = 4):
        super().__init__()
        if isinstance(upscale, bool) or not isinstance(upscale, int) or not 1 <= upscale <= 8:
            raise ValueError(f"MATLABBicubic: upscale must be an integer from 1 to 8, got {upscale!r}.")
        self.upscale = upscale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        levels = x.detach().float().cpu().numpy() * 255
        rounded = np.rint(levels)
        off = float(np.abs(levels - rounded).max()) if levels.size else 0.0
        if off > 1e-3 or rounded.min(initial=0) < 0 or rounded.max(initial=0) > 255:
            raise ValueError(
                "MATLABBicubic takes 8-bit images scaled to [0, 1] (values k / 255), the LR files of the "
                f"benchmarks; got values up to {off:.3g} levels off the 8-bit grid or outside [0, 1]."
            )
        images = rounded.astype(np.uint8).transpose(0, 2, 3, 1)  # (B, H, W, C)
        out = np.stack([imresize(img, self.upscale) for img in images]).transpose(0, 3, 1, 2)
        return torch.from_numpy(np.ascontiguousarray(out)).to(x.device, torch.float32) / 255


def register_arch(registry) -> None:
    """Register ``MATLABBicubic`` in BasicSR's ``ARCH_REGISTRY`` (``hersr_arch.basicsr_plugin``)."""
    if "MATLABBicubic" not in registry:
        registry.register(MATLABBicubic)
