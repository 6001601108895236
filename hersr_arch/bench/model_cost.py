"""Parameter and MAC counts of HERSR presets (the README's preset table comes from here)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hersr_arch.archs.hersr_arch import hersr_l, hersr_m, hersr_s
from hersr_arch.bench.launch_count import forward_launches

PRESET_BUILDERS = {"hersr_s": hersr_s, "hersr_m": hersr_m, "hersr_l": hersr_l}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, in_ch: int = 3) -> float:
    """Multiply-accumulates of one eval forward on a ``(1, in_ch, height, width)`` input.

    ``torch.utils.flop_counter`` counts FLOPs (MACs = FLOPs / 2). SDPA's fused CPU kernel is invisible
    to it, so attention is counted under the math backend. The network file's graph is counted, also
    for a model prepared for CPU inference (its kernels step aside while a counter observes), so row
    bands never count halo rows twice. FFTs are not counted (O(N log N)).
    """
    model.eval()
    counter = FlopCounterMode(display=False)
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), counter:
        model(torch.zeros(1, in_ch, height, width))
    return counter.get_total_flops() / 2


def network_cost(network: dict[str, str], scale: int) -> tuple[float | None, float | None]:
    """``(params in thousands, Multi-Adds in G)``, rounded as papers print them, of a ``network_g`` as a BasicSR log dumps it
    (``{option: value as text}``), as papers count them: parameters after deploy (reparameterized
    branches merged) and Multi-Adds of one forward to a 1280x720 output. ``(None, None)`` for a network
    without parameters (a bicubic baseline).
    """
    import yaml

    from hersr_arch.option_checks import build_network

    def value(text: str):
        return None if text == "None" else yaml.safe_load(text)

    model = build_network({key: value(text) for key, text in network.items()})
    if hasattr(model, "switch_to_deploy"):
        model.switch_to_deploy()
    params = count_params(model)
    if params == 0:
        return None, None
    in_ch = getattr(model, "num_in_ch", 3)
    macs = count_macs(model, round(720 / scale), round(1280 / scale), in_ch)
    return round(params / 1e3), round(macs / 1e9, 1)


def preset_table(scale: int = 4, height: int = 180, width: int = 320) -> str:
    """Markdown table: params (train graph / deployed), deployed GMACs and deployed kernel launches
    per forward (``hersr_arch.bench.launch_count``) for each preset."""
    rows = [
        f"| preset | params (train) | params (deployed) | GMACs, x{scale} at {width}x{height} input "
        "| kernel launches per forward (deployed) |",
        "| --- | ---: | ---: | ---: | ---: |",
    ]
    for name, build in PRESET_BUILDERS.items():
        torch.manual_seed(0)
        model = build(upscale=scale)
        train_params = count_params(model)
        model.switch_to_deploy()
        rows.append(
            f"| `{name}` | {train_params / 1e6:.3f}M | {count_params(model) / 1e6:.3f}M "
            f"| {count_macs(model, height, width) / 1e9:.1f} | {forward_launches(model, (height, width)).total} |"
        )
    return "\n".join(rows) + "\n"
