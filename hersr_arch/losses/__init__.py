"""Losses. Importing this package registers them in BasicSR's LOSS_REGISTRY."""

from hersr_arch.losses import frequency_loss  # noqa: F401
