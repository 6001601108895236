"""Every option file parses with BasicSR's own parser, and its networks build."""

import sys
from pathlib import Path

import pytest
from basicsr.archs import build_network
from basicsr.utils.options import parse_options

import hersr_arch  # noqa: F401  (registers HERSR)

OPTIONS = sorted((Path(__file__).resolve().parents[1] / "options").rglob("*.yml"))


def test_option_files_exist():
    names = {p.name for p in OPTIONS}
    required = {f"train_hersr_x{s}.yml" for s in (2, 3, 4)} | {f"test_hersr_x{s}.yml" for s in (2, 3, 4)}
    required |= {f"test_bicubic_x{s}.yml" for s in (2, 3, 4)}
    required |= {"train_hersr_s_x4.yml", "train_hersr_gan_x4.yml", "train_hersr_denoise.yml",
                 "train_hersr_jpeg.yml", "train_hersr_deblur.yml", "test_hersr_denoise.yml", "test_hersr_jpeg.yml"}
    assert required <= names, sorted(required - names)


@pytest.mark.parametrize("path", OPTIONS, ids=lambda p: str(p.relative_to(p.parents[1])))
def test_option_file_parses_and_networks_build(path, monkeypatch, tmp_path):
    monkeypatch.setattr(sys, "argv", ["basicsr", "-opt", str(path)])
    opt, _ = parse_options(str(tmp_path), is_train=path.name.startswith("train"))
    assert opt["model_type"] == "HERSRModel"
    net = build_network(dict(opt["network_g"]))
    assert net.upscale == opt["scale"]
    if "network_d" in opt:
        build_network(dict(opt["network_d"]))
    for phase, dataset in opt["datasets"].items():
        assert dataset["type"] in {"PairedImageDataset", "BenchmarkPairedDataset", "HERSRDegradationDataset"}, phase
    if "bicubic" in path.name:  # the literature's row: MATLAB bicubic, no weights
        assert opt["network_g"]["type"] == "MATLABBicubic" and not opt["path"].get("pretrain_network_g")
    elif path.name.startswith("test"):
        assert opt["path"]["pretrain_network_g"], "test files name the weights they test"
    metrics = opt["val"]["metrics"]
    assert metrics["psnr"]["crop_border"] == (opt["scale"] if opt["scale"] > 1 else 0)
