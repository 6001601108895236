"""Kernel launches per eval forward (x4) of the HERSR presets and their peers, and of one training step.

    python benchmarks/launch_count.py                       # every model, 96x96 and 320x180
    python benchmarks/launch_count.py --models "hersr_s (deployed)" SPAN-48 --top 15

The count is the one `hersr bench` reports (see hersr_arch/bench/launch_count.py): ATen ops that run
a kernel, views and allocations excluded; it does not depend on the machine. `--top N` lists each
model's N most frequent ops, the place to start cutting.
"""

import argparse

import torch

from hersr_arch.bench.harness import LAUNCH_SIZES, TRAIN_STEP_MODELS, all_entries, build, build_trainable
from hersr_arch.bench.launch_count import forward_launches, training_step_launches


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--models", nargs="+", metavar="NAME", help="only these models (names as in hersr bench)")
    parser.add_argument("--top", type=int, default=0, metavar="N", help="also list each model's N most frequent ops")
    parser.add_argument("--no-train-step", action="store_true", help="skip the training-step count")
    args = parser.parse_args()
    torch.set_num_threads(1)
    entries = [e for e in all_entries() if not args.models or e.name in args.models]
    sizes = " | ".join(f"{w}x{h}" for h, w in LAUNCH_SIZES)
    print(f"| model | launches per forward, {sizes} |\n| --- | " + " | ".join("---:" for _ in LAUNCH_SIZES) + " |")
    tops = {}
    for entry in entries:
        net = build(entry)
        counters = [forward_launches(net, size) for size in LAUNCH_SIZES]
        print(f"| {entry.name} | " + " | ".join(str(c.total) for c in counters) + " |", flush=True)
        tops[entry.name] = counters[0].counts.most_common(args.top)
    if not args.no_train_step:
        print("\n| model | launches per training step (batch 16, 64x64 LR, L1, Adam) |\n| --- | ---: |")
        for entry in entries:
            if entry.name in TRAIN_STEP_MODELS:
                print(f"| {entry.name} | {training_step_launches(build_trainable(entry)).total} |", flush=True)
    for name, top in tops.items():
        if top:
            print(f"\n{name}: " + ", ".join(f"{op} {n}" for op, n in top))


if __name__ == "__main__":
    main()
