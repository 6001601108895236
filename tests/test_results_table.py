"""``hersr table``: PSNR/SSIM tables from logs written by BasicSR's own logging code."""

import csv
import io

import pytest

from hersr_arch.cli import hersr_cli
from hersr_arch.tools.results_table import (
    ResultsTableError,
    collect_runs,
    format_cell,
    model_name,
    order_datasets,
    parse_log,
    to_csv,
    to_markdown,
)
from tests.helpers import write_basicsr_test_log

HERSR_X4 = {
    "Urban100": {"psnr": 26.4512, "ssim": 0.7961},
    "Set14": {"psnr": 28.7789, "ssim": 0.7862},
    "DIV2K_val": {"psnr": 30.9, "ssim": 0.85},
    "Set5": {"psnr": 32.5678, "ssim": 0.89991},
    "Manga109": {"psnr": 30.9004, "ssim": 0.9121},
    "B100": {"psnr": 27.7, "ssim": 0.7421},
}


@pytest.fixture
def results(tmp_path):
    """A results folder with HERSR ×4 (two runs), HERSR ×2, a bicubic ×4 baseline and an empty log."""
    root = tmp_path / "results"
    old = {name: {"psnr": 1.0, "ssim": 0.1} for name in HERSR_X4}
    write_basicsr_test_log(root, "test_HERSR_M_x4", old, scale=4, time_str="20240101_120000")
    (root / "test_HERSR_M_x4").rename(root / "test_HERSR_M_x4_archived_20240102_000000")  # as BasicSR does
    write_basicsr_test_log(root, "test_HERSR_M_x4", HERSR_X4, scale=4, time_str="20240102_120000")
    write_basicsr_test_log(
        root, "test_HERSR_M_x2", {"Set5": {"psnr": 38.1, "ssim": 0.9612}}, scale=2, time_str="20240102_120000"
    )
    write_basicsr_test_log(
        root,
        "Bicubic_x4",
        {"Set5": {"psnr": 28.42, "ssim": 0.8104}, "Set14": {"psnr": 26.0, "ssim": 0.7027}},
        time_str="20240101_000000",
    )
    crashed = root / "test_HERSR_M_x4" / "test_test_HERSR_M_x4_20240103_000000.log"
    crashed.write_text("2024-01-03 00:00:00,000 INFO: Testing Set5...\n")
    return root


def test_log_has_basicsr_format(results):
    log = (results / "test_HERSR_M_x4" / "test_test_HERSR_M_x4_20240102_120000.log").read_text()
    assert " INFO: Validation Set5\n\t # psnr: 32.5678\tBest: 32.5678 @ test_HERSR_M_x4 iter\n" in log
    assert "\t # ssim: 0.8999\tBest: 0.8999 @ test_HERSR_M_x4 iter\n" in log
    assert "\n  name: test_HERSR_M_x4\n" in log and "\n  scale: 4\n" in log


def test_parse_log(results):
    run = parse_log(results / "test_HERSR_M_x4" / "test_test_HERSR_M_x4_20240102_120000.log")
    assert (run.experiment, run.model, run.scale) == ("test_HERSR_M_x4", "HERSR_M", 4)
    assert run.metrics["Set5"] == {"psnr": 32.5678, "ssim": 0.8999}
    assert list(run.metrics) == list(HERSR_X4)


def test_markdown_table(results):
    warnings = []
    runs = collect_runs([results], warn=warnings.append)
    assert len(warnings) == 1 and "20240103_000000" in warnings[0]  # the crashed run is skipped
    lines = to_markdown(runs).splitlines()
    assert lines[0] == "| Model | Scale | Set5 | Set14 | B100 | Urban100 | Manga109 | DIV2K_val |"
    rows = [[cell.strip() for cell in line.strip("|").split("|")] for line in lines[2:]]
    assert [row[:2] for row in rows] == [["HERSR_M", "×2"], ["Bicubic", "×4"], ["HERSR_M", "×4"]]
    assert rows[0][2:] == ["38.10/0.9612", "-", "-", "-", "-", "-"]
    assert rows[1][2:4] == ["28.42/0.8104", "26.00/0.7027"]
    assert rows[2][2:] == [
        "32.57/0.8999",
        "28.78/0.7862",
        "27.70/0.7421",
        "26.45/0.7961",
        "30.90/0.9121",
        "30.90/0.8500",
    ]


def test_latest_log_wins(results):
    hersr_x4 = [
        run
        for run in collect_runs([results], warn=lambda _: None)
        if run.scale == 4 and run.model == "HERSR_M"
    ]
    assert len(hersr_x4) == 1
    assert hersr_x4[0].log_path.name == "test_test_HERSR_M_x4_20240102_120000.log"
    assert hersr_x4[0].metrics["Set5"]["psnr"] == 32.5678


def test_csv(results):
    rows = list(csv.DictReader(io.StringIO(to_csv(collect_runs([results], warn=lambda _: None)))))
    assert list(rows[0])[:6] == ["model", "scale", "Set5_psnr", "Set5_ssim", "Set14_psnr", "Set14_ssim"]
    assert list(rows[0])[-2:] == ["experiment", "log"]
    x4 = rows[2]
    assert (x4["model"], x4["scale"], x4["Set5_psnr"], x4["Set5_ssim"]) == (
        "HERSR_M",
        "4",
        "32.5678",
        "0.8999",
    )
    assert x4["Manga109_psnr"] == "30.9004" and x4["experiment"] == "test_HERSR_M_x4"
    assert rows[0]["Set14_psnr"] == "" and rows[1]["model"] == "Bicubic"


def test_cli_writes_files_and_prints_markdown(results, tmp_path, capsys):
    assert hersr_cli.main(["table", str(results), "-o", str(tmp_path / "out" / "table")]) == 0
    out = capsys.readouterr()
    assert out.out == (tmp_path / "out" / "table.md").read_text()
    assert "| HERSR_M | ×4 | 32.57/0.8999 |" in out.out
    assert (tmp_path / "out" / "table.csv").read_text().startswith("model,scale,Set5_psnr,")
    assert "warning: no validation results in" in out.err

    log = results / "Bicubic_x4" / "test_Bicubic_x4_20240101_000000.log"
    assert (
        hersr_cli.main(["table", str(log), "--md", str(tmp_path / "b.md"), "--csv", str(tmp_path / "b.csv")])
        == 0
    )
    assert "| Bicubic | ×4 | 28.42/0.8104 | 26.00/0.7027 |" in (tmp_path / "b.md").read_text()
    assert (tmp_path / "b.csv").is_file()


def test_last_validation_of_a_log_wins(tmp_path):
    log = write_basicsr_test_log(tmp_path, "train_run", {"val": {"psnr": 20.0}})
    later = write_basicsr_test_log(tmp_path / "later", "train_run", {"val": {"psnr": 21.5}})
    log.write_text(log.read_text() + later.read_text())
    run = parse_log(log)
    assert run.metrics == {"val": {"psnr": 21.5}}
    assert format_cell(run.metrics["val"]) == "21.50/-"


@pytest.mark.parametrize(
    "inputs, message",
    [
        (["missing_dir"], "no such file or folder: {tmp}/missing_dir"),
        (["empty"], "no BasicSR test logs (test_*.log) found under {tmp}/empty"),
        (["empty/test_x_20240101_000000.log"], "no validation results in the logs under {tmp}/empty/test_x"),
    ],
)
def test_errors_name_the_path(tmp_path, capsys, inputs, message):
    (tmp_path / "empty").mkdir()
    (tmp_path / "empty" / "test_x_20240101_000000.log").write_text("INFO: nothing\n")
    paths = [str(tmp_path / p) for p in inputs]
    if "found under" in message:
        (tmp_path / "empty" / "test_x_20240101_000000.log").unlink()
    with pytest.raises(ResultsTableError, match="no "):
        collect_runs(paths, warn=lambda _: None)
    assert hersr_cli.main(["table", *paths]) == 1
    err = capsys.readouterr().err
    assert f"hersr table: error: {message.format(tmp=tmp_path)}" in err
    assert "Traceback" not in err


def test_names_and_order():
    assert model_name("test_HERSR_M_x4", 4) == "HERSR_M"
    assert model_name("MSRResNet_SRx4_DF2K", 4) == "MSRResNet_DF2K"
    assert model_name("HERSR_M", None) == "HERSR_M"
    assert order_datasets(["DIV2K", "manga109", "BSD100", "Set14", "Set5", "Foo"]) == [
        "Set5",
        "Set14",
        "BSD100",
        "manga109",
        "DIV2K",
        "Foo",
    ]
    assert format_cell({"psnr_y": float("inf"), "ssim_y": 1.0}) == "inf/1.0000"
    assert format_cell(None) == "-"


# ---------------------------------------------------------------------------------------------
# published rows (--reference)
# ---------------------------------------------------------------------------------------------

PUBLISHED = """model,scale,params_k,multiadds_g,Set5_psnr,Set5_ssim,Set14_psnr,Set14_ssim,source
SwinIR-light,4,897,49.6,32.44,0.8976,28.77,0.7858,"Liang et al., SwinIR, ICCVW 2021, Table 3"
Bicubic,4,,,28.42,0.8104,26.00,0.7027,"Liang et al., SwinIR, ICCVW 2021, Table 3"
SAFMN,4,240,14,32.18,0.8948,,,"Sun et al., SAFMN, ICCV 2023, Table 2"
SwinIR-light,2,878,195.6,38.14,0.9611,33.86,0.9206,"Liang et al., SwinIR, ICCVW 2021, Table 3"
"""
TINY_NET = {"type": "HERSR", "upscale": 4, "dims": [8, 12, 16, 16], "depths": [1, 1, 1, 1],
            "dec_depths": [1, 1, 1, 1], "num_heads": [2, 2, 2, 2], "window_size": 4, "plk_kernel": 5}


def test_published_rows_join_the_table_in_paper_order(tmp_path, capsys):
    from hersr_arch.archs.hersr_arch import HERSR
    from hersr_arch.bench.model_cost import count_macs, count_params

    root = tmp_path / "results"
    write_basicsr_test_log(root, "test_HERSR_T_x4", {"Set5": {"psnr": 30.5, "ssim": 0.88}}, scale=4,
                           network=TINY_NET)
    write_basicsr_test_log(root, "Bicubic_x4", {"Set5": {"psnr": 28.4302, "ssim": 0.8111}}, scale=4,
                           network={"type": "MATLABBicubic", "upscale": 4})
    (tmp_path / "published_x4.csv").write_text(PUBLISHED)
    assert hersr_cli.main(["table", str(root), "--reference", str(tmp_path / "published_x4.csv")]) == 0
    out = capsys.readouterr().out.splitlines()
    assert out[0] == "| Model | Scale | Params | Multi-Adds | Set5 | Set14 |"
    rows = [line.split(" | ")[0].lstrip("| ") for line in out[2:6]]
    # bicubic (published, then measured), published peers in file order, then the logs' rows
    assert rows == ["Bicubic [1]", "Bicubic", "SwinIR-light [1]", "SAFMN [2]"] and out[6].startswith("| HERSR_T |")
    assert "| SwinIR-light [1] | ×4 | 897K | 49.6G | 32.44/0.8976 | 28.77/0.7858 |" in out
    assert "| SAFMN [2] | ×4 | 240K | 14G | 32.18/0.8948 | - |" in out
    assert "| Bicubic | ×4 | - | - | 28.43/0.8111 | - |" in out  # no parameters: no cost
    assert not any("×2" in line for line in out)  # only the scales of the logs
    assert out[-2:] == ["[1] Liang et al., SwinIR, ICCVW 2021, Table 3", "[2] Sun et al., SAFMN, ICCV 2023, Table 2"]
    # HERSR's own cost: deployed parameters, Multi-Adds for a 1280x720 output
    net = HERSR(**{k: v for k, v in TINY_NET.items() if k != "type"}).switch_to_deploy()
    params, macs = round(count_params(net) / 1e3), round(count_macs(net, 180, 320) / 1e9, 1)
    assert f"| HERSR_T | ×4 | {params}K | {macs:g}G | 30.50/0.8800 | - |" in out


@pytest.mark.parametrize(("text", "message"), [
    ("model,scale,set5_psnr,sauce\nA,4,30,x\n", "row 1: unknown column 'sauce'; allowed: model, scale"),
    ("model,scale,Set5_psnr\nA,4,30\n", "row 1: the column 'source' is missing"),
    ("model,scale,Set5_psnr,source\nA,4,30,src\nB,4,thirty,src\n", "row 3: Set5_psnr is not a number: 'thirty'"),
    ("model,scale,Set5_psnr,source\nA,4,nan,src\n", "row 2: Set5_psnr is not a number: 'nan'"),
    ("model,scale,Set5_psnr,source\nA,4,30,\n", "row 2: every row needs a model and its source"),
    ("model,scale,Set5_psnr,source\nA,x4,30,src\n", "row 2: scale is not a number: 'x4'"),
    ("model,scale,Set5_psnr,source\nA,2.5,30,src\n", "row 2: scale must be an integer from 1 to 8, got '2.5'"),
    ("model,scale,Set5_psnr,source\nA,4,30\n", "row 2: 3 fields, the header has 4"),
    ("model,scale,Set5_psnr,source\nA,2,30,src\n", "ref.csv has no row at the scale(s) of the logs (x4)"),
])  # fmt: skip
def test_bad_reference_is_one_line_naming_file_and_row(results, tmp_path, capsys, text, message):
    reference = tmp_path / "ref.csv"
    reference.write_text(text)
    assert hersr_cli.main(["table", str(results / "test_HERSR_M_x4"), "--reference", str(reference)]) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]  # after the fixture's "no results" warning
    assert message in err, err
    if "row" in message:
        assert str(reference) in err


def test_shipped_published_tables_read_and_cite_every_row():
    """benchmarks/published_x{2,3,4}.csv: every row has a source, the bicubic row comes first."""
    from pathlib import Path

    from hersr_arch.tools.results_table import read_reference

    for s in (2, 3, 4):
        rows = read_reference(Path(__file__).resolve().parents[1] / "benchmarks" / f"published_x{s}.csv")
        assert rows[0].model == "Bicubic" and all(row.scale == s and row.source for row in rows)
        assert all(set(row.metrics) == {"Set5", "Set14", "B100", "Urban100", "Manga109"} for row in rows[:1])
