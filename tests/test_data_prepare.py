"""Data preparation: embedded dataset, bicubic LR, sub-images, benchmark layout, LMDB."""

import hashlib
import importlib.util
import json
import socket
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()  # before basicsr is imported

from basicsr.data.paired_image_dataset import PairedImageDataset  # noqa: E402

from hersr_arch.data import prepare  # noqa: E402
from hersr_arch.data.matlab_resize import imresize  # noqa: E402
from hersr_arch.data.prepare import (  # noqa: E402
    EMBEDDED_TEST_IMAGES,
    EMBEDDED_TRAIN_IMAGES,
    bicubic_downscale,
    build_embedded_dataset,
    create_lmdb,
    extract_subimages,
    generate_bicubic_lr,
    make_benchmark_layout,
)

# ---------------------------------------------------------------------------------------------
# helpers
# ---------------------------------------------------------------------------------------------


def _image(h: int, w: int, seed: int, channels: int = 3, dtype=np.uint8) -> np.ndarray:
    """A smooth random image with some texture (deterministic)."""
    rng = np.random.default_rng(seed)
    small = rng.random((max(h // 4, 2), max(w // 4, 2), channels)).astype(np.float32)
    img = cv2.resize(small, (w, h), interpolation=cv2.INTER_CUBIC).reshape(h, w, channels)
    img = np.clip(img + 0.1 * rng.standard_normal(img.shape), 0, 1)
    peak = np.iinfo(dtype).max
    img = np.round(img * peak).astype(dtype)
    return img[..., 0] if channels == 1 else img


def _write(folder: Path, name: str, img: np.ndarray) -> Path:
    folder.mkdir(parents=True, exist_ok=True)
    path = folder / name
    assert cv2.imwrite(str(path), img)
    return path


def _digest(folder: Path) -> dict:
    return {p.relative_to(folder).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(folder.rglob("*")) if p.is_file()}


def _read(path: Path) -> np.ndarray:
    return cv2.imread(str(path), cv2.IMREAD_UNCHANGED)


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    """The embedded dataset, built once with sockets disabled (nothing may be downloaded)."""
    out = tmp_path_factory.mktemp("embedded") / "embedded"

    def no_network(*args, **kwargs):
        raise OSError("network access attempted while building the embedded dataset")

    mp = pytest.MonkeyPatch()
    mp.setattr(socket.socket, "connect", no_network)
    mp.setattr(socket, "create_connection", no_network)
    try:
        start = time.perf_counter()
        result = build_embedded_dataset(out, show_progress=False)
        seconds = time.perf_counter() - start
    finally:
        mp.undo()
    return out, result, seconds


# ---------------------------------------------------------------------------------------------
# embedded dataset
# ---------------------------------------------------------------------------------------------


def test_embedded_layout_and_sizes(embedded):
    root, result, seconds = embedded
    assert result.rebuilt and seconds < 60
    train_gt = sorted(p.name for p in (root / "train" / "GT").iterdir())
    assert len(train_gt) >= 50
    for s in (2, 3, 4):
        assert sorted(p.name for p in (root / "train" / f"LRbicx{s}").iterdir()) == train_gt
        for name in train_gt[::7]:
            hr, lr = _read(root / "train" / "GT" / name), _read(root / "train" / f"LRbicx{s}" / name)
            assert hr.shape == (192, 192, 3) and lr.shape == (192 // s, 192 // s, 3)
        test_gt = sorted(p.name for p in (root / "test" / f"GTmod{s}").iterdir())
        assert test_gt == sorted(f"{name}.png" for name, _ in EMBEDDED_TEST_IMAGES)
        assert sorted(p.name for p in (root / "test" / f"LRbicx{s}").iterdir()) == test_gt
        for name in test_gt:
            hr, lr = _read(root / "test" / f"GTmod{s}" / name), _read(root / "test" / f"LRbicx{s}" / name)
            assert hr.shape[0] % s == 0 and hr.shape[1] % s == 0 and max(hr.shape[:2]) <= 256
            assert lr.shape == (hr.shape[0] // s, hr.shape[1] // s, 3)
            np.testing.assert_array_equal(lr, bicubic_downscale(hr, s))
    manifest = json.loads((root / "manifest.json").read_text())
    assert manifest["counts"]["train/GT"] == len(train_gt)
    assert manifest["params"]["scales"] == [2, 3, 4]


def test_embedded_train_lr_is_bicubic_of_train_gt(embedded):
    root, _, _ = embedded
    for name in sorted(p.name for p in (root / "train" / "GT").iterdir())[::11]:
        hr = _read(root / "train" / "GT" / name)
        for s in (2, 3, 4):
            lr = _read(root / "train" / f"LRbicx{s}" / name).astype(int)
            ref = bicubic_downscale(hr, s).astype(int)
            # LR is cut from the LR of the whole image: equal away from the sub-image border
            assert np.abs(lr[3:-3, 3:-3] - ref[3:-3, 3:-3]).max() <= 1


def test_embedded_train_and_test_are_disjoint(embedded):
    root, result, _ = embedded
    train_names = {name for name, _ in EMBEDDED_TRAIN_IMAGES}
    test_names = {name for name, _ in EMBEDDED_TEST_IMAGES}
    assert not train_names & test_names and 3 <= len(test_names) <= 4
    assert {p.name.rsplit("_s", 1)[0] for p in (root / "train" / "GT").iterdir()} == train_names
    sources = result.manifest["sources"]
    assert not {sources[n]["sha256"] for n in train_names} & {sources[n]["sha256"] for n in test_names}
    assert not {sources[n]["file"] for n in train_names} & {sources[n]["file"] for n in test_names}


def test_embedded_is_idempotent_and_deterministic(embedded, tmp_path):
    root, _, _ = embedded
    before = _digest(root)
    mtime = (root / "manifest.json").stat().st_mtime_ns
    again = build_embedded_dataset(root, show_progress=False)
    assert not again.rebuilt and (root / "manifest.json").stat().st_mtime_ns == mtime
    other = build_embedded_dataset(tmp_path / "other", show_progress=False)
    assert other.rebuilt and _digest(tmp_path / "other") == before


def test_embedded_rebuilds_when_changed(tmp_path):
    out = tmp_path / "emb"
    first = build_embedded_dataset(out, scales=(2,), crop_size=128, step=128, test_size=64, show_progress=False)
    assert first.rebuilt and (out / "train" / "LRbicx2").is_dir() and not (out / "train" / "LRbicx4").exists()
    victim = sorted((out / "train" / "GT").iterdir())[0]
    victim.unlink()
    assert build_embedded_dataset(out, scales=(2,), crop_size=128, step=128, test_size=64,
                                  show_progress=False).rebuilt
    assert victim.is_file()
    second = build_embedded_dataset(out, scales=(4,), crop_size=128, step=128, test_size=64, show_progress=False)
    assert second.rebuilt and (out / "train" / "LRbicx4").is_dir() and not (out / "train" / "LRbicx2").exists()


def test_embedded_refuses_a_foreign_folder(tmp_path):
    out = tmp_path / "mine"
    _write(out, "precious.png", _image(8, 8, 0))
    with pytest.raises(FileExistsError, match="not an embedded dataset"):
        build_embedded_dataset(out, show_progress=False)
    assert (out / "precious.png").is_file()


def test_embedded_works_with_paired_image_dataset(embedded):
    root, _, _ = embedded
    train = PairedImageDataset({
        "dataroot_gt": str(root / "train" / "GT"), "dataroot_lq": str(root / "train" / "LRbicx4"),
        "io_backend": {"type": "disk"}, "phase": "train", "scale": 4, "gt_size": 96,
        "use_hflip": True, "use_rot": True})
    sample = train[0]
    assert sample["gt"].shape == (3, 96, 96) and sample["lq"].shape == (3, 24, 24)
    test = PairedImageDataset({
        "dataroot_gt": str(root / "test" / "GTmod3"), "dataroot_lq": str(root / "test" / "LRbicx3"),
        "io_backend": {"type": "disk"}, "phase": "val", "scale": 3})
    assert len(test) == len(EMBEDDED_TEST_IMAGES)
    sample = test[0]
    assert sample["gt"].shape[1] == 3 * sample["lq"].shape[1]


# ---------------------------------------------------------------------------------------------
# bicubic LR
# ---------------------------------------------------------------------------------------------


def test_bicubic_lr_is_matlab_imresize_of_the_mod_cropped_hr(tmp_path):
    hr = _image(50, 38, seed=1)
    _write(tmp_path / "hr", "a.png", hr)
    digest = _digest(tmp_path / "hr")
    assert generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr", 4, show_progress=False) == 1
    lr = _read(tmp_path / "lr" / "a.png")
    assert lr.shape == (12, 9, 3)
    np.testing.assert_array_equal(lr, imresize(hr[:48, :36], 1 / 4))
    assert _digest(tmp_path / "hr") == digest  # inputs untouched


def test_bicubic_lr_without_mod_crop_rounds_up(tmp_path):
    _write(tmp_path / "hr", "a.png", _image(50, 38, seed=2))
    generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr", 4, mod_crop=False, show_progress=False)
    assert _read(tmp_path / "lr" / "a.png").shape == (13, 10, 3)
    generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr12", 3, mod_crop=12, show_progress=False)
    assert _read(tmp_path / "lr12" / "a.png").shape == (16, 12, 3)


def test_bicubic_lr_16bit_and_gray(tmp_path):
    hr16 = _image(40, 40, seed=3, dtype=np.uint16)
    gray = _image(40, 40, seed=4, channels=1)
    _write(tmp_path / "hr", "deep.png", hr16)
    _write(tmp_path / "hr", "gray.png", gray)
    generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr", 2, n_workers=2, show_progress=False)
    lr16 = _read(tmp_path / "lr" / "deep.png")
    assert lr16.dtype == np.uint16 and lr16.shape == (20, 20, 3)
    np.testing.assert_array_equal(lr16, imresize(hr16, 0.5))
    lr_gray = _read(tmp_path / "lr" / "gray.png")
    assert lr_gray.shape == (20, 20)
    np.testing.assert_array_equal(lr_gray, bicubic_downscale(gray, 2))


# ---------------------------------------------------------------------------------------------
# sub-images
# ---------------------------------------------------------------------------------------------


def test_extract_subimages_counts_names_and_content(tmp_path):
    img = _image(100, 130, seed=5)
    _write(tmp_path / "hr", "0001.png", img)
    _write(tmp_path / "hr", "tiny.png", _image(30, 30, seed=6))
    n = extract_subimages(tmp_path / "hr", tmp_path / "sub", crop_size=48, step=24, show_progress=False)
    # rows 0, 24, 48 + 52 (flush); columns 0, 24, 48, 72 + 82 (flush); the tiny image gives none
    assert n == 20
    names = sorted(p.name for p in (tmp_path / "sub").iterdir())
    assert names == [f"0001_s{i:03d}.png" for i in range(1, 21)]
    np.testing.assert_array_equal(_read(tmp_path / "sub" / "0001_s001.png"), img[:48, :48])
    np.testing.assert_array_equal(_read(tmp_path / "sub" / "0001_s002.png"), img[:48, 24:72])
    np.testing.assert_array_equal(_read(tmp_path / "sub" / "0001_s020.png"), img[52:, 82:])
    # uncovered borders of at most thresh_size pixels (4 and 10 here) are dropped
    n = extract_subimages(tmp_path / "hr", tmp_path / "sub_t", 48, 24, thresh_size=10, show_progress=False)
    assert n == 12


def test_extract_subimages_hr_and_lr_pair_up(tmp_path):
    """The README's DF2K recipe: LR of all scales with mod_crop 12, then sub-images that line up."""
    _write(tmp_path / "hr", "0001.png", _image(123, 99, seed=7))  # sides not multiples of 12
    n_hr = extract_subimages(tmp_path / "hr", tmp_path / "hr_sub", 48, 24, mod_crop=12, n_workers=2,
                             show_progress=False)
    assert n_hr == 4 * 3  # 120x96 after mod-crop: rows 0, 24, 48, 72; columns 0, 24, 48
    hr_names = sorted(p.name for p in (tmp_path / "hr_sub").iterdir())
    for s in (2, 3, 4):
        generate_bicubic_lr(tmp_path / "hr", tmp_path / f"X{s}", s, mod_crop=12, show_progress=False)
        lr_file = tmp_path / f"X{s}" / "0001.png"
        lr_file.rename(lr_file.with_name(f"0001x{s}.png"))  # the official DIV2K LR name
        n_lr = extract_subimages(tmp_path / f"X{s}", tmp_path / f"X{s}_sub", 48 // s, 24 // s,
                                 strip_scale_suffix=True, show_progress=False)
        assert n_lr == n_hr and sorted(p.name for p in (tmp_path / f"X{s}_sub").iterdir()) == hr_names
        for name in hr_names:
            lr = _read(tmp_path / f"X{s}_sub" / name).astype(int)
            ref = bicubic_downscale(_read(tmp_path / "hr_sub" / name), s).astype(int)
            assert np.abs(lr[3:-3, 3:-3] - ref[3:-3, 3:-3]).max() <= 1, (s, name)


# ---------------------------------------------------------------------------------------------
# benchmark layout
# ---------------------------------------------------------------------------------------------


def test_make_benchmark_layout(tmp_path):
    imgs = {"baby": _image(50, 38, seed=8), "bird": _image(33, 47, seed=9)}
    _write(tmp_path / "hr", "baby.png", imgs["baby"])
    _write(tmp_path / "hr", "bird.bmp", imgs["bird"])
    assert make_benchmark_layout(tmp_path / "hr", tmp_path / "Set2", show_progress=False) == 2
    for s in (2, 3, 4):
        gt_dir, lr_dir = tmp_path / "Set2" / f"GTmod{s}", tmp_path / "Set2" / f"LRbicx{s}"
        assert sorted(p.name for p in gt_dir.iterdir()) == ["baby.png", "bird.png"]
        assert sorted(p.name for p in lr_dir.iterdir()) == ["baby.png", "bird.png"]
        for name, img in imgs.items():
            gt, lr = _read(gt_dir / f"{name}.png"), _read(lr_dir / f"{name}.png")
            h, w = img.shape[0] // s * s, img.shape[1] // s * s
            np.testing.assert_array_equal(gt, img[:h, :w])
            assert lr.shape == (h // s, w // s, 3)
            np.testing.assert_array_equal(lr, imresize(gt, 1 / s))


# ---------------------------------------------------------------------------------------------
# LMDB
# ---------------------------------------------------------------------------------------------


def test_lmdb_is_read_by_basicsr_paired_dataset(tmp_path):
    _write(tmp_path / "hr", "0001.png", _image(48, 64, seed=10))
    _write(tmp_path / "hr", "0002.png", _image(40, 40, seed=11))
    make_benchmark_layout(tmp_path / "hr", tmp_path / "bench", scales=(2,), show_progress=False)
    gt_lmdb, lq_lmdb = tmp_path / "gt.lmdb", tmp_path / "lq.lmdb"
    assert create_lmdb(tmp_path / "bench" / "GTmod2", gt_lmdb) == 2
    assert create_lmdb(tmp_path / "bench" / "LRbicx2", lq_lmdb, n_workers=2) == 2
    meta = (gt_lmdb / "meta_info.txt").read_text().splitlines()
    assert meta == ["0001.png (48,64,3) 1", "0002.png (40,40,3) 1"]
    ds = PairedImageDataset({"dataroot_gt": str(gt_lmdb), "dataroot_lq": str(lq_lmdb),
                             "io_backend": {"type": "lmdb"}, "phase": "val", "scale": 2})
    assert len(ds) == 2
    sample = ds[0]
    assert sample["gt_path"] == "0001" and sample["lq"].shape == (3, 24, 32)
    gt_disk = _read(tmp_path / "bench" / "GTmod2" / "0001.png")[..., ::-1].transpose(2, 0, 1) / 255.0
    np.testing.assert_allclose(sample["gt"].numpy(), gt_disk, atol=1e-6)
    with pytest.raises(FileExistsError, match="already exists"):
        create_lmdb(tmp_path / "bench" / "GTmod2", gt_lmdb)


# ---------------------------------------------------------------------------------------------
# errors
# ---------------------------------------------------------------------------------------------


def test_clear_errors(tmp_path):
    _write(tmp_path / "hr", "a.png", _image(16, 16, seed=12))
    (tmp_path / "empty").mkdir()
    with pytest.raises(FileNotFoundError, match="does not exist"):
        generate_bicubic_lr(tmp_path / "missing", tmp_path / "lr", 4)
    with pytest.raises(ValueError, match="No images found"):
        extract_subimages(tmp_path / "empty", tmp_path / "sub")
    with pytest.raises(ValueError, match="from 1 to 8, got 9"):
        generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr", 9)
    with pytest.raises(ValueError, match="from 1 to 8, got 0"):
        make_benchmark_layout(tmp_path / "hr", tmp_path / "b", scales=(0, 2))
    with pytest.raises(ValueError, match="input folder"):
        generate_bicubic_lr(tmp_path / "hr", tmp_path / "hr", 2)
    with pytest.raises(ValueError, match="multiple of the scale 3"):
        generate_bicubic_lr(tmp_path / "hr", tmp_path / "lr", 3, mod_crop=8)
    with pytest.raises(ValueError, match="compression"):
        extract_subimages(tmp_path / "hr", tmp_path / "sub", compression=10)
    with pytest.raises(ValueError, match="crop_size must be an integer"):
        extract_subimages(tmp_path / "hr", tmp_path / "sub", crop_size=0)
    with pytest.raises(ValueError, match="must end with '.lmdb'"):
        create_lmdb(tmp_path / "hr", tmp_path / "db")
    with pytest.raises(ValueError, match="multiple of 12"):
        build_embedded_dataset(tmp_path / "emb", crop_size=100)
    (tmp_path / "bad").mkdir()
    (tmp_path / "bad" / "broken.png").write_bytes(b"not an image")
    with pytest.raises(ValueError, match="could not be read as an image"):
        generate_bicubic_lr(tmp_path / "bad", tmp_path / "lr", 2, show_progress=False)
    assert sorted(p.name for p in (tmp_path / "hr").iterdir()) == ["a.png"]
    assert prepare.list_images(tmp_path / "hr") == [tmp_path / "hr" / "a.png"]


# ---------------------------------------------------------------------------------------------
# command-line scripts (run in-process: importing them again costs nothing)
# ---------------------------------------------------------------------------------------------

SCRIPTS = ["extract_subimages", "generate_bicubic_lr", "prepare_benchmark", "create_lmdb", "prepare_embedded"]


def _script(name: str):
    path = Path(__file__).resolve().parents[1] / "datasets" / f"{name}.py"
    spec = importlib.util.spec_from_file_location(f"datasets_{name}", path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.mark.parametrize("name", SCRIPTS)
def test_script_help(name, capsys):
    with pytest.raises(SystemExit) as exit_info:
        _script(name).main(["--help"])
    assert exit_info.value.code == 0
    assert "--output" in capsys.readouterr().out


def test_scripts_run_and_report_errors(tmp_path, capsys):
    _write(tmp_path / "hr", "a.png", _image(50, 38, seed=13))
    assert _script("prepare_benchmark").main(["--input", str(tmp_path / "hr"), "--output", str(tmp_path / "S"),
                                              "--scales", "2", "4"]) == 0
    assert _read(tmp_path / "S" / "LRbicx4" / "a.png").shape == (12, 9, 3)
    # --border clamp: older MATLAB's rule, another outermost LR row and column than the default mirror
    assert _script("prepare_benchmark").main(["--input", str(tmp_path / "hr"), "--output", str(tmp_path / "C"),
                                              "--scales", "4", "--border", "clamp"]) == 0
    gt, clamped = _read(tmp_path / "C" / "GTmod4" / "a.png"), _read(tmp_path / "C" / "LRbicx4" / "a.png")
    np.testing.assert_array_equal(clamped, imresize(gt, 1 / 4, border="clamp"))
    assert (clamped != _read(tmp_path / "S" / "LRbicx4" / "a.png")).any()
    with pytest.raises(ValueError, match="border must be one of \\['mirror', 'clamp'\\], got 'wrap'"):
        make_benchmark_layout(tmp_path / "hr", tmp_path / "W", scales=(2,), border="wrap", show_progress=False)
    lr = _script("generate_bicubic_lr")
    assert lr.main(["--input", str(tmp_path / "hr"), "--output", str(tmp_path / "lr" / "X{scale}"),
                    "--scale", "2", "3"]) == 0
    assert _read(tmp_path / "lr" / "X3" / "a.png").shape == (16, 12, 3)
    sub = _script("extract_subimages")
    assert sub.main(["--input", str(tmp_path / "lr" / "X2"), "--output", str(tmp_path / "sub"),
                     "--crop-size", "24", "--step", "24", "--lr-scale", "2"]) == 0
    assert len(list((tmp_path / "sub").iterdir())) == 3 * 2  # LR 25x19, crops of 12: rows 0, 12, 13; cols 0, 7
    capsys.readouterr()
    with pytest.raises(SystemExit) as exit_info:
        lr.main(["--input", str(tmp_path / "hr"), "--output", str(tmp_path / "lr2"), "--scale", "2", "3"])
    assert exit_info.value.code == 2 and "{scale}" in capsys.readouterr().err
    with pytest.raises(SystemExit) as exit_info:
        _script("create_lmdb").main(["--input", str(tmp_path / "nothing"), "--output", str(tmp_path / "x.lmdb")])
    assert exit_info.value.code == 2 and "does not exist" in capsys.readouterr().err
