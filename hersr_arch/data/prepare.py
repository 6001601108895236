"""Preparing image folders for training and testing HERSR with BasicSR.

Every function here reads one folder of images and writes new files elsewhere; input files are
never modified or deleted. The folder layouts are those BasicSR's option files expect:

- DIV2K / DF2K training data: HR sub-images (``0001_s001.png`` ...) and LR sub-images with the
  same names, optionally packed into LMDB (``extract_subimages``, ``generate_bicubic_lr``,
  ``create_lmdb``).
- Benchmark sets: ``<Set>/GTmod{s}`` (HR cropped to a multiple of ``s``) and ``<Set>/LRbicx{s}``
  (MATLAB-style bicubic), identical file names (``make_benchmark_layout``).
- The embedded default dataset, built from the natural photographs that scikit-image ships
  inside its package (``build_embedded_dataset``), so a demo trains and tests with no download.

LR images are made by :func:`hersr_arch.data.matlab_resize.imresize`, MATLAB's
``imresize(img, 1/s, 'bicubic')`` on the 8- or 16-bit image itself (one dimension at a time,
rounded to the integer type in between): bit-identical to the published DIV2K and benchmark LR
images, which MATLAB made that way.

The command-line scripts in ``datasets/`` are thin wrappers over these functions.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import re
import shutil
import tempfile
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from functools import partial, reduce
from multiprocessing import Pool
from pathlib import Path

import cv2
import numpy as np
from tqdm import tqdm

from hersr_arch.data.matlab_resize import BORDERS, imresize

__all__ = [
    "IMG_EXTENSIONS",
    "EmbeddedDataset",
    "EMBEDDED_TRAIN_IMAGES",
    "EMBEDDED_TEST_IMAGES",
    "list_images",
    "bicubic_downscale",
    "extract_subimages",
    "generate_bicubic_lr",
    "make_benchmark_layout",
    "create_lmdb",
    "build_embedded_dataset",
]

logger = logging.getLogger(__name__)

IMG_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".tif", ".tiff", ".ppm", ".pgm", ".webp")
_MAX_SCALE = 8

# ---------------------------------------------------------------------------------------------
# helpers: checks, listing, reading and writing
# ---------------------------------------------------------------------------------------------


def _check_scale(scale, name: str = "scale") -> int:
    if isinstance(scale, bool) or not isinstance(scale, (int, np.integer)) or not 1 <= scale <= _MAX_SCALE:
        raise ValueError(f"{name} must be an integer from 1 to {_MAX_SCALE}, got {scale!r}.")
    return int(scale)


def _check_scales(scales) -> tuple[int, ...]:
    if isinstance(scales, (int, np.integer)) and not isinstance(scales, bool):
        scales = (scales,)
    scales = tuple(_check_scale(s, "each scale") for s in scales)
    if not scales:
        raise ValueError("scales must name at least one scale from 1 to 8, got an empty list.")
    if len(set(scales)) != len(scales):
        raise ValueError(f"scales must not repeat a scale, got {list(scales)}.")
    return scales


def _check_positive_int(value, name: str, minimum: int = 1) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < minimum:
        raise ValueError(f"{name} must be an integer of at least {minimum}, got {value!r}.")
    return int(value)


def _check_input_dir(folder, name: str) -> Path:
    path = Path(folder)
    if not path.is_dir():
        raise FileNotFoundError(f"The {name} folder {str(path)!r} does not exist or is not a folder.")
    return path


def _check_output_dir(output_dir, input_dir: Path, name: str) -> Path:
    out = Path(output_dir)
    if out.exists() and not out.is_dir():
        raise NotADirectoryError(f"The {name} {str(out)!r} exists and is not a folder.")
    if out.resolve() == input_dir.resolve():
        raise ValueError(
            f"The {name} {str(out)!r} is the input folder; choose another folder so that input images "
            "are not overwritten."
        )
    return out


def _check_compression(compression) -> int:
    if isinstance(compression, bool) or not isinstance(compression, (int, np.integer)) or not 0 <= compression <= 9:
        raise ValueError(f"compression must be a PNG compression level from 0 to 9, got {compression!r}.")
    return int(compression)


def _run(work, items: Sequence, n_workers: int, desc: str, show_progress: bool) -> list:
    """Apply ``work`` to each item, in a process pool when ``n_workers > 1``; results keep item order."""
    if n_workers == 1 or len(items) == 1:
        return [work(item) for item in _progress(items, len(items), desc, show_progress)]
    with Pool(min(n_workers, len(items))) as pool:
        return list(_progress(pool.imap(work, items), len(items), desc, show_progress))


def list_images(folder) -> list[Path]:
    """Image files directly inside ``folder`` (not recursive), sorted by name.

    Hidden files are skipped; the extensions recognised are ``IMG_EXTENSIONS`` (any case).

    Raises:
        FileNotFoundError: the folder does not exist.
        ValueError: the folder holds no image.
    """
    path = _check_input_dir(folder, "image")
    images = sorted(
        p for p in path.iterdir() if p.is_file() and not p.name.startswith(".") and p.suffix.lower() in IMG_EXTENSIONS
    )
    if not images:
        raise ValueError(
            f"No images found in {str(path)!r}; expected files ending in {', '.join(IMG_EXTENSIONS)}."
        )
    return images


def _read_image(path: Path) -> np.ndarray:
    """Read an image unchanged (8/16-bit, 1/3/4 channels, BGR order). Works with non-ASCII paths."""
    data = np.fromfile(str(path), dtype=np.uint8)
    img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED) if data.size else None
    if img is None:
        raise ValueError(f"{str(path)!r} could not be read as an image.")
    return img


def _write_image(img: np.ndarray, path: Path, compression: int = 3) -> None:
    """Write ``img`` with the format given by the file extension (lossy formats at top quality)."""
    ext = path.suffix.lower()
    if ext == ".png":
        params = [cv2.IMWRITE_PNG_COMPRESSION, compression]
    elif ext in (".jpg", ".jpeg"):
        params = [cv2.IMWRITE_JPEG_QUALITY, 100]
    elif ext == ".webp":
        params = [cv2.IMWRITE_WEBP_QUALITY, 100]
    else:
        params = []
    ok, buf = cv2.imencode(ext, img, params)
    if not ok:
        raise OSError(f"Could not encode an image of shape {img.shape} and type {img.dtype} as {ext!r}.")
    path.parent.mkdir(parents=True, exist_ok=True)
    buf.tofile(str(path))


def _max_value(img: np.ndarray, path: Path | str = "image") -> float:
    if img.dtype == np.uint8:
        return 255.0
    if img.dtype == np.uint16:
        return 65535.0
    raise ValueError(f"{str(path)!r} has pixel type {img.dtype}; only 8-bit and 16-bit images are supported.")


def _progress(items: Iterable, total: int, desc: str, show: bool):
    return tqdm(items, total=total, desc=desc, unit="img", disable=not show)


# ---------------------------------------------------------------------------------------------
# bicubic LR
# ---------------------------------------------------------------------------------------------


def bicubic_downscale(img: np.ndarray, scale: int, border: str = "mirror") -> np.ndarray:
    """Downscale an 8- or 16-bit image by ``scale`` exactly as MATLAB's ``imresize(img, 1/scale,
    'bicubic')`` does (antialiased; integer rounding between the two passes, see
    :mod:`hersr_arch.data.matlab_resize`). The output size is ``ceil(H / scale)`` by
    ``ceil(W / scale)``, as in MATLAB; mod-crop first to get exactly ``H / scale``. ``border``:
    ``'mirror'`` (current MATLAB, EDSR's benchmark LR) or ``'clamp'`` (older MATLAB releases).

    Args:
        img: (H, W) or (H, W, C) array, uint8 or uint16, any channel order.
        scale: integer factor from 1 to 8.
    """
    scale = _check_scale(scale)
    _max_value(img)  # 8 or 16 bits, else a clear error
    return imresize(img, 1 / scale, border)


def _mod_crop(img: np.ndarray, mod: int) -> np.ndarray:
    """BasicSR's ``mod_crop``: crop ``img`` (H, W[, C]) to multiples of ``mod`` (bottom and right)."""
    from basicsr.data.transforms import mod_crop  # imported when used: this module needs no BasicSR

    return mod_crop(img, mod)


def _resolve_mod(mod_crop, scale: int) -> int:
    if mod_crop is True:
        return scale
    if mod_crop is False or mod_crop is None:
        return 1
    mod = _check_positive_int(mod_crop, "mod_crop")
    if mod % scale:
        raise ValueError(f"mod_crop must be True, False or a multiple of the scale {scale}, got {mod}.")
    return mod


def _bicubic_worker(path: Path, lr_dir: Path, scale: int, mod: int, compression: int) -> None:
    img = _read_image(path)
    _max_value(img, path)  # 8 or 16 bits, else an error naming the file
    if mod > 1:
        img = _mod_crop(img, mod)
    if img.shape[0] < scale or img.shape[1] < scale:
        raise ValueError(f"{str(path)!r} is smaller than the scale {scale} after mod-crop.")
    _write_image(bicubic_downscale(img, scale), lr_dir / path.name, compression)


def generate_bicubic_lr(
    hr_dir,
    lr_dir,
    scale: int,
    mod_crop: bool | int = True,
    *,
    n_workers: int = 1,
    compression: int = 3,
    show_progress: bool = True,
) -> int:
    """Write the MATLAB-bicubic LR version of every image in ``hr_dir`` to ``lr_dir``.

    LR files keep the HR file names (as BasicSR's ``PairedImageDataset`` pairs by name). 8-bit and
    16-bit images are supported; lossy formats (JPEG, WebP) are re-encoded at top quality, so
    prefer PNG.

    Args:
        hr_dir: folder of HR images (read only, not recursive).
        lr_dir: output folder, created if needed; files of the same name are overwritten.
        scale: downscaling factor, integer from 1 to 8.
        mod_crop: True crops each HR image to a multiple of ``scale`` first, so the LR is exactly
            HR / scale (the usual convention). An integer ``m`` (a multiple of ``scale``) crops to a
            multiple of ``m`` instead, e.g. 12 so that x2, x3 and x4 LR all match the same HR
            sub-images. False keeps the whole image (LR size then rounds up, as in MATLAB).
        n_workers: processes used in parallel.
        compression: PNG compression level, 0 to 9.
        show_progress: draw a tqdm progress bar.

    Returns:
        The number of LR images written.
    """
    scale = _check_scale(scale)
    mod = _resolve_mod(mod_crop, scale)
    n_workers = _check_positive_int(n_workers, "n_workers")
    compression = _check_compression(compression)
    hr_path = _check_input_dir(hr_dir, "HR")
    lr_path = _check_output_dir(lr_dir, hr_path, "LR folder")
    images = list_images(hr_path)
    lr_path.mkdir(parents=True, exist_ok=True)
    work = partial(_bicubic_worker, lr_dir=lr_path, scale=scale, mod=mod, compression=compression)
    _run(work, images, n_workers, f"bicubic x{scale}", show_progress)
    return len(images)


# ---------------------------------------------------------------------------------------------
# sub-images
# ---------------------------------------------------------------------------------------------


def _crop_positions(length: int, crop_size: int, step: int, thresh_size: int) -> list[int]:
    """Top-left offsets along one axis: every ``step``, plus a last crop flush with the end when the
    uncovered remainder is larger than ``thresh_size`` (the BasicSR convention)."""
    if length < crop_size:
        return []
    positions = list(range(0, length - crop_size + 1, step))
    if length - (positions[-1] + crop_size) > thresh_size:
        positions.append(length - crop_size)
    return positions


_SCALE_SUFFIX = re.compile(r"x[1-8]$")


def _subimage_worker(path: Path, output_dir: Path, crop_size: int, step: int, thresh_size: int,
                     compression: int, mod: int, strip_scale_suffix: bool) -> int:
    img = _read_image(path)
    if mod > 1:
        img = _mod_crop(img, mod)
    stem = _SCALE_SUFFIX.sub("", path.stem) if strip_scale_suffix else path.stem
    rows = _crop_positions(img.shape[0], crop_size, step, thresh_size)
    cols = _crop_positions(img.shape[1], crop_size, step, thresh_size)
    index = 0
    for y in rows:
        for x in cols:
            index += 1
            crop = np.ascontiguousarray(img[y:y + crop_size, x:x + crop_size, ...])
            _write_image(crop, output_dir / f"{stem}_s{index:03d}{path.suffix}", compression)
    return index


def extract_subimages(
    input_dir,
    output_dir,
    crop_size: int = 480,
    step: int = 240,
    thresh_size: int = 0,
    n_workers: int = 1,
    compression: int = 3,
    *,
    mod_crop: int = 1,
    strip_scale_suffix: bool = False,
    show_progress: bool = True,
) -> int:
    """Cut every image of ``input_dir`` into overlapping square sub-images (DIV2K/DF2K style).

    Crops start every ``step`` pixels along each axis; when the part left uncovered at the right
    or bottom is wider than ``thresh_size``, one more crop flush with that border is added. The
    ``k``-th crop (row-major, from 1) of ``0001.png`` is written as ``0001_s00k.png``, as BasicSR's
    ``extract_subimages.py`` does. Images smaller than ``crop_size`` give no sub-image. For the LR
    folder of scale ``s`` use ``crop_size / s``, ``step / s`` and ``thresh_size / s`` so that
    sub-images pair with the HR ones.

    Args:
        input_dir: folder of images (read only, not recursive).
        output_dir: output folder, created if needed; files of the same name are overwritten.
        crop_size: side of the square sub-images, pixels.
        step: distance between neighbouring crops, pixels.
        thresh_size: largest uncovered border that is dropped rather than covered by an extra crop.
        n_workers: processes used in parallel.
        compression: PNG compression level, 0 to 9 (lossy formats are written at top quality).
        mod_crop: crop each image to a multiple of this first (use the same value that
            ``generate_bicubic_lr`` used, so HR and LR crops line up).
        strip_scale_suffix: drop an ``x2``/``x3``/``x4``... suffix from names, so that the official
            DIV2K LR file ``0001x4.png`` gives ``0001_s001.png`` like its HR image.
        show_progress: draw a tqdm progress bar.

    Returns:
        The number of sub-images written.
    """
    crop_size = _check_positive_int(crop_size, "crop_size")
    step = _check_positive_int(step, "step")
    thresh_size = _check_positive_int(thresh_size, "thresh_size", minimum=0)
    n_workers = _check_positive_int(n_workers, "n_workers")
    compression = _check_compression(compression)
    mod = _check_positive_int(mod_crop, "mod_crop")
    in_path = _check_input_dir(input_dir, "input")
    out_path = _check_output_dir(output_dir, in_path, "output folder")
    images = list_images(in_path)
    out_path.mkdir(parents=True, exist_ok=True)
    work = partial(_subimage_worker, output_dir=out_path, crop_size=crop_size, step=step, thresh_size=thresh_size,
                   compression=compression, mod=mod, strip_scale_suffix=strip_scale_suffix)
    counts = _run(work, images, n_workers, "sub-images", show_progress)
    skipped = [p.name for p, n in zip(images, counts) if n == 0]
    if skipped:
        logger.warning("%d image(s) smaller than crop_size=%d gave no sub-image: %s",
                       len(skipped), crop_size, ", ".join(skipped[:10]))
    return int(sum(counts))


# ---------------------------------------------------------------------------------------------
# benchmark folders
# ---------------------------------------------------------------------------------------------


def _write_benchmark_image(name: str, img: np.ndarray, out_dir: Path, scales: Sequence[int],
                           compression: int = 3, border: str = "mirror") -> None:
    """Write ``GTmod{s}/<name>.png`` and ``LRbicx{s}/<name>.png`` for each scale."""
    _max_value(img, name)
    for s in scales:
        gt = _mod_crop(img, s)
        if gt.shape[0] < s or gt.shape[1] < s:
            raise ValueError(f"Image {name!r} of size {img.shape[1]}x{img.shape[0]} is too small for scale {s}.")
        _write_image(gt, out_dir / f"GTmod{s}" / f"{name}.png", compression)
        _write_image(bicubic_downscale(gt, s, border), out_dir / f"LRbicx{s}" / f"{name}.png", compression)


def make_benchmark_layout(hr_dir, out_dir, scales: Sequence[int] = (2, 3, 4), *,
                          border: str = "mirror", show_progress: bool = True) -> int:
    """Write a benchmark folder (the Set5/Set14/B100/Urban100/Manga109 layout) from HR images.

    For each scale ``s``: ``out_dir/GTmod{s}/<name>.png`` is the HR image cropped (top-left
    anchored) to a multiple of ``s`` and ``out_dir/LRbicx{s}/<name>.png`` its MATLAB-bicubic
    downscale, exactly ``1/s`` of its size. Both folders hold the same file names (PNG, whatever
    the input format), which is what BasicSR's ``PairedImageDataset`` pairs.

    Args:
        hr_dir: folder of HR images (read only, not recursive); 8- or 16-bit.
        out_dir: output folder (e.g. ``datasets/benchmark/Set5``), must differ from ``hr_dir``.
        scales: scales to prepare, each from 1 to 8.
        border: ``'mirror'`` (current MATLAB: EDSR's benchmark LR, bit for bit) or ``'clamp'``
            (older MATLAB: RCAN's and SelfExSR's LR files), see :mod:`hersr_arch.data.matlab_resize`.
        show_progress: draw a tqdm progress bar.

    Returns:
        The number of HR images processed.
    """
    scales = _check_scales(scales)
    if border not in BORDERS:
        raise ValueError(f"border must be one of {list(BORDERS)}, got {border!r}.")
    hr_path = _check_input_dir(hr_dir, "HR")
    out_path = _check_output_dir(out_dir, hr_path, "output folder")
    images = list_images(hr_path)
    stems = [p.stem for p in images]
    duplicates = sorted({s for s in stems if stems.count(s) > 1})
    if duplicates:
        raise ValueError(f"Several images in {str(hr_path)!r} share the name(s) {duplicates}; "
                         "outputs are all written as PNG, so names must be unique without extension.")
    for path in _progress(images, len(images), "benchmark", show_progress):
        _write_benchmark_image(path.stem, _read_image(path), out_path, scales, border=border)
    return len(images)


# ---------------------------------------------------------------------------------------------
# LMDB
# ---------------------------------------------------------------------------------------------


def create_lmdb(
    folder,
    lmdb_path,
    *,
    compress_level: int = 1,
    n_workers: int = 1,
    batch: int = 5000,
) -> int:
    """Pack the images of ``folder`` into an LMDB that BasicSR's ``lmdb`` io backend reads.

    Uses BasicSR's ``make_lmdb_from_imgs``: each image is stored PNG-encoded under its file name
    without extension as key, and ``meta_info.txt`` (``name.png (h,w,c) level`` per line) is written
    inside the ``.lmdb`` folder. Pair an HR and an LR LMDB made from folders with the same names as
    ``dataroot_gt`` / ``dataroot_lq`` with ``io_backend: {type: lmdb}``.

    Args:
        folder: folder of images (read only, not recursive).
        lmdb_path: output folder, must end with ``.lmdb`` and not exist yet.
        compress_level: PNG compression level of the stored images, 0 to 9.
        n_workers: processes reading images in parallel (all images are then held in memory).
        batch: images per LMDB transaction.

    Returns:
        The number of images stored.
    """
    src = _check_input_dir(folder, "image")
    dst = Path(lmdb_path)
    if not dst.name.endswith(".lmdb"):
        raise ValueError(f"lmdb_path must end with '.lmdb', got {str(dst)!r}.")
    if dst.exists():
        raise FileExistsError(f"{str(dst)!r} already exists; remove it or choose another lmdb_path.")
    compress_level = _check_compression(compress_level)
    n_workers = _check_positive_int(n_workers, "n_workers")
    batch = _check_positive_int(batch, "batch")
    images = list_images(src)
    keys = [p.stem for p in images]
    bad = [k for k in keys if "." in k or not k.isascii()]
    if bad:
        raise ValueError(f"LMDB keys are file names without extension and must be ASCII without '.', "
                         f"which these are not: {bad[:10]}.")
    duplicates = sorted({k for k in keys if keys.count(k) > 1})
    if duplicates:
        raise ValueError(f"Several images in {str(src)!r} share the key(s) {duplicates}; keys are file "
                         "names without extension and must be unique.")
    from basicsr.utils.lmdb_util import make_lmdb_from_imgs  # BasicSR only when an LMDB is made

    make_lmdb_from_imgs(str(src), str(dst), [p.name for p in images], keys, batch=batch,
                        compress_level=compress_level, multiprocessing_read=n_workers > 1,
                        n_thread=n_workers, map_size=_lmdb_map_size(images))
    return len(images)


def _lmdb_map_size(images: Sequence[Path]) -> int:
    """An upper bound of the LMDB size: 8 bytes a pixel (4 channels x 16 bits) plus page slack."""
    from PIL import Image  # reads only the header

    total = 64 * 2**20
    for path in images:
        try:
            with Image.open(path) as im:
                width, height = im.size
            total += 8 * width * height + 16384
        except Exception:  # not readable by PIL: fall back on the file size (PNG, 10x margin)
            total += 10 * path.stat().st_size + 16384
    return total


# ---------------------------------------------------------------------------------------------
# embedded default dataset
# ---------------------------------------------------------------------------------------------

# (name in the dataset, file inside skimage/data). Only images shipped inside the scikit-image
# wheel (no download). The stereo pair motorcycle_left/right stays together in training so that no
# test image has a near-copy in the training set. Grayscale images are read as 3 equal channels.
EMBEDDED_TRAIN_IMAGES: tuple[tuple[str, str], ...] = (
    ("astronaut", "astronaut.png"),
    ("coffee", "coffee.png"),
    ("motorcycle_left", "motorcycle_left.png"),
    ("motorcycle_right", "motorcycle_right.png"),
    ("hubble_deep_field", "hubble_deep_field.jpg"),
    ("brick", "brick.png"),
    ("grass", "grass.png"),
    ("gravel", "gravel.png"),
    ("coins", "coins.png"),
)
EMBEDDED_TEST_IMAGES: tuple[tuple[str, str], ...] = (
    ("chelsea", "chelsea.png"),
    ("rocket", "rocket.jpg"),
    ("immunohistochemistry", "ihc.png"),
    ("camera", "camera.png"),
)
# 2: LR made by MATLAB's integer imresize rule (1: a one-pass float resize); a format-1 build is rebuilt.
_EMBEDDED_FORMAT = 2


@dataclass(frozen=True)
class EmbeddedDataset:
    """Where the embedded dataset is, what its manifest says, and whether this call (re)built it."""

    root: Path
    manifest: dict
    rebuilt: bool


def _skimage_data_dir() -> Path:
    try:
        import skimage.data
    except ImportError as err:
        raise ImportError("The embedded dataset is built from scikit-image's sample images; "
                          "install it with `pip install scikit-image`.") from err
    return Path(skimage.data.__file__).parent


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _center_crop(img: np.ndarray, size: int) -> np.ndarray:
    h, w = img.shape[:2]
    ch, cw = min(h, size), min(w, size)
    top, left = (h - ch) // 2, (w - cw) // 2
    return np.ascontiguousarray(img[top:top + ch, left:left + cw])


def _manifest_is_current(out_dir: Path, manifest: dict) -> bool:
    path = out_dir / "manifest.json"
    if not path.is_file():
        return False
    try:
        old = json.loads(path.read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return False
    keys = ("format", "params", "sources", "train", "test")
    if any(old.get(k) != manifest[k] for k in keys) or not old.get("counts"):
        return False
    return all(_count_images(out_dir / folder) == n for folder, n in old["counts"].items())


def _count_images(folder: Path) -> int:
    try:
        return len(list_images(folder))
    except (FileNotFoundError, ValueError):
        return 0


def _write_train_subimages(name: str, img: np.ndarray, train_dir: Path, scales: Sequence[int], lcm: int,
                           crop_size: int, step: int) -> None:
    hr = _mod_crop(img, lcm)
    lrs = {s: bicubic_downscale(hr, s) for s in scales}
    index = 0
    for y in _crop_positions(hr.shape[0], crop_size, step, 0):
        for x in _crop_positions(hr.shape[1], crop_size, step, 0):
            index += 1
            sub = f"{name}_s{index:03d}.png"
            _write_image(np.ascontiguousarray(hr[y:y + crop_size, x:x + crop_size]), train_dir / "GT" / sub)
            for s, lr in lrs.items():
                c, ly, lx = crop_size // s, y // s, x // s
                _write_image(np.ascontiguousarray(lr[ly:ly + c, lx:lx + c]), train_dir / f"LRbicx{s}" / sub)


def build_embedded_dataset(
    out_dir,
    scales: Sequence[int] = (2, 3, 4),
    *,
    crop_size: int = 192,
    step: int = 192,
    test_size: int = 256,
    force: bool = False,
    show_progress: bool = True,
) -> EmbeddedDataset:
    """Build HERSR's small default dataset from the photographs scikit-image ships.

    Nothing is downloaded: the images are files inside the installed ``skimage/data`` folder.
    Training and test images are whole, different photographs (``EMBEDDED_TRAIN_IMAGES`` and
    ``EMBEDDED_TEST_IMAGES``), so test scores measure generalisation. Layout::

        out_dir/manifest.json
        out_dir/train/GT/<name>_s001.png ...     HR sub-images, crop_size x crop_size
        out_dir/train/LRbicx{s}/<name>_s001.png  the same sub-images of the MATLAB-bicubic LR
        out_dir/test/GTmod{s}/<name>.png         center crop (at most test_size), mod-crop s
        out_dir/test/LRbicx{s}/<name>.png        MATLAB-bicubic LR

    Training images are cropped to a multiple of lcm(scales), downscaled whole (no border effect
    at sub-image edges), then cut at offsets that are multiples of every scale, so ``train/GT``
    serves all the ``train/LRbicx{s}`` folders with BasicSR's ``PairedImageDataset``. The test
    folders follow the benchmark layout (see ``make_benchmark_layout``).

    The build is deterministic and idempotent: ``manifest.json`` records the parameters and the
    SHA-256 of each source image, and a later call with the same ones returns at once. Otherwise
    the dataset is built in a temporary sibling folder and moved into place, replacing a previous
    build (``out_dir`` must be empty, absent, or hold a previous build).

    Args:
        out_dir: output folder, e.g. ``datasets/embedded``.
        scales: SR scales to prepare, each from 1 to 8.
        crop_size: side of the training sub-images; a multiple of lcm(scales).
        step: distance between training sub-images; a multiple of lcm(scales).
        test_size: largest side of the test center crops.
        force: rebuild even if the manifest says the folder is up to date.
        show_progress: draw a tqdm progress bar.
    """
    scales = tuple(sorted(_check_scales(scales)))
    lcm = reduce(lambda a, b: a * b // math.gcd(a, b), scales, 1)
    crop_size = _check_positive_int(crop_size, "crop_size")
    step = _check_positive_int(step, "step")
    test_size = _check_positive_int(test_size, "test_size", minimum=max(scales))
    for name, value in (("crop_size", crop_size), ("step", step)):
        if value % lcm:
            raise ValueError(f"{name} must be a multiple of {lcm} (the least common multiple of scales "
                             f"{list(scales)}), got {value}.")
    out_path = Path(out_dir)
    data_dir = _skimage_data_dir()
    sources = {}
    for name, filename in EMBEDDED_TRAIN_IMAGES + EMBEDDED_TEST_IMAGES:
        path = data_dir / filename
        if not path.is_file():
            raise FileNotFoundError(f"scikit-image's sample image {filename!r} is missing from {str(data_dir)!r}; "
                                    "reinstall scikit-image.")
        sources[name] = {"file": filename, "sha256": _sha256(path)}
    manifest = {
        "format": _EMBEDDED_FORMAT,
        "params": {"scales": list(scales), "crop_size": crop_size, "step": step, "test_size": test_size},
        "sources": sources,
        "train": [name for name, _ in EMBEDDED_TRAIN_IMAGES],
        "test": [name for name, _ in EMBEDDED_TEST_IMAGES],
    }
    if not force and _manifest_is_current(out_path, manifest):
        logger.info("Embedded dataset in %s is up to date.", out_path)
        old = json.loads((out_path / "manifest.json").read_text(encoding="utf-8"))
        return EmbeddedDataset(out_path, old, rebuilt=False)
    if out_path.exists() and (not out_path.is_dir() or (any(out_path.iterdir())
                                                         and not (out_path / "manifest.json").is_file())):
        raise FileExistsError(f"{str(out_path)!r} exists and is not an embedded dataset built by HERSR "
                              "(no manifest.json); choose an empty or new folder.")

    out_path.parent.mkdir(parents=True, exist_ok=True)
    tmp = Path(tempfile.mkdtemp(prefix=f".{out_path.name}-build-", dir=out_path.parent))
    try:
        jobs = [("train", n, f) for n, f in EMBEDDED_TRAIN_IMAGES] + [("test", n, f) for n, f in EMBEDDED_TEST_IMAGES]
        for split, name, filename in _progress(jobs, len(jobs), "embedded dataset", show_progress):
            img = cv2.imread(str(data_dir / filename), cv2.IMREAD_COLOR)  # gray -> 3 equal channels
            if img is None:
                raise ValueError(f"scikit-image's sample image {filename!r} could not be read.")
            if split == "train":
                _write_train_subimages(name, img, tmp / "train", scales, lcm, crop_size, step)
            else:
                _write_benchmark_image(name, _center_crop(img, test_size), tmp / "test", scales)
        folders = sorted(str(p.relative_to(tmp).as_posix()) for p in tmp.glob("*/*") if p.is_dir())
        manifest["counts"] = {folder: len(list_images(tmp / folder)) for folder in folders}
        (tmp / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
        if out_path.exists():
            shutil.rmtree(out_path)
        os.replace(tmp, out_path)
    finally:
        if tmp.exists():
            shutil.rmtree(tmp)
    return EmbeddedDataset(out_path, manifest, rebuilt=True)
