"""Console commands: ``basicsr`` (BasicSR's train/test pipelines with HERSR registered) and ``hersr``."""
