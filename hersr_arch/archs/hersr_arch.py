"""HERSR: Hybrid Efficient Restoration & Super-Resolution.

One self-contained file (torch only), so that it can be copied into other projects; it registers
``HERSR``, ``hersr_s``, ``hersr_m`` and ``hersr_l`` in the running framework's ARCH_REGISTRY
(neosr, traiNNer-redux or BasicSR, whichever is already imported when this file is). It reads
top to bottom:

1. tensor plumbing: padding, windows, local context pooling, ICNR;
2. building blocks: partial large-kernel conv (reparameterizable), NAFNet gated conv, shifted-window
   scaled-cosine attention, Restormer GDFN, DySample, MoE experts, noise injection, modulated conv;
3. the dual-path block (local path || context path, fused by concat -> 1x1 -> residual) and a stage (one resolution of the U-Net);
4. the MoE bottleneck and the texture head;
5. ``HERSRConfig`` (every argument, validated once, saved with the weights), ``HERSR`` and the
   presets ``hersr_s``, ``hersr_m``, ``hersr_l``.

Data flow for ``x: (B, C_in, H, W)`` and scale ``s``::

    F0 = stem(x)                               # (B, d0, H, W)
    L0, H0 = freq_split(F0)                    # L0 at H/2 -> injected at stage 2; H0 at H
    enc_1..enc_n (dual-path blocks, down by PixelUnshuffle)   # H0 feeds the local path of stage 1
    MoE bottleneck (conv | window-attention | FFT experts, softmax router) [+ degradation prompt]
    dec_n..dec_1 (Up + skip -> dual-path blocks)              # optional MSG RGB outputs
    frequency-aware fusion with H0 -> texture head (noise + modulated conv)
    out = PixelShuffle(conv(feat) + phases(x))  # phases(x): bicubic x s before its shuffle; last conv
                                                # zero-initialised: untrained out == bicubic(x)
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import json
import math
import sys
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import ClassVar

import torch
import torch.nn.functional as F
from torch import nn

# ----------------------------------------------------------------------------------------------
# Tensor plumbing
# ----------------------------------------------------------------------------------------------


def _capturing_graph() -> bool:
    """True while TorchScript, the ONNX exporter or torch.compile records a graph: eager-only
    shortcuts (size-keyed caches, device-specific kernels) must not end up in it."""
    if torch.jit.is_tracing() or torch.jit.is_scripting():
        return True
    compiler = getattr(torch, "compiler", None)
    if compiler is not None and compiler.is_compiling():
        return True
    onnx = getattr(torch, "onnx", None)
    return bool(onnx is not None and hasattr(onnx, "is_in_onnx_export") and onnx.is_in_onnx_export())


def linear_dtype(x: torch.Tensor) -> torch.dtype:
    """The dtype a linear layer or conv returns for ``x``: autocast's when it is on, else ``x``'s."""
    device = x.device.type
    return torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else x.dtype


def replicate_pad(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """``F.pad(x, pads, mode="replicate")`` for ``x: (B, C, H, W)``, ``pads = (left, right, top, bottom)``.

    Under ``torch.compile`` the same values come from clamped row and column indices: the compiler
    fuses that gather into its consumer, and its backward is an index accumulation. (The backward of
    ``replication_pad2d`` is a fallback kernel whose output strides inductor mis-predicts for a
    channels_last input, which fails the compiled training step.)
    """
    if not torch.compiler.is_compiling():
        return F.pad(x, pads, mode="replicate")
    left, right, top, bottom = pads
    h, w = x.shape[-2:]
    rows = torch.arange(-top, h + bottom, device=x.device).clamp(0, h - 1)
    cols = torch.arange(-left, w + right, device=x.device).clamp(0, w - 1)
    return x[:, :, rows[:, None], cols]


def replicate_pad_channels_last(x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
    """:func:`replicate_pad` of ``x: (B, C, H, W)`` in any memory format, returned channels_last: the
    pad writes the layout the body runs in, so the layout change costs no pass of its own.

    The pad runs on the ``(B, 1, H, W, C)`` view of ``x`` (a 3-D replicate pad of ``(H, W, C)`` that
    leaves ``C`` alone), whose contiguous result is the channels_last ``(B, C, H', W')`` map.
    """
    if torch.compiler.is_compiling():
        return replicate_pad(x, pads).contiguous(memory_format=torch.channels_last)
    left, right, top, bottom = pads
    padded = F.pad(x.permute(0, 2, 3, 1)[:, None], (0, 0, left, right, top, bottom), mode="replicate")
    return padded[:, 0].permute(0, 3, 1, 2)


def round_up(n: int, multiple: int) -> int:
    """``n`` rounded up to a multiple of ``multiple``.

    Written as ``multiple * ceil(n / multiple)``: under dynamic-shape tracing this form keeps later
    ``% multiple`` checks trivially zero; ``(-n) % multiple`` would grow nested Mod terms that made
    torch.compile(dynamic=True) spend minutes in sympy.
    """
    return (n + multiple - 1) // multiple * multiple


def window_gather_index(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Index that cuts an ``(h, w)`` map into attention windows in one gather (instead of a pad, a roll
    and a partition copy): ``(hp * wp,)``, for every window token the flat index of its pixel.

    The windows are those of the map replicate-padded at the bottom and right to ``(hp, wp)``,
    multiples of ``ws``, and rolled by ``-shift`` (Swin's shifted windows), in window-major,
    row-major order. Built from tensor ops on the sizes, so it follows traced shapes.
    """
    hp, wp = round_up(h, ws), round_up(w, ws)
    rows = ((torch.arange(hp, device=device) + shift) % hp).clamp(max=h - 1)
    cols = ((torch.arange(wp, device=device) + shift) % wp).clamp(max=w - 1)
    pixel = rows[:, None] * w + cols[None, :]  # (hp, wp): the pixel at each position of the rolled map
    return pixel.view(hp // ws, ws, wp // ws, ws).permute(0, 2, 1, 3).reshape(-1)


def window_scatter_index(h: int, w: int, ws: int, shift: int, pad: int, device: torch.device) -> torch.Tensor:
    """Index that puts the windows of :func:`window_gather_index` back in one gather:
    ``((h + 2 pad) * (w + 2 pad),)``, for every pixel of the map replicate-padded by ``pad`` on every
    side the token of its pixel (undoing the roll, cropping the padding to window multiples)."""
    hp, wp = round_up(h, ws), round_up(w, ws)
    token = torch.arange(hp * wp, device=device).view(hp // ws, wp // ws, ws, ws).permute(0, 2, 1, 3).reshape(hp, wp)
    rows = (torch.arange(-pad, h + pad, device=device).clamp(0, h - 1) - shift) % hp
    cols = (torch.arange(-pad, w + pad, device=device).clamp(0, w - 1) - shift) % wp
    return token[rows[:, None], cols[None, :]].reshape(-1)


def shifted_window_mask(h: int, w: int, ws: int, shift: int, device: torch.device) -> torch.Tensor:
    """Swin attention mask for a map of ``(h, w)`` rolled by ``-shift``: ``(nW, L, L)``.

    Tokens that were not neighbours before the roll get -100 (not -inf, as in Swin: a fully
    masked row stays finite). Built from tensor ops on the sizes, so it follows dynamic shapes.
    """
    rows = torch.arange(h, device=device)
    cols = torch.arange(w, device=device)
    row_id = (rows >= h - ws).long() + (rows >= h - shift).long()
    col_id = (cols >= w - ws).long() + (cols >= w - shift).long()
    region = (row_id[:, None] * 3 + col_id[None, :]).view(h // ws, ws, w // ws, ws)
    region = region.permute(0, 2, 1, 3).reshape((h // ws) * (w // ws), ws * ws)
    return (region[:, :, None] != region[:, None, :]).float() * -100.0


def relative_position_index(ws: int) -> torch.Tensor:
    """Index into a ``(2ws-1)^2`` relative-position table for every token pair: ``(L, L)``."""
    coords = torch.stack(torch.meshgrid(torch.arange(ws), torch.arange(ws), indexing="ij")).flatten(1)
    rel = (coords[:, :, None] - coords[:, None, :]).permute(1, 2, 0) + (ws - 1)
    return rel[..., 0] * (2 * ws - 1) + rel[..., 1]


def box_mean(x: torch.Tensor, size: int) -> torch.Tensor:
    """Mean over a ``size x size`` window around every pixel of ``x: (B, C, H, W)``, in fp32; borders
    are replicate-padded. (Used on the bottleneck map, where ``size`` is the training patch over 2^(n-1).)
    """
    lo, hi = size // 2, size - size // 2 - 1
    return F.avg_pool2d(replicate_pad(x.float(), (lo, hi, lo, hi)), size, stride=1)


def _cubic_taps(t: float, a: float = -0.75) -> list[float]:
    """Keys cubic-convolution weights (PyTorch's ``a = -0.75``) of the taps at ``floor - 1 .. floor + 2``
    for a sample at fractional offset ``t`` in ``[0, 1)`` past ``floor``."""

    def near(d):  # |d| <= 1
        return ((a + 2) * d - (a + 3)) * d * d + 1

    def far(d):  # 1 < |d| < 2
        return ((a * d - 5 * a) * d + 8 * a) * d - 4 * a

    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def bicubic_phase_kernel(scale: int) -> torch.Tensor:
    """The ``scale x scale`` sub-pixel phases of bicubic up-sampling by an integer ``scale`` as 5x5
    kernels: ``(scale * scale, 1, 5, 5)``, float32.

    Output pixel ``s * i + p`` of ``F.interpolate(mode='bicubic', align_corners=False)`` samples the
    input at ``i + (p + 0.5) / s - 0.5``, four taps within ``i - 2 .. i + 2``; the 2-D kernel of a
    phase is the outer product of its row and column taps.
    """
    taps = torch.zeros(scale, 5, dtype=torch.float64)
    for p in range(scale):
        src = (p + 0.5) / scale - 0.5
        floor = math.floor(src)
        for k, weight in enumerate(_cubic_taps(src - floor)):
            taps[p, floor - 1 + k + 2] += weight
    return torch.einsum("pi,qj->pqij", taps, taps).reshape(scale * scale, 1, 5, 5).float()


def bicubic_phases(x: torch.Tensor, scale: int, channels: int, kernel: torch.Tensor | None = None) -> torch.Tensor:
    """``x: (B, C, H, W)`` with ``C = channels`` -> ``(B, C * s*s, H, W)`` whose
    ``pixel_shuffle(., s)`` is bicubic up-sampling by ``s`` (PyTorch's ``align_corners=False``,
    borders clamped). ``channels`` is given, not read off ``x``, so exported graphs get a constant
    kernel shape; ``kernel``: ``bicubic_phase_kernel(scale).repeat(channels, 1, 1, 1)`` on ``x``'s
    device, when the caller keeps one.

    One small conv instead of ``F.interpolate``, whose result can be summed with a sub-pixel conv's
    output before its pixel shuffle. Computed in fp32 whatever the input dtype or autocast; returned
    in the input dtype.
    """
    return bicubic_phases_of_padded(replicate_pad(x, (2, 2, 2, 2)), scale, channels, kernel)


def bicubic_phases_of_padded(
    padded: torch.Tensor, scale: int, channels: int, kernel: torch.Tensor | None = None
) -> torch.Tensor:
    """:func:`bicubic_phases` of the map that ``padded: (B, C, H + 4, W + 4)`` is replicate-padded by
    two pixels on every side -> ``(B, C * s*s, H, W)``."""
    if kernel is None:
        kernel = bicubic_phase_kernel(scale).to(padded.device).repeat(channels, 1, 1, 1)
    with torch.autocast(padded.device.type, enabled=False):
        return F.conv2d(padded.float(), kernel, groups=channels).to(padded.dtype)


def pixel_shuffle_view(x: torch.Tensor, r: int) -> torch.Tensor:
    """``pixel_shuffle(x, r)`` as a view, ``x: (B, C r^2, H, W)`` -> ``(B, C, H, r, W, r)``, whose
    ``reshape(B, C, rH, rW)`` is the shuffle.

    Read by the op that consumes the shuffle (an add, the copy to the output's layout), the shuffle
    costs no pass of its own: ``pixel_shuffle`` would copy the map once more.
    """
    b, c, h, w = x.shape
    return x.view(b, c // (r * r), r, r, h, w).permute(0, 1, 4, 2, 5, 3)


def add_pixel_shuffle(skip: torch.Tensor, x: torch.Tensor, r: int) -> torch.Tensor:
    """``skip + pixel_shuffle(x, r)`` in one pass: ``skip: (B, C, rH, rW)``, ``x: (B, C r^2, H, W)``.

    The sum runs over ``(B, H, r, W, r, C)`` views, the channels_last memory order: a channels_last
    ``skip`` gives a sum with channels_last's own strides, batch 1 included (in channel-first order
    the batch-1 sum gets strides that later ops read as NCHW, and they convert it).
    """
    b, c, h, w = skip.shape
    cells = skip.permute(0, 2, 3, 1).view(b, h // r, r, w // r, r, c)
    return (cells + pixel_shuffle_view(x, r).permute(0, 2, 3, 4, 5, 1)).view(b, h, w, c).permute(0, 3, 1, 2)


def icnr_(conv: nn.Conv2d, scale: int) -> nn.Conv2d:
    """ICNR initialisation (Aitken et al. 2017) of a conv feeding ``PixelShuffle(scale)``.

    Every group of ``scale^2`` output channels that PixelShuffle scatters into one output pixel
    block gets the same kernel and bias, so the shuffled output is nearest-neighbour-like: no
    checkerboard at init.
    """
    group = scale * scale
    out_ch = conv.weight.shape[0] // group
    sub = torch.empty(out_ch, *conv.weight.shape[1:], device=conv.weight.device, dtype=conv.weight.dtype)
    nn.init.kaiming_normal_(sub, a=0.0, mode="fan_in")
    with torch.no_grad():
        conv.weight.copy_(sub.repeat_interleave(group, dim=0))
        if conv.bias is not None:
            conv.bias.copy_(conv.bias.view(out_ch, group)[:, :1].expand(-1, group).reshape(-1))
    return conv


class ReplicatePadConv2d(nn.Conv2d):
    """``nn.Conv2d(..., padding_mode="replicate")`` whose padding goes through :func:`replicate_pad`
    (the same numbers; compile-safe). Same parameters and state-dict keys as ``nn.Conv2d``."""

    def __init__(self, *args, **kwargs):
        super().__init__(*args, padding_mode="replicate", **kwargs)

    def _conv_forward(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        padded = replicate_pad(x, self._reversed_padding_repeated_twice)
        return F.conv2d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


def conv3x3(in_ch: int, out_ch: int, groups: int = 1, bias: bool = True) -> nn.Conv2d:
    """3x3 conv with replicate padding (no dark borders from zero padding)."""
    return ReplicatePadConv2d(in_ch, out_ch, 3, 1, 1, groups=groups, bias=bias)


def conv1x1(in_ch: int, out_ch: int, bias: bool = True) -> nn.Conv2d:
    return nn.Conv2d(in_ch, out_ch, 1, bias=bias)


def conv_fp32(conv: nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """``conv(x)`` computed in fp32 whatever the dtype of the module or of autocast.

    For the few numerically sensitive spots (router logits, spectra): they must stay fp32 both
    under autocast and after ``model.half()`` / ``model.bfloat16()``, which cast the weights too.
    """
    bias = None if conv.bias is None else conv.bias.float()
    return F.conv2d(x.float(), conv.weight.float(), bias, conv.stride, conv.padding, conv.dilation, conv.groups)


def zero_init_(module: nn.Module) -> nn.Module:
    """Zero every parameter of ``module`` (blocks then start as identity, NAFNet/ReZero style)."""
    for p in module.parameters():
        nn.init.zeros_(p)
    return module


class LayerNorm2d(nn.Module):
    """LayerNorm over channels of ``x: (B, C, H, W)`` at every pixel."""

    def __init__(self, channels: int, eps: float = 1e-6, elementwise_affine: bool = True):
        super().__init__()
        self.norm = nn.LayerNorm(channels, eps=eps, elementwise_affine=elementwise_affine)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.norm(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)


def dft_matrices(n, freqs, device: torch.device) -> tuple[torch.Tensor, torch.Tensor]:
    """``cos`` and ``sin`` of ``2 pi j k / n`` for ``j < n``, ``k < freqs``: ``(n, freqs)`` each.

    ``j k`` is reduced modulo ``n`` in integers first, so the angle keeps full fp32 precision.
    """
    j = torch.arange(n, device=device)
    k = torch.arange(freqs, device=device)
    angle = ((j[:, None] * k[None, :]) % n).float() * (2 * math.pi) / n
    return torch.cos(angle), torch.sin(angle)


class ContextPool(nn.Module):
    """Image context for routing, prompts and style: global average pooling, with TLC at eval.

    Training sees patches of ``train_size`` pixels (at this module's resolution), so a global mean
    over a whole large image at test time is a different statistic (NAFNet's TLC observation). In
    eval, maps larger than ``train_size`` are pooled over a ``train_size`` box around each pixel
    instead, which keeps the statistic as in training and makes the result local (tiling-friendly).

    ``x: (B, C, H, W)`` -> ``(B, C, 1, 1)`` (global) or ``(B, C, H, W)`` (local, eval only).
    """

    def __init__(self, train_size: int):
        super().__init__()
        self.train_size = max(1, int(train_size))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        if self.training or (h <= self.train_size and w <= self.train_size):
            return x.float().mean((2, 3), keepdim=True)
        return box_mean(x, self.train_size)

    def forward_traceable(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` (eval) for a graph traced at one size and run at others (ONNX): both branches are
        computed and the size test is a runtime ``where``. ``(B, C, H, W)``."""
        h, w = x.shape[-2:]
        local = box_mean(x, self.train_size)
        whole = x.float().mean((2, 3), keepdim=True).expand_as(local)
        return torch.where(torch.as_tensor((h <= self.train_size) & (w <= self.train_size)), whole, local)


# ----------------------------------------------------------------------------------------------
# Building blocks
# ----------------------------------------------------------------------------------------------


class PartialLargeKernelConv(nn.Module):
    """Partial large-kernel conv (PLKSR): a ``k x k`` conv on the first ``split`` channels only.

    Training form: ``k x k`` + parallel ``3 x 3`` + identity on the slice; ``reparameterize()``
    merges them into one ``k x k`` kernel (RepVGG-style, exact). The untouched channels are passed
    through by concatenation, never by writing into the input (PLKSR's in-place eval path would
    corrupt the other path's input of a dual-path block).

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, kernel_size: int = 17, ratio: float = 0.25, deploy: bool = False):
        super().__init__()
        if kernel_size % 2 == 0 or kernel_size < 3:
            raise ValueError(f"plk_kernel must be an odd integer >= 3, got {kernel_size}.")
        self.split = max(1, int(channels * ratio))
        self.kernel_size = kernel_size
        pad = kernel_size // 2
        self.large = ReplicatePadConv2d(self.split, self.split, kernel_size, 1, pad)
        self.small = None if deploy else conv3x3(self.split, self.split)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        part, rest = x.split((self.split, x.shape[1] - self.split), dim=1)
        if x.device.type == "cpu" and torch.is_grad_enabled():
            # PyTorch's CPU backward of a large-kernel conv on few channels is an order of magnitude
            # slower in channels_last; the forward is not, so only CPU training takes the detour
            # through NCHW (training needs it on every device; it is not an inference kernel).
            y = self.large(part.contiguous())
            if x.is_contiguous(memory_format=torch.channels_last):
                y = y.contiguous(memory_format=torch.channels_last)
        else:
            y = self.large(part)
        if self.small is not None:
            y = y + self.small(part) + part
        return torch.cat((y, rest), 1)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.small is None:
            return
        k, c = self.kernel_size, self.split
        weight = self.large.weight + F.pad(self.small.weight, [(k - 3) // 2] * 4)
        identity = torch.zeros_like(weight)
        identity[torch.arange(c), torch.arange(c), k // 2, k // 2] = 1.0
        self.large.weight.copy_(weight + identity)
        self.large.bias.add_(self.small.bias)
        self.small = None


class RepDepthwise3x3(nn.Module):
    """Depthwise 3x3 conv (no padding) with parallel per-channel 1x1 and identity branches.

    The extra branches ease optimisation (RepVGG, ECBSR, SPAN) and cost nothing after
    ``reparameterize()``, which folds them into the 3x3 kernel's centre tap (exact).
    ``x: (B, C, H + 2, W + 2)`` (already padded) -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, deploy: bool = False):
        super().__init__()
        self.conv = nn.Conv2d(channels, channels, 3, groups=channels)
        self.point = None if deploy else nn.Conv2d(channels, channels, 1, groups=channels)

    def forward(self, x: torch.Tensor, channels: slice | None = None) -> torch.Tensor:
        """``channels``: the range of this module's channels that ``x`` holds (their weights only), or
        all of them. (Indexing with a whole-range slice would cost each parameter's gradient a copy.)"""
        part = (lambda t: t) if channels is None else (lambda t: t[channels])
        weight = part(self.conv.weight)
        y = F.conv2d(x, weight, part(self.conv.bias), groups=weight.shape[0])
        if self.point is not None:
            # The per-channel 1x1 as an affine: the same numbers, but a grouped 1x1 conv's CPU
            # backward loops over the groups (one small conv per channel).
            centre = x[..., 1:-1, 1:-1]
            gain = part(self.point.weight).view(1, -1, 1, 1)
            shift = part(self.point.bias).view(1, -1, 1, 1)
            y = y + torch.addcmul(shift, centre, gain) + centre
        return y

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.point is None:
            return
        self.conv.weight[:, 0, 1, 1] += self.point.weight[:, 0, 0, 0] + 1.0
        self.conv.bias += self.point.bias
        self.point = None


class PaddedDepthwiseExpand(nn.Module):
    """1x1 expansion followed by a (reparameterizable) depthwise 3x3 without padding, returned as
    the two channel halves that a gate multiplies.

    The input arrives replicate-padded by one pixel: a 1x1 conv commutes with replicate padding, so
    padding the narrow input instead of the wide expanded map gives the same result with
    ``expansion`` times less padding traffic.
    ``x: (B, C, H + 2, W + 2)`` -> two ``(B, hidden / 2, H, W)``.
    """

    def __init__(self, channels: int, hidden: int, deploy: bool = False):
        super().__init__()
        if hidden % 2:
            raise ValueError(f"PaddedDepthwiseExpand needs an even hidden width, got {hidden}.")
        self.expand = conv1x1(channels, hidden)
        self.dwconv = RepDepthwise3x3(hidden, deploy)

    def forward(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.dwconv(self.expand(x)).chunk(2, dim=1)


def pad1(x: torch.Tensor) -> torch.Tensor:
    """Replicate-pad ``x: (B, C, H, W)`` by one pixel on every side."""
    return replicate_pad(x, (1, 1, 1, 1))


class GatedConv(nn.Module):
    """NAFNet gated conv: 1x1 expand -> depthwise 3x3 -> SimpleGate (product of the channel halves) -> 1x1.

    NAFNet's simplified channel attention (SCA) is left out on purpose: it pools over the whole
    image, so tiles of a large image would disagree (the train-patch vs full-image gap that NAFNet's
    TLC patches up at test time); the preceding GroupNorm already adapts to per-image statistics.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``. Deployed, ``project`` lives in the fusion 1x1 of the
    block (:class:`DualPathBlock`), which calls :meth:`gate`.
    """

    def __init__(self, channels: int, expansion: int = 2, deploy: bool = False):
        super().__init__()
        hidden = channels * expansion
        self.spatial = PaddedDepthwiseExpand(channels, hidden, deploy)
        self.project = None if deploy else conv1x1(hidden // 2, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.gate(pad1(x)))

    def gate(self, padded: torch.Tensor) -> torch.Tensor:
        """SimpleGate ``a * b``, the input of ``project``: ``(B, C, H + 2, W + 2)`` -> ``(B, hidden / 2, H, W)``."""
        a, b = self.spatial(padded)
        return a * b


def attend(q: torch.Tensor, k: torch.Tensor, v: torch.Tensor, mask: torch.Tensor) -> torch.Tensor:
    """``softmax(q k^T + mask) v`` for ``q, k, v: (N, G, L, d)`` and ``mask: (N or 1, G or 1, L, L)``
    (logit scale already in ``q``) -> ``(N, G, L, d)``.

    ``F.scaled_dot_product_attention``: one fused kernel (CPU and GPU) that never materialises the
    ``L x L`` scores of all windows.
    """
    return F.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=1.0)


class WindowAttention(nn.Module):
    """(Shifted-)window multi-head attention, scaled-cosine form (Swin V2).

    ``softmax(cos(q, k) * exp(min(logit_scale, log 100)) + rel_pos_bias [+ shift mask]) v``. The
    cosine bounds the logits, so attention cannot blow up in fp16/bf16. Bias and mask are handed to
    ``scaled_dot_product_attention`` as one 4-D float mask (a 3-D mask makes SDPA take a slower
    path on CPU). The windows are those of the map replicate-padded to window multiples (and rolled
    in a shifted block); one gather cuts them out and one puts them back (:func:`window_gather_index`,
    :func:`window_scatter_index`).

    ``x: (B, H, W, C)`` -> ``(B, H, W, C)``.
    """

    def __init__(self, dim: int, num_heads: int, window_size: int = 8, shift: bool = False):
        super().__init__()
        if dim % num_heads:
            raise ValueError(f"Channel width {dim} is not divisible by num_heads={num_heads}.")
        self.num_heads = num_heads
        self.window_size = window_size
        self.shift = window_size // 2 if shift else 0
        self.qkv = nn.Linear(dim, 3 * dim)
        self.proj = nn.Linear(dim, dim)
        self.logit_scale = nn.Parameter(torch.full((num_heads, 1, 1), math.log(10.0)))
        self.rel_pos_table = nn.Parameter(torch.zeros((2 * window_size - 1) ** 2, num_heads))
        nn.init.trunc_normal_(self.rel_pos_table, std=0.02)
        self.register_buffer("rel_pos_index", relative_position_index(window_size), persistent=False)
        self._terms_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}
        self._index_cache: dict[tuple, torch.Tensor] = {}

    def _attn_terms(self, hp: int, wp: int, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """The scales of q and k (``exp(min(logit_scale, log 100))`` and 1) as ``(2, heads, 1)``, and the
        relative position bias (+ shift mask) as one float mask: ``(1, heads, L, L)``, or
        ``(nW, heads, L, L)`` for a shifted block on a ``(hp, wp)`` map.

        Without gradients (inference) both are cached per size and parameter version: they depend on
        the weights and the map size only, and the mask over all windows costs as much as the
        attention itself.
        """
        device = self.rel_pos_table.device
        key = (hp, wp, dtype, device, self.rel_pos_table._version, self.logit_scale._version)
        cacheable = not torch.is_grad_enabled() and not _capturing_graph()
        if cacheable and key in self._terms_cache:
            return self._terms_cache[key]
        scale = torch.clamp(self.logit_scale, max=math.log(100.0)).exp().view(1, -1, 1)
        scale = torch.cat((scale, torch.ones_like(scale))).to(dtype)
        length, heads = self.window_size**2, self.num_heads
        bias = self.rel_pos_table[self.rel_pos_index.view(-1)].view(length, length, heads)
        bias = bias.permute(2, 0, 1).to(dtype)  # (heads, L, L)
        if self.shift:
            bias = bias[None] + shifted_window_mask(hp, wp, self.window_size, self.shift, device).to(dtype)[:, None]
        else:
            bias = bias[None]
        if cacheable:
            if len(self._terms_cache) > 8:  # bounded: a folder of varied sizes must not grow memory
                self._terms_cache.clear()
            self._terms_cache[key] = (scale, bias)
        return scale, bias

    def _window_index(self, build: Callable[..., torch.Tensor], h: int, w: int, *extra) -> torch.Tensor:
        """``build(h, w, window, shift, *extra)``, cached per size (but not while a graph is captured:
        it must follow the traced size)."""
        args = (h, w, self.window_size, self.shift, *extra)
        if _capturing_graph():
            return build(*args)
        key = (build.__name__, *args)
        if key not in self._index_cache:
            if len(self._index_cache) > 8:  # bounded, as the attention terms
                self._index_cache.clear()
            self._index_cache[key] = build(*args)
        return self._index_cache[key]

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[1:3]
        return self.merge(self.attend(self.partition(x), h, w), h, w)

    def partition(self, x: torch.Tensor) -> torch.Tensor:
        """The windows of ``x: (B, H, W, C)``: ``(B, nW, L, C)``."""
        b, h, w, c = x.shape
        gather = self._window_index(window_gather_index, h, w, x.device)
        return x.reshape(b, h * w, c).index_select(1, gather).view(b, -1, self.window_size**2, c)

    def merge(self, windows: torch.Tensor, h: int, w: int, pad: int = 0) -> torch.Tensor:
        """The ``(h, w)`` map that ``windows: (B, nW, L, C)`` of :meth:`partition` cover, every pixel from
        its own token, replicate-padded by ``pad`` on every side: ``(B, h + 2 pad, w + 2 pad, C)``."""
        b, c = windows.shape[0], windows.shape[-1]
        scatter = self._window_index(window_scatter_index, h, w, pad, windows.device)
        return windows.reshape(b, -1, c).index_select(1, scatter).view(b, h + 2 * pad, w + 2 * pad, c)

    def attend(self, windows: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """Attention within ``windows: (B, nW, L, C)`` of an ``(h, w)`` map -> ``(B, nW, L, C)``."""
        ws = self.window_size
        terms = self._attn_terms(round_up(h, ws), round_up(w, ws), linear_dtype(windows))
        return self.attend_windows(windows, *terms)

    def attend_windows(self, windows: torch.Tensor, qk_scale: torch.Tensor, attn_mask: torch.Tensor) -> torch.Tensor:
        """Attention within ``windows: (B, nW, L, C)``, with ``qk_scale`` and ``attn_mask`` from
        :meth:`_attn_terms` (for a shifted block, one mask per window: ``(nW, heads, L, L)``, the same
        for every sample) -> ``(B, nW, L, C)``."""
        b, n_win, length, c = windows.shape
        heads = self.num_heads
        qkv = self.qkv(windows).view(b * n_win, length, 3, heads, c // heads)
        # Cosine attention: unit q and k, q also carrying the logit scale, in one pass over both in
        # this layout (head dim contiguous).
        # (split and unbind, not slices: their backward is one op each, a slice's a zero-filled copy)
        qk, v = qkv.split((2, 1), dim=2)
        qk = qk * (qk_scale / torch.linalg.vector_norm(qk, dim=-1, keepdim=True).clamp_min(1e-6))
        q, k = (t.transpose(1, 2) for t in qk.unbind(2))
        v = v.squeeze(2).transpose(1, 2)
        if self.shift:  # the windows' masks, for every sample (a view for one sample)
            attn_mask = attn_mask.expand(b, *attn_mask.shape).reshape(b * n_win, heads, length, length)
        out = attend(q, k, v, attn_mask)  # (B * nW, heads, L, d)
        return self.proj(out.transpose(1, 2).reshape(b, n_win, length, c))


class GDFN(nn.Module):
    """Restormer gated-Dconv feed-forward network.

    1x1 expand to ``2 * hidden`` -> depthwise 3x3 -> ``GELU(a) * b`` -> 1x1 back.
    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, expansion: float = 2.66, deploy: bool = False):
        super().__init__()
        hidden = int(channels * expansion)
        self.spatial = PaddedDepthwiseExpand(channels, 2 * hidden, deploy)
        self.project = None if deploy else conv1x1(hidden, channels)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.project(self.gate(pad1(x)))

    def gate(self, padded: torch.Tensor) -> torch.Tensor:
        """``GELU(a) * b``, the input of ``project``: ``(B, C, H + 2, W + 2)`` -> ``(B, hidden, H, W)``."""
        a, b = self.spatial(padded)
        return F.gelu(a) * b


class DySample(nn.Module):
    """DySample up-sampler (Liu et al. 2023): bilinear re-sampling at learned point offsets.

    Offsets come from a 1x1 conv initialised tiny (std 1e-3) around the static grid, so at init it
    is bilinear up-sampling; ``border`` padding keeps constant maps constant. Keeps the channels.
    ``x: (B, C, H, W)`` -> ``(B, C, s*H, s*W)``.
    """

    def __init__(self, channels: int, scale: int = 2, groups: int = 4):
        super().__init__()
        self.scale = scale
        self.groups = groups if channels % groups == 0 else 1
        self.offset = conv1x1(channels, 2 * self.groups * scale * scale)
        nn.init.normal_(self.offset.weight, std=1e-3)
        nn.init.zeros_(self.offset.bias)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        s, g = self.scale, self.groups
        # Offsets in input-pixel units; 0.25 keeps neighbouring sample points from crossing (paper).
        offset = F.pixel_shuffle(self.offset(x) * 0.25, s).reshape(b * g, 2, s * h, s * w)
        ys = (torch.arange(s * h, device=x.device, dtype=x.dtype) + 0.5) / s - 0.5
        xs = (torch.arange(s * w, device=x.device, dtype=x.dtype) + 0.5) / s - 0.5
        px = xs.view(1, 1, -1) + offset[:, 0]
        py = ys.view(1, -1, 1) + offset[:, 1]
        grid = torch.stack(((2 * px + 1) / w - 1, (2 * py + 1) / h - 1), dim=-1)
        out = F.grid_sample(
            x.reshape(b * g, c // g, h, w), grid, mode="bilinear", padding_mode="border", align_corners=False
        )
        return out.reshape(b, c, s * h, s * w)


class Upsample2x(nn.Module):
    """Decoder up-sampling by 2 from ``in_ch`` to ``out_ch`` channels.

    ``'pixelshuffle'``: 1x1 conv (ICNR-initialised: no checkerboard at init) -> PixelShuffle(2).
    ``'dysample'``: 1x1 conv to ``out_ch`` -> DySample.
    ``x: (B, in_ch, H, W)`` -> ``(B, out_ch, 2H, 2W)``, plus ``skip`` of that shape when given.
    """

    def __init__(self, in_ch: int, out_ch: int, mode: str = "pixelshuffle"):
        super().__init__()
        if mode == "pixelshuffle":
            conv = conv1x1(in_ch, out_ch * 4)
            nn.init.zeros_(conv.bias)
            self.body = nn.Sequential(icnr_(conv, 2), nn.PixelShuffle(2))
        else:
            self.body = nn.Sequential(conv1x1(in_ch, out_ch), DySample(out_ch, 2))

    def forward(self, x: torch.Tensor, skip: torch.Tensor | None = None) -> torch.Tensor:
        conv, up = self.body
        if skip is None:
            return up(conv(x))
        if isinstance(up, nn.PixelShuffle):
            return add_pixel_shuffle(skip, conv(x), 2)
        return up(conv(x)) + skip


class Downsample2x(nn.Module):
    """PixelUnshuffle(2) -> 1x1 conv: ``(B, in_ch, H, W)`` -> ``(B, out_ch, H/2, W/2)`` (lossless).

    Computed as the 2x2 stride-2 conv it equals, with the same weights viewed ``(out, in, 2, 2)``
    (PixelUnshuffle puts the 2x2 neighbours of a channel next to each other): one kernel, no shuffle.
    """

    def __init__(self, in_ch: int, out_ch: int):
        super().__init__()
        self.body = nn.Sequential(nn.PixelUnshuffle(2), conv1x1(in_ch * 4, out_ch))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        conv = self.body[1]
        return F.conv2d(x, conv.weight.view(conv.out_channels, -1, 2, 2), conv.bias, stride=2)


# ----------------------------------------------------------------------------------------------
# The dual-path block and a stage
# ----------------------------------------------------------------------------------------------


class LocalPath(nn.Module):
    """Local path: GroupNorm -> partial large-kernel conv -> NAFNet gated conv.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, plk_kernel: int, plk_ratio: float, deploy: bool = False):
        super().__init__()
        self.norm = nn.GroupNorm(4, channels)
        self.plk = PartialLargeKernelConv(channels, plk_kernel, plk_ratio, deploy)
        self.gated = GatedConv(channels, deploy=deploy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.gated(self.plk(self.norm(x)))

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor]:
        """What the path's closing 1x1 (``gated.project``) reads: the gate product ``(B, C, H, W)``."""
        return (self.gated.gate(pad1(self.plk(self.norm(x)))),)


@torch.no_grad()
def fold_layernorm_(norm: nn.LayerNorm, weight: torch.Tensor, bias: torch.Tensor) -> nn.LayerNorm:
    """Fold ``norm``'s affine into the next linear map (``weight: (out, C, ...)``, ``bias: (out,)``).

    ``W (g * n + b) + c = (W g) n + (W b + c)``: exact. Returns the affine-free LayerNorm to use.
    """
    w2 = weight.view(weight.shape[0], weight.shape[1], -1)
    bias += (w2 * norm.bias.view(1, -1, 1)).sum((1, 2))
    w2 *= norm.weight.view(1, -1, 1)
    return nn.LayerNorm(norm.normalized_shape, eps=norm.eps, elementwise_affine=False).to(weight.device)


class ContextPath(nn.Module):
    """Context path: ``u = x + WindowAttention(LN(x))``, then ``u + GDFN(LN(u))`` (pre-norm residuals).

    The attention's residual is added to each window token, and one gather puts the windows back
    already replicate-padded by a pixel for the GDFN's depthwise 3x3. ``reparameterize()`` folds both
    LayerNorm affines into the next linear maps (qkv, GDFN expand).
    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(
        self, channels: int, num_heads: int, window_size: int, shift: bool, ffn_expansion: float, deploy: bool = False
    ):
        super().__init__()
        affine = not deploy
        self.norm_attn = nn.LayerNorm(channels, elementwise_affine=affine)
        self.attn = WindowAttention(channels, num_heads, window_size, shift)
        self.norm_ffn = LayerNorm2d(channels, elementwise_affine=affine)
        self.ffn = GDFN(channels, ffn_expansion, deploy)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        u, gate = self.features(x)
        return u + self.ffn.project(gate)

    def features(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """What the path's output is linear in: ``u = x + WindowAttention(LN(x))`` ``(B, C, H, W)``
        and the GDFN's gate product of ``LN(u)`` ``(B, hidden, H, W)``; the output is
        ``u + ffn.project(gate)``."""
        u = self.attended(x)
        return u[..., 1:-1, 1:-1], self.ffn.gate(self.norm_ffn(u))

    def attended(self, x: torch.Tensor) -> torch.Tensor:
        """``u = x + WindowAttention(LN(x))``, the residual added per window token, put back already
        replicate-padded by a pixel for the GDFN's depthwise 3x3: ``(B, C, H + 2, W + 2)``."""
        h, w = x.shape[-2:]
        windows = self.attn.partition(x.permute(0, 2, 3, 1))
        windows = windows + self.attn.attend(self.norm_attn(windows), h, w)
        return self.attn.merge(windows, h, w, pad=1).permute(0, 3, 1, 2)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.norm_attn.elementwise_affine:
            self.norm_attn = fold_layernorm_(self.norm_attn, self.attn.qkv.weight, self.attn.qkv.bias)
        if self.norm_ffn.norm.elementwise_affine:
            expand = self.ffn.spatial.expand
            self.norm_ffn.norm = fold_layernorm_(self.norm_ffn.norm, expand.weight, expand.bias)


@torch.no_grad()
def fold_pointwise_output(
    weight: torch.Tensor, bias: torch.Tensor, next_weight: torch.Tensor, next_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """The one linear map equal to a 1x1 conv or linear ``(weight, bias)`` followed by a 1x1 conv
    ``(next_weight, next_bias)``: ``N (W x + b) + n = (N W) x + (N b + n)``, computed in fp64.
    ``weight: (C_mid, C_in[, 1, 1])``, ``next_weight: (C_out, C_mid, 1, 1)`` -> ``(C_out, C_in[, 1, 1])``
    (the form of ``weight``) and ``(C_out,)``."""
    n = next_weight.flatten(1).double()
    folded = (n @ weight.flatten(1).double()).to(weight.dtype).view(n.shape[0], *weight.shape[1:])
    return folded, (n @ bias.double() + next_bias.double()).to(bias.dtype)


@torch.no_grad()
def fold_pointwise_input(
    weight: torch.Tensor, bias: torch.Tensor, first_weight: torch.Tensor, first_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a 1x1 conv that feeds the first input channels of the next 1x1 conv into that conv.

    ``W [P x + p; y] + b = [W_x P, W_y] [x; y] + (W_x p + b)`` (:func:`fold_pointwise_output` on the
    columns ``W_x``). ``first_weight: (C, C, 1, 1)``, ``first_bias: (C,)``; ``weight: (C_out, C +
    C_rest, 1, 1)``, ``bias: (C_out,)`` -> the folded ``(weight, bias)``, same shapes.
    """
    c = first_weight.shape[0]
    head, bias = fold_pointwise_output(first_weight, first_bias, weight[:, :c], bias)
    return torch.cat((head, weight[:, c:]), 1), bias


@torch.no_grad()
def append_pointwise_input(
    weight: torch.Tensor, bias: torch.Tensor, columns: slice, added_weight: torch.Tensor, added_bias: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """Fold a 1x1 conv whose output is added to the input channels ``columns`` of the next 1x1 conv
    into that conv, which then reads the folded conv's input as extra, last input channels.

    ``W [.., u + P g + p, ..] + b = [W, W_u P] [.., u, .., g] + (W_u p + b)``
    (:func:`fold_pointwise_output` on the columns ``W_u``). ``weight: (C_out, C_in, 1, 1)``,
    ``added_weight: (len(columns), C_g, 1, 1)`` -> ``((C_out, C_in + C_g, 1, 1), (C_out,))``.
    """
    extra, bias = fold_pointwise_output(added_weight, added_bias, weight[:, columns], bias)
    return torch.cat((weight, extra), 1), bias


@torch.no_grad()
def fold_path_projections(
    weight: torch.Tensor,
    bias: torch.Tensor,
    local_project: tuple[torch.Tensor, torch.Tensor] | None,
    ffn_project: tuple[torch.Tensor, torch.Tensor] | None,
    has_local: bool,
) -> tuple[torch.Tensor, torch.Tensor]:
    """A dual-path block's fusion 1x1 ``(weight, bias)`` with its paths' closing 1x1s folded in (each
    ``(weight, bias)``, or None when already folded): the gated conv's ``project`` into the local
    path's columns (the first), the GDFN's as extra columns that read its gate product (appended).
    The deployed fusion then reads ``[gate_local; u; gate_ffn]``. Used by deploy and by the loading
    migration of older deployed files."""
    if local_project is not None:
        weight, bias = fold_pointwise_input(weight, bias, *local_project)
    if ffn_project is not None:
        start = weight.shape[0] if has_local else 0  # where the fusion reads the context path
        columns = slice(start, start + ffn_project[0].shape[0])
        weight, bias = append_pointwise_input(weight, bias, columns, *ffn_project)
    return weight, bias


def with_residual_columns(weight: torch.Tensor) -> torch.Tensor:
    """A block's fusion 1x1 weight ``(C, F, 1, 1)`` that also reads the block's input as its last ``C``
    input channels, through identity columns: ``(C, F + C, 1, 1)``. ``W y + b + x = [W, I] [y; x] + b``
    folds the residual add (exact: each output adds its own input channel once, times 1)."""
    eye = torch.eye(weight.shape[0], dtype=weight.dtype, device=weight.device)
    return torch.cat((weight, eye[:, :, None, None]), 1)


def deployed_fusion_width(channels: int, hidden: int, use_local: bool, use_context: bool) -> int:
    """Input channels of a deployed block's fusion 1x1: ``[local gate product; u; GDFN gate product;
    x]``, ``hidden`` the GDFN's gate-product width (the paths' closing 1x1s and the residual folded)."""
    return channels * use_local + (channels + hidden) * use_context + channels


class DualPathBlock(nn.Module):
    """Local path || context path, fused by ``concat -> 1x1`` and added back with a layer scale.

    The layer scale starts at zero, so every block starts as the identity (NAFNet); HAT's 0.01
    conv-branch scale addresses the same early-training balance between the paths. Both paths end in
    linear maps (the gated conv's and the GDFN's ``project`` 1x1s), which ``reparameterize()`` folds
    into the fusion conv together with the scale, and the residual add becomes identity columns of
    the fusion conv: deployed, the fusion reads what those maps read (the paths' ``features``) and
    the block's input, and its output is the block's. One map-sized pass less per path, and no add.
    ``local_hint`` (the high-frequency band ``H0`` at stage 1) is added to the local path's input.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(
        self,
        channels: int,
        num_heads: int,
        window_size: int,
        shift: bool,
        ffn_expansion: float,
        plk_kernel: int,
        plk_ratio: float,
        use_local: bool = True,
        use_context: bool = True,
        deploy: bool = False,
    ):
        super().__init__()
        self.local = LocalPath(channels, plk_kernel, plk_ratio, deploy) if use_local else None
        self.context = (
            ContextPath(channels, num_heads, window_size, shift, ffn_expansion, deploy) if use_context else None
        )
        if deploy:
            fused_in = deployed_fusion_width(channels, int(channels * ffn_expansion), use_local, use_context)
        else:
            fused_in = channels * (int(use_local) + int(use_context))
        self.fuse = conv1x1(fused_in, channels)
        self.layer_scale = None if deploy else nn.Parameter(torch.zeros(1, channels, 1, 1))

    def forward(self, x: torch.Tensor, local_hint: torch.Tensor | None = None) -> torch.Tensor:
        """``x + layer_scale * fuse([local(x + hint); context(x)])``.

        Deployed: ``fuse([local features; context features; x])``, the scale, the paths' closing 1x1s
        and the residual folded in.
        """
        local_in = x if local_hint is None else x + local_hint
        if self.layer_scale is None:
            return self.fuse(torch.cat([*self.features(local_in, x), x], 1))
        paths = [path(inp) for path, inp in ((self.local, local_in), (self.context, x)) if path is not None]
        update = self.fuse(torch.cat(paths, 1) if len(paths) > 1 else paths[0])
        return x + self.layer_scale * update  # not addcmul: one launch less forward, two more backward

    def features(self, local_in: torch.Tensor, x: torch.Tensor) -> list[torch.Tensor]:
        """What the deployed fusion reads besides ``x``: the local path's features of ``local_in`` and
        the context path's of ``x`` (see ``LocalPath.features``, ``ContextPath.features``)."""
        parts = [] if self.local is None else list(self.local.features(local_in))
        return parts if self.context is None else parts + list(self.context.features(x))

    @torch.no_grad()
    def reparameterize(self) -> None:
        """Fold the layer scale, the gated conv's and the GDFN's ``project`` and the residual add into
        the fusion conv."""
        if self.layer_scale is None:
            return
        owners = (self.local.gated if self.local is not None else None,
                  self.context.ffn if self.context is not None else None)  # fmt: skip
        projects = [None if o is None else (o.project.weight, o.project.bias) for o in owners]
        scale = self.layer_scale.view(-1)
        weight, bias = self.fuse.weight * scale.view(-1, 1, 1, 1), self.fuse.bias * scale
        weight, bias = fold_path_projections(weight, bias, *projects, self.local is not None)
        weight = with_residual_columns(weight)
        self.fuse = conv1x1(weight.shape[1], weight.shape[0]).to(weight)
        self.fuse.weight.copy_(weight)
        self.fuse.bias.copy_(bias)
        self.layer_scale = None
        for owner in owners:
            if owner is not None:
                owner.project = None


class Stage(nn.Module):
    """``depth`` dual-path blocks at one resolution; shifted windows on every other block.

    ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, depth: int, num_heads: int, window_size: int, **block_kwargs):
        super().__init__()
        self.blocks = nn.ModuleList(
            DualPathBlock(channels, num_heads, window_size, shift=bool(i % 2), **block_kwargs)
            for i in range(depth)
        )

    def forward(self, x: torch.Tensor, local_hint: torch.Tensor | None = None) -> torch.Tensor:
        for i, block in enumerate(self.blocks):
            x = block(x, local_hint if i == 0 else None)
        return x


# ----------------------------------------------------------------------------------------------
# MoE bottleneck, degradation prompt, texture head
# ----------------------------------------------------------------------------------------------


class ConvExpert(nn.Module):
    """E1, local texture: depthwise 3x3 -> partial large-kernel conv -> GELU -> 1x1 (zero-init).

    Returns a residual update. ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, plk_kernel: int, plk_ratio: float, deploy: bool = False):
        super().__init__()
        self.dwconv = conv3x3(channels, channels, groups=channels)
        self.plk = PartialLargeKernelConv(channels, plk_kernel, plk_ratio, deploy)
        self.out = zero_init_(conv1x1(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.out(F.gelu(self.plk(self.dwconv(x))))


class AttentionExpert(nn.Module):
    """E2, structure: LayerNorm -> window attention -> 1x1 (zero-init). Residual update.

    ``reparameterize()`` folds the LayerNorm affine into ``qkv`` and ``out`` into the attention's
    ``proj`` (two linear maps in a row).
    """

    def __init__(self, channels: int, num_heads: int, window_size: int, deploy: bool = False):
        super().__init__()
        self.norm = nn.LayerNorm(channels, elementwise_affine=not deploy)
        self.attn = WindowAttention(channels, num_heads, window_size, shift=False)
        self.out = None if deploy else zero_init_(conv1x1(channels, channels))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        t = self.attn(self.norm(x.permute(0, 2, 3, 1))).permute(0, 3, 1, 2)
        return t if self.out is None else self.out(t)

    @torch.no_grad()
    def reparameterize(self) -> None:
        if self.norm.elementwise_affine:
            self.norm = fold_layernorm_(self.norm, self.attn.qkv.weight, self.attn.qkv.bias)
        if self.out is not None:
            proj, out = self.attn.proj, self.out
            weight, bias = fold_pointwise_output(proj.weight, proj.bias, out.weight, out.bias)
            proj.weight.copy_(weight)
            proj.bias.copy_(bias)
            self.out = None


class FrequencyExpert(nn.Module):
    """E3, global frequency modulation (FFC-style spectral block), resolution-independent.

    ``rfft2 -> [real; imag] -> 1x1 -> GELU -> 1x1 (zero-init) -> irfft2(s=(H, W))``, in fp32 (no
    fp16 FFT on CPU; cuFFT fp16 needs power-of-two sizes). The 1x1 convs have no bias, so a
    constant map (DC only) stays constant. Cost O(HW log HW). Residual update.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.mix = conv1x1(2 * channels, 2 * channels, bias=False)
        self.out = zero_init_(conv1x1(2 * channels, 2 * channels, bias=False))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        with torch.autocast(device_type=x.device.type, enabled=False):
            spec = torch.fft.rfft2(x.float(), norm="ortho")
            y = torch.cat((spec.real, spec.imag), 1)
            y = conv_fp32(self.out, F.gelu(conv_fp32(self.mix, y)))
            real, imag = y.chunk(2, dim=1)
            out = torch.fft.irfft2(torch.complex(real, imag), s=(h, w), norm="ortho")
        return out.to(x.dtype)

    def forward_traceable(self, x: torch.Tensor) -> torch.Tensor:
        """``forward`` with the 2-D real FFT and its inverse as DFT matrix products, for exporters with
        no FFT or complex tensors (TorchScript-based ONNX). O(HW(H + W)) instead of O(HW log HW).

        rfft2 (ortho): ``X = (C_h - i S_h) x (C_w - i S_w) / sqrt(HW)`` over ``W // 2 + 1`` columns;
        irfft2(s=(H, W)): inverse DFT over H, then the Hermitian sum over W with weights 1 for the DC
        and (even W) Nyquist columns and 2 for the others; their imaginary parts drop out, as in
        ``torch.fft.irfft2``.
        """
        h, w = x.shape[-2:]
        xf = x.float()
        cos_w, sin_w = dft_matrices(w, w // 2 + 1, x.device)  # (W, V)
        cos_h, sin_h = dft_matrices(h, h, x.device)  # (H, H), symmetric
        norm = torch.rsqrt(xf.new_ones(()) * (h * w))
        a, b = xf @ cos_w, xf @ sin_w
        real = (cos_h @ a - sin_h @ b) * norm
        imag = (sin_h @ a + cos_h @ b) * -norm
        y = self.out(F.gelu(self.mix(torch.cat((real, imag), 1))))
        real, imag = y.chunk(2, dim=1)
        real, imag = cos_h @ real - sin_h @ imag, sin_h @ real + cos_h @ imag
        k = torch.arange(w // 2 + 1, device=x.device)
        weight = 2.0 - (k == 0).float() - (2 * k == w).float()
        out = (real @ (cos_w * weight).transpose(0, 1) - imag @ (sin_w * weight).transpose(0, 1)) * norm
        return out.to(x.dtype)


class DegradationPrompt(nn.Module):
    """PromptIR-style degradation prompt: a bank of learned prompts mixed by per-image weights.

    PromptIR's prompts are spatial maps interpolated to the feature size; that ties the output to
    absolute position (tiles and shifted crops would disagree, constant images would gain a
    pattern). Here each prompt is a channel vector, broadcast over the map: the prompt says *what*
    degradation is present, the features say *where*.

    ``feat: (B, C, H, W)``, ``ctx: (B, C, h, w)`` (pooled context; h = w = 1 in training) ->
    ``(feat + fuse([feat; prompt]), prompt weights (B, N, h, w))``.
    """

    def __init__(self, channels: int, num_prompts: int = 5):
        super().__init__()
        self.bank = nn.Parameter(torch.randn(num_prompts, channels) * 0.02)
        self.weights = conv1x1(channels, num_prompts)
        self.fuse = zero_init_(conv1x1(2 * channels, channels))

    def forward(self, feat: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        weights = torch.softmax(self.weights(ctx.to(feat.dtype)), dim=1)  # (B, N, h, w)
        prompt = torch.einsum("bnhw,nc->bchw", weights, self.bank.to(feat.dtype))
        prompt = prompt.expand(-1, -1, *feat.shape[-2:]) if prompt.shape[-1] == 1 else prompt
        return feat + self.fuse(torch.cat((feat, prompt), 1)), weights


class MoEBottleneck(nn.Module):
    """Mixture of lightweight experts with a softmax router (computed densely, router in fp32).

    ``routing='image'``: ``softmax(W gap(F))`` per image (with TLC context at eval, see
    :class:`ContextPool`); ``'token'``: a 1x1 conv router per pixel. ``top_k > 0`` keeps the
    ``top_k`` largest gates and renormalises them. All experts always run, so every parameter is
    in the graph (no DDP unused-parameter errors) and the output of one image never depends on the
    others of its batch (SeemoRe's eval path fails that for batch > 1).

    Output ``F + sum_i gate_i * Expert_i(F)`` (experts return residual updates). After each training
    forward, ``aux_loss`` holds ``balance_weight * switch_balance + z_weight * router_z`` (0 in
    eval), and after every forward ``last_gates``
    the detached gates: ``(B, E, 1, 1)`` (image) or ``(B, E, H, W)`` (token, or image under TLC).

    ``x: (B, C, H, W)``, ``ctx: (B, C, h, w)`` -> ``(B, C, H, W)``.
    """

    EXPERTS = ("conv", "attn", "fft")

    def __init__(
        self,
        channels: int,
        num_heads: int,
        window_size: int,
        plk_kernel: int,
        plk_ratio: float,
        experts: Sequence[str] = EXPERTS,
        routing: str = "image",
        top_k: int = 0,
        balance_weight: float = 1e-2,
        z_weight: float = 1e-3,
        deploy: bool = False,
    ):
        super().__init__()
        builders = {
            "conv": lambda: ConvExpert(channels, plk_kernel, plk_ratio, deploy),
            "attn": lambda: AttentionExpert(channels, num_heads, window_size, deploy),
            "fft": lambda: FrequencyExpert(channels),
        }
        self.expert_names = tuple(experts)
        self.experts = nn.ModuleList(builders[name]() for name in self.expert_names)
        self.routing = routing
        self.top_k = top_k
        self.balance_weight = balance_weight
        self.z_weight = z_weight
        self.router = conv1x1(channels, len(self.expert_names))
        nn.init.normal_(self.router.weight, std=1e-2)
        nn.init.zeros_(self.router.bias)
        self.aux_loss: torch.Tensor | None = None
        self.last_gates: torch.Tensor | None = None
        # The eval-time aux_loss: a CPU fp32 scalar, which adds to a loss on any device.
        self._zero_loss = torch.zeros(())

    def route(self, x: torch.Tensor, ctx: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Router logits and gates, both fp32: ``(B, E, h, w)``."""
        source = ctx if self.routing == "image" else x
        with torch.autocast(device_type=x.device.type, enabled=False):
            logits = conv_fp32(self.router, source)
            gates = torch.softmax(logits, dim=1)
            if 0 < self.top_k < gates.shape[1]:
                top = gates.topk(self.top_k, dim=1).indices
                keep = torch.zeros_like(gates).scatter_(1, top, 1.0)
                gates = gates * keep
                gates = gates / gates.sum(1, keepdim=True)
        return logits, gates

    def _auxiliary_loss(self, logits: torch.Tensor, gates: torch.Tensor) -> torch.Tensor:
        """Switch-Transformer load balance + ST-MoE router z-loss over all routed units."""
        num = gates.shape[1]
        probs = torch.softmax(logits, dim=1).transpose(0, 1).reshape(num, -1)  # (E, units)
        experts = torch.arange(num, device=gates.device).view(1, -1, 1, 1)
        chosen = (gates.argmax(1, keepdim=True) == experts).float().mean((0, 2, 3))  # fraction per expert
        balance = num * (chosen * probs.mean(1)).sum()
        z = torch.logsumexp(logits, dim=1).pow(2).mean()
        return self.balance_weight * balance + self.z_weight * z

    def forward(self, x: torch.Tensor, ctx: torch.Tensor) -> torch.Tensor:
        logits, gates = self.route(x, ctx)
        # The auxiliary loss only matters to training; inference skips its dozen small ops.
        self.aux_loss = self._auxiliary_loss(logits, gates) if self.training else self._zero_loss
        self.last_gates = gates.detach()
        out = x.float()
        for i, expert in enumerate(self.experts):
            out = torch.addcmul(out, gates[:, i : i + 1], expert(x).float())
        return out.to(x.dtype)


def _hash32(x: torch.Tensor) -> torch.Tensor:
    """Integer hash of ``x`` (int64 in ``[0, 2**32)``) into ``[0, 2**32)``; exact on every device.

    Two rounds of xor-shift-multiply (a well-mixing 32-bit hash); products stay below ``2**59``, so
    int64 arithmetic never overflows.
    """
    for _ in range(2):
        x = (((x >> 16) ^ x) * 0x45D9F3B) & 0xFFFFFFFF
    return (x >> 16) ^ x


def coordinate_noise(h: int, w: int, seed: int, device: torch.device) -> torch.Tensor:
    """Standard-normal noise ``(1, 1, h, w)`` that is a pure function of ``(row, column, seed)``.

    Hash-based (Box-Muller on two hashed uniforms) rather than a seeded ``torch.Generator``: the
    value at a pixel does not depend on the map size (a crop sees the same noise as the full
    image), it is the same on CPU and GPU, and it traces under ``torch.compile``/export without a
    graph break.
    """
    rows = torch.arange(h, device=device, dtype=torch.int64)[:, None]
    cols = torch.arange(w, device=device, dtype=torch.int64)[None, :]
    key = _hash32(_hash32(rows + (seed & 0xFFFFFFFF)) ^ cols)
    u1 = (_hash32(key).float() + 1.0) / 4294967296.0  # (0, 1]
    u2 = _hash32(key ^ 0x9E3779B9).float() / 4294967296.0
    noise = torch.sqrt(-2.0 * torch.log(u1)) * torch.cos(2.0 * math.pi * u2)
    return noise[None, None]


class NoiseInjection(nn.Module):
    """StyleGAN2 noise injection: ``x + weight[c] * strength * noise``, weight initialised to 0.

    ``noise_mode``: ``'random'`` draws fresh noise in training; ``'fixed'`` uses a seeded noise
    map (:func:`coordinate_noise`); ``'off'`` adds nothing (and, given at construction, creates no
    weight). In eval, ``'random'`` and ``'fixed'`` both use the seeded map, so inference is
    deterministic. The noise map is ``(1, 1, H, W)``, shared by the batch, so a sample's output does
    not depend on its batch. ``x: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    MODES = ("random", "fixed", "off")

    def __init__(self, channels: int, noise_mode: str = "random", strength: float = 1.0, seed: int = 0):
        super().__init__()
        # Built with 'off', the module has no weight at all: an unused parameter would trip DDP.
        self.weight = None if noise_mode == "off" else nn.Parameter(torch.zeros(1, channels, 1, 1))
        self.noise_mode = noise_mode
        self.strength = strength
        self.seed = seed
        self._fixed: torch.Tensor | None = None

    def _fixed_noise(self, h: int, w: int, like: torch.Tensor) -> torch.Tensor:
        if _capturing_graph():  # computed in the graph, so that any size works
            return coordinate_noise(h, w, self.seed, like.device).to(like.dtype)
        cached = self._fixed
        if cached is None or cached.shape[-2:] != (h, w) or cached.device != like.device:
            cached = coordinate_noise(h, w, self.seed, like.device)
            self._fixed = cached
        return cached.to(like.dtype)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if self.weight is None or self.noise_mode == "off" or self.strength == 0:
            return x
        h, w = x.shape[-2:]
        if self.training and self.noise_mode == "random":
            noise = torch.randn(x.shape[0], 1, h, w, device=x.device, dtype=x.dtype)
        else:
            noise = self._fixed_noise(h, w, x)
        return torch.addcmul(x, self.weight.to(x.dtype), noise, value=self.strength)


class ModulatedConv(nn.Module):
    """StyleGAN2 modulated 3x3 conv with demodulation, style per image (or per pixel under TLC).

    Computed as ``conv(x * s) * d`` with ``d = rsqrt(sum_{i,k} (w_oik s_i)^2 + 1e-8)``: equal to the
    grouped-conv form (StyleGAN2's ``fused_modconv=False``) for a per-image style, and it needs no
    groups = batch, so it exports and batches cleanly. The modulation bias starts at 1 (StyleGAN2).

    ``x: (B, C, H, W)``, ``style_src: (B, S, h, w)`` with ``(h, w)`` = ``(1, 1)`` (per image) or any
    size (local TLC style, resized to ``(H, W)``) -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, style_dim: int):
        super().__init__()
        self.weight = nn.Parameter(torch.randn(channels, channels, 3, 3) / math.sqrt(channels * 9))
        self.bias = nn.Parameter(torch.zeros(channels))
        self.modulation = conv1x1(style_dim, channels)
        nn.init.normal_(self.modulation.weight, std=1e-2)
        nn.init.ones_(self.modulation.bias)
        self._demod_cache: dict[tuple, tuple[torch.Tensor, torch.Tensor]] = {}

    def forward(self, x: torch.Tensor, style_src: torch.Tensor) -> torch.Tensor:
        style = self.modulation(style_src.to(x.dtype))  # (B, C, h, w)
        if style.shape[-2:] != (1, 1) and style.shape[-2:] != x.shape[-2:]:
            # Bilinear weights sum to 1, so resizing after the (affine) 1x1 modulation equals
            # modulating the resized source, at C instead of S channels and low resolution.
            style = F.interpolate(style, size=x.shape[-2:], mode="bilinear", align_corners=False)
        energy, floor = self._demodulation_terms(x.dtype)
        demod = torch.rsqrt(F.conv2d(style.pow(2), energy, floor))
        out = F.conv2d(replicate_pad(x * style, (1, 1, 1, 1)), self.weight.to(x.dtype))
        return torch.addcmul(self.bias.view(1, -1, 1, 1).to(x.dtype), out, demod)

    def _demodulation_terms(self, dtype: torch.dtype) -> tuple[torch.Tensor, torch.Tensor]:
        """``sum_k w_oik^2`` as a 1x1 conv weight ``(C_out, C_in, 1, 1)`` and the ``1e-8`` floor as its
        bias ``(C_out,)``, in ``dtype``. Without gradients they are cached per weight version (they
        depend on the weights only), as :class:`WindowAttention` caches its terms."""
        key = (self.weight._version, dtype, self.weight.device)
        cacheable = not torch.is_grad_enabled() and not _capturing_graph()
        if cacheable and key in self._demod_cache:
            return self._demod_cache[key]
        energy = self.weight.pow(2).sum((2, 3))[:, :, None, None].to(dtype)
        terms = energy, energy.new_full((energy.shape[0],), 1e-8)
        if cacheable:
            self._demod_cache.clear()  # one entry: the weights and dtype in use
            self._demod_cache[key] = terms
        return terms


class TextureHead(nn.Module):
    """Texture head: noise injection -> modulated conv -> LeakyReLU(0.2).

    ``x: (B, C, H, W)``, ``style_src: (B, S, h, w)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int, style_dim: int, noise_mode: str, noise_strength: float):
        super().__init__()
        self.noise = NoiseInjection(channels, noise_mode, noise_strength)
        self.conv = ModulatedConv(channels, style_dim)

    def forward(self, x: torch.Tensor, style_src: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(self.conv(self.noise(x), style_src), 0.2, inplace=True)  # on a fresh tensor


class FrequencyFusion(nn.Module):
    """Frequency-aware fusion: ``D + sigmoid(g([D; H0])) * p(H0)``, ``p`` zero-initialised.

    ``dec, high: (B, C, H, W)`` -> ``(B, C, H, W)``.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.gate = conv1x1(2 * channels, channels)
        self.project = zero_init_(conv1x1(channels, channels))

    def forward(self, dec: torch.Tensor, high: torch.Tensor) -> torch.Tensor:
        gate = torch.sigmoid(self.gate(torch.cat((dec, high), 1)))
        return torch.addcmul(dec, gate, self.project(high))


# ----------------------------------------------------------------------------------------------
# The network
# ----------------------------------------------------------------------------------------------

_FREQ_SPLITS = ("haar", "avgpool", "none")
_UPSAMPLERS = ("pixelshuffle", "dysample")
_ROUTINGS = ("image", "token")
# Version of the config record saved with the weights (``HERSR.config_json``). Format 1 was an integer
# ``hyper`` buffer; ``hersr_arch.loading`` migrates such files.
CONFIG_FORMAT = 2


@dataclass(frozen=True)
class HERSRConfig:
    """Every hyper-parameter of a HERSR network (defaults = the ``hersr_m`` preset), validated once.

    ``HERSR`` is built from it, keeps it as ``model.config`` and saves it with its weights, so that a
    state dict alone rebuilds the network (``hersr_arch.loading``, spandrel, export).

    Args:
        num_in_ch (int): input channels. Default 3.
        num_out_ch (int): output channels. Default 3. If it differs from ``num_in_ch``, the global
            residual uses the channel mean of the interpolated input.
        upscale (int): 1 (restoration) or 2, 3, 4 (super-resolution). Default 4.
        dims (tuple[int]): channel width per U-Net stage; its length is the number of stages.
            Each must be a positive multiple of 4 and of that stage's ``num_heads``. Default
            (48, 80, 128, 160).
        depths (tuple[int]): dual-path blocks per encoder stage (one int: the same for all). Default (3, 2, 2, 2).
        dec_depths (tuple[int]): dual-path blocks per decoder stage (finest first). Default (3, 2, 2, 1).
        num_heads (tuple[int]): attention heads per stage. Default (2, 4, 4, 8).
        window_size (int): attention window (tokens per side). Default 8.
        ffn_expansion (float): GDFN hidden expansion (Restormer: 2.66). Default 2.66.
        plk_kernel (int): odd large-kernel size of the partial large-kernel conv. Default 17.
        plk_ratio (float): fraction of channels the large kernel sees (PLKSR: 1/4). Default 0.25.
        freq_split (str): ``'haar'`` (exact Haar LL / detail bands), ``'avgpool'`` (2x2 mean and
            ``F0 - up(L0)``) or ``'none'``. Default ``'haar'``.
        use_local (bool): local (PLK + gated conv) path in every block. Default True.
        use_context (bool): context (window attention + GDFN) path in every block. Default True.
        use_moe (bool): MoE bottleneck (else identity). Default True.
        moe_experts (tuple[str]): subset of ``('conv', 'attn', 'fft')``. Default all three.
        moe_routing (str): ``'image'`` or ``'token'``. Default ``'image'``.
        moe_top_k (int): keep only the top-k gates (0 = dense softmax). Default 0.
        moe_balance_weight (float): Switch load-balancing weight inside ``aux_loss``. Default 1e-2.
        moe_z_weight (float): router z-loss weight inside ``aux_loss``. Default 1e-3.
        use_prompt (bool): PromptIR-style degradation prompt at the bottleneck. Default False.
        num_prompts (int): prompts in the bank. Default 5.
        upsampler (str): decoder up-sampling, ``'pixelshuffle'`` (ICNR) or ``'dysample'``.
            Default ``'pixelshuffle'``.
        msg_outputs (bool): decoder stages 2..n also emit RGB images (MSG deep supervision) in
            training; a train-mode forward then returns ``(out, [aux_2, ..., aux_n])`` where
            ``aux_k`` has the size of the output divided by ``2^(k-1)`` (rounded up). Default False.
        use_texture_head (bool): noise injection + modulated conv before reconstruction. Default True.
        noise_mode (str): ``'random'``, ``'fixed'`` or ``'off'`` (see :class:`NoiseInjection`).
            Default ``'random'``.
        noise_strength (float): multiplier of the injected noise. Default 1.0.
        train_size (int): LR training patch size; at eval, context pooling over larger images is
            local over windows of this size (TLC, see :class:`ContextPool`). Default 64.
        deploy (bool): the reparameterized (merged) form. Default False.
    """

    num_in_ch: int = 3
    num_out_ch: int = 3
    upscale: int = 4
    dims: tuple[int, ...] = (48, 80, 128, 160)
    depths: tuple[int, ...] = (3, 2, 2, 2)
    dec_depths: tuple[int, ...] = (3, 2, 2, 1)
    num_heads: tuple[int, ...] = (2, 4, 4, 8)
    window_size: int = 8
    ffn_expansion: float = 2.66
    plk_kernel: int = 17
    plk_ratio: float = 0.25
    freq_split: str = "haar"
    use_local: bool = True
    use_context: bool = True
    use_moe: bool = True
    moe_experts: tuple[str, ...] = ("conv", "attn", "fft")
    moe_routing: str = "image"
    moe_top_k: int = 0
    moe_balance_weight: float = 1e-2
    moe_z_weight: float = 1e-3
    use_prompt: bool = False
    num_prompts: int = 5
    upsampler: str = "pixelshuffle"
    msg_outputs: bool = False
    use_texture_head: bool = True
    noise_mode: str = "random"
    noise_strength: float = 1.0
    train_size: int = 64
    deploy: bool = False

    # Settings that tensor shapes and key names cannot reveal but that change what the weights mean:
    # weights saved with other values are refused. The others show in the state dict (torch names the
    # stray keys and shapes) or may differ on purpose (``train_size``, ``noise_mode``, ``moe_top_k``).
    UNSEEN_STRUCTURE: ClassVar[tuple[str, ...]] = (
        "upscale", "num_in_ch", "num_out_ch", "window_size", "moe_routing", "freq_split",
    )  # fmt: skip

    def __post_init__(self) -> None:
        if not isinstance(self.dims, Sequence) or not self.dims:
            raise ValueError(f"HERSR dims must list at least one channel width, got {self.dims!r}.")
        n = len(self.dims)
        # Frozen: normalise through object.__setattr__ (lists from YAML/JSON become tuples).
        object.__setattr__(self, "dims", tuple(int(d) for d in self.dims))
        for name in ("depths", "dec_depths", "num_heads"):
            object.__setattr__(self, name, _per_stage(getattr(self, name), n, name))
        object.__setattr__(self, "moe_experts", tuple(self.moe_experts))
        self._validate()

    def _validate(self) -> None:
        """Reject bad values with a sentence that names the value and what is allowed."""

        def choice(name, allowed):
            value = getattr(self, name)
            if value not in allowed:
                raise ValueError(f"HERSR {name}={value!r} is not supported; choose one of {list(allowed)}.")

        if self.upscale not in (1, 2, 3, 4) or isinstance(self.upscale, bool):
            raise ValueError(f"HERSR upscale must be one of 1, 2, 3, 4, got {self.upscale!r}.")
        choice("freq_split", _FREQ_SPLITS)
        choice("upsampler", _UPSAMPLERS)
        choice("moe_routing", _ROUTINGS)
        choice("noise_mode", NoiseInjection.MODES)
        for name in ("num_in_ch", "num_out_ch", "window_size", "train_size", "num_prompts"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"HERSR {name} must be a positive integer, got {value!r}.")
        if not isinstance(self.plk_kernel, int) or self.plk_kernel < 3 or self.plk_kernel % 2 == 0:
            raise ValueError(f"HERSR plk_kernel must be an odd integer >= 3, got {self.plk_kernel!r}.")
        if self.freq_split != "none" and len(self.dims) < 2:
            raise ValueError(
                f"HERSR freq_split={self.freq_split!r} injects L0 at stage 2 and needs >= 2 stages; got "
                f"dims={list(self.dims)}. Use freq_split='none' for a single stage."
            )
        for i, (d, heads) in enumerate(zip(self.dims, self.num_heads)):
            if d < 4 or d % 4 or heads < 1 or d % heads:
                raise ValueError(
                    f"HERSR dims[{i}]={d} must be a positive multiple of 4 and of num_heads[{i}]={heads}."
                )
        for name in ("depths", "dec_depths"):
            if any(depth < 0 for depth in getattr(self, name)):
                raise ValueError(f"HERSR {name} must not be negative, got {list(getattr(self, name))}.")
        experts = self.moe_experts
        if not experts or len(set(experts)) != len(experts) or any(e not in MoEBottleneck.EXPERTS for e in experts):
            raise ValueError(
                f"HERSR moe_experts={list(experts)} is not valid; use distinct names from "
                f"{list(MoEBottleneck.EXPERTS)}."
            )
        if not isinstance(self.moe_top_k, int) or self.moe_top_k < 0:
            raise ValueError(f"HERSR moe_top_k must be 0 (dense) or a positive integer, got {self.moe_top_k!r}.")
        if not (self.use_local or self.use_context):
            raise ValueError("HERSR needs at least one of use_local and use_context to be True.")

    @classmethod
    def from_options(cls, base: HERSRConfig | None = None, **options) -> HERSRConfig:
        """``base`` (default: the defaults) with ``options`` applied, as frameworks pass them.

        ``scale`` is accepted as an alias of ``upscale`` (traiNNer-redux passes ``scale``); with
        neither and no ``base``, neosr's option file or else 4 gives the scale. ``None`` values
        count as not given (a YAML ``upscale: ~``).
        """
        options = {k: v for k, v in options.items() if v is not None}
        known = [f.name for f in dataclasses.fields(cls)]
        unknown = [k for k in options if k not in known and k != "scale"]
        if unknown:
            hints = [
                f"{k!r}" + (f" (did you mean {close[0]!r}?)" if (close := difflib.get_close_matches(k, known, 1)) else "")
                for k in unknown
            ]
            raise TypeError(f"HERSR has no argument {', '.join(hints)}; its arguments are {', '.join(known)}.")
        upscale, scale = options.pop("upscale", None), options.pop("scale", None)
        if upscale is not None and scale is not None and int(upscale) != int(scale):
            raise ValueError(f"HERSR got both upscale={upscale} and scale={scale}; they are aliases and must agree.")
        if upscale is not None or scale is not None:
            options["upscale"] = upscale if upscale is not None else scale
        elif base is None:
            options["upscale"] = _framework_default_upscale()
        return dataclasses.replace(base, **options) if base is not None else cls(**options)

    def replace(self, **changes) -> HERSRConfig:
        """A copy with ``changes`` applied (and validated)."""
        return dataclasses.replace(self, **changes)

    def to_json(self) -> str:
        return json.dumps({"format": CONFIG_FORMAT, **dataclasses.asdict(self)}, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> HERSRConfig:
        try:
            record = json.loads(text)
        except ValueError as err:
            raise ValueError(f"HERSR config record is not valid JSON ({err}).") from None
        if not isinstance(record, dict) or record.get("format") != CONFIG_FORMAT:
            found = record.get("format") if isinstance(record, dict) else type(record).__name__
            raise ValueError(
                f"HERSR config record has format {found!r}; this HERSR reads format {CONFIG_FORMAT}"
                + (" (written by a newer HERSR: upgrade it)." if isinstance(found, int) and found > CONFIG_FORMAT else ".")
            )
        record.pop("format")
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(record) - known)
        if unknown:
            raise ValueError(f"HERSR config record has fields this HERSR does not know: {unknown} (upgrade HERSR).")
        return cls(**record)

    def to_tensor(self) -> torch.Tensor:
        """The JSON record as a ``uint8`` tensor: a buffer travels in every state dict format."""
        return torch.tensor(list(self.to_json().encode()), dtype=torch.uint8)

    @classmethod
    def from_tensor(cls, record: torch.Tensor) -> HERSRConfig:
        if record.dtype != torch.uint8 or record.dim() != 1:
            raise ValueError(f"HERSR config record must be a 1-D uint8 tensor, got {record.dtype} {tuple(record.shape)}.")
        try:
            text = bytes(record.cpu().tolist()).decode()
        except UnicodeDecodeError:
            raise ValueError("HERSR config record is damaged (not UTF-8 text).") from None
        return cls.from_json(text)


def _per_stage(value, n: int, name: str) -> tuple[int, ...]:
    """``value`` as one int per stage: an int is repeated, a sequence must have ``n`` entries."""
    if isinstance(value, int):
        return (value,) * n
    value = tuple(int(v) for v in value)
    if len(value) != n:
        raise ValueError(f"HERSR {name} must have one entry per stage ({n}, as dims), got {list(value)}.")
    return value


class HERSR(nn.Module):
    """HERSR: Hybrid Efficient Restoration & Super-Resolution (defaults = the ``hersr_m`` preset).

    Input ``x: (B, num_in_ch, H, W)``, any ``H, W >= 1`` (padded internally, then cropped); output
    ``(B, num_out_ch, upscale * H, upscale * W)``. All body work runs at input resolution and below.

    Built from keywords, as frameworks do (``HERSR(upscale=2, dims=(32, 64))``; ``scale`` is an alias
    of ``upscale``), or from a :class:`HERSRConfig`, whose fields keywords then override. The
    arguments are the fields of :class:`HERSRConfig`. ``model.config`` is what it was built from; it
    is saved with the weights (the ``config_json`` buffer), and loading refuses weights whose config
    differs in what the tensors cannot show (``HERSRConfig.UNSEEN_STRUCTURE``).
    """

    def __init__(self, config: HERSRConfig | None = None, /, **options):
        super().__init__()
        c = self.config = HERSRConfig.from_options(config, **options)
        n, dims = len(c.dims), c.dims
        self.num_in_ch, self.num_out_ch, self.upscale = c.num_in_ch, c.num_out_ch, c.upscale
        self.num_stages = n
        self.freq_split = c.freq_split
        self.msg_outputs = c.msg_outputs
        # Down-sampling n-1 times (and the Haar split once) needs sizes divisible by this.
        self.size_multiple = max(2 ** (n - 1), 2 if c.freq_split != "none" else 1)

        block_kwargs = dict(
            ffn_expansion=c.ffn_expansion, plk_kernel=c.plk_kernel, plk_ratio=c.plk_ratio,
            use_local=c.use_local, use_context=c.use_context, deploy=c.deploy,
        )  # fmt: skip
        d0 = dims[0]
        self.stem = nn.Sequential(conv3x3(c.num_in_ch, d0), nn.GELU(), conv3x3(d0, d0))
        self.low_inject = conv1x1(d0, dims[1]) if c.freq_split != "none" else None
        if c.freq_split == "haar":  # the Haar LL band as the fixed stride-2 depthwise conv it is
            self.register_buffer("haar_low", torch.full((d0, 1, 2, 2), 0.5), persistent=False)
        self.encoder = nn.ModuleList(
            Stage(dims[i], c.depths[i], c.num_heads[i], c.window_size, **block_kwargs) for i in range(n)
        )
        self.downs = nn.ModuleList(Downsample2x(dims[i], dims[i + 1]) for i in range(n - 1))

        bottom = dims[-1]
        self.context_pool = ContextPool(c.train_size // 2 ** (n - 1))
        self.prompt = DegradationPrompt(bottom, c.num_prompts) if c.use_prompt else None
        self.moe = (
            MoEBottleneck(
                bottom, c.num_heads[-1], c.window_size, c.plk_kernel, c.plk_ratio, c.moe_experts, c.moe_routing,
                c.moe_top_k, c.moe_balance_weight, c.moe_z_weight, c.deploy,
            )  # fmt: skip
            if c.use_moe
            else None
        )

        self.decoder = nn.ModuleList(
            Stage(dims[i], c.dec_depths[i], c.num_heads[i], c.window_size, **block_kwargs) for i in range(n)
        )
        self.ups = nn.ModuleList(Upsample2x(dims[i + 1], dims[i], c.upsampler) for i in range(n - 1))
        self.msg_heads = (
            nn.ModuleList(zero_init_(conv3x3(dims[i], c.num_out_ch * c.upscale**2)) for i in range(1, n))
            if c.msg_outputs
            else None
        )

        self.freq_fusion = FrequencyFusion(d0) if c.freq_split != "none" else None
        style_dim = bottom + (c.num_prompts if c.use_prompt else 0)
        self.texture = TextureHead(d0, style_dim, c.noise_mode, c.noise_strength) if c.use_texture_head else None
        self.reconstruct = zero_init_(conv3x3(d0, c.num_out_ch * c.upscale**2))
        self.aux_loss: torch.Tensor = torch.zeros(())  # stays 0 (a CPU fp32 scalar) without the MoE
        self.last_gates: torch.Tensor | None = None
        self._phase_kernels: dict[torch.device, torch.Tensor] = {}
        # The config travels with the weights as a buffer, the one thing every framework saves.
        self.register_buffer("config_json", c.to_tensor())
        self._register_load_state_dict_pre_hook(self._check_config)

    @property
    def deploy(self) -> bool:
        return self.config.deploy

    def _check_config(self, state_dict, prefix, *args) -> None:
        """Refuse weights whose saved config differs in what the tensors cannot show; keep this model's
        config (``train_size``, ``noise_mode`` or ``moe_top_k`` may differ on purpose, e.g. fine-tuning
        on larger patches). Weights saved without the record load as they are."""
        key = prefix + "config_json"
        if key in state_dict:
            theirs = HERSRConfig.from_tensor(state_dict[key])
            mismatched = [
                f"{name}: checkpoint {getattr(theirs, name)!r}, model {getattr(self.config, name)!r}"
                for name in HERSRConfig.UNSEEN_STRUCTURE
                if getattr(theirs, name) != getattr(self.config, name)
            ]
            if mismatched:
                raise ValueError(
                    f"HERSR checkpoint does not fit this model's config ({'; '.join(mismatched)}). Build the "
                    "model with the checkpoint's values."
                )
        state_dict[key] = self.config_json.clone()

    def load_state_dict(self, state_dict, strict: bool = True, assign: bool = False):
        """``nn.Module.load_state_dict``; under ``strict``, weights with other block counts per stage are
        refused with one sentence naming ``depths``/``dec_depths`` (torch alone lists every stray key).
        Weights under another prefix (e.g. DDP's ``module.``) are left to torch's message, which shows it.
        Deployed weights whose fusion 1x1s lack the residual's identity columns (written before
        2026-12-05) are refused in one sentence: the package's loaders migrate them, this file does not."""
        if strict and "stem.0.weight" in state_dict:
            for name, stages, path in (("depths", self.encoder, "encoder"), ("dec_depths", self.decoder, "decoder")):
                ours = tuple(len(stage.blocks) for stage in stages)
                theirs = blocks_per_stage(state_dict, path, len(stages))
                if theirs != ours:
                    raise ValueError(f"HERSR checkpoint has {name}={theirs}, this model {name}={ours}; build the "
                                     f"model with {name}={theirs} to load it.")  # fmt: skip
        fusions = {k: p for k, p in self.named_parameters() if self.deploy and k.endswith(".fuse.weight")}
        older = [k for k, p in fusions.items() if k in state_dict and state_dict[k].shape[1] == p.shape[1] - p.shape[0]]
        if older:
            raise ValueError(f"HERSR deployed weights written before 2026-12-05: their fusion 1x1s lack the residual's "
                             f"identity columns ({older[0]} has {state_dict[older[0]].shape[1]} input channels, this "
                             f"model {fusions[older[0]].shape[1]}). Rewrite them once with `hersr migrate OLD.pth "
                             "NEW.pth`, or load them with hersr_arch.loading.load_hersr, which migrates.")  # fmt: skip
        return super().load_state_dict(state_dict, strict, assign)

    # -- helpers -------------------------------------------------------------------------------

    def _pad_input(self, x: torch.Tensor) -> torch.Tensor:
        """``x: (B, C_in, H, W)`` replicate-padded by 2 on every side, and at the bottom and right also
        to multiples of ``size_multiple`` (down-sampling and the Haar split need them), channels_last:
        ``(B, C_in, H' + 4, W' + 4)``.

        Replicate (not zero or reflect) padding keeps a constant image constant and is valid for any
        size, 1x1 included. Both readers take a crop of this one pad (a crop of a replicate pad is a
        smaller replicate pad): the stem's first conv its 1-pixel pad, the bicubic residual its 2-pixel
        pad of ``x`` alone. One pad, which also writes the channels_last layout, at every size.
        """
        h, w = x.shape[-2:]
        extra_h, extra_w = round_up(h, self.size_multiple) - h, round_up(w, self.size_multiple) - w
        return replicate_pad_channels_last(x, (2, 2 + extra_w, 2, 2 + extra_h))

    def _stem(self, padded: torch.Tensor) -> torch.Tensor:
        """The stem on the output of :meth:`_pad_input` -> ``(B, C0, H', W')``."""
        first = self.stem[0]
        feat = F.conv2d(padded[..., 1:-1, 1:-1], first.weight, first.bias)
        return self.stem[2](self.stem[1](feat))

    def _split_frequencies(self, f0: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        """``F0: (B, C, H, W)`` -> ``L0: (B, C, H/2, W/2)``, ``H0: (B, C, H, W)`` with ``F0 = up(L0) + H0``."""
        if self.freq_split == "haar":
            # Orthonormal Haar: LL = (a + b + c + d) / 2 over each 2x2 cell. Inverting the detail
            # bands alone (LL zeroed) gives F0 minus the nearest-neighbour up-sampled LL / 2: each
            # cell minus its mean, by broadcasting (over (B, H, 2, W, 2, C) views: see
            # add_pixel_shuffle). Exact: halving is exact in floating point.
            b, c, h, w = f0.shape
            low = F.conv2d(f0, self.haar_low, stride=2, groups=c)
            cells = f0.permute(0, 2, 3, 1).view(b, h // 2, 2, w // 2, 2, c)
            high = torch.sub(cells, low.permute(0, 2, 3, 1).view(b, h // 2, 1, w // 2, 1, c), alpha=0.5)
            return low, high.view(b, h, w, c).permute(0, 3, 1, 2)
        if self.freq_split == "avgpool":
            low = F.avg_pool2d(f0, 2)
            up = F.interpolate(low, scale_factor=2.0, mode="bilinear", align_corners=False)
            return low, f0 - up
        return None, None

    def _residual_phases(self, padded: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The global residual before the pixel shuffle, from the output of :meth:`_pad_input` for an
        ``(h, w)`` input: ``(B, C_out * s*s, h, w)`` in the input's dtype, channels_last.

        ``pixel_shuffle`` of it is the bicubic x ``s`` input (matched to ``num_out_ch``), so the
        reconstruction conv's output is added to it before the shuffle: no output-size pass of its own.
        """
        s, matched = self.upscale, self.num_in_ch == self.num_out_ch
        x = padded[..., : h + 4, : w + 4]  # x replicate-padded by 2
        if not matched:
            x = x.mean(1, keepdim=True)
        if s > 1:
            channels = self.num_in_ch if matched else 1
            x = bicubic_phases_of_padded(x, s, channels, self._phase_kernel(channels, x.device))
            return x if matched else x.repeat(1, self.num_out_ch, 1, 1)
        return x[..., 2:-2, 2:-2].expand(-1, self.num_out_ch, -1, -1)

    def _phase_kernel(self, channels: int, device: torch.device) -> torch.Tensor:
        """The residual's bicubic phase kernel on ``device``, built once per device (a constant; kept
        fp32 whatever the model's dtype, so it is no buffer)."""
        kernel = self._phase_kernels.get(device)
        if kernel is None:
            kernel = bicubic_phase_kernel(self.upscale).repeat(channels, 1, 1, 1).to(device)
            if not _capturing_graph():
                self._phase_kernels[device] = kernel
        return kernel

    def _base_image(self, x: torch.Tensor, h: int, w: int) -> torch.Tensor:
        """The input resized to ``(h, w)`` and matched to ``num_out_ch``: ``(B, C_out, h, w)``.

        Bicubic when enlarging, area when shrinking (MSG outputs).
        """
        if (h, w) != tuple(x.shape[-2:]):
            if h >= x.shape[-2]:
                x = F.interpolate(x, size=(h, w), mode="bicubic", align_corners=False)
            else:
                x = F.interpolate(x, size=(h, w), mode="area")
        if self.num_in_ch != self.num_out_ch:
            x = x.mean(1, keepdim=True).expand(-1, self.num_out_ch, -1, -1)
        return x

    def _check_input(self, x: torch.Tensor) -> None:
        if not isinstance(x, torch.Tensor) or x.dim() != 4:
            shape = tuple(x.shape) if isinstance(x, torch.Tensor) else type(x).__name__
            raise ValueError(f"HERSR expects a 4-D tensor (B, C, H, W), got {shape}.")
        if not x.is_floating_point():
            raise TypeError(
                f"HERSR expects a floating-point tensor (float32, float16 or bfloat16), got {x.dtype}; "
                "convert images with x.float() / 255 (8-bit) or / 65535 (16-bit)."
            )
        if x.shape[1] != self.num_in_ch:
            raise ValueError(
                f"HERSR was built for {self.num_in_ch} input channels, got an input with {x.shape[1]} "
                f"(shape {tuple(x.shape)})."
            )
        if x.numel() == 0:
            raise ValueError(f"HERSR got an empty input of shape {tuple(x.shape)}; every size must be >= 1.")

    # -- forward -------------------------------------------------------------------------------

    def forward(self, x: torch.Tensor):
        """``x: (B, C_in, H, W)`` -> ``(B, C_out, sH, sW)`` (or ``(out, aux_images)``, see ``msg_outputs``)."""
        if not _capturing_graph():
            self._check_input(x)
        h, w = x.shape[-2:]
        s = self.upscale
        # channels_last throughout: convs run their fast CPU kernels and the (B, H, W, C) views that
        # attention and LayerNorm need come without copies.
        padded = self._pad_input(x)
        feat = self._stem(padded)
        low, high = self._split_frequencies(feat)

        skips = []
        for i, stage in enumerate(self.encoder):
            if i > 0:
                feat = self.downs[i - 1](feat)
            if i == 1 and self.low_inject is not None:
                feat = feat + self.low_inject(low)
            feat = stage(feat, high if i == 0 else None)
            skips.append(feat)

        ctx = self.context_pool(feat)
        prompt_weights = None
        if self.prompt is not None:
            feat, prompt_weights = self.prompt(feat, ctx)
        if self.moe is not None:
            feat = self.moe(feat, ctx)
            self.aux_loss, self.last_gates = self.moe.aux_loss, self.moe.last_gates

        aux_images = []
        for i in reversed(range(self.num_stages)):
            if i < self.num_stages - 1:
                feat = self.ups[i](feat, skips[i])
            feat = self.decoder[i](feat)
            if self.msg_heads is not None and self.training and i > 0:
                aux_h, aux_w = -(-h // 2**i) * s, -(-w // 2**i) * s
                aux = F.pixel_shuffle(self.msg_heads[i - 1](feat), s)[..., :aux_h, :aux_w]
                aux_images.insert(0, aux + self._base_image(x, aux_h, aux_w))

        if self.freq_fusion is not None:
            feat = self.freq_fusion(feat, high)
        if self.texture is not None:
            style_src = ctx.to(feat.dtype)
            if prompt_weights is not None:
                style_src = torch.cat((style_src, prompt_weights.to(feat.dtype)), 1)
            feat = self.texture(feat, style_src)
        # The global residual is added in the input dtype: under autocast an fp32 input keeps its
        # full precision (a bf16 sum would round the image to 8 bits of mantissa).
        residual = self._residual_phases(padded, h, w)  # channels_last, like ``head``: the add keeps it
        head = self.reconstruct(feat)[..., :h, :w].to(residual.dtype)
        out = residual.add_(head) if s > 1 else residual + head  # s = 1: the residual is the input
        out = pixel_shuffle_view(out, s).reshape(out.shape[0], -1, h * s, w * s).contiguous()  # one copy
        if self.msg_heads is not None and self.training:
            return out, aux_images
        return out

    @torch.no_grad()
    def switch_to_deploy(self) -> HERSR:
        """Merge every reparameterizable branch in place (eval outputs unchanged); returns self."""
        for module in list(self.modules()):
            if module is not self and hasattr(module, "reparameterize"):
                module.reparameterize()
        self.config = self.config.replace(deploy=True)
        self.config_json = self.config.to_tensor().to(self.config_json.device)
        return self


# ``HERSR(**options)`` takes exactly the config's fields (and ``scale``): say so to ``inspect`` and
# ``help()``, and to frameworks that check option names against the signature.
HERSR.__signature__ = inspect.Signature(
    [inspect.Parameter("config", inspect.Parameter.POSITIONAL_ONLY, default=None)]
    + [
        inspect.Parameter(f.name, inspect.Parameter.KEYWORD_ONLY, default=None if f.name == "upscale" else f.default)
        for f in dataclasses.fields(HERSRConfig)
    ]
    + [inspect.Parameter("scale", inspect.Parameter.KEYWORD_ONLY, default=None)]
)


def blocks_per_stage(state_dict, path: str, stages: int) -> tuple[int, ...]:
    """Dual-path blocks per stage of ``path`` (``'encoder'``/``'decoder'``) in a HERSR state dict."""
    return tuple(
        len({k[len(head) :].split(".", 1)[0] for k in state_dict if k.startswith(head)})
        for head in (f"{path}.{i}.blocks." for i in range(stages))
    )


def _framework_default_upscale() -> int:
    """Scale used when none is given: neosr's option file under neosr (its configs set ``scale``
    only at the top level and build networks without it), else 4."""
    if "neosr" in sys.modules:
        from neosr.archs.arch_util import net_opt  # type: ignore[import-not-found]

        return int(net_opt()[0])
    return 4


# ----------------------------------------------------------------------------------------------
# Presets and registration
# ----------------------------------------------------------------------------------------------


# Preset arguments (the rest are the ``HERSR`` defaults); loaders use them to name checkpoints.
PRESETS: dict[str, dict] = {
    "hersr_s": dict(
        dims=(32, 40, 48, 48), depths=(1, 2, 1, 1), dec_depths=(0, 2, 1, 0), num_heads=(2, 2, 2, 2),
        plk_kernel=13, ffn_expansion=2.0,
    ),
    "hersr_m": dict(),
    "hersr_l": dict(
        dims=(64, 128, 192, 256), depths=(4, 4, 4, 4), dec_depths=(4, 3, 2, 2), num_heads=(4, 4, 6, 8),
        use_prompt=True,
    ),
}  # fmt: skip


def hersr_s(**kwargs) -> HERSR:
    """Efficient preset (<= 0.6M parameters after ``switch_to_deploy()``)."""
    return HERSR(**{**PRESETS["hersr_s"], **kwargs})


def hersr_m(**kwargs) -> HERSR:
    """Balanced preset (<= 8M parameters after ``switch_to_deploy()``): the ``HERSR`` defaults."""
    return HERSR(**{**PRESETS["hersr_m"], **kwargs})


def hersr_l(**kwargs) -> HERSR:
    """Large preset, for the best quality."""
    return HERSR(**{**PRESETS["hersr_l"], **kwargs})


def _arch_registry():
    """The running framework's ARCH_REGISTRY (neosr, traiNNer-redux or BasicSR), or None.

    A framework's registry is used only when that framework is already imported: importing
    ``neosr.utils.registry`` elsewhere parses the command line and fails or exits, and importing
    BasicSR would make every user of this file pay for BasicSR and torchvision.
    """
    if "neosr" in sys.modules:
        from neosr.utils.registry import ARCH_REGISTRY  # type: ignore[import-not-found]

        return ARCH_REGISTRY
    if "traiNNer" in sys.modules:
        from traiNNer.utils.registry import ARCH_REGISTRY  # type: ignore[import-not-found]

        return ARCH_REGISTRY
    if sys.modules.get("basicsr") is not None:  # e.g. this file in basicsr/archs/; the package registers via its plugin
        from basicsr.utils.registry import ARCH_REGISTRY

        return ARCH_REGISTRY
    return None


def register_archs(registry) -> None:
    """Register HERSR and the presets, skipping names already there (a second copy of this file, or
    the installed package next to a copied file): neosr asserts on duplicates, and traiNNer-redux
    stores names lowercased."""
    known = {str(name).lower() for name in getattr(registry, "_obj_map", {})}
    for obj in (HERSR, hersr_s, hersr_m, hersr_l):
        if obj.__name__.lower() not in known:
            registry.register(obj)


_REGISTRY = _arch_registry()
if _REGISTRY is not None:
    register_archs(_REGISTRY)
