"""Every ablation flag builds, runs forward and backward (one YAML line each)."""

import pytest
import torch

from tests.networks import tiny_hersr

GRID = [
    dict(freq_split="haar"),
    dict(freq_split="avgpool"),
    dict(freq_split="none"),
    dict(use_local=False),
    dict(use_context=False),
    dict(use_moe=False),
    dict(moe_routing="token"),
    dict(moe_routing="token", moe_top_k=1),
    dict(moe_experts=("conv",)),
    dict(moe_experts=("attn", "fft")),
    dict(use_prompt=True),
    dict(upsampler="dysample"),
    dict(msg_outputs=True),
    dict(use_texture_head=False),
    dict(noise_mode="fixed"),
    dict(noise_mode="off"),
    dict(dims=(8, 16), depths=(1, 1), dec_depths=(1, 0), num_heads=(2, 2)),
    dict(dims=(8,), depths=(2,), dec_depths=(1,), num_heads=(2,), freq_split="none"),
    dict(use_moe=False, use_texture_head=False, freq_split="none", use_context=False),
    dict(upsampler="dysample", freq_split="avgpool", moe_routing="token", use_prompt=True, msg_outputs=True),
]


@pytest.mark.parametrize("flags", GRID, ids=lambda f: ",".join(f"{k}={v}" for k, v in f.items()))
@pytest.mark.parametrize("scale", [1, 3])
def test_ablation_builds_runs_and_trains(flags, scale):
    model = tiny_hersr(upscale=scale, **flags).train()
    x = torch.rand(2, 3, 11, 14)
    out = model(x)
    loss = model.aux_loss
    if isinstance(out, tuple):
        out, aux_images = out
        assert aux_images
        loss = loss + sum(a.mean() for a in aux_images)
    assert out.shape == (2, 3, 11 * scale, 14 * scale)
    (loss + out.mean()).backward()
    grads = [p.grad for p in model.parameters() if p.requires_grad]
    assert grads and all(g is not None and torch.isfinite(g).all() for g in grads)
    model.eval()
    with torch.no_grad():
        assert model(x).shape == (2, 3, 11 * scale, 14 * scale)
