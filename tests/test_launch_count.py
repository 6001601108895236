"""The kernel-launch count: what it counts (kernels) and what it does not (views, allocations)."""

import torch
import torch.nn.functional as F
from torch import nn

from hersr_arch.bench.launch_count import LaunchCounter, forward_launches, training_step_launches
from tests.networks import tiny_hersr


class Known(nn.Module):
    """Launches: conv, relu, add, cat. Not: views, reshape of a contiguous map, no-op casts."""

    def __init__(self):
        super().__init__()
        self.conv = nn.Conv2d(3, 4, 3, padding=1)

    def forward(self, x):
        y = F.relu(self.conv(x))
        y = y.view(1, 4, -1).reshape(1, 4, *x.shape[-2:]).float().contiguous()
        return torch.cat((y + 1, x), 1)[:, :5]


def test_counts_kernels_not_views():
    counter = forward_launches(Known(), (8, 8))
    assert counter.counts == {"convolution": 1, "relu": 1, "add": 1, "cat": 1}
    assert forward_launches(Known(), (13, 5)).total == 4


def test_item_and_in_place_ops_are_counted():
    counter = LaunchCounter()
    x = torch.ones(3)
    with counter:
        x.add_(1)
        x.sum().item()
    assert counter.counts == {"add_": 1, "sum": 1, "_local_scalar_dense": 1}


def test_a_training_step_counts_forward_backward_and_optimizer():
    forward = forward_launches(tiny_hersr(upscale=2), (8, 8)).total
    step = training_step_launches(tiny_hersr(upscale=2), (8, 8), batch=2, scale=2)
    assert step.total > 2 * forward
    assert any(name.endswith("_backward") for name in step.counts) and any("_foreach" in n for n in step.counts)
    # Adam's step counters stay on the host for a model on a GPU: their increment and the .item() reads
    # of the bias corrections (two per parameter tensor) launch nothing there.
    assert "_local_scalar_dense" not in step.counts, step.counts
    # Adam's in-place updates return nothing but run kernels: counted.
    assert {"_foreach_lerp_", "_foreach_addcdiv_"} <= set(step.counts), step.counts


def test_ops_on_host_tensors_alone_are_not_counted():
    host, device = torch.zeros(()), torch.ones(3)
    counter = LaunchCounter(host=[host])
    with counter:
        host.add_(1)
        host.item()
        device.mul_(host)  # reads a device tensor too: counted
        torch._foreach_add_([device], 1.0)  # in place, returns nothing: counted
    assert counter.counts == {"mul_": 1, "_foreach_add_": 1}, counter.counts


def test_window_attention_cuts_and_restores_windows_with_one_gather_each():
    """Pad to window multiples, shift roll and partition are one gather, and back one more; a shifted
    block passes one mask per window (no q/k/v copies), so the count is the same at any map size."""
    from hersr_arch.archs.hersr_arch import WindowAttention

    for shift in (False, True):
        attn = WindowAttention(8, 2, window_size=4, shift=shift).eval()
        counts = []
        for h, w in ((8, 12), (7, 10)):  # a window multiple, and not
            x = torch.rand(1, h, w, 8)
            with torch.no_grad():
                attn(x)  # caches filled, as in every forward but a program's first
                counter = LaunchCounter()
                with counter:
                    attn(x)
            assert counter.counts["index_select"] == 2, counter.counts
            assert not {"replication_pad2d", "roll", "clone", "copy_"} & set(counter.counts), counter.counts
            counts.append(counter.total)
        assert counts[0] == counts[1]


def test_a_deployed_block_pads_only_for_its_local_convs_and_reads_its_paths_features():
    """Deployed, the GDFN's pad comes with the gather that puts the windows back, and both paths'
    closing 1x1s and the block's residual live in the fusion conv: one pad per local conv, one 1x1
    fusion, no separate projections and no residual add beyond the attention's."""
    from hersr_arch.archs.hersr_arch import DualPathBlock

    block = DualPathBlock(8, 2, 4, True, 2.0, 5, 0.25).eval()
    for module in list(block.modules()):  # as HERSR.switch_to_deploy
        if hasattr(module, "reparameterize"):
            module.reparameterize()
    x = torch.rand(1, 8, 7, 10).contiguous(memory_format=torch.channels_last)
    with torch.no_grad():
        block(x)
        counter = LaunchCounter()
        with counter:
            block(x)
    assert counter.counts["replication_pad2d"] == 2, counter.counts  # the PLK conv and the gated conv
    assert counter.counts["index_select"] == 2 and counter.counts["add"] == 1, counter.counts
    assert counter.counts["convolution"] == 6, counter.counts  # PLK, 2 x (expand, depthwise), fuse


def test_deployed_preset_launches_do_not_depend_on_the_input_size():
    """The stem's pad to size multiples is its first conv's pad, window attention gathers whatever
    the size: a deployed hersr_s launches as many kernels at 96x96 as at 320x180 (x4)."""
    from hersr_arch.archs.hersr_arch import hersr_s

    model = hersr_s().switch_to_deploy()
    assert forward_launches(model, (96, 96)).total == forward_launches(model, (180, 320)).total


def test_pixel_shuffles_are_read_as_views_by_the_add_or_copy_after_them():
    """A decoder up-sampling adds its skip to the shuffled conv output in one pass, and the output's
    shuffle is the copy to NCHW: hersr_s at x4 launches no pixel_shuffle and one copy at the end;
    the numbers are those of ``F.pixel_shuffle``."""
    from hersr_arch.archs.hersr_arch import Upsample2x, hersr_s

    counter = forward_launches(hersr_s(upscale=4).switch_to_deploy(), (24, 40))
    assert "pixel_shuffle" not in counter.counts and counter.counts["clone"] == 1, counter.counts  # the output
    torch.manual_seed(0)
    up = Upsample2x(8, 4).eval()
    nn.init.normal_(up.body[0].weight)
    for batch in (1, 2):
        x = torch.rand(batch, 8, 5, 7).contiguous(memory_format=torch.channels_last)
        for layout in (torch.contiguous_format, torch.channels_last):
            skip = torch.rand(batch, 4, 10, 14).contiguous(memory_format=layout)
            with torch.no_grad():
                out = up(x, skip)
            torch.testing.assert_close(out, F.pixel_shuffle(up.body[0](x), 2) + skip, rtol=0, atol=0)
            assert out.is_contiguous(memory_format=layout)  # the sum keeps the skip's layout
            if layout == torch.channels_last:  # with channels_last's own strides, batch 1 too
                assert out.stride() == skip.stride()


def test_haar_split_is_one_strided_conv_and_one_broadcast_subtraction():
    """The Haar LL band is one fixed stride-2 depthwise conv, and the high band F0 minus each 2x2 cell's
    mean, broadcast: no separate mean, doubling or up-sampled copy, and the bands are those of the
    definition (LL = twice the cell mean, bit for bit: halving is exact)."""
    from hersr_arch.archs.hersr_arch import hersr_s

    model = hersr_s().eval()
    f0 = torch.randn(1, 32, 12, 20).contiguous(memory_format=torch.channels_last)
    counter = LaunchCounter()
    with torch.no_grad(), counter:
        low, high = model._split_frequencies(f0)
    assert counter.counts == {"convolution": 1, "sub": 1}, counter.counts
    mean = F.avg_pool2d(f0, 2)
    assert torch.equal(low, 2 * mean) and torch.equal(high, f0 - F.interpolate(mean, scale_factor=2.0))
    assert high.stride() == f0.stride()  # channels_last's own strides at batch 1
    assert not any(name.startswith("haar") for name in model.state_dict())  # a constant, not a weight


def test_the_input_is_padded_once_for_the_stem_and_the_residual_into_channels_last():
    """One replicate pad of the input serves the stem's first conv and the bicubic residual, and writes
    channels_last itself (no separate layout copy); its crops are the pads each reader needs."""
    from hersr_arch.archs.hersr_arch import bicubic_phases, hersr_s, replicate_pad_channels_last

    model = hersr_s(upscale=3).eval()
    for batch, layout in ((1, torch.contiguous_format), (2, torch.channels_last)):
        x = torch.rand(batch, 3, 13, 10).contiguous(memory_format=layout)
        padded = replicate_pad_channels_last(x, (2, 5, 2, 4))
        assert torch.equal(padded, F.pad(x, (2, 5, 2, 4), mode="replicate"))
        assert padded.is_contiguous(memory_format=torch.channels_last)
        model._phase_kernel(3, x.device)  # built once per device, as in every forward but the first
        counter = LaunchCounter()
        with torch.no_grad(), counter:
            padded = model._pad_input(x)  # to multiples of 8, plus 2 on every side
            model._stem(padded)
            phases = model._residual_phases(padded, 13, 10)
        # one pad of the input; the other is the stem's second conv padding its own input
        assert counter.counts["replication_pad3d"] == 1 and counter.counts["replication_pad2d"] == 1, counter.counts
        assert not {"clone", "copy_", "contiguous"} & set(counter.counts) and padded.shape[-2:] == (16 + 4, 16 + 4)
        torch.testing.assert_close(phases, bicubic_phases(x, 3, 3), rtol=0, atol=0)


def test_an_eval_forward_makes_no_auxiliary_loss():
    """In eval the MoE's auxiliary loss is a constant zero, not a fill kernel per forward."""
    from hersr_arch.archs.hersr_arch import hersr_s

    model = hersr_s().eval()
    counter = forward_launches(model, (16, 16))
    assert not {"new_zeros", "zeros", "zero_", "fill_", "full"} & set(counter.counts), counter.counts
    assert model.aux_loss.item() == 0.0 and model.aux_loss.dtype == torch.float32


def test_training_backward_splits_instead_of_slicing():
    """A slice's backward writes the gradient into a zero-filled copy of its source: the attention's
    q/k/v, the PLK's pass-through split and the depthwise conv's parameters (whole, not sliced) avoid
    it. The one slice left in these modules is the depthwise 1x1/identity branches' centre crop."""
    from hersr_arch.archs.hersr_arch import PartialLargeKernelConv, RepDepthwise3x3, WindowAttention

    cases = (
        (WindowAttention(8, 2, window_size=4, shift=True), torch.rand(2, 8, 8, 8), 0),
        (PartialLargeKernelConv(8, 5), torch.rand(2, 8, 7, 9), 0),
        (RepDepthwise3x3(8), torch.rand(2, 8, 7, 9), 2),  # the centre crop, rows then columns
    )
    for module, x, crops in cases:
        x.requires_grad_(True)
        module(x).sum().backward()  # caches filled
        counter = LaunchCounter()
        with counter:
            module(x).sum().backward()
        assert counter.counts["slice_backward"] == crops, (type(module).__name__, counter.counts)
        assert "select_backward" not in counter.counts, (type(module).__name__, counter.counts)
