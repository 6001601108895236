"""HERSR: Hybrid Efficient Restoration & Super-Resolution, as a BasicSR plugin.

Importing this package registers the HERSR architectures, model, datasets and losses in
BasicSR's registries. The torchvision compatibility fix is applied first, so that BasicSR
1.4.2 imports on current torchvision.
"""

from hersr_arch._compat import apply_torchvision_compat

apply_torchvision_compat()

from hersr_arch import archs, data, losses, metrics, models  # noqa: E402,F401  (registers everything)
from hersr_arch.archs.hersr_arch import HERSR, hersr_l, hersr_m, hersr_s  # noqa: E402

__all__ = ["HERSR", "hersr_s", "hersr_m", "hersr_l"]
__version__ = "0.1.0"
