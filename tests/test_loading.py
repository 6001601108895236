"""Rebuilding HERSR from weights alone: the saved config read back (or inferred from the weights of
files without one), every checkpoint form read."""

import pytest
import torch

from hersr_arch.archs.hersr_arch import HERSR, hersr_m, hersr_s
from hersr_arch.loading import (
    CheckpointError,
    build_from_state_dict,
    infer_config,
    load_hersr,
    read_config,
    read_state_dict,
)
from tests.networks import perturb_, tiny_hersr
from tests.test_ablations import GRID

CONFIGS = [dict(upscale=s, **flags) for flags in GRID for s in (1, 3)][::3] + [
    dict(upscale=2, moe_routing="token", moe_top_k=2, train_size=32, noise_mode="fixed"),
    dict(upscale=4, num_in_ch=1, num_out_ch=3, ffn_expansion=2.0, plk_ratio=0.5),
    dict(upscale=4, num_in_ch=4, num_out_ch=4, dims=(12, 20, 28, 36), num_heads=(2, 2, 2, 4), plk_kernel=9),
]


def outputs_match(a: HERSR, b: HERSR, channels: int) -> bool:
    x = torch.rand(1, channels, 13, 11)
    with torch.no_grad():
        return torch.equal(a.eval()(x), b.eval()(x))


# What tensor shapes and key names cannot show: a file without a config record gets the defaults
# (and as many output channels as input channels, hence the scale from the reconstruction conv).
NOT_IN_THE_WEIGHTS = ("num_out_ch", "moe_routing", "moe_top_k", "moe_balance_weight", "moe_z_weight",
                      "noise_strength", "train_size", "freq_split", "noise_mode", "upscale")  # fmt: skip


@pytest.mark.parametrize("config", CONFIGS, ids=lambda c: ",".join(f"{k}={v}" for k, v in c.items()))
@pytest.mark.parametrize("deploy", [False, True])
def test_config_recovered_from_weights(config, deploy):
    model = perturb_(tiny_hersr(**config)).eval()
    if deploy:
        model.switch_to_deploy()
    weights = model.state_dict()
    assert read_config(weights) == model.config  # the saved record, exactly
    rebuilt = build_from_state_dict(weights)
    assert rebuilt.config == model.config and rebuilt.deploy == deploy
    assert outputs_match(model, rebuilt, model.num_in_ch)

    # Without the record (a tool that dropped buffers): everything the weights show is inferred.
    bare = {k: v for k, v in weights.items() if k != "config_json"}
    inferred = infer_config(bare)
    known = {field: getattr(model.config, field) for field in NOT_IN_THE_WEIGHTS}
    if not model.config.use_context:  # no attention in the blocks: heads and window of the blocks unseen
        known.update(num_heads=model.config.num_heads, window_size=model.config.window_size)
    assert inferred.replace(**known) == model.config
    assert read_config(bare) == inferred


@pytest.mark.parametrize("preset", [hersr_s, hersr_m])
def test_presets_round_trip(preset):
    model = preset(upscale=2).eval()
    assert outputs_match(model, build_from_state_dict(model.state_dict()), 3)


def test_checkpoint_forms(tmp_path):
    model = perturb_(tiny_hersr(upscale=2)).eval()
    sd = model.state_dict()
    other = {k: v + 1 if v.is_floating_point() else v for k, v in sd.items()}
    torch.save({"params": other, "params_ema": sd}, tmp_path / "basicsr.pth")
    torch.save({"module." + k: v for k, v in sd.items()}, tmp_path / "ddp.pth")
    torch.save({"state_dict": sd}, tmp_path / "wrapped.pth")
    torch.save({"params": sd}, tmp_path / "params_only.pth")
    from safetensors.torch import save_file

    save_file({k: v.contiguous() for k, v in sd.items()}, tmp_path / "w.safetensors")
    for name in ("basicsr.pth", "ddp.pth", "wrapped.pth", "params_only.pth", "w.safetensors"):
        assert outputs_match(model, load_hersr(tmp_path / name), 3), name


def test_unreadable_and_foreign_checkpoints_are_clear_errors(tmp_path):
    model = tiny_hersr()
    torch.save({"params": model.state_dict()}, tmp_path / "good.pth")
    data = (tmp_path / "good.pth").read_bytes()
    (tmp_path / "cut.pth").write_bytes(data[: len(data) // 2])
    with pytest.raises(CheckpointError, match="truncated, damaged"):
        read_state_dict(tmp_path / "cut.pth")
    torch.save({"params": torch.nn.Conv2d(3, 3, 3).state_dict()}, tmp_path / "conv.pth")
    with pytest.raises(CheckpointError, match="not a HERSR checkpoint"):
        load_hersr(tmp_path / "conv.pth")
    with pytest.raises(CheckpointError, match="does not exist"):
        load_hersr(tmp_path / "missing.pth")


def test_loading_into_a_model_with_other_structure_names_the_mismatch():
    weights = tiny_hersr(upscale=2, moe_routing="token").state_dict()
    with pytest.raises(ValueError, match="moe_routing: checkpoint 'token', model 'image'"):
        tiny_hersr(upscale=2, moe_routing="image").load_state_dict(weights)
    # Behavioural settings may differ (fine-tuning on other patches): the model keeps its own.
    model = tiny_hersr(upscale=2, moe_routing="token", train_size=48)
    model.load_state_dict(weights)
    assert model.config.train_size == 48 and read_config(model.state_dict()).train_size == 48


def test_weights_of_the_earlier_hersr_s_load_and_name_their_depths():
    """``hersr_s`` lost its finest decoder block on 2026-12-03; weights trained before still load."""
    earlier = perturb_(hersr_s(upscale=2, dec_depths=(1, 2, 1, 0))).eval()
    weights = earlier.state_dict()
    assert read_config(weights).dec_depths == (1, 2, 1, 0)
    assert outputs_match(earlier, build_from_state_dict(weights), 3)
    with pytest.raises(ValueError, match=r"has dec_depths=\(1, 2, 1, 0\), this model dec_depths=\(0, 2, 1, 0\)"):
        hersr_s(upscale=2).load_state_dict(weights)
    hersr_s(upscale=2).load_state_dict(weights, strict=False)  # partial loading stays possible
    with pytest.raises(RuntimeError, match="Unexpected key.*module.stem"):  # torch names the stray prefix
        earlier.load_state_dict({"module." + k: v for k, v in weights.items()})
    rebuilt = hersr_s(upscale=2, dec_depths=(1, 2, 1, 0))
    rebuilt.load_state_dict(weights)
    assert outputs_match(earlier, rebuilt, 3)
