"""``hersr upscale``: formats, bit depths, channels, tiling without seams, and robustness to bad input."""

import os
import subprocess
import sys

import cv2
import numpy as np
import pytest
import torch

from hersr_arch.cli.hersr_cli import main
from hersr_arch.loading import load_hersr
from hersr_arch.tools import upscale as up
from hersr_arch.tools.upscale import SetupError, UpscaleOptions, Upscaler, upscale_array
from tests.helpers import cli_env, file_hashes
from tests.networks import tiny_hersr, train_steps

SCALE = 2


def smooth_image(h: int, w: int, channels: int = 3, seed: int = 0) -> np.ndarray:
    """A smooth random uint8 image (noise upsampled), ``(h, w)`` or ``(h, w, channels)``."""
    rng = np.random.default_rng(seed)
    coarse = rng.integers(0, 256, (max(2, h // 6), max(2, w // 6), channels), dtype=np.uint8)
    img = cv2.resize(coarse, (w, h), interpolation=cv2.INTER_CUBIC)
    return img if channels > 1 else img.reshape(h, w)


@pytest.fixture(scope="module")
def model_file(tmp_path_factory):
    """A tiny x2 HERSR trained for a few steps (non-trivial weights, noise weights non-zero), as BasicSR saves it."""
    torch.manual_seed(0)
    model = train_steps(tiny_hersr(upscale=SCALE), steps=5, size=32).eval()
    path = tmp_path_factory.mktemp("ckpt") / "net_g_5.pth"
    torch.save({"params": model.state_dict(), "params_ema": model.state_dict()}, path)
    return path


@pytest.fixture(scope="module")
def model(model_file):
    return load_hersr(model_file)


def upscale_cli(*args) -> int:
    return main(["upscale", *map(str, args), "--no-progress"])


def expected_rgb8(model, img_bgr: np.ndarray) -> np.ndarray:
    """What the network gives for an 8-bit BGR image, computed directly: RGB in [0, 1] in, BGR uint8 out."""
    x = torch.from_numpy(img_bgr[:, :, ::-1].astype(np.float32) / 255).permute(2, 0, 1)[None]
    with torch.no_grad():
        y = model(x)[0].clamp(0, 1).permute(1, 2, 0).numpy()[:, :, ::-1]
    return np.rint(y * 255).astype(np.uint8)


@pytest.mark.numerics
def test_formats_bit_depths_and_channels(model_file, model, tmp_path):
    src, out = tmp_path / "in", tmp_path / "out"
    (src / "sub").mkdir(parents=True)
    rgb = smooth_image(30, 40)
    alpha = np.zeros((30, 40), np.uint8)
    alpha[:, 20:] = 255
    cv2.imwrite(str(src / "rgb.png"), rgb)
    cv2.imwrite(str(src / "photo.jpg"), rgb)
    cv2.imwrite(str(src / "web.webp"), rgb)
    cv2.imwrite(str(src / "deep.png"), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "float.tif"), rgb.astype(np.float32) / 255)
    cv2.imwrite(str(src / "gray.bmp"), rgb[:, :, 1])
    cv2.imwrite(str(src / "gray16.png"), rgb[:, :, 1].astype(np.uint16) * 257)
    cv2.imwrite(str(src / "rgba.png"), np.dstack([rgb, alpha]))
    cv2.imwrite(str(src / "sub" / "nested.png"), rgb)
    before = file_hashes(src)

    assert upscale_cli(src, out, "--model", model_file) == 0
    assert file_hashes(src) == before  # inputs untouched
    assert not (out / "sub").exists()  # no --recursive
    shape = (30 * SCALE, 40 * SCALE)
    expected = {"rgb.png": (3, np.uint8), "photo.jpg": (3, np.uint8), "web.webp": (3, np.uint8),
                "deep.png": (3, np.uint16), "float.tif": (3, np.float32), "gray.bmp": (1, np.uint8),
                "gray16.png": (1, np.uint16), "rgba.png": (4, np.uint8)}  # fmt: skip
    result = {}
    for name, (channels, dtype) in expected.items():
        img = cv2.imread(str(out / name), cv2.IMREAD_UNCHANGED)
        assert img.shape == (shape if channels == 1 else (*shape, channels)), name
        assert img.dtype == dtype, name
        result[name] = img

    # RGB order and [0, 1] scaling as in training: the 8-bit output is the network's output exactly.
    direct = expected_rgb8(model, rgb)
    assert np.abs(result["rgb.png"].astype(int) - direct).max() <= 1
    # 16-bit and float inputs holding the same picture give the same result, at their own depth.
    assert np.abs(result["deep.png"] / 257.0 - direct).max() <= 1.01
    assert np.abs(result["float.tif"] * 255.0 - direct).max() <= 1.01
    # Grayscale: replicated into the 3-channel model, the channel mean comes back.
    x = torch.from_numpy(rgb[:, :, 1].astype(np.float32) / 255).expand(1, 3, -1, -1)
    with torch.no_grad():
        gray = np.rint(model(x)[0].mean(0).clamp(0, 1).numpy() * 255)
    assert np.abs(result["gray.bmp"] - gray).max() <= 1
    # RGBA: colour exactly as without alpha; the alpha edge comes back where it was (model-upscaled).
    assert np.array_equal(result["rgba.png"][:, :, :3], result["rgb.png"])
    out_alpha = result["rgba.png"][:, :, 3].astype(int)
    assert out_alpha[:, : 18 * SCALE].max() <= 12 and out_alpha[:, 22 * SCALE :].min() >= 243


def test_recursive_single_file_format_and_depth_options(model_file, tmp_path):
    src = tmp_path / "in"
    (src / "a" / "b").mkdir(parents=True)
    rgb = smooth_image(20, 24)
    cv2.imwrite(str(src / "top.png"), rgb.astype(np.uint16) * 257)
    cv2.imwrite(str(src / "a" / "b" / "deep.jpg"), rgb)

    assert upscale_cli(src, tmp_path / "rec", "--model", model_file, "--recursive") == 0
    assert (tmp_path / "rec" / "a" / "b" / "deep.jpg").is_file() and (tmp_path / "rec" / "top.png").is_file()
    # OUTPUT inside INPUT: earlier outputs are not taken as inputs.
    for _ in range(2):
        assert upscale_cli(src, src / "up", "--model", model_file, "--recursive", "--overwrite") == 0
    assert sorted(str(p.relative_to(src / "up")) for p in (src / "up").rglob("*.*")) == ["a/b/deep.jpg", "top.png"]

    # A single file; --format converts (16-bit PNG -> JPEG is 8-bit), --bit-depth overrides.
    assert upscale_cli(src / "top.png", tmp_path / "one", "--model", model_file, "--format", "jpg") == 0
    assert cv2.imread(str(tmp_path / "one" / "top.jpg"), cv2.IMREAD_UNCHANGED).dtype == np.uint8
    assert upscale_cli(src / "a" / "b" / "deep.jpg", tmp_path / "d16", "--model", model_file, "--format", "png",
                       "--bit-depth", "16") == 0  # fmt: skip
    assert cv2.imread(str(tmp_path / "d16" / "deep.png"), cv2.IMREAD_UNCHANGED).dtype == np.uint16
    assert upscale_cli(src / "top.png", tmp_path / "f32", "--model", model_file, "--format", "tiff",
                       "--bit-depth", "32") == 0  # fmt: skip
    assert cv2.imread(str(tmp_path / "f32" / "top.tif"), cv2.IMREAD_UNCHANGED).dtype == np.float32


def test_impossible_format_choices_are_refused_up_front(model_file, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "photo.jpg"), smooth_image(20, 24))
    cv2.imwrite(str(src / "rgba.png"), smooth_image(20, 24, 4))
    assert upscale_cli(src, tmp_path / "out", "--model", model_file, "--bit-depth", "16") == 1
    assert "JPEG (photo.jpg) stores 8-bit only" in capsys.readouterr().err
    assert not (tmp_path / "out").exists()
    # RGBA into JPEG: that file fails with the reason, the others are written.
    assert upscale_cli(src, tmp_path / "out", "--model", model_file, "--format", "jpg") == 1
    assert "JPEG cannot store the alpha channel" in capsys.readouterr().err
    assert sorted(p.name for p in (tmp_path / "out").iterdir()) == ["photo.jpg"]


def test_exif_orientation_is_applied(model_file, tmp_path):
    from PIL import Image

    src = tmp_path / "in"
    src.mkdir()
    exif = Image.Exif()
    exif[0x0112] = 6  # stored sideways: rotate 90 degrees clockwise to display
    Image.fromarray(smooth_image(20, 32)).save(src / "phone.jpg", exif=exif)
    assert upscale_cli(src, tmp_path / "out", "--model", model_file) == 0
    assert cv2.imread(str(tmp_path / "out" / "phone.jpg")).shape[:2] == (32 * SCALE, 20 * SCALE)


def test_existing_outputs_are_kept_unless_overwrite(model_file, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    out.mkdir()
    cv2.imwrite(str(src / "a.png"), smooth_image(16, 16))
    cv2.imwrite(str(src / "b.png"), smooth_image(16, 16, seed=1))
    (out / "a.png").write_bytes(b"keep me")
    assert upscale_cli(src, out, "--model", model_file) == 0
    assert (out / "a.png").read_bytes() == b"keep me"
    assert "1 written, 1 skipped, 0 failed" in capsys.readouterr().err
    assert upscale_cli(src, out, "--model", model_file, "--overwrite") == 0
    assert cv2.imread(str(out / "a.png")).shape == (32, 32, 3)
    assert "2 written, 0 skipped" in capsys.readouterr().err


def test_bad_files_are_reported_and_skipped(model_file, tmp_path, capsys):
    src, out = tmp_path / "in", tmp_path / "out"
    src.mkdir()
    good = smooth_image(24, 20)
    cv2.imwrite(str(src / "good.png"), good)
    png = cv2.imencode(".png", good)[1].tobytes()
    jpg = cv2.imencode(".jpg", good)[1].tobytes()
    (src / "cut.png").write_bytes(png[: len(png) // 2])
    (src / "cut.jpg").write_bytes(jpg[: len(jpg) - 40])
    (src / "text.webp").write_bytes(b"not an image at all")
    (src / "empty.bmp").write_bytes(b"")
    for name, value in (("nan.tif", np.nan), ("inf.tif", np.inf)):
        f = good.astype(np.float32) / 255
        f[3, 4, 1] = value
        cv2.imwrite(str(src / name), f)
    before = file_hashes(src)

    assert upscale_cli(src, out, "--model", model_file) == 1
    err = capsys.readouterr().err
    assert "1 written, 0 skipped, 6 failed" in err
    for name in ("cut.png", "cut.jpg", "text.webp"):
        assert f"failed: {src / name}: not a readable image: the file is truncated, damaged" in err
    assert f"failed: {src / 'empty.bmp'}: the file is empty" in err
    assert f"failed: {src / 'nan.tif'}: the float image contains 1 NaN/Inf sample(s)" in err
    assert f"failed: {src / 'inf.tif'}: the float image contains 1 NaN/Inf" in err
    assert [p.name for p in out.iterdir()] == ["good.png"]
    assert file_hashes(src) == before


def test_setup_errors_are_one_line_and_write_nothing(model_file, tmp_path, capsys):
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), smooth_image(16, 16))
    before = file_hashes(src)
    cases = [
        ((src, src, "--model", model_file), "OUTPUT is the INPUT folder"),
        ((src / "a.png", src, "--model", model_file), "would overwrite the input"),
        ((tmp_path / "missing", tmp_path / "o1", "--model", model_file), "does not exist"),
        ((src, tmp_path / "o2", "--model", tmp_path / "nope.pth"), "does not exist"),
        ((tmp_path / "o3", tmp_path / "o4", "--model", model_file), "does not exist"),
    ]
    if not torch.cuda.is_available():
        cases.append(((src, tmp_path / "o5", "--model", model_file, "--device", "cuda"), "no CUDA device"))
    for args, message in cases:
        assert upscale_cli(*args) == 1
        err = capsys.readouterr().err
        assert message in err and err.startswith("hersr upscale: error:") and err.count("\n") == 1, err
    assert file_hashes(src) == before
    assert not any((tmp_path / f"o{i}").exists() for i in range(1, 6))


def test_precision_on_this_machine_and_refusals(model, monkeypatch):
    img = smooth_image(20, 28)
    cpu = torch.device("cpu")
    full = upscale_array(Upscaler(model, cpu), img)
    for name in ("bf16", "fp16"):  # both run on the CPU in torch 2.14 (autocast)
        dtype = up.resolve_precision(name, cpu, model)
        low = upscale_array(Upscaler(model, cpu, dtype), img)
        assert np.abs(low - full).max() <= 2e-2, name
    monkeypatch.setattr(torch.cuda, "is_bf16_supported", lambda *a, **k: False)
    monkeypatch.setattr(torch.cuda, "get_device_name", lambda *a, **k: "Old GPU")
    with pytest.raises(SetupError, match="Old GPU does not support bfloat16"):
        up.resolve_precision("bf16", torch.device("cuda"))

    def autocast_fails(*args, **kwargs):
        raise RuntimeError("CPU autocast does not support Half")

    monkeypatch.setattr(torch, "autocast", autocast_fails)
    with pytest.raises(SetupError, match="--precision fp16 does not work on cpu .*CPU autocast does not support Half.*use fp32"):
        up.resolve_precision("fp16", cpu, model)


def test_noise_strength_and_checkpoint_forms(model_file, model, tmp_path):
    """Arch and scale come from any checkpoint form; --noise-strength and --precision reach the model."""
    from safetensors.torch import save_file

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), smooth_image(24, 20))
    deployed = load_hersr(model_file).switch_to_deploy()
    save_file({k: v.contiguous() for k, v in deployed.state_dict().items()}, tmp_path / "deployed.safetensors")
    runs = {"pth": (model_file,), "safetensors": (tmp_path / "deployed.safetensors",),
            "no_noise": (model_file, "--noise-strength", "0"), "bf16": (model_file, "--precision", "bf16")}  # fmt: skip
    outputs = {}
    for name, (ckpt, *extra) in runs.items():
        assert upscale_cli(src, tmp_path / name, "--model", ckpt, *extra) == 0
        outputs[name] = cv2.imread(str(tmp_path / name / "a.png")).astype(int)
    assert outputs["pth"].shape == (48, 40, 3)
    assert np.abs(outputs["pth"] - outputs["safetensors"]).max() <= 1
    assert np.abs(outputs["pth"] - outputs["bf16"]).max() <= 6  # 2e-2 of the range
    assert np.abs(outputs["pth"] - outputs["no_noise"]).max() >= 1  # the trained noise weights matter
    quiet = expected_rgb8(load_hersr(model_file, noise_strength=0.0), smooth_image(24, 20))
    assert np.abs(outputs["no_noise"] - quiet).max() <= 1


@pytest.mark.numerics
@pytest.mark.parametrize("model_in,image", [(3, "rgba"), (1, "rgb"), (1, "gray"), (4, "rgba")])
def test_channel_adaptation(model_in, image):
    net = tiny_hersr(upscale=2, num_in_ch=model_in, num_out_ch=model_in).eval()
    img = {"rgba": smooth_image(12, 10, 4), "rgb": smooth_image(12, 10), "gray": smooth_image(12, 10, 1)}[image]
    out = upscale_array(Upscaler(net, torch.device("cpu")), img)
    assert out.shape == (24, 20, *img.shape[2:])
    # An untrained HERSR is bicubic interpolation: every plane, alpha included, comes back interpolated.
    reference = cv2.resize(img.astype(np.float32) / 255, (20, 24), interpolation=cv2.INTER_CUBIC)
    assert np.abs(out - np.clip(reference, 0, 1)).mean() < 0.02


@pytest.mark.numerics
def test_tiled_matches_whole_image_without_seams(model, record_property):
    """Tiled inference: no seam (error along tile borders no larger than elsewhere), bounded overall.

    The model is trained for a few steps, so every branch (and the texture noise) is active. Tiles
    and the whole image differ a little everywhere: GroupNorm and the noise map see the tile, not the
    image. A seam would concentrate the difference on the tile borders; the same measure with
    un-blended tiles (``tile_pad=0``) shows what that looks like and must fail the criterion.
    """
    img = smooth_image(64, 72)
    cpu = torch.device("cpu")
    seen = []
    whole = upscale_array(Upscaler(model, cpu), img)
    tiler = Upscaler(model, cpu, tile=24, tile_pad=8)
    calls = []
    tiler.on_tile = lambda: calls.append(1)
    original = tiler.model.forward
    tiler.model.forward = lambda x: (seen.append(tuple(x.shape[-2:])), original(x))[1]
    try:
        tiled = upscale_array(tiler, img)
    finally:
        del tiler.model.forward
    assert len(calls) == 9 and max(h * w for h, w in seen) <= 40 * 40  # one padded tile at a time, never the image

    def seam_ratio(out):
        err = np.abs(out - whole).mean(2)
        border = np.zeros_like(err, dtype=bool)
        for edge in (24 * SCALE, 48 * SCALE):  # tile edges, in output pixels
            border[edge - 2 : edge + 2, :] = True
            border[:, edge - 2 : edge + 2] = True
        return err[border].mean() / err[~border].mean(), err

    ratio, err = seam_ratio(tiled)
    record_property("tile_seam_ratio", round(float(ratio), 3))
    record_property("tile_mean_abs_diff", float(err.mean()))
    record_property("tile_max_abs_diff", float(err.max()))
    print(f"\ntiled vs whole: mean |diff| {err.mean():.2e}, max {err.max():.2e}, border/elsewhere {ratio:.2f}")
    assert ratio <= 1.5
    assert err.mean() <= 4e-3 and err.max() <= 3e-2  # about 1/255 on average, 8/255 at worst
    hard_ratio, _ = seam_ratio(upscale_array(Upscaler(model, cpu, tile=24, tile_pad=0), img))
    record_property("tile_seam_ratio_unblended", round(float(hard_ratio), 3))
    print(f"un-blended tiles (tile_pad=0): border/elsewhere {hard_ratio:.2f}")
    assert hard_ratio > 2.0  # the criterion does see seams


def test_out_of_memory_suggests_tiling(model, tmp_path):
    """An allocation failure is caught per image with a message that suggests --tile; tiling then works."""

    class Greedy(torch.nn.Module):
        """The model, but a real allocator failure for inputs above 32x32 pixels."""

        def __init__(self, net):
            super().__init__()
            self.net, self.upscale, self.num_in_ch, self.num_out_ch = net, net.upscale, net.num_in_ch, net.num_out_ch

        def forward(self, x):
            if x.shape[-2] * x.shape[-1] > 32 * 32:
                torch.empty(1 << 50, dtype=torch.uint8)  # DefaultCPUAllocator: can't allocate memory
            return self.net(x)

    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "big.png"), smooth_image(40, 48))
    cv2.imwrite(str(src / "small.png"), smooth_image(20, 20))
    options = UpscaleOptions(progress=False)
    pairs = up.plan(src, tmp_path / "out", options)
    summary = up.upscale_files(pairs, Upscaler(Greedy(model), torch.device("cpu")), options, log=lambda m: None)
    assert [p.name for p in summary.written] == ["small.png"]
    (path, reason), = summary.failed
    assert path.name == "big.png" and "out of memory on cpu for a 48x40 image; use tiling, e.g. --tile" in reason
    tiled = Upscaler(Greedy(model), torch.device("cpu"), tile=16, tile_pad=8)
    assert not up.upscale_files(pairs, tiled, options, log=lambda m: None).failed


def test_command_line_entry_point_with_progress(model_file, tmp_path):
    """The installed entry point end to end (own process): tiles, progress bars, summary, exit status."""
    src = tmp_path / "in"
    src.mkdir()
    cv2.imwrite(str(src / "a.png"), smooth_image(40, 36))
    (src / "b.png").write_bytes(b"\x89PNG broken")
    proc = subprocess.run(
        [sys.executable, "-m", "hersr_arch.cli.hersr_cli", "upscale", str(src), str(tmp_path / "out"), "--model",
         str(model_file), "--tile", "16", "--tile-pad", "8"],
        capture_output=True, text=True, env=cli_env(), timeout=300, cwd=tmp_path,
    )  # fmt: skip
    assert proc.returncode == 1, proc.stderr
    assert "images: 100%" in proc.stderr and "tiles" in proc.stderr
    assert "1 written, 0 skipped, 1 failed" in proc.stderr
    assert cv2.imread(str(tmp_path / "out" / "a.png")).shape == (80, 72, 3)
    assert os.stat(tmp_path / "out" / "a.png").st_mode & 0o044  # readable like any file the user writes


def test_free_memory_is_released_after_every_tile(model, monkeypatch):
    """Tiles of several sizes leave glibc holding the free blocks of each (peak RSS grows tile after tile);
    the upscaler trims after every tile."""
    released = []
    monkeypatch.setattr(up, "release_free_memory", lambda: released.append(1))
    upscale_array(Upscaler(model, torch.device("cpu"), tile=24, tile_pad=8), smooth_image(64, 72))
    assert len(released) == 9
    if sys.platform.startswith("linux"):
        assert up._MALLOC_TRIM is not None  # glibc: the trim is real here


@pytest.mark.numerics
@pytest.mark.parametrize("depth", [8, 16])
def test_large_outputs_quantize_in_blocks_to_the_same_samples(depth):
    """``from_unit_float`` converts blocks of rows (a bounded float temporary): same samples as one pass."""
    img = np.random.default_rng(0).uniform(-0.1, 1.1, (1500, 1400, 3)).astype(np.float32)  # > one 16 MiB block
    top = 255.0 if depth == 8 else 65535.0
    expected = np.rint(np.clip(img * np.float32(top), 0, top)).astype(np.uint8 if depth == 8 else np.uint16)
    np.testing.assert_array_equal(up.from_unit_float(img, depth), expected)


@pytest.mark.skipif(not os.path.exists("/sys/kernel/mm/transparent_hugepage/enabled")
                    or "[never]" in open("/sys/kernel/mm/transparent_hugepage/enabled").read(),
                    reason="transparent huge pages are off on this machine")  # fmt: skip
@pytest.mark.parametrize(("env", "huge"), [({}, True), ({"THP_MEM_ALLOC_ENABLE": "0"}, False)])
def test_commands_turn_on_huge_pages_for_large_tensors(env, huge):
    """Importing the commands' package turns on PyTorch's huge-page allocation (unless the user set it):
    a 42 MiB tensor then costs a few hundred page faults instead of ~10,800 (4 KiB each), which made
    time grow faster than pixels. It must take effect, i.e. come before torch's first allocation."""
    code = (
        "import resource, torch\n"
        "import hersr_arch.cli.hersr_cli\n"
        "x = torch.rand(1, 48, 360, 640)\n"
        "before = resource.getrusage(resource.RUSAGE_SELF).ru_minflt\n"
        "y = x * 2\n"
        "print(resource.getrusage(resource.RUSAGE_SELF).ru_minflt - before)\n"
    )
    environment = {k: v for k, v in cli_env().items() if k != "THP_MEM_ALLOC_ENABLE"} | env
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=environment, timeout=300)
    assert result.returncode == 0, result.stderr[-2000:]
    faults = int(result.stdout.split()[-1])
    assert (faults < 3000) if huge else (faults > 8000), faults
