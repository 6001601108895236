"""The ``basicsr`` command: BasicSR 1.4.2's own train and test pipelines, with HERSR registered.

BasicSR 1.4.2 ships ``basicsr/train.py`` and ``basicsr/test.py`` but no console script. This module
is that script. It runs ``basicsr.train.train_pipeline`` / ``basicsr.test.test_pipeline`` unchanged,
after importing ``hersr_arch`` (which registers HERSR's archs, models, datasets and losses)::

    basicsr train -opt options/train_hersr_x4.yml [--launcher none|pytorch|slurm] [--auto_resume]
                  [--debug] [--local_rank N] [--force_yml train:ema_decay=0.999 ...]
    basicsr test -opt options/test_hersr_x4.yml
    torchrun --nproc_per_node 2 -m hersr_arch.cli.basicsr_cli train -opt X.yml --launcher pytorch

``experiments/``, ``results/`` and ``tb_logger/`` are created under the current working directory
(BasicSR's own scripts put them next to the installed package).

BasicSR's train/test path assumes CUDA in a few places; ``patch_basicsr_for_cpu`` replaces those
few functions at run time (site-packages is never edited), so that training, resuming, testing and
``--launcher pytorch`` also work on a machine without a GPU. Each replacement says which BasicSR
line it works around. ``patch_basicsr_for_reliability`` makes checkpoints and training states
crash-safe (written atomically, see ``hersr_arch.cli.checkpoint_io``) and adds the top-level option
``deterministic: true`` (or ``'warn'``); ``--auto_resume`` skips an unreadable training state.

Before BasicSR starts, the option file is checked (``hersr_arch.option_checks``): a mistake in it
(unknown network keyword, missing dataset folder or LMDB key, GT/LQ sizes that do not fit the scale,
a truncated or foreign checkpoint, an output folder that cannot be written...) is one line on
stderr and exit status 2, with no traceback and before any folder is created or archived. Training
stopped by too many non-finite steps is one line and exit status 1.
"""

import argparse
import copy
import os
import subprocess
import sys
from collections.abc import Sequence

import torch
import torch.distributed as dist
import yaml

from hersr_arch._compat import apply_torchvision_compat
from hersr_arch.option_checks import OptionError, check_options

apply_torchvision_compat()

import basicsr.test  # noqa: E402
import basicsr.train  # noqa: E402
import basicsr.utils.dist_util  # noqa: E402
from basicsr.models.base_model import BaseModel  # noqa: E402
from basicsr.utils import check_resume, get_root_logger, scandir  # noqa: E402
from basicsr.utils.options import _postprocess_yml_value, ordered_yaml  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from hersr_arch.cli import checkpoint_io  # noqa: E402

COMMANDS = ("train", "test")
# Top-level keys that BasicSR reads without a default (utils/options.py parse_options, train.py).
_REQUIRED_KEYS = {
    "train": ("name", "num_gpu", "datasets", "path", "train", "logger"),
    "test": ("name", "num_gpu", "datasets", "path", "val"),
}


class OptionFileError(Exception):
    """The option file is missing, unreadable, not YAML, or lacks a key BasicSR requires."""


# --------------------------------------------------------------------------------------------
# CPU fixes for BasicSR 1.4.2
# --------------------------------------------------------------------------------------------


def _cuda_device_and_backend(backend: str, local_rank: int) -> str:
    """Select the GPU of this process and return ``backend``; without CUDA return ``'gloo'``."""
    if torch.cuda.is_available():
        torch.cuda.set_device(local_rank % torch.cuda.device_count())
        return backend
    return "gloo"  # NCCL needs CUDA


def init_dist_pytorch(backend: str = "nccl", **kwargs) -> None:
    """Start ``torch.distributed`` for ``--launcher pytorch`` (torchrun), with or without CUDA.

    Replaces ``basicsr.utils.dist_util._init_dist_pytorch``: BasicSR 1.4.2 (dist_util.py,
    ``torch.cuda.set_device(rank % num_gpus)``) divides by ``torch.cuda.device_count()``, which is
    a ZeroDivisionError without a GPU, and always keeps ``init_dist``'s default ``nccl`` backend,
    which needs CUDA. Here: with CUDA the device comes from ``LOCAL_RANK`` (set by torchrun;
    ``RANK`` otherwise, as in BasicSR) and ``backend`` is kept; without CUDA the backend is gloo.

    Args:
        backend: process-group backend to use when CUDA is available. Default: 'nccl'.
        **kwargs: passed to ``torch.distributed.init_process_group``.
    """
    rank = int(os.environ["RANK"])
    local_rank = int(os.environ.get("LOCAL_RANK", rank))
    dist.init_process_group(backend=_cuda_device_and_backend(backend, local_rank), **kwargs)


_original_init_dist_slurm = basicsr.utils.dist_util._init_dist_slurm


def init_dist_slurm(backend: str = "nccl", port: int | None = None) -> None:
    """Start ``torch.distributed`` for ``--launcher slurm``, with or without CUDA.

    Replaces ``basicsr.utils.dist_util._init_dist_slurm``, which has the same
    ``proc_id % torch.cuda.device_count()`` division (and NCCL) as the pytorch launcher. With CUDA
    BasicSR's own function runs unchanged; without CUDA the same environment is set up (master
    address from ``scontrol``, ``MASTER_PORT`` from ``port``, the environment or 29500) and gloo
    is used.
    """
    if torch.cuda.is_available():
        _original_init_dist_slurm(backend, port)
        return
    proc_id = int(os.environ["SLURM_PROCID"])
    node_list = os.environ["SLURM_NODELIST"]
    os.environ["MASTER_ADDR"] = subprocess.getoutput(f"scontrol show hostname {node_list} | head -n1")
    if port is not None:
        os.environ["MASTER_PORT"] = str(port)
    os.environ.setdefault("MASTER_PORT", "29500")
    os.environ["WORLD_SIZE"] = os.environ["SLURM_NTASKS"]
    os.environ["LOCAL_RANK"] = os.environ.get("SLURM_LOCALID", "0")
    os.environ["RANK"] = str(proc_id)
    dist.init_process_group(backend="gloo")


def _warn(message: str) -> None:
    """A warning on stderr (BasicSR's logger must not be created before ``train_pipeline`` does)."""
    print(f"basicsr: warning: {message}", file=sys.stderr, flush=True)


def _resumable_states(opt: dict) -> list[str]:
    """``<iter>.state`` files of the experiment, newest first."""
    state_dir = os.path.join("experiments", opt["name"], "training_states")
    if not os.path.isdir(state_dir):
        return []
    iters = sorted((float(v.split(".state")[0]) for v in scandir(state_dir, suffix="state")), reverse=True)
    return [os.path.join(state_dir, f"{it:.0f}.state") for it in iters]


def load_resume_state(opt: dict) -> dict | None:
    """Load the training state to resume from, onto the GPU or, without one, the CPU.

    Replaces ``basicsr.train.load_resume_state``: BasicSR 1.4.2 (train.py,
    ``device_id = torch.cuda.current_device()`` and ``storage.cuda(device_id)``) raises on a
    machine without CUDA. The choice of the state file is BasicSR's: with ``--auto_resume`` the
    highest ``<iter>.state`` in ``experiments/<name>/training_states``, otherwise
    ``path: resume_state``; ``check_resume`` then points ``pretrain_network_*`` at the matching
    checkpoints, as in BasicSR. One addition: with ``--auto_resume``, a state that cannot be read
    (e.g. truncated by a crash while a BasicSR that saves non-atomically wrote it) is skipped with a
    warning, and the next older one is used.
    """
    if torch.cuda.is_available() and opt["num_gpu"] != 0:
        map_location = torch.device("cuda", torch.cuda.current_device())
    else:
        map_location = torch.device("cpu")
    if not opt["auto_resume"]:
        resume_state_path = opt["path"].get("resume_state")
        if not resume_state_path:
            return None
        resume_state = torch.load(resume_state_path, map_location=map_location)
        check_resume(opt, resume_state["iter"])
        return resume_state

    for resume_state_path in _resumable_states(opt):
        try:
            resume_state = torch.load(resume_state_path, map_location=map_location)
            resume_iter = resume_state["iter"]
        except Exception as e:  # torch raises many types for damaged files
            _warn(f"skipping unreadable training state {resume_state_path} ({type(e).__name__}: {str(e)[:120]}).")
            continue
        opt["path"]["resume_state"] = resume_state_path
        check_resume(opt, resume_iter)
        return resume_state
    return None


_original_model_to_device = BaseModel.model_to_device


def model_to_device(self: BaseModel, net: torch.nn.Module) -> torch.nn.Module:
    """Move ``net`` to the model's device; wrap it in DDP without ``device_ids`` on the CPU.

    Wraps ``BaseModel.model_to_device``: BasicSR 1.4.2 (models/base_model.py,
    ``DistributedDataParallel(net, device_ids=[torch.cuda.current_device()], ...)``) asks CUDA for
    the device even when the model lives on the CPU (``num_gpu: 0`` under ``--launcher pytorch``).
    """
    if not (self.opt["dist"] and self.device.type == "cpu"):
        return _original_model_to_device(self, net)
    find_unused_parameters = self.opt.get("find_unused_parameters", False)
    return DistributedDataParallel(net.to(self.device), find_unused_parameters=find_unused_parameters)


def _with_cpu_fallback(parse_options):
    """Wrap BasicSR's ``parse_options`` so that ``num_gpu > 0`` without CUDA falls back to the CPU.

    BasicSR 1.4.2 (models/base_model.py, ``torch.device('cuda' if opt['num_gpu'] != 0 ...)``)
    puts the model on CUDA whenever ``num_gpu`` is not 0, so an option file written for a GPU
    machine (``num_gpu: 1``) fails on a CPU-only one. ``num_gpu: auto`` already gives 0 there.
    """

    def parse_options_cpu_fallback(root_path, is_train=True):
        opt, args = parse_options(root_path, is_train=is_train)
        if opt["num_gpu"] and not torch.cuda.is_available():
            _warn(f"num_gpu: {opt['num_gpu']} but CUDA is not available, running on the CPU.")
            opt["num_gpu"] = 0
        return opt, args

    parse_options_cpu_fallback.hersr_cpu_fallback = True
    return parse_options_cpu_fallback


def patch_basicsr_for_cpu() -> None:
    """Install the CPU fixes above into BasicSR's modules (idempotent)."""
    basicsr.utils.dist_util._init_dist_pytorch = init_dist_pytorch
    basicsr.utils.dist_util._init_dist_slurm = init_dist_slurm
    basicsr.train.load_resume_state = load_resume_state
    BaseModel.model_to_device = model_to_device
    for module in (basicsr.train, basicsr.test):
        if not getattr(module.parse_options, "hersr_cpu_fallback", False):
            module.parse_options = _with_cpu_fallback(module.parse_options)


# --------------------------------------------------------------------------------------------
# Reliability: atomic checkpoints, deterministic algorithms
# --------------------------------------------------------------------------------------------


def use_deterministic_algorithms(mode) -> None:
    """Make training reproducible bit for bit (top-level option ``deterministic: true``).

    ``true``: ``torch.use_deterministic_algorithms(True)`` (an op without a deterministic
    implementation raises an error that names it), cuDNN deterministic and not benchmarking (BasicSR
    1.4.2 sets ``cudnn.benchmark = True`` in its pipelines, which picks algorithms by timing), and
    ``CUBLAS_WORKSPACE_CONFIG=:4096:8`` for deterministic cuBLAS. ``'warn'``: the same, but such an
    op only warns. ``false`` (the default): PyTorch's defaults. On the CPU, HERSR's ops are
    deterministic either way; the switch matters on GPUs.
    """
    if not mode:
        return
    os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
    torch.use_deterministic_algorithms(True, warn_only=mode == "warn")
    torch.backends.cudnn.deterministic = True
    torch.backends.cudnn.benchmark = False


def _with_determinism(build_model):
    """Wrap BasicSR's ``build_model``: apply ``deterministic`` after the pipeline's cuDNN setting."""

    def build_model_deterministic(opt):
        mode = opt.get("deterministic", False)
        use_deterministic_algorithms(mode)
        if mode:
            get_root_logger().info(f"Deterministic algorithms on (deterministic: {mode}), cuDNN benchmark off.")
        return build_model(opt)

    build_model_deterministic.hersr_deterministic = True
    return build_model_deterministic


def patch_basicsr_for_reliability() -> None:
    """Atomic ``save_network`` / ``save_training_state`` and the ``deterministic`` option (idempotent)."""
    BaseModel.save_network = checkpoint_io.save_network
    BaseModel.save_training_state = checkpoint_io.save_training_state
    for module in (basicsr.train, basicsr.test):
        if not getattr(module.build_model, "hersr_deterministic", False):
            module.build_model = _with_determinism(module.build_model)


# --------------------------------------------------------------------------------------------
# Command line
# --------------------------------------------------------------------------------------------


def check_option_file(path: str, command: str = "train") -> dict:
    """Read the option file as BasicSR will, or raise ``OptionFileError`` with a one-line reason."""
    if not os.path.isfile(path):
        raise OptionFileError(f"option file not found: {path}")
    try:
        with open(path, encoding="utf-8") as f:
            opt = yaml.load(f, Loader=ordered_yaml()[0])
    except (OSError, UnicodeDecodeError) as e:
        raise OptionFileError(f"cannot read option file {path}: {e}") from None
    except yaml.YAMLError as e:
        reason = " ".join(str(e).split())
        raise OptionFileError(f"cannot parse option file {path}: {reason}") from None
    if not isinstance(opt, dict):
        raise OptionFileError(f"option file {path} is not a YAML mapping of options")
    missing = [key for key in _REQUIRED_KEYS[command] if key not in opt]
    if missing:
        raise OptionFileError(f"option file {path} lacks required key(s): {', '.join(missing)}")
    return opt


def _known_args(args: Sequence[str]) -> argparse.Namespace:
    """``-opt``, ``--auto_resume`` and ``--force_yml`` as BasicSR will parse them."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-opt")
    parser.add_argument("--auto_resume", action="store_true")
    parser.add_argument("--force_yml", nargs="+", default=None)
    known, _ = parser.parse_known_args(args)
    return known


def _option_path(args: Sequence[str]) -> str | None:
    return _known_args(args).opt


def _apply_force_yml(opt: dict, entries: Sequence[str] | None) -> None:
    """``--force_yml a:b=value`` as BasicSR applies it (existing keys only), so checks see it too."""
    for entry in entries or ():
        keys, sep, value = entry.partition("=")
        node, *path = [k.strip() for k in keys.split(":")]
        if not sep:
            raise OptionError(f"--force_yml {entry!r} is not of the form key:subkey=value.")
        target = opt
        for key in [node, *path][:-1]:
            if not isinstance(target, dict) or key not in target:
                raise OptionError(f"--force_yml {entry!r}: the option file has no {keys.strip()!r} to change.")
            target = target[key]
        if not isinstance(target, dict):
            raise OptionError(f"--force_yml {entry!r}: the option file has no {keys.strip()!r} to change.")
        target[[node, *path][-1]] = _postprocess_yml_value(value.strip())


def preflight(opt: dict, command: str, args: Sequence[str], root_path: str) -> None:
    """Check the options BasicSR is about to run (``OptionError`` on the first mistake)."""
    known = _known_args(args)
    opt = copy.deepcopy(opt)
    _apply_force_yml(opt, known.force_yml)
    resuming = bool((opt.get("path") or {}).get("resume_state"))
    if command == "train" and known.auto_resume:
        resuming = resuming or bool(_resumable_states(opt))
    check_options(opt, command, root_path, resuming=resuming)


def close_process_group() -> None:
    """End a distributed run cleanly: wait for every rank, then tear the process group down.

    BasicSR leaves the group open. A rank that exits while another still saves its last checkpoint
    through the group can abort in gloo's threads ("terminate called without an active exception",
    exit -6), failing a run that finished.
    """
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        dist.barrier()
        dist.destroy_process_group()


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``basicsr train|test``; BasicSR parses the arguments after the command."""
    argv = list(sys.argv[1:] if argv is None else argv)
    parser = argparse.ArgumentParser(
        prog="basicsr",
        description="Run BasicSR 1.4.2's train or test pipeline with HERSR registered. "
        "Outputs go to experiments/, results/ and tb_logger/ under the current directory.",
        epilog="See 'basicsr train -h' for the options of a command.",
    )
    parser.add_argument(
        "command", choices=COMMANDS, help="run basicsr.train.train_pipeline or basicsr.test.test_pipeline"
    )
    if not argv or argv[0] not in COMMANDS:
        parser.parse_args(argv[:1])  # prints usage or help and exits
    command, rest = argv[0], argv[1:]
    # torch.distributed.launch passes --local-rank; BasicSR's parser only knows --local_rank.
    rest = [a.replace("--local-rank", "--local_rank", 1) if a.startswith("--local-rank") else a for a in rest]

    import hersr_arch  # noqa: F401  (registers HERSR's archs, models, datasets and losses)
    from hersr_arch.models.hersr_model import TrainingStopped

    root_path = os.getcwd()
    opt_path = _option_path(rest)
    try:
        if opt_path is not None and not {"-h", "--help"} & set(rest):
            preflight(check_option_file(opt_path, command), command, rest, root_path)
        patch_basicsr_for_cpu()
        patch_basicsr_for_reliability()
        sys.argv = [f"basicsr {command}", *rest]  # BasicSR's parse_options reads sys.argv
        if command == "train":
            basicsr.train.train_pipeline(root_path)
        else:
            basicsr.test.test_pipeline(root_path)
        close_process_group()
    except (OptionFileError, OptionError) as e:
        print(f"basicsr {command}: error: {e}", file=sys.stderr)
        return 2
    except TrainingStopped as e:
        print(f"basicsr {command}: error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
