"""HERSR for spandrel (and so for chaiNNer): detection, hyper-parameters from weights, descriptor.

Usage::

    import spandrel
    from hersr_arch.spandrel_support import register

    register()                                    # once, adds HERSR to spandrel.MAIN_REGISTRY
    model = spandrel.ModelLoader().load_from_file("net_g_ema.pth")   # or a deployed .safetensors
    sr = model(image)                             # (1, 3, H, W) in [0, 1] -> (1, 3, sH, sW)

Every constructor argument is recovered by :func:`hersr_arch.loading.infer_config` (tensor shapes,
key names and the ``hyper`` buffer), so presets and custom widths, depths and flags all load.
What the descriptor claims is what the test suite checks:

* ``supports_half`` / ``supports_bfloat16``: a model cast with ``.half()`` / ``.bfloat16()`` runs
  (router and FFT expert compute in fp32 internally) and stays close to fp32
  (``tests/test_spandrel_support.py``, ``tests/test_precision.py``).
* ``size_requirements``: none; HERSR pads any ``H, W >= 1`` internally and crops the output.
* ``tiling``: supported; context pooling is local beyond the training size (TLC), and tiled
  output shows no seams (``tests/test_upscale.py``).
"""

from __future__ import annotations

import inspect

try:
    from spandrel import (
        MAIN_REGISTRY,
        Architecture,
        ArchRegistry,
        ArchSupport,
        ImageModelDescriptor,
        ModelTiling,
        SizeRequirements,
        StateDict,
    )
except ImportError as err:  # an optional extra: say how to get it instead of a bare traceback
    raise ImportError("hersr_arch.spandrel_support needs spandrel: pip install spandrel (or hersr_arch[test]).") from err

from hersr_arch.archs.hersr_arch import HERSR, PRESETS
from hersr_arch.loading import infer_config

ARCH_ID = "HERSR"
_DEFAULTS = {name: p.default for name, p in inspect.signature(HERSR).parameters.items()}
_PRESET_FIELDS = ("dims", "depths", "dec_depths", "num_heads", "plk_kernel", "ffn_expansion", "use_prompt")


def detect(state_dict: StateDict) -> bool:
    """True for HERSR weights: stem and reconstruction convs, and the encoder or the ``hyper`` buffer.

    ``stem.*`` and ``reconstruct.*`` alone are generic names; no architecture bundled with
    spandrel has both together with ``encoder.*`` scales or a 10-entry integer ``hyper`` buffer.
    """
    if "stem.0.weight" not in state_dict or "reconstruct.weight" not in state_dict:
        return False
    hyper = state_dict.get("hyper")
    if hyper is not None and hyper.dim() == 1 and not hyper.is_floating_point():
        return True
    return any(key.startswith("encoder.0.") for key in state_dict)


def preset_name(config: dict) -> str | None:
    """``'hersr_s'``/``'hersr_m'``/``'hersr_l'`` when ``config`` (from ``infer_config``) is that preset."""
    for name, overrides in PRESETS.items():
        expected = {field: overrides.get(field, _DEFAULTS[field]) for field in _PRESET_FIELDS}
        if all(_same(config.get(field, _DEFAULTS[field]), value) for field, value in expected.items()):
            return name
    return None


def _same(a, b) -> bool:
    if isinstance(a, float | int) and isinstance(b, float | int):
        return abs(a - b) < 1e-6
    if isinstance(a, tuple | list) and isinstance(b, tuple | list):
        return len(a) == len(b) and all(_same(x, y) for x, y in zip(a, b))
    return a == b


class HERSRArch(Architecture[HERSR]):
    """spandrel ``Architecture`` for HERSR checkpoints (training or deployed weights, any scale)."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="HERSR", detect=detect)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[HERSR]:
        config = infer_config(state_dict)
        model = HERSR(**config)
        scale = config["upscale"]
        preset = preset_name(config)
        tags = [preset or "custom", f"{config['dims'][0]}nf"]
        if config["deploy"]:
            tags.append("deployed")
        return ImageModelDescriptor(
            model,
            state_dict,
            architecture=self,
            purpose="Restoration" if scale == 1 else "SR",
            tags=tags,
            supports_half=True,
            supports_bfloat16=True,
            scale=scale,
            input_channels=config["num_in_ch"],
            output_channels=config["num_out_ch"],
            size_requirements=SizeRequirements(),
            tiling=ModelTiling.SUPPORTED,
        )


def register(registry: ArchRegistry = MAIN_REGISTRY) -> ArchSupport:
    """Add HERSR to ``registry`` (spandrel's main registry by default); calling it again is harmless."""
    support = registry.get(ARCH_ID)
    if support is None:
        support = ArchSupport.from_architecture(HERSRArch())
        registry.add(support)
    return support


__all__ = ["ARCH_ID", "HERSRArch", "detect", "preset_name", "register"]
