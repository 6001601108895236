"""Compatibility fixes that must run before BasicSR 1.4.2 is imported.

BasicSR 1.4.2 does ``from torchvision.transforms.functional_tensor import rgb_to_grayscale``
(in ``basicsr/data/degradations.py``). torchvision 0.17 renamed that private module to
``_functional_tensor`` and later releases removed the old name, so a plain ``import basicsr``
fails on current torchvision. We register the old name as an alias of the new module.
"""

import importlib
import sys

_OLD_NAME = "torchvision.transforms.functional_tensor"


def apply_torchvision_compat() -> None:
    """Make ``torchvision.transforms.functional_tensor`` importable (idempotent)."""
    if _OLD_NAME in sys.modules:
        return
    try:
        importlib.import_module(_OLD_NAME)
        return
    except ImportError:
        pass
    try:
        module = importlib.import_module("torchvision.transforms._functional_tensor")
    except ImportError:  # torchvision absent or reorganised again: basicsr will say what is missing
        return
    sys.modules[_OLD_NAME] = module
