"""Metrics. Importing this package registers them in BasicSR's METRIC_REGISTRY."""

from hersr_arch.metrics import gray_as_y  # noqa: F401
