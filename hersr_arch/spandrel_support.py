"""HERSR for spandrel (and so for chaiNNer): detection, hyper-parameters from weights, descriptor.

Usage::

    import spandrel
    from hersr_arch.spandrel_support import register

    register()                                    # once, adds HERSR to spandrel.MAIN_REGISTRY
    model = spandrel.ModelLoader().load_from_file("net_g_ema.pth")   # or a deployed .safetensors
    sr = model(image)                             # (1, 3, H, W) in [0, 1] -> (1, 3, sH, sW)

The network's :class:`~hersr_arch.archs.hersr_arch.HERSRConfig` is read from the record saved with
the weights, or inferred from shapes and key names for files without one, and files of older HERSR
versions are migrated (:mod:`hersr_arch.loading`), so presets and custom widths, depths and flags all load.
What the descriptor claims is what the test suite checks:

* ``supports_half`` / ``supports_bfloat16``: a model cast with ``.half()`` / ``.bfloat16()`` runs
  (router and FFT expert compute in fp32 internally) and stays close to fp32
  (``tests/test_spandrel_support.py``, ``tests/test_precision.py``).
* ``size_requirements``: none; HERSR pads any ``H, W >= 1`` internally and crops the output.
* ``tiling``: supported; context pooling is local beyond the training size (TLC), and tiled
  output shows no seams (``tests/test_upscale.py``).
"""

from __future__ import annotations

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

from hersr_arch.archs.hersr_arch import HERSR, PRESETS, HERSRConfig
from hersr_arch.loading import migrate_state_dict, read_config

ARCH_ID = "HERSR"
_PRESET_FIELDS = ("dims", "depths", "dec_depths", "num_heads", "plk_kernel", "ffn_expansion", "use_prompt")


def detect(state_dict: StateDict) -> bool:
    """True for HERSR weights: stem and reconstruction convs, and the encoder or a config record.

    ``stem.*`` and ``reconstruct.*`` alone are generic names; no architecture bundled with spandrel
    has both together with ``encoder.*`` stages, a ``config_json`` record or a format-1 ``hyper`` buffer.
    """
    if "stem.0.weight" not in state_dict or "reconstruct.weight" not in state_dict:
        return False
    for key in ("config_json", "hyper"):
        record = state_dict.get(key)
        if record is not None and record.dim() == 1 and not record.is_floating_point():
            return True
    return any(key.startswith("encoder.0.") for key in state_dict)


def preset_name(config: HERSRConfig) -> str | None:
    """``'hersr_s'``/``'hersr_m'``/``'hersr_l'`` when ``config`` has that preset's structure."""
    for name, overrides in PRESETS.items():
        preset = HERSRConfig(**overrides)
        if all(getattr(config, field) == getattr(preset, field) for field in _PRESET_FIELDS):
            return name
    return None


class HERSRArch(Architecture[HERSR]):
    """spandrel ``Architecture`` for HERSR checkpoints (training or deployed weights, any scale)."""

    def __init__(self) -> None:
        super().__init__(id=ARCH_ID, name="HERSR", detect=detect)

    def load(self, state_dict: StateDict) -> ImageModelDescriptor[HERSR]:
        state_dict = migrate_state_dict(state_dict)
        config = read_config(state_dict)
        model = HERSR(config)
        scale = config.upscale
        tags = [preset_name(config) or "custom", f"{config.dims[0]}nf"]
        if config.deploy:
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
            input_channels=config.num_in_ch,
            output_channels=config.num_out_ch,
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
