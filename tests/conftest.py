"""Pytest hooks and fixtures shared by every test file (helpers live in ``networks.py`` and ``helpers.py``)."""

import os
import random

import numpy as np
import pytest
import torch


def pytest_report_header() -> str:
    """Which CPU kernels this run uses: float results depend on them (see ``make test-dispatch``)."""
    isa = os.environ.get("ONEDNN_MAX_CPU_ISA", "highest")
    return f"CPU kernels: ATen {torch.backends.cpu.get_cpu_capability()}, oneDNN ISA {isa}, {torch.get_num_threads()} threads"


@pytest.fixture(autouse=True)
def seeded_rngs():
    """Every test starts from the same global RNG state, whatever ran before it, so a test that draws
    without its own seed sees the same numbers alone and in any order of the suite."""
    random.seed(0)
    np.random.seed(0)
    torch.manual_seed(0)


@pytest.fixture
def fresh_dynamo():
    """torch.compile tests start and end with an empty dynamo cache and zeroed counters, so their graph
    and graph-break counts are their own."""
    from torch._dynamo.utils import counters

    torch._dynamo.reset()
    counters.clear()
    yield
    torch._dynamo.reset()
