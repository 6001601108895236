"""torch.compile (inductor on the CPU) for tiled inference: deployed hersr_s compiled for one tile
shape computes what eager computes, in one graph; ``hersr upscale --compile`` uses it.

Compile times are printed (``pytest -s``); ``benchmarks/gpu_bench.sh`` measures compiled speed.
"""

import pytest
import torch
import torch.nn.functional as F
from torch._dynamo.utils import counters

from hersr_arch.archs.hersr_arch import hersr_s
from hersr_arch.inference import StaticShapeForward
from hersr_arch.tools.upscale import Upscaler
from tests.networks import TINY, perturb_

pytestmark = pytest.mark.usefixtures("fresh_dynamo")


def test_tiles_compiled_once_match_eager():
    torch.manual_seed(0)
    model = perturb_(hersr_s(upscale=4), std=0.02).eval().switch_to_deploy()
    static = StaticShapeForward(model, 24, 24, scale=4)
    gen = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for h, w in ((24, 24), (24, 13), (9, 24), (5, 7)):  # full tile, edge tiles, a small image
            x = torch.rand(1, 3, h, w, generator=gen)
            padded = F.pad(x, (0, 24 - w, 0, 24 - h), mode="replicate")
            expected = model(padded)[..., : 4 * h, : 4 * w]
            torch.testing.assert_close(static(x), expected, rtol=1e-4, atol=1e-4)
    assert counters["stats"]["unique_graphs"] == 1 and not counters["graph_break"]
    (seconds,) = static.compile_seconds.values()
    print(f"hersr_s deployed, 24x24 tile, inductor compile and first run: {seconds:.1f} s")
    with pytest.raises(ValueError, match="larger than the compiled shape 24x24"):
        static(torch.rand(1, 3, 25, 8))


def test_upscaler_compiles_for_the_padded_tile_shape(monkeypatch):
    """The wiring of ``hersr upscale --compile`` (inductor's numbers are checked above): dynamo's own
    backend, so that the graph is captured and counted without a second inductor compile."""
    compile_ = torch.compile
    monkeypatch.setattr(torch, "compile", lambda model, **kwargs: compile_(model, **{**kwargs, "backend": "eager"}))
    torch.manual_seed(0)
    model = perturb_(hersr_s(upscale=2, **{k: TINY[k] for k in ("dims", "num_heads")}), std=0.02)
    model = model.eval().switch_to_deploy()
    logged = []
    compiled = Upscaler(model, torch.device("cpu"), tile=12, tile_pad=4, compile=True, log=logged.append)
    plain = Upscaler(model, torch.device("cpu"), tile=12, tile_pad=4)
    x = torch.rand(1, 3, 30, 19, generator=torch.Generator().manual_seed(0))
    out = compiled(x)
    assert out.shape == plain(x).shape == (1, 3, 60, 38)
    assert compiled.run.height == compiled.run.width == 12 + 2 * 4
    assert counters["stats"]["unique_graphs"] == 1  # six tiles of four shapes, one graph
    assert len(logged) == 1 and "compiled for 1x3x20x20 inputs" in logged[0]
    with pytest.raises(ValueError, match="needs tile"):
        Upscaler(model, torch.device("cpu"), compile=True)
