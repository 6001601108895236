"""Reduced precision, channels_last and torch.compile give the fp32 eager outputs (CPU; CUDA when present).

What is checked here is what the README's precision table and the spandrel descriptor claim.
"""

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR
from tests.networks import tiny_hersr, train_steps

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(scope="module")
def trained() -> HERSR:
    """A tiny network after a few optimizer steps (every branch non-zero), in eval mode."""
    return train_steps(tiny_hersr(upscale=2), steps=3).eval()


def inputs(device: str) -> dict[str, torch.Tensor]:
    gen = torch.Generator().manual_seed(3)
    # 21x26 is below train_size (global context pooling); 40x35 above it (local TLC pooling).
    return {f"{h}x{w}": torch.rand(2, 3, h, w, generator=gen).to(device) for h, w in ((21, 26), (40, 35))}


@pytest.mark.numerics
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_autocast_matches_fp32(trained, device, dtype):
    model = trained.to(device)
    for name, x in inputs(device).items():
        with torch.no_grad():
            reference = model(x)
            with torch.autocast(device, dtype=dtype):
                out = model(x)
        assert out.dtype == torch.float32  # the global residual is added in the input dtype
        diff = (out - reference).abs().max().item()
        assert diff < 2e-2, f"{dtype} autocast on {device}, {name}: max abs diff {diff:.3g}"
    trained.cpu()


@pytest.mark.numerics
@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.bfloat16, torch.float16], ids=["bf16", "fp16"])
def test_cast_model_matches_fp32(trained, device, dtype):
    """``model.half()`` / ``.bfloat16()`` (how spandrel and chaiNNer run reduced precision) works:
    the router and FFT expert keep computing in fp32 from their cast weights."""
    model = tiny_hersr(upscale=2).eval()
    model.load_state_dict(trained.state_dict())
    model.to(device=device, dtype=dtype)
    for name, x in inputs(device).items():
        with torch.no_grad():
            reference = trained.to(device)(x)
            out = model(x.to(dtype))
        assert out.dtype == dtype and torch.isfinite(out).all()
        diff = (out.float() - reference).abs().max().item()
        assert diff < 2e-2, f"{dtype} weights on {device}, {name}: max abs diff {diff:.3g}"
    trained.cpu()


@pytest.mark.numerics
def test_fp16_training_step_has_finite_gradients():
    """traiNNer-redux assumes fp16 AMP is safe for an arch unless it is listed otherwise."""
    device = DEVICES[-1]
    model = tiny_hersr(upscale=2).to(device).train()
    x = torch.rand(2, 3, 16, 16, device=device)
    y = torch.rand(2, 3, 32, 32, device=device)
    with torch.autocast(device, dtype=torch.float16):
        loss = (model(x) - y).abs().mean() + model.aux_loss
    loss.backward()
    assert torch.isfinite(loss)
    for name, p in model.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name


@pytest.mark.numerics
@pytest.mark.parametrize("deploy", [False, True], ids=["train-graph", "deployed"])
def test_channels_last_gives_the_same_output(trained, deploy):
    model = tiny_hersr(upscale=2).eval()
    model.load_state_dict(trained.state_dict())
    if deploy:
        model.switch_to_deploy()
    x = inputs("cpu")["40x35"]
    with torch.no_grad():
        reference = model(x)
        model = model.to(memory_format=torch.channels_last)
        out = model(x.contiguous(memory_format=torch.channels_last))
    torch.testing.assert_close(out, reference, atol=1e-5, rtol=0)
    assert out.shape == reference.shape


def test_torch_compile_dynamic_matches_eager_and_stays_dynamic(trained):
    """One graph for two input sizes (no graph break, no recompile) and outputs equal to eager.

    Both sizes lie above the map size at which torch's conv heuristics guard (a smaller first
    size costs one re-specialisation, a torch property). The dynamic trace runs on the "eager"
    backend: symbolic shapes through AOTAutograd take minutes on a 2-core CI machine, and what
    AOTAutograd adds (functionalization, decompositions) is checked at one static size below.
    """
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend("eager")
    compiled = torch.compile(trained, dynamic=True, backend=counter)
    gen = torch.Generator().manual_seed(5)
    for h, w in ((92, 86), (77, 99)):
        x = torch.rand(1, 3, h, w, generator=gen)
        with torch.no_grad():
            torch.testing.assert_close(compiled(x), trained(x), atol=1e-5, rtol=0)
        assert counter.frame_count == 1, f"{counter.frame_count} graphs after the {h}x{w} input"
    torch._dynamo.reset()


def test_torch_compile_aot_autograd_matches_eager(trained):
    """The graph inductor would receive (AOTAutograd, static shapes) runs and equals eager."""
    torch._dynamo.reset()
    compiled = torch.compile(trained, backend="aot_eager", fullgraph=True)
    x = torch.rand(1, 3, 40, 35, generator=torch.Generator().manual_seed(6))
    with torch.no_grad():
        torch.testing.assert_close(compiled(x), trained(x), atol=1e-5, rtol=0)
    torch._dynamo.reset()
