"""Parameter and MAC counts of HERSR presets (the README's preset table comes from here)."""

from __future__ import annotations

import torch
from torch import nn
from torch.nn.attention import SDPBackend, sdpa_kernel
from torch.utils.flop_counter import FlopCounterMode

from hersr_arch.archs.hersr_arch import hersr_l, hersr_m, hersr_s

PRESETS = {"hersr_s": hersr_s, "hersr_m": hersr_m, "hersr_l": hersr_l}


def count_params(model: nn.Module) -> int:
    return sum(p.numel() for p in model.parameters())


def count_macs(model: nn.Module, height: int, width: int, in_ch: int = 3) -> float:
    """Multiply-accumulates of one eval forward on a ``(1, in_ch, height, width)`` input.

    ``torch.utils.flop_counter`` counts FLOPs (MACs = FLOPs / 2). SDPA's fused CPU kernel is invisible
    to it, so attention is counted under the math backend. FFTs are not counted (O(N log N)).
    """
    model.eval()
    with torch.no_grad(), sdpa_kernel(SDPBackend.MATH), FlopCounterMode(display=False) as counter:
        model(torch.zeros(1, in_ch, height, width))
    return counter.get_total_flops() / 2


def preset_table(scale: int = 4, height: int = 180, width: int = 320) -> str:
    """Markdown table: params (train graph / deployed) and deployed GMACs for each preset."""
    rows = [
        f"| preset | params (train) | params (deployed) | GMACs, x{scale} at {width}x{height} input |",
        "| --- | ---: | ---: | ---: |",
    ]
    for name, build in PRESETS.items():
        torch.manual_seed(0)
        model = build(upscale=scale)
        train_params = count_params(model)
        model.switch_to_deploy()
        rows.append(
            f"| `{name}` | {train_params / 1e6:.3f}M | {count_params(model) / 1e6:.3f}M "
            f"| {count_macs(model, height, width) / 1e9:.1f} |"
        )
    return "\n".join(rows) + "\n"
