"""HERSR: Hybrid Efficient Restoration & Super-Resolution, as a BasicSR plugin.

Importing this package needs torch only. HERSR's archs, model, datasets, losses and metrics are
registered in BasicSR's registries when BasicSR is imported, before or after this package (with the
torchvision fix BasicSR 1.4.2 needs applied first): see ``hersr_arch.basicsr_plugin``.
"""

from hersr_arch.archs.hersr_arch import HERSR, hersr_l, hersr_m, hersr_s
from hersr_arch.basicsr_plugin import register_when_basicsr_loads

register_when_basicsr_loads()

__all__ = ["HERSR", "hersr_s", "hersr_m", "hersr_l"]
__version__ = "0.1.0"
