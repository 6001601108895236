"""Datasets and data preparation. Importing this package registers the datasets in DATASET_REGISTRY."""

from hersr_arch.data import benchmark_dataset, degradation_dataset  # noqa: F401
