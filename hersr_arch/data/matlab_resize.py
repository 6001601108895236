"""MATLAB's ``imresize(img, 1/s, 'bicubic')``, bit for bit on integer images.

The literature's LR benchmark images (Set5, Set14, B100, Urban100, Manga109, DIV2K's ``X2/X3/X4``)
were made by MATLAB from 8-bit HR images. MATLAB resizes one dimension at a time, and an integer
image stays integer between the two passes: each pass sums in double precision, then rounds half
away from zero and clips to the type's range. A float resize in one go (BasicSR's ``imresize``)
skips that intermediate rounding, so ~10% of its LR pixel values are off the official files, by 1
level mostly and by up to 12 at sharp synthetic edges, where the bicubic overshoot is clipped.

Two paths, chosen by the input's dtype:

* ``uint8`` / ``uint16``: MATLAB's integer rule, the type kept: the official LR files exactly.
* floating point: both passes in float64 with no rounding between them (MATLAB on a ``double``
  image), returned in the input's float dtype; values are not clipped.

MATLAB's bicubic is Keys' cubic with ``a = -0.5``; when shrinking, the kernel is stretched by the
scale factor (antialiasing). The dimension with the larger reduction goes first; on a tie, rows
(height) first.

Samples past a border (``border``) are where MATLAB releases differ, and so do the LR files in
circulation; the two rules change only the outermost LR rows and columns:

* ``'mirror'`` (default): the sample mirrored at the border, pixel included (MATLAB's current
  ``imresize``). EDSR's benchmark LR (``benchmark/<Set>/LR_bicubic/X<s>``, the files most papers
  test on) are made this way: Set5, Set14, B100 and Urban100 at x2, x3 and x4, bit for bit.
* ``'clamp'``: the border pixel's value (older MATLAB releases). The LR files in RCAN's test code
  and in SelfExSR's data are made this way, bit for bit.
"""

from __future__ import annotations

import math

import numpy as np

_INTEGER_TYPES = (np.uint8, np.uint16)


def cubic(x: np.ndarray) -> np.ndarray:
    """MATLAB's bicubic kernel (Keys, ``a = -0.5``) at offsets ``x``."""
    ax = np.abs(x)
    ax2, ax3 = ax * ax, ax * ax * ax
    near = (1.5 * ax3 - 2.5 * ax2 + 1) * (ax <= 1)
    far = (-0.5 * ax3 + 2.5 * ax2 - 4 * ax + 2) * ((ax > 1) & (ax <= 2))
    return near + far


BORDERS = ("mirror", "clamp")


def contributions(in_length: int, out_length: int, scale: float, border: str = "mirror") -> tuple[np.ndarray, np.ndarray]:
    """Weights and source indices of a 1-D bicubic resize: two ``(out_length, taps)`` arrays.

    Output pixel ``i`` (1-based) samples the input at ``u = i / scale + (1 - 1 / scale) / 2``. When
    shrinking, the kernel is ``scale * cubic(scale * x)`` over a ``4 / scale`` wide support. Each
    row of weights is normalised to sum to 1; out-of-range indices are mirrored or clamped
    (``border``; 0-based in the result); tap columns whose weights are all zero are dropped, as MATLAB
    does.
    """
    width = 4.0
    if scale < 1:
        kernel = lambda x: scale * cubic(scale * x)  # noqa: E731
        width /= scale
    else:
        kernel = cubic
    u = np.arange(1, out_length + 1, dtype=np.float64) / scale + 0.5 * (1 - 1 / scale)
    left = np.floor(u - width / 2)
    taps = int(math.ceil(width)) + 2
    indices = left[:, None] + np.arange(taps, dtype=np.float64)[None, :]
    weights = kernel(u[:, None] - indices)
    weights = weights / weights.sum(1, keepdims=True)
    indices = indices.astype(np.int64) - 1
    if border == "mirror":  # ..., 1, 0 | 0, 1, ..., n-1 | n-1, n-2, ...
        period = np.concatenate([np.arange(in_length), np.arange(in_length)[::-1]])
        indices = period[np.mod(indices, 2 * in_length)]
    else:
        indices = np.clip(indices, 0, in_length - 1)
    used = np.any(weights != 0, axis=0)
    return weights[:, used], indices[:, used]


def _resize_axis(img: np.ndarray, axis: int, out_length: int, scale: float, border: str) -> np.ndarray:
    """One pass along ``axis`` in float64 (taps summed in order)."""
    weights, indices = contributions(img.shape[axis], out_length, scale, border)
    moved = np.moveaxis(img, axis, 0)
    out = np.zeros((out_length, *moved.shape[1:]), dtype=np.float64)
    extra = (1,) * (moved.ndim - 1)
    for k in range(weights.shape[1]):
        out += weights[:, k].reshape(-1, *extra) * moved[indices[:, k]]
    return np.moveaxis(out, 0, axis)


def _to_integer(x: np.ndarray, dtype: np.dtype) -> np.ndarray:
    """Round half away from zero and clip to ``dtype``'s range (MATLAB's conversion to an integer type)."""
    top = np.iinfo(dtype).max
    return np.clip(np.sign(x) * np.floor(np.abs(x) + 0.5), 0, top).astype(dtype)


def imresize(img: np.ndarray, scale: float, border: str = "mirror") -> np.ndarray:
    """``imresize(img, scale, 'bicubic')`` as MATLAB computes it (``border``: see the module docstring).

    ``img``: ``(H, W)`` or ``(H, W, C)``, ``uint8``/``uint16`` (MATLAB's integer rule, result in the
    same type) or floating point (no intermediate rounding, result in the input's float dtype).
    The output is ``(ceil(H * scale), ceil(W * scale)[, C])``.
    """
    img = np.asarray(img)
    integer = img.dtype.type in _INTEGER_TYPES
    if not integer and not np.issubdtype(img.dtype, np.floating):
        raise TypeError(f"imresize takes uint8, uint16 or floating-point images, got {img.dtype}.")
    if img.ndim not in (2, 3):
        raise ValueError(f"imresize takes an (H, W) or (H, W, C) image, got shape {img.shape}.")
    if border not in BORDERS:
        raise ValueError(f"imresize border must be one of {list(BORDERS)}, got {border!r}.")
    if not (isinstance(scale, int | float) and scale > 0 and math.isfinite(scale)):
        raise ValueError(f"imresize needs a positive finite scale, got {scale!r}.")
    sizes = [int(math.ceil(n * scale)) for n in img.shape[:2]]
    if min(img.shape[:2]) == 0 or min(sizes) == 0:
        raise ValueError(f"imresize of an image of shape {img.shape} by {scale} leaves no pixels.")
    out = img
    # One scale for both dimensions: a stable sort of equal factors keeps rows first.
    for axis in (0, 1):
        resized = _resize_axis(out, axis, sizes[axis], scale, border)
        out = _to_integer(resized, img.dtype) if integer else resized
    return out if integer else out.astype(img.dtype)
