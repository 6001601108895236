"""CPU training paths of the network: the large-kernel conv's NCHW detour and no per-channel conv loop."""

import pytest
import torch

from hersr_arch.archs.hersr_arch import PartialLargeKernelConv
from tests.networks import tiny_hersr

pytestmark = pytest.mark.numerics


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
