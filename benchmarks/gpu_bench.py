"""GPU latency of HERSR's deployed presets against SPAN-48, Compact, SAFMN and RealPLKSR, in one run.

    bash benchmarks/gpu_bench.sh                  # on a machine with a CUDA GPU: writes benchmarks/RESULTS_gpu.md
    python benchmarks/gpu_bench.py --out -        # print only

Per model, x4, batch 1: eager fp16 and bf16, ``torch.compile`` (static shapes, fp16) and a CUDA
graph replay (fp16), at 320x180 and 960x540 input; plus one training step (batch 16, 64x64 LR,
bf16 autocast, L1, Adam) for hersr_s and SPAN-48. Medians of ``--runs`` timed runs after warm-up,
CUDA events. Compiles share a time budget (``--compile-budget``), so the run ends within ten
minutes on a current GPU; what the budget left out is marked as such. Kernel launches per forward
(the machine-independent count of ``hersr bench``) are printed beside the times.

Without a GPU it runs eager fp32 on the CPU at a small size, once, to show the script works, and
says so in the report: CPU numbers here are not the GPU results.
"""

from __future__ import annotations

import argparse
import datetime
import json
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torch import nn

REPO = Path(__file__).resolve().parents[1]
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

from hersr_arch.bench.harness import Entry, all_entries, build, build_trainable  # noqa: E402
from hersr_arch.bench.launch_count import forward_launches  # noqa: E402

MODELS = ("hersr_s (deployed)", "hersr_m (deployed)", "SPAN-48", "Compact", "SAFMN", "RealPLKSR")
TRAIN_MODELS = ("hersr_s (train graph)", "SPAN-48")
SIZES = ((180, 320), (540, 960))
TARGETS = [
    ("hersr_s eager fp16 <= 3x SPAN-48", "eager_fp16", "hersr_s (deployed)", "SPAN-48", 3.0),
    ("hersr_s compiled or CUDA graph <= 1.2x SPAN-48 (same mode)", "best_static", "hersr_s (deployed)", "SPAN-48", 1.2),
    ("hersr_m eager fp16 <= 1.0x RealPLKSR", "eager_fp16", "hersr_m (deployed)", "RealPLKSR", 1.0),
]


def compact_entry(scale: int = 4) -> Entry:
    """Real-ESRGAN's SRVGGNetCompact (64 features, 16 convs), the 'Compact' of the issue's table."""
    from hersr_arch._compat import apply_torchvision_compat

    apply_torchvision_compat()
    from basicsr.archs.srvgg_arch import SRVGGNetCompact

    return Entry("Compact", lambda: SRVGGNetCompact(3, 3, num_feat=64, num_conv=16, upscale=scale), "basicsr")


def entries() -> dict[str, Entry]:
    found = {e.name: e for e in all_entries()}
    found["Compact"] = compact_entry()
    return found


def timed(fn: Callable[[], object], runs: int, device: torch.device) -> float:
    """Median milliseconds of ``fn`` over ``runs`` calls after 3 warm-up calls."""
    for _ in range(3):
        fn()
    times = []
    for _ in range(runs):
        if device.type == "cuda":
            start, end = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
            start.record()
            fn()
            end.record()
            torch.cuda.synchronize()
            times.append(start.elapsed_time(end))
        else:
            t = time.perf_counter()
            fn()
            times.append((time.perf_counter() - t) * 1000)
    return statistics.median(times)


def cuda_graph(net: nn.Module, x: torch.Tensor) -> Callable[[], torch.Tensor]:
    """A replay of one captured forward on the static input ``x``."""
    stream = torch.cuda.Stream()
    stream.wait_stream(torch.cuda.current_stream())
    with torch.cuda.stream(stream):
        for _ in range(3):
            net(x)
    torch.cuda.current_stream().wait_stream(stream)
    graph = torch.cuda.CUDAGraph()
    with torch.cuda.graph(graph):
        net(x)
    return graph.replay


def inference_row(net: nn.Module, size: tuple[int, int], device: torch.device, runs: int,
                  compile_left: Callable[[], float]) -> dict:  # fmt: skip
    row = {}
    if device.type != "cuda":
        x = torch.rand(1, 3, *size)
        with torch.inference_mode():
            row["eager_fp32"] = timed(lambda: net(x), runs, device)
        return row
    for label, dtype in (("fp16", torch.float16), ("bf16", torch.bfloat16)):
        half = net.to(device, dtype)
        x = torch.rand(1, 3, *size, device=device, dtype=dtype)
        try:
            with torch.inference_mode():
                row[f"eager_{label}"] = timed(lambda half=half, x=x: half(x), runs, device)
        except Exception as err:  # a peer without bf16 kernels, out of memory
            row[f"eager_{label}"] = f"failed: {type(err).__name__}"
    half = net.to(device, torch.float16)
    x = torch.rand(1, 3, *size, device=device, dtype=torch.float16)
    try:
        with torch.inference_mode():
            row["cuda_graph_fp16"] = timed(cuda_graph(half, x), runs, device)
    except Exception as err:  # capture needs static, sync-free forwards
        row["cuda_graph_fp16"] = f"failed: {type(err).__name__}"
    if compile_left() <= 0:
        row["compiled_fp16"] = "skipped: compile budget spent"
        return row
    try:
        started = time.perf_counter()
        compiled = torch.compile(half, dynamic=False, fullgraph=False)
        with torch.inference_mode():
            compiled(x)
            torch.cuda.synchronize()
        row["compile_s"] = time.perf_counter() - started
        with torch.inference_mode():
            row["compiled_fp16"] = timed(lambda: compiled(x), runs, device)
    except Exception as err:
        row["compiled_fp16"] = f"failed: {type(err).__name__}: {str(err)[:120]}"
    return row


def training_step_ms(net: nn.Module, device: torch.device, runs: int, batch: int, size: int) -> float:
    net = net.to(device).train()
    opt = torch.optim.Adam(net.parameters(), lr=1e-4)
    x = torch.rand(batch, 3, size, size, device=device)
    y = torch.rand(batch, 3, 4 * size, 4 * size, device=device)
    enabled = device.type == "cuda"

    def step():
        with torch.autocast(device.type, dtype=torch.bfloat16, enabled=enabled):
            out = net(x)
            out = out[0] if isinstance(out, tuple) else out
            loss = (out.float() - y).abs().mean() + getattr(net, "aux_loss", 0)
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()

    return timed(step, runs, device)


def ratio(report: dict, mode: str, a: str, b: str, size: str) -> float | None:
    def value(name):
        row = report["inference"].get(name, {}).get(size, {})
        if mode == "best_static":
            values = [row.get(k) for k in ("compiled_fp16", "cuda_graph_fp16")]
            values = [v for v in values if isinstance(v, float)]
            return min(values) if values else None
        v = row.get(mode)
        return v if isinstance(v, float) else None

    va, vb = value(a), value(b)
    return None if va is None or vb is None else va / vb


def render(report: dict) -> str:
    gpu = report["device"]
    lines = ["# HERSR on a GPU", "",
             f"Date {report['date']} · torch {report['torch']} · {gpu} · batch 1, x4 · median of {report['runs']} runs"
             f" · command `{report['command']}`", ""]  # fmt: skip
    if not report["cuda"]:
        lines += ["**No GPU on this machine: this is the script's CPU fallback (eager fp32, small sizes), run to "
                  "show that it works. These are not GPU results.**", ""]
    for size in report["sizes"]:
        modes = sorted({k for rows in report["inference"].values() for k in rows.get(size, {}) if k != "compile_s"})
        lines += [f"## {size} input", "", "| model | launches | " + " | ".join(f"{m} ms" for m in modes) + " |",
                  "| --- | ---: | " + " | ".join("---:" for _ in modes) + " |"]  # fmt: skip
        for name, rows in report["inference"].items():
            row = rows.get(size, {})
            cells = [f"{row[m]:.2f}" if isinstance(row.get(m), float) else str(row.get(m, "-")) for m in modes]
            lines.append(f"| {name} | {report['launches'].get(name, '-')} | " + " | ".join(cells) + " |")
        lines.append("")
    if report["train_step_ms"]:
        lines += ["One training step (batch 16, 64x64 LR, bf16 autocast on GPU): "
                  + ", ".join(f"{k} {v:.1f} ms" for k, v in report["train_step_ms"].items()) + ".", ""]
    if report["cuda"]:
        lines += ["Targets (320x180):", "", "| target | measured | met |", "| --- | ---: | :---: |"]
        for text, mode, a, b, limit in TARGETS:
            value = ratio(report, mode, a, b, report["sizes"][0])
            shown = "not measured" if value is None else f"{value:.2f}x"
            lines.append(f"| {text} | {shown} | {'n/a' if value is None else 'yes' if value <= limit else 'NO'} |")
    return "\n".join(lines) + "\n"


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--out", default=str(REPO / "benchmarks" / "RESULTS_gpu.md"), help="report path, '-' to print")
    parser.add_argument("--runs", type=int, default=20)
    parser.add_argument("--compile-budget", type=float, default=240.0, help="seconds of compiling, all models")
    parser.add_argument("--models", nargs="+", default=list(MODELS))
    args = parser.parse_args()
    cuda = torch.cuda.is_available()
    device = torch.device("cuda" if cuda else "cpu")
    sizes = SIZES if cuda else ((32, 48),)
    runs = args.runs if cuda else 1
    known = entries()
    unknown = [m for m in args.models if m not in known]
    if unknown:
        parser.error(f"unknown --models {unknown}; choose from {sorted(known)}")
    report = {
        "date": datetime.date.today().isoformat(), "torch": torch.__version__, "cuda": cuda,
        "device": torch.cuda.get_device_name(0) if cuda else "CPU (no GPU)", "runs": runs,
        "command": " ".join(["python benchmarks/gpu_bench.py", *sys.argv[1:]]),
        "sizes": [f"{w}x{h}" for h, w in sizes], "inference": {}, "launches": {}, "train_step_ms": {},
    }  # fmt: skip
    deadline = time.perf_counter() + args.compile_budget
    for name in args.models:
        net = build(known[name])
        report["launches"][name] = forward_launches(net, (96, 96)).total
        report["inference"][name] = {}
        for (h, w), label in zip(sizes, report["sizes"]):
            print(f"{name} at {label}", flush=True)
            report["inference"][name][label] = inference_row(net, (h, w), device, runs,
                                                             lambda: deadline - time.perf_counter())  # fmt: skip
        del net
        if cuda:
            torch.cuda.empty_cache()
    for name in TRAIN_MODELS:
        entry = known[name]
        print(f"training step of {name}", flush=True)
        batch, size = (16, 64) if cuda else (2, 16)
        report["train_step_ms"][name] = training_step_ms(build_trainable(entry), device, runs, batch, size)
    markdown = render(report)
    if args.out == "-":
        sys.stdout.write(markdown)
    else:
        Path(args.out).write_text(markdown, encoding="utf-8")
        Path(args.out).with_suffix(".json").write_text(json.dumps(report, indent=2), encoding="utf-8")
        sys.stdout.write(markdown)
    return 0


if __name__ == "__main__":
    sys.exit(main())
