"""Kernel launches per forward (and per training step): what bounds a small network on a GPU.

At batch 1-16 a GPU finishes most of an efficient SR network's kernels faster than the host can
launch them, so the number of launches, not the MACs, sets the time. The count here is the number
of ATen ops that one call dispatches to a device kernel, seen below autograd by a
``TorchDispatchMode`` on the CPU:

- views (``view``, ``permute``, ``slice``, ``expand``, ``detach``, ...), allocations without a
  fill (``empty``) and ops that return no tensor (``promote_types``) launch nothing and are not
  counted; ``.item()`` (a device-to-host copy) is;
- an op that hands back one of its inputs unchanged (not an in-place op) is not counted;
- ops on host-side tensors alone are not counted: the optimizer's step counters, which PyTorch
  keeps on the CPU for a model on a GPU (Adam without ``capturable``), so their increments and the
  ``.item()`` reads of its bias corrections (two per parameter tensor) launch nothing there;
- everything else counts once, in-place ops and copies included. A fused CUDA op can launch more
  than one kernel, and a ``_foreach`` optimizer op launches one per chunk of tensors; the count is
  a lower bound that ranks networks the way a GPU profile does.

A model prepared for CPU inference (``hersr_arch.cpu_inference``) runs the network file's graph
while counted: the count is the one a GPU forward makes. A forward is counted in steady state,
after one uncounted forward at the same size.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Callable, Iterable

import torch
from torch import nn
from torch.utils._python_dispatch import TorchDispatchMode

# Ops that allocate or re-describe memory without running a kernel (``_unsafe_view`` is the view
# that ``reshape`` returns after its own copy, not marked as an alias in its schema).
_NO_KERNEL = {
    torch.ops.aten._unsafe_view.default,
    torch.ops.aten._reshape_alias.default,
    torch.ops.aten.empty.memory_format,
    torch.ops.aten.empty_strided.default,
    torch.ops.aten.empty_like.default,
    torch.ops.aten.lift_fresh.default,
    torch.ops.aten.set_.source_Storage_storage_offset,
}


def _tensors(value) -> list[torch.Tensor]:
    if isinstance(value, torch.Tensor):
        return [value]
    if isinstance(value, (list, tuple)):
        return [t for item in value for t in _tensors(item)]
    return []


class LaunchCounter(TorchDispatchMode):
    """Counts kernel-launching ops by name while active (``counts``: ``Counter[str]``). ``host``:
    tensors that stay on the CPU when the model runs on a GPU; ops that read only those (and no
    other tensor) are not counted."""

    def __init__(self, host: Iterable[torch.Tensor] = ()):
        super().__init__()
        self.counts: Counter[str] = Counter()
        self._host = {id(t) for t in host}

    def __torch_dispatch__(self, func, types, args=(), kwargs=None):
        out = func(*args, **(kwargs or {}))
        if func.is_view or func in _NO_KERNEL:
            return out
        inputs = _tensors(args) + _tensors(list((kwargs or {}).values()))
        if self._host and inputs and all(id(t) in self._host for t in inputs):
            return out  # host-side bookkeeping (optimizer step counters)
        if not _tensors(out) and not func._schema.is_mutable and func is not torch.ops.aten._local_scalar_dense.default:
            # metadata (``promote_types``, sizes); ``.item()`` is a device-to-host copy, and an in-place
            # ``_foreach`` op (the optimizer's updates) returns nothing but runs kernels
            return out
        if not func._schema.is_mutable:
            ids = {id(t) for t in inputs}
            if any(id(t) in ids for t in _tensors(out)):  # handed back unchanged
                return out
        self.counts[func.overloadpacket.__name__] += 1
        return out

    @property
    def total(self) -> int:
        return sum(self.counts.values())


def forward_launches(model: nn.Module, size: tuple[int, int] = (96, 96), in_ch: int = 3) -> LaunchCounter:
    """Launches of one eval forward of ``model`` on a ``(1, in_ch, H, W)`` input, without autograd,
    in steady state: after one uncounted forward at the same size, as every forward but a
    program's first (size-keyed caches filled)."""
    model.eval()
    x = torch.rand(1, in_ch, *size)
    counter = LaunchCounter()
    with torch.no_grad():
        model(x)
        with counter:
            model(x)
    return counter


def training_step_launches(
    model: nn.Module,
    size: tuple[int, int] = (64, 64),
    batch: int = 16,
    scale: int = 4,
    loss: Callable[[torch.Tensor, torch.Tensor], torch.Tensor] | None = None,
) -> LaunchCounter:
    """Launches of one training step: forward, L1 loss, backward and an Adam step (``foreach``, as
    PyTorch picks on a GPU), after one untimed step so that the optimizer state exists. Adam's step
    counters are host-side on a GPU, so the ops on them alone are not counted."""
    model.train()
    opt = torch.optim.Adam([p for p in model.parameters() if p.requires_grad], lr=1e-4, foreach=True)
    loss = loss or (lambda out, target: (out - target).abs().mean())
    x = torch.rand(batch, 3, *size)
    target = torch.rand(batch, 3, size[0] * scale, size[1] * scale)

    def step():
        out = model(x)
        out = out[0] if isinstance(out, tuple) else out
        value = loss(out, target) + getattr(model, "aux_loss", 0)
        opt.zero_grad(set_to_none=True)
        value.backward()
        opt.step()

    step()
    counter = LaunchCounter(host=[state["step"] for state in opt.state.values()])
    with counter:
        step()
    return counter
