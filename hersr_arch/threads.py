"""How many torch CPU threads a command uses: the cores that are idle, unless the user says.

With more torch threads than idle cores, each parallel region waits for its slowest thread, and a
thread that shares its core with another busy process is slow: a training step can then take
several times as long as with one thread (docs/reliability.md has a measurement). So ``hersr demo``,
``hersr bench`` and ``basicsr train|test`` count the cores this process may run on (its affinity
mask), subtract the load the other processes put on them (the 1-minute load average, scaled to the
share of the machine's cores that the mask holds), and use the rest, at least one. ``--threads`` and
``OMP_NUM_THREADS`` override the choice.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping


def usable_cores() -> int:
    """Cores in this process's affinity mask (all cores where there is no mask)."""
    if hasattr(os, "sched_getaffinity"):
        return len(os.sched_getaffinity(0))
    return os.cpu_count() or 1


def choose_threads(
    requested: int | None = None,
    environ: Mapping[str, str] | None = None,
    cores: int | None = None,
    machine_cores: int | None = None,
    load: float | None = None,
) -> tuple[int, str]:
    """``(threads, why)``: ``requested`` if given, else ``OMP_NUM_THREADS`` if set, else the idle cores.

    ``cores``: cores this process may use; ``machine_cores``: all cores; ``load``: the 1-minute load
    average (each defaults to this machine's value now).
    """
    if requested is not None:
        if requested < 1:
            raise ValueError(f"--threads must be >= 1, got {requested}.")
        return requested, f"{requested} (--threads)"
    environ = os.environ if environ is None else environ
    env = environ.get("OMP_NUM_THREADS", "").strip()
    if env:
        if env.isdigit() and int(env) > 0:
            return int(env), f"{int(env)} (OMP_NUM_THREADS)"
        raise ValueError(f"OMP_NUM_THREADS={env!r} is not a positive integer.")
    cores = usable_cores() if cores is None else cores
    machine_cores = (os.cpu_count() or cores) if machine_cores is None else machine_cores
    if load is None:
        load = os.getloadavg()[0] if hasattr(os, "getloadavg") else 0.0
    busy = load * cores / max(machine_cores, cores)  # the share of the load that falls on our cores
    threads = max(1, min(cores, cores - round(busy)))
    return threads, f"{threads} ({cores} usable cores, 1-minute load {load:.2f} on {machine_cores}; --threads or OMP_NUM_THREADS override)"


def set_torch_threads(requested: int | None = None, log: Callable[[str], None] | None = print) -> int:
    """Choose the thread count (:func:`choose_threads`), apply it to torch, log it; returns it."""
    import torch

    threads, why = choose_threads(requested)
    torch.set_num_threads(threads)
    if log is not None:
        log(f"torch threads: {why}")
    return threads
