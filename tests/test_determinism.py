"""Determinism: the same seed and options on the same CPU give identical losses and weights.

Two ``basicsr train`` runs of 20 iterations with random crops, flips, rotations and HERSR's random
texture noise (all drawn from the seeded generators) and the documented switch ``deterministic:
true`` must log identical losses at every iteration and save bit-identical weights.
"""

from __future__ import annotations

import pytest
import torch

from hersr_arch.cli import basicsr_patches
from hersr_arch.option_checks import OptionError, check_options
from tests.helpers import (
    basicsr_train_options,
    finish_cli,
    logged_losses,
    start_cli,
    write_paired_dataset,
    write_yaml,
    yaml_network,
)
from tests.networks import TINY

NET = yaml_network("HERSR", upscale=4, **TINY, use_prompt=True, msg_outputs=True)


@pytest.mark.slow
def test_same_seed_gives_identical_losses_and_weights(tmp_path):
    pairs = write_paired_dataset(tmp_path / "data", 6, size=48)
    opt = basicsr_train_options("det", pairs, pairs, dict(NET), model_type="HERSRModel", total_iter=20,
                                checkpoint_freq=20, gt_size=32)
    del opt["datasets"]["val"]
    opt.update(val=None, deterministic=True)
    opt["train"].update(msg_opt={"type": "L1Loss", "loss_weight": 1.0, "weights": [0.5, 0.25, 0.125]},
                        ema_decay=0.9)
    yml = write_yaml(tmp_path / "det.yml", opt)
    procs = [start_cli(["train", "-opt", yml], tmp_path / f"run{i}") for i in (1, 2)]
    results = [finish_cli(p, timeout=300) for p in procs]
    for r in results:
        assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]

    exps = [tmp_path / f"run{i}" / "experiments" / "det" for i in (1, 2)]
    logs = [next(e.glob("train_*.log")).read_text() for e in exps]
    assert all("Deterministic algorithms on (deterministic: True)" in log for log in logs)
    losses = [logged_losses(log) for log in logs]
    assert sorted(losses[0]) == list(range(1, 21))
    assert {"l_pix", "l_msg", "l_moe"} <= set(losses[0][20])
    assert losses[0] == losses[1]
    weights = [torch.load(e / "models" / "net_g_20.pth") for e in exps]
    for key in ("params", "params_ema"):
        assert weights[0][key].keys() == weights[1][key].keys()
        for name, value in weights[0][key].items():
            assert torch.equal(value, weights[1][key][name]), (key, name)


def test_deterministic_switch():
    before = (torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled(),
              torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark)
    try:
        basicsr_patches.use_deterministic_algorithms("warn")
        assert torch.are_deterministic_algorithms_enabled() and torch.is_deterministic_algorithms_warn_only_enabled()
        basicsr_patches.use_deterministic_algorithms(True)
        assert torch.are_deterministic_algorithms_enabled()
        assert not torch.is_deterministic_algorithms_warn_only_enabled()
        assert torch.backends.cudnn.deterministic and not torch.backends.cudnn.benchmark
    finally:
        torch.use_deterministic_algorithms(before[0], warn_only=before[1])
        torch.backends.cudnn.deterministic, torch.backends.cudnn.benchmark = before[2], before[3]


def test_deterministic_option_values_are_checked(tmp_path):
    opt = {"name": "x", "model_type": "HERSRModel", "deterministic": "yes", "datasets": {}}
    with pytest.raises(OptionError, match=r"deterministic: 'yes' is not supported; use true, false or 'warn'"):
        check_options(opt, "train", tmp_path)
