"""Small helpers for end-to-end tests: tiny paired data, option files, the CLI in a subprocess, logs.

A plain module (not a conftest), imported by the tests as ``from tests.helpers import ...``.
"""

from __future__ import annotations

import importlib.util
import logging
import os
import re
import socket
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import cv2
import numpy as np
import yaml

# The tree whose ``hersr_arch`` this test process imports; subprocesses import the same one.
PACKAGE_ROOT = Path(importlib.util.find_spec("hersr_arch").origin).parent.parent

TINY_MSRRESNET = {
    "type": "MSRResNet",
    "num_in_ch": 3,
    "num_out_ch": 3,
    "num_feat": 8,
    "num_block": 1,
    "upscale": 4,
}


def write_paired_dataset(
    root: str | os.PathLike, num_images: int = 8, size: int = 64, scale: int = 4, seed: int = 0
) -> tuple[Path, Path]:
    """Write ``num_images`` random ``size``×``size`` GT PNGs and their bicubic ×``scale`` LR.

    The images are smooth random colour fields (noise upsampled), so that PSNR is meaningful.
    Returns ``(gt_dir, lq_dir)`` = ``root/GT``, ``root/LQ``; file names match (``0000.png``...).
    """
    rng = np.random.default_rng(seed)
    gt_dir, lq_dir = Path(root) / "GT", Path(root) / "LQ"
    gt_dir.mkdir(parents=True, exist_ok=True)
    lq_dir.mkdir(parents=True, exist_ok=True)
    for i in range(num_images):
        coarse = rng.integers(0, 256, (size // 8, size // 8, 3), dtype=np.uint8)
        gt = cv2.resize(coarse, (size, size), interpolation=cv2.INTER_CUBIC)
        lq = cv2.resize(gt, (size // scale, size // scale), interpolation=cv2.INTER_CUBIC)
        cv2.imwrite(str(gt_dir / f"{i:04d}.png"), gt)
        cv2.imwrite(str(lq_dir / f"{i:04d}.png"), lq)
    return gt_dir, lq_dir


def write_yaml(path: str | os.PathLike, opt: dict) -> Path:
    """Write ``opt`` as a YAML option file (folders created) and return its path."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(yaml.safe_dump(opt, sort_keys=False), encoding="utf-8")
    return path


def paired_dataset_opt(name: str, gt_dir: str | os.PathLike, lq_dir: str | os.PathLike, **overrides) -> dict:
    """A ``PairedImageDataset`` entry of ``datasets:`` (disk backend), for validation or test."""
    opt = {
        "name": name,
        "type": "PairedImageDataset",
        "dataroot_gt": str(gt_dir),
        "dataroot_lq": str(lq_dir),
        "io_backend": {"type": "disk"},
    }
    opt.update(overrides)
    return opt


def basicsr_train_options(
    name: str,
    train_dirs: tuple,
    val_dirs: tuple,
    network_g: dict | None = None,
    *,
    scale: int = 4,
    total_iter: int = 4,
    checkpoint_freq: int = 2,
    val_freq: int = 2,
    model_type: str = "SRModel",
    gt_size: int = 32,
) -> dict:
    """Option dict for a few CPU iterations of ``basicsr train`` (``num_gpu: 0``, no workers).

    Args:
        name: experiment name (``experiments/<name>/``).
        train_dirs: ``(gt_dir, lq_dir)`` of the training pairs.
        val_dirs: ``(gt_dir, lq_dir)`` of the validation pairs (set name 'val', metric psnr).
        network_g: ``network_g`` entry. Default: a tiny MSRResNet ×4.
    """
    train_set = paired_dataset_opt(
        "train",
        *train_dirs,
        filename_tmpl="{}",
        gt_size=gt_size,
        use_hflip=True,
        use_rot=True,
        num_worker_per_gpu=0,
        batch_size_per_gpu=2,
        dataset_enlarge_ratio=1,
        prefetch_mode=None,
    )
    return {
        "name": name,
        "model_type": model_type,
        "scale": scale,
        "num_gpu": 0,
        "manual_seed": 0,
        "datasets": {"train": train_set, "val": paired_dataset_opt("val", *val_dirs)},
        "network_g": dict(network_g or TINY_MSRRESNET),
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None},
        "train": {
            "ema_decay": 0,
            "optim_g": {"type": "Adam", "lr": 2e-4, "weight_decay": 0, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [total_iter * 10], "gamma": 0.5},
            "total_iter": total_iter,
            "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
        },
        "val": {
            "val_freq": val_freq,
            "save_img": False,
            "metrics": {"psnr": {"type": "calculate_psnr", "crop_border": scale, "test_y_channel": True}},
        },
        "logger": {
            "print_freq": 1,
            "save_checkpoint_freq": checkpoint_freq,
            "use_tb_logger": False,
            "wandb": {"project": None, "resume_id": None},
        },
    }


def basicsr_test_options(
    name: str,
    test_sets: dict,
    network_g: dict | None = None,
    pretrain_network_g: str | os.PathLike | None = None,
    *,
    scale: int = 4,
    model_type: str = "SRModel",
    num_gpu: int | str = "auto",
) -> dict:
    """Option dict for ``basicsr test``: PSNR and SSIM on the Y channel for each set.

    Args:
        test_sets: ``{set_name: (gt_dir, lq_dir)}``.
        network_g: ``network_g`` entry. Default: a tiny MSRResNet ×4.
        pretrain_network_g: checkpoint to load (``params`` key), or None for a random network.
    """
    datasets = {
        f"test_{i + 1}": paired_dataset_opt(set_name, *dirs)
        for i, (set_name, dirs) in enumerate(test_sets.items())
    }
    metric = {"crop_border": scale, "test_y_channel": True}
    return {
        "name": name,
        "model_type": model_type,
        "scale": scale,
        "num_gpu": num_gpu,
        "manual_seed": 0,
        "datasets": datasets,
        "network_g": dict(network_g or TINY_MSRRESNET),
        "path": {
            "pretrain_network_g": None if pretrain_network_g is None else str(pretrain_network_g),
            "strict_load_g": True,
            "param_key_g": "params",
        },
        "val": {
            "save_img": False,
            "suffix": None,
            "metrics": {
                "psnr": {"type": "calculate_psnr", **metric},
                "ssim": {"type": "calculate_ssim", **metric},
            },
        },
    }


def free_port() -> int:
    """A TCP port on 127.0.0.1 that is free now."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def run_cli(
    args: list[str],
    cwd: str | os.PathLike,
    module: str = "hersr_arch.cli.basicsr_cli",
    env: dict | None = None,
    timeout: float = 300,
) -> subprocess.CompletedProcess:
    """Run ``python -m <module> <args>`` in ``cwd`` with this tree importable; capture the output."""
    full_env = {**os.environ, **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), full_env.get("PYTHONPATH")) if p)
    return subprocess.run(
        [sys.executable, "-m", module, *map(str, args)],
        cwd=cwd,
        env=full_env,
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def write_basicsr_test_log(
    results_root: str | os.PathLike,
    name: str,
    results: dict,
    scale: int | None = None,
    time_str: str | None = None,
    network: dict | None = None,
) -> Path:
    """Write ``results_root/<name>/test_<name>_<time>.log`` through BasicSR's own logging code.

    The file handler comes from ``basicsr.utils.get_root_logger`` and the lines from
    ``basicsr.utils.options.dict2str`` and ``SRModel._log_validation_metric_values``, exactly as in
    ``basicsr test``, so the file has the real format.

    Args:
        results: ``{set_name: {metric: value}}``, e.g. ``{'Set5': {'psnr': 32.1, 'ssim': 0.89}}``.
        scale: recorded as ``scale`` in the option dump when given.
        time_str: ``YYYYmmdd_HHMMSS`` of the file name. Default: now.
        network: recorded as ``network_g`` in the option dump when given.
    """
    from hersr_arch._compat import apply_torchvision_compat

    apply_torchvision_compat()
    from basicsr.models.sr_model import SRModel
    from basicsr.utils import get_root_logger, get_time_str
    from basicsr.utils.options import dict2str

    log_path = Path(results_root) / name / f"test_{name}_{time_str or get_time_str()}.log"
    log_path.parent.mkdir(parents=True, exist_ok=True)
    file_logger = get_root_logger(logger_name=f"hersr_tests.{log_path}", log_file=str(log_path))
    file_handler = next(h for h in file_logger.handlers if isinstance(h, logging.FileHandler))
    logger = get_root_logger()  # 'basicsr', where _log_validation_metric_values writes
    old_level = logger.level
    logger.setLevel(logging.INFO)
    logger.addHandler(file_handler)
    try:
        opt = {"name": name, "model_type": "SRModel", "num_gpu": 0, "manual_seed": 0}
        if scale is not None:
            opt["scale"] = scale
        if network is not None:
            opt["network_g"] = network
        logger.info(dict2str(opt))
        for set_name, values in results.items():
            logger.info(f"Testing {set_name}...")
            model = SimpleNamespace(
                metric_results=dict(values),
                best_metric_results={
                    set_name: {m: {"better": "higher", "val": v, "iter": name} for m, v in values.items()}
                },
            )
            SRModel._log_validation_metric_values(model, name, set_name, None)
    finally:
        logger.removeHandler(file_handler)
        logger.setLevel(old_level)
        file_logger.handlers.clear()
        file_handler.close()
    return log_path


# ---------------------------------------------------------------------------------------------
# Reliability tests: hashes, subprocesses that run side by side or get killed, logged losses
# ---------------------------------------------------------------------------------------------


def yaml_network(net_type: str = "HERSR", **kwargs) -> dict:
    """A ``network_g`` entry for a YAML file: tuples become lists (``yaml.safe_dump`` needs that)."""
    return {"type": net_type, **{k: list(v) if isinstance(v, tuple) else v for k, v in kwargs.items()}}


def file_hashes(*roots: str | os.PathLike) -> dict[str, str]:
    """``{path: sha256}`` of every file under ``roots`` (files or folders), to prove nothing changed."""
    import hashlib

    hashes = {}
    for root in map(Path, roots):
        for path in sorted([root] if root.is_file() else root.rglob("*")):
            if path.is_file():
                hashes[str(path)] = hashlib.sha256(path.read_bytes()).hexdigest()
    return hashes


def cli_env(env: dict | None = None) -> dict:
    """Environment for a CLI subprocess: this tree importable, one OpenMP thread per process.

    One thread keeps tiny networks fast (threads cost more than they give at this size) and immune to
    a busy machine, where spinning OpenMP threads can slow a 2-core run down a hundredfold.
    """
    full_env = {**os.environ, "OMP_NUM_THREADS": "1", **(env or {})}
    full_env["PYTHONPATH"] = os.pathsep.join(p for p in (str(PACKAGE_ROOT), full_env.get("PYTHONPATH")) if p)
    return full_env


def start_cli(
    args: list[str],
    cwd: str | os.PathLike,
    module: str | None = "hersr_arch.cli.basicsr_cli",
    env: dict | None = None,
    python_args: list[str] | None = None,
) -> subprocess.Popen:
    """Start ``python -m <module> <args>`` in ``cwd`` without waiting; output goes to ``cwd/cli.out|err``.

    ``python_args`` replaces ``-m <module>`` (e.g. ``['-m', 'torch.distributed.run', ...]`` or a script).
    Collect the result with :func:`finish_cli`.
    """
    cwd = Path(cwd)
    cwd.mkdir(parents=True, exist_ok=True)
    head = python_args if python_args is not None else ["-m", module]
    with open(cwd / "cli.out", "w") as out, open(cwd / "cli.err", "w") as err:
        proc = subprocess.Popen([sys.executable, *head, *map(str, args)], cwd=cwd, env=cli_env(env),
                                stdout=out, stderr=err, text=True)
    proc.output_dir = cwd
    return proc


def finish_cli(proc: subprocess.Popen, timeout: float = 300) -> subprocess.CompletedProcess:
    """Wait for a :func:`start_cli` process (killed after ``timeout``); its exit status and output."""
    try:
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        proc.kill()
        proc.wait()
    out = (proc.output_dir / "cli.out").read_text(errors="replace")
    err = (proc.output_dir / "cli.err").read_text(errors="replace")
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def wait_for(predicate, timeout: float, proc: subprocess.Popen | None = None, what: str = "condition") -> None:
    """Poll ``predicate()`` every 20 ms until it is true; fail if ``proc`` exits first or time runs out."""
    import time

    deadline = time.monotonic() + timeout
    while not predicate():
        if proc is not None and proc.poll() is not None:
            raise AssertionError(f"the process exited ({proc.returncode}) before {what}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {timeout} s waiting for {what}")
        time.sleep(0.02)


_LOSS_LINE = re.compile(r"iter:\s*(\d+),.*\]\s((?:\w+: [-+.\deE]+\s*)+)$")


def logged_losses(log_text: str) -> dict[int, dict[str, float]]:
    """``{iter: {name: value}}`` from the lines BasicSR's ``MessageLogger`` writes for each iteration."""
    losses = {}
    for line in log_text.splitlines():
        m = _LOSS_LINE.search(line.rstrip())
        if m:
            pairs = re.findall(r"(\w+): ([-+.\deE]+)", m.group(2))
            losses[int(m.group(1))] = {k: float(v) for k, v in pairs}
    return losses


def hersr_model_options(root, network: dict, name: str = "model", **train) -> dict:
    """In-process ``HERSRModel`` options on the CPU: ``network`` as ``network_g``, every output path
    ``root``, Adam and L1 unless ``train`` overrides them, no validation."""
    paths = {key: str(root) for key in ("experiments_root", "models", "training_states", "log", "visualization")}
    return {
        "name": name, "model_type": "HERSRModel", "scale": network.get("upscale", 1), "num_gpu": 0,
        "dist": False, "rank": 0, "world_size": 1, "is_train": True, "network_g": network,
        "path": {"pretrain_network_g": None, "strict_load_g": True, "resume_state": None, **paths},
        "train": {
            "optim_g": {"type": "Adam", "lr": 1e-3, "betas": [0.9, 0.99]},
            "scheduler": {"type": "MultiStepLR", "milestones": [10**6], "gamma": 0.5},
            "total_iter": 10, "warmup_iter": -1,
            "pixel_opt": {"type": "L1Loss", "loss_weight": 1.0, "reduction": "mean"},
            **train,
        },
        "val": None,
    }  # fmt: skip


def undo_basicsr_patches_with(monkeypatch) -> None:
    """Have ``monkeypatch`` put back, when it undoes its changes, every BasicSR attribute that
    ``apply_patches`` replaces: ``basicsr_cli.main`` run in-process patches BasicSR for good, and
    later tests in the same worker must find BasicSR as it was."""
    from hersr_arch.cli.basicsr_patches import PATCHES

    for patch in PATCHES:
        monkeypatch.setattr(patch.owner, patch.attribute, getattr(patch.owner, patch.attribute))
