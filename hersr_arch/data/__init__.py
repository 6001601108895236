"""Datasets (registered by ``hersr_arch.basicsr_plugin``), data preparation and MATLAB's resize."""
