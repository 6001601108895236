"""spandrel (chaiNNer) loads HERSR checkpoints as the project writes them, with the real ModelLoader."""

import pytest
import torch

spandrel = pytest.importorskip("spandrel")

from hersr_arch.archs.hersr_arch import HERSR, hersr_l, hersr_m, hersr_s  # noqa: E402
from hersr_arch.bench.harness import spandrel_peers  # noqa: E402
from hersr_arch.spandrel_support import ARCH_ID, detect, preset_name, register  # noqa: E402
from hersr_arch.tools.export import export_deploy  # noqa: E402
from tests.networks import FORMAT1, perturb_, tiny_hersr, train_steps  # noqa: E402

VARIANTS = {
    "x4": dict(upscale=4),
    "x1-restoration": dict(upscale=1),
    "x3-avgpool-token-top1": dict(upscale=3, freq_split="avgpool", moe_routing="token", moe_top_k=1),
    "x2-dysample-prompt-msg": dict(upscale=2, upsampler="dysample", use_prompt=True, num_prompts=3,
                                   msg_outputs=True),
    "x2-gray-no-texture-two-experts": dict(upscale=2, num_in_ch=1, num_out_ch=1, use_texture_head=False,
                                           moe_experts=("conv", "fft"), window_size=8),
    "x2-local-only-3-scales": dict(upscale=2, dims=(8, 12, 16), depths=(1, 1, 2), dec_depths=(2, 1, 0),
                                   num_heads=(2, 2, 4), use_context=False, noise_mode="fixed"),
}  # fmt: skip


@pytest.fixture(scope="module")
def loader():
    register()
    return spandrel.ModelLoader()


def trained(**kwargs) -> HERSR:
    return train_steps(tiny_hersr(**kwargs), steps=2).eval()


def save_basicsr(model: HERSR, path) -> None:
    """The layout BasicSR (and ``basicsr train`` with EMA) writes: ``params`` and ``params_ema``."""
    state = {k: v.clone() for k, v in model.state_dict().items()}
    torch.save({"params": state, "params_ema": state}, path)


def image(channels: int = 3, h: int = 21, w: int = 26) -> torch.Tensor:
    return torch.rand(1, channels, h, w, generator=torch.Generator().manual_seed(1))


@pytest.mark.parametrize("variant", VARIANTS, ids=list(VARIANTS))
def test_loader_detects_basicsr_checkpoint_and_reproduces_outputs(variant, loader, tmp_path):
    model = trained(**VARIANTS[variant])
    path = tmp_path / "net_g_ema.pth"
    save_basicsr(model, path)

    desc = loader.load_from_file(path)
    assert isinstance(desc, spandrel.ImageModelDescriptor)
    assert desc.architecture.id == ARCH_ID
    assert isinstance(desc.model, HERSR)
    assert desc.scale == model.upscale
    assert desc.purpose == ("Restoration" if model.upscale == 1 else "SR")
    assert (desc.input_channels, desc.output_channels) == (model.num_in_ch, model.num_out_ch)
    assert desc.size_requirements.none and desc.tiling == spandrel.ModelTiling.SUPPORTED
    assert desc.model.config == model.config

    x = image(model.num_in_ch)
    with torch.no_grad():
        expected = model(x).clamp(0, 1)
    out = desc(x)
    assert out.shape == expected.shape
    torch.testing.assert_close(out, expected, atol=1e-6, rtol=0)


def test_deployed_safetensors_round_trip(loader, tmp_path):
    pytest.importorskip("safetensors")
    model = trained(upscale=2)
    source = tmp_path / "train.pth"
    save_basicsr(model, source)
    deployed = tmp_path / "deployed.safetensors"
    export_deploy(source, deployed)

    desc = loader.load_from_file(deployed)
    assert desc.architecture.id == ARCH_ID and desc.model.deploy and "deployed" in desc.tags
    x = image(3, 19, 33)
    with torch.no_grad():
        expected = model(x).clamp(0, 1)
    torch.testing.assert_close(desc(x), expected, atol=1e-5, rtol=0)

    # Round trip: the descriptor's weights, saved again, load to the same model.
    again = tmp_path / "again.pth"
    torch.save(desc.model.state_dict(), again)
    desc2 = loader.load_from_file(again)
    assert desc2.model.deploy and desc2.scale == 2
    torch.testing.assert_close(desc2(x), desc(x), atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16], ids=["half", "bfloat16"])
def test_claimed_reduced_precisions_run_and_match(dtype, loader, tmp_path):
    model = trained(upscale=2)
    path = tmp_path / "net.pth"
    save_basicsr(model, path)
    desc = loader.load_from_file(path)
    assert desc.supports_half and desc.supports_bfloat16
    x = image(3, 40, 36)  # larger than train_size: the local (TLC) context path runs too
    reference = desc(x)
    desc.to(dtype)
    assert desc.dtype == dtype
    out = desc(x.to(dtype))
    assert out.dtype == dtype and torch.isfinite(out).all()
    assert (out.float() - reference).abs().max().item() < 2e-2


def test_presets_are_named():
    for name, build in (("hersr_s", hersr_s), ("hersr_m", hersr_m), ("hersr_l", hersr_l)):
        assert preset_name(build(upscale=2).config) == name
    assert preset_name(tiny_hersr().config) is None


def test_hersr_s_tags_and_descriptor_from_state_dict(loader):
    model = perturb_(hersr_s(upscale=4)).eval()
    desc = loader.load_from_state_dict(model.state_dict())
    assert desc.tags[:2] == ["hersr_s", "32nf"]
    x = image(3, 9, 13)
    with torch.no_grad():
        torch.testing.assert_close(desc(x), model(x).clamp(0, 1), atol=1e-5, rtol=0)


@pytest.mark.parametrize("form", ["train", "deployed", "deployed_before_project_fold"])
def test_weights_written_before_the_config_record_load(form, loader):
    older = torch.load(FORMAT1, weights_only=True)
    desc = loader.load_from_state_dict(older[form])
    assert desc.scale == 2 and desc.model.deploy == (form != "train")
    assert (desc.model.config.moe_routing, desc.model.config.train_size) == ("token", 24)
    with torch.no_grad():
        torch.testing.assert_close(desc.model(older["input"]), older["output"], atol=1e-5, rtol=0)


def hersr_state_dicts() -> dict[str, dict]:
    dicts = {name: trained(**kwargs).state_dict() for name, kwargs in VARIANTS.items()}
    dicts["hersr_s-deployed"] = hersr_s(upscale=4).eval().switch_to_deploy().state_dict()
    no_record = dict(dicts["x4"])
    del no_record["config_json"]  # weights saved by a tool that dropped buffers
    dicts["x4-no-record"] = no_record
    older = torch.load(FORMAT1, weights_only=True)  # written by HERSR before the config record
    dicts.update({f"format1-{form}": older[form] for form in ("train", "deployed", "deployed_before_project_fold")})
    return dicts


def test_no_bundled_spandrel_architecture_claims_hersr_weights():
    """HERSR is detected last (appended to the registry): no other architecture may claim its weights."""
    registry = spandrel.MAIN_REGISTRY
    for name, sd in hersr_state_dicts().items():
        assert detect(sd), name
        claimed = [support.architecture.id for support in registry.architectures("detection")
                   if support.architecture.id != ARCH_ID and support.detect(sd)]  # fmt: skip
        assert claimed == [], f"{name} is claimed by {claimed}"


def test_hersr_detection_rejects_other_architectures():
    entries = spandrel_peers(scale=2)
    assert len(entries) >= 6
    for entry in entries:
        sd = entry.build().state_dict()
        assert not detect(sd), entry.name
        assert spandrel.MAIN_REGISTRY.load(sd).architecture.id != ARCH_ID
    assert not detect({"stem.0.weight": torch.zeros(1), "reconstruct.weight": torch.zeros(1)})


def test_register_is_idempotent_and_works_on_custom_registries():
    registry = spandrel.ArchRegistry()
    first = register(registry)
    assert register(registry) is first and len(registry) == 1
    desc = registry.load({"params_ema": trained(upscale=1).state_dict()})
    assert desc.architecture.id == ARCH_ID and desc.purpose == "Restoration"
