"""The ``hersr`` command: HERSR's tools, one subcommand each.

A subcommand is one ``run_<name>(args) -> int`` function and one ``add_parser`` block in
``build_parser``. ``run_<name>`` returns the exit status; it raises ``CommandError`` for a failure
the user can fix, which ``main`` prints as one line (``hersr <name>: error: ...``), exit status 1.
"""

import argparse
import os
import shlex
import sys
from collections.abc import Sequence
from pathlib import Path


class CommandError(Exception):
    """A failure the user can fix (bad input path, nothing to do); printed without a traceback."""


def run_table(args: argparse.Namespace) -> int:
    """Paper-style PSNR/SSIM table from ``basicsr test`` logs: Markdown on stdout, files on request."""
    from hersr_arch.tools.results_table import ResultsTableError, collect_runs, read_reference, write_tables

    md_path = args.md or (f"{args.output}.md" if args.output else None)
    csv_path = args.csv or (f"{args.output}.csv" if args.output else None)
    try:
        runs = collect_runs(args.inputs)
        reference = read_reference(args.reference) if args.reference else ()
        costs = _run_costs(runs) if reference else None
        markdown = write_tables(runs, md_path=md_path, csv_path=csv_path, reference=reference, costs=costs,
                                reference_name=str(args.reference))
    except (ResultsTableError, OSError) as e:
        raise CommandError(str(e)) from None
    sys.stdout.write(markdown)
    return 0


def _run_costs(runs) -> dict[str, tuple[float | None, float | None]]:
    """Params and Multi-Adds of each run's network (from its log's ``network_g``), for the table's
    cost columns; a network that cannot be rebuilt here gets ``-`` and a warning."""
    from hersr_arch.bench.model_cost import network_cost

    costs = {}
    for run in runs:
        if not run.network or run.scale is None:
            continue
        try:
            costs[run.experiment] = network_cost(run.network, run.scale)
        except Exception as err:  # an arch from another package, options of another version
            print(f"warning: {run.experiment}: params/Multi-Adds not counted ({type(err).__name__}: {err})",
                  file=sys.stderr)
    return costs


def _size(text: str) -> tuple[int, int]:
    """``WIDTHxHEIGHT`` -> ``(height, width)``."""
    try:
        w, h = (int(v) for v in text.lower().split("x"))
    except ValueError:
        raise CommandError(f"size {text!r} is not WIDTHxHEIGHT, e.g. 320x180") from None
    return h, w


def _writable_out(out: str) -> None:
    """Fail now on an ``--out`` whose folder cannot be written: the report comes after hours of work."""
    if out == "-":
        return
    folder = Path(out).parent
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise CommandError(f"--out {out}: cannot create its folder {folder} ({e.strerror or e})") from None
    if not os.access(folder, os.W_OK):
        raise CommandError(f"--out {out}: its folder {folder} is not writable")


def run_ablation(args: argparse.Namespace) -> int:
    """``hersr bench --ablation``: train the hersr_s variants, write the table (and JSON beside it)."""
    from hersr_arch.bench.ablation import VARIANTS, AblationConfig, render_ablation, unknown_variants
    from hersr_arch.bench.ablation import run_ablation as train_variants
    from hersr_arch.bench.harness import cpu_name, write_report

    names = tuple(args.ablation) or tuple(VARIANTS)
    unknown = unknown_variants(names)
    if unknown:
        raise CommandError(f"unknown --ablation variant(s) {unknown}; known variants: {', '.join(VARIANTS)}")
    for option, value in (("--ablation-iters", args.ablation_iters), ("--ablation-denoise-iters",
                          args.ablation_denoise_iters), ("--proxy-batch", args.proxy_batch or 4),
                          ("--proxy-patch", args.proxy_patch), ("--rounds", args.rounds)):  # fmt: skip
        if value < 1:
            raise CommandError(f"{option} must be >= 1, got {value}")
    if len(set(args.ablation_seeds)) < 2:
        raise CommandError(f"--ablation-seeds needs two different seeds or more (the spread), got {args.ablation_seeds}")
    if args.ablation_workers < 0:
        raise CommandError(f"--ablation-workers must be >= 0 (0: one per seed), got {args.ablation_workers}")
    out = args.out or "benchmarks/ABLATION.md"
    _writable_out(out)
    config = AblationConfig(
        iters=args.ablation_iters, denoise_iters=args.ablation_denoise_iters, seeds=tuple(args.ablation_seeds),
        batch=args.proxy_batch or 4, patch=args.proxy_patch, eval_every=args.proxy_eval_every or 250, variants=names,
        workers=args.ablation_workers, data_root=args.proxy_data, runs_dir=args.ablation_runs, cost_rounds=args.rounds,
        cost_size=_size(args.mac_size),
    )  # fmt: skip
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    report = train_variants(config, log)
    markdown = render_ablation(report, shlex.join(["hersr", *sys.argv[1:]]), cpu_name())
    if out != "-":
        write_report(markdown, report, out)
    sys.stdout.write(markdown)
    return 0


def run_bench(args: argparse.Namespace) -> int:
    """Benchmark HERSR against its peers in one run; write the Markdown report (and JSON beside it)."""
    import datetime

    import torch

    if args.ablation is not None:
        return run_ablation(args)

    from hersr_arch.bench.harness import (
        BenchConfig,
        all_entries,
        build_trainable,
        cpu_name,
        render_markdown,
        run_bench,
        write_report,
    )  # fmt: skip
    from hersr_arch.bench.proxy import ProxyConfig, render_proxy, run_proxy
    from hersr_arch.threads import choose_threads

    try:
        threads, why = choose_threads(args.threads)
    except ValueError as e:
        raise CommandError(str(e)) from None
    config = BenchConfig(
        rounds=args.rounds, threads=threads, sizes=tuple(_size(s) for s in args.sizes),
        mac_size=_size(args.mac_size), models=tuple(args.models) if args.models else None,
        memory=not args.no_memory, include_spandrel=not args.no_spandrel, upscale_size=args.upscale_size,
        launch_sizes=tuple(_size(s) for s in args.launch_sizes), train_step_size=_size(args.train_step_size),
    )  # fmt: skip
    if config.rounds < 1:
        raise CommandError(f"--rounds must be >= 1, got {config.rounds}")
    known = [e.name for e in all_entries(config.include_spandrel)]
    for option, names in (("--models", config.models), ("--proxy-models", args.proxy_models)):
        unknown = [name for name in names or () if name not in known]
        if unknown:
            raise CommandError(f"unknown {option} {unknown}; choose from {known} (quote names with spaces)")
    if args.proxy_batch is None:
        args.proxy_batch = 8
    for option, value in (("--proxy-iters", args.proxy_iters), ("--proxy-batch", args.proxy_batch),
                          ("--proxy-patch", args.proxy_patch)):  # fmt: skip
        if value < 1:
            raise CommandError(f"{option} must be >= 1, got {value}")
    if args.proxy_eval_every < 0:
        raise CommandError(f"--proxy-eval-every must be >= 0 (0: score at the end only), got {args.proxy_eval_every}")
    log = (lambda m: print(m, file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    log(f"torch threads: {why}")
    out = args.out or ("benchmarks/PROXY.md" if args.proxy_only else "benchmarks/RESULTS.md")
    _writable_out(out)

    markdown, report = "", {}
    command = shlex.join(["hersr", *sys.argv[1:]])
    if not args.proxy_only:
        report = run_bench(config, log)
        report["command"] = command
        if not report["models"]:
            raise CommandError(f"no model matched --models {args.models}")
        markdown = render_markdown(report)
        if out != "-":  # written now, so an interrupted proxy run (hours) keeps the latency report
            write_report(markdown, report, out)
    if args.proxy or args.proxy_only:
        torch.set_num_threads(config.threads)
        # Peers and HERSR's train graph: the deployed graph is the same network, not trainable as such.
        entries = [e for e in all_entries(config.include_spandrel) if e.name.endswith("(train graph)")
                   or e.group != "hersr"]  # fmt: skip
        if args.proxy_models:
            entries = [e for e in entries if e.name in args.proxy_models]
        if not entries:
            raise CommandError(f"--proxy-models {args.proxy_models} names no trainable model (use '(train graph)')")
        proxy = ProxyConfig(iters=args.proxy_iters, seconds=args.proxy_seconds, batch=args.proxy_batch,
                            patch=args.proxy_patch, eval_every=args.proxy_eval_every, data_root=args.proxy_data)
        result = run_proxy({e.name: (lambda e=e: build_trainable(e)) for e in entries}, proxy, log)
        if args.proxy_only:
            markdown = (f"# HERSR quality proxy\n\nDate {datetime.date.today().isoformat()} · torch {torch.__version__}"
                        f" · CPU {cpu_name()} · {config.threads} threads\nCommand: `{command}`\n")
        markdown += render_proxy(result)
        if out != "-":
            write_report(markdown, {**report, "proxy": result}, out)
    sys.stdout.write(markdown)
    return 0


def run_demo(args: argparse.Namespace) -> int:
    """The embedded demo: data, training, test, table, picture (see ``hersr_arch.tools.demo``)."""
    from hersr_arch.tools.demo import DemoError
    from hersr_arch.tools.demo import run_demo as demo

    # The cosine schedule's period must follow the iteration count (BasicSR fails past its end).
    extra = ["--force_yml", f"train:total_iter={args.iters}", f"train:scheduler:periods=[{args.iters}]"] if args.iters else []
    if args.threads is not None and args.threads < 1:
        raise CommandError(f"--threads must be >= 1, got {args.threads}")
    try:
        result = demo(Path(args.root), Path(args.options), extra, args.threads)
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


def run_upscale(args: argparse.Namespace) -> int:
    """Upscale an image or a folder with a checkpoint; exit status 1 if any image failed."""
    from hersr_arch.tools.upscale import SetupError, UpscaleOptions
    from hersr_arch.tools.upscale import run_upscale as upscale

    options = UpscaleOptions(
        tile=args.tile, tile_pad=args.tile_pad, compile=args.compile, device=args.device, precision=args.precision,
        noise_strength=args.noise_strength, out_format=args.format, bit_depth=args.bit_depth, alpha=args.alpha,
        overwrite=args.overwrite, recursive=args.recursive, progress=not args.no_progress,
    )  # fmt: skip
    try:
        summary = upscale(Path(args.input), Path(args.output), Path(args.model), options)
    except (SetupError, OSError) as e:
        raise CommandError(str(e)) from None
    for line in summary.lines():
        print(f"hersr upscale: {line}", file=sys.stderr)
    return 1 if summary.failed else 0


def run_export(args: argparse.Namespace) -> int:
    """Reparameterized weights (--deploy) and/or ONNX (--onnx), each verified after writing."""
    from hersr_arch.tools.export import ExportError, export_deploy, export_onnx

    if not (args.deploy or args.onnx):
        raise CommandError("nothing to do: give --deploy OUT.pth|OUT.safetensors and/or --onnx OUT.onnx")
    log = (lambda m: print(f"hersr export: {m}", file=sys.stderr, flush=True)) if not args.quiet else (lambda m: None)
    try:
        if args.deploy:
            result = export_deploy(args.model, args.deploy)
            log(f"wrote {result['path']}: {result['params_before'] / 1e6:.3f}M -> {result['params_after'] / 1e6:.3f}M "
                f"parameters, max |deployed - original| = {result['max_abs_diff']:.1e}")
        if args.onnx:
            report = export_onnx(args.model, args.onnx, opset=args.opset, fp16=args.fp16, log=log)
            for note in report.notes:
                log(f"note: {note}")
            worst = max(diff for _, diff in report.checks)
            log(f"wrote {report.path} (opset {report.opset}{', fp16' if report.fp16 else ''}, dynamic batch/height/"
                f"width): onnxruntime matches PyTorch at {len(report.checks)} sizes, max diff {worst:.1e} "
                f"<= {report.tolerance:g}")
    except (ExportError, OSError) as e:
        raise CommandError(str(e)) from None
    return 0


def run_migrate(args: argparse.Namespace) -> int:
    """Rewrite an older checkpoint in the current format (``hersr_arch.loading.migrate_file``)."""
    from hersr_arch.loading import CheckpointError, migrate_file

    try:
        entries = migrate_file(args.input, args.output)
    except (CheckpointError, OSError) as e:
        raise CommandError(str(e)) from None
    print(f"hersr migrate: wrote {args.output} ({', '.join(entries)} in the current format)", file=sys.stderr)
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
    table.add_argument(
        "--reference", metavar="PUBLISHED.csv",
        help="add published rows (e.g. benchmarks/published_x4.csv: PSNR/SSIM, params, Multi-Adds and "
        "a source per row) beside the logs' rows, with Params/Multi-Adds columns",
    )  # fmt: skip
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
    bench.add_argument("--threads", type=int, metavar="N",
                       help="torch CPU threads (default: the idle cores; OMP_NUM_THREADS also works)")
    bench.add_argument("--sizes", nargs="+", default=["128x128", "320x180"], help="latency input sizes WxH")
    bench.add_argument("--mac-size", default="320x180", help="input size WxH for MACs and ratios")
    bench.add_argument("--launch-sizes", nargs="+", default=["96x96", "320x180"],
                       help="input sizes WxH of the kernel-launch count of one forward (default 96x96 320x180)")
    bench.add_argument("--train-step-size", default="64x64",
                       help="LR patch WxH of the one-training-step launch count, batch 16 (default 64x64)")
    bench.add_argument("--models", nargs="+", metavar="NAME", help="only these models (names as in the table)")
    bench.add_argument("--no-memory", action="store_true", help="skip the peak-memory subprocesses")
    bench.add_argument("--no-spandrel", action="store_true", help="skip the spandrel peers")
    bench.add_argument("--upscale-size", type=int, default=1024, metavar="N",
                       help="side of the image for the `hersr upscale` peak-RSS check (default 1024; 0 skips)")
    bench.add_argument("--out", help="report path, '-' for stdout only (default benchmarks/RESULTS.md, "
                       "or benchmarks/PROXY.md with --proxy-only); its folder is created before the run")
    bench.add_argument("--proxy", action="store_true", help="also run the equal-budget quality proxy")
    bench.add_argument("--proxy-only", action="store_true", help="run only the quality proxy (no latency bench)")
    bench.add_argument("--proxy-iters", type=int, default=2000, help="training iterations per model")
    bench.add_argument("--proxy-batch", type=int, help="proxy batch size (default 8; 4 for --ablation)")
    bench.add_argument("--proxy-patch", type=int, default=32, help="proxy LR patch side (default 32)")
    bench.add_argument("--proxy-eval-every", type=int, default=0, metavar="N",
                       help="also score every N iterations: when each model passed bicubic, equal-time PSNR")
    bench.add_argument("--proxy-seconds", type=float, default=0.0, help="train each model this long instead")
    bench.add_argument("--proxy-models", nargs="+", metavar="NAME", help="only these models in the proxy")
    bench.add_argument("--proxy-data", default="datasets/embedded", help="embedded dataset folder")
    bench.add_argument("--ablation", nargs="*", metavar="VARIANT",
                       help="train hersr_s variants (all, or those named) at equal budget instead of the latency "
                       "bench; writes benchmarks/ABLATION.md (see docs/ablation.md)")
    bench.add_argument("--ablation-iters", type=int, default=2000, help="x4 training iterations per variant")
    bench.add_argument("--ablation-denoise-iters", type=int, default=1000,
                       help="training iterations of the x1 denoising (prompt) variants")
    bench.add_argument("--ablation-seeds", type=int, nargs="+", default=[0, 1], help="seeds (two or more)")
    bench.add_argument("--ablation-workers", type=int, default=0,
                       help="parallel worker processes, one thread and one core each (default: one per seed)")
    bench.add_argument("--ablation-runs", default="experiments/ablation_runs",
                       help="folder of finished runs, reused by a rerun of the same protocol (resume)")
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
    demo.add_argument("--threads", type=int, metavar="N",
                      help="torch threads of training and testing (default: the idle cores; OMP_NUM_THREADS also works)")
    demo.add_argument("--iters", type=int, default=0, help="override the training iterations")
    demo.set_defaults(func=run_demo)

    upscale = subparsers.add_parser(
        "upscale",
        help="upscale an image or a folder of images with a HERSR checkpoint",
        description="Upscale INPUT (an image, or a folder of PNG/JPEG/WebP/TIFF/BMP images) into the folder "
        "OUTPUT with the checkpoint --model; architecture and scale come from the checkpoint. 8/16-bit and "
        "float TIFF, grayscale, RGB and RGBA; the output keeps the input's bit depth unless --format or "
        "--bit-depth say otherwise. Damaged files are reported and skipped; existing outputs are kept unless "
        "--overwrite. Exit status 1 if any image failed.",
    )
    upscale.add_argument("input", metavar="INPUT", help="an image file or a folder")
    upscale.add_argument("output", metavar="OUTPUT", help="output folder (created)")
    upscale.add_argument("--model", required=True, metavar="W.pth", help="HERSR checkpoint (.pth or .safetensors)")
    upscale.add_argument("--recursive", action="store_true", help="also process subfolders (kept in OUTPUT)")
    upscale.add_argument("--tile", type=int, default=0, metavar="N",
                         help="process N x N input tiles, blended (bounds memory; default 0: whole image)")
    upscale.add_argument("--tile-pad", type=int, default=32, metavar="P", help="context around each tile (default 32)")
    upscale.add_argument("--compile", action="store_true",
                         help="torch.compile the model once for the tile shape (needs --tile; pays off on many tiles, "
                         "mostly on GPUs)")
    upscale.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"], help="default: auto")
    upscale.add_argument("--precision", default="fp32", choices=["fp32", "bf16", "fp16"],
                         help="autocast precision (default fp32); refused where the device cannot run it")
    upscale.add_argument("--noise-strength", type=float, default=None, metavar="F",
                         help="texture-head noise multiplier (default: the model's, 1.0; 0 turns it off)")
    upscale.add_argument("--format", choices=["png", "jpg", "webp", "tiff", "bmp"], help="output format (default: input's)")
    upscale.add_argument("--bit-depth", type=int, choices=[8, 16, 32], help="output bit depth (32 = float TIFF)")
    upscale.add_argument("--alpha", default="model", choices=["model", "bicubic"],
                         help="how to upscale an alpha channel (default: model)")
    upscale.add_argument("--overwrite", action="store_true", help="replace existing outputs (default: skip them)")
    upscale.add_argument("--no-progress", action="store_true", help="no progress bar")
    upscale.set_defaults(func=run_upscale)

    export = subparsers.add_parser(
        "export",
        help="reparameterized weights (.pth/.safetensors) and ONNX with dynamic batch/height/width",
        description="Export a HERSR checkpoint for deployment. --deploy writes the switch_to_deploy() weights "
        "(self-describing: load_hersr and spandrel rebuild the model from them). --onnx writes an ONNX model with "
        "dynamic batch, height and width and checks onnxruntime against PyTorch at several sizes, including an "
        "odd one; a mismatch is an error and nothing is written. Needs pip install 'hersr[export]'.",
    )
    export.add_argument("--model", required=True, metavar="W.pth", help="HERSR checkpoint (.pth or .safetensors)")
    export.add_argument("--deploy", metavar="OUT", help="write reparameterized weights (.pth or .safetensors)")
    export.add_argument("--onnx", metavar="OUT.onnx", help="write an ONNX model")
    export.add_argument("--opset", type=int, default=17, help="ONNX opset (default 17; >= 14, DySample >= 16)")
    export.add_argument("--fp16", action="store_true", help="float16 ONNX weights and input/output")
    export.add_argument("--quiet", action="store_true", help="no progress messages")
    export.set_defaults(func=run_export)

    migrate = subparsers.add_parser(
        "migrate",
        help="rewrite a checkpoint of an older HERSR version in the current format",
        description="Rewrite a HERSR checkpoint written by an older version in the current format, for the arch "
        "file copied alone into neosr or traiNNer-redux (hersr itself, spandrel and basicsr migrate when they "
        "load). The layout is kept (params and params_ema, plain state dict, .safetensors).",
    )
    migrate.add_argument("input", metavar="OLD", help="HERSR checkpoint (.pth or .safetensors)")
    migrate.add_argument("output", metavar="NEW", help="where to write it (.pth or .safetensors)")
    migrate.set_defaults(func=run_migrate)

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
