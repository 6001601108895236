"""End to end through the real ``basicsr`` entry point: HERSRModel training (PSNR and GAN stages),
validation with tiling and self-ensemble, ``basicsr test`` and ``hersr table`` (resuming: test_crash_recovery)."""

import re

import pytest
import torch

from hersr_arch.cli.hersr_cli import main
from hersr_arch.data.prepare import build_embedded_dataset
from tests.helpers import basicsr_test_options, basicsr_train_options, run_cli, write_yaml
from tests.networks import TINY

pytestmark = pytest.mark.slow

NET = {"type": "HERSR", "upscale": 4, **{k: list(v) if isinstance(v, tuple) else v for k, v in TINY.items()},
       "msg_outputs": True, "use_prompt": True}


@pytest.fixture(scope="module")
def embedded(tmp_path_factory):
    root = tmp_path_factory.mktemp("embedded")
    dataset = build_embedded_dataset(root / "embedded", scales=(4,), show_progress=False)
    train = (dataset.root / "train" / "GT", dataset.root / "train" / "LRbicx4")
    test = (dataset.root / "test" / "GTmod4", dataset.root / "test" / "LRbicx4")
    return train, test


def hersr_options(name, embedded, total_iter=4, **train_extra):
    train, test = embedded
    opt = basicsr_train_options(name, train, test, dict(NET), model_type="HERSRModel", total_iter=total_iter,
                                checkpoint_freq=2, val_freq=total_iter, gt_size=64)
    opt["train"].update(
        ema_decay=0.9,
        grad_clip=1.0,
        amp="bf16",
        moe_aux_weight=1.0,
        frequency_opt={"type": "FFTLoss", "loss_weight": 0.05},
        msg_opt={"type": "L1Loss", "loss_weight": 1.0, "weights": [0.5, 0.25, 0.125]},
        **train_extra,
    )
    opt["val"].update(tile_size=48, tile_pad=8, self_ensemble=True)
    opt["val"]["metrics"]["ssim"] = {"type": "calculate_ssim", "crop_border": 4, "test_y_channel": True}
    return opt


def train_log(workdir, name):
    logs = sorted((workdir / "experiments" / name).glob("train_*.log"))
    assert logs, f"no training log for {name}"
    return logs[-1].read_text()


def test_psnr_then_gan_stage_then_test_and_table(embedded, tmp_path, capsys):
    opt = hersr_options("psnr", embedded)
    result = run_cli(["train", "-opt", write_yaml(tmp_path / "psnr.yml", opt)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = train_log(tmp_path, "psnr")
    for key in ("l_pix", "l_freq", "l_msg", "l_moe", "gate_conv", "gate_attn", "gate_fft"):
        assert f"{key}:" in log, key
    assert re.search(r"# psnr: \d+\.\d+", log) and re.search(r"# ssim: 0\.\d+", log)
    ckpt = torch.load(tmp_path / "experiments" / "psnr" / "models" / "net_g_4.pth", map_location="cpu")
    assert {"params", "params_ema"} <= set(ckpt)

    # GAN stage from the PSNR model: L1 + VGG perceptual + GAN, EMA. BasicSR reads VGG19 weights from
    # this relative path; nothing can be downloaded, so the test writes (random) ones.
    from torchvision.models import vgg19

    vgg_path = tmp_path / "experiments" / "pretrained_models" / "vgg19-dcbb9e9d.pth"
    vgg_path.parent.mkdir(parents=True)
    torch.save(vgg19(weights=None).state_dict(), vgg_path)
    gan = hersr_options("gan", embedded, total_iter=2)
    gan["network_d"] = {"type": "UNetDiscriminatorSN", "num_in_ch": 3, "num_feat": 8, "skip_connection": True}
    gan["path"].update(pretrain_network_g="experiments/psnr/models/net_g_4.pth", param_key_g="params_ema")
    gan["train"].update(
        perceptual_opt={"type": "PerceptualLoss", "layer_weights": {"conv1_2": 0.1, "conv3_4": 1},
                        "vgg_type": "vgg19", "use_input_norm": True, "perceptual_weight": 1.0,
                        "style_weight": 0, "range_norm": False, "criterion": "l1"},
        gan_opt={"type": "GANLoss", "gan_type": "vanilla", "loss_weight": 0.1},
        optim_d={"type": "Adam", "lr": 1e-4, "betas": [0.9, 0.99]},
        net_d_iters=1,
        net_d_init_iters=0,
    )
    gan["val"].update(tile_size=0, self_ensemble=False)
    result = run_cli(["train", "-opt", write_yaml(tmp_path / "gan.yml", gan)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    log = train_log(tmp_path, "gan")
    for key in ("l_pix", "l_percep", "l_g_gan", "l_d_real", "l_d_fake"):
        assert f"{key}:" in log, key
    assert (tmp_path / "experiments" / "gan" / "models" / "net_d_2.pth").is_file()

    # basicsr test on the held-out images with the EMA weights, then the table.
    test_opt = basicsr_test_options("test_psnr", {"embedded_test": embedded[1]}, dict(NET),
                                    "experiments/psnr/models/net_g_4.pth", model_type="HERSRModel")
    test_opt["path"]["param_key_g"] = "params_ema"
    result = run_cli(["test", "-opt", write_yaml(tmp_path / "test.yml", test_opt)], cwd=tmp_path)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert main(["table", str(tmp_path / "results")]) == 0
    table = capsys.readouterr().out
    assert re.search(r"\| \d+\.\d\d/0\.\d{4} \|", table), table
