"""Cost is linear in pixels: no global attention, no quadratic op."""

import pytest
import torch
from torch.utils.flop_counter import FlopCounterMode

from hersr_arch.archs.hersr_arch import hersr_s
from hersr_arch.tools.model_cost import count_macs
from tests.conftest import tiny_hersr


@pytest.mark.parametrize("build", [lambda: tiny_hersr(moe_routing="token"), hersr_s], ids=["tiny", "hersr_s"])
def test_four_times_the_pixels_costs_at_most_4_4_times_the_macs(build):
    model = build().eval()
    small, large = count_macs(model, 64, 64), count_macs(model, 128, 128)
    assert small > 0
    assert large / small <= 4.4, f"MACs grew {large / small:.2f}x for 4x pixels"


def test_attention_is_counted():
    """Guard for the test above: the math backend makes attention visible to the counter."""
    model = tiny_hersr().eval()
    with_attn = count_macs(model, 32, 32)
    without = count_macs(tiny_hersr(use_context=False, moe_experts=("conv", "fft")).eval(), 32, 32)
    assert with_attn > without


def test_macs_include_the_onednn_inference_convs_and_not_the_band_halos(monkeypatch):
    """CPU inference runs 1x1 convs as ``aten::mkldnn_convolution`` and large maps in row bands; the
    count must equal the one of a graph the counter knows natively (with grad enabled neither the
    fast path nor the bands run), also when the bands would recompute halo rows."""
    from hersr_arch.archs import hersr_arch

    model = tiny_hersr().eval()
    with torch.enable_grad(), FlopCounterMode(display=False) as reference:
        with torch.nn.attention.sdpa_kernel(torch.nn.attention.SDPBackend.MATH):
            model(torch.zeros(1, 3, 32, 32))
    assert count_macs(model, 32, 32) == reference.get_total_flops() / 2
    monkeypatch.setattr(hersr_arch, "BAND_ABOVE_BYTES", 0)
    monkeypatch.setattr(hersr_arch, "BAND_BYTES", 1)
    assert count_macs(model, 32, 32) == reference.get_total_flops() / 2
