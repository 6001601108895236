"""MATLAB's ``imresize(img, 1/s, 'bicubic')``: bit-identical to MATLAB-made LR files, and the
integer rounding rule at sharp edges, odd sizes and 16 bits."""

import json
import math
from pathlib import Path

import cv2
import numpy as np
import pytest

from hersr_arch.data.matlab_resize import imresize

CROPS = Path(__file__).parent / "data" / "matlab_lr"


def crop_cases():
    return sorted(json.loads((CROPS / "crops.json").read_text()).items())


@pytest.mark.parametrize(("name", "crop"), crop_cases(), ids=[name for name, _ in crop_cases()])
def test_equals_matlab_made_lr(name, crop):
    """Official LR crops (made by MATLAB from the 8-bit HR; see data/matlab_lr/README.md), with the
    border rule of the MATLAB release that made them."""
    hr = cv2.imread(str(CROPS / f"{name}_hr.png"), cv2.IMREAD_UNCHANGED)
    official = cv2.imread(str(CROPS / f"{name}_lr.png"), cv2.IMREAD_UNCHANGED)
    s, m, border = crop["scale"], crop["margins"], crop["border"]
    inside = (slice(m["top"], official.shape[0] - m["bottom"]), slice(m["left"], official.shape[1] - m["right"]))
    lr = imresize(hr, 1 / s, border=border)
    assert lr.dtype == np.uint8 and lr.shape == official.shape
    np.testing.assert_array_equal(lr[inside], official[inside])
    if 0 in m.values():  # a real image border: the other rule is off there
        other = "clamp" if border == "mirror" else "mirror"
        assert (imresize(hr, 1 / s, border=other)[inside] != official[inside]).any()
    # The crops tell the rules apart: one float pass with rounding at the end only is off on each.
    one_pass = np.clip(np.floor(imresize(hr.astype(np.float64), 1 / s) + 0.5), 0, 255).astype(np.uint8)
    assert (one_pass[inside] != official[inside]).any()


def matlab_reference(img: np.ndarray, scale: float, integer_top: int | None, border: str = "mirror") -> np.ndarray:
    """MATLAB's algorithm written out pixel by pixel in Python floats (double precision, like MATLAB):
    rows first, then columns; between and after the passes, round half away and clip when
    ``integer_top`` is given. Slow, for small arrays only."""

    def source(j: int, n: int) -> int:  # 1-based tap -> 0-based pixel
        if border == "clamp":
            return min(max(j, 1), n) - 1
        j = (j - 1) % (2 * n)
        return j if j < n else 2 * n - 1 - j
    def kernel(x):
        x = abs(x)
        if x <= 1:
            return 1.5 * x**3 - 2.5 * x**2 + 1
        return -0.5 * x**3 + 2.5 * x**2 - 4 * x + 2 if x <= 2 else 0.0

    def resize_rows(a):  # a: list of rows (lists of channel lists); resizes along the row axis
        n, out = len(a), []
        width = 4 / scale if scale < 1 else 4.0
        for i in range(1, math.ceil(n * scale) + 1):
            u = i / scale + 0.5 * (1 - 1 / scale)
            left = math.floor(u - width / 2)
            taps = range(left, left + math.ceil(width) + 2)
            w = [(scale * kernel(scale * (u - j)) if scale < 1 else kernel(u - j)) for j in taps]
            total = sum(w)
            row = []
            for x in range(len(a[0])):
                for c in range(len(a[0][0])):
                    if c == 0:
                        row.append([])
                    v = 0.0
                    for j, wj in zip(taps, w):
                        if wj != 0:
                            v += wj / total * a[source(j, n)][x][c]
                    if integer_top is not None:
                        v = min(max(math.floor(v + 0.5) if v >= 0 else -math.floor(-v + 0.5), 0), integer_top)
                    row[-1].append(v)
            out.append(row)
        return out

    a = img.reshape(img.shape[0], img.shape[1], -1).astype(np.float64).tolist()
    a = resize_rows(a)
    transposed = [[a[r][x] for r in range(len(a))] for x in range(len(a[0]))]
    b = resize_rows(transposed)
    return np.array([[b[x][r] for x in range(len(b))] for r in range(len(b[0]))]).reshape(
        math.ceil(img.shape[0] * scale), math.ceil(img.shape[1] * scale), *img.shape[2:])


def sharp_image(h: int, w: int, top: int, seed: int, channels: int = 3) -> np.ndarray:
    """A black-to-white step in each direction and a smooth noisy ramp elsewhere: bicubic's negative
    lobes overshoot past both ends at the steps."""
    rng = np.random.default_rng(seed)
    img = np.zeros((h, w, channels))
    img[:, w // 2 :] = top
    img[h // 2 :] = top - img[h // 2 :]
    ramp = np.linspace(0.2, 0.8, w)[None, :, None] * top + rng.normal(0, 0.05 * top, (1, w, channels))
    img[: h // 4] = np.clip(ramp, 0, top)
    return np.round(img).astype(np.uint8 if top == 255 else np.uint16)


@pytest.mark.parametrize("scale", [2, 3, 4])
@pytest.mark.parametrize(("top", "size"), [(255, (23, 17)), (65535, (19, 26)), (255, (7, 5))])
def test_integer_rule_at_sharp_edges_odd_sizes_and_16_bits(scale, top, size):
    img = sharp_image(*size, top, seed=scale)
    lr = imresize(img, 1 / scale)
    assert lr.dtype == img.dtype and lr.shape == (math.ceil(size[0] / scale), math.ceil(size[1] / scale), 3)
    np.testing.assert_array_equal(lr, matlab_reference(img, 1 / scale, top).astype(img.dtype))
    clamped = imresize(img, 1 / scale, border="clamp")
    np.testing.assert_array_equal(clamped, matlab_reference(img, 1 / scale, top, "clamp").astype(img.dtype))
    unrounded = [matlab_reference(img, 1 / scale, None, border) for border in ("mirror", "clamp")]
    assert any(u.min() < 0 or u.max() > top for u in unrounded)  # the image does overshoot, and is clipped
    assert lr.min() >= 0 and lr.max() <= top


def test_float_images_keep_their_values_unrounded_and_unclipped():
    img = sharp_image(21, 18, 255, seed=0).astype(np.float32) / 255
    lr = imresize(img, 1 / 3)
    assert lr.dtype == np.float32
    np.testing.assert_allclose(lr, matlab_reference(img, 1 / 3, None), rtol=0, atol=1e-6)
    assert lr.min() < 0 or lr.max() > 1  # overshoot kept: the float path neither rounds nor clips
    gray = imresize(img[..., 0], 1 / 3)
    np.testing.assert_array_equal(gray, lr[..., 0])


def test_rounding_is_half_away_from_zero_then_clipped():
    """MATLAB's conversion to an integer type (the step between and after the passes); 1-D images
    whose exact result is a half level."""
    img = np.array([[10, 11]] * 2, dtype=np.uint8)  # x2 down: each output is the mean of 10 and 11
    assert imresize(img, 0.5).tolist() == [[11]]  # 10.5 rounds up, not to even
    assert imresize(np.array([[12, 13]] * 2, dtype=np.uint8), 0.5).tolist() == [[13]]


@pytest.mark.parametrize(("img", "scale", "error", "match"), [
    (np.zeros((4, 4), np.int32), 0.5, TypeError, "uint8, uint16 or floating-point images, got int32"),
    (np.zeros((2, 4, 4, 3), np.uint8), 0.5, ValueError, r"\(H, W\) or \(H, W, C\) image, got shape \(2, 4, 4, 3\)"),
    (np.zeros((4, 4), np.uint8), 0, ValueError, "positive finite scale, got 0"),
    (np.zeros((0, 4), np.uint8), 0.5, ValueError, "leaves no pixels"),
    (np.zeros((4, 4), np.uint8), 0.5, ValueError, "border must be one of \\['mirror', 'clamp'\\], got 'wrap'"),
])  # fmt: skip
def test_bad_input_is_refused_in_a_sentence(img, scale, error, match):
    with pytest.raises(error, match=match):
        imresize(img, scale, border="wrap" if "border" in match else "mirror")
