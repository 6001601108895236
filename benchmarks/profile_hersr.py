"""Where HERSR spends its CPU time: top ops (torch profiler) and time per component (forward hooks).

    python benchmarks/profile_hersr.py                   # hersr_s, deployed, 320x180, 1 thread
    python benchmarks/profile_hersr.py --preset hersr_m --train-graph --size 128x128 --threads 2

The model runs with the CPU kernels (``hersr_arch.cpu_inference``), as ``hersr bench`` and
``hersr upscale`` run it; ``--network-file`` profiles the network file's own graph instead.

Component times are CPU (process) time of each module's forward, so they are inclusive (a block
contains its paths) and, with one thread, robust to other load on the machine.
"""

import argparse
import collections
import time

import torch
from torch.profiler import ProfilerActivity, profile

from hersr_arch.archs import hersr_arch
from hersr_arch.cpu_inference import prepare_cpu_inference

COMPONENTS = (
    "DualPathBlock", "LocalPath", "ContextPath", "WindowAttention", "GDFN", "GatedConv", "PartialLargeKernelConv",
    "MoEBottleneck", "TextureHead", "FrequencyFusion", "Upsample2x", "Downsample2x",
)  # fmt: skip


def component_times(model: torch.nn.Module, x: torch.Tensor, runs: int) -> dict[str, float]:
    totals: collections.Counter = collections.Counter()
    starts: list[float] = []
    handles = []
    for name, module in model.named_modules():
        # the network file's class, also for the CPU kernels' subclasses of it
        kind = next((k for k in COMPONENTS if isinstance(module, getattr(hersr_arch, k))), None)
        if kind is None:
            continue
        label = f"{kind} @ {'.'.join(name.split('.')[:2])}" if kind == "DualPathBlock" else kind
        handles.append(module.register_forward_pre_hook(lambda *_: starts.append(time.process_time())))
        handles.append(module.register_forward_hook(
            lambda *_, label=label: totals.update({label: time.process_time() - starts.pop()})))  # fmt: skip
    with torch.inference_mode():
        start = time.process_time()
        for _ in range(runs):
            model(x)
        totals["whole network"] = time.process_time() - start
    for handle in handles:
        handle.remove()
    return {k: v / runs * 1000 for k, v in totals.most_common()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--preset", default="hersr_s", choices=["hersr_s", "hersr_m", "hersr_l"])
    parser.add_argument("--size", default="320x180", help="input WxH")
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--train-graph", action="store_true", help="profile without switch_to_deploy()")
    parser.add_argument("--network-file", action="store_true", help="without the CPU kernels")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    w, h = (int(v) for v in args.size.split("x"))
    model = getattr(hersr_arch, args.preset)().eval()
    if not args.train_graph:
        model.switch_to_deploy()
    if not args.network_file:
        prepare_cpu_inference(model)
    x = torch.rand(1, 3, h, w)
    with torch.inference_mode():
        model(x)
        with profile(activities=[ProfilerActivity.CPU]) as prof:
            for _ in range(args.runs):
                model(x)
    print(prof.key_averages().table(sort_by="self_cpu_time_total", row_limit=15))
    print(f"{'component':45s} ms per forward (CPU time, inclusive)")
    for name, ms in component_times(model, x, args.runs).items():
        print(f"{name:45s} {ms:8.1f}")


if __name__ == "__main__":
    main()
