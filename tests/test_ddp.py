"""Multi-process training with PyTorch DDP through BasicSR's launcher, on the CPU (gloo).

``torchrun --nproc_per_node=2 -m hersr_arch.cli.basicsr_cli train -opt X.yml --launcher pytorch``
with ``batch_size_per_gpu: 2`` must train like one process with ``batch_size_per_gpu: 4``:

- Same samples per step. BasicSR's ``EnlargedSampler`` draws one permutation per epoch (seeded by
  the epoch, the same on every rank) and gives rank ``r`` the entries ``r, r + W, r + 2W, ...``. A
  batch of ``b`` on each of 2 ranks therefore holds exactly the ``2b`` entries that one process
  takes as its batch. With 8 images and ``gt_size`` equal to the image size (no random crop) and no
  flips, each step sees the same pixels in both runs.
- Same randomness elsewhere: BasicSR seeds rank ``r`` with ``manual_seed + r``, so anything random
  in training would differ between the runs; HERSR's texture noise is set to ``'fixed'``. The
  initial weights are rank 0's in both (DDP broadcasts them).
- Same gradient: the L1 loss is a mean, and DDP averages the ranks' gradients, which is the mean
  over the global batch. The Switch balance term of the MoE auxiliary loss is a product of two
  batch means, not a mean, so it is not additive over ranks: ``moe_aux_weight: 0`` here.

Tolerance: the logged losses (5 significant digits in BasicSR's log) agree to 1e-3 relative, and
the weights after 4 Adam steps to 1e-4 absolute (measured: ~3e-6; the rest is the order of the
floating-point sums in the all-reduce). ``moe_top_k: 1`` with DDP's default
``find_unused_parameters: false`` checks that top-k routing leaves no parameter out of the graph.
"""

from __future__ import annotations

import re
from types import SimpleNamespace

import pytest
import torch
import torch.distributed as dist

from hersr_arch.models.hersr_model import HERSRModel
from tests.helpers import (
    basicsr_train_options,
    finish_cli,
    free_port,
    logged_losses,
    start_cli,
    write_paired_dataset,
    write_yaml,
    yaml_network,
)
from tests.networks import TINY

NET = yaml_network("HERSR", upscale=4, **TINY, moe_top_k=1, noise_mode="fixed", use_prompt=True)


def _options(name, pairs, batch_size_per_gpu):
    opt = basicsr_train_options(name, pairs, pairs, dict(NET), model_type="HERSRModel", total_iter=4,
                                checkpoint_freq=2, gt_size=32)
    opt["datasets"]["train"].update(use_hflip=False, use_rot=False, batch_size_per_gpu=batch_size_per_gpu)
    del opt["datasets"]["val"]
    opt["val"] = None
    opt["train"]["moe_aux_weight"] = 0
    return opt


def _files(root):
    return sorted(str(p.relative_to(root)) for p in root.rglob("*") if p.is_file())


@pytest.mark.slow
def test_two_cpu_ranks_match_one_process_with_the_global_batch(tmp_path):
    pairs = write_paired_dataset(tmp_path / "data", 8, size=32)
    ddp_yml = write_yaml(tmp_path / "ddp.yml", _options("ddp", pairs, 2))
    single_yml = write_yaml(tmp_path / "single.yml", _options("single", pairs, 4))
    torchrun = ["-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
                "-m", "hersr_arch.cli.basicsr_cli"]
    ddp = start_cli(["train", "-opt", ddp_yml, "--launcher", "pytorch"], tmp_path / "ddp", python_args=torchrun)
    single = start_cli(["train", "-opt", single_yml], tmp_path / "single")
    for name, proc in (("torchrun", ddp), ("single process", single)):
        result = finish_cli(proc, timeout=300)
        assert result.returncode == 0, f"{name} failed:\n{result.stdout[-3000:]}\n{result.stderr[-3000:]}"

    exp = {name: tmp_path / name / "experiments" / name for name in ("ddp", "single")}
    logs = {name: next(path.glob("train_*.log")).read_text() for name, path in exp.items()}
    assert "World size (gpu number): 2" in logs["ddp"] and "Batch size per gpu: 2" in logs["ddp"]
    assert "World size (gpu number): 1" in logs["single"] and "Batch size per gpu: 4" in logs["single"]

    losses = {name: logged_losses(log) for name, log in logs.items()}
    assert sorted(losses["ddp"]) == sorted(losses["single"]) == [1, 2, 3, 4]
    for it, values in losses["single"].items():
        assert set(values) == set(losses["ddp"][it]) and "l_pix" in values
        for key, value in values.items():
            assert losses["ddp"][it][key] == pytest.approx(value, rel=1e-3, abs=1e-6), (it, key)

    weights = {name: torch.load(path / "models" / "net_g_4.pth")["params"] for name, path in exp.items()}
    diff = max((weights["ddp"][k].float() - v.float()).abs().max().item() for k, v in weights["single"].items())
    assert diff <= 1e-4, diff

    # Only rank 0 wrote: one log, one copy of the options, each checkpoint and state once, nothing else.
    files = _files(tmp_path / "ddp")
    log_name = next(exp["ddp"].glob("train_*.log")).name
    assert files == sorted(["cli.err", "cli.out", "experiments/ddp/ddp.yml", f"experiments/ddp/{log_name}",
                            "experiments/ddp/models/net_g_2.pth", "experiments/ddp/models/net_g_4.pth",
                            "experiments/ddp/models/net_g_latest.pth", "experiments/ddp/training_states/2.state",
                            "experiments/ddp/training_states/4.state"]), files
    assert len(re.findall(r"Saving models and training states", logs["ddp"])) == 2


def test_ranks_agree_to_skip_a_step_that_is_non_finite_on_any_rank(monkeypatch):
    """A rank whose own loss is finite still skips when another rank's is not (no DDP hang)."""
    model = SimpleNamespace(opt={"dist": True})
    monkeypatch.setattr(dist, "is_initialized", lambda: True)
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: tensor.zero_())  # another rank: non-finite
    assert HERSRModel._loss_is_finite(model, torch.tensor(0.5)) is False
    monkeypatch.setattr(dist, "all_reduce", lambda tensor, op: tensor)  # every rank finite
    assert HERSRModel._loss_is_finite(model, torch.tensor(0.5)) is True
    assert HERSRModel._loss_is_finite(SimpleNamespace(opt={"dist": False}), torch.tensor(float("nan"))) is False


def test_a_finished_run_closes_its_process_group(monkeypatch):
    """BasicSR leaves the process group open; ranks exiting while another still uses it can abort.
    ``basicsr train`` closes it after the pipeline returns."""
    from hersr_arch.cli import basicsr_cli

    def pipeline(root_path):
        dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{free_port()}", rank=0, world_size=1)

    monkeypatch.setattr(basicsr_cli.basicsr.train, "train_pipeline", pipeline)
    monkeypatch.setattr(basicsr_cli, "apply_patches", lambda: None)
    monkeypatch.setattr(basicsr_cli, "_option_path", lambda rest: None)
    assert basicsr_cli.main(["train"]) == 0
    assert not dist.is_initialized()
