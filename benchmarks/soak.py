"""Soak test: train for many iterations on the embedded data and check that memory stays flat.

    python benchmarks/soak.py                      # 2000 iterations of the demo's hersr_s x4 (~10 min, 2 cores)
    python benchmarks/soak.py --iters 20           # a quick check that it works
    python benchmarks/soak.py --data datasets/embedded --opt options/demo/train_hersr_s_x4_demo.yml

It runs BasicSR's own pieces in this process (``PairedImageDataset``, ``EnlargedSampler``,
``build_dataloader``, ``HERSRModel`` with its EMA, clipping and non-finite guard) on the embedded
dataset (built by ``hersr_arch.data.prepare.build_embedded_dataset`` if missing; idempotent), with a
validation pass on the held-out photographs every ``--val-every`` iterations, so that a leak in
training, data loading or validation (e.g. an unbounded cache) shows up. Data loading runs in this
process (``num_worker_per_gpu: 0``) so that its memory is counted too.

Resident memory (RSS, from ``/proc/self/statm``) is reported before training, at the baseline (after
``--warmup`` iterations and one validation pass: allocator pools and per-size caches fill up first),
every ``--report-every`` iterations, and at the end. Exit status 1 if the end exceeds the baseline
by more than ``--tolerance`` (default 10%), or if a step was skipped as non-finite. Not part of the
test suite (a test runs it with ``--iters 20``).
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
from pathlib import Path

import yaml

ROOT = Path(__file__).resolve().parents[1]
DEFAULT_OPT = ROOT / "options" / "demo" / "train_hersr_s_x4_demo.yml"


def rss_mib() -> float:
    """Resident set size of this process in MiB (peak RSS where /proc is missing)."""
    try:
        with open("/proc/self/statm") as f:
            return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 2**20
    except OSError:
        import resource

        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 2**10


def soak_options(opt_file: Path, data: Path, work: Path, args: argparse.Namespace) -> dict:
    """The demo's options, pointed at ``data``, with this script's batch, patch size and iterations."""
    opt = yaml.safe_load(opt_file.read_text())
    scale = opt["scale"]
    train = opt["datasets"]["train"]
    train.update(dataroot_gt=str(data / "train" / "GT"), dataroot_lq=str(data / "train" / f"LRbicx{scale}"),
                 phase="train", scale=scale, gt_size=args.gt_size, batch_size_per_gpu=args.batch,
                 num_worker_per_gpu=0, prefetch_mode=None)
    val = opt["datasets"]["val"]
    val.update(dataroot_gt=str(data / "test" / f"GTmod{scale}"), dataroot_lq=str(data / "test" / f"LRbicx{scale}"),
               phase="val", scale=scale)
    opt["network_g"]["train_size"] = args.gt_size // scale
    opt["train"]["total_iter"] = args.iters
    scheduler = opt["train"].get("scheduler") or {}
    if scheduler.get("type") == "CosineAnnealingRestartLR":  # one cosine period over the whole soak
        scheduler.update(periods=[args.iters], restart_weights=[1])
    paths = {k: str(work / k) for k in ("experiments_root", "models", "training_states", "log", "visualization")}
    opt["path"].update(paths)
    opt.update(num_gpu=0, dist=False, rank=0, world_size=1, is_train=True, auto_resume=False, root_path=str(work))
    return opt


def run(args: argparse.Namespace) -> int:
    # isort: off
    import torch

    import hersr_arch  # noqa: F401  (first: the torchvision fix BasicSR needs; registers HERSR)
    from basicsr.data import build_dataloader, build_dataset
    from basicsr.data.data_sampler import EnlargedSampler
    from basicsr.models import build_model
    from basicsr.utils import set_random_seed

    from hersr_arch.data.prepare import build_embedded_dataset
    # isort: on

    if args.threads:
        torch.set_num_threads(args.threads)
    data = build_embedded_dataset(args.data, show_progress=False).root
    with tempfile.TemporaryDirectory(prefix="hersr-soak-") as work:
        opt = soak_options(args.opt, data, Path(work), args)
        set_random_seed(opt.get("manual_seed", 0))
        train_opt = opt["datasets"]["train"]
        train_set = build_dataset(train_opt)
        sampler = EnlargedSampler(train_set, 1, 0, train_opt.get("dataset_enlarge_ratio", 1))
        train_loader = build_dataloader(train_set, train_opt, num_gpu=0, dist=False, sampler=sampler, seed=0)
        val_loader = build_dataloader(build_dataset(opt["datasets"]["val"]), opt["datasets"]["val"], num_gpu=0)
        model = build_model(opt)

        def validate(it):
            if args.val_every:
                model.validation(val_loader, it, None, save_img=False)

        def measure() -> float:
            gc.collect()
            return rss_mib()

        start = measure()
        warmup = max(1, min(args.warmup, args.iters // 4))
        print(f"soak: {args.iters} iterations of {opt['network_g']['type']} x{opt['scale']}, batch {args.batch}, "
              f"patch {args.gt_size}; RSS before training {start:.1f} MiB", flush=True)
        baseline, it, epoch, t0 = None, 0, 0, time.time()
        skipped = 0
        while it < args.iters:
            sampler.set_epoch(epoch)
            for batch in train_loader:
                it += 1
                model.update_learning_rate(it, warmup_iter=-1)
                model.feed_data(batch)
                model.optimize_parameters(it)
                skipped += int(model.nonfinite_steps > 0)
                if it == warmup:
                    validate(it)
                    baseline = measure()
                    print(f"soak: baseline after {it} iterations and a validation: RSS {baseline:.1f} MiB", flush=True)
                elif args.val_every and it % args.val_every == 0:
                    validate(it)
                if it % args.report_every == 0 or it == args.iters:
                    losses = " ".join(f"{k} {v:.4f}" for k, v in model.get_current_log().items() if k.startswith("l_"))
                    print(f"soak: iter {it:5d}  {time.time() - t0:7.1f} s  RSS {rss_mib():8.1f} MiB  {losses}",
                          flush=True)
                if it >= args.iters:
                    break
            epoch += 1
        validate(it)
        end = measure()
    growth = (end - baseline) / baseline
    ok = growth <= args.tolerance and skipped == 0
    print(f"soak: RSS start {baseline:.1f} MiB (baseline), end {end:.1f} MiB: {growth:+.1%} "
          f"(tolerance {args.tolerance:.0%}); non-finite steps skipped: {skipped}; {'OK' if ok else 'FAIL'}",
          flush=True)
    return 0 if ok else 1


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--iters", type=int, default=2000, help="training iterations (default 2000)")
    parser.add_argument("--data", type=Path, default=ROOT / "datasets" / "embedded",
                        help="embedded dataset folder, built if missing (default datasets/embedded)")
    parser.add_argument("--opt", type=Path, default=DEFAULT_OPT, help="train option file to start from "
                        "(default: the demo's hersr_s x4)")
    parser.add_argument("--batch", type=int, default=4, help="batch size (default 4)")
    parser.add_argument("--gt-size", type=int, default=64, help="GT patch size (default 64)")
    parser.add_argument("--val-every", type=int, default=500, help="validation period, 0 = never (default 500)")
    parser.add_argument("--warmup", type=int, default=50, help="iterations before the baseline (default 50)")
    parser.add_argument("--report-every", type=int, default=100, help="RSS report period (default 100)")
    parser.add_argument("--tolerance", type=float, default=0.10, help="allowed RSS growth (default 0.10)")
    parser.add_argument("--threads", type=int, default=0, help="torch threads (default: PyTorch's choice)")
    args = parser.parse_args(argv)
    if args.iters < 1:
        parser.error(f"--iters must be >= 1, got {args.iters}")
    return run(args)


if __name__ == "__main__":
    sys.exit(main())
