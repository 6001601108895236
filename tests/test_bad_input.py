"""Bad input gets one clear error that names the bad value and what is allowed, and loses nothing.

Two tables. ``NETWORK_CASES`` call the network (and the ``network_g`` option check that guards
building it) in-process. ``CLI_CASES`` run the ``basicsr`` command on a broken
option file, dataset or checkpoint; each must exit with status 2 and one line on stderr, no
traceback, no experiment/results folder created, and every input file byte for byte unchanged.
Each case runs the command's ``main`` in this process; ``SUBPROCESS_CASES`` also run as the real
``python -m`` command (meanwhile, from one module fixture), so the entry point itself is covered
without paying ~8 s of torch and BasicSR imports per case.

``hersr upscale``'s own cases (NaN/Inf pixels, an input too large without tiling, corrupt image
files in a folder) are tested with that command.
"""

from __future__ import annotations

import contextlib
import io
import shutil
import subprocess
import sys
from dataclasses import dataclass, field
from pathlib import Path

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR
from hersr_arch.cli import basicsr_cli
from hersr_arch.loading import CheckpointError, load_hersr
from hersr_arch.models.hersr_model import HERSRModel
from hersr_arch.option_checks import OptionError, check_network_options
from tests.helpers import (
    PACKAGE_ROOT,
    TINY_MSRRESNET,
    basicsr_test_options,
    basicsr_train_options,
    file_hashes,
    finish_cli,
    start_cli,
    undo_basicsr_patches_with,
    write_paired_dataset,
    write_yaml,
    yaml_network,
)
from tests.networks import TINY, tiny_hersr

# ---------------------------------------------------------------------------------------------
# The network
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def net():
    return tiny_hersr(upscale=2).eval()


def _forward(shape, dtype=torch.float32):
    def call(net):
        with torch.no_grad():
            net(torch.zeros(shape, dtype=dtype))

    return call


def _build(**kwargs):
    return lambda net: HERSR(**{**TINY, **kwargs})


def _model_with(**net_opt):
    opt = {"network_g": {"type": "HERSR", **net_opt}, "num_gpu": 0, "dist": False, "is_train": False, "path": {}}
    return lambda net: HERSRModel(opt)


# (id, call(net), exception type, substrings of the message: the bad value and what is allowed)
NETWORK_CASES = [
    ("2 channels", _forward((1, 2, 8, 8)), ValueError, ["3 input channels", "with 2"]),
    ("5 channels", _forward((1, 5, 8, 8)), ValueError, ["3 input channels", "with 5"]),
    ("empty batch", _forward((0, 3, 8, 8)), ValueError, ["(0, 3, 8, 8)", "every size must be >= 1"]),
    ("zero-size image", _forward((1, 3, 0, 8)), ValueError, ["(1, 3, 0, 8)", "every size must be >= 1"]),
    ("uint8 input", _forward((1, 3, 8, 8), torch.uint8), TypeError, ["torch.uint8", "float32, float16 or bfloat16"]),
    ("int64 input", _forward((1, 3, 8, 8), torch.int64), TypeError, ["torch.int64", "floating-point"]),
    ("3-D input", _forward((3, 8, 8)), ValueError, ["(3, 8, 8)", "4-D tensor (B, C, H, W)"]),
    ("upscale 8", _build(upscale=8), ValueError, ["got 8", "1, 2, 3, 4"]),
    ("upscale 0", _build(upscale=0), ValueError, ["got 0", "1, 2, 3, 4"]),
    ("upscale vs scale", _build(upscale=2, scale=4), ValueError, ["upscale=2", "scale=4", "must agree"]),
    ("freq_split", _build(freq_split="wavelet"), ValueError, ["'wavelet'", "['haar', 'avgpool', 'none']"]),
    ("moe_top_k", _build(moe_top_k=-1), ValueError, ["got -1", "0 (dense) or a positive integer"]),
    ("plk_kernel", _build(plk_kernel=4), ValueError, ["got 4", "odd integer >= 3"]),
    ("dims", _build(dims=(10, 12, 16, 16)), ValueError, ["dims[0]=10", "multiple of 4"]),
    ("moe_experts", _build(moe_experts=("conv", "mlp")), ValueError, ["'mlp'", "['conv', 'attn', 'fft']"]),
    ("depths length", _build(depths=(1, 1)), ValueError, ["[1, 1]", "one entry per stage (4"]),
    (
        "unknown keyword",
        lambda net: check_network_options({"type": "HERSR", "dimz": [8, 8, 8, 8]}),
        OptionError,
        ["'dimz'", "did you mean 'dims'", "Allowed: num_in_ch, num_out_ch, upscale, dims"],
    ),
    (
        "unknown keyword, preset",
        lambda net: check_network_options({"type": "hersr_s", "upsample": "dysample"}, "network_g"),
        OptionError,
        ["hersr_s has no keyword argument 'upsample'", "did you mean 'upsampler'", "moe_top_k"],
    ),
    ("unknown keyword, HERSRModel", _model_with(window=8), OptionError, ["'window'", "window_size"]),
    (
        "unregistered type",
        lambda net: check_network_options({"type": "HERSRX"}),
        OptionError,
        ["'HERSRX' is not a registered arch", "Did you mean 'HERSR'", "MSRResNet"],
    ),
]


@pytest.mark.parametrize("call, error, parts", [c[1:] for c in NETWORK_CASES], ids=[c[0] for c in NETWORK_CASES])
def test_network_rejects_bad_input(net, call, error, parts):
    with pytest.raises(error) as exc:
        call(net)
    message = str(exc.value)
    for part in parts:
        assert part in message, f"{part!r} not in {message!r}"


def test_network_options_of_every_option_file_pass():
    """No false alarm: the networks of the shipped option files (BasicSR's ``*_basicsr`` names too) pass."""
    import yaml

    files = sorted((PACKAGE_ROOT / "options").rglob("*.yml"))
    assert files
    for path in files:
        opt = yaml.safe_load(path.read_text())
        for key in ("network_g", "network_d"):
            if opt.get(key):
                check_network_options(opt[key], key)


def test_truncated_checkpoint_in_python(tmp_path, net):
    path = tmp_path / "x2.pth"
    torch.save({"params": net.state_dict()}, path)
    path.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    before = file_hashes(path)
    with pytest.raises(CheckpointError, match="truncated, damaged or not a PyTorch"):
        load_hersr(path)
    assert file_hashes(path) == before


# ---------------------------------------------------------------------------------------------
# The basicsr command
# ---------------------------------------------------------------------------------------------

NET = yaml_network("HERSR", upscale=4, **TINY)


@dataclass
class Case:
    """One broken run: ``inputs`` are hashed before and after; ``run`` is the working directory."""

    args: list
    parts: list
    inputs: list
    run: Path
    name: str = "bad"
    command: str = "train"
    before: dict = field(default_factory=dict)


def _train_case(root: Path, data: dict, parts: list, *, edit=None, extra_inputs=(), text=None) -> Case:
    inputs = root / "inputs"
    inputs.mkdir(parents=True)
    opt = basicsr_train_options("bad", data["train"], data["val"], dict(NET), model_type="HERSRModel")
    if edit is not None:
        edit(opt, inputs)
    yml = inputs / "train.yml"
    if text is not None:
        yml.write_text(text)
    else:
        write_yaml(yml, opt)
    return Case(["train", "-opt", yml], parts, [inputs, *data["dirs"], *extra_inputs], root / "run")


def _checkpoint(path: Path, state_dict: dict, key: str = "params") -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    torch.save({key: state_dict}, path)
    return path


def _set(section, **values):
    def edit(opt, inputs):
        target = opt
        for key in section:
            target = target[key]
        target.update(values)

    return edit


def _lmdb_pair(inputs: Path, data: dict, drop_meta: bool = False, ghost_key: bool = False) -> tuple[str, str]:
    from hersr_arch.data.prepare import create_lmdb

    gt, lq = inputs / "gt.lmdb", inputs / "lq.lmdb"
    create_lmdb(data["train"][0], gt)
    create_lmdb(data["train"][1], lq)
    if drop_meta:
        (lq / "meta_info.txt").unlink()
    if ghost_key:  # listed in both meta files, stored in neither
        for db, size in ((gt, 32), (lq, 8)):
            with open(db / "meta_info.txt", "a") as f:
                f.write(f"ghost.png ({size},{size},3) 1\n")
    return str(gt), str(lq)


def _lmdb_edit(data: dict, **kwargs):
    def edit(opt, inputs):
        gt, lq = _lmdb_pair(inputs, data, **kwargs)
        opt["datasets"]["train"].update(dataroot_gt=gt, dataroot_lq=lq, io_backend={"type": "lmdb"})

    return edit


def _build_cases(root: Path, data: dict) -> dict[str, Case]:
    x4 = tiny_hersr(upscale=4).state_dict()
    x2 = tiny_hersr(upscale=2).state_dict()
    from basicsr.archs.srresnet_arch import MSRResNet

    msrresnet = MSRResNet(**{k: v for k, v in TINY_MSRRESNET.items() if k != "type"}).state_dict()
    ckpts = root / "checkpoints"
    good = _checkpoint(ckpts / "x4.pth", x4)
    truncated = ckpts / "truncated.pth"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    foreign = _checkpoint(ckpts / "msrresnet.pth", msrresnet)
    other_scale = _checkpoint(ckpts / "x2.pth", x2)
    wrapped = _checkpoint(ckpts / "wrapped.pth", x4, key="state_dict")

    def pretrain(path):
        return _set(["path"], pretrain_network_g=str(path))

    mismatch = write_paired_dataset(root / "data_mismatch", 2, size=32, scale=2)  # LQ for x2, options say x4
    unpaired = write_paired_dataset(root / "data_unpaired", 2, size=32)
    (unpaired[1] / "0001.png").unlink()

    cases = {
        "option file does not parse": _train_case(
            root / "yaml", data, ["cannot parse option file", "train.yml", "line 2"], text="name: x\n  bad: [indent\n"
        ),
        "unknown network_g keyword": _train_case(
            root / "kw", data, ["network_g: HERSR has no keyword argument 'dimz'", "did you mean 'dims'", "Allowed:"],
            edit=_set(["network_g"], dimz=[8, 8, 8, 8]),
        ),
        "unregistered network type": _train_case(
            root / "type", data,
            ["network_g.type: 'HERSRX' is not a registered arch", "Did you mean 'HERSR'", "Registered: ", "hersr_s"],
            edit=_set(["network_g"], type="HERSRX"),
        ),
        "unsupported upscale in YAML": _train_case(
            root / "upscale", data, ["network_g: HERSR upscale must be one of 1, 2, 3, 4, got 8"],
            edit=lambda opt, inputs: (opt["network_g"].update(upscale=8), opt.update(scale=8)),
        ),
        "network upscale vs scale": _train_case(
            root / "scale", data, ["network_g.upscale: 2 does not match the top-level scale: 4"],
            edit=_set(["network_g"], upscale=2),
        ),
        "missing dataset folder": _train_case(
            root / "missing", data, ["datasets.train.dataroot_gt", "does-not-exist", "does not exist",
                                     "expected an existing folder of images"],
            edit=_set(["datasets", "train"], dataroot_gt=str(root / "does-not-exist")),
        ),
        "GT without LQ partner": _train_case(
            root / "unpaired", data, ["GT image '0001.png' has no LQ partner '0001.png'", "every GT file needs one"],
            edit=_set(["datasets", "train"], dataroot_gt=str(unpaired[0]), dataroot_lq=str(unpaired[1])),
            extra_inputs=[root / "data_unpaired"],
        ),
        "GT/LQ size mismatch for the scale": _train_case(
            root / "size", data, ["GT 0000.png is 32x32 but its LQ is 16x16", "with scale 4 the GT must be 64x64"],
            edit=_set(["datasets", "train"], dataroot_gt=str(mismatch[0]), dataroot_lq=str(mismatch[1])),
            extra_inputs=[root / "data_mismatch"],
        ),
        "LMDB without meta_info.txt": _train_case(
            root / "lmdb_meta", data, ["lq.lmdb", "has no meta_info.txt", "'name.png (h,w,c) compression'"],
            edit=_lmdb_edit(data, drop_meta=True),
        ),
        "LMDB key missing": _train_case(
            root / "lmdb_key", data, ["gt.lmdb", "lacks key(s) 'ghost'", "meta_info.txt lists"],
            edit=_lmdb_edit(data, ghost_key=True),
        ),
        "truncated checkpoint": _train_case(
            root / "truncated", data, ["path.pretrain_network_g", "truncated.pth", "truncated, damaged or not a "
                                       "PyTorch checkpoint", "Use a complete .pth file"],
            edit=pretrain(truncated), extra_inputs=[ckpts],
        ),
        "checkpoint of another architecture": _train_case(
            root / "foreign", data, ["msrresnet.pth", "does not fit network_g (HERSR)", "not a HERSR checkpoint",
                                     "missing from the checkpoint: config_json, stem.0.weight", "unexpected key(s): conv_first."],
            edit=pretrain(foreign), extra_inputs=[ckpts],
        ),
        "checkpoint with other hyper-parameters": _train_case(
            root / "hyper", data, ["x2.pth", "upscale (checkpoint 2, options 4)",
                                   "reconstruct.weight (checkpoint [12, 8, 3, 3], model [48, 8, 3, 3])"],
            edit=pretrain(other_scale), extra_inputs=[ckpts],
        ),
        "checkpoint without params": _train_case(
            root / "wrapped", data, ["wrapped.pth", "has no 'params' entry", "'state_dict'", "path.param_key_"],
            edit=pretrain(wrapped), extra_inputs=[ckpts],
        ),
        "experiments path not writable": _train_case(
            root / "readonly", data, ["cannot write the experiment", "experiments' is a file, not a folder"],
        ),
    }
    # --force_yml is BasicSR's to apply; the checks then see its result
    cases["network broken by --force_yml"] = _train_case(
        root / "forced", data, ["network_g.upscale: 2 does not match the top-level scale: 4"])
    cases["network broken by --force_yml"].args += ["--force_yml", "network_g:upscale=2"]
    cases["--force_yml key the file lacks"] = _train_case(
        root / "force_key", data, ["--force_yml could not be applied (KeyError: 'nope')", "key:subkey=value"])
    cases["--force_yml key the file lacks"].args += ["--force_yml", "nope:upscale=2"]
    (root / "readonly" / "run").mkdir(parents=True)
    (root / "readonly" / "run" / "experiments").write_text("a file where the experiments folder should be\n")

    test_inputs = root / "test_cmd" / "inputs"
    test_inputs.mkdir(parents=True)
    test_yml = write_yaml(test_inputs / "test.yml", basicsr_test_options("bad", {"Set5": data["val"]}, dict(NET),
                                                                         good, model_type="HERSRModel"))
    (root / "test_cmd" / "run").mkdir(parents=True)
    (root / "test_cmd" / "run" / "results").write_text("a file where the results folder should be\n")
    cases["results path not writable"] = Case(
        ["test", "-opt", test_yml], ["cannot write the test results", "results' is a file, not a folder"],
        [test_inputs, ckpts, *data["dirs"]], root / "test_cmd" / "run", command="test",
    )
    return cases


SUBPROCESS_CASES = ["option file does not parse", "results path not writable"]  # one per command


def _run_in_process(case: Case) -> subprocess.CompletedProcess:
    """``basicsr <case.args>`` through :func:`basicsr_cli.main` in ``case.run``; status and output."""
    out, err = io.StringIO(), io.StringIO()
    case.run.mkdir(parents=True, exist_ok=True)
    with pytest.MonkeyPatch.context() as patch:  # main() sets sys.argv for BasicSR's parser and patches BasicSR
        patch.chdir(case.run)
        patch.setattr(sys, "argv", sys.argv)
        undo_basicsr_patches_with(patch)
        with contextlib.redirect_stdout(out), contextlib.redirect_stderr(err):
            code = basicsr_cli.main([str(a) for a in case.args])
    return subprocess.CompletedProcess(case.args, code, out.getvalue(), err.getvalue())


@pytest.fixture(scope="module")
def cli_results(tmp_path_factory):
    """Every ``CLI_CASES`` command in-process, ``SUBPROCESS_CASES`` also as real commands (meanwhile).

    ``{(case name, "in-process" | "subprocess"): (Case, CompletedProcess)}``.
    """
    root = tmp_path_factory.mktemp("bad_input")
    train = write_paired_dataset(root / "data" / "train", 4, size=32)
    val = write_paired_dataset(root / "data" / "val", 1, size=32, seed=1)
    data = {"train": train, "val": val, "dirs": [root / "data"]}
    cases = _build_cases(root, data)
    for case in cases.values():
        case.before = file_hashes(*case.inputs)
    running = {name: start_cli(cases[name].args, cases[name].run) for name in SUBPROCESS_CASES}
    results = {(name, "in-process"): (case, _run_in_process(case)) for name, case in cases.items()}
    for name, proc in running.items():
        results[name, "subprocess"] = (cases[name], finish_cli(proc, timeout=120))
    yield results
    shutil.rmtree(root, ignore_errors=True)


CLI_CASES = [
    "option file does not parse",
    "unknown network_g keyword",
    "unregistered network type",
    "unsupported upscale in YAML",
    "network upscale vs scale",
    "missing dataset folder",
    "GT without LQ partner",
    "GT/LQ size mismatch for the scale",
    "LMDB without meta_info.txt",
    "LMDB key missing",
    "truncated checkpoint",
    "checkpoint of another architecture",
    "checkpoint with other hyper-parameters",
    "checkpoint without params",
    "experiments path not writable",
    "results path not writable",
    "network broken by --force_yml",
    "--force_yml key the file lacks",
]


@pytest.mark.slow
@pytest.mark.parametrize(
    ("name", "how"), [(name, "in-process") for name in CLI_CASES] + [(name, "subprocess") for name in SUBPROCESS_CASES]
)
def test_basicsr_command_rejects_bad_input(cli_results, name, how):
    case, result = cli_results[name, how]
    err = result.stderr.strip()
    assert result.returncode == 2, f"exit {result.returncode}\n{result.stdout[-2000:]}\n{err[-3000:]}"
    assert "Traceback" not in result.stdout + result.stderr, err[-3000:]
    assert len(err.splitlines()) == 1 and err.startswith(f"basicsr {case.command}: error: "), err
    for part in case.parts:
        assert part in err, f"{part!r} not in {err!r}"
    assert file_hashes(*case.inputs) == case.before, "an input file was changed or deleted"
    made = case.run / ("experiments" if case.command == "train" else "results") / case.name
    assert not made.exists(), f"{made} was created for a run that could not start"
