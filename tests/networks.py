"""Tiny HERSR configurations and weight perturbation, for tests that need non-trivial networks."""

from pathlib import Path

import torch

from hersr_arch.archs.hersr_arch import HERSR, Upsample2x, icnr_

# Weights as HERSR wrote them before the config record (config format 1: an integer ``hyper``
# buffer, layer scales as ``blocks.N.scale``), written at commit acbd2a8 from a 2-stage network with
# every component on (x2, avg-pool split, token routing, top-1, prompt, fixed noise, train_size 24):
# ``config`` (its arguments), ``train``, ``deployed``, ``deployed_before_project_fold`` (deploy as
# it was before the gated conv's ``project`` was folded), ``input`` and the eval ``output``.
FORMAT1 = Path(__file__).parent / "data" / "format1_tiny.pt"

# A full-featured but tiny network: every component on, seconds to run on 2 CPU cores.
TINY = dict(
    dims=(8, 12, 16, 16),
    depths=(1, 1, 1, 1),
    dec_depths=(1, 1, 1, 1),
    num_heads=(2, 2, 2, 2),
    window_size=4,
    plk_kernel=5,
    train_size=16,
)


def tiny_hersr(**kwargs) -> HERSR:
    return HERSR(**{**TINY, **kwargs})


@torch.no_grad()
def perturb_(model: HERSR, seed: int = 0, std: float = 0.1) -> HERSR:
    """Give every parameter random values, as after training, so that no branch is zero.

    Convs feeding a PixelShuffle get a random ICNR kernel (the structure a trained decoder keeps
    only approximately); everything else gets Gaussian noise added.
    """
    gen = torch.Generator().manual_seed(seed)
    for p in model.parameters():
        p.add_(torch.randn(p.shape, generator=gen) * std)
    for module in model.modules():
        if isinstance(module, Upsample2x) and isinstance(module.body[1], torch.nn.PixelShuffle):
            icnr_(module.body[0], 2)
    icnr_(model.reconstruct, model.upscale)
    return model


def train_steps(model: HERSR, steps: int = 3, size: int = 16, seed: int = 0) -> HERSR:
    """A few Adam steps on random data, so reparameterizable branches become non-trivial."""
    torch.manual_seed(seed)
    opt = torch.optim.Adam(model.parameters(), lr=1e-2)
    model.train()
    for _ in range(steps):
        x = torch.rand(2, model.num_in_ch, size, size)
        y = torch.rand(2, model.num_out_ch, size * model.upscale, size * model.upscale)
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        loss = (out - y).abs().mean() + model.aux_loss
        opt.zero_grad()
        loss.backward()
        opt.step()
    return model
