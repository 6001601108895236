"""torch.compile (inductor on the CPU) for training: hersr_s's compiled forward and backward compute
what eager computes, in one graph; ``train.compile`` in HERSRModel uses it.

Compile times are printed (``pytest -s``); ``benchmarks/gpu_bench.sh`` measures compiled speed.
"""

import time

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from hersr_arch.archs.hersr_arch import hersr_s
from tests.helpers import hersr_model_options
from tests.networks import TINY, perturb_

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def _loss_and_grads(forward, model, x, y):
    torch.manual_seed(1)  # the texture noise of a training forward
    out = forward(x)
    loss = F.l1_loss(out, y) + model.aux_loss
    grads = torch.autograd.grad(loss, [p for p in model.parameters() if p.requires_grad], allow_unused=True)
    return out.detach(), loss.detach(), grads


def test_compiled_training_step_of_hersr_s_matches_eager():
    torch.manual_seed(0)
    model = perturb_(hersr_s(upscale=4), std=0.02).train()
    gen = torch.Generator().manual_seed(0)
    x, y = torch.rand(2, 3, 32, 32, generator=gen), torch.rand(2, 3, 128, 128, generator=gen)
    eager = _loss_and_grads(model, model, x, y)
    compiled = torch.compile(model, fullgraph=True, dynamic=False)
    with torch._inductor.config.patch(fallback_random=True):  # the same noise as eager
        start = time.perf_counter()
        result = _loss_and_grads(compiled, model, x, y)
        print(f"hersr_s training forward + backward, inductor compile and first run: {time.perf_counter() - start:.1f} s")
        again = _loss_and_grads(compiled, model, x, y)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    for out, loss, grads in (result, again):
        torch.testing.assert_close(out, eager[0], rtol=1e-4, atol=1e-4)
        torch.testing.assert_close(loss, eager[1], rtol=1e-4, atol=1e-5)
        for g, ref in zip(grads, eager[2]):
            if ref is None:
                assert g is None
            else:  # gradients sum over the batch and image: relative to their own scale
                assert (g - ref).abs().max() <= 1e-3 * ref.abs().max() + 1e-6


def _model_options(tmp_path, compile_option):
    tmp_path.mkdir(parents=True, exist_ok=True)
    network = {"type": "HERSR", "upscale": 2, **TINY}
    return hersr_model_options(tmp_path, network, "compile", ema_decay=0.9, compile=compile_option)


def test_train_compile_option_trains_the_same_network(tmp_path):
    from hersr_arch.models.hersr_model import HERSRModel

    runs = {}
    for name, option in (("eager", False), ("compiled", {"backend": "aot_eager"})):
        torch.manual_seed(0)
        model = HERSRModel(_model_options(tmp_path / name, option))
        gen = torch.Generator().manual_seed(0)
        losses = []
        for i in range(1, 4):
            gt = torch.rand(2, 3, 32, 32, generator=gen)
            model.feed_data({"lq": F.interpolate(gt, scale_factor=0.5, mode="area"), "gt": gt})
            torch.manual_seed(i)  # the texture noise
            model.optimize_parameters(i)
            losses.append(model.log_dict["l_pix"])
        model.save(0, 3)
        runs[name] = (model, losses, torch.load(tmp_path / name / "net_g_3.pth", weights_only=True))
    (eager, eager_losses, eager_file), (compiled, compiled_losses, compiled_file) = runs["eager"], runs["compiled"]
    assert compiled.train_forward is not compiled.net_g and compiled.compile_seconds > 0
    assert eager.train_forward is eager.net_g and eager.compile_seconds is None
    torch.testing.assert_close(compiled_losses, eager_losses, rtol=1e-4, atol=1e-6)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    for key in ("params", "params_ema"):  # the plain network's keys, no '_orig_mod.' prefix
        assert list(compiled_file[key]) == list(eager_file[key])


@pytest.mark.parametrize("option", ["yes", {"backend": "inductor", "fullgraph": False}])
def test_train_compile_refuses_unknown_settings(tmp_path, option):
    from hersr_arch.models.hersr_model import HERSRModel

    with pytest.raises(ValueError, match="train.compile=.* is not supported; use true, false, or a mapping"):
        HERSRModel(_model_options(tmp_path, option))
