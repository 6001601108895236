"""Crashes lose nothing: atomic checkpoints, SIGKILL then ``--auto_resume``, kill during a save, NaN stop.

The end-to-end tests run the real ``basicsr train`` in a subprocess on a tiny HERSR and kill it with
SIGKILL at a moment chosen by the files it has written (never by a sleep). The kill "during a save"
runs ``basicsr`` through a driver script whose ``os.replace`` holds back the rename of one named
file: its temporary file is complete, and the test kills the process as soon as it exists.
"""

from __future__ import annotations

import math
import os
import re
import signal
import textwrap
from pathlib import Path
from types import SimpleNamespace

import pytest
import torch

from hersr_arch.cli import checkpoint_io
from tests.helpers import (
    basicsr_train_options,
    file_hashes,
    finish_cli,
    logged_losses,
    start_cli,
    wait_for,
    write_paired_dataset,
    write_yaml,
    yaml_network,
)
from tests.networks import TINY

NET = yaml_network("HERSR", upscale=4, **TINY)


# ---------------------------------------------------------------------------------------------
# Atomic writes, in-process
# ---------------------------------------------------------------------------------------------


class _Unpicklable:
    def __reduce__(self):
        raise RuntimeError("simulated crash in the middle of torch.save")


def test_failed_save_keeps_the_previous_file(tmp_path):
    path = tmp_path / "net_g_latest.pth"
    checkpoint_io.atomic_torch_save({"params": {"w": torch.ones(3)}}, path)
    before = file_hashes(path)
    with pytest.raises(RuntimeError, match="simulated crash"):
        checkpoint_io.atomic_torch_save({"params": {"w": torch.zeros(1000)}, "x": _Unpicklable()}, path)
    assert file_hashes(path) == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["net_g_latest.pth"], "temporary file left behind"
    assert torch.equal(torch.load(path)["params"]["w"], torch.ones(3))


def test_stale_temporaries_of_killed_processes_are_removed(tmp_path):
    stale = tmp_path / ".4.state.999999.tmp"
    stale.write_bytes(b"partial")
    own = tmp_path / f".6.state.{os.getpid()}.tmp"
    own.write_bytes(b"being written")
    other = tmp_path / ".hidden.tmp"  # not ours: no pid field
    other.write_bytes(b"x")
    assert checkpoint_io.remove_stale_temporaries(tmp_path) == [stale]
    assert own.exists() and other.exists()


def _fake_model(tmp_path: Path, name: str) -> SimpleNamespace:
    """What ``save_network`` / ``save_training_state`` read from a BasicSR model."""
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 2)
    optimizer = torch.optim.Adam(net.parameters(), lr=1e-3)
    net(torch.rand(4, 3)).sum().backward()
    optimizer.step()
    scheduler = torch.optim.lr_scheduler.MultiStepLR(optimizer, [10], 0.5)
    paths = {"models": tmp_path / name / "models", "training_states": tmp_path / name / "states"}
    for folder in paths.values():
        folder.mkdir(parents=True)
    return SimpleNamespace(net=net, opt={"path": {k: str(v) for k, v in paths.items()}},
                           get_bare_model=lambda n: n, optimizers=[optimizer], schedulers=[scheduler])


def _assert_same(a, b, where="root"):
    assert type(a) is type(b), where
    if isinstance(a, torch.Tensor):
        assert torch.equal(a, b), where
    elif isinstance(a, dict):
        assert list(a) == list(b), where
        for key in a:
            _assert_same(a[key], b[key], f"{where}.{key}")
    elif isinstance(a, (list, tuple)):
        assert len(a) == len(b), where
        for i, (x, y) in enumerate(zip(a, b)):
            _assert_same(x, y, f"{where}[{i}]")
    else:
        assert a == b, where


def test_same_files_and_contents_as_basicsr(tmp_path):
    from basicsr.models.base_model import BaseModel

    theirs, ours = _fake_model(tmp_path, "basicsr"), _fake_model(tmp_path, "hersr")
    basicsr_save_network = BaseModel.__dict__["save_network"]
    basicsr_save_state = BaseModel.__dict__["save_training_state"]
    assert basicsr_save_network is not checkpoint_io.save_network, "BaseModel is already patched here"
    for model, save_network, save_state in ((theirs, basicsr_save_network, basicsr_save_state),
                                            (ours, checkpoint_io.save_network, checkpoint_io.save_training_state)):
        save_network(model, model.net, "net_g", 5)
        save_network(model, [model.net, model.net], "net_g", -1, param_key=["params", "params_ema"])
        save_state(model, 1, 5)
        save_state(model, 1, -1)  # BasicSR saves no state for the final 'latest' save
    for sub in ("models/net_g_5.pth", "models/net_g_latest.pth", "states/5.state"):
        _assert_same(torch.load(tmp_path / "basicsr" / sub, weights_only=False),
                     torch.load(tmp_path / "hersr" / sub, weights_only=False), sub)
    assert sorted(os.listdir(tmp_path / "hersr" / "models")) == ["net_g_5.pth", "net_g_latest.pth"]
    assert os.listdir(tmp_path / "hersr" / "states") == ["5.state"]


def test_only_rank_0_writes(tmp_path, monkeypatch):
    import basicsr.utils.dist_util as dist_util

    model = _fake_model(tmp_path, "ranks")
    monkeypatch.setattr(dist_util, "get_dist_info", lambda: (1, 2))
    checkpoint_io.save_network(model, model.net, "net_g", 2)
    checkpoint_io.save_training_state(model, 0, 2)
    assert not any(any(Path(p).iterdir()) for p in model.opt["path"].values()), "rank 1 wrote a file"
    monkeypatch.setattr(dist_util, "get_dist_info", lambda: (0, 2))
    checkpoint_io.save_network(model, model.net, "net_g", 2)
    checkpoint_io.save_training_state(model, 0, 2)
    assert (Path(model.opt["path"]["models"]) / "net_g_2.pth").is_file()
    assert (Path(model.opt["path"]["training_states"]) / "2.state").is_file()


# ---------------------------------------------------------------------------------------------
# basicsr train, killed
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def pairs(tmp_path_factory):
    return write_paired_dataset(tmp_path_factory.mktemp("crash_data"), 6, size=48)


def _options(name, pairs, total_iter=1000, checkpoint_freq=2, **train_extra) -> dict:
    opt = basicsr_train_options(name, pairs, pairs, dict(NET), model_type="HERSRModel", total_iter=total_iter,
                                checkpoint_freq=checkpoint_freq, gt_size=32)
    del opt["datasets"]["val"]
    opt["val"] = None
    opt["train"].update(train_extra)
    return opt


def _load_all(exp: Path) -> dict[str, dict]:
    """Every checkpoint and state of the experiment, loaded (fails on a damaged file)."""
    files = sorted([*exp.glob("models/*.pth"), *exp.glob("training_states/*.state")])
    return {p.name: torch.load(p, map_location="cpu", weights_only=False) for p in files}


def _kill(proc):
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)
    assert proc.returncode == -signal.SIGKILL


def _logs(exp: Path) -> list[str]:
    return [p.read_text() for p in sorted(exp.glob("train_*.log"))]


SPY = textwrap.dedent(
    """
    # Runs `basicsr` and records the optimizer and scheduler states right after BasicSR resumed them.
    import sys

    import torch

    import hersr_arch  # noqa: F401
    from basicsr.models.base_model import BaseModel
    from hersr_arch.cli.basicsr_cli import main

    resume_training = BaseModel.resume_training

    def spy(self, resume_state):
        resume_training(self, resume_state)
        torch.save({"optimizers": [o.state_dict() for o in self.optimizers],
                    "schedulers": [s.state_dict() for s in self.schedulers]}, "resumed_in_memory.pt")

    BaseModel.resume_training = spy
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_sigkill_then_auto_resume_continues_from_the_last_state(tmp_path, pairs):
    yml = write_yaml(tmp_path / "inputs" / "train.yml", _options("killed", pairs))
    inputs = file_hashes(tmp_path / "inputs", pairs[0].parent)
    exp = tmp_path / "run" / "experiments" / "killed"
    proc = start_cli(["train", "-opt", yml], tmp_path / "run")
    wait_for(lambda: (exp / "training_states" / "4.state").is_file(), 120, proc, "the second checkpoint")
    _kill(proc)

    saved = _load_all(exp)  # every file on disk is complete
    last = max(int(n.split(".")[0]) for n in saved if n.endswith(".state"))
    assert last >= 4 and f"net_g_{last}.pth" in saved
    state = saved[f"{last}.state"]
    assert state["iter"] == last and "net_g_latest.pth" not in saved

    (tmp_path / "run" / "spy.py").write_text(SPY)
    args = ["train", "-opt", yml, "--auto_resume", "--force_yml", f"train:total_iter={last + 3}"]
    result = finish_cli(start_cli(args, tmp_path / "run", python_args=["spy.py"]), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]

    # It resumed from the last saved iteration, with exactly the saved optimizer and scheduler states.
    log = _logs(exp)[-1]
    assert re.search(rf"Resuming training from epoch: \d+, iter: {last}\.", log), log[-3000:]
    assert sorted(logged_losses(log)) == [last + 1, last + 2, last + 3]
    resumed = torch.load(tmp_path / "run" / "resumed_in_memory.pt", weights_only=False)
    _assert_same(resumed["optimizers"], state["optimizers"], "optimizers")
    _assert_same(resumed["schedulers"], state["schedulers"], "schedulers")

    # ... and finished, with Adam's step count and the scheduler continuing the killed run's.
    final = _load_all(exp)
    assert "net_g_latest.pth" in final
    end = final[f"{last + 2}.state"]
    assert {float(s["step"]) for s in end["optimizers"][0]["state"].values()} == {float(last + 2)}
    assert end["schedulers"][0]["last_epoch"] == state["schedulers"][0]["last_epoch"] + 2
    assert file_hashes(tmp_path / "inputs", pairs[0].parent) == inputs


SLOW_RENAME = textwrap.dedent(
    """
    # Runs `basicsr`; the rename that completes the save of 4.state waits, so the process can be killed
    # while that save is under way (its temporary file written, the final name not yet there).
    import os
    import sys
    import time

    from hersr_arch.cli.basicsr_cli import main

    replace = os.replace

    def slow_replace(src, dst, *args, **kwargs):
        if os.path.basename(str(dst)) == "4.state":
            time.sleep(120)
        return replace(src, dst, *args, **kwargs)

    os.replace = slow_replace
    sys.exit(main(sys.argv[1:]))
    """
)


@pytest.mark.slow
def test_kill_during_a_save_leaves_the_last_files_intact(tmp_path, pairs):
    yml = write_yaml(tmp_path / "inputs" / "train.yml", _options("mid_save", pairs))
    exp = tmp_path / "run" / "experiments" / "mid_save"
    states = exp / "training_states"
    (tmp_path / "run").mkdir(parents=True, exist_ok=True)
    (tmp_path / "run" / "slow_rename.py").write_text(SLOW_RENAME)
    proc = start_cli(["train", "-opt", yml], tmp_path / "run", python_args=["slow_rename.py"])
    wait_for(lambda: any(states.glob(".4.state.*.tmp")), 120, proc, "the temporary file of 4.state")
    _kill(proc)

    assert not (states / "4.state").exists(), "a partial 4.state was left under its final name"
    assert len(list(states.glob(".4.state.*.tmp"))) == 1
    saved = _load_all(exp)
    assert sorted(saved) == ["2.state", "net_g_2.pth", "net_g_4.pth"]
    assert saved["2.state"]["iter"] == 2

    args = ["train", "-opt", yml, "--auto_resume", "--force_yml", "train:total_iter=6"]
    result = finish_cli(start_cli(args, tmp_path / "run"), timeout=240)
    assert result.returncode == 0, result.stdout[-3000:] + result.stderr[-3000:]
    assert re.search(r"Resuming training from epoch: \d+, iter: 2\.", _logs(exp)[-1])
    final = _load_all(exp)
    assert {"4.state", "6.state", "net_g_6.pth", "net_g_latest.pth"} <= set(final)
    assert final["6.state"]["iter"] == 6
    assert not list(exp.rglob("*.tmp")), "the killed run's temporary file was not cleaned up"


@pytest.mark.slow
def test_consecutive_nonfinite_steps_stop_training_and_keep_the_last_checkpoint(tmp_path, pairs):
    # Deterministic blow-up: at iteration 5 the learning rate jumps to 2e36 (MultiStepLR, gamma 1e40), so
    # the weights become huge and every later loss is non-finite. Checkpoints every 4 iterations.
    opt = _options("nan", pairs, total_iter=12, checkpoint_freq=4, max_nonfinite_steps=2)
    opt["train"]["scheduler"] = {"type": "MultiStepLR", "milestones": [5], "gamma": 1e40}
    yml = write_yaml(tmp_path / "inputs" / "train.yml", opt)
    result = finish_cli(start_cli(["train", "-opt", yml], tmp_path / "run"), timeout=240)

    err = result.stderr.strip()
    assert result.returncode == 1, result.stdout[-3000:] + err[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    assert err.splitlines()[-1].startswith("basicsr train: error: 2 consecutive non-finite steps "
                                           "(train.max_nonfinite_steps: 2): training stopped"), err
    exp = tmp_path / "run" / "experiments" / "nan"
    log = _logs(exp)[-1]
    assert log.count("Non-finite generator step skipped") == 2
    assert "training stopped. The last saved checkpoint is intact" in log
    saved = _load_all(exp)
    assert sorted(saved) == ["4.state", "net_g_4.pth"], sorted(saved)
    params = saved["net_g_4.pth"]["params"]
    assert all(torch.isfinite(v).all() for v in params.values() if v.is_floating_point())
    assert max(v.abs().max().item() for v in params.values() if v.is_floating_point()) < 1e3
    assert saved["4.state"]["iter"] == 4
    assert math.isclose(saved["4.state"]["optimizers"][0]["param_groups"][0]["lr"], 2e-4)



def test_auto_resume_skips_an_unreadable_state(tmp_path, monkeypatch, capsys):
    """A truncated newest state (as BasicSR's non-atomic save could leave) falls back to the previous one."""
    from hersr_arch.cli import basicsr_patches

    monkeypatch.chdir(tmp_path)
    states = tmp_path / "experiments" / "exp" / "training_states"
    states.mkdir(parents=True)
    for it in (2, 4):
        torch.save({"epoch": 0, "iter": it, "optimizers": [], "schedulers": []}, states / f"{it}.state")
    (states / "4.state").write_bytes((states / "4.state").read_bytes()[:100])
    opt = {"name": "exp", "auto_resume": True, "num_gpu": 0, "network_g": {},
           "path": {"models": "experiments/exp/models", "resume_state": None}}
    assert basicsr_patches.load_resume_state(opt)["iter"] == 2
    assert opt["path"]["resume_state"].endswith("2.state")
    assert opt["path"]["pretrain_network_g"].endswith("net_g_2.pth")
    assert "skipping unreadable training state experiments/exp/training_states/4.state" in capsys.readouterr().err
