"""The ``basicsr`` command end to end on the CPU: train, auto-resume, test, errors, distributed init.

BasicSR's tiny MSRResNet and SRModel stand in for HERSR here, so that these tests check the wrapper
and its CPU fixes alone.
"""

import re
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist
from torch.nn.parallel import DistributedDataParallel

from hersr_arch.cli import basicsr_cli, basicsr_patches
from tests.helpers import (
    TINY_MSRRESNET,
    basicsr_test_options,
    basicsr_train_options,
    free_port,
    run_cli,
    undo_basicsr_patches_with,
    write_paired_dataset,
    write_yaml,
)


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    """``{'train': (gt, lq), 'val': (gt, lq)}``: 8 and 2 random 64×64 GT images with their ×4 LR."""
    root = tmp_path_factory.mktemp("data")
    return {
        "train": write_paired_dataset(root / "train", 8),
        "val": write_paired_dataset(root / "val", 2, seed=1),
    }


def _check(result, what):
    assert result.returncode == 0, f"{what} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"


def _latest_log(folder, prefix):
    logs = sorted(folder.glob(f"{prefix}_*.log"))
    assert logs, f"no {prefix}_*.log in {folder}"
    return logs[-1].read_text()


@pytest.mark.slow
def test_train_writes_checkpoints_and_states(tmp_path, pairs):
    opt = write_yaml(tmp_path / "train.yml", basicsr_train_options("tiny", pairs["train"], pairs["val"]))
    _check(run_cli(["train", "-opt", opt], cwd=tmp_path), "basicsr train")

    exp = tmp_path / "experiments" / "tiny"
    for file in (
        "models/net_g_2.pth",
        "models/net_g_4.pth",
        "models/net_g_latest.pth",
        "training_states/2.state",
        "training_states/4.state",
        "train.yml",
    ):
        assert (exp / file).is_file(), file
    log = _latest_log(exp, "train_tiny")
    assert "Validation val" in log and "# psnr:" in log
    params = torch.load(exp / "models" / "net_g_4.pth", map_location="cpu")["params"]
    assert params["conv_first.weight"].shape[0] == TINY_MSRRESNET["num_feat"]


@pytest.mark.slow
def test_auto_resume_on_cpu(tmp_path, pairs):
    opt = write_yaml(
        tmp_path / "train.yml",
        basicsr_train_options("resume", pairs["train"], pairs["val"], total_iter=2, val_freq=100),
    )
    _check(run_cli(["train", "-opt", opt], cwd=tmp_path), "first run")
    exp = tmp_path / "experiments" / "resume"
    assert (exp / "training_states" / "2.state").is_file()
    assert not (exp / "models" / "net_g_4.pth").exists()
    for old_log in exp.glob("train_resume_*.log"):
        old_log.unlink()

    result = run_cli(
        ["train", "-opt", opt, "--auto_resume", "--force_yml", "train:total_iter=4"], cwd=tmp_path
    )
    _check(result, "resumed run")
    log = _latest_log(exp, "train_resume")
    assert re.search(r"Resuming training from epoch: \d+, iter: 2\.", log), log[-2000:]
    assert re.search(r"Start training from epoch: \d+, iter: 2\n", log)
    assert (exp / "models" / "net_g_4.pth").is_file()
    assert (exp / "training_states" / "4.state").is_file()
    assert not list(tmp_path.glob("experiments/resume_archived_*")), "resume must not archive the experiment"


@pytest.mark.slow
def test_test_command_writes_results(tmp_path, pairs):
    from basicsr.archs.srresnet_arch import MSRResNet

    from hersr_arch.tools.results_table import collect_runs

    net_kwargs = {k: v for k, v in TINY_MSRRESNET.items() if k != "type"}
    checkpoint = tmp_path / "tiny_x4.pth"
    torch.save({"params": MSRResNet(**net_kwargs).state_dict()}, checkpoint)
    opt = basicsr_test_options("test_tiny_x4", {"Set5": pairs["val"]}, pretrain_network_g=checkpoint)
    opt_path = write_yaml(tmp_path / "test.yml", opt)  # num_gpu: auto → 0 on this machine
    _check(run_cli(["test", "-opt", opt_path], cwd=tmp_path), "basicsr test")

    results = tmp_path / "results" / "test_tiny_x4"
    log = _latest_log(results, "test_test_tiny_x4")
    assert "Loading MSRResNet model from" in log
    assert "Validation Set5" in log and "# psnr:" in log and "# ssim:" in log
    (run,) = collect_runs([tmp_path / "results"])
    assert (run.model, run.scale, list(run.metrics)) == ("tiny", 4, ["Set5"])
    assert 5 < run.metrics["Set5"]["psnr"] < 60 and 0 < run.metrics["Set5"]["ssim"] <= 1


@pytest.mark.slow
def test_missing_option_file_is_one_clear_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert basicsr_cli.main(["train", "-opt", "nope/missing.yml"]) == 2  # any other exception fails here
    err = capsys.readouterr().err
    assert err == "basicsr train: error: option file not found: nope/missing.yml\n"
    assert not (tmp_path / "experiments").exists()


@pytest.mark.parametrize(
    "text, message",
    [
        ("name: x\n  bad: [indent\n", "cannot parse option file"),
        ("- just\n- a list\n", "is not a YAML mapping"),
        ("name: x\nnum_gpu: 0\n", "lacks required key(s): datasets, path"),
    ],
)
def test_bad_option_file_is_one_clear_line(tmp_path, capsys, text, message):
    opt = tmp_path / "bad.yml"
    opt.write_text(text)
    assert basicsr_cli.main(["test", "-opt", str(opt)]) == 2
    err = capsys.readouterr().err.strip()
    assert message in err and str(opt) in err and len(err.splitlines()) == 1


def test_unknown_command_exits_with_usage(capsys):
    with pytest.raises(SystemExit) as exc:
        basicsr_cli.main(["fit", "-opt", "x.yml"])
    assert exc.value.code == 2
    assert "invalid choice" in capsys.readouterr().err


@pytest.fixture
def restore_basicsr(monkeypatch):
    """Undo ``apply_patches`` after the test, so that it leaves BasicSR as it found it."""
    undo_basicsr_patches_with(monkeypatch)


def test_patches_are_one_table_applied_once(restore_basicsr):
    basicsr_patches.apply_patches()
    installed = [getattr(p.owner, p.attribute) for p in basicsr_patches.PATCHES]
    basicsr_patches.apply_patches()  # a second call changes nothing (no wrapper around a wrapper)
    assert [getattr(p.owner, p.attribute) for p in basicsr_patches.PATCHES] == installed
    for patch, current in zip(basicsr_patches.PATCHES, installed):
        assert patch.reason and (getattr(current, "hersr_patch", None) is patch or current is patch.replacement)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_distributed_init_uses_gloo_without_cuda(monkeypatch, restore_basicsr):
    for key, value in {
        "RANK": "0",
        "WORLD_SIZE": "1",
        "LOCAL_RANK": "0",
        "MASTER_ADDR": "127.0.0.1",
        "MASTER_PORT": str(free_port()),
    }.items():
        monkeypatch.setenv(key, value)
    basicsr_patches.apply_patches()
    import basicsr.utils.dist_util as dist_util

    assert dist_util._init_dist_pytorch is basicsr_patches.init_dist_pytorch
    try:
        dist_util._init_dist_pytorch("nccl")  # what BasicSR's init_dist('pytorch') calls
        assert dist.is_initialized()
        assert dist.get_backend() == "gloo"
        assert dist_util.get_dist_info() == (0, 1)
        cpu_model = SimpleNamespace(opt={"dist": True}, device=torch.device("cpu"))
        model_to_device = basicsr_patches._ddp_on_cpu(lambda self, net: net)
        assert isinstance(model_to_device(cpu_model, torch.nn.Linear(2, 2)), DistributedDataParallel)
    finally:
        if dist.is_initialized():
            dist.destroy_process_group()


def _parse(tmp_path, monkeypatch, pairs, parse, *extra, num_gpu=0):
    """``parse(root, is_train=False)`` on a test option file for a tiny HERSR, as ``basicsr test`` calls it."""
    from tests.networks import TINY

    network = {"type": "HERSR", "upscale": 4, **TINY}
    yml = write_yaml(tmp_path / "test.yml", basicsr_test_options("parse", {"val": pairs["val"]}, network,
                                                                 model_type="HERSRModel", num_gpu=num_gpu))
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr("sys.argv", ["basicsr test", "-opt", str(yml), *extra])
    return parse(str(tmp_path), is_train=False)


@pytest.mark.skipif(torch.cuda.is_available(), reason="checks the CPU path")
def test_num_gpu_falls_back_to_cpu(tmp_path, monkeypatch, pairs, capsys):
    from basicsr.utils.options import parse_options

    opt, _ = _parse(tmp_path, monkeypatch, pairs, basicsr_patches._with_option_checks(parse_options), num_gpu=1)
    assert opt["num_gpu"] == 0
    assert "CUDA is not available" in capsys.readouterr().err


def test_option_checks_see_the_parsed_options_and_leave_the_random_state(tmp_path, monkeypatch, pairs):
    """The checks run on what BasicSR parsed (``--force_yml`` applied) and put back the random state
    that ``parse_options`` seeded, though building the network to check it draws from it."""
    import random

    import numpy as np
    from basicsr.utils.options import parse_options

    checked = basicsr_patches._with_option_checks(parse_options)
    draws = []
    for parse in (parse_options, checked):
        opt, _ = _parse(tmp_path, monkeypatch, pairs, parse)
        draws.append((torch.rand(4), np.random.rand(), random.random()))
    assert torch.equal(draws[0][0], draws[1][0]) and draws[0][1:] == draws[1][1:]
    with pytest.raises(basicsr_patches.OptionError, match="network_g.upscale: 2 does not match the top-level scale: 4"):
        _parse(tmp_path, monkeypatch, pairs, checked, "--force_yml", "network_g:upscale=2")
    with pytest.raises(basicsr_patches.OptionError, match=r"--force_yml could not be applied \(KeyError: 'nope'\)"):
        _parse(tmp_path, monkeypatch, pairs, checked, "--force_yml", "nope:upscale=2")


def test_resume_state_maps_to_cpu(tmp_path, monkeypatch):
    """``load_resume_state`` (BasicSR's, patched) picks the latest state and loads it on the CPU."""
    monkeypatch.chdir(tmp_path)
    states = tmp_path / "experiments" / "exp" / "training_states"
    states.mkdir(parents=True)
    for it in (2, 10):
        torch.save({"epoch": 0, "iter": it, "optimizers": [], "schedulers": []}, states / f"{it}.state")
    opt = {
        "name": "exp",
        "auto_resume": True,
        "num_gpu": 0,
        "network_g": {},
        "path": {"models": str(tmp_path / "experiments" / "exp" / "models"), "resume_state": None},
    }
    state = basicsr_patches.load_resume_state(opt)
    assert state["iter"] == 10
    assert opt["path"]["resume_state"].endswith("10.state")
    assert opt["path"]["pretrain_network_g"].endswith("net_g_10.pth")
