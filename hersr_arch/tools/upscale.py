"""``hersr upscale``: run a HERSR checkpoint over image files, robustly.

Images are read with OpenCV as stored (``IMREAD_UNCHANGED``: 8/16-bit integer or 32-bit float;
grayscale, BGR or BGRA) and turned upright by their EXIF orientation. The model sees RGB in
[0, 1] (as BasicSR trains it). How channels are handled:

- grayscale into a 3-channel model: replicated to 3 channels; the output is the channel mean;
- a 1-channel model on a colour image: each channel separately (one batch of C images);
- alpha: upscaled separately and re-attached. Default ``--alpha model``: the alpha plane runs
  through the model as a grayscale image (as Real-ESRGAN does), so alpha edges are as sharp as
  the colour edges they belong to; ``--alpha bicubic`` is cheaper. A constant alpha (an opaque
  RGBA file) is simply kept constant. A 4-channel model takes RGBA as it is.

The output has the input's bit depth (8, 16 or 32-bit float) unless ``--bit-depth`` says
otherwise, or ``--format`` names a format that cannot hold it (then the deepest it can: JPEG,
WebP and BMP 8, PNG 16, TIFF 32). Values are clipped to [0, 1] before conversion.

Robustness: an unreadable, truncated or non-finite (NaN/Inf in a float TIFF) file, or one that
runs out of memory, is reported and skipped and the rest is processed; existing outputs are kept
unless ``--overwrite``; outputs are written to a temporary file and renamed, and no input file is
ever opened for writing (an OUTPUT that would overwrite an input is refused up front).
"""

from __future__ import annotations

import ctypes
import os
import sys
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import cv2
import numpy as np
import torch

from hersr_arch.cpu_inference import prepare_cpu_inference
from hersr_arch.inference import StaticShapeForward, count_tiles, tiled_forward

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".webp", ".tif", ".tiff", ".bmp")
FORMAT_SUFFIX = {"png": ".png", "jpg": ".jpg", "jpeg": ".jpg", "webp": ".webp", "tiff": ".tif", "tif": ".tif",
                 "bmp": ".bmp"}  # fmt: skip
# Bit depths each format stores (32 = float32).
FORMAT_DEPTHS = {".png": (8, 16), ".jpg": (8,), ".jpeg": (8,), ".webp": (8,), ".tif": (8, 16, 32),
                 ".tiff": (8, 16, 32), ".bmp": (8,)}  # fmt: skip
_FORMAT_NAME = {".png": "PNG", ".jpg": "JPEG", ".jpeg": "JPEG", ".webp": "WebP", ".tif": "TIFF", ".tiff": "TIFF",
                ".bmp": "BMP"}  # fmt: skip
PRECISIONS = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


class SetupError(Exception):
    """The run cannot start (paths, device, precision, checkpoint); nothing was written."""


class ImageError(Exception):
    """One image cannot be processed; it is reported and skipped."""


@dataclass
class UpscaleOptions:
    """Settings of one ``hersr upscale`` run (the command-line flags)."""

    tile: int = 0
    tile_pad: int = 32
    compile: bool = False
    device: str = "auto"
    precision: str = "fp32"
    noise_strength: float | None = None
    out_format: str | None = None
    bit_depth: int | None = None
    alpha: str = "model"
    overwrite: bool = False
    recursive: bool = False
    progress: bool = True


@dataclass
class Summary:
    """What a run did: outputs written, skipped (already there) and failed (with the reason)."""

    written: list[Path] = field(default_factory=list)
    skipped: list[Path] = field(default_factory=list)
    failed: list[tuple[Path, str]] = field(default_factory=list)

    def lines(self) -> list[str]:
        head = f"{len(self.written)} written, {len(self.skipped)} skipped, {len(self.failed)} failed"
        out = [head]
        if self.skipped:
            out.append(f"skipped (output exists; --overwrite replaces): {', '.join(map(str, self.skipped[:5]))}"
                       + (" ..." if len(self.skipped) > 5 else ""))  # fmt: skip
        out += [f"failed: {path}: {reason}" for path, reason in self.failed]
        return out


# ----------------------------------------------------------------------------------------------
# Device and precision
# ----------------------------------------------------------------------------------------------


def resolve_device(name: str) -> torch.device:
    """``auto`` -> CUDA when available, else CPU; ``cuda`` without a usable GPU is refused."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise SetupError("--device cuda: no CUDA device is available to this PyTorch "
                         f"(torch {torch.__version__}); use --device cpu.")  # fmt: skip
    if name not in ("cpu", "cuda"):
        raise SetupError(f"--device {name!r}: choose auto, cpu or cuda.")
    return torch.device(name)


def resolve_precision(name: str, device: torch.device, model: torch.nn.Module | None = None) -> torch.dtype | None:
    """The autocast dtype for ``--precision`` (None = fp32), refusing what ``device`` cannot run.

    Weights stay fp32 and the forward runs under ``torch.autocast`` (the output keeps the input's
    fp32; the router and FFT expert compute in fp32 on purpose). bf16 on a GPU without
    bf16 support is refused outright. Otherwise a probe decides: ``model`` (already on ``device``) runs
    once on a 16x16 input under autocast, or a conv when no model is given; an error or a non-finite
    output refuses the precision with the reason, rather than failing mid-run. In torch 2.14 both bf16
    and fp16 pass on the CPU (fp16 CPU autocast is recent; without native fp16 it is slower than fp32).
    """
    if name not in PRECISIONS:
        raise SetupError(f"--precision {name!r}: choose fp32, bf16 or fp16.")
    dtype = PRECISIONS[name]
    if dtype is None:
        return None
    if device.type == "cuda" and dtype == torch.bfloat16 and not torch.cuda.is_bf16_supported():
        gpu = torch.cuda.get_device_name(device)
        raise SetupError(f"--precision bf16: {gpu} does not support bfloat16; use fp16 or fp32.")
    try:
        with torch.no_grad(), torch.autocast(device.type, dtype=dtype):
            if model is not None:
                probe = model(torch.rand(1, model.num_in_ch, 16, 16, device=device))
            else:
                probe = torch.nn.functional.conv2d(torch.ones(1, 4, 4, 4, device=device),
                                                   torch.ones(4, 4, 3, 3, device=device))  # fmt: skip
        works = bool(torch.isfinite(probe).all())
        reason = "the output is not finite"
    except (RuntimeError, TypeError, ValueError, NotImplementedError) as err:
        works, reason = False, (str(err).strip().splitlines() or [type(err).__name__])[0][:200]
    if not works:
        raise SetupError(f"--precision {name} does not work on {device.type} with torch {torch.__version__} "
                         f"({reason}); use fp32.")  # fmt: skip
    return dtype


# ----------------------------------------------------------------------------------------------
# Files
# ----------------------------------------------------------------------------------------------


def find_images(source: Path, recursive: bool, exclude: Path | None = None) -> list[tuple[Path, Path]]:
    """``(path, path relative to the input folder)`` for every image under ``source``, sorted."""
    if source.is_file():
        return [(source, Path(source.name))]
    pattern = "**/*" if recursive else "*"
    found = []
    for path in sorted(source.glob(pattern)):
        if not path.is_file() or path.suffix.lower() not in IMAGE_SUFFIXES:
            continue
        if exclude is not None and exclude in path.resolve().parents:
            continue  # our own outputs, when OUTPUT is inside INPUT
        found.append((path, path.relative_to(source)))
    return found


def output_suffix(input_path: Path, out_format: str | None) -> str:
    return FORMAT_SUFFIX[out_format] if out_format else input_path.suffix.lower()


def output_depth(input_depth: int, suffix: str, requested: int | None) -> int:
    """The bit depth to write: the requested one, else the input's, capped at what the format stores."""
    if requested is not None:
        return requested
    return max(d for d in FORMAT_DEPTHS[suffix] if d <= input_depth)  # every format stores 8


def _orientation(path: Path) -> int:
    """EXIF orientation (1-8) of ``path``, 1 when absent or unreadable (OpenCV's IMREAD_UNCHANGED ignores it)."""
    try:
        from PIL import Image

        with Image.open(path) as image:
            return int(image.getexif().get(0x0112, 1))
    except Exception:  # no Pillow, no EXIF, or a file Pillow cannot parse: keep the stored orientation
        return 1


def _apply_orientation(img: np.ndarray, orientation: int) -> np.ndarray:
    transforms = {
        2: lambda a: a[:, ::-1],
        3: lambda a: a[::-1, ::-1],
        4: lambda a: a[::-1],
        5: lambda a: a.swapaxes(0, 1),
        6: lambda a: np.rot90(a, k=-1),
        7: lambda a: a.swapaxes(0, 1)[::-1, ::-1],
        8: lambda a: np.rot90(a, k=1),
    }
    return np.ascontiguousarray(transforms[orientation](img)) if orientation in transforms else img


def read_image(path: Path) -> np.ndarray:
    """The image at ``path`` as stored: ``(H, W)`` or ``(H, W, C)`` BGR(A), uint8, uint16 or float32."""
    try:
        data = np.fromfile(path, dtype=np.uint8)
    except OSError as err:
        raise ImageError(f"cannot read the file ({err.strerror or err})") from None
    if data.size == 0:
        raise ImageError("the file is empty")
    try:
        img = cv2.imdecode(data, cv2.IMREAD_UNCHANGED)
    except cv2.error as err:
        raise ImageError(f"cannot decode the image ({str(err).strip().splitlines()[-1][:200]})") from None
    if img is None:
        kind = _FORMAT_NAME.get(path.suffix.lower(), "supported")
        raise ImageError(f"not a readable image: the file is truncated, damaged or not a {kind} file")
    if img.dtype not in (np.uint8, np.uint16, np.float32):
        raise ImageError(f"unsupported sample type {img.dtype} (8/16-bit integer or 32-bit float images only)")
    if img.ndim == 3 and img.shape[2] not in (1, 3, 4):
        raise ImageError(f"unsupported channel count {img.shape[2]} (grayscale, RGB or RGBA only)")
    return _apply_orientation(img, _orientation(path))


def bit_depth(img: np.ndarray) -> int:
    return {np.dtype(np.uint8): 8, np.dtype(np.uint16): 16, np.dtype(np.float32): 32}[img.dtype]


def to_unit_float(img: np.ndarray) -> np.ndarray:
    """Samples as float32 in [0, 1]; non-finite float samples are an error for this image."""
    if img.dtype == np.uint8:
        return img.astype(np.float32) / 255.0
    if img.dtype == np.uint16:
        return img.astype(np.float32) / 65535.0
    if not np.isfinite(img).all():
        bad = int((~np.isfinite(img)).sum())
        raise ImageError(f"the float image contains {bad} NaN/Inf sample(s); HERSR needs finite values in [0, 1]")
    return img.astype(np.float32)


def from_unit_float(img: np.ndarray, depth: int) -> np.ndarray:
    """``img`` in [0, 1] (clipped) as ``depth``-bit samples, converted in blocks of rows so that the
    float temporary stays small however large the output is."""
    if depth == 32:
        return np.clip(img, 0.0, 1.0).astype(np.float32, copy=False)
    top = 255.0 if depth == 8 else 65535.0
    out = np.empty(img.shape, np.uint8 if depth == 8 else np.uint16)
    rows = max(1, (16 << 20) // max(1, img[0].nbytes))  # 16 MiB of float rows at a time
    for start in range(0, img.shape[0], rows):
        scaled = np.multiply(img[start : start + rows], top, dtype=np.float32)
        np.clip(scaled, 0.0, top, out=scaled)
        np.rint(scaled, out=scaled)
        out[start : start + rows] = scaled
    return out


def write_image(path: Path, img: np.ndarray) -> None:
    """Encode by ``path``'s suffix and write atomically (temporary file in the folder, then rename)."""
    ok, encoded = cv2.imencode(path.suffix, img)
    if not ok:
        raise ImageError(f"OpenCV could not encode a {img.dtype} image with {img.shape} as {path.suffix}")
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")  # default permissions
    try:
        with open(tmp, "xb") as f:
            f.write(encoded.tobytes())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


# ----------------------------------------------------------------------------------------------
# The network on arrays
# ----------------------------------------------------------------------------------------------


def _load_malloc_trim() -> Callable[[int], int] | None:
    try:
        return ctypes.CDLL(None).malloc_trim  # glibc
    except (AttributeError, OSError):
        return None


_MALLOC_TRIM = _load_malloc_trim()


def release_free_memory() -> None:
    """Hand memory that is free inside the process back to the system (glibc ``malloc_trim``).

    PyTorch's CPU tensors come straight from glibc malloc, which keeps freed memory for reuse; after
    tiles of several sizes (edge tiles are smaller) it holds the free blocks of each, and peak RSS
    grows by hundreds of MiB. Trimming after every tile keeps it at one tile's working set (1024x1024
    at x4, --tile 256: ~200 MiB less) for a few ms of page faults per tile. A no-op elsewhere.
    """
    if _MALLOC_TRIM is not None:
        _MALLOC_TRIM(0)


class Upscaler:
    """``model`` on ``(B, C, H, W)`` CPU float tensors: tiled or whole, on ``device``, under autocast.

    Tiled, only one tile at a time is on ``device`` (:func:`tiled_forward`); ``on_tile`` is called
    after each tile (the progress bar).
    """

    def __init__(self, model: torch.nn.Module, device: torch.device, dtype: torch.dtype | None = None,
                 tile: int = 0, tile_pad: int = 32, compile: bool = False,
                 log: Callable[[str], None] | None = None) -> None:  # fmt: skip
        self.model = model.to(device).eval()
        if device.type == "cpu":
            prepare_cpu_inference(self.model)
        self.device, self.dtype = device, dtype
        self.tile, self.tile_pad = tile, tile_pad
        self.scale = model.upscale
        self.num_in_ch, self.num_out_ch = model.num_in_ch, model.num_out_ch
        self.on_tile: Callable[[], None] | None = None
        self.run = self.model
        if compile:  # one graph for every tile: each is padded to the largest tile shape
            if tile < 1:
                raise ValueError("compile=True needs tile >= 1: the model is compiled for one tile shape.")
            side = tile + 2 * tile_pad
            self.run = StaticShapeForward(self.model, side, side, self.scale, log)

    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        with torch.autocast(self.device.type, dtype=self.dtype or torch.float32, enabled=self.dtype is not None):
            return self.run(x)

    def _after_tile(self) -> None:
        release_free_memory()
        if self.on_tile is not None:
            self.on_tile()

    @torch.no_grad()
    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        if self.tile:
            return tiled_forward(self._forward, x, self.scale, self.tile, self.tile_pad, self.device, self._after_tile)
        out = self._forward(x.to(self.device)).to("cpu", torch.float32)
        self._after_tile()
        return out

    def passes(self, img: np.ndarray, alpha_mode: str) -> int:
        """How many tile (or whole-image) forwards :func:`upscale_array` will make for ``img``."""
        h, w = img.shape[:2]
        per_pass = count_tiles(h, w, self.tile) if self.tile else 1
        alpha_pass = img.ndim == 3 and img.shape[2] == 4 and alpha_mode == "model" and self.num_in_ch != 4
        return per_pass * (2 if alpha_pass else 1)


def _run_planes(upscaler: Upscaler, planes: np.ndarray) -> np.ndarray:
    """``planes: (H, W, C)`` float RGB -> ``(sH, sW, C')`` through the model, adapting channels."""
    c, need = planes.shape[2], upscaler.num_in_ch
    x = torch.from_numpy(np.ascontiguousarray(planes.transpose(2, 0, 1)))[None]
    gray_out = False
    if c == need:
        pass
    elif c == 1 and need == 3:
        x, gray_out = x.expand(-1, 3, -1, -1), True
    elif need == 1 and upscaler.num_out_ch == 1:
        x = x.transpose(0, 1)  # each channel as one image of a batch
    else:
        raise ImageError(f"the model takes {need}-channel input; this image has {c} channel(s)")
    y = upscaler(x.contiguous())
    if need == 1 and c > 1:
        y = y.transpose(0, 1)
    elif gray_out and y.shape[1] == 3:
        y = y.mean(1, keepdim=True)
    return y[0].permute(1, 2, 0).numpy()


def upscale_array(upscaler: Upscaler, img: np.ndarray, alpha_mode: str = "model") -> np.ndarray:
    """Upscale ``img`` as :func:`read_image` returns it; float32 result in [0, 1], same layout (BGR[A])."""
    unit = to_unit_float(img)
    if unit.ndim == 2:
        unit = unit[:, :, None]
    if unit.shape[2] == 4 and upscaler.num_in_ch == 4:  # an RGBA model takes the alpha itself
        out = _run_planes(upscaler, unit[:, :, [2, 1, 0, 3]])
        return np.ascontiguousarray(np.clip(out[:, :, [2, 1, 0, 3]] if out.shape[2] == 4 else out, 0.0, 1.0))
    alpha = unit[:, :, 3:] if unit.shape[2] == 4 else None
    colour = unit[:, :, :3] if alpha is not None else unit
    if colour.shape[2] == 3:
        colour = colour[:, :, ::-1]  # BGR -> RGB
    out = _run_planes(upscaler, colour)
    if out.shape[2] == 3:
        out = np.ascontiguousarray(out[:, :, ::-1])  # RGB -> BGR
    if alpha is not None:
        out = np.concatenate((out, _upscale_alpha(upscaler, alpha, out.shape[:2], alpha_mode)), axis=2)
    out = np.clip(out, 0.0, 1.0, out=out if out.flags.writeable and out.flags.c_contiguous else None)
    return out[:, :, 0] if out.shape[2] == 1 else np.ascontiguousarray(out)


def _upscale_alpha(upscaler: Upscaler, alpha: np.ndarray, size: tuple[int, int], mode: str) -> np.ndarray:
    h, w = size
    if alpha.min() == alpha.max():
        return np.full((h, w, 1), alpha.flat[0], dtype=np.float32)
    if mode == "bicubic":
        return cv2.resize(alpha[:, :, 0], (w, h), interpolation=cv2.INTER_CUBIC)[:, :, None]
    out = _run_planes(upscaler, alpha)
    return out.mean(2, keepdims=True) if out.shape[2] > 1 else out


def is_out_of_memory(err: BaseException) -> bool:
    if isinstance(err, MemoryError) or type(err).__name__ == "OutOfMemoryError":
        return True
    text = str(err)
    return isinstance(err, RuntimeError) and any(
        s in text for s in ("out of memory", "can't allocate memory", "not enough memory", "Failed to allocate")
    )


# ----------------------------------------------------------------------------------------------
# The command
# ----------------------------------------------------------------------------------------------


def plan(source: Path, out_dir: Path, options: UpscaleOptions) -> list[tuple[Path, Path]]:
    """``(input, output)`` pairs, after every check that needs no image decoding (see ``SetupError``)."""
    if not source.exists():
        raise SetupError(f"INPUT {str(source)!r} does not exist.")
    if out_dir.exists() and not out_dir.is_dir():
        raise SetupError(f"OUTPUT {str(out_dir)!r} is a file; give a folder (it is created if needed).")
    if options.out_format is not None and options.out_format not in FORMAT_SUFFIX:
        raise SetupError(f"--format {options.out_format!r}: choose one of png, jpg, webp, tiff, bmp.")
    if options.bit_depth not in (None, 8, 16, 32):
        raise SetupError(f"--bit-depth {options.bit_depth}: choose 8, 16 or 32 (float, TIFF only).")
    if options.alpha not in ("model", "bicubic"):
        raise SetupError(f"--alpha {options.alpha!r}: choose model or bicubic.")
    if options.tile < 0 or options.tile_pad < 0:
        raise SetupError(f"--tile and --tile-pad must be >= 0, got {options.tile} and {options.tile_pad}.")
    if options.compile and options.tile < 1:
        raise SetupError("--compile needs --tile N: the model is compiled for one tile shape (e.g. --tile 256).")
    if source.is_dir() and out_dir.resolve() == source.resolve():
        raise SetupError(f"OUTPUT is the INPUT folder {str(source)!r}; choose another folder (inputs are never "
                         "modified).")  # fmt: skip
    images = find_images(source, options.recursive, exclude=out_dir.resolve() if source.is_dir() else None)
    if not images:
        hint = "; add --recursive to search subfolders" if not options.recursive and any(
            p.is_dir() for p in source.iterdir()) else ""  # fmt: skip
        raise SetupError(f"no images ({', '.join(IMAGE_SUFFIXES)}) in {str(source)!r}{hint}.")
    pairs = []
    inputs = {path.resolve() for path, _ in images}
    for path, rel in images:
        suffix = output_suffix(path, options.out_format)
        target = out_dir / rel.with_suffix(suffix)
        if target.resolve() in inputs:
            raise SetupError(f"OUTPUT {str(out_dir)!r} would overwrite the input {str(path)!r}; choose another folder "
                             "(inputs are never modified).")  # fmt: skip
        if options.bit_depth is not None and options.bit_depth not in FORMAT_DEPTHS[suffix]:
            depths = "/".join(map(str, FORMAT_DEPTHS[suffix]))
            raise SetupError(f"--bit-depth {options.bit_depth}: {_FORMAT_NAME[suffix]} ({path.name}) stores {depths}-bit "
                             "only; add --format png (8/16) or tiff (8/16/32).")  # fmt: skip
        pairs.append((path, target))
    return pairs


def upscale_files(
    pairs: list[tuple[Path, Path]],
    upscaler: Upscaler,
    options: UpscaleOptions,
    log: Callable[[str], None] | None = None,
) -> Summary:
    """Upscale every ``(input, output)`` pair; failures are collected, never raised."""
    from tqdm import tqdm

    summary = Summary()
    disable = not options.progress
    bar = tqdm(total=len(pairs), unit="img", desc="images", disable=disable, file=sys.stderr, dynamic_ncols=True)
    log = log or (lambda message: tqdm.write(message, file=sys.stderr))
    try:
        for source, target in pairs:
            bar.set_postfix_str(source.name, refresh=False)
            if target.exists() and not options.overwrite:
                summary.skipped.append(target)
                bar.update()
                continue
            img = None
            try:
                img = read_image(source)
                if img.ndim == 3 and img.shape[2] == 4 and target.suffix.lower() in (".jpg", ".jpeg"):
                    raise ImageError("JPEG cannot store the alpha channel; use --format png, webp or tiff")
                tiles = tqdm(total=upscaler.passes(img, options.alpha), unit="tile", desc="tiles", leave=False,
                             disable=disable or not upscaler.tile, file=sys.stderr, dynamic_ncols=True)  # fmt: skip
                upscaler.on_tile = tiles.update
                try:
                    out = upscale_array(upscaler, img, options.alpha)
                finally:
                    tiles.close()
                    upscaler.on_tile = None
                depth = output_depth(bit_depth(img), target.suffix.lower(), options.bit_depth)
                write_image(target, from_unit_float(out, depth))
                summary.written.append(target)
            except ImageError as err:
                summary.failed.append((source, str(err)))
                log(f"failed: {source}: {err}")
            except Exception as err:  # one image must not stop the others; the reason is reported
                if is_out_of_memory(err):
                    if upscaler.device.type == "cuda":
                        torch.cuda.empty_cache()
                    size = f"a {img.shape[1]}x{img.shape[0]} image" if img is not None else "this image"
                    hint = ("use a smaller --tile" if upscaler.tile else
                            "use tiling, e.g. --tile 256, so that only one tile at a time is in memory")  # fmt: skip
                    reason = f"out of memory on {upscaler.device.type} for {size}; {hint}"
                else:
                    reason = f"{type(err).__name__}: {(str(err).strip().splitlines() or [''])[0][:300]}"
                summary.failed.append((source, reason))
                log(f"failed: {source}: {reason}")
            bar.update()
    finally:
        bar.close()
    return summary


def run_upscale(source: Path, out_dir: Path, model_path: Path, options: UpscaleOptions,
                log: Callable[[str], None] | None = None) -> Summary:  # fmt: skip
    """Everything ``hersr upscale`` does: check, load the model, process, return the summary."""
    from hersr_arch.loading import CheckpointError, load_hersr

    pairs = plan(source, out_dir, options)
    device = resolve_device(options.device)
    overrides = {} if options.noise_strength is None else {"noise_strength": float(options.noise_strength)}
    try:
        model = load_hersr(model_path, **overrides).switch_to_deploy().to(device)  # same outputs, faster
    except CheckpointError as err:
        raise SetupError(str(err)) from None
    dtype = resolve_precision(options.precision, device, model)
    out_dir.mkdir(parents=True, exist_ok=True)
    logging = cv2.utils.logging
    level = logging.getLogLevel()
    logging.setLogLevel(logging.LOG_LEVEL_SILENT)  # OpenCV's own line per damaged file; ours is enough
    try:
        if log is None:
            from tqdm import tqdm

            log = lambda message: tqdm.write(message, file=sys.stderr)  # noqa: E731  (above the progress bars)
        upscaler = Upscaler(model, device, dtype, options.tile, options.tile_pad, options.compile, log)
        return upscale_files(pairs, upscaler, options, log)
    finally:
        logging.setLogLevel(level)
