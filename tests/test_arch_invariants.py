"""DESIGN.md section 2 invariants: init, constant images, determinism, batch independence, MoE, bf16."""

import pytest
import torch
import torch.nn.functional as F

from hersr_arch.archs.hersr_arch import haar_dwt, haar_idwt
from tests.conftest import perturb_, tiny_hersr


def interp(x, s):
    return x if s == 1 else F.interpolate(x, scale_factor=s, mode="bicubic", align_corners=False)


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["train", "eval"])
def test_untrained_output_is_interpolated_input(scale, mode):
    model = tiny_hersr(upscale=scale)
    model.train(mode == "train")
    x = torch.rand(2, 3, 19, 13)
    with torch.no_grad():
        out = model(x)
    assert torch.equal(out, interp(x, scale))


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("upsampler", ["pixelshuffle", "dysample"])
@pytest.mark.parametrize("size", [(1, 1), (13, 29), (40, 40)])
def test_constant_image_gives_constant_output(scale, upsampler, size):
    """No border, seam or checkerboard from padding, windows or up-sampling, with non-zero weights."""
    model = perturb_(tiny_hersr(upscale=scale, upsampler=upsampler, noise_mode="off", use_prompt=True))
    model.eval()
    x = torch.full((1, 3, *size), 0.37)
    with torch.no_grad():
        out = model(x)
    assert (out - interp(x, scale)).abs().max() > 1e-3  # the body really contributes
    spread = out.amax((2, 3)) - out.amin((2, 3))
    assert spread.max() < 1e-4, f"constant input produced a pattern of amplitude {spread.max():.2e}"


def test_haar_transform_is_exact_and_ll_is_twice_the_mean():
    x = torch.randn(2, 5, 6, 10)
    ll, high = haar_dwt(x)
    assert high.shape == (2, 15, 3, 5)
    assert torch.allclose(ll, 2 * F.avg_pool2d(x, 2), atol=1e-6)
    assert torch.allclose(haar_idwt(ll, high), x, atol=1e-6)
    assert torch.allclose(x.pow(2).sum(), ll.pow(2).sum() + high.pow(2).sum(), rtol=1e-5)  # orthonormal


def test_eval_is_deterministic_and_train_noise_is_random():
    model = perturb_(tiny_hersr())
    x = torch.rand(1, 3, 16, 16)
    model.eval()
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    model.train()
    with torch.no_grad():
        a, b = model(x), model(x)
    assert (a - b).abs().max() > 1e-4


def test_noise_mode_off_removes_noise():
    model = perturb_(tiny_hersr(noise_mode="off")).train()
    x = torch.rand(1, 3, 16, 16)
    with torch.no_grad():
        assert torch.equal(model(x), model(x))
    fixed = perturb_(tiny_hersr(noise_mode="fixed")).train()
    with torch.no_grad():
        assert torch.equal(fixed(x), fixed(x))


def test_noise_strength_scales_the_injected_noise():
    x = torch.rand(1, 3, 16, 16)
    outs = {}
    for strength in (0.0, 1.0, 2.0):
        model = perturb_(tiny_hersr(noise_strength=strength)).eval()
        noise = model.texture.noise
        feat = torch.rand(1, noise.weight.shape[1], 16, 16)
        with torch.no_grad():
            outs[strength] = (noise(feat) - feat, model(x))
    assert (outs[1.0][0]).abs().max() > 1e-3
    assert torch.allclose(outs[2.0][0], 2 * outs[1.0][0], atol=1e-6)
    with torch.no_grad():
        assert torch.equal(model(x), outs[2.0][1])
        model.texture.noise.strength = 0.0
        silent = model(x)
        assert not torch.equal(silent, outs[2.0][1])
        model.texture.noise.strength = 2.0
        model.texture.noise.weight.zero_()
        assert torch.equal(model(x), silent)


@pytest.mark.parametrize("routing", ["image", "token"])
@pytest.mark.parametrize("size", [16, 48])  # 48 > train_size: eval context is local (TLC)
def test_sample_in_batch_equals_sample_alone(routing, size):
    model = perturb_(tiny_hersr(moe_routing=routing, use_prompt=True)).eval()
    batch = torch.rand(3, 3, size, size)
    with torch.no_grad():
        out_batch = model(batch)
        gates_batch = model.last_gates.clone()
        out_one = model(batch[1:2])
        gates_one = model.last_gates.clone()
    assert torch.allclose(out_batch[1:2], out_one, atol=1e-5)
    assert torch.allclose(gates_batch[1:2], gates_one, atol=1e-6)


@pytest.mark.parametrize("routing", ["image", "token"])
@pytest.mark.parametrize("top_k", [0, 1, 2])
def test_gates_are_a_distribution_and_aux_loss_has_gradient(routing, top_k):
    model = perturb_(tiny_hersr(moe_routing=routing, moe_top_k=top_k)).train()
    out = model(torch.rand(2, 3, 16, 16))
    gates = model.last_gates
    assert gates.shape[:2] == (2, 3)
    assert (gates >= 0).all()
    assert torch.allclose(gates.sum(1), torch.ones_like(gates.sum(1)), atol=1e-5)
    if top_k:
        assert ((gates > 0).sum(1) <= top_k).all()
    aux = model.aux_loss
    assert aux.dim() == 0 and torch.isfinite(aux)
    (out.mean() + aux).backward()
    assert model.moe.router.weight.grad is not None and model.moe.router.weight.grad.abs().sum() > 0


def test_eval_gates_on_a_large_image_are_local_and_sum_to_one():
    model = perturb_(tiny_hersr()).eval()
    with torch.no_grad():
        model(torch.rand(1, 3, 64, 64))  # bottleneck 8x8 > train_size/8 = 2: TLC pooling
    gates = model.last_gates
    assert gates.shape[-2:] == (8, 8)
    assert torch.allclose(gates.sum(1), torch.ones(1, 8, 8), atol=1e-5)


def test_aux_loss_is_zero_without_moe():
    model = tiny_hersr(use_moe=False).train()
    model(torch.rand(1, 3, 8, 8))
    assert model.aux_loss.item() == 0.0 and model.last_gates is None


@pytest.mark.parametrize("top_k", [0, 1])
def test_every_parameter_gets_a_gradient(top_k):
    """DDP without find_unused_parameters needs every parameter in the graph (top-k included)."""
    model = tiny_hersr(use_prompt=True, msg_outputs=True, moe_top_k=top_k).train()
    out, aux_images = model(torch.rand(2, 3, 16, 16))
    loss = out.mean() + sum(a.mean() for a in aux_images) + model.aux_loss
    loss.backward()
    missing = [name for name, p in model.named_parameters() if p.grad is None]
    assert not missing, f"parameters without gradient: {missing}"


@pytest.mark.parametrize("scale", [1, 4])
def test_msg_outputs_in_train_only(scale):
    model = tiny_hersr(upscale=scale, msg_outputs=True).train()
    out, aux_images = model(torch.rand(2, 3, 17, 24))
    assert out.shape == (2, 3, 17 * scale, 24 * scale)
    expected = [(-(-17 // 2**k) * scale, -(-24 // 2**k) * scale) for k in (1, 2, 3)]
    assert [tuple(a.shape[-2:]) for a in aux_images] == expected
    # Untrained MSG images equal the down-scaled input (zero-initialised heads).
    x = torch.rand(1, 3, 16, 16)
    _, aux_images = model(x)
    assert torch.allclose(aux_images[0], F.interpolate(x, size=aux_images[0].shape[-2:], mode="area")
                          if scale == 1 else aux_images[0])
    model.eval()
    with torch.no_grad():
        assert isinstance(model(torch.rand(1, 3, 16, 16)), torch.Tensor)


@pytest.mark.parametrize(
    "name, x",
    [
        ("random", torch.rand(1, 3, 24, 24)),
        ("zeros", torch.zeros(1, 3, 24, 24)),
        ("ones", torch.ones(1, 3, 24, 24)),
        ("contrast", (torch.arange(24 * 24).view(1, 1, 24, 24) % 2).float().expand(1, 3, 24, 24) * 1.0),
        ("noise", torch.randn(1, 3, 24, 24) * 4),
    ],
)
def test_no_nan_or_inf_under_bf16_autocast(name, x):
    model = perturb_(tiny_hersr(use_prompt=True)).eval()
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
    assert torch.isfinite(out).all(), name
    model.train()
    with torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(x)
        loss = out.float().mean() + model.aux_loss
    loss.backward()
    assert all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)


def test_attention_logit_scale_is_clamped():
    model = tiny_hersr()
    attn = model.encoder[0].blocks[0].context.attn
    with torch.no_grad():
        attn.logit_scale.fill_(50.0)  # exp(50) unclamped would overflow bf16 logits
        model.eval()
        with torch.autocast("cpu", dtype=torch.bfloat16):
            out = perturb_(model)(torch.rand(1, 3, 16, 16))
    assert torch.isfinite(out).all()
