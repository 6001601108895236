"""What HERSR changes in BasicSR 1.4.2 at run time: one table, :data:`PATCHES`, applied once by
:func:`apply_patches` (site-packages is never edited). Each entry names the BasicSR attribute, its
replacement and the reason.

BasicSR's train/test path assumes CUDA in a few places; the patches make training, resuming,
testing and ``--launcher pytorch|slurm`` work without a GPU too. Checkpoints and training states
are written crash-safe (atomically, see :mod:`hersr_arch.cli.checkpoint_io`); the top-level option
``deterministic: true`` (or ``'warn'``) is added; ``--auto_resume`` skips an unreadable state; and
the options BasicSR parses are checked (:mod:`hersr_arch.option_checks`) before it makes any folder.
"""

import os
import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass

import torch
import torch.distributed as dist

from hersr_arch._compat import apply_torchvision_compat
from hersr_arch.option_checks import OptionError, check_options
from hersr_arch.threads import set_torch_threads

apply_torchvision_compat()

import basicsr.test  # noqa: E402
import basicsr.train  # noqa: E402
import basicsr.utils.dist_util  # noqa: E402
from basicsr.models.base_model import BaseModel  # noqa: E402
from basicsr.utils import check_resume, get_root_logger, scandir  # noqa: E402
from torch.nn.parallel import DistributedDataParallel  # noqa: E402

from hersr_arch.cli import checkpoint_io  # noqa: E402

# --------------------------------------------------------------------------------------------
# CPU fixes for BasicSR 1.4.2, and the option checks on what parse_options parsed
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


def _slurm_without_cuda(init_dist_slurm):
    """BasicSR's ``_init_dist_slurm`` with CUDA; without CUDA the same environment is set up (master
    address from ``scontrol``, ``MASTER_PORT`` from ``port``, the environment or 29500) and gloo is
    used instead of its ``proc_id % torch.cuda.device_count()`` division and NCCL."""

    def init_dist_slurm_cpu(backend: str = "nccl", port: int | None = None) -> None:
        if torch.cuda.is_available():
            init_dist_slurm(backend, port)
        else:
            _init_gloo_from_slurm(port)

    return init_dist_slurm_cpu


def _init_gloo_from_slurm(port: int | None) -> None:
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


def _ddp_on_cpu(model_to_device):
    """BasicSR's ``model_to_device``, except that a distributed model on the CPU is wrapped in DDP
    without ``device_ids`` (BasicSR asks ``torch.cuda.current_device()`` for them)."""

    def model_to_device_cpu(self: BaseModel, net: torch.nn.Module) -> torch.nn.Module:
        if not (self.opt["dist"] and self.device.type == "cpu"):
            return model_to_device(self, net)
        find_unused_parameters = self.opt.get("find_unused_parameters", False)
        return DistributedDataParallel(net.to(self.device), find_unused_parameters=find_unused_parameters)

    return model_to_device_cpu


def _keeping_random_state(check: Callable[[], None]) -> None:
    """Run ``check()`` and put back the random state it drew from (Python, NumPy, torch CPU)."""
    import random

    import numpy as np

    python_state, numpy_state = random.getstate(), np.random.get_state()
    try:
        with torch.random.fork_rng(devices=[]):
            check()
    finally:
        random.setstate(python_state)
        np.random.set_state(numpy_state)


def _with_option_checks(parse_options):
    """Wrap BasicSR's ``parse_options``: HERSR checks the options it returns, ``num_gpu > 0`` without
    CUDA falls back to the CPU, and the torch thread count is chosen.

    The checks (``hersr_arch.option_checks``) see the options as BasicSR parsed them, ``--force_yml``,
    ``--debug`` and ``num_gpu: auto`` applied, before any folder is made. Building the networks to
    check them would draw from the random state ``parse_options`` has just seeded, so that state is
    put back: a run draws what BasicSR alone draws. BasicSR 1.4.2 (models/base_model.py,
    ``torch.device('cuda' if opt['num_gpu'] != 0 ...)``) puts the model on CUDA whenever ``num_gpu``
    is not 0, so an option file written for a GPU machine (``num_gpu: 1``) would fail on a CPU-only
    one; ``num_gpu: auto`` already gives 0 there.
    """

    def parse_options_checked(root_path, is_train=True):
        command = "train" if is_train else "test"
        try:
            opt, args = parse_options(root_path, is_train=is_train)
        except (KeyError, ValueError) as err:
            if "--force_yml" not in sys.argv:
                raise
            # BasicSR applies each entry with exec: a key the file lacks is a KeyError, an entry
            # without '=' a ValueError.
            raise OptionError(f"--force_yml could not be applied ({type(err).__name__}: {err}); each entry is "
                              "key:subkey=value, naming keys the option file has.") from None
        resuming = bool(opt["path"].get("resume_state")) or (is_train and args.auto_resume
                                                              and bool(_resumable_states(opt)))  # fmt: skip
        _keeping_random_state(lambda: check_options(opt, command, root_path, resuming=resuming))
        if opt["num_gpu"] and not torch.cuda.is_available():
            _warn(f"num_gpu: {opt['num_gpu']} but CUDA is not available, running on the CPU.")
            opt["num_gpu"] = 0
        set_torch_threads(log=lambda m: print(f"basicsr {command}: {m}", file=sys.stderr, flush=True))
        return opt, args

    return parse_options_checked


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

    return build_model_deterministic


# --------------------------------------------------------------------------------------------
# The patches, in one table
# --------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Patch:
    """One attribute of BasicSR 1.4.2 replaced at run time (site-packages is never edited):
    ``owner.attribute`` becomes ``replacement``, or ``replacement(original)`` when ``wraps``."""

    owner: object
    attribute: str
    replacement: Callable
    reason: str
    wraps: bool = False


PATCHES = (
    Patch(basicsr.utils.dist_util, "_init_dist_pytorch", init_dist_pytorch,
          "dist_util.py: torch.cuda.set_device(rank % num_gpus) divides by zero without a GPU, and nccl needs CUDA"),
    Patch(basicsr.utils.dist_util, "_init_dist_slurm", _slurm_without_cuda, "dist_util.py: the same for slurm",
          wraps=True),
    Patch(basicsr.train, "load_resume_state", load_resume_state,
          "train.py: storage.cuda(torch.cuda.current_device()) raises without CUDA; --auto_resume also skips an "
          "unreadable state"),
    Patch(BaseModel, "model_to_device", _ddp_on_cpu,
          "base_model.py: DDP(device_ids=[torch.cuda.current_device()]) raises for a CPU model", wraps=True),
    Patch(basicsr.train, "parse_options", _with_option_checks,
          "HERSR's option checks on the parsed options; base_model.py: num_gpu > 0 puts the model on CUDA even "
          "where there is none", wraps=True),
    Patch(basicsr.test, "parse_options", _with_option_checks, "the same for testing", wraps=True),
    Patch(BaseModel, "save_network", checkpoint_io.save_network,
          "base_model.py: torch.save onto the final name leaves a truncated checkpoint when killed"),
    Patch(BaseModel, "save_training_state", checkpoint_io.save_training_state,
          "base_model.py: the same for training states, which --auto_resume then fails to load"),
    Patch(basicsr.train, "build_model", _with_determinism, "the top-level option 'deterministic'", wraps=True),
    Patch(basicsr.test, "build_model", _with_determinism, "the same for testing", wraps=True),
)  # fmt: skip


def apply_patches() -> None:
    """Install every patch of :data:`PATCHES` (idempotent: a patched attribute is left as it is)."""
    for patch in PATCHES:
        current = getattr(patch.owner, patch.attribute)
        if current is patch.replacement or getattr(current, "hersr_patch", None) is patch:
            continue
        if patch.wraps:
            current = patch.replacement(current)
            current.hersr_patch = patch  # a wrapper made here: the mark says it is ours
            setattr(patch.owner, patch.attribute, current)
        else:
            setattr(patch.owner, patch.attribute, patch.replacement)
