"""switch_to_deploy(): merged branches give the same outputs, fewer parameters, loadable weights."""

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR, PartialLargeKernelConv, hersr_m, hersr_s
from tests.conftest import TINY, perturb_, tiny_hersr, train_steps


def _max_abs_diff_ok(a, b):
    return (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("prepare", ["random", "trained"])
def test_deploy_keeps_eval_outputs(scale, prepare):
    model = tiny_hersr(upscale=scale)
    model = perturb_(model) if prepare == "random" else train_steps(model, steps=3)
    model.eval()
    x = torch.rand(2, 3, 23, 17)
    with torch.no_grad():
        before = model(x)
        params_before = sum(p.numel() for p in model.parameters())
        model.switch_to_deploy()
        after = model(x)
    assert _max_abs_diff_ok(before, after), (before - after).abs().max()
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert model.deploy
    assert all(m.small is None for m in model.modules() if isinstance(m, PartialLargeKernelConv))


def test_reparameterized_kernel_is_exact():
    torch.manual_seed(0)
    conv = PartialLargeKernelConv(16, kernel_size=7)
    for p in conv.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 16, 11, 9)
    with torch.no_grad():
        y = conv(x)
        conv.reparameterize()
        assert torch.allclose(conv(x), y, atol=1e-5)
    assert torch.equal(conv(x)[:, 4:], x[:, 4:])  # untouched channels pass through, not aliased


def test_deployed_state_dict_loads_into_deploy_model():
    model = perturb_(tiny_hersr(upscale=2)).eval().switch_to_deploy()
    built = HERSR(**TINY, upscale=2, deploy=True).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(built(x), model(x))
    with pytest.raises(RuntimeError):
        tiny_hersr(upscale=2).load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("preset, budget", [(hersr_s, 0.6e6), (hersr_m, 8e6)])
def test_preset_parameter_budgets_after_deploy(preset, budget):
    model = preset().switch_to_deploy()
    assert sum(p.numel() for p in model.parameters()) <= budget
