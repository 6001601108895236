"""``hersr export``: deployed weights that rebuild themselves, ONNX that matches PyTorch at any size."""

import subprocess
import sys

import numpy as np
import pytest
import torch

import hersr_arch.archs.hersr_arch as hersr_arch_module
from hersr_arch.archs.hersr_arch import ContextPool, FrequencyExpert, WindowAttention, hersr_s
from hersr_arch.cli.hersr_cli import main
from hersr_arch.loading import load_hersr, read_state_dict
from hersr_arch.tools import export as ex
from hersr_arch.tools.export import ExportError, export_deploy, export_onnx, trace_size
from tests.helpers import cli_env
from tests.networks import perturb_, tiny_hersr

ort = pytest.importorskip("onnxruntime")


def save(model, path):
    torch.save({"params_ema": model.state_dict()}, path)
    return path


def run_onnx(path, x: torch.Tensor) -> np.ndarray:
    options = ort.SessionOptions()  # default graph optimisations
    options.log_severity_level = 3
    session = ort.InferenceSession(str(path), options, providers=["CPUExecutionProvider"])
    return session.run(None, {"input": x.numpy()})[0]


@pytest.mark.numerics
@pytest.mark.parametrize("suffix", [".pth", ".safetensors"])
def test_deploy_export_rebuilds_itself_with_identical_outputs(tmp_path, suffix):
    model = perturb_(tiny_hersr(upscale=3, moe_routing="token", train_size=24)).eval()
    src = save(model, tmp_path / "train.pth")
    result = export_deploy(src, tmp_path / f"deployed{suffix}")
    assert result["params_after"] < result["params_before"]
    if suffix == ".pth":
        assert set(torch.load(tmp_path / "deployed.pth", weights_only=True)) == {"params"}  # BasicSR layout
    rebuilt = load_hersr(tmp_path / f"deployed{suffix}")  # from the weights alone: the config saved with them
    assert rebuilt.deploy and rebuilt.upscale == 3 and rebuilt.moe.routing == "token"
    assert not any(k.endswith("plk.small.weight") for k in read_state_dict(tmp_path / f"deployed{suffix}"))
    x = torch.rand(2, 3, 19, 23)
    with torch.no_grad():
        assert (rebuilt(x) - model(x)).abs().max() <= 1e-5
    # Exporting deployed weights again is a no-op round trip.
    again = export_deploy(tmp_path / f"deployed{suffix}", tmp_path / f"again{suffix}")
    assert again["params_after"] == again["params_before"] == result["params_after"]


@pytest.mark.numerics
def test_fft_traceable_form_equals_torch_fft():
    expert = FrequencyExpert(8)
    torch.nn.init.normal_(expert.out.weight, std=0.2)
    for h, w in [(1, 1), (1, 6), (2, 1), (5, 3), (7, 8), (16, 9), (12, 12)]:
        x = torch.randn(2, 8, h, w)
        with torch.no_grad():
            assert (expert.forward_traceable(x) - expert(x)).abs().max() <= 1e-5, (h, w)


@pytest.mark.numerics
def test_context_pool_traceable_form_equals_both_regimes():
    pool = ContextPool(4).eval()
    for h, w in [(1, 1), (3, 4), (4, 4), (5, 3), (9, 12)]:
        x = torch.randn(2, 6, h, w)
        expected = pool(x)
        got = pool.forward_traceable(x)
        assert got.shape == (2, 6, h, w)
        assert (got - expected.expand_as(got)).abs().max() <= 1e-6, (h, w)


@pytest.mark.parametrize("config", [dict(window_size=4), dict(window_size=6, dims=(12, 12, 24, 24)),
                                    dict(window_size=8), dict(window_size=2, freq_split="none")])  # fmt: skip
def test_trace_size_puts_every_pad_in_the_graph(config):
    model = tiny_hersr(**config)
    h, w = trace_size(model)
    m, n = model.size_multiple, model.num_stages
    for size in (h, w):
        padded = -(-size // m) * m
        assert size % m and padded // 2 ** (n - 1) >= 2
        for i in range(n):
            ws = config["window_size"]
            if (m // 2**i) % ws:  # some input size needs a window pad at this scale
                assert (padded // 2**i) % ws, (size, i)
    assert h != w


# One export per family of components; together they cover every layer and branch HERSR has.
CONFIGS = {
    # haar, shifted windows, conv/attn/FFT experts, image routing, texture head
    "full": lambda: perturb_(tiny_hersr(upscale=4)),
    "dysample_token_prompt": lambda: perturb_(tiny_hersr(
        upscale=3, upsampler="dysample", moe_routing="token", moe_top_k=2, use_prompt=True, freq_split="avgpool")),
    "x1_gray": lambda: perturb_(tiny_hersr(upscale=1, num_in_ch=1, num_out_ch=1, use_moe=False)),
    "preset_hersr_s": lambda: perturb_(hersr_s(upscale=2), std=0.02),  # window 8, kernel 13, train_size 64
}  # fmt: skip


@pytest.mark.parametrize("name", [pytest.param(n, marks=pytest.mark.numerics) if n == "full" else n for n in CONFIGS])
def test_onnx_matches_pytorch_at_other_sizes(tmp_path, name):
    torch.manual_seed(0)
    model = CONFIGS[name]().eval()
    report = export_onnx(save(model, tmp_path / "w.pth"), tmp_path / "m.onnx")
    assert [s[2:] for s, _ in report.checks][:2] == [report.trace_size, (37, 29)]
    assert all(diff <= ex.TOLERANCE["fp32"] for _, diff in report.checks)
    # Independently of the tool's own checks: sizes and batches it never saw, against the PyTorch
    # model with the noise off (the ONNX graph has no noise), including both context-pool regimes.
    reference = load_hersr(tmp_path / "w.pth", noise_strength=0.0)
    c = model.num_in_ch
    for shape in [(3, c, 45, 19), (1, c, 16, 16), (1, c, 1, 1), (1, c, 80, 16)]:
        x = torch.rand(*shape)
        with torch.no_grad():
            expected = reference(x).numpy()
        got = run_onnx(tmp_path / "m.onnx", x)
        assert got.shape == expected.shape
        assert np.abs(got - expected).max() <= 1e-4, shape


@pytest.mark.numerics
def test_onnx_fp16(tmp_path):
    model = perturb_(tiny_hersr(upscale=2, upsampler="dysample"), std=0.05).eval()
    report = export_onnx(save(model, tmp_path / "w.pth"), tmp_path / "m16.onnx", fp16=True)
    assert report.tolerance == ex.TOLERANCE["fp16"] and max(d for _, d in report.checks) <= 2e-2
    x = torch.rand(1, 3, 21, 34)
    out = run_onnx(tmp_path / "m16.onnx", x.half())
    assert out.dtype == np.float16 and out.shape == (1, 3, 42, 68)


def test_onnx_mismatch_fails_loudly_and_writes_nothing(tmp_path, monkeypatch):
    """With the window index maps built from Python ints of the traced size, the graph bakes that size
    in (the SwinIR/HAT failure: reshapes fixed at trace time): the check at the second size catches it."""
    model = perturb_(tiny_hersr(upscale=2)).eval()
    monkeypatch.setattr(ex, "trace_size", lambda model: (16, 16))
    for name in ("window_gather_index", "window_scatter_index"):
        index = getattr(hersr_arch_module, name)
        monkeypatch.setattr(hersr_arch_module, name, lambda h, w, *rest, index=index: index(int(h), int(w), *rest))
    with pytest.raises(ExportError, match=r"onnxruntime (failed on|differs from PyTorch by .* on) an input of shape"):
        export_onnx(save(model, tmp_path / "w.pth"), tmp_path / "m.onnx")
    assert sorted(p.name for p in tmp_path.iterdir()) == ["w.pth"]  # not even a temporary file


def test_onnx_refusals_are_clear(tmp_path, monkeypatch):
    plain = save(tiny_hersr(), tmp_path / "plain.pth")
    dysample = save(tiny_hersr(upsampler="dysample"), tmp_path / "dys.pth")
    with pytest.raises(ExportError, match="attention .* needs opset >= 14"):
        export_onnx(plain, tmp_path / "a.onnx", opset=13)
    with pytest.raises(ExportError, match="DySample .* needs GridSample, opset >= 16"):
        export_onnx(dysample, tmp_path / "b.onnx", opset=15)
    monkeypatch.setitem(sys.modules, "onnxruntime", None)  # as if the extra were not installed
    with pytest.raises(ExportError, match=r"onnxruntime is not installed; pip install 'hersr\[export\]'"):
        export_onnx(plain, tmp_path / "c.onnx")
    monkeypatch.setitem(sys.modules, "safetensors", None)
    with pytest.raises(ExportError, match=r"safetensors is not installed"):
        export_deploy(plain, tmp_path / "d.safetensors")
    assert not list(tmp_path.glob("*.onnx")) and not list(tmp_path.glob("*.safetensors"))


def test_export_command(tmp_path, capsys):
    model = perturb_(tiny_hersr(upscale=2, window_size=8, dims=(8, 16, 16, 16))).eval()
    src = save(model, tmp_path / "net_g.pth")
    cmd = [sys.executable, "-m", "hersr_arch.cli.hersr_cli", "export", "--model", str(src)]
    proc = subprocess.run(cmd + ["--deploy", str(tmp_path / "d.safetensors"), "--onnx", str(tmp_path / "m.onnx")],
                          capture_output=True, text=True, env=cli_env(), timeout=300)  # fmt: skip
    assert proc.returncode == 0, proc.stderr
    assert "onnxruntime matches PyTorch at 4 sizes" in proc.stderr and "texture noise is off" in proc.stderr
    assert load_hersr(tmp_path / "d.safetensors").deploy
    assert any(isinstance(m, WindowAttention) and m.window_size == 8 for m in load_hersr(src).modules())
    assert main(["export", "--model", str(src)]) == 1
    assert "hersr export: error: nothing to do" in capsys.readouterr().err
