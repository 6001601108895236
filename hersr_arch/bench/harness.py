"""``hersr bench``: HERSR presets against the field's peers, measured in one run on one machine.

What is measured (NTIRE efficient-SR conventions): parameters, MACs for a 320x180 input at x4
(1280x720 output; ``torch.utils.flop_counter`` with attention on the math backend, MACs = FLOPs/2),
CPU latency at 128x128 and 320x180 (warm-up, then interleaved rounds; every round times every
model once, and HERSR's ratio to each peer is taken within the round, so a busy machine slows
both sides alike), peak memory of one forward (in a fresh subprocess: peak RSS growth), and on a
GPU, when present, fp16/bf16 latency with CUDA events.

Peers are instantiated from their libraries' own code with random weights, never re-implemented:
BasicSR (SwinIR-light, EDSR-baseline, RRDBNet) and, with the optional ``spandrel`` extra, SPAN,
SAFMN, OmniSR, DAT-light, PLKSR-tiny and RealPLKSR.
"""

from __future__ import annotations

import datetime
import json
import os
import platform
import statistics
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import torch
import torch.nn.functional as F
from torch import nn

from hersr_arch.archs.hersr_arch import hersr_m, hersr_s
from hersr_arch.bench.launch_count import forward_launches, training_step_launches
from hersr_arch.bench.model_cost import count_macs, count_params
from hersr_arch.bench.targets import load_targets
from hersr_arch.cpu_inference import prepare_cpu_inference

MAC_SIZE = (180, 320)  # (H, W) input for the MAC count: 1280x720 output at x4
LATENCY_SIZES = ((128, 128), (180, 320))
LAUNCH_SIZES = ((96, 96), (180, 320))  # the launch count must not depend on the size
TRAIN_STEP_MODELS = ("hersr_s (train graph)", "SPAN-48")  # one training step's launches (batch 16, 64x64 LR)


@dataclass
class Entry:
    """One benchmarked network: how to build it and what it needs from the input size."""

    name: str
    build: Callable[[], nn.Module]
    group: str  # 'hersr' or the peer's library
    multiple: int = 1  # input sides must be multiples of this (padded by the harness, then cropped)
    prepare: Callable[[nn.Module], None] | None = None  # one-time inference preparation (fusing)
    count: Callable[[nn.Module], int] = count_params  # parameters of the inference graph
    results: dict = field(default_factory=dict)


class PaddedForward(nn.Module):
    """Reflect-pad the input to a multiple of ``multiple`` and crop the output (for peers that need it)."""

    def __init__(self, net: nn.Module, multiple: int, scale: int = 4):
        super().__init__()
        self.net, self.multiple, self.scale = net, multiple, scale

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        h, w = x.shape[-2:]
        ph, pw = -h % self.multiple, -w % self.multiple
        if ph or pw:
            x = F.pad(x, (0, pw, 0, ph), mode="reflect")
        return self.net(x)[..., : h * self.scale, : w * self.scale]


def _fuse_span_once(model: nn.Module) -> None:
    """spandrel's SPAN re-fuses its reparameterized convs on every eval forward; fuse once."""
    for module in model.modules():
        if hasattr(module, "update_params") and hasattr(module, "eval_conv"):
            module.update_params()
            module.update_params = lambda: None


def _span_inference_params(model: nn.Module) -> int:
    """SPAN keeps its training branches next to the fused ``eval_conv``; count what inference uses."""
    fused = [m for m in model.modules() if hasattr(m, "eval_conv") and hasattr(m, "update_params")]
    training_only = sum(count_params(m) - count_params(m.eval_conv) for m in fused)
    return count_params(model) - training_only


def hersr_entries(scale: int = 4) -> list[Entry]:
    entries = []
    for name, build in (("hersr_s", hersr_s), ("hersr_m", hersr_m)):
        entries.append(Entry(f"{name} (train graph)", lambda b=build: b(upscale=scale), "hersr",
                             prepare=prepare_cpu_inference))
        entries.append(Entry(f"{name} (deployed)", lambda b=build: b(upscale=scale).switch_to_deploy(), "hersr",
                             prepare=prepare_cpu_inference))
    return entries


def basicsr_peers(scale: int = 4) -> list[Entry]:
    from hersr_arch._compat import apply_torchvision_compat

    apply_torchvision_compat()
    from basicsr.archs.edsr_arch import EDSR
    from basicsr.archs.rrdbnet_arch import RRDBNet
    from basicsr.archs.swinir_arch import SwinIR

    return [
        Entry("SwinIR-light", lambda: SwinIR(
            upscale=scale, in_chans=3, img_size=64, window_size=8, img_range=1.0, depths=[6, 6, 6, 6],
            embed_dim=60, num_heads=[6, 6, 6, 6], mlp_ratio=2, upsampler="pixelshuffledirect",
            resi_connection="1conv"), "basicsr", multiple=8),
        Entry("EDSR-baseline", lambda: EDSR(
            num_in_ch=3, num_out_ch=3, num_feat=64, num_block=16, upscale=scale, res_scale=1, img_range=255.0,
            rgb_mean=(0.4488, 0.4371, 0.4040)), "basicsr"),
        Entry("RRDBNet", lambda: RRDBNet(num_in_ch=3, num_out_ch=3, scale=scale, num_feat=64, num_block=23,
                                         num_grow_ch=32), "basicsr"),
    ]  # fmt: skip


def spandrel_peers(scale: int = 4) -> list[Entry]:
    """Peers from spandrel's bundled architectures; empty when spandrel is not installed."""
    try:
        from spandrel.architectures.DAT.__arch.DAT import DAT
        from spandrel.architectures.OmniSR.__arch.OmniSR import OmniSR
        from spandrel.architectures.PLKSR.__arch.PLKSR import PLKSR
        from spandrel.architectures.PLKSR.__arch.RealPLKSR import RealPLKSR
        from spandrel.architectures.SAFMN.__arch.safmn import SAFMN
        from spandrel.architectures.SPAN.__arch.span import SPAN
    except ImportError:
        return []
    return [
        Entry("SPAN-48", lambda: SPAN(num_in_ch=3, num_out_ch=3, feature_channels=48, upscale=scale), "spandrel",
              prepare=_fuse_span_once, count=_span_inference_params),
        Entry("SAFMN", lambda: SAFMN(dim=36, n_blocks=8, ffn_scale=2.0, upscaling_factor=scale), "spandrel",
              multiple=8),
        Entry("OmniSR", lambda: OmniSR(num_feat=64, block_num=1, pe=True, window_size=8, res_num=5,
                                       up_scale=scale), "spandrel", multiple=8),
        Entry("DAT-light", lambda: DAT(img_size=64, in_chans=3, embed_dim=60, split_size=[8, 32], depth=[18],
                                       num_heads=[6], expansion_factor=2, upscale=scale, img_range=1.0,
                                       resi_connection="3conv", upsampler="pixelshuffledirect"), "spandrel",
              multiple=32),
        Entry("PLKSR-tiny", lambda: PLKSR(dim=64, n_blocks=12, kernel_size=13, split_ratio=0.25,
                                          upscaling_factor=scale, use_ea=False), "spandrel"),
        Entry("RealPLKSR", lambda: RealPLKSR(upscaling_factor=scale), "spandrel"),
    ]  # fmt: skip


def build_trainable(entry: Entry) -> nn.Module:
    """The model as its library trains it (padded when it needs a size multiple), seeded, in train mode.

    No inference preparation: SPAN's fuse-once would freeze its eval conv at the initial weights.
    """
    torch.manual_seed(0)
    net = entry.build()
    if entry.multiple > 1:
        net = PaddedForward(net, entry.multiple)
    return net.train()


def build(entry: Entry) -> nn.Module:
    """The model prepared for timing: eval mode, padded, one-time inference preparation applied."""
    net = build_trainable(entry).eval()
    if entry.prepare is not None:
        with torch.inference_mode():
            net(torch.rand(1, 3, 16, 16))
        entry.prepare(net)
    return net


# ----------------------------------------------------------------------------------------------
# Measurements
# ----------------------------------------------------------------------------------------------


def interleaved_latency(models: dict[str, nn.Module], size: tuple[int, int], rounds: int, warmup: int = 1) -> dict:
    """Median seconds per model, and per-round times, for ``rounds`` interleaved rounds."""
    x = torch.rand(1, 3, *size)
    times = {name: [] for name in models}
    with torch.inference_mode():
        for _ in range(warmup):
            for net in models.values():
                net(x)
        for _ in range(rounds):
            for name, net in models.items():
                start = time.perf_counter()
                net(x)
                times[name].append(time.perf_counter() - start)
    return times


def round_ratio(times: dict, a: str, b: str) -> float:
    """Median over rounds of ``time(a) / time(b)`` measured in the same round."""
    return statistics.median(ta / tb for ta, tb in zip(times[a], times[b]))


def cuda_latency(net: nn.Module, size: tuple[int, int], dtype: torch.dtype, runs: int = 10) -> float:
    """Median milliseconds on CUDA under autocast ``dtype``, timed with CUDA events."""
    net = net.cuda()
    x = torch.rand(1, 3, *size, device="cuda")
    samples = []
    with torch.inference_mode(), torch.autocast("cuda", dtype=dtype):
        for _ in range(3):
            net(x)
        for _ in range(runs):
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            net(x)
            end.record()
            torch.cuda.synchronize()
            samples.append(start.elapsed_time(end))
    net.cpu()
    return statistics.median(samples)


def rss_kib(field: str) -> int:
    """``VmRSS`` (current) or ``VmHWM`` (peak since the last reset) of this process, in KiB (Linux)."""
    with open("/proc/self/status", encoding="utf-8") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1])
    raise OSError(f"{field} not in /proc/self/status")


def _peak_child(conn, name: str, size: tuple[int, int], threads: int) -> None:
    """In a fresh process: build ``name``, run one forward, send the peak RSS growth in MiB."""
    torch.set_num_threads(threads)
    net = build(next(e for e in all_entries() if e.name == name))
    x = torch.rand(1, 3, *size)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")  # reset the peak-RSS mark (VmHWM) to the current RSS
    before = rss_kib("VmRSS")
    with torch.inference_mode():
        net(x)
    conn.send((rss_kib("VmHWM") - before) / 1024)


_FORKSERVER = None


def _fresh_process_context():
    """Processes forked from a server that has imported torch, this module and spandrel once:
    as clean as a new interpreter (no model, no allocator history) without its ~8 s of imports."""
    global _FORKSERVER
    if _FORKSERVER is None:
        import importlib.util
        import multiprocessing

        _FORKSERVER = multiprocessing.get_context("forkserver")
        preload = ["hersr_arch.bench.harness"] + (["spandrel"] if importlib.util.find_spec("spandrel") else [])
        _FORKSERVER.set_forkserver_preload(preload)
    return _FORKSERVER


def peak_memory_mib(name: str, size: tuple[int, int], threads: int) -> float | None:
    """Peak RSS growth (MiB) of one forward, in a fresh process so that models do not interfere.

    Linux only (``/proc``); None elsewhere or when the measuring process fails.
    """
    if not os.path.exists("/proc/self/clear_refs"):
        return None
    ctx = _fresh_process_context()
    receive, send = ctx.Pipe(duplex=False)
    proc = ctx.Process(target=_peak_child, args=(send, name, size, threads), daemon=True)
    proc.start()
    send.close()
    try:
        peak = receive.recv() if receive.poll(1800) else None
    except EOFError:  # the process died (e.g. out of memory) before sending
        peak = None
    proc.join(60)
    if proc.is_alive():
        proc.kill()
    return peak


# A tiny parent for the measured command: ru_maxrss of a child starts at its parent's RSS at fork
# (the bench process holds every model), so the command is forked from an interpreter without torch.
_PEAK_RSS_WRAPPER = """
import json, resource, subprocess, sys, time
start = time.perf_counter()
rc = subprocess.run(sys.argv[1:]).returncode
peak = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss / 1024
print(json.dumps({"rc": rc, "peak_mib": peak, "seconds": time.perf_counter() - start}))
"""


def upscale_peak_rss(size: int, tile: int, threads: int) -> dict | None:
    """Peak RSS (MiB, whole process) of the ``hersr upscale`` command at x4 on a ``size`` x ``size``
    image with ``--tile tile`` (hersr_s, random weights); None when it fails (or off Linux)."""
    import tempfile

    import cv2
    import numpy as np

    from hersr_arch.archs.hersr_arch import hersr_s

    env = {**os.environ, "OMP_NUM_THREADS": str(threads)}
    with tempfile.TemporaryDirectory() as folder:
        torch.manual_seed(0)
        torch.save({"params_ema": hersr_s(upscale=4).state_dict()}, os.path.join(folder, "w.pth"))
        img = np.random.default_rng(0).integers(0, 256, (size, size, 3), dtype=np.uint8)
        cv2.imwrite(os.path.join(folder, "in.png"), cv2.GaussianBlur(img, (7, 7), 2))
        command = [sys.executable, "-m", "hersr_arch.cli.hersr_cli", "upscale", "in.png", "out", "--model", "w.pth",
                   "--tile", str(tile), "--no-progress"]  # fmt: skip
        result = subprocess.run([sys.executable, "-c", _PEAK_RSS_WRAPPER, *command], cwd=folder, env=env,
                                capture_output=True, text=True, timeout=3600)  # fmt: skip
    if result.returncode != 0:
        return None
    values = json.loads(result.stdout.strip().splitlines()[-1])
    if values["rc"] != 0:
        return None
    return {"preset": "hersr_s", "size": size, "tile": tile, "peak_mib": values["peak_mib"],
            "seconds": values["seconds"]}  # fmt: skip


def matmul_gflops(n: int = 1024, repeats: int = 5) -> float:
    """This machine's fp32 matmul rate, for reading the models' achieved GFLOP/s."""
    a, b = torch.rand(n, n), torch.rand(n, n)
    a @ b
    start = time.perf_counter()
    for _ in range(repeats):
        a @ b
    return 2 * n**3 * repeats / (time.perf_counter() - start) / 1e9


def all_entries(include_spandrel: bool = True) -> list[Entry]:
    peers = basicsr_peers() + (spandrel_peers() if include_spandrel else [])
    return hersr_entries() + peers


# ----------------------------------------------------------------------------------------------
# The run and its report
# ----------------------------------------------------------------------------------------------


@dataclass
class BenchConfig:
    rounds: int = 15
    threads: int = 2
    sizes: tuple = LATENCY_SIZES
    mac_size: tuple = MAC_SIZE
    models: tuple[str, ...] | None = None  # names to include (default: all)
    memory: bool = True
    include_spandrel: bool = True
    upscale_size: int = 1024  # side of the image for the `hersr upscale` peak-RSS target (0: skip)
    upscale_tile: int = 256
    launch_sizes: tuple = LAUNCH_SIZES
    train_step_size: tuple = (64, 64)  # LR patch of the training-step launch count (batch 16)


def run_bench(config: BenchConfig, log: Callable[[str], None] = print) -> dict:
    """Measure everything; returns a JSON-able dict that :func:`render_markdown` turns into the report."""
    torch.set_num_threads(config.threads)
    entries = [e for e in all_entries(config.include_spandrel) if not config.models or e.name in config.models]
    models = {}
    for entry in entries:
        log(f"building {entry.name}")
        models[entry.name] = build(entry)
        entry.results["params"] = entry.count(models[entry.name])
        entry.results["gmacs"] = count_macs(models[entry.name], *config.mac_size) / 1e9
        for size in config.launch_sizes:
            entry.results[f"launches_{size[1]}x{size[0]}"] = forward_launches(models[entry.name], size).total
    report = {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "cpu": cpu_name(),
        "gpu": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None,
        "threads": config.threads,
        "rounds": config.rounds,
        "mac_size": list(config.mac_size),
        "matmul_gflops": matmul_gflops(),
        "thp_alloc": os.environ.get("THP_MEM_ALLOC_ENABLE", "unset"),
        "models": {},
        "ratios": {},
        "scaling": {},
        "train_step_launches": {},
    }
    for entry in entries:
        if entry.name in TRAIN_STEP_MODELS:
            log(f"launches of one training step of {entry.name}")
            counter = training_step_launches(build_trainable(entry), config.train_step_size)
            report["train_step_launches"][entry.name] = counter.total
    times_by_size = {}
    for size in config.sizes:
        log(f"timing at {size[1]}x{size[0]} ({config.rounds} interleaved rounds)")
        times_by_size[size] = interleaved_latency(models, size, config.rounds)
    for entry in entries:
        row = dict(entry.results, group=entry.group)
        for size, times in times_by_size.items():
            row[f"ms_{size[1]}x{size[0]}"] = statistics.median(times[entry.name]) * 1000
        big = f"ms_{config.mac_size[1]}x{config.mac_size[0]}"
        if big in row:
            row["gflops_per_s"] = 2 * row["gmacs"] / (row[big] / 1000)
        if config.memory:
            log(f"peak memory of {entry.name}")
            row["peak_mib"] = peak_memory_mib(entry.name, config.mac_size, config.threads)
        if torch.cuda.is_available():
            for dtype, label in ((torch.float16, "fp16"), (torch.bfloat16, "bf16")):
                row[f"cuda_{label}_ms"] = cuda_latency(models[entry.name], config.mac_size, dtype)
        report["models"][entry.name] = row
    big_times = times_by_size.get(tuple(config.mac_size)) or next(iter(times_by_size.values()))
    names = list(models)
    for hersr in [n for n in names if n.endswith("(deployed)")]:
        train = hersr.replace("(deployed)", "(train graph)")
        if train in big_times:  # --models may leave the train graph out
            report["ratios"][f"{hersr} / {train}"] = round_ratio(big_times, hersr, train)
        for peer in [n for n in names if not n.startswith("hersr")]:
            report["ratios"][f"{hersr} / {peer}"] = round_ratio(big_times, hersr, peer)
    # HERSR's deployed graphs, and for reference the peers of the latency targets: a machine effect
    # (allocator, caches) shows in both, an architecture effect only in one.
    for name in [n for n in names if n.endswith("(deployed)") or n in SCALING_PEERS]:
        log(f"4x-pixel scaling of {name}")
        report["scaling"][name] = _pixel_scaling(models[name], config.mac_size, config.rounds)
        if config.memory and name.startswith("hersr"):
            big = (config.mac_size[0] * 2, config.mac_size[1] * 2)
            peak_big, peak = peak_memory_mib(name, big, config.threads), report["models"][name].get("peak_mib")
            if peak_big is not None and peak:
                report["scaling"][name]["memory_ratio_4x_pixels"] = peak_big / peak
    if config.memory and config.upscale_size > 0:
        log(f"hersr upscale peak RSS at {config.upscale_size}x{config.upscale_size}")
        report["upscale_memory"] = upscale_peak_rss(config.upscale_size, config.upscale_tile, config.threads)
    return report


SCALING_PEERS = ("SPAN-48", "RealPLKSR")


def _pixel_scaling(net: nn.Module, size: tuple[int, int], rounds: int) -> dict:
    """Same-round time ratio and MAC ratio for 4x the pixels (2x each side)."""
    big = (size[0] * 2, size[1] * 2)
    x_small, x_big = torch.rand(1, 3, *size), torch.rand(1, 3, *big)
    ratios = []
    with torch.inference_mode():
        net(x_small), net(x_big)
        for _ in range(max(3, rounds // 3)):
            start = time.perf_counter()
            net(x_small)
            middle = time.perf_counter()
            net(x_big)
            ratios.append((time.perf_counter() - middle) / (middle - start))
    return {
        "time_ratio_4x_pixels": statistics.median(ratios),
        "mac_ratio_4x_pixels": count_macs(net, *big) / count_macs(net, *size),
    }


def cpu_name() -> str:
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.startswith("model name"):
                    return line.split(":", 1)[1].strip()
    except OSError:
        pass
    return platform.processor() or platform.machine()




def check_targets(report: dict) -> list[tuple[str, float | None, float, bool | None]]:
    """``(target, measured, limit, met)`` for each target; ``None`` when not measured in this run."""
    rows = []
    for target in load_targets()["bench"]:
        text, kind, key, limit = target["target"], target["kind"], target["key"], target["limit"]
        if kind == "ratio":
            value = report["ratios"].get(key)
        elif kind in ("linear", "memory"):
            run = report.get("scaling", {}).get(key, {})
            if kind == "linear":
                value = run["time_ratio_4x_pixels"] / run["mac_ratio_4x_pixels"] if run else None
            else:
                value = run.get("memory_ratio_4x_pixels")
        elif kind == "launches":
            model = report["models"].get(key, {})
            counts = [v for k, v in model.items() if k.startswith("launches_")]
            value = max(counts) if counts else None
        elif kind == "upscale":
            run = report.get("upscale_memory")
            value = run[key] if run and run["size"] == 1024 and run["tile"] == 256 else None
        else:
            model = report["models"].get(key)
            value = None if model is None else (model["params"] if kind == "param" else model["gmacs"])
        rows.append((text, value, limit, None if value is None else value <= limit))
    return rows


def render_markdown(report: dict) -> str:
    sizes = [k for k in next(iter(report["models"].values())) if k.startswith("ms_")]
    launch_keys = [k for k in next(iter(report["models"].values())) if k.startswith("launches_")]
    lines = [
        "# HERSR benchmark",
        "",
        f"Date {report['date']} · torch {report['torch']} · CPU {report['cpu']} · {report['threads']} threads"
        + (f" · GPU {report['gpu']}" if report["gpu"] else " · no GPU")
        + f" · {report['rounds']} interleaved rounds · fp32 matmul {report['matmul_gflops']:.1f} GFLOP/s"
        + f" · THP_MEM_ALLOC_ENABLE={report.get('thp_alloc', 'unset')}",
        *([f"Command: `{report['command']}`"] if report.get("command") else []),
        "",
        "MACs for a 320x180 input at x4 (1280x720 output), counted by `torch.utils.flop_counter` with attention "
        "on the math backend (FFTs not counted). Latency: median over rounds, `torch.inference_mode`, batch 1. "
        "Peak memory: peak RSS growth of one 320x180 forward in a fresh process. The 4x-pixel time "
        "ratio is the median of same-round ratios. Launches: kernel-launching ops of one eval forward "
        "(views, allocations and metadata ops not counted; `hersr_arch/bench/launch_count.py`), at each "
        "input size; on a GPU at batch 1-16 they, not the MACs, set the time.",
        "",
        "| model | group | params | GMACs | " + " | ".join(s.replace("ms_", "ms ") for s in sizes)
        + " | GFLOP/s | peak MiB | " + " | ".join(k.replace("launches_", "launches ") for k in launch_keys) + " |",
        "| --- | --- | ---: | ---: | " + " | ".join("---:" for _ in sizes) + " | ---: | ---: | "
        + " | ".join("---:" for _ in launch_keys) + " |",
    ]
    for name, row in report["models"].items():
        cells = [f"{row[s]:.0f}" for s in sizes]
        peak = row.get("peak_mib")
        lines.append(
            f"| {name} | {row['group']} | {row['params'] / 1e6:.3f}M | {row['gmacs']:.1f} | " + " | ".join(cells)
            + f" | {row.get('gflops_per_s', 0):.1f} | {'n/a' if peak is None else f'{peak:.0f}'} | "
            + " | ".join(str(row[k]) for k in launch_keys) + " |"
        )
    if report.get("train_step_launches"):
        steps = ", ".join(f"{k} {v}" for k, v in report["train_step_launches"].items())
        lines += ["", f"Kernel-launching ops of one training step (forward, L1, backward, Adam foreach; batch 16): "
                      f"{steps}."]
    if any("cuda_fp16_ms" in row for row in report["models"].values()):
        lines += ["", "| model | CUDA fp16 ms | CUDA bf16 ms |", "| --- | ---: | ---: |"]
        for name, row in report["models"].items():
            lines.append(f"| {name} | {row['cuda_fp16_ms']:.2f} | {row['cuda_bf16_ms']:.2f} |")
    h, w = report["mac_size"]
    lines += ["", f"Same-round latency ratios (median over rounds, {w}x{h}):", "", "| ratio | value |",
              "| --- | ---: |"]
    lines += [f"| {k} | {v:.3f} |" for k, v in report["ratios"].items()]
    lines += ["", f"4x the pixels ({2 * w}x{2 * h} vs {w}x{h}); peak-memory ratio from the fresh-process "
              "peaks (HERSR only):", "", "| model | time ratio | MAC ratio | peak-memory ratio |",
              "| --- | ---: | ---: | ---: |"]  # fmt: skip
    lines += [f"| {k} | {v['time_ratio_4x_pixels']:.2f} | {v['mac_ratio_4x_pixels']:.2f} | "
              + (f"{v['memory_ratio_4x_pixels']:.2f} |" if "memory_ratio_4x_pixels" in v else "- |")
              for k, v in report["scaling"].items()]  # fmt: skip
    run = report.get("upscale_memory")
    if run:
        lines += ["", f"`hersr upscale` of a {run['size']}x{run['size']} image at x4 with --tile {run['tile']} "
                      f"({run['preset']}, whole process incl. torch and BasicSR imports): peak RSS "
                      f"{run['peak_mib']:.0f} MiB, {run['seconds']:.1f} s."]
    lines += ["", "Targets:", "", "| target | measured | limit | met |", "| --- | ---: | ---: | :---: |"]
    for text, value, limit, met in check_targets(report):
        shown = "not measured" if value is None else f"{value:,.3f}" if value < 100 else f"{value:,.0f}"
        lines.append(f"| {text} | {shown} | {limit:,} | {'n/a' if met is None else 'yes' if met else 'NO'} |")
    return "\n".join(lines) + "\n"


def write_report(markdown: str, data: dict, path: str | os.PathLike) -> None:
    """``markdown`` to ``path`` and ``data`` as JSON beside it (same name, ``.json``)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write(markdown)
    with open(os.fspath(path).rsplit(".", 1)[0] + ".json", "w", encoding="utf-8") as f:
        json.dump(data, f, indent=2)
