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

Published rows (``--reference benchmarks/published_x4.csv``) join the table: per scale, the
bicubic rows first, then the published rows in the file's order, then the logs' rows, with
Params and Multi-Adds columns and a numbered source under the table. The CSV's columns are
``model, scale, params_k, multiadds_g, <Set>_psnr, <Set>_ssim, ..., source`` (empty = not published).
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
_NETWORK_START_RE = re.compile(r"^  network_g:\[\s*$")
_NETWORK_ITEM_RE = re.compile(r"^    (?P<key>\w+): (?P<value>.*?)\s*$")
_REFERENCE_FIXED = ("model", "scale", "params_k", "multiadds_g", "source")
_REFERENCE_METRIC_RE = re.compile(r"^(?P<dataset>.+)_(?P<metric>psnr|ssim)$")


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
        network: the ``network_g`` options of the dump (values as text), or None.
    """

    experiment: str
    model: str
    scale: int | None
    log_path: Path
    time_key: tuple[str, float]
    metrics: dict[str, dict[str, float]] = field(default_factory=dict)
    network: dict[str, str] | None = None


@dataclass
class ReferenceRow:
    """A published row: PSNR/SSIM per set, params (thousands) and Multi-Adds (G), and its source."""

    model: str
    scale: int
    params_k: float | None
    multiadds_g: float | None
    metrics: dict[str, dict[str, float]]
    source: str


def parse_log(path: str | os.PathLike) -> LogResults:
    """Parse one BasicSR log into a ``LogResults`` (``metrics`` is empty when it has no results)."""
    path = Path(path)
    try:
        lines = path.read_text(encoding="utf-8", errors="replace").splitlines()
    except OSError as e:
        raise ResultsTableError(f"cannot read log {path}: {e.strerror or e}") from None

    options: dict[str, str] = {}
    metrics: dict[str, dict[str, float]] = {}
    network: dict[str, str] | None = None
    in_network = False
    current: dict[str, float] | None = None
    for line in lines:
        if in_network:
            item = _NETWORK_ITEM_RE.match(line)
            if item:
                network[item["key"]] = item["value"]
                continue
            in_network = False
        if network is None and _NETWORK_START_RE.match(line):
            network, in_network = {}, True
            continue
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
    return LogResults(experiment, model_name(experiment, scale), scale, path, time_key, metrics, network)


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
        return (run.scale is None, run.scale or 0, not _is_bicubic(run.model), first_seen[run.experiment])

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
    reference: Sequence[ReferenceRow] = (),
    costs: dict[str, tuple[float | None, float | None]] | None = None,
    reference_name: str = "the reference",
) -> str:
    """Write the Markdown and/or CSV files (folders created) and return the Markdown text.

    With ``reference`` the Markdown holds the published rows too (``to_markdown_with_reference``);
    the CSV always holds the logs' rows only.
    """
    markdown = to_markdown_with_reference(runs, reference, costs, reference_name) if reference else to_markdown(runs)
    for path, text in ((md_path, markdown), (csv_path, to_csv(runs) if csv_path else "")):
        if path is not None:
            Path(path).parent.mkdir(parents=True, exist_ok=True)
            Path(path).write_text(text, encoding="utf-8")
    return markdown


def read_reference(path: str | os.PathLike) -> list[ReferenceRow]:
    """Published rows from a CSV (see the module docstring); a wrong column, a missing source or a
    value that is not a number is refused in one sentence naming the file and row."""
    path = Path(path)
    try:
        text = path.read_text(encoding="utf-8")
    except OSError as e:
        raise ResultsTableError(f"cannot read reference {path}: {e.strerror or e}") from None
    reader = csv.reader(io.StringIO(text))
    header = next(reader, None)
    if not header:
        raise ResultsTableError(f"{path}: empty reference file; its first row names the columns")
    header = [h.strip() for h in header]
    allowed = "model, scale, params_k, multiadds_g, source and <set>_psnr / <set>_ssim"
    for name in header:
        if name not in _REFERENCE_FIXED and not _REFERENCE_METRIC_RE.match(name):
            raise ResultsTableError(f"{path}: row 1: unknown column {name!r}; allowed: {allowed}")
    for name in ("model", "scale", "source"):
        if name not in header:
            raise ResultsTableError(f"{path}: row 1: the column {name!r} is missing; allowed: {allowed}")
    if len(set(header)) != len(header):
        raise ResultsTableError(f"{path}: row 1: a column is named twice: {header}")

    rows = []
    for number, cells in enumerate(reader, start=2):
        if not any(c.strip() for c in cells):
            continue
        if len(cells) != len(header):
            raise ResultsTableError(f"{path}: row {number}: {len(cells)} fields, the header has {len(header)}")
        record = dict(zip(header, (c.strip() for c in cells)))

        def number_in(column: str, record=record, number=number) -> float | None:
            value = record.get(column, "")
            if value == "":
                return None
            try:
                parsed = float(value)
            except ValueError:
                parsed = math.nan
            if not math.isfinite(parsed):
                raise ResultsTableError(f"{path}: row {number}: {column} is not a number: {value!r}") from None
            return parsed

        scale = number_in("scale")
        if scale is None or scale != int(scale) or not 1 <= scale <= 8:
            raise ResultsTableError(f"{path}: row {number}: scale must be an integer from 1 to 8, "
                                    f"got {record['scale']!r}")
        if not record["model"] or not record["source"]:
            raise ResultsTableError(f"{path}: row {number}: every row needs a model and its source")
        metrics: dict[str, dict[str, float]] = {}
        for column in header:
            match = _REFERENCE_METRIC_RE.match(column)
            value = number_in(column) if match else None
            if value is not None:
                metrics.setdefault(match["dataset"], {})[match["metric"]] = value
        rows.append(ReferenceRow(record["model"], int(scale), number_in("params_k"), number_in("multiadds_g"),
                                 metrics, record["source"]))
    if not rows:
        raise ResultsTableError(f"{path}: no rows under the header")
    return rows


def _is_bicubic(model: str) -> bool:
    return model.lower() == "bicubic"


def _format_cost(value: float | None, unit: str) -> str:
    """As given (published rows keep their printed digits): ``897`` -> ``897K``, ``49.69`` -> ``49.69G``."""
    return "-" if value is None else f"{value:g}{unit}"


def to_markdown_with_reference(
    runs: Sequence[LogResults],
    reference: Sequence[ReferenceRow],
    costs: dict[str, tuple[float | None, float | None]] | None = None,
    reference_name: str = "the reference",
) -> str:
    """The table with published rows: Model | Scale | Params | Multi-Adds | one column per set.

    Per scale of ``runs``: bicubic rows (published, then measured), the published rows in file
    order, then the other runs. ``costs``: ``{experiment: (params_k, multiadds_g)}`` of the runs.
    Published rows carry ``[n]``, and the sources are listed under the table.
    """
    costs = costs or {}
    scales = list(dict.fromkeys(run.scale for run in runs))
    published = [row for row in reference if row.scale in scales]
    if not published:
        raise ResultsTableError(
            f"{reference_name} has no row at the scale(s) of the logs ({', '.join(f'x{s}' for s in scales if s)})"
        )
    sources = list(dict.fromkeys(row.source for row in published))
    datasets = order_datasets([d for run in runs for d in run.metrics] + [d for row in published for d in row.metrics])
    header = ["Model", "Scale", "Params", "Multi-Adds", *datasets]
    lines = [
        "| " + " | ".join(header) + " |",
        "|" + "|".join([" --- "] * 2 + [" ---: "] * 2 + [" :---: "] * len(datasets)) + "|",
    ]

    def line(label, scale, params, macs, metrics):
        cells = [label, f"×{scale}" if scale is not None else "-", _format_cost(params, "K"),
                 _format_cost(macs, "G"), *(format_cell(metrics.get(d)) for d in datasets)]
        return "| " + " | ".join(cells) + " |"

    for scale in scales:
        pub = [row for row in published if row.scale == scale]
        mine = [run for run in runs if run.scale == scale]
        for bicubic in (True, False):
            for row in pub:
                if _is_bicubic(row.model) == bicubic:
                    label = f"{row.model} [{sources.index(row.source) + 1}]"
                    lines.append(line(label, scale, row.params_k, row.multiadds_g, row.metrics))
            for run in mine:
                if _is_bicubic(run.model) == bicubic:
                    lines.append(line(run.model, scale, *costs.get(run.experiment, (None, None)), run.metrics))
    notes = ["", "Measured rows: params of the deployed network, Multi-Adds of one forward to a 1280×720 "
             "output. Published rows [n]: as printed by their source:"]
    notes += [f"[{i}] {source}" for i, source in enumerate(sources, start=1)]
    return "\n".join(lines + notes) + "\n"
