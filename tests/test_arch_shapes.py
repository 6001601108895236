"""Output shapes for every scale, odd and tiny sizes, batches and presets; clear config errors."""

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR, hersr_l, hersr_m, hersr_s
from tests.networks import tiny_hersr

SIZES = [(1, 1), (7, 5), (67, 45), (16, 16), (64, 96), (72, 8)]  # 72x8: 1-px-wide bottleneck > train_size


@pytest.mark.parametrize("scale", [1, 2, 3, 4])
@pytest.mark.parametrize("size", SIZES)
def test_shape_every_scale_and_size(scale, size):
    model = tiny_hersr(upscale=scale).eval()
    h, w = size
    with torch.no_grad():
        out = model(torch.rand(2, 3, h, w))
    assert out.shape == (2, 3, scale * h, scale * w)


@pytest.mark.parametrize("batch", [1, 2])
def test_feature_maps_stay_channels_last_and_the_output_is_nchw(batch):
    """Every map a stage, an up-sampling or the frequency fusion reads or writes is channels_last in
    the strides that torch's ops recognise (a batch-1 map with other strides is read as NCHW and
    converted by every conv after it); the output is plain NCHW."""
    from torch._prims_common import suggest_memory_format

    from hersr_arch.archs.hersr_arch import FrequencyFusion, Stage, Upsample2x

    model = hersr_s(upscale=4).eval().switch_to_deploy()
    seen = []

    def record(module, inputs, output):
        maps = [t for t in (*inputs, output) if isinstance(t, torch.Tensor) and t.dim() == 4]
        seen.extend((type(module).__name__, suggest_memory_format(t)) for t in maps)

    for module in model.modules():
        if isinstance(module, (Stage, Upsample2x, FrequencyFusion)):
            module.register_forward_hook(record)
    with torch.no_grad():
        out = model(torch.rand(batch, 3, 24, 40))
    assert len(seen) > 10 and all(fmt == torch.channels_last for _, fmt in seen), seen
    assert out.is_contiguous()


@pytest.mark.parametrize("preset", [hersr_s, hersr_m, hersr_l])
@pytest.mark.parametrize("scale", [1, 4])
def test_presets_shape(preset, scale):
    model = preset(upscale=scale).eval()
    with torch.no_grad():
        out = model(torch.rand(2, 3, 13, 10))
    assert out.shape == (2, 3, 13 * scale, 10 * scale)


def test_channels_in_out_differ():
    model = tiny_hersr(num_in_ch=1, num_out_ch=3, upscale=2).eval()
    with torch.no_grad():
        assert model(torch.rand(1, 1, 9, 9)).shape == (1, 3, 18, 18)


def test_scale_alias():
    assert tiny_hersr(scale=3).upscale == 3
    assert tiny_hersr(upscale=2, scale=2).upscale == 2
    assert HERSR().upscale == 4
    with pytest.raises(ValueError, match="upscale=2 and scale=3"):
        tiny_hersr(upscale=2, scale=3)


@pytest.mark.parametrize(
    "kwargs, message",
    [
        (dict(upscale=5), "upscale must be one of 1, 2, 3, 4, got 5"),
        (dict(freq_split="dct"), "freq_split='dct' is not supported"),
        (dict(upsampler="nearest"), "upsampler='nearest'"),
        (dict(moe_routing="pixel"), "moe_routing='pixel'"),
        (dict(noise_mode="gaussian"), "noise_mode='gaussian'"),
        (dict(moe_experts=("conv", "lstm")), "moe_experts=\\['conv', 'lstm'\\]"),
        (dict(dims=(10, 12, 16, 16)), "dims\\[0\\]=10 must be a positive multiple of 4"),
        (dict(depths=(1, 1)), "depths must have one entry per stage \\(4"),
        (dict(plk_kernel=4), "plk_kernel must be an odd integer"),
        (dict(use_local=False, use_context=False), "at least one of use_local and use_context"),
        (dict(moe_top_k=-1), "moe_top_k must be 0"),
    ],
)
def test_bad_config_is_a_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        tiny_hersr(**kwargs)


@pytest.mark.parametrize(
    "x, error, message",
    [
        (torch.rand(1, 2, 8, 8), ValueError, "built for 3 input channels, got an input with 2"),
        (torch.rand(1, 5, 8, 8), ValueError, "built for 3 input channels, got an input with 5"),
        (torch.randint(0, 255, (1, 3, 8, 8), dtype=torch.uint8), TypeError, "torch.uint8"),
        (torch.rand(3, 8, 8), ValueError, "4-D tensor"),
        (torch.rand(1, 3, 0, 8), ValueError, "empty input"),
    ],
)
def test_bad_input_is_a_clear_error(x, error, message):
    with pytest.raises(error, match=message):
        tiny_hersr().eval()(x)
