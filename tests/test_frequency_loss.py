"""FFTLoss: L1 distance between orthonormal rfft2 spectra, registered in BasicSR."""

import pytest
import torch
from basicsr.losses import build_loss
from basicsr.utils.registry import LOSS_REGISTRY

import hersr_arch.losses.frequency_loss  # noqa: F401  (registers FFTLoss)
from hersr_arch.losses.frequency_loss import FFTLoss


def _pair(seed=0, shape=(2, 3, 17, 12)):
    gen = torch.Generator().manual_seed(seed)
    return torch.rand(shape, generator=gen), torch.rand(shape, generator=gen)


def test_zero_for_equal_positive_otherwise():
    pred, target = _pair()
    loss = FFTLoss()
    assert loss(target, target).item() == 0
    assert loss(pred, target).item() > 0


def test_matches_definition_and_reductions():
    pred, target = _pair()
    diff = torch.view_as_real(
        torch.fft.rfft2(pred, norm="ortho") - torch.fft.rfft2(target, norm="ortho")
    ).abs()
    assert torch.allclose(FFTLoss(loss_weight=0.5)(pred, target), 0.5 * diff.mean())
    assert torch.allclose(FFTLoss(reduction="sum")(pred, target), diff.sum())
    assert FFTLoss(reduction="none")(pred, target).shape == (2, 3, 17, 7, 2)


def test_gradient_flows():
    pred, target = _pair()
    pred.requires_grad_(True)
    FFTLoss()(pred, target).backward()
    assert pred.grad is not None and pred.grad.abs().sum() > 0 and torch.isfinite(pred.grad).all()


def test_float32_under_bf16_autocast():
    pred, target = _pair()
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = FFTLoss()(pred.bfloat16(), target)
    assert loss.dtype == torch.float32 and torch.isfinite(loss)


def test_bad_reduction():
    with pytest.raises(ValueError, match="Unsupported reduction mode: 'avg'"):
        FFTLoss(reduction="avg")


def test_built_by_basicsr():
    assert "FFTLoss" in LOSS_REGISTRY
    loss = build_loss({"type": "FFTLoss", "loss_weight": 0.1})
    assert isinstance(loss, FFTLoss) and loss.loss_weight == 0.1 and loss.reduction == "mean"
