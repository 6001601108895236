"""Models. Importing this package registers them in BasicSR's MODEL_REGISTRY."""

from hersr_arch.models import hersr_model  # noqa: F401
