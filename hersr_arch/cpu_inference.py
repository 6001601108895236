"""CPU inference kernels for HERSR: what the network file computes, computed faster on a CPU.

``prepare_cpu_inference(model)`` swaps the class of some of a HERSR model's modules for a subclass
with a CPU-tuned ``forward``. Parameters, buffers and state-dict keys stay the same, and so do the
outputs, up to float rounding (tested). Each tuned ``forward`` runs only in fp32 CPU inference:
under autograd, autocast, graph capture (tracing, ``torch.compile``, ONNX export), on another
device, or while a dispatch mode observes the ops (the FLOP and launch counters), it falls back to
the network file's ``forward``. ``hersr upscale``, ``hersr bench`` and the BasicSR test path on
the CPU apply it. The network file, copied alone into another project, computes the same outputs
without it.

What it changes (timings in benchmarks/RESULTS.md and the git history):

- **1x1 convs on oneDNN.** With one thread PyTorch sends 1x1 convs on channels_last maps to its
  generic im2col path, which first fills the output with the bias; ``aten::mkldnn_convolution``
  does not. The qkv projection runs the same way, as a 1x1 conv over a view of the tokens.
- **expand -> gate -> project in parts.** The expansion's two channel halves are computed apart
  (element-wise ops on a channel half of one channels_last map read it strided), and the gate
  product is written into its fresh first operand. A deployed block's fusion 1x1 is split again by
  its inputs: the GDFN's gate product goes through its columns band by band (below) instead of
  being concatenated whole.
- **Affine-free LayerNorms** (deployed) run with a weight of ones, ATen's vectorised CPU path.
- **Row bands on large maps.** Once one expanded half of a map outgrows the last-level cache,
  every element-wise pass over it runs at memory speed. Above ``band_above_bytes`` the map is
  processed in bands of about ``band_bytes`` per half, each projected while it is in the cache:
  exact, since each band reads its halo rows from the padded input. Window attention runs in bands
  of windows likewise.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn
from torch.utils._python_dispatch import _get_current_dispatch_mode

from hersr_arch.archs.hersr_arch import (
    GDFN,
    HERSR,
    ContextPath,
    DualPathBlock,
    GatedConv,
    PaddedDepthwiseExpand,
    WindowAttention,
    _capturing_graph,
    pad1,
)


def _tuned(x: torch.Tensor, weight: torch.Tensor) -> bool:
    """Whether the CPU-tuned path may run: fp32 CPU inference, nothing recording or observing ops."""
    return (
        x.device.type == "cpu" and x.dtype == weight.dtype == torch.float32
        and not torch.is_grad_enabled() and not torch.is_autocast_enabled("cpu") and not _capturing_graph()
        and _get_current_dispatch_mode() is None
        and torch.backends.mkldnn.is_available() and torch.backends.mkldnn.enabled
    )  # fmt: skip


class OneDNNConv1x1(nn.Conv2d):
    """A 1x1 ``nn.Conv2d`` that runs on oneDNN in CPU inference. ``rows``: compute only these
    output channels (a slice of the weights, no copy). ``(B, C_in, H, W)`` -> ``(B, C_out, H, W)``."""

    def forward(self, x: torch.Tensor, rows: slice = slice(None)) -> torch.Tensor:
        return _pointwise(x, self.weight[rows], None if self.bias is None else self.bias[rows])


def _pointwise(x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``F.conv2d(x, weight, bias)`` for a 1x1 ``weight``, on oneDNN for channels_last maps in CPU inference."""
    if _tuned(x, weight) and x.is_contiguous(memory_format=torch.channels_last) and weight.is_contiguous():
        return torch.ops.aten.mkldnn_convolution(x, weight, bias, (0, 0), (1, 1), (1, 1), 1)
    return F.conv2d(x, weight, bias)


class OneDNNLinear(nn.Linear):
    """``nn.Linear`` over tokens ``(..., C_in)`` that, in CPU inference, runs as oneDNN's 1x1 conv over
    a ``(1, C_in, N, 1)`` channels_last view of the same memory (no bias-fill pass)."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not (_tuned(x, self.weight) and x.is_contiguous()):
            return super().forward(x)
        c_in, c_out = x.shape[-1], self.out_features
        grid = x.view(1, -1, 1, c_in).permute(0, 3, 1, 2)
        y = torch.ops.aten.mkldnn_convolution(grid, self.weight.view(c_out, c_in, 1, 1), self.bias,
                                              (0, 0), (1, 1), (1, 1), 1)  # fmt: skip
        return y.permute(0, 2, 3, 1).view(*x.shape[:-1], c_out)


class OnesWeightLayerNorm(nn.LayerNorm):
    """An affine-free ``nn.LayerNorm`` (deployed: its affine is folded into the next linear map) that,
    in CPU inference, runs with a weight of ones: ATen's CPU kernel without a weight takes a slower,
    unvectorised path. Multiplying by one is exact."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is not None or not _tuned(x, x):
            return super().forward(x)
        ones = getattr(self, "_ones", None)
        if ones is None or ones.dtype != x.dtype or ones.device != x.device:
            ones = self._ones = torch.ones(self.normalized_shape, dtype=x.dtype, device=x.device)
        return F.layer_norm(x, self.normalized_shape, ones, None, self.eps)


class RowBands:
    """Band sizes of the CPU-tuned modules (class attributes: one place to tune them)."""

    band_above_bytes = 32 * 2**20  # below this, the extra per-band calls cost more than they save
    band_bytes = 12 * 2**20  # per expanded half: stays in the last-level cache

    def band_rows(self, x: torch.Tensor, h: int, w: int, channels: int) -> int | None:
        """Rows per band (fewer than ``h``) for ``(channels, h, w)`` maps of ``x``'s dtype, or None."""
        row_bytes = channels * w * x.element_size()
        return None if row_bytes * h <= self.band_above_bytes else max(1, self.band_bytes // row_bytes)


def _halves(spatial: PaddedDepthwiseExpand, padded: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """``spatial(padded)``, each channel half computed on its own: two ``(B, hidden / 2, H, W)``."""
    half = spatial.expand.out_channels // 2
    first, second = slice(0, half), slice(half, 2 * half)
    return (spatial.dwconv(spatial.expand(padded, first), first),
            spatial.dwconv(spatial.expand(padded, second), second))  # fmt: skip


Projection = tuple[torch.Tensor, torch.Tensor | None]  # a 1x1 conv's weight (C_out, C_in, 1, 1) and bias


def _banded_gate(bands: RowBands, padded: torch.Tensor, spatial: PaddedDepthwiseExpand,
                 activation: Callable | None, project: Projection | None = None) -> torch.Tensor:
    """``project(activation(a) * b)`` with ``a, b = spatial(padded)`` (without ``project``, the gate
    product), in row bands on large maps. ``padded: (B, C, H + 2, W + 2)`` -> ``(B, C_out, H, W)``."""

    def gated(padded_rows: torch.Tensor) -> torch.Tensor:
        a, b = _halves(spatial, padded_rows)
        product = (a if activation is None else activation(a)).mul_(b)
        return product if project is None else _pointwise(product, *project)

    samples, _, h, w = padded.shape
    h, w = h - 2, w - 2
    half = spatial.expand.out_channels // 2
    rows = bands.band_rows(padded, h, w, half)
    if rows is None:
        return gated(padded)
    out_channels = half if project is None else project[0].shape[0]
    out = torch.empty((samples, out_channels, h, w), dtype=padded.dtype, memory_format=torch.channels_last)
    for n in range(samples):  # one sample at a time: a row band of it is one contiguous block
        for top in range(0, h, rows):
            out[n : n + 1, :, top : top + rows] = gated(padded[n : n + 1, :, top : top + rows + 2])
    return out


class CPUGatedConv(GatedConv, RowBands):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is None or not _tuned(x, self.spatial.expand.weight):
            return super().forward(x)
        return _banded_gate(self, pad1(x), self.spatial, None, (self.project.weight, self.project.bias))

    def gate(self, padded: torch.Tensor) -> torch.Tensor:
        if not _tuned(padded, self.spatial.expand.weight):
            return super().gate(padded)
        return _banded_gate(self, padded, self.spatial, None)


class CPUGDFN(GDFN, RowBands):
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.project is None or not _tuned(x, self.spatial.expand.weight):
            return super().forward(x)
        return _banded_gate(self, pad1(x), self.spatial, F.gelu, (self.project.weight, self.project.bias))

    def gate(self, padded: torch.Tensor, project: Projection | None = None) -> torch.Tensor:
        """The gate product, or with ``project`` its 1x1 map computed band by band."""
        if not _tuned(padded, self.spatial.expand.weight):
            product = super().gate(padded)
            return product if project is None else F.conv2d(product, *project)
        return _banded_gate(self, padded, self.spatial, F.gelu, project)


class CPUWindowAttention(WindowAttention, RowBands):
    """Window attention in bands of windows on large maps (the qkv map of a large image outgrows the
    cache)."""

    def attend_windows(self, windows: torch.Tensor, qk_scale: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        b, n_win, length, c = windows.shape
        per_band = self.band_rows(windows, n_win, length, 3 * c) if _tuned(windows, self.qkv.weight) else None
        if per_band is None:
            return super().attend_windows(windows, qk_scale, attn_mask)
        out = torch.empty_like(windows)
        for n in range(b):
            for first in range(0, n_win, per_band):
                part = slice(first, first + per_band)
                mask = attn_mask[part] if self.shift else attn_mask  # shifted: a mask per window
                out[n : n + 1, part] = super().attend_windows(windows[n : n + 1, part], qk_scale, mask)
        return out


class CPUContextPath(ContextPath):
    """Hands the GDFN's gate product to a 1x1 band by band (:meth:`CPUGDFN.gate`) when asked."""

    def features(self, x: torch.Tensor, ffn_project: Projection | None = None) -> tuple[torch.Tensor, torch.Tensor]:
        """``ContextPath.features``; with ``ffn_project``, the GDFN's gate product mapped by that 1x1."""
        u = self.attended(x)
        return u[..., 1:-1, 1:-1], self.ffn.gate(self.norm_ffn(u), ffn_project)


class CPUDualPathBlock(DualPathBlock):
    """Deployed, the fusion 1x1 runs in parts: one 1x1 over ``[local gate product; u]``, the GDFN gate
    product's columns band by band inside the GDFN (:func:`_banded_gate`), and the residual's identity
    columns as an in-place add of ``x`` (a 1x1 reading ``x`` as well costs more than that add). The
    wide gate product is never written out whole and concatenated. Identity columns changed by
    fine-tuning a deployed model go through the 1x1 with the rest."""

    def forward(self, x: torch.Tensor, local_hint: torch.Tensor | None = None) -> torch.Tensor:
        if self.layer_scale is not None or self.context is None or not _tuned(x, self.fuse.weight):
            return super().forward(x, local_hint)
        (head, bias), tail, residual_is_identity = self._fuse_split()
        parts = [] if self.local is None else list(self.local.features(x if local_hint is None else x + local_hint))
        u, projected = self.context.features(x, (tail, None))
        if residual_is_identity:
            return _pointwise(torch.cat([*parts, u], 1), head, bias).add_(projected).add_(x)
        return _pointwise(torch.cat([*parts, u, x], 1), head, bias).add_(projected)

    def _fuse_split(self) -> tuple[Projection, torch.Tensor, bool]:
        """The fusion weight's columns for ``[local; u]`` (or ``[local; u; x]``, see below) with the bias,
        and for the GDFN's gate product, each contiguous (oneDNN's layout); and whether the columns
        that read ``x`` are the identity (then the first part leaves them out). Cached per weight
        version."""
        weight = self.fuse.weight
        key = (weight._version, weight.data_ptr())
        cached = getattr(self, "_fuse_parts", None)
        if cached is None or cached[0] != key:
            channels, hidden = weight.shape[0], self.context.ffn.spatial.expand.out_channels // 2
            start = weight.shape[1] - channels - hidden  # columns: [local; u | gate product | x]
            residual = weight[:, start + hidden :, 0, 0]
            identity = bool(torch.equal(residual, torch.eye(channels, dtype=residual.dtype)))
            head = weight[:, :start] if identity else torch.cat((weight[:, :start], weight[:, start + hidden :]), 1)
            cached = (key, ((head.contiguous(), self.fuse.bias), weight[:, start : start + hidden].contiguous(), identity))
            self._fuse_parts = cached
        return cached[1]


_SWAPS = {
    GatedConv: CPUGatedConv,
    GDFN: CPUGDFN,
    WindowAttention: CPUWindowAttention,
    ContextPath: CPUContextPath,
    DualPathBlock: CPUDualPathBlock,
}


def _is_pointwise(m: nn.Module) -> bool:
    return (type(m) is nn.Conv2d and m.kernel_size == (1, 1) and m.stride == (1, 1) and m.padding == (0, 0)
            and m.dilation == (1, 1) and m.groups == 1)  # fmt: skip


def prepare_cpu_inference(model: nn.Module) -> nn.Module:
    """Switch every HERSR inside ``model`` to the CPU-tuned kernels, in place; returns ``model``.

    Idempotent; other networks in ``model`` are left alone.
    """
    for net in [m for m in model.modules() if isinstance(m, HERSR)]:
        for module in net.modules():
            if type(module) in _SWAPS:
                module.__class__ = _SWAPS[type(module)]
            elif _is_pointwise(module):
                module.__class__ = OneDNNConv1x1
            elif type(module) is nn.LayerNorm and not module.elementwise_affine:
                module.__class__ = OnesWeightLayerNorm
            if isinstance(module, WindowAttention) and type(module.qkv) is nn.Linear:
                module.qkv.__class__ = OneDNNLinear
    return model
