"""Network architectures. Importing this package registers them in BasicSR's ARCH_REGISTRY."""

from hersr_arch.archs import bicubic_arch, hersr_arch  # noqa: F401
