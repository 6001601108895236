"""The embedded demo: build data, train hersr_s x4, test it and bicubic, table, side-by-side picture.

Every step goes through the same commands a user runs (``basicsr train``, ``basicsr test``,
``hersr table``), in subprocesses, from the repository root.
"""

from __future__ import annotations

import os
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np

from hersr_arch.data.prepare import build_embedded_dataset
from hersr_arch.tools.results_table import collect_runs, write_tables

TRAIN_OPT = "train_hersr_s_x4_demo.yml"
TEST_OPT = "test_hersr_s_x4_demo.yml"
BICUBIC_OPT = "test_bicubic_x4_demo.yml"
MODEL_NAME = "HERSR_S_demo_x4"
BICUBIC_NAME = "Bicubic_x4"


class DemoError(RuntimeError):
    """A demo step failed; the message says which and where its log is."""


@dataclass
class DemoResult:
    table_markdown: str
    hersr_psnr: float
    bicubic_psnr: float
    picture: Path


def _basicsr(command: str, option_file: Path, root: Path, extra: list[str], threads: int | None = None) -> None:
    """``basicsr <command>``; it picks its torch threads from the idle cores unless ``threads`` is given."""
    cmd = [sys.executable, "-m", "hersr_arch.cli.basicsr_cli", command, "-opt", str(option_file), *extra]
    print(f"$ basicsr {command} -opt {option_file} {' '.join(extra)}".rstrip(), flush=True)
    env = None if threads is None else {**os.environ, "OMP_NUM_THREADS": str(threads)}
    if subprocess.run(cmd, cwd=root, env=env).returncode != 0:
        raise DemoError(f"'basicsr {command} -opt {option_file}' failed; see its output above.")


def _label(img: np.ndarray, text: str) -> np.ndarray:
    bar = np.full((28, img.shape[1], 3), 255, np.uint8)
    cv2.putText(bar, text, (6, 20), cv2.FONT_HERSHEY_SIMPLEX, 0.6, (0, 0, 0), 1, cv2.LINE_AA)
    return np.concatenate((bar, img), 0)


def side_by_side(lq: Path, bicubic: Path, hersr: Path, gt: Path, out: Path, crop: int = 160) -> Path:
    """Write ``out``: LR input (nearest), bicubic, HERSR and GT, centre crops of ``crop`` px, labelled."""
    images = [cv2.imread(str(p), cv2.IMREAD_COLOR) for p in (lq, bicubic, hersr, gt)]
    for path, img in zip((lq, bicubic, hersr, gt), images):
        if img is None:
            raise DemoError(f"demo picture: cannot read {path}")
    h, w = images[3].shape[:2]
    images[0] = cv2.resize(images[0], (w, h), interpolation=cv2.INTER_NEAREST)
    size = min(crop, h, w)
    top, left = (h - size) // 2, (w - size) // 2
    tiles = [
        _label(img[top : top + size, left : left + size], name)
        for img, name in zip(images, ("input (nearest)", "bicubic", "HERSR", "ground truth"))
    ]
    gap = np.full((tiles[0].shape[0], 6, 3), 255, np.uint8)
    row = np.concatenate([t for tile in tiles for t in (tile, gap)][:-1], 1)
    out.parent.mkdir(parents=True, exist_ok=True)
    cv2.imwrite(str(out), row)
    return out


def run_demo(
    root: Path, options_dir: Path, extra_train_args: list[str] | None = None, threads: int | None = None
) -> DemoResult:
    """Run the whole demo under ``root`` (the repository); returns the table and the picture path.
    ``threads``: torch threads of the training and test runs (default: the idle cores, see
    ``hersr_arch.threads``)."""
    root = root.resolve()
    options_dir = (root / options_dir).resolve()
    for name in (TRAIN_OPT, TEST_OPT, BICUBIC_OPT):
        if not (options_dir / name).is_file():
            raise DemoError(f"demo option file {options_dir / name} is missing; run the demo from the "
                            "HERSR repository root (or pass --options).")
    print("Building the embedded dataset (scikit-image sample photographs) ...", flush=True)
    dataset = build_embedded_dataset(root / "datasets" / "embedded", show_progress=False)
    print(f"  {dataset.root} ({'built' if dataset.rebuilt else 'up to date'})", flush=True)

    _basicsr("train", options_dir / TRAIN_OPT, root, list(extra_train_args or []), threads)
    _basicsr("test", options_dir / TEST_OPT, root, [], threads)
    _basicsr("test", options_dir / BICUBIC_OPT, root, [], threads)

    results = root / "results"
    runs = collect_runs([results / MODEL_NAME, results / BICUBIC_NAME])
    markdown = write_tables(runs, md_path=results / "demo_table.md", csv_path=results / "demo_table.csv")
    scores = {run.experiment: run.metrics for run in runs}

    test_dir = dataset.root / "test"
    first = dataset.manifest["test"][0]
    picture = side_by_side(
        test_dir / "LRbicx4" / f"{first}.png",
        results / BICUBIC_NAME / "visualization" / "embedded_test" / f"{first}_{BICUBIC_NAME}.png",
        results / MODEL_NAME / "visualization" / "embedded_test" / f"{first}_{MODEL_NAME}.png",
        test_dir / "GTmod4" / f"{first}.png",
        results / "demo_comparison.png",
    )
    return DemoResult(markdown, _psnr(scores, MODEL_NAME), _psnr(scores, BICUBIC_NAME), picture)


def _psnr(scores: dict, name: str) -> float:
    try:
        return scores[name]["embedded_test"]["psnr"]
    except KeyError:
        raise DemoError(f"no PSNR for {name} on embedded_test in the results logs") from None
