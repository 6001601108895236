"""The ``hersr`` command: HERSR's tools, one subcommand each.

A subcommand is one ``run_<name>(args) -> int`` function and one ``add_parser`` block in
``build_parser``. ``run_<name>`` returns the exit status; it raises ``CommandError`` for a failure
the user can fix, which ``main`` prints as one line (``hersr <name>: error: ...``), exit status 1.
"""

import argparse
import sys
from collections.abc import Sequence
from pathlib import Path


class CommandError(Exception):
    """A failure the user can fix (bad input path, nothing to do); printed without a traceback."""


def run_table(args: argparse.Namespace) -> int:
    """Paper-style PSNR/SSIM table from ``basicsr test`` logs: Markdown on stdout, files on request."""
    from hersr_arch.tools.results_table import ResultsTableError, collect_runs, write_tables

    md_path = args.md or (f"{args.output}.md" if args.output else None)
    csv_path = args.csv or (f"{args.output}.csv" if args.output else None)
    try:
        runs = collect_runs(args.inputs)
        markdown = write_tables(runs, md_path=md_path, csv_path=csv_path)
    except (ResultsTableError, OSError) as e:
        raise CommandError(str(e)) from None
    sys.stdout.write(markdown)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Benchmark HERSR against its peers in one run; write the Markdown report (and JSON beside it)."""
    from hersr_arch.tools.bench import BenchConfig, render_markdown, run_bench, write_report
    from hersr_arch.tools.proxy import ProxyConfig, render_proxy, run_proxy

    def size(text: str) -> tuple[int, int]:
        try:
            w, h = (int(v) for v in text.lower().split("x"))
        except ValueError:
            raise CommandError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 320x180") from None
        return h, w

    config = BenchConfig(
        rounds=args.rounds, threads=args.threads, sizes=tuple(size(s) for s in args.sizes),
        mac_size=size(args.mac_size), models=tuple(args.models) if args.models else None,
        memory=not args.no_memory, include_spandrel=not args.no_spandrel,
    )  # fmt: skip
    if config.rounds < 1:
        raise CommandError(f"--rounds must be >= 1, got {config.rounds}")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    report = run_bench(config, log)
    if not report["models"]:
        raise CommandError(f"no model matched --models {args.models}")
    markdown = render_markdown(report) if args.out == "-" else write_report(report, args.out)
    if args.proxy:
        from hersr_arch.tools.bench import all_entries, build

        entries = [e for e in all_entries(config.include_spandrel) if e.name.endswith("(train graph)")
                   or e.group != "hersr"]
        if args.proxy_models:
            entries = [e for e in entries if e.name in args.proxy_models]
        proxy = ProxyConfig(iters=args.proxy_iters, seconds=args.proxy_seconds, data_root=args.proxy_data)
        result = run_proxy({e.name: (lambda e=e: build(e)) for e in entries}, proxy, log)
        markdown += render_proxy(result)
        if args.out != "-":
            with open(args.out, "w", encoding="utf-8") as f:
                f.write(markdown)
    sys.stdout.write(markdown)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The embedded demo: data, training, test, table, picture (see ``hersr_arch.tools.demo``)."""
    from hersr_arch.tools.demo import DemoError
    from hersr_arch.tools.demo import run_demo as demo

    # The cosine schedule's period must follow the iteration count (BasicSR fails past its end).
    extra = ["--force_yml", f"train:total_iter={args.iters}", f"train:scheduler:periods=[{args.iters}]"] if args.iters else []
    try:
        result = demo(Path(args.root), Path(args.options), extra)
    except (DemoError, OSError, ValueError) as e:
        raise CommandError(str(e)) from None
    gain = result.hersr_psnr - result.bicubic_psnr
    sys.stdout.write(f"\n{result.table_markdown}\n")
    sys.stdout.write(f"HERSR vs bicubic on the held-out images: {gain:+.2f} dB PSNR (Y).\n")
    sys.stdout.write(f"Side-by-side picture: {result.picture}\n")
    if gain <= 0:
        sys.stderr.write("hersr demo: the trained model did not beat bicubic; train longer (--iters).\n")
        return 1
    return 0


def build_parser() -> argparse.ArgumentParser:
    """The ``hersr`` argument parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="hersr", description="HERSR tools.")
    subparsers = parser.add_subparsers(dest="command", metavar="COMMAND", required=True)

    table = subparsers.add_parser(
        "table",
        help="PSNR/SSIM table (Markdown, CSV) from 'basicsr test' logs",
        description="Collect the PSNR/SSIM of 'basicsr test' logs into a paper-style table: one row per "
        "experiment (its latest log), one column per test set (Set5, Set14, B100, Urban100, Manga109 "
        "first). A baseline such as bicubic is one more log among the inputs.",
    )
    table.add_argument(
        "inputs", nargs="+", metavar="PATH", help="results folder(s) (searched for test_*.log) or log file(s)"
    )
    table.add_argument("-o", "--output", metavar="PREFIX", help="write PREFIX.md and PREFIX.csv")
    table.add_argument("--md", metavar="OUT.md", help="write the Markdown table here")
    table.add_argument("--csv", metavar="OUT.csv", help="write the CSV table here")
    table.set_defaults(func=run_table)

    bench = subparsers.add_parser(
        "bench",
        help="params, MACs, latency and memory of HERSR and its peers, in one run",
        description="Benchmark the HERSR presets (train graph and deployed) against BasicSR's SwinIR-light, "
        "EDSR-baseline and RRDBNet and, with spandrel installed, SPAN, SAFMN, OmniSR, DAT-light, PLKSR-tiny and "
        "RealPLKSR (random weights, the libraries' own code). Latency is the median over interleaved rounds; "
        "HERSR/peer ratios are taken within each round. Writes a Markdown report (and .json) and prints it.",
    )
    bench.add_argument("--rounds", type=int, default=15, help="interleaved timing rounds (default 15)")
    bench.add_argument("--threads", type=int, default=2, help="torch CPU threads (default 2)")
    bench.add_argument("--sizes", nargs="+", default=["128x128", "320x180"], help="latency input sizes WxH")
    bench.add_argument("--mac-size", default="320x180", help="input size WxH for MACs and ratios")
    bench.add_argument("--models", nargs="+", metavar="NAME", help="only these models (names as in the table)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    bench.add_argument("--no-spandrel", action="store_true", help="skip the spandrel peers")
    bench.add_argument("--out", default="benchmarks/RESULTS.md", help="report path, '-' for stdout only")
    bench.add_argument("--proxy", action="store_true", help="also run the equal-budget quality proxy")
    bench.add_argument("--proxy-iters", type=int, default=2000, help="training iterations per model")
    bench.add_argument("--proxy-seconds", type=float, default=0.0, help="train each model this long instead")
    bench.add_argument("--proxy-models", nargs="+", metavar="NAME", help="only these models in the proxy")
    bench.add_argument("--proxy-data", default="datasets/embedded", help="embedded dataset folder")
    bench.add_argument("--quiet", action="store_true", help="no progress messages")
    bench.set_defaults(func=run_bench)

    demo = subparsers.add_parser(
        "demo",
        help="train hersr_s x4 on the embedded dataset, test it, print the table, write a picture",
        description="Build the embedded dataset, train hersr_s x4 with 'basicsr train' for a short CPU "
        "budget, test it and the bicubic baseline with 'basicsr test', print the PSNR/SSIM table and write "
        "results/demo_comparison.png. Run from the repository root. Exit status 1 if the model does not "
        "beat bicubic.",
    )
    demo.add_argument("--root", default=".", help="repository root (default: current directory)")
    demo.add_argument("--options", default="options/demo", help="folder of the demo option files")
    demo.add_argument("--iters", type=int, default=0, help="override the training iterations")
    demo.set_defaults(func=run_demo)

    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of ``hersr``."""
    args = build_parser().parse_args(argv)
    try:
        return args.func(args)
    except CommandError as e:
        print(f"hersr {args.command}: error: {e}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
