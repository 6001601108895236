"""torch.compile report for HERSR: graph breaks, graphs compiled per size, compile time, agreement.

    python benchmarks/compile_report.py                                  # CPU, aot_eager, hersr_s
    python benchmarks/compile_report.py --backend inductor --device cuda --amp bf16 --train
    python benchmarks/compile_report.py --out benchmarks/COMPILE.md

For each preset: ``torch._dynamo.explain`` (graphs, graph breaks and their reasons), then
``torch.compile(dynamic=True)`` run at several input sizes in eval (graphs compiled so far, wall
time of the call, max abs difference to eager). With ``--train``, also a compiled training step as
neosr runs it (channels_last, autocast, backward). Prints a Markdown table.
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hersr_arch.archs.hersr_arch import hersr_l, hersr_m, hersr_s  # noqa: E402

PRESET_BUILDERS = {"hersr_s": hersr_s, "hersr_m": hersr_m, "hersr_l": hersr_l}
AMP = {"fp32": None, "bf16": torch.bfloat16, "fp16": torch.float16}


def parse_size(text: str) -> tuple[int, int]:
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"size {text!r} is not WxH, e.g. 96x80") from None
    return h, w


def explain(model: torch.nn.Module, x: torch.Tensor) -> tuple[int, int, list[str]]:
    torch._dynamo.reset()
    with torch.no_grad():
        result = torch._dynamo.explain(model)(x)
    reasons = [f"{b.reason.splitlines()[0][:120]} ({b.user_stack[-1].filename.split('/')[-1]}:"
               f"{b.user_stack[-1].lineno})" if b.user_stack else b.reason.splitlines()[0][:120]
               for b in result.break_reasons]  # fmt: skip
    return result.graph_count, result.graph_break_count, reasons


def eval_rows(name, model, sizes, backend, device, amp) -> list[str]:
    from torch._dynamo.testing import CompileCounterWithBackend

    torch._dynamo.reset()
    counter = CompileCounterWithBackend(backend)
    compiled = torch.compile(model, dynamic=True, backend=counter)
    rows = []
    for h, w in sizes:
        x = torch.rand(1, model.num_in_ch, h, w, device=device)
        with torch.no_grad(), torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
            reference = model(x).float()
            start = time.perf_counter()
            out = compiled(x).float()
            if device == "cuda":
                torch.cuda.synchronize()
            seconds = time.perf_counter() - start
        diff = (out - reference).abs().max().item()
        rows.append(f"| {name} | eval | {w}x{h} | {counter.frame_count} | {seconds:.1f} | {diff:.2e} |")
    return rows


def train_row(name, model, size, backend, device, amp) -> str:
    """A neosr-style step: channels_last model and input, autocast, L1 + aux loss, backward."""
    torch._dynamo.reset()
    model = model.train().to(memory_format=torch.channels_last)
    compiled = torch.compile(model, dynamic=True, backend=backend)
    h, w = size
    x = torch.rand(2, model.num_in_ch, h, w, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.rand(2, model.num_out_ch, h * model.upscale, w * model.upscale, device=device)
    start = time.perf_counter()
    with torch.autocast(device, dtype=amp or torch.float32, enabled=amp is not None):
        loss = (compiled(x) - y).abs().mean() + model.aux_loss
    loss.backward()
    finite = all(torch.isfinite(p.grad).all() for p in model.parameters() if p.grad is not None)
    seconds = time.perf_counter() - start
    return f"| {name} | train step | {w}x{h} (batch 2) | - | {seconds:.1f} | loss {loss.item():.3f}, grads finite: {finite} |"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--presets", nargs="+", default=["hersr_s"], choices=list(PRESET_BUILDERS))
    parser.add_argument("--backend", default="aot_eager", help="torch.compile backend (default aot_eager)")
    parser.add_argument("--device", default="cpu", choices=["cpu", "cuda"])
    parser.add_argument("--amp", default="fp32", choices=list(AMP), help="autocast dtype (default fp32)")
    parser.add_argument("--sizes", nargs="+", type=parse_size, default=[(61, 75), (86, 92), (99, 77)],
                        metavar="WxH", help="eval input sizes (default 75x61 92x86 77x99)")
    parser.add_argument("--train", action="store_true", help="also compile a training step")
    parser.add_argument("--out", help="also write the table to this Markdown file")
    args = parser.parse_args(argv)
    if args.device == "cuda" and not torch.cuda.is_available():
        parser.error("--device cuda: no CUDA device is available to this PyTorch.")

    device_name = torch.cuda.get_device_name(0) if args.device == "cuda" else platform.processor() or "CPU"
    lines = [
        f"# torch.compile report ({time.strftime('%Y-%m-%d')}, torch {torch.__version__}, {device_name}, "
        f"backend {args.backend}, autocast {args.amp}, dynamic=True)",
        "",
        "| preset | graphs (explain) | graph breaks | break reasons |",
        "| --- | --- | --- | --- |",
    ]
    runs = ["", "| preset | mode | input | graphs compiled so far | call s | max abs diff to eager |",
            "| --- | --- | --- | --- | --- | --- |"]  # fmt: skip
    for name in args.presets:
        torch.manual_seed(0)
        model = PRESET_BUILDERS[name](upscale=4).eval().to(args.device)
        h, w = args.sizes[0]
        graphs, breaks, reasons = explain(model, torch.rand(1, model.num_in_ch, h, w, device=args.device))
        lines.append(f"| {name} | {graphs} | {breaks} | {'; '.join(reasons) or '-'} |")
        runs += eval_rows(name, model, args.sizes, args.backend, args.device, AMP[args.amp])
        if args.train:
            runs.append(train_row(name, model, (32, 32), args.backend, args.device, AMP[args.amp]))
    text = "\n".join(lines + runs) + "\n"
    print(text)
    if args.out:
        Path(args.out).write_text(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
