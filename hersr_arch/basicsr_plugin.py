"""HERSR in BasicSR: registration of the archs, model, datasets, losses and metrics.

BasicSR builds everything from its registries, so HERSR's classes must be registered before an
option file is read. :func:`register` does that (and applies the torchvision fix BasicSR 1.4.2 needs
first). ``import hersr_arch`` does not import BasicSR (commands that never touch it start faster);
it calls :func:`register_when_basicsr_loads` instead: registration happens at once if BasicSR is
already imported, otherwise right after BasicSR's own import, whenever that comes. The ``basicsr``
command calls :func:`register` directly.
"""

from __future__ import annotations

import importlib
import importlib.abc
import sys

from hersr_arch._compat import apply_torchvision_compat

# Modules whose classes register themselves with BasicSR's decorators when imported.
_REGISTERING_MODULES = (
    "hersr_arch.models.hersr_model",
    "hersr_arch.data.benchmark_dataset",
    "hersr_arch.data.degradation_dataset",
    "hersr_arch.losses.frequency_loss",
    "hersr_arch.metrics.gray_as_y",
)
_registered = False


def register() -> None:
    """Register HERSR's archs, model, datasets, losses and metrics in BasicSR's registries (once)."""
    global _registered
    if _registered:
        return
    _registered = True
    apply_torchvision_compat()
    from basicsr.utils.registry import ARCH_REGISTRY

    from hersr_arch.archs import bicubic_arch
    from hersr_arch.archs import hersr_arch as network

    network.register_archs(ARCH_REGISTRY)
    bicubic_arch.register_arch(ARCH_REGISTRY)
    for name in _REGISTERING_MODULES:
        importlib.import_module(name)


class _LoaderThenRegister(importlib.abc.Loader):
    """BasicSR's own loader, followed by :func:`register` once BasicSR's package has loaded."""

    def __init__(self, loader: importlib.abc.Loader):
        self._loader = loader

    def create_module(self, spec):
        return self._loader.create_module(spec)

    def exec_module(self, module) -> None:
        self._loader.exec_module(module)
        register()

    def __getattr__(self, name: str):  # resource readers and the like: BasicSR's loader answers
        return getattr(self._loader, name)


class _BasicSRImportHook(importlib.abc.MetaPathFinder):
    """Finds nothing itself: when ``basicsr`` is first imported, applies the torchvision fix, then
    lets the other finders find BasicSR and wraps its loader (see :class:`_LoaderThenRegister`)."""

    def find_spec(self, fullname, path, target=None):
        if fullname != "basicsr":
            return None
        sys.meta_path.remove(self)  # one import only; also keeps the search below from finding us
        apply_torchvision_compat()
        for finder in sys.meta_path:
            spec = finder.find_spec(fullname, path, target) if hasattr(finder, "find_spec") else None
            if spec is not None:
                if spec.loader is not None:
                    spec.loader = _LoaderThenRegister(spec.loader)
                return spec
        return None  # not installed: the import fails as it would without HERSR


def register_when_basicsr_loads() -> None:
    """:func:`register` now if BasicSR is imported, else right after it is (idempotent)."""
    if sys.modules.get("basicsr") is not None:
        register()
    elif not any(isinstance(finder, _BasicSRImportHook) for finder in sys.meta_path):
        sys.meta_path.insert(0, _BasicSRImportHook())
