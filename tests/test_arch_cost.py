"""Cost is linear in pixels: no global attention, no quadratic op."""

import pytest

from hersr_arch.archs.hersr_arch import hersr_s
from hersr_arch.bench.model_cost import count_macs
from tests.networks import tiny_hersr


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


def test_macs_of_a_cpu_prepared_model_are_the_network_files(monkeypatch):
    """CPU inference runs 1x1 convs on oneDNN and large maps in row bands; counting steps around both,
    so a prepared model counts exactly the network file's graph, even with bands forced on."""
    from hersr_arch.cpu_inference import RowBands, prepare_cpu_inference

    model = tiny_hersr().eval()
    plain = count_macs(model, 32, 32)
    prepare_cpu_inference(model)
    monkeypatch.setattr(RowBands, "band_above_bytes", 0)
    monkeypatch.setattr(RowBands, "band_bytes", 1)
    assert count_macs(model, 32, 32) == plain
