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


def run_demo(args: argparse.Namespace) -> int:
    """The embedded demo: data, training, test, table, picture (see ``hersr_arch.tools.demo``)."""
    from hersr_arch.tools.demo import DemoError
    from hersr_arch.tools.demo import run_demo as demo

    extra = ["--force_yml", f"train:total_iter={args.iters}"] if args.iters else []
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
