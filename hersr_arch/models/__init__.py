"""BasicSR models (registered by ``hersr_arch.basicsr_plugin``)."""
