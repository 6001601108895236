"""HERSRDegradationDataset: registration, shapes, seeding, each degradation, option errors."""

from pathlib import Path

import cv2
import numpy as np
import pytest
import torch

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()  # before basicsr is imported

from basicsr.data import build_dataset  # noqa: E402
from basicsr.data.degradations import bivariate_Gaussian  # noqa: E402
from basicsr.utils.registry import DATASET_REGISTRY  # noqa: E402

from hersr_arch.data.degradation_dataset import HERSRDegradationDataset  # noqa: E402
from hersr_arch.data.prepare import create_lmdb  # noqa: E402


def _textured(h: int, w: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    small = rng.random((h // 4, w // 4, 3)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC)
    return np.clip(np.round((img + 0.03 * rng.standard_normal(img.shape)) * 255), 0, 255).astype(np.uint8)


@pytest.fixture
def gt_dir(tmp_path) -> Path:
    """Three GT images: two textured (66x83 is not a multiple of 4) and a flat mid-gray one."""
    folder = tmp_path / "GT"
    folder.mkdir()
    cv2.imwrite(str(folder / "a.png"), _textured(66, 83, seed=0))
    cv2.imwrite(str(folder / "b.png"), _textured(96, 96, seed=1))
    cv2.imwrite(str(folder / "c_gray.png"), np.full((128, 128, 3), 128, np.uint8))
    (folder / "notes.txt").write_text("not an image")
    return folder


def _opt(gt_dir: Path, **kwargs) -> dict:
    opt = {"name": "deg", "type": "HERSRDegradationDataset", "dataroot_gt": str(gt_dir),
           "io_backend": {"type": "disk"}, "phase": "val", "scale": 1}
    opt.update(kwargs)
    return opt


def _bgr_u8(tensor: torch.Tensor) -> np.ndarray:
    return np.round(tensor.numpy().transpose(1, 2, 0)[..., ::-1] * 255).astype(np.uint8)


def test_registered_and_built_by_basicsr(gt_dir):
    assert DATASET_REGISTRY.get("HERSRDegradationDataset") is HERSRDegradationDataset
    ds = build_dataset(_opt(gt_dir))
    assert isinstance(ds, HERSRDegradationDataset) and len(ds) == 3
    sample = ds[0]
    assert set(sample) == {"lq", "gt", "lq_path", "gt_path"}
    assert sample["gt_path"] == sample["lq_path"] == str(gt_dir / "a.png")
    assert sample["lq"].dtype == torch.float32 and 0 <= sample["lq"].min() and sample["lq"].max() <= 1


@pytest.mark.parametrize("scale", [1, 4])
def test_shapes_train_and_val(gt_dir, scale):
    train = build_dataset(_opt(gt_dir, phase="train", scale=scale, gt_size=48))
    sample = train[1]
    assert sample["gt"].shape == (3, 48, 48) and sample["lq"].shape == (3, 48 // scale, 48 // scale)
    val = build_dataset(_opt(gt_dir, scale=scale))
    sample = val[0]  # 66x83: mod-cropped to the scale
    h, w = 66 // scale * scale, 83 // scale * scale
    assert sample["gt"].shape == (3, h, w) and sample["lq"].shape == (3, h // scale, w // scale)


def test_gt_is_the_rgb_image(gt_dir):
    sample = build_dataset(_opt(gt_dir, scale=4))[1]
    np.testing.assert_array_equal(_bgr_u8(sample["gt"]), cv2.imread(str(gt_dir / "b.png")))


def test_validation_is_deterministic_by_index(gt_dir):
    (gt_dir / "d.png").write_bytes((gt_dir / "b.png").read_bytes())  # same image at index 1 and 3
    first, second = build_dataset(_opt(gt_dir, scale=2)), build_dataset(_opt(gt_dir, scale=2))
    for i in range(len(first)):
        assert torch.equal(first[i]["lq"], second[i]["lq"])
        assert torch.equal(first[i]["lq"], first[i]["lq"])
    assert not torch.equal(first[1]["lq"], first[3]["lq"])  # seeded by index, not by content
    reseeded = build_dataset(_opt(gt_dir, scale=2, seed=7))
    assert not torch.equal(first[1]["lq"], reseeded[1]["lq"])


def test_training_is_random_each_call(gt_dir):
    ds = build_dataset(_opt(gt_dir, phase="train", scale=2, gt_size=64, use_hflip=False, use_rot=False))
    draws = [ds[1]["lq"] for _ in range(4)]
    assert any(not torch.equal(draws[0], d) for d in draws[1:])
    np.random.seed(3)
    a = ds[1]
    np.random.seed(3)
    b = ds[1]
    assert torch.equal(a["lq"], b["lq"]) and torch.equal(a["gt"], b["gt"])  # BasicSR's seeding applies


def test_fixed_sigma_gaussian_noise(gt_dir):
    opt = _opt(gt_dir, degradations=["noise"], gaussian_noise_prob=1, gray_noise_prob=0, noise_range=[25, 25])
    sample = build_dataset(opt)[2]  # flat gray 128: no clipping
    noise = (sample["lq"] - sample["gt"]).numpy() * 255
    assert abs(noise.std() - 25) < 0.3 and abs(noise.mean()) < 0.3
    assert np.allclose(sample["lq"].numpy() * 255, np.round(sample["lq"].numpy() * 255), atol=1e-3)  # 8-bit
    assert abs(np.corrcoef(noise[0].ravel(), noise[1].ravel())[0, 1]) < 0.1  # colour noise
    gray = build_dataset(dict(opt, gray_noise_prob=1))[2]
    gray_noise = (gray["lq"] - gray["gt"]).numpy()
    np.testing.assert_allclose(gray_noise[0], gray_noise[1], atol=1e-6)
    raw = build_dataset(dict(opt, quantize_lq=False))[2]
    raw_noise = (raw["lq"] - raw["gt"]).numpy() * 255
    assert abs(raw_noise.std() - 25) < 0.3 and not np.allclose(raw_noise, np.round(raw_noise), atol=1e-3)


def test_poisson_noise(gt_dir):
    opt = _opt(gt_dir, degradations=["noise"], gaussian_noise_prob=0, poisson_scale_range=[2, 2])
    sample = build_dataset(opt)[2]  # flat gray 0.5: std = 2 * sqrt(0.5 * 256) / 256
    noise = (sample["lq"] - sample["gt"]).numpy() * 255
    assert abs(noise.std() - 2 * 255 * np.sqrt(128) / 256) < 1.0 and abs(noise.mean()) < 0.5


def test_fixed_quality_jpeg(gt_dir):
    opt = _opt(gt_dir, degradations=["jpeg"], jpeg_range=[10, 10])
    sample = build_dataset(opt)[1]
    gt = cv2.imread(str(gt_dir / "b.png"))
    _, buf = cv2.imencode(".jpg", gt, [cv2.IMWRITE_JPEG_QUALITY, 10])
    np.testing.assert_array_equal(_bgr_u8(sample["lq"]), cv2.imdecode(buf, cv2.IMREAD_COLOR))
    mse_10 = torch.mean((sample["lq"] - sample["gt"]) ** 2)
    mse_90 = torch.mean((build_dataset(dict(opt, jpeg_range=90))[1]["lq"] - sample["gt"]) ** 2)
    assert mse_10 > 4 * mse_90 > 0


def test_fixed_blur_and_downscale(gt_dir):
    opt = _opt(gt_dir, degradations=["blur"], kernel_size=21, blur_sigma=2.0, kernel_list=["iso"], kernel_prob=[1])
    sample = build_dataset(opt)[1]
    gt = cv2.imread(str(gt_dir / "b.png")).astype(np.float32) / 255
    kernel = bivariate_Gaussian(21, 2.0, 2.0, 0, isotropic=True).astype(np.float32)
    ref = np.round(cv2.filter2D(gt, -1, kernel, borderType=cv2.BORDER_REFLECT_101) * 255)
    assert np.abs(_bgr_u8(sample["lq"]).astype(int) - ref).max() <= 1
    opt = _opt(gt_dir, scale=2, degradations=["downscale"], downscale_modes=["area"])
    lq = _bgr_u8(build_dataset(opt)[1]["lq"])
    ref = np.round(cv2.resize(gt, (48, 48), interpolation=cv2.INTER_AREA) * 255)
    assert lq.shape == (48, 48, 3) and np.abs(lq.astype(int) - ref).max() <= 1


def test_default_chain_degrades(gt_dir):
    ds = build_dataset(_opt(gt_dir))
    sample = ds[1]
    assert torch.mean((sample["lq"] - sample["gt"]) ** 2) > 1e-5


def test_meta_info_file_lmdb_and_normalisation(gt_dir, tmp_path):
    meta = tmp_path / "meta.txt"
    meta.write_text("b.png (96,96,3)\nc_gray.png (128,128,3)\n")
    ds = build_dataset(_opt(gt_dir, meta_info_file=str(meta)))
    assert len(ds) == 2 and ds[0]["gt_path"] == str(gt_dir / "b.png")
    (gt_dir / "notes.txt").unlink()
    create_lmdb(gt_dir, tmp_path / "gt.lmdb")
    ds = build_dataset(_opt(tmp_path / "gt.lmdb", io_backend={"type": "lmdb"}, scale=4))
    sample = ds[1]
    assert len(ds) == 3 and sample["gt_path"] == "b" and sample["lq"].shape == (3, 24, 24)
    normed = build_dataset(_opt(gt_dir, mean=[0.5, 0.5, 0.5], std=[0.25, 0.25, 0.25]))[1]
    plain = build_dataset(_opt(gt_dir))[1]
    torch.testing.assert_close(normed["gt"], (plain["gt"] - 0.5) / 0.25)
    torch.testing.assert_close(normed["lq"], (plain["lq"] - 0.5) / 0.25)


@pytest.mark.parametrize(
    ("changes", "error", "message"),
    [
        ({"degradations": ["blur", "sharpen"]}, ValueError, r"unknown entries \['sharpen'\].*'blur', 'downscale'"),
        ({"degradations": ["noise", "noise"]}, ValueError, "must not repeat"),
        ({"scale": 4, "degradations": ["noise"]}, ValueError, "must include 'downscale'"),
        ({"scale": 9}, ValueError, "from 1 to 8"),
        ({"phase": "train", "scale": 4, "gt_size": 50}, ValueError, "gt_size must be a positive multiple"),
        ({"phase": "train"}, ValueError, "gt_size"),
        ({"kernel_size": [4, 4]}, ValueError, "odd"),
        ({"noise_range": [30, 10]}, ValueError, "noise_range must be"),
        ({"jpeg_range": [0, 50]}, ValueError, "jpeg_range must be"),
        ({"blur_prob": 1.5}, ValueError, "blur_prob must be a probability"),
        ({"kernel_list": ["iso"], "kernel_prob": [0.5, 0.5]}, ValueError, "kernel_prob must be 1"),
        ({"downscale_modes": ["lanczos"]}, ValueError, "allowed: \\['area', 'bilinear', 'bicubic'\\]"),
        ({"dataroot_gt": "/no/such/folder"}, FileNotFoundError, "/no/such/folder"),
        ({"io_backend": {"type": "lmdb"}}, FileNotFoundError, "not an LMDB folder"),
        ({"meta_info_file": "/no/meta.txt"}, FileNotFoundError, "meta_info_file"),
        ({"seed": -1}, ValueError, "seed"),
    ],
)
def test_option_errors(gt_dir, changes, error, message):
    with pytest.raises(error, match=message):
        build_dataset(_opt(gt_dir, **changes))


def test_missing_phase_and_empty_folder(gt_dir, tmp_path):
    opt = _opt(gt_dir)
    del opt["phase"]
    with pytest.raises(ValueError, match="phase"):
        HERSRDegradationDataset(opt)
    (tmp_path / "empty").mkdir()
    with pytest.raises(ValueError, match="No GT images"):
        HERSRDegradationDataset(_opt(tmp_path / "empty"))
    small = build_dataset(_opt(gt_dir, phase="train", gt_size=112))
    with pytest.raises(ValueError, match="smaller than gt_size 112"):
        small[0]
