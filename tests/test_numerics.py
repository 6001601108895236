"""Numerics: no NaN/Inf for extreme inputs in fp32, bf16 and fp16 autocast, nor after 120 training
iterations at a high learning rate (with gradient clipping); attention logits bounded by the clamped
logit scale; the MoE router computed in fp32 under autocast.

The training test uses ``HERSRModel`` itself (its bf16 autocast, clipping and non-finite-step guard)
and asserts that the guard never had to skip a step. Tiny networks run on one thread here: at this
size threads cost more than they give, and on a busy 2-core machine spinning OpenMP threads can make
a step a hundred times slower.
"""

from __future__ import annotations

import contextlib
import math

import pytest
import torch
import torch.nn.functional as F

import hersr_arch.archs.hersr_arch as hersr_arch_module
from hersr_arch.models.hersr_model import HERSRModel
from tests.helpers import hersr_model_options
from tests.networks import TINY, perturb_, tiny_hersr

DTYPES = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def _checker(size=24):
    return (torch.arange(size * size).view(1, 1, size, size) % 2).float().expand(1, 3, size, size).clone()


EXTREME_INPUTS = {
    "zeros": torch.zeros(1, 3, 24, 24),
    "ones": torch.ones(1, 3, 24, 24),
    "checkerboard": _checker(),
    "noise std 4": torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 4,
    "0..255 (not normalised)": torch.rand(1, 3, 24, 24, generator=torch.Generator().manual_seed(1)) * 255,
    "negative": -torch.ones(1, 3, 24, 24),
    "1e-8 constant": torch.full((1, 3, 24, 24), 1e-8),
    "1x1 image": torch.rand(1, 3, 1, 1),
    "2x3 image": torch.rand(1, 3, 2, 3),
    "batch of 3": torch.rand(3, 3, 9, 13),
}
CONFIGS = {
    "full (prompt, image routing)": dict(use_prompt=True),
    "token routing, top-1, dysample": dict(moe_routing="token", moe_top_k=1, upsampler="dysample"),
}


@contextlib.contextmanager
def one_thread():
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        yield
    finally:
        torch.set_num_threads(threads)


def _autocast(dtype):
    return torch.autocast("cpu", dtype=dtype) if dtype is not None else contextlib.nullcontext()


@pytest.fixture(scope="module", params=list(CONFIGS), ids=list(CONFIGS))
def model(request):
    torch.manual_seed(0)
    return perturb_(tiny_hersr(upscale=2, **CONFIGS[request.param])).eval()


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", list(DTYPES))
def test_extreme_inputs_give_finite_outputs(model, dtype):
    bad = []
    with one_thread(), torch.no_grad(), _autocast(DTYPES[dtype]):
        for name, x in EXTREME_INPUTS.items():
            out = model(x)
            if out.shape != (x.shape[0], 3, 2 * x.shape[2], 2 * x.shape[3]) or not torch.isfinite(out).all():
                bad.append(name)
    assert not bad, f"non-finite or misshapen output under {dtype} for {bad}"


@pytest.mark.numerics
@pytest.mark.parametrize("dtype", ["fp32", "bf16"])
def test_attention_logits_are_bounded_by_the_clamp(monkeypatch, dtype):
    """With every logit scale set to 50 (exp(50) ~ 5e21), |q . k| still stays <= 100 (Swin V2's clamp)."""
    model = perturb_(tiny_hersr(upscale=2)).eval()
    with torch.no_grad():
        for name, p in model.named_parameters():
            if name.endswith("logit_scale"):
                p.fill_(50.0)
    seen = []
    attend = hersr_arch_module.attend

    def spy(q, k, v, *args, **kwargs):
        seen.append((q.float() @ k.float().transpose(-2, -1)).abs().max().item())
        return attend(q, k, v, *args, **kwargs)

    monkeypatch.setattr(hersr_arch_module, "attend", spy)
    x = torch.randn(1, 3, 24, 24, generator=torch.Generator().manual_seed(0)) * 100
    with one_thread(), torch.no_grad(), _autocast(DTYPES[dtype]):
        out = model(x)
    assert torch.isfinite(out).all()
    attentions = sum(1 for n, _ in model.named_parameters() if n.endswith("logit_scale"))
    assert len(seen) == attentions > 0
    tolerance = 1.0 + (1e-5 if dtype == "fp32" else 2e-2)  # bf16 rounds the unit vectors
    assert max(seen) <= 100.0 * tolerance, max(seen)
    assert max(seen) > 50.0  # the scale is applied (near-parallel q and k exist in 24x24 noise)


@pytest.mark.numerics
@pytest.mark.parametrize("routing", ["image", "token"])
def test_moe_router_runs_in_fp32_under_bf16_autocast(routing):
    model = perturb_(tiny_hersr(upscale=2, moe_routing=routing, moe_top_k=2)).train()
    dtypes = {}
    route = model.moe.route

    def recording_route(x, ctx):
        logits, gates = route(x, ctx)
        dtypes.update(logits=logits.dtype, gates=gates.dtype)
        return logits, gates

    model.moe.route = recording_route
    model.reconstruct.register_forward_hook(lambda m, inp, out: dtypes.update(body=out.dtype))
    with one_thread(), torch.autocast("cpu", dtype=torch.bfloat16):
        out = model(torch.rand(2, 3, 16, 16))
    assert dtypes["body"] == torch.bfloat16  # the body really ran in bf16
    assert out.dtype == torch.float32  # the global residual is added in the input's dtype
    assert dtypes["logits"] == torch.float32 and dtypes["gates"] == torch.float32
    gates = model.last_gates
    assert gates.dtype == torch.float32 and model.aux_loss.dtype == torch.float32
    assert torch.allclose(gates.sum(1), torch.ones(()), atol=1e-6)
    assert math.isfinite(model.aux_loss.item())


HIGH_LR_ITERS = 120  # twelve extreme batches, four of each kind


def _train_options(tmp_path, amp):
    network = {"type": "HERSR", "upscale": 2, **TINY, "use_prompt": True, "msg_outputs": True, "moe_top_k": 2}
    return hersr_model_options(
        tmp_path, network, "numerics", ema_decay=0.9,
        optim_g={"type": "Adam", "lr": 1e-2, "betas": [0.9, 0.99]},  # 50x the usual 2e-4
        total_iter=HIGH_LR_ITERS, frequency_opt={"type": "FFTLoss", "loss_weight": 0.05},
        msg_opt={"type": "L1Loss", "loss_weight": 1.0, "weights": [0.5, 0.25, 0.125]},
        grad_clip=0.5, amp=amp, max_nonfinite_steps=1000,
    )  # fmt: skip


def _batch(i: int, gen: torch.Generator) -> dict:
    """Mostly natural-ish patches, with an extreme one (flat black/white, checkerboard) every 10th step."""
    gt = F.interpolate(torch.rand(2, 3, 8, 8, generator=gen), size=(32, 32), mode="bicubic").clamp(0, 1)
    if i % 10 == 0:
        gt = [torch.zeros_like(gt), torch.ones_like(gt), _checker(32).expand(2, -1, -1, -1)][i // 10 % 3]
    lq = F.interpolate(gt, size=(16, 16), mode="area")
    return {"lq": lq, "gt": gt}


@pytest.mark.slow
@pytest.mark.parametrize("amp", [None, "bf16"], ids=["fp32", "bf16"])
def test_training_at_a_high_learning_rate_stays_finite(tmp_path, amp):
    torch.manual_seed(0)
    model = HERSRModel(_train_options(tmp_path, amp))
    gen = torch.Generator().manual_seed(0)
    with one_thread():
        for i in range(1, HIGH_LR_ITERS + 1):
            model.update_learning_rate(i)
            model.feed_data(_batch(i, gen))
            model.optimize_parameters(i)
            assert model.nonfinite_steps == 0, f"step {i} was skipped as non-finite: {model.log_dict}"
            assert all(math.isfinite(v) for v in model.log_dict.values()), (i, model.log_dict)
        for net in (model.net_g, model.net_g_ema):
            assert all(torch.isfinite(p).all() for p in net.parameters())
            net.eval()
            with torch.no_grad():
                for dtype in ("fp32", "bf16"):
                    with _autocast(DTYPES[dtype]):
                        for name, x in EXTREME_INPUTS.items():
                            assert torch.isfinite(net(x)).all(), (dtype, name)
