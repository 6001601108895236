"""switch_to_deploy(): merged branches give the same outputs, fewer parameters, loadable weights."""

import copy

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR, PartialLargeKernelConv, hersr_m, hersr_s
from tests.networks import TINY, perturb_, tiny_hersr, train_steps

pytestmark = pytest.mark.numerics


def _max_abs_diff_ok(a, b):
    return (a - b).abs().max() <= 1e-5 * max(1.0, a.abs().max().item())


@pytest.mark.parametrize("scale", [1, 4])
@pytest.mark.parametrize("prepare", ["random", "trained"])
def test_deploy_keeps_eval_outputs(scale, prepare):
    model = tiny_hersr(upscale=scale)
    model = perturb_(model) if prepare == "random" else train_steps(model, steps=3)
    model.eval()
    x = torch.rand(2, 3, 23, 17)
    with torch.no_grad():
        before = model(x)
        params_before = sum(p.numel() for p in model.parameters())
        model.switch_to_deploy()
        after = model(x)
    assert _max_abs_diff_ok(before, after), (before - after).abs().max()
    assert sum(p.numel() for p in model.parameters()) < params_before
    assert model.deploy
    assert all(m.small is None for m in model.modules() if isinstance(m, PartialLargeKernelConv))


def test_reparameterized_kernel_is_exact():
    torch.manual_seed(0)
    conv = PartialLargeKernelConv(16, kernel_size=7)
    for p in conv.parameters():
        torch.nn.init.normal_(p, std=0.2)
    x = torch.randn(2, 16, 11, 9)
    with torch.no_grad():
        y = conv(x)
        conv.reparameterize()
        assert torch.allclose(conv(x), y, atol=1e-5)
    assert torch.equal(conv(x)[:, 4:], x[:, 4:])  # untouched channels pass through, not aliased


def test_deployed_state_dict_loads_into_deploy_model():
    model = perturb_(tiny_hersr(upscale=2)).eval().switch_to_deploy()
    built = HERSR(**TINY, upscale=2, deploy=True).eval()
    built.load_state_dict(model.state_dict(), strict=True)
    x = torch.rand(1, 3, 12, 12)
    with torch.no_grad():
        assert torch.equal(built(x), model(x))
    with pytest.raises(RuntimeError):
        tiny_hersr(upscale=2).load_state_dict(model.state_dict(), strict=True)


@pytest.mark.parametrize("preset, budget", [(hersr_s, 0.6e6), (hersr_m, 8e6)])
def test_preset_parameter_budgets_after_deploy(preset, budget):
    model = preset().switch_to_deploy()
    assert sum(p.numel() for p in model.parameters()) <= budget


def test_deploy_folds_the_closing_projections_and_loads_weights_deployed_before(monkeypatch):
    """Deploy folds each block's closing 1x1s (``GatedConv.project``, ``GDFN.project``) into its fusion
    1x1, and the attention expert's ``out`` into its ``proj``. Deployed weights saved before those folds
    (the 1x1s still separate) are folded by the loading migration, for a model built directly or
    rebuilt from the weights: same outputs, caller's dict untouched."""
    from hersr_arch.archs import hersr_arch as arch
    from hersr_arch.loading import build_from_state_dict, migrate_state_dict, read_config

    trained = train_steps(tiny_hersr(upscale=2), steps=3).eval()
    x = torch.rand(1, 3, 14, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = trained(x)

    def scale_fold_only(block):  # what deploy did before: the layer scale alone went into ``fuse``
        block.fuse.weight *= block.layer_scale.view(-1, 1, 1, 1)
        block.fuse.bias *= block.layer_scale.view(-1)
        block.layer_scale = None

    def norm_fold_only(expert):  # and the attention expert kept its ``out``
        expert.norm = arch.fold_layernorm_(expert.norm, expert.attn.qkv.weight, expert.attn.qkv.bias)

    with monkeypatch.context() as patch:
        patch.setattr(arch.DualPathBlock, "reparameterize", torch.no_grad()(scale_fold_only))
        patch.setattr(arch.AttentionExpert, "reparameterize", torch.no_grad()(norm_fold_only))
        earlier = copy.deepcopy(trained).switch_to_deploy().state_dict()
    folded = ("local.gated.project.weight", "context.ffn.project.weight", "moe.experts.1.out.weight")
    assert all(any(k.endswith(name) for k in earlier) for name in folded)

    deployed = copy.deepcopy(trained).switch_to_deploy()
    assert not any(k.endswith(name) for k in deployed.state_dict() for name in folded)
    for kind in (arch.GatedConv, arch.GDFN):
        assert all(m.project is None for m in deployed.modules() if isinstance(m, kind))
        assert all(m.project is not None for m in trained.modules() if isinstance(m, kind))

    keys_before = set(earlier)
    built = HERSR(**TINY, upscale=2, deploy=True).eval()
    built.load_state_dict(migrate_state_dict(earlier), strict=True)
    assert set(earlier) == keys_before
    assert read_config(earlier).deploy
    rebuilt = build_from_state_dict(earlier).eval()
    with torch.no_grad():
        for model in (deployed, built, rebuilt):
            torch.testing.assert_close(model(x), reference, atol=1e-5, rtol=1e-5)
    for key, value in built.state_dict().items():
        torch.testing.assert_close(value, deployed.state_dict()[key], atol=1e-6, rtol=1e-5)

    broken = {k: v for k, v in earlier.items() if not k.endswith("local.gated.project.bias")}
    with pytest.raises(RuntimeError, match="local.gated.project.weight"):  # torch names the stray key
        HERSR(**TINY, upscale=2, deploy=True).load_state_dict(migrate_state_dict(broken), strict=True)


def test_deploy_folds_the_residual_into_identity_columns_and_migrates_files_without_them(monkeypatch):
    """A deployed block's fusion 1x1 reads the block's input through identity columns (its output is
    the block's, no residual add). Deployed weights written before (the fusion without those
    columns) gain them in the loading migration: same outputs, and a current file is left alone."""
    from hersr_arch.archs import hersr_arch as arch
    from hersr_arch.loading import build_from_state_dict, migrate_state_dict

    trained = train_steps(tiny_hersr(upscale=2), steps=3).eval()
    x = torch.rand(1, 3, 14, 11, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        reference = trained(x)
    deployed = copy.deepcopy(trained).switch_to_deploy()
    for block in (m for m in deployed.modules() if isinstance(m, arch.DualPathBlock)):
        c = block.fuse.out_channels
        assert torch.equal(block.fuse.weight[:, -c:, 0, 0], torch.eye(c))
    with monkeypatch.context() as patch:
        patch.setattr(arch, "with_residual_columns", lambda weight: weight)  # what deploy wrote before
        patch.setattr(arch.DualPathBlock, "forward", lambda self, x, hint=None: x + self.fuse(
            torch.cat(self.features(x if hint is None else x + hint, x), 1)))  # fmt: skip
        earlier_model = copy.deepcopy(trained).switch_to_deploy()
        with torch.no_grad():
            torch.testing.assert_close(earlier_model(x), reference, atol=1e-5, rtol=1e-5)
        earlier = earlier_model.state_dict()
    assert all(earlier[k].shape[1] + earlier[k].shape[0] == v.shape[1]
               for k, v in deployed.state_dict().items() if k.endswith(".fuse.weight"))  # fmt: skip
    migrated = migrate_state_dict(earlier)
    for key, value in deployed.state_dict().items():
        torch.testing.assert_close(migrated[key], value, atol=0, rtol=0)
    current = migrate_state_dict(deployed.state_dict())
    assert all(torch.equal(current[k], v) for k, v in deployed.state_dict().items())
    with torch.no_grad():
        torch.testing.assert_close(build_from_state_dict(earlier).eval()(x), reference, atol=1e-5, rtol=1e-5)
    with pytest.raises(ValueError, match=r"before 2026-12-05.*hersr migrate"):  # the arch file alone: one sentence
        HERSR(**TINY, upscale=2, deploy=True).load_state_dict(earlier)
