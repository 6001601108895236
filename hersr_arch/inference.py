"""Inference helpers shared by validation and the command line: tiling, x8 self-ensemble, and a
forward compiled for one static tile shape."""

from __future__ import annotations

import time
from collections.abc import Callable

import torch
import torch.nn.functional as F
from torch import nn

Forward = Callable[[torch.Tensor], torch.Tensor]


def _ramp(length: int, core_start: int, core_end: int, fade: int) -> torch.Tensor:
    """1 on ``[core_start, core_end)``, fading linearly to ``1 / (fade + 1)`` over ``fade`` pixels outside."""
    idx = torch.arange(length, dtype=torch.float32)
    dist = torch.clamp(torch.maximum(core_start - idx, idx - (core_end - 1)), min=0)
    return torch.clamp(1 - dist / (fade + 1), min=1 / (fade + 1))


@torch.no_grad()
def tiled_forward(
    forward: Forward,
    x: torch.Tensor,
    scale: int,
    tile: int,
    tile_pad: int = 16,
    device: torch.device | None = None,
    on_tile: Callable[[], None] | None = None,
) -> torch.Tensor:
    """Run ``forward`` on overlapping tiles of ``x: (B, C, H, W)`` and blend: ``(B, C', sH, sW)``.

    Each ``tile x tile`` core is processed with ``tile_pad`` pixels of context on every side; in
    the overlap, neighbouring tiles are blended with linear weights, so there is no hard seam.
    Only one tile at a time is moved to ``device`` (default: ``x.device``); the result is assembled
    on ``x.device``, so device memory is bounded by the tile, not the image.
    """
    if tile < 1 or tile_pad < 0:
        raise ValueError(f"tile must be >= 1 and tile_pad >= 0, got tile={tile}, tile_pad={tile_pad}.")
    b, _, h, w = x.shape
    device = device or x.device
    fade = tile_pad * scale
    # The tiles form a grid and each blend weight is a row ramp times a column ramp, so the summed
    # weight of every output pixel is (sum of row ramps) x (sum of column ramps): two vectors
    # instead of a full-size weight map.
    row_sum, col_sum = torch.zeros(h * scale), torch.zeros(w * scale)
    out = None
    for y0 in range(0, h, tile):
        for x0 in range(0, w, tile):
            y1, x1 = min(y0 + tile, h), min(x0 + tile, w)
            ty0, tx0 = max(y0 - tile_pad, 0), max(x0 - tile_pad, 0)
            ty1, tx1 = min(y1 + tile_pad, h), min(x1 + tile_pad, w)
            piece = forward(x[:, :, ty0:ty1, tx0:tx1].to(device)).to(x.device, torch.float32)
            if out is None:
                out = x.new_zeros((b, piece.shape[1], h * scale, w * scale), dtype=torch.float32)
            wy = _ramp((ty1 - ty0) * scale, (y0 - ty0) * scale, (y1 - ty0) * scale, fade)
            wx = _ramp((tx1 - tx0) * scale, (x0 - tx0) * scale, (x1 - tx0) * scale, fade)
            wmap = (wy[:, None] * wx[None, :]).to(x.device)
            out[:, :, ty0 * scale : ty1 * scale, tx0 * scale : tx1 * scale] += piece * wmap
            if x0 == 0:
                row_sum[ty0 * scale : ty1 * scale] += wy
            if y0 == 0:
                col_sum[tx0 * scale : tx1 * scale] += wx
            if on_tile is not None:
                on_tile()
    # In place: the full-size output is the largest buffer here.
    return out.div_(row_sum.to(x.device)[:, None]).div_(col_sum.to(x.device))


def count_tiles(height: int, width: int, tile: int) -> int:
    return -(-height // tile) * -(-width // tile)


@torch.no_grad()
def self_ensemble(forward: Forward, x: torch.Tensor) -> torch.Tensor:
    """x8 geometric self-ensemble (EDSR): flips and transposes, outputs mapped back and averaged."""
    total = None
    for transpose in (False, True):
        for flip_h in (False, True):
            for flip_w in (False, True):
                t = x.transpose(-2, -1) if transpose else x
                dims = [d for d, on in ((-2, flip_h), (-1, flip_w)) if on]
                t = t.flip(dims) if dims else t
                y = forward(t)
                y = y.flip(dims) if dims else y
                y = y.transpose(-2, -1) if transpose else y
                total = y if total is None else total + y
    return total / 8


class StaticShapeForward:
    """``model`` compiled once for ``(height, width)`` inputs (``torch.compile``, ``fullgraph=True``,
    ``dynamic=False``), for tiled inference.

    A smaller input (an edge tile, a small image) is replicate-padded on the right and bottom to that
    size and the output is cropped back, so every tile of a run reuses one graph; the padding keeps
    the tile's origin, where the texture noise pattern starts. ``x: (B, C, h, w)`` with ``h <= height``
    and ``w <= width`` -> ``(B, C', scale*h, scale*w)``. A new batch size, dtype or device compiles
    once more. ``compile_seconds`` holds the time of each first call (compile included).
    """

    def __init__(self, model: nn.Module, height: int, width: int, scale: int, log: Callable[[str], None] | None = None,
                 **compile_kwargs) -> None:  # fmt: skip
        self.compiled = torch.compile(model, fullgraph=True, dynamic=False, **compile_kwargs)
        self.height, self.width, self.scale = height, width, scale
        self.log = log
        self.compile_seconds: dict[tuple, float] = {}

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        b, c, h, w = x.shape
        if h > self.height or w > self.width:
            raise ValueError(f"input {h}x{w} is larger than the compiled shape {self.height}x{self.width}.")
        if (h, w) != (self.height, self.width):
            x = F.pad(x, (0, self.width - w, 0, self.height - h), mode="replicate")
        device = x.device.type
        autocast = torch.get_autocast_dtype(device) if torch.is_autocast_enabled(device) else None
        key = (b, c, x.dtype, device, autocast)
        start = time.perf_counter()
        out = self.compiled(x)
        if key not in self.compile_seconds:
            self.compile_seconds[key] = time.perf_counter() - start
            if self.log is not None:
                self.log(f"compiled for {b}x{c}x{self.height}x{self.width} inputs in {self.compile_seconds[key]:.1f} s")
        return out[..., : h * self.scale, : w * self.scale]
