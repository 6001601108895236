"""hersr_arch.cpu_inference: CPU-tuned kernels that keep the network file's numbers and keys."""

import copy
import re
from pathlib import Path

import pytest
import torch
from torch.profiler import profile

from hersr_arch.archs import hersr_arch as arch
from hersr_arch.bench.launch_count import forward_launches
from hersr_arch.cpu_inference import (
    CPUGDFN,
    CPUContextPath,
    CPUDualPathBlock,
    CPUGatedConv,
    CPUWindowAttention,
    OneDNNConv1x1,
    OneDNNLinear,
    OnesWeightLayerNorm,
    RowBands,
    prepare_cpu_inference,
)
from tests.networks import perturb_, tiny_hersr

pytestmark = pytest.mark.numerics


def prepared_pair(deploy: bool = True, **kwargs):
    plain = perturb_(tiny_hersr(**kwargs)).eval()
    if deploy:
        plain.switch_to_deploy()
    return plain, prepare_cpu_inference(copy.deepcopy(plain))


def kernels(fn) -> set[str]:
    with profile() as prof:
        fn()
    return {e.key for e in prof.events()}


def tuned_calls(monkeypatch) -> dict:
    """Counts the calls of the CPU-tuned expand -> gate."""
    from hersr_arch import cpu_inference

    calls = {"n": 0}
    tuned = cpu_inference._banded_gate

    def counting(*args):
        calls["n"] += 1
        return tuned(*args)

    monkeypatch.setattr(cpu_inference, "_banded_gate", counting)
    return calls


@pytest.mark.parametrize("deploy", [True, False], ids=["deployed", "train-graph"])
def test_prepared_model_has_the_same_keys_and_outputs(monkeypatch, deploy):
    """Deployed, and the train graph in eval (reparameterizable branches, projections and layer
    scales still apart, as the bench times it)."""
    plain, fast = prepared_pair(deploy, depths=(2, 2, 1, 1), upscale=2)
    assert plain.state_dict().keys() == fast.state_dict().keys()
    kinds = {type(m) for m in fast.modules()}
    assert {CPUGatedConv, CPUGDFN, CPUWindowAttention, CPUContextPath, CPUDualPathBlock, OneDNNConv1x1,
            OneDNNLinear} <= kinds
    x = torch.rand(2, 3, 29, 22, generator=torch.Generator().manual_seed(0))
    calls = tuned_calls(monkeypatch)
    n_gated = sum(isinstance(m, (CPUGatedConv, CPUGDFN)) for m in fast.modules())
    with torch.no_grad():
        expected = plain(x)
        torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
    assert calls["n"] == n_gated
    # Under autograd (training) and autocast the network file's forward runs: same numbers.
    torch.testing.assert_close(fast(x), expected, atol=1e-5, rtol=1e-5)
    with torch.no_grad(), torch.autocast("cpu", dtype=torch.bfloat16):
        fast(x)
    assert calls["n"] == n_gated
    assert prepare_cpu_inference(fast) is fast  # idempotent


def test_a_deployed_fusion_with_changed_residual_columns_keeps_the_numbers():
    """The CPU block adds ``x`` in place while the fusion's residual columns are the identity (as
    deploy writes them) and reads ``x`` through its 1x1 once they are not (a deployed model
    fine-tuned): both match the network file, and a weight change is seen."""
    plain, fast = prepared_pair(deploy=True, upscale=2)
    x = torch.rand(1, 3, 17, 23, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
        for model in (plain, fast):
            for block in (m for m in model.modules() if isinstance(m, arch.DualPathBlock)):
                block.fuse.weight[:, -block.fuse.out_channels :] *= 0.5
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
    assert not any(m._fuse_parts[1][2] for m in fast.modules() if isinstance(m, CPUDualPathBlock))


def test_affine_free_layer_norms_run_with_a_ones_weight():
    """Deployed LayerNorms have no affine (folded into the next linear map); prepared, they pass a
    weight of ones to ATen (its vectorised CPU kernel): the same numbers."""
    plain, fast = prepared_pair(deploy=True, upscale=2)
    norms = [m for m in fast.modules() if isinstance(m, torch.nn.LayerNorm)]
    assert norms and all(type(m) is OnesWeightLayerNorm for m in norms)
    x = torch.rand(1, 3, 19, 23, generator=torch.Generator().manual_seed(3))
    with torch.no_grad():
        torch.testing.assert_close(fast(x), plain(x), atol=1e-5, rtol=1e-5)
        tokens = torch.randn(2, 5, 7, norms[0].normalized_shape[0])
        assert "aten::native_layer_norm" in kernels(lambda: norms[0](tokens))
        torch.testing.assert_close(norms[0](tokens), torch.nn.functional.layer_norm(tokens, norms[0].normalized_shape))
    trained = prepare_cpu_inference(perturb_(tiny_hersr()).eval())
    assert not any(type(m) is OnesWeightLayerNorm for m in trained.modules())  # affine norms stay as they are


def test_onednn_1x1_and_token_linear_keep_the_numbers():
    """The 1x1 convs and the qkv projection run as ``aten::mkldnn_convolution`` on channels_last maps
    in CPU inference, with nn.Conv2d's / nn.Linear's numbers."""
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(24, 40, 1)
    linear = torch.nn.Linear(20, 60)
    x = torch.randn(2, 24, 9, 11).contiguous(memory_format=torch.channels_last)
    tokens = torch.randn(7, 64, 20)
    with torch.no_grad():
        expected, expected_tokens = conv(x), linear(tokens)
        conv.__class__, linear.__class__ = OneDNNConv1x1, OneDNNLinear
        assert "aten::mkldnn_convolution" in kernels(lambda: linear(tokens))
        torch.testing.assert_close(conv(x), expected, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(linear(tokens), expected_tokens, atol=1e-6, rtol=1e-6)
        torch.testing.assert_close(conv(x, slice(8, 16)), expected[:, 8:16], atol=1e-6, rtol=1e-6)
    assert conv(x).is_contiguous(memory_format=torch.channels_last)


def test_only_hersr_modules_are_switched():
    other = torch.nn.Conv2d(4, 4, 1)
    wrapper = torch.nn.ModuleDict({"other": other, "net": tiny_hersr()})
    prepare_cpu_inference(wrapper)
    assert type(other) is torch.nn.Conv2d and isinstance(wrapper["net"].stem[0], torch.nn.Conv2d)
    assert any(isinstance(m, OneDNNConv1x1) for m in wrapper["net"].modules())


def test_row_bands_keep_the_numbers(monkeypatch):
    """Large maps run expand -> gate and window attention in row bands: the same output as
    whole maps (fp32: to oneDNN's summation order), shifted and plain windows, a batch of two."""
    plain, fast = prepared_pair(depths=(2, 2, 1, 1), upscale=2)
    x = torch.rand(2, 3, 29, 22, generator=torch.Generator().manual_seed(1))
    calls = {"attend": 0}
    attend = arch.WindowAttention.attend_windows

    def counting(self, *args):
        calls["attend"] += 1
        return attend(self, *args)

    monkeypatch.setattr(arch.WindowAttention, "attend_windows", counting)
    n_attend = sum(isinstance(m, arch.WindowAttention) for m in fast.modules())
    with torch.no_grad():
        whole = fast(x)
        assert calls["attend"] == n_attend
        monkeypatch.setattr(RowBands, "band_above_bytes", 0)
        monkeypatch.setattr(RowBands, "band_bytes", 3 * 22 * 8 * 4)  # 3 rows of the widest expanded map
        calls["attend"] = 0
        banded = fast(x)
    assert calls["attend"] > 2 * n_attend
    torch.testing.assert_close(banded, whole, atol=1e-5, rtol=0)
    with torch.no_grad():
        torch.testing.assert_close(banded, plain(x), atol=1e-5, rtol=1e-5)


def test_counters_see_the_network_files_graph(monkeypatch):
    plain, fast = prepared_pair()
    monkeypatch.setattr(RowBands, "band_above_bytes", 0)
    monkeypatch.setattr(RowBands, "band_bytes", 1)
    assert forward_launches(fast, (24, 20)).counts == forward_launches(plain, (24, 20)).counts


def test_the_network_file_has_no_cpu_kernels_or_switches():
    """CPU-only code lives in hersr_arch/cpu_inference.py: the arch file, copied alone, is the design."""
    source = Path(arch.__file__).read_text()
    for needle in ("mkldnn", "onednn", "row band", "band_"):
        assert needle not in source.lower(), needle
    assert not re.search(r"^\s*global\s", source, re.MULTILINE)  # no module-level switches


def test_basicsr_model_on_the_cpu_runs_the_cpu_kernels():
    """HERSRModel switches its networks once, when built on the CPU (validation and `basicsr test`)."""
    from hersr_arch.models.hersr_model import HERSRModel
    from tests.networks import TINY

    opt = {"name": "cpu_kernels", "model_type": "HERSRModel", "scale": 2, "num_gpu": 0, "is_train": False,
           "dist": False, "network_g": {"type": "HERSR", "upscale": 2, **TINY}, "path": {"pretrain_network_g": None}}
    model = HERSRModel(opt)
    assert any(isinstance(m, CPUGatedConv) for m in model.net_g.modules())
    model.lq = torch.rand(1, 3, 12, 10)
    model.test()
    assert model.output.shape == (1, 3, 24, 20)
