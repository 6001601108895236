"""On-the-fly degradation dataset for x1 restoration (denoise, deblur, JPEG) and blind SR.

Only GT images are stored; each sample's LQ input is made from its GT by an ordered chain of
degradations (blur, downscale, noise, JPEG), as in BSRGAN / Real-ESRGAN's first order. Training
draws new degradations at every call; validation is deterministic (seeded by the sample index),
so PSNR is comparable between runs and checkpoints.
"""

from __future__ import annotations

import math
import os
import os.path as osp
from numbers import Real

import cv2
import numpy as np
from torch.utils import data
from torchvision.transforms.functional import normalize

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()

from basicsr.data.data_util import paths_from_lmdb  # noqa: E402
from basicsr.data.degradations import bivariate_Gaussian  # noqa: E402
from basicsr.data.transforms import augment, mod_crop  # noqa: E402
from basicsr.utils import FileClient, imfrombytes, img2tensor  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402

from hersr_arch.data.matlab_resize import imresize  # noqa: E402
from hersr_arch.data.prepare import IMG_EXTENSIONS  # noqa: E402

DEGRADATIONS = ("blur", "downscale", "noise", "jpeg")
KERNEL_TYPES = ("iso", "aniso")
# 'bicubic' is MATLAB's antialiased bicubic (float path of matlab_resize.imresize), the kernel of
# the literature's bicubic LR; OpenCV's INTER_CUBIC does not antialias when shrinking.
DOWNSCALE_MODES = {"area": cv2.INTER_AREA, "bilinear": cv2.INTER_LINEAR, "bicubic": None}


# ---------------------------------------------------------------------------------------------
# option checks
# ---------------------------------------------------------------------------------------------


def _range(opt: dict, key: str, default, low: float, high: float, integer: bool = False) -> tuple:
    """A ``[min, max]`` option (a single number means a fixed value) inside ``[low, high]``."""
    value = opt.get(key, default)
    if isinstance(value, Real) and not isinstance(value, bool):
        value = [value, value]
    ok = (isinstance(value, (list, tuple)) and len(value) == 2
          and all(isinstance(v, Real) and not isinstance(v, bool) for v in value))
    if ok and integer:
        ok = all(float(v).is_integer() for v in value)
    kind = "integers" if integer else "numbers"
    if not ok or not low <= value[0] <= value[1] <= high:
        raise ValueError(f"{key} must be [min, max] {kind} with {low} <= min <= max <= {high} "
                         f"(or one number for a fixed value), got {value!r}.")
    return (int(value[0]), int(value[1])) if integer else (float(value[0]), float(value[1]))


def _prob(opt: dict, key: str, default: float) -> float:
    value = opt.get(key, default)
    if isinstance(value, bool) or not isinstance(value, Real) or not 0 <= value <= 1:
        raise ValueError(f"{key} must be a probability from 0 to 1, got {value!r}.")
    return float(value)


def _choices(opt: dict, key: str, default, allowed) -> list[str]:
    value = opt.get(key, default)
    if isinstance(value, str):
        value = [value]
    if not isinstance(value, (list, tuple)) or not value:
        raise ValueError(f"{key} must be a non-empty list from {list(allowed)}, got {value!r}.")
    unknown = [v for v in value if v not in allowed]
    if unknown:
        raise ValueError(f"{key} has unknown entries {unknown}; allowed: {list(allowed)}.")
    if len(set(value)) != len(value):
        raise ValueError(f"{key} must not repeat an entry, got {list(value)}.")
    return list(value)


def _list_gt_folder(folder: str) -> list[str]:
    names = sorted(n for n in os.listdir(folder)
                   if not n.startswith(".") and osp.splitext(n)[1].lower() in IMG_EXTENSIONS)
    return [osp.join(folder, n) for n in names]


# ---------------------------------------------------------------------------------------------
# degradations: float32 BGR (H, W, C) images in [0, 1], one numpy Generator per sample
# ---------------------------------------------------------------------------------------------


def gaussian_blur_kernel(rng: np.random.Generator, sizes: list[int], sigma: tuple[float, float],
                         kernel_types: list[str], kernel_prob: np.ndarray) -> np.ndarray:
    """A random isotropic or anisotropic Gaussian kernel (BasicSR's ``bivariate_Gaussian``)."""
    size = int(rng.choice(sizes))
    kind = kernel_types[int(rng.choice(len(kernel_types), p=kernel_prob))]
    sig_x = rng.uniform(*sigma)
    if kind == "iso":
        return bivariate_Gaussian(size, sig_x, sig_x, 0.0, isotropic=True)
    sig_y, theta = rng.uniform(*sigma), rng.uniform(-math.pi, math.pi)
    return bivariate_Gaussian(size, sig_x, sig_y, theta, isotropic=False)


def add_gaussian_noise(img: np.ndarray, rng: np.random.Generator, sigma: float, gray: bool) -> np.ndarray:
    """``img + N(0, (sigma / 255)^2)``; ``gray`` uses the same noise on every channel."""
    shape = (*img.shape[:2], 1) if gray else img.shape
    return img + rng.standard_normal(shape, dtype=np.float32) * np.float32(sigma / 255.0)


def add_poisson_noise(img: np.ndarray, rng: np.random.Generator, scale: float, gray: bool) -> np.ndarray:
    """Shot noise: counts ~ Poisson(img * 256) / 256 minus the image, times ``scale``.

    scikit-image and BasicSR take the number of photon levels from the count of distinct values
    in the image; we fix it at 256 (a full 8-bit image) so that the noise of a crop does not
    depend on how many distinct values it happens to hold (a flat crop would get 2 levels).
    At ``scale`` 1 the noise std is ``sqrt(v / 256)``, about 11/255 at mid-gray.
    """
    base = cv2.cvtColor(img, cv2.COLOR_BGR2GRAY)[..., None] if gray else img
    base = np.clip(base, 0, 1)
    noise = rng.poisson(base * 256.0) / 256.0 - base
    return img + (noise * scale).astype(np.float32)


def jpeg_compress(img: np.ndarray, quality: int) -> np.ndarray:
    """Encode and decode as 8-bit JPEG with ``quality`` (1-100)."""
    img8 = np.clip(np.round(img * 255.0), 0, 255).astype(np.uint8)
    ok, buf = cv2.imencode(".jpg", img8, [cv2.IMWRITE_JPEG_QUALITY, int(quality)])
    if not ok:
        raise RuntimeError("OpenCV could not JPEG-encode the image.")
    return cv2.imdecode(buf, cv2.IMREAD_UNCHANGED).reshape(img.shape).astype(np.float32) / 255.0


# ---------------------------------------------------------------------------------------------
# dataset
# ---------------------------------------------------------------------------------------------


@DATASET_REGISTRY.register()
class HERSRDegradationDataset(data.Dataset):
    """GT images with LQ inputs degraded on the fly, for x1 restoration and blind SR.

    Each sample reads a GT image (as 8-bit BGR, then float32 in [0, 1]); in training it takes a random
    ``gt_size`` crop and flips/rotations, in validation the whole image cropped to a multiple of
    ``scale``. The LQ image is the GT passed through ``degradations`` in order, then (with
    ``quantize_lq``) clipped and rounded to 8-bit levels like a real input file. Samples are dicts
    like BasicSR's ``PairedImageDataset``: ``lq`` and ``gt`` (C, H, W) RGB float tensors in [0, 1]
    (LQ is ``scale`` times smaller), ``lq_path`` and ``gt_path`` (both the GT path; the LMDB key with
    the lmdb backend).

    Randomness: with ``phase: train`` every call draws new degradations from NumPy's global
    generator (seeded per worker by BasicSR from ``manual_seed``). Otherwise sample ``i`` always
    gets the same degradations, from a generator seeded with ``[seed, i]``.

    Fixed single degradations, e.g. colour denoising at sigma 25 and JPEG at quality 10::

        degradations: [noise]          degradations: [jpeg]
        gaussian_noise_prob: 1         jpeg_range: [10, 10]
        gray_noise_prob: 0
        noise_range: [25, 25]

    For the denoising-benchmark convention (float noisy input, not clipped, as in SwinIR and
    Restormer tests) also set ``quantize_lq: false``.

    Args:
        opt (dict): dataset options (YAML keys), defaults in brackets.
            dataroot_gt (str): folder of GT images, or a ``.lmdb`` folder with ``io_backend: lmdb``.
            meta_info_file (str): [None] text file whose lines start with GT file names relative to
                ``dataroot_gt`` (disk backend); otherwise every image in the folder is used.
            io_backend (dict): [{type: disk}] BasicSR FileClient backend, ``disk`` or ``lmdb``.
            phase (str): set by BasicSR: ``train`` (random) or ``val``/``test`` (deterministic).
            scale (int): [1] set by BasicSR from the top-level ``scale``; 1 is restoration, 2-8 is
                blind SR and needs ``downscale`` in ``degradations``.
            gt_size (int): GT crop size in training, a multiple of ``scale``; unused in validation.
            use_hflip (bool): [True] random horizontal flips in training.
            use_rot (bool): [True] random 90-degree rotations and vertical flips in training.
            degradations (list[str]): [[blur, downscale, noise, jpeg]] the chain, in order, each
                name at most once, from ``blur``, ``downscale``, ``noise``, ``jpeg``.
            blur_prob (float): [1.0] probability of applying the blur step.
            kernel_size (list[int] | int): [[7, 21]] odd kernel sizes, drawn uniformly among the
                odd sizes of the range.
            blur_sigma (list[float] | float): [[0.2, 3.0]] Gaussian sigma range (pixels); the
                anisotropic kernels draw both axis sigmas from it and a random angle.
            kernel_list (list[str]): [[iso, aniso]] kernel types, from ``iso``, ``aniso``.
            kernel_prob (list[float]): [[0.5, 0.5]] probability of each type in ``kernel_list``.
            downscale_modes (list[str]): [[area, bilinear, bicubic]] interpolations drawn uniformly
                (``bicubic``: MATLAB's antialiased bicubic, as the benchmark LR images); the LQ
                size is exactly GT size / ``scale``. A no-op at scale 1.
            noise_prob (float): [1.0] probability of applying the noise step.
            gaussian_noise_prob (float): [0.5] probability that the noise is Gaussian rather than
                Poisson.
            noise_range (list[float] | float): [[1, 30]] Gaussian sigma, 0-255 units.
            poisson_scale_range (list[float] | float): [[0.05, 3.0]] Poisson noise scale.
            gray_noise_prob (float): [0.4] probability that the noise is the same on all channels.
            jpeg_prob (float): [1.0] probability of applying the JPEG step.
            jpeg_range (list[int] | int): [[30, 95]] JPEG quality range, 1-100.
            quantize_lq (bool): [True] clip to [0, 1] after noise and round the LQ to 8-bit levels.
            seed (int): [0] base seed of the deterministic validation degradations.
            mean (list[float]): [None] normalisation mean applied to LQ and GT.
            std (list[float]): [None] normalisation std applied to LQ and GT.
    """

    def __init__(self, opt: dict):
        super().__init__()
        self.opt = opt
        if "phase" not in opt:
            raise ValueError("HERSRDegradationDataset needs a 'phase' option ('train', 'val' or 'test'); "
                             "BasicSR sets it from the datasets section name.")
        self.is_train = opt["phase"] == "train"
        scale = opt.get("scale", 1)
        if isinstance(scale, bool) or not isinstance(scale, int) or not 1 <= scale <= 8:
            raise ValueError(f"scale must be an integer from 1 to 8, got {scale!r}.")
        self.scale = scale
        self.mean, self.std = opt.get("mean"), opt.get("std")
        self.seed = opt.get("seed", 0)
        if isinstance(self.seed, bool) or not isinstance(self.seed, int) or self.seed < 0:
            raise ValueError(f"seed must be a non-negative integer, got {self.seed!r}.")
        self.quantize_lq = bool(opt.get("quantize_lq", True))
        self._parse_degradations(opt)
        if self.is_train:
            gt_size = opt.get("gt_size")
            if isinstance(gt_size, bool) or not isinstance(gt_size, int) or gt_size < scale or gt_size % scale:
                raise ValueError(f"gt_size must be a positive multiple of scale {scale} in training, got {gt_size!r}.")
            self.gt_size = gt_size
        self.io_backend_opt = dict(opt.get("io_backend") or {"type": "disk"})
        self.file_client = None
        self.paths = self._scan_paths(opt)

    def _parse_degradations(self, opt: dict) -> None:
        self.degradations = _choices(opt, "degradations", list(DEGRADATIONS), DEGRADATIONS)
        if self.scale > 1 and "downscale" not in self.degradations:
            raise ValueError(f"degradations must include 'downscale' when scale is {self.scale}, "
                             f"got {self.degradations}.")
        self.blur_prob = _prob(opt, "blur_prob", 1.0)
        k_min, k_max = _range(opt, "kernel_size", [7, 21], 3, 101, integer=True)
        self.kernel_sizes = [k for k in range(k_min, k_max + 1) if k % 2 == 1]
        if not self.kernel_sizes:
            raise ValueError(f"kernel_size must contain an odd size, got {[k_min, k_max]}.")
        self.blur_sigma = _range(opt, "blur_sigma", [0.2, 3.0], 1e-3, 100.0)
        self.kernel_list = _choices(opt, "kernel_list", list(KERNEL_TYPES), KERNEL_TYPES)
        prob = opt.get("kernel_prob", [1.0 / len(self.kernel_list)] * len(self.kernel_list))
        if (not isinstance(prob, (list, tuple)) or len(prob) != len(self.kernel_list)
                or any(not isinstance(p, Real) or p < 0 for p in prob) or sum(prob) <= 0):
            raise ValueError(f"kernel_prob must be {len(self.kernel_list)} non-negative numbers (one per "
                             f"kernel_list entry {self.kernel_list}) with a positive sum, got {prob!r}.")
        self.kernel_prob = np.asarray(prob, dtype=np.float64) / sum(prob)
        self.downscale_modes = _choices(opt, "downscale_modes", list(DOWNSCALE_MODES), DOWNSCALE_MODES)
        self.noise_prob = _prob(opt, "noise_prob", 1.0)
        self.gaussian_noise_prob = _prob(opt, "gaussian_noise_prob", 0.5)
        self.noise_range = _range(opt, "noise_range", [1.0, 30.0], 0.0, 255.0)
        self.poisson_scale_range = _range(opt, "poisson_scale_range", [0.05, 3.0], 0.0, 100.0)
        self.gray_noise_prob = _prob(opt, "gray_noise_prob", 0.4)
        self.jpeg_prob = _prob(opt, "jpeg_prob", 1.0)
        self.jpeg_range = _range(opt, "jpeg_range", [30, 95], 1, 100, integer=True)

    def _scan_paths(self, opt: dict) -> list[str]:
        root = opt.get("dataroot_gt")
        if not isinstance(root, str) or not root:
            raise ValueError(f"dataroot_gt must be the path of the GT image folder, got {root!r}.")
        backend = self.io_backend_opt.get("type")
        if backend == "lmdb":
            if not root.endswith(".lmdb") or not osp.isfile(osp.join(root, "meta_info.txt")):
                raise FileNotFoundError(f"dataroot_gt {root!r} is not an LMDB folder ending in '.lmdb' "
                                        "with a meta_info.txt, as io_backend lmdb needs.")
            self.io_backend_opt.update(db_paths=[root], client_keys=["gt"])
            paths = paths_from_lmdb(root)
        elif backend == "disk":
            if not osp.isdir(root):
                raise FileNotFoundError(f"The GT folder dataroot_gt {root!r} does not exist.")
            meta = opt.get("meta_info_file")
            if meta:
                if not osp.isfile(meta):
                    raise FileNotFoundError(f"meta_info_file {meta!r} does not exist.")
                with open(meta, encoding="utf-8") as f:
                    paths = [osp.join(root, line.split()[0]) for line in f if line.strip()]
            else:
                paths = _list_gt_folder(root)
        else:
            raise ValueError(f"io_backend type must be 'disk' or 'lmdb', got {backend!r}.")
        if not paths:
            raise ValueError(f"No GT images found in {root!r} (extensions {', '.join(IMG_EXTENSIONS)}).")
        return paths

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, index: int) -> dict:
        if self.file_client is None:
            opt = dict(self.io_backend_opt)
            self.file_client = FileClient(opt.pop("type"), **opt)
        gt_path = self.paths[index]
        img_bytes = self.file_client.get(gt_path, "gt")
        if img_bytes is None:
            raise FileNotFoundError(f"GT image {gt_path!r} was not found.")
        img_gt = imfrombytes(img_bytes, float32=True)
        if self.is_train:
            rng = np.random.default_rng(np.random.randint(0, 2**31 - 1))
            img_gt = self._random_crop(img_gt, rng, gt_path)
            img_gt = np.ascontiguousarray(augment(img_gt, self.opt.get("use_hflip", True),
                                                  self.opt.get("use_rot", True)))
        else:
            rng = np.random.default_rng([self.seed, index])
            img_gt = mod_crop(img_gt, self.scale)
            if min(img_gt.shape[:2]) < self.scale:
                raise ValueError(f"GT image {gt_path!r} is smaller than the scale {self.scale}.")
        img_lq = self.degrade(img_gt, rng)

        img_gt, img_lq = img2tensor([img_gt, img_lq], bgr2rgb=True, float32=True)
        if self.mean is not None or self.std is not None:
            normalize(img_lq, self.mean, self.std, inplace=True)
            normalize(img_gt, self.mean, self.std, inplace=True)
        return {"lq": img_lq, "gt": img_gt, "lq_path": gt_path, "gt_path": gt_path}

    def _random_crop(self, img: np.ndarray, rng: np.random.Generator, path: str) -> np.ndarray:
        h, w = img.shape[:2]
        size = self.gt_size
        if h < size or w < size:
            raise ValueError(f"GT image {path!r} ({w}x{h}) is smaller than gt_size {size}.")
        top, left = int(rng.integers(0, h - size + 1)), int(rng.integers(0, w - size + 1))
        return img[top:top + size, left:left + size, ...]

    def degrade(self, img: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Apply the degradation chain to a GT image.

        Args:
            img: (H, W, C) float32 BGR in [0, 1], H and W multiples of ``scale``.
            rng: the generator all random choices are drawn from.

        Returns:
            (H / scale, W / scale, C) float32 LQ image.
        """
        out = img.astype(np.float32, copy=True)
        for name in self.degradations:
            if name == "blur" and rng.random() < self.blur_prob:
                kernel = gaussian_blur_kernel(rng, self.kernel_sizes, self.blur_sigma, self.kernel_list,
                                              self.kernel_prob)
                out = cv2.filter2D(out, -1, kernel.astype(np.float32), borderType=cv2.BORDER_REFLECT_101)
            elif name == "downscale" and self.scale > 1:
                mode = DOWNSCALE_MODES[self.downscale_modes[int(rng.integers(len(self.downscale_modes)))]]
                h, w = img.shape[:2]
                small = (imresize(out, 1 / self.scale) if mode is None
                         else cv2.resize(out, (w // self.scale, h // self.scale), interpolation=mode))
                out = np.clip(small, 0, 1)
            elif name == "noise" and rng.random() < self.noise_prob:
                gray = rng.random() < self.gray_noise_prob
                if rng.random() < self.gaussian_noise_prob:
                    out = add_gaussian_noise(out, rng, rng.uniform(*self.noise_range), gray)
                else:
                    out = add_poisson_noise(out, rng, rng.uniform(*self.poisson_scale_range), gray)
                if self.quantize_lq:
                    out = np.clip(out, 0, 1)
            elif name == "jpeg" and rng.random() < self.jpeg_prob:
                out = jpeg_compress(out, int(rng.integers(self.jpeg_range[0], self.jpeg_range[1] + 1)))
            if out.ndim == 2:  # OpenCV drops a single channel axis
                out = out[..., None]
        if self.quantize_lq:
            out = np.clip(np.round(out * 255.0), 0, 255) / 255.0
        return out.astype(np.float32)
