"""switch_to_deploy(): merged branches give the same outputs, fewer parameters, loadable weights."""

import copy

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR, Conv1x1, PartialLargeKernelConv, hersr_m, hersr_s
from tests.conftest import TINY, perturb_, tiny_hersr, train_steps

pytestmark = pytest.mark.numerics


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


def test_cpu_training_path_of_the_large_kernel_runs_nchw_with_the_same_numbers():
    """oneDNN's channels_last backward of a 17x17 conv on few channels is ~20x slower: with autograd on
    CPU the large conv gets an NCHW input, and the block's output and gradients are unchanged."""
    torch.manual_seed(0)
    conv = PartialLargeKernelConv(16, kernel_size=17).to(memory_format=torch.channels_last)
    seen = []
    conv.large.register_forward_pre_hook(lambda _, args: seen.append(args[0].is_contiguous()))
    x = torch.randn(2, 16, 20, 20).contiguous(memory_format=torch.channels_last).requires_grad_()
    y = conv(x)
    assert seen == [True] and y.is_contiguous(memory_format=torch.channels_last)
    (y * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    grads = [x.grad.clone()] + [p.grad.clone() for p in conv.parameters()]
    with torch.no_grad():  # the inference path: channels_last straight into the conv
        torch.testing.assert_close(conv(x), y, atol=1e-5, rtol=0)
    assert seen[-1] is False
    reference = torch.nn.functional.conv2d(  # autograd through a plain NCHW reference
        torch.nn.functional.pad(x[:, :4].contiguous(), [8] * 4, mode="replicate"), conv.large.weight, conv.large.bias)
    reference = reference + conv.small(x[:, :4]) + x[:, :4]
    torch.testing.assert_close(y[:, :4], reference, atol=1e-5, rtol=0)
    x.grad = None
    for p in conv.parameters():
        p.grad = None
    (torch.cat((reference, x[:, 4:]), 1) * torch.linspace(-1, 1, y.numel()).view_as(y)).sum().backward()
    for got, want in zip(grads, [x.grad] + [p.grad for p in conv.parameters()]):
        torch.testing.assert_close(got, want, atol=1e-4, rtol=1e-4)


def test_cpu_training_step_takes_no_per_group_conv_loop():
    """The per-channel 1x1 branch of the reparameterizable depthwise 3x3 is an affine, not a grouped
    conv, whose CPU backward falls back to one small conv per channel (``_slow_conv2d_backward``)."""
    from torch.profiler import profile

    model = tiny_hersr(upscale=2).train().to(memory_format=torch.channels_last)
    x = torch.rand(2, 3, 24, 24).contiguous(memory_format=torch.channels_last)
    with profile(record_shapes=True) as prof:
        out = model(x)
        (out[0] if isinstance(out, tuple) else out).mean().backward()
    events = prof.key_averages(group_by_input_shape=True)
    per_group = [e.input_shapes for e in events if e.key == "aten::_slow_conv2d_backward" and e.input_shapes[2][:2] == [1, 1]]
    assert any(e.key == "aten::convolution_backward" for e in events) and not per_group, per_group


def test_cpu_inference_runs_1x1_convs_on_onednn_with_the_same_numbers():
    """With one thread PyTorch sends 1x1 convs to its generic im2col path (``_slow_conv2d_forward``),
    up to ~1.8x slower on channels_last maps: in CPU inference HERSR's 1x1 convs call oneDNN and give
    the same outputs; with autograd they keep nn.Conv2d's path, and so does a channels_first input."""
    from torch.profiler import profile

    torch.manual_seed(0)
    conv = Conv1x1(24, 40)
    x = torch.randn(2, 24, 9, 11).contiguous(memory_format=torch.channels_last)
    reference = torch.nn.functional.conv2d(x, conv.weight, conv.bias)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        with torch.no_grad(), profile() as prof:
            fast = conv(x)
        with profile() as prof_grad:
            trained = conv(x)
    finally:
        torch.set_num_threads(threads)
    assert {e.key for e in prof.events()} >= {"aten::mkldnn_convolution"}
    assert "aten::_slow_conv2d_forward" not in {e.key for e in prof.events()}
    assert "aten::_slow_conv2d_forward" in {e.key for e in prof_grad.events()}  # the path it avoids
    torch.testing.assert_close(fast, reference, atol=1e-6, rtol=1e-6)
    torch.testing.assert_close(trained, reference, atol=1e-6, rtol=1e-6)
    assert fast.is_contiguous(memory_format=torch.channels_last)
    model = hersr_s()
    assert sum(isinstance(m, Conv1x1) for m in model.modules()) >= 20  # every 1x1 of the network


def test_cpu_inference_token_linear_and_expand_halves_keep_the_numbers():
    """The qkv projection as a oneDNN 1x1 conv over the tokens equals nn.Linear; the expansion's two
    channel halves, each computed on its own, equal the wide conv split afterwards; the in-place gate
    and residual helpers write into their fresh operand only without autograd and never narrow a sum."""
    from hersr_arch.archs.hersr_arch import PaddedDepthwiseExpand, gate_product, residual_add, token_linear

    torch.manual_seed(0)
    linear = torch.nn.Linear(20, 60)
    tokens = torch.randn(7, 64, 20)
    with torch.no_grad(), torch.profiler.profile() as prof:
        fast = token_linear(tokens, linear)
    assert "aten::mkldnn_convolution" in {e.key for e in prof.events()}
    torch.testing.assert_close(fast, linear(tokens), atol=1e-6, rtol=1e-6)
    assert fast.shape == (7, 64, 60)

    expand = PaddedDepthwiseExpand(12, 32)
    with torch.no_grad():
        for p in expand.parameters():
            p.normal_(0, 0.3)
    x = torch.randn(2, 12, 9, 10).contiguous(memory_format=torch.channels_last)
    padded = torch.nn.functional.pad(x, (1, 1, 1, 1), mode="replicate")
    wide = torch.nn.functional.conv2d(padded, expand.expand.weight, expand.expand.bias)
    dw = expand.dwconv
    centre = wide[..., 1:-1, 1:-1]
    wide = (torch.nn.functional.conv2d(wide, dw.conv.weight, dw.conv.bias, groups=32)
            + centre * dw.point.weight.view(1, -1, 1, 1) + dw.point.bias.view(1, -1, 1, 1) + centre)  # fmt: skip
    for mode in (torch.enable_grad, torch.no_grad):
        with mode():
            a, b = expand(padded)
        torch.testing.assert_close(torch.cat((a, b), 1), wide, atol=1e-5, rtol=1e-5)

    a, b = torch.rand(3, 4), torch.rand(3, 4)
    with torch.no_grad():
        assert gate_product(a, b) is a
        assert residual_add(a, b) is a
        wider = residual_add(torch.ones(3, 4, dtype=torch.bfloat16), torch.full((3, 4), 1e-3))
    assert wider.dtype == torch.float32 and torch.allclose(wider, torch.full((3, 4), 1.001))
    a = torch.rand(3, 4, requires_grad=True) * 1.0
    assert gate_product(a, b) is not a


def test_cpu_inference_in_row_bands_keeps_the_numbers(monkeypatch):
    """Large maps run expand -> gate -> project and window attention in row bands (cache-sized) in CPU
    inference: the same output as whole maps (fp64: to rounding; fp32 on oneDNN: to its summation
    order), for shifted and plain windows, padded sizes and a batch of two; training never bands."""
    from hersr_arch.archs import hersr_arch as arch

    model = perturb_(tiny_hersr(depths=(2, 2, 1, 1), upscale=2)).eval()
    model.switch_to_deploy()
    x = torch.rand(2, 3, 29, 22)
    calls = {"expand": 0, "attend": 0}
    attend_windows = arch.WindowAttention._attend_windows

    def counting_attend(self, *args):
        calls["attend"] += 1
        return attend_windows(self, *args)

    for m in model.modules():
        if isinstance(m, arch.PaddedDepthwiseExpand):
            m.register_forward_hook(lambda *_: calls.update(expand=calls["expand"] + 1))
    monkeypatch.setattr(arch.WindowAttention, "_attend_windows", counting_attend)
    n_expand = sum(isinstance(m, arch.PaddedDepthwiseExpand) for m in model.modules())
    n_attend = sum(isinstance(m, arch.WindowAttention) for m in model.modules())

    def run(dtype, band_bytes):
        monkeypatch.setattr(arch, "BAND_ABOVE_BYTES", 2**40 if band_bytes is None else 0)
        monkeypatch.setattr(arch, "BAND_BYTES", band_bytes or 0)
        calls.update(expand=0, attend=0)
        with torch.no_grad():
            return model.to(dtype)(x.to(dtype))

    for dtype, atol in ((torch.float64, 1e-12), (torch.float32, 1e-5)):
        whole = run(dtype, None)
        assert calls == {"expand": n_expand, "attend": n_attend}
        rows3 = 3 * 22 * 8 * whole.element_size()  # 3 rows of the widest expanded map
        banded = run(dtype, rows3)
        assert calls["expand"] > 4 * n_expand and calls["attend"] > 2 * n_attend
        torch.testing.assert_close(banded, whole, atol=atol, rtol=0)

    monkeypatch.setattr(arch, "BAND_ABOVE_BYTES", 0)
    calls.update(expand=0, attend=0)
    model.train()
    model(x[:, :, :16, :16])
    assert calls == {"expand": n_expand, "attend": n_attend}


def test_deploy_folds_the_gated_conv_projection_and_loads_weights_deployed_before(monkeypatch):
    """Deploy folds each local path's last 1x1 (``GatedConv.project``) into its block's fusion 1x1.
    Deployed weights saved before that fold (``project`` still separate) load into a deployed model,
    built directly or rebuilt from the weights, folded on the way: same outputs, caller's dict untouched."""
    from hersr_arch.archs import hersr_arch as arch
    from hersr_arch.loading import build_from_state_dict, infer_config

    trained = train_steps(tiny_hersr(upscale=2), steps=3).eval()
    x = torch.rand(1, 3, 14, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = trained(x)

    def scale_fold_only(block):  # what deploy did before: the layer scale alone went into ``fuse``
        block.fuse.weight *= block.scale.view(-1, 1, 1, 1)
        block.fuse.bias *= block.scale.view(-1)
        block.scale = None

    with monkeypatch.context() as patch:
        patch.setattr(arch.DualPathBlock, "reparameterize", torch.no_grad()(scale_fold_only))
        earlier = copy.deepcopy(trained).switch_to_deploy().state_dict()
    assert any(k.endswith("local.gated.project.weight") for k in earlier)

    deployed = copy.deepcopy(trained).switch_to_deploy()
    assert not any(k.endswith("gated.project.weight") for k in deployed.state_dict())
    assert all(m.project is None for m in deployed.modules() if isinstance(m, arch.GatedConv))
    assert all(m.project is not None for m in trained.modules() if isinstance(m, arch.GatedConv))

    keys_before = set(earlier)
    built = HERSR(**TINY, upscale=2, deploy=True).eval()
    built.load_state_dict(earlier, strict=True)
    assert set(earlier) == keys_before
    assert infer_config(earlier)["deploy"]
    rebuilt = build_from_state_dict(earlier).eval()
    with torch.no_grad():
        for model in (deployed, built, rebuilt):
            torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    for key, value in built.state_dict().items():
        torch.testing.assert_close(value, deployed.state_dict()[key], atol=1e-6, rtol=1e-5)

    broken = {k: v for k, v in earlier.items() if not k.endswith("local.gated.project.bias")}
    with pytest.raises(RuntimeError, match="local.gated.project.weight"):  # torch names the stray key
        HERSR(**TINY, upscale=2, deploy=True).load_state_dict(broken, strict=True)
