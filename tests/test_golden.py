"""Speed work must not change what the network computes: outputs pinned against a stored reference.

The reference comes from a seeded tiny network with every component on. After a change that is
*meant* to change the outputs (new layer, new initialisation), regenerate it deliberately with
``HERSR_REGEN_GOLDEN=1 pytest tests/test_golden.py`` and say so in the commit message.
"""

import os
from pathlib import Path

import pytest
import torch

from tests.networks import perturb_, tiny_hersr

pytestmark = pytest.mark.numerics

GOLDEN = Path(__file__).parent / "data" / "golden_tiny.pt"
CASES = {
    "x2_haar_image": dict(upscale=2, use_prompt=True),
    "x3_avgpool_token_dysample": dict(upscale=3, freq_split="avgpool", moe_routing="token", upsampler="dysample"),
    "x1_topk": dict(upscale=1, moe_top_k=1),
}


def outputs():
    results = {}
    for name, config in CASES.items():
        torch.manual_seed(0)
        model = perturb_(tiny_hersr(**config), seed=1).eval()
        x = torch.rand(2, 3, 21, 19, generator=torch.Generator().manual_seed(2))
        with torch.no_grad():
            results[name] = model(x)
            results[name + "_deployed"] = model.switch_to_deploy()(x)
    return results


# How far the same outputs land on other CPU kernels (measured on the tree that added this note, on
# an AMD EPYC: ATen/oneDNN kernel sets default/SSE41, avx2/AVX2 and avx512/AVX512_CORE, 1 and 2
# threads, against a reference written on an Intel Xeon with AVX-512): at most 4.8e-6 absolute on
# outputs up to 3.2. Sums in another order round differently, nothing more. One stored reference
# with this tolerance holds on every kernel set; a change in what is computed (a wrong fold, a
# layer moved) shifts outputs by more than 1e-3.
GOLDEN_ATOL = GOLDEN_RTOL = 1e-5

# ATen's kernel sets from the least to the most vectorised (``torch.backends.cpu.get_cpu_capability``).
CAPABILITIES = ["DEFAULT", "AVX2", "AVX512"]


def test_runs_on_the_requested_cpu_kernels():
    """``make test`` reruns the numerics tests with ``ATEN_CPU_CAPABILITY`` set; a misspelt or ignored
    value would silently rerun the default kernels. A CPU without the requested level may run a lower one."""
    requested = os.environ.get("ATEN_CPU_CAPABILITY", "").upper()
    actual = torch.backends.cpu.get_cpu_capability()
    if not requested:
        pytest.skip(f"no ATEN_CPU_CAPABILITY requested; running {actual}")
    assert requested in CAPABILITIES, f"ATEN_CPU_CAPABILITY={requested!r}; known: {CAPABILITIES}"
    assert CAPABILITIES.index(actual) <= CAPABILITIES.index(requested), (requested, actual)


def test_outputs_match_the_stored_reference():
    current = outputs()
    if os.environ.get("HERSR_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        torch.save(current, GOLDEN)
        pytest.skip("golden outputs regenerated")
    reference = torch.load(GOLDEN)
    for name, out in current.items():
        assert torch.allclose(out, reference[name], atol=GOLDEN_ATOL, rtol=GOLDEN_RTOL), (
            f"{name}: output changed by {(out - reference[name]).abs().max():.2e}"
        )
