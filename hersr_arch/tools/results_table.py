"""Paper-style PSNR/SSIM tables from the logs that ``basicsr test`` writes.

``basicsr test -opt X.yml`` writes ``results/<name>/test_<name>_<YYYYmmdd_HHMMSS>.log`` (a second
run first renames the old folder to ``results/<name>_archived_<time>``). The log holds the option
dump (``dict2str``: top-level keys indented by two spaces, e.g. ``  name: HERSR_M_x4`` and
``  scale: 4``) and, per test set, the block written by ``SRModel._log_validation_metric_values``::

    2024-05-01 10:00:00,123 INFO: Validation Set5
    \t # psnr: 32.1234\tBest: 32.1234 @ HERSR_M_x4 iter
    \t # ssim: 0.8956\tBest: 0.8956 @ HERSR_M_x4 iter

One row per experiment (the ``name`` in the log): its latest log wins, judged by the time stamp in
the file name and then the modification time; when a set appears several times in one log (a
training log), its last block wins. The model name is the experiment name without a leading
``test_`` and without the scale tag (``_x4``, ``_SRx4``), the scale is ``scale`` from the option
dump or else the ``x<s>`` tag of the name. Rows are grouped by scale (×2, ×3, ×4, then unknown); in
a group a ``bicubic`` baseline comes first, then the rest in input order. Columns are Set5, Set14,
B100 (also BSD100/BSDS100), Urban100 and Manga109 when present, then the other sets in the order
they are first met. A cell is ``PSNR/SSIM`` (2 and 4 decimals); the metric named ``psnr`` (``ssim``)
is used, or else the first whose name contains it (``psnr_y``), and ``-`` marks what is missing.
"""

from __future__ import annotations

import csv
import io
import math
import os
import re
import sys
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from pathlib import Path

BENCHMARK_ORDER = ("set5", "set14", "b100", "urban100", "manga109")
_ALIASES = {"bsd100": "b100", "bsds100": "b100"}

_VALIDATION_RE = re.compile(r"\bINFO: Validation (?P<dataset>.+?)\s*$")
_METRIC_RE = re.compile(r"^\t # (?P<metric>.+?): (?P<value>\S+?)(?:\tBest: .*)?\s*$")
_OPTION_RE = re.compile(r"^  (?P<key>name|scale): (?P<value>.*?)\s*$")
_LOG_NAME_RE = re.compile(r"^(?:test|train)_(?P<name>.+)_(?P<time>\d{8}_\d{6})\.log$")
_SCALE_TAG_RE = re.compile(r"(?:^|[_\-])(?:SR)?[xX×](?P<scale>\d+)(?=$|[_\-.])")


class ResultsTableError(Exception):
    """Nothing usable in the inputs (no logs, no validation results, unreadable file)."""


@dataclass
class LogResults:
    """The results of one ``basicsr test`` log.

    Attributes:
        experiment: ``name`` from the option dump (or from the log file name).
        model: row label: the experiment name without ``test_`` and the scale tag.
        scale: the SR scale, or None when neither the log nor the name tells.
        log_path: the log file.
        time_key: (time stamp of the file name, modification time), to pick the latest log.
        metrics: ``{dataset: {metric: value}}`` in log order.
    """

    experiment: str
    model: str
    scale: int | None
    log_path: Path
    time_key: tuple[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)


def parse_log(path: str | os.PathLike) -> LogResults:
    """Parse one BasicSR log into a ``LogResults`` (``metrics`` is empty when it has no results)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise ResultsTableError(f"cannot read log {path}: {e.strerror or e}") from None

    options: dict[str, str] = {}
    metrics: dict[str, dict[str, float]] = {}
    current: dict[str, float] | None = None
    for line in lines:
        if current is not None:
            match = _METRIC_RE.match(line)
            if match:
                current[match["metric"]] = float(match["value"])
                continue
            current = None
        match = _VALIDATION_RE.search(line)
        if match:
            current = metrics[match["dataset"]] = {}  # a later block of the same set replaces it
            continue
        match = _OPTION_RE.match(line)
        if match and match["key"] not in options:
            options[match["key"]] = match["value"]

    name_match = _LOG_NAME_RE.match(path.name)
    experiment = options.get("name") or (name_match["name"] if name_match else path.stem)
    scale = _parse_scale(options.get("scale"), experiment)
    time_key = (name_match["time"] if name_match else "", path.stat().st_mtime)
    metrics = {dataset: values for dataset, values in metrics.items() if values}
    return LogResults(experiment, model_name(experiment, scale), scale, path, time_key, metrics)


def _parse_scale(value: str | None, experiment: str) -> int | None:
    if value is not None and value.strip().isdigit():
        return int(value)
    tag = _SCALE_TAG_RE.search(experiment)
    return int(tag["scale"]) if tag else None


def model_name(experiment: str, scale: int | None) -> str:
    """``test_HERSR_M_x4`` → ``HERSR_M``: drop a leading ``test_`` and the tag of ``scale``."""
    name = re.sub(r"^test[_\-]", "", experiment, flags=re.IGNORECASE)
    if scale is not None:
        tag = rf"(?:^|[_\-])(?:SR)?[xX×]{scale}(?=$|[_\-.])"
        name = re.sub(tag, "", name, count=1).strip("_-") or name
    return name


def find_logs(inputs: Sequence[str | os.PathLike]) -> list[Path]:
    """Log files named by ``inputs``: files as given, folders searched for ``test_*.log``."""
    logs: list[Path] = []
    for item in inputs:
        path = Path(item)
        if path.is_file():
            logs.append(path)
        elif path.is_dir():
            found = sorted(path.rglob("test_*.log"))
            if not found:
                raise ResultsTableError(f"no BasicSR test logs (test_*.log) found under {path}")
            logs.extend(found)
        else:
            raise ResultsTableError(f"no such file or folder: {path}")
    return logs


def collect_runs(inputs: Sequence[str | os.PathLike], warn=None) -> list[LogResults]:
    """The latest log with results of each experiment found in ``inputs``, in table-row order.

    Args:
        inputs: result folders (searched recursively) and log files.
        warn: called with a message for each log that holds no validation results (it is
            skipped). Default: print to stderr.
    """
    warn = warn or (lambda message: print(message, file=sys.stderr))
    latest: dict[str, LogResults] = {}
    first_seen: dict[str, int] = {}
    for log in find_logs(inputs):
        run = parse_log(log)
        if not run.metrics:
            warn(f"warning: no validation results in {log}, skipped")
            continue
        first_seen.setdefault(run.experiment, len(first_seen))
        if run.experiment not in latest or run.time_key > latest[run.experiment].time_key:
            latest[run.experiment] = run
    if not latest:
        raise ResultsTableError(f"no validation results in the logs under {', '.join(map(str, inputs))}")

    def row_key(run: LogResults) -> tuple:
        return (run.scale is None, run.scale or 0, run.model.lower() != "bicubic", first_seen[run.experiment])

    return sorted(latest.values(), key=row_key)


def order_datasets(names: Iterable[str]) -> list[str]:
    """Set5, Set14, B100, Urban100, Manga109 first (when present), then the rest in given order."""
    names = list(dict.fromkeys(names))

    def rank(name: str) -> int:
        key = _ALIASES.get(name.lower(), name.lower())
        return BENCHMARK_ORDER.index(key) if key in BENCHMARK_ORDER else len(BENCHMARK_ORDER)

    return sorted(names, key=rank)  # stable: the others keep their order


def _pick_metric(values: dict[str, float], kind: str) -> float | None:
    for name, value in values.items():
        if name.lower() == kind:
            return value
    for name, value in values.items():
        if kind in name.lower():
            return value
    return None


def _format(value: float | None, decimals: int) -> str:
    if value is None:
        return "-"
    return f"{value:.{decimals}f}" if math.isfinite(value) else str(value)


def format_cell(values: dict[str, float] | None) -> str:
    """``{'psnr': 32.1234, 'ssim': 0.89562}`` → ``'32.12/0.8956'``; ``None`` → ``'-'``."""
    if not values:
        return "-"
    return f"{_format(_pick_metric(values, 'psnr'), 2)}/{_format(_pick_metric(values, 'ssim'), 4)}"


def _datasets(runs: Sequence[LogResults]) -> list[str]:
    return order_datasets(dataset for run in runs for dataset in run.metrics)


def to_markdown(runs: Sequence[LogResults]) -> str:
    """The table in Markdown: Model | Scale | one ``PSNR/SSIM`` column per test set."""
    datasets = _datasets(runs)
    header = ["Model", "Scale", *datasets]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] * 2 + [" :---: "] * len(datasets)) + "|",
    ]
    for run in runs:
        scale = f"×{run.scale}" if run.scale is not None else "-"
        cells = [run.model, scale, *(format_cell(run.metrics.get(d)) for d in datasets)]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def to_csv(runs: Sequence[LogResults]) -> str:
    """The table as CSV with numbers: model, scale, ``<set>_psnr``, ``<set>_ssim``..., experiment, log.

    Values keep the 4 decimals of the log; missing values are empty.
    """
    datasets = _datasets(runs)
    buffer = io.StringIO()
    writer = csv.writer(buffer, lineterminator="\n")
    writer.writerow(
        ["model", "scale", *(f"{d}_{m}" for d in datasets for m in ("psnr", "ssim")), "experiment", "log"]
    )
    for run in runs:
        row: list[object] = [run.model, "" if run.scale is None else run.scale]
        for dataset in datasets:
            values = run.metrics.get(dataset, {})
            for kind in ("psnr", "ssim"):
                value = _pick_metric(values, kind)
                row.append("" if value is None else f"{value:.4f}")
        writer.writerow([*row, run.experiment, str(run.log_path)])
    return buffer.getvalue()


def write_tables(
    runs: Sequence[LogResults],
    md_path: str | os.PathLike | None = None,
    csv_path: str | os.PathLike | None = None,
) -> str:
    """Write the Markdown and/or CSV files (folders created) and return the Markdown text."""
    markdown = to_markdown(runs)
    for path, text in ((md_path, markdown), (csv_path, to_csv(runs) if csv_path else "")):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
    return markdown
