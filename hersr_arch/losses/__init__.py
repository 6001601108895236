"""Losses (registered by ``hersr_arch.basicsr_plugin``)."""
