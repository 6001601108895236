"""Speed work must not change what the network computes: outputs pinned against a stored reference.

The reference comes from a seeded tiny network with every component on. After a change that is
*meant* to change the outputs (new layer, new initialisation), regenerate it deliberately with
``HERSR_REGEN_GOLDEN=1 pytest tests/test_golden.py`` and say so in the commit message.
"""

import os
from pathlib import Path

import pytest
import torch

from tests.conftest import perturb_, tiny_hersr

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


def test_outputs_match_the_stored_reference():
    current = outputs()
    if os.environ.get("HERSR_REGEN_GOLDEN") == "1":
        GOLDEN.parent.mkdir(exist_ok=True)
        torch.save(current, GOLDEN)
        pytest.skip("golden outputs regenerated")
    reference = torch.load(GOLDEN)
    for name, out in current.items():
        assert torch.allclose(out, reference[name], atol=1e-5, rtol=1e-5), (
            f"{name}: output changed by {(out - reference[name]).abs().max():.2e}"
        )
