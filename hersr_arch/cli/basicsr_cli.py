"""The ``basicsr`` command: BasicSR 1.4.2's own train and test pipelines, with HERSR registered.

BasicSR 1.4.2 ships ``basicsr/train.py`` and ``basicsr/test.py`` but no console script. This module
is that script. It runs ``basicsr.train.train_pipeline`` / ``basicsr.test.test_pipeline`` unchanged,
after registering HERSR's archs, model, datasets, losses and metrics (``hersr_arch.basicsr_plugin``)::

    basicsr train -opt options/train_hersr_x4.yml [--launcher none|pytorch|slurm] [--auto_resume]
                  [--debug] [--local_rank N] [--force_yml train:ema_decay=0.999 ...]
    basicsr test -opt options/test_hersr_x4.yml
    torchrun --nproc_per_node 2 -m hersr_arch.cli.basicsr_cli train -opt X.yml --launcher pytorch

``experiments/``, ``results/`` and ``tb_logger/`` are created under the current working directory
(BasicSR's own scripts put them next to the installed package).

What HERSR changes in BasicSR is the table of :mod:`hersr_arch.cli.basicsr_patches`, applied here
before the pipeline runs.

The option file must be readable YAML with the keys BasicSR requires; BasicSR then parses it
(``--force_yml`` and ``--debug`` applied), and the patched ``parse_options`` checks what it parsed
(``hersr_arch.option_checks``). A mistake (unknown network keyword, missing dataset folder or LMDB
key, GT/LQ sizes that do not fit the scale, a truncated or foreign checkpoint, an output folder that
cannot be written...) is one line on stderr and exit status 2, with no traceback and before any
folder is created or archived. Training stopped by too many non-finite steps is one line and exit
status 1.
"""

import argparse
import os
import sys
from collections.abc import Sequence

import yaml

from hersr_arch._compat import apply_torchvision_compat
from hersr_arch.cli.basicsr_patches import apply_patches
from hersr_arch.option_checks import OptionError

apply_torchvision_compat()  # BasicSR imports torchvision.transforms.functional_tensor

import basicsr.test  # noqa: E402
import basicsr.train  # noqa: E402
from basicsr.utils.options import ordered_yaml  # noqa: E402

COMMANDS = ("train", "test")
# Top-level keys that BasicSR reads without a default (utils/options.py parse_options, train.py).
_REQUIRED_KEYS = {
    "train": ("name", "num_gpu", "datasets", "path", "train", "logger"),
    "test": ("name", "num_gpu", "datasets", "path", "val"),
}


class OptionFileError(Exception):
    """The option file is missing, unreadable, not YAML, or lacks a key BasicSR requires."""


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


def _option_path(args: Sequence[str]) -> str | None:
    """The ``-opt`` of BasicSR's arguments."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("-opt")
    return parser.parse_known_args(args)[0].opt


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

    from hersr_arch.basicsr_plugin import register

    register()  # HERSR's archs, model, datasets, losses and metrics in BasicSR's registries
    from hersr_arch.models.hersr_model import TrainingStopped

    root_path = os.getcwd()
    opt_path = _option_path(rest)
    try:
        if opt_path is not None and not {"-h", "--help"} & set(rest):
            check_option_file(opt_path, command)  # then BasicSR's parse_options, patched to check the options
        apply_patches()
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
