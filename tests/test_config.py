"""``HERSRConfig``: the one description of a network, saved with its weights; older files migrated."""

import dataclasses
import inspect
import json

import pytest
import torch

from hersr_arch.archs.hersr_arch import CONFIG_FORMAT, HERSR, PRESETS, HERSRConfig, hersr_s
from hersr_arch.loading import CheckpointError, build_from_state_dict, migrate_state_dict, read_config
from hersr_arch.option_checks import accepted_keywords, check_checkpoint_fits
from tests.networks import FORMAT1, TINY, perturb_, tiny_hersr

FIELDS = [f.name for f in dataclasses.fields(HERSRConfig)]


def test_a_config_and_keywords_build_the_same_network():
    config = HERSRConfig(**TINY, upscale=2, freq_split="avgpool")
    torch.manual_seed(0)
    from_config = HERSR(config)
    torch.manual_seed(0)
    from_keywords = HERSR(**TINY, upscale=2, freq_split="avgpool")
    assert from_config.config == from_keywords.config == config
    for (name, a), (_, b) in zip(from_config.state_dict().items(), from_keywords.state_dict().items()):
        assert torch.equal(a, b), name
    # Keywords override the config's fields; lists (YAML) become tuples; the config cannot be changed.
    assert HERSR(config, upscale=3, dims=[8, 12, 16, 16]).config == config.replace(upscale=3)
    with pytest.raises(dataclasses.FrozenInstanceError):
        config.upscale = 4


def test_presets_are_configs_and_scale_is_an_alias():
    model = hersr_s(scale=3)
    assert model.config == HERSRConfig(**PRESETS["hersr_s"], upscale=3)
    assert HERSR(**TINY).config.upscale == 4  # no scale given and no framework running: 4
    with pytest.raises(ValueError, match="upscale=2 and scale=3; they are aliases"):
        HERSR(**TINY, upscale=2, scale=3)


def test_unknown_arguments_name_the_closest_one():
    with pytest.raises(TypeError, match="HERSR has no argument 'dim' \\(did you mean 'dims'\\?\\); its arguments"):
        HERSR(dim=(8, 12))


def test_the_signature_lists_every_field_for_option_checks():
    params = inspect.signature(HERSR).parameters
    assert list(params) == ["config", *FIELDS, "scale"]
    assert accepted_keywords(HERSR) == [*FIELDS, "scale"]  # a config is passed positionally
    assert set(accepted_keywords(hersr_s)) >= set(FIELDS)  # presets forward to HERSR


def test_the_config_travels_with_the_weights_and_deploy_updates_it():
    model = perturb_(tiny_hersr(upscale=3, moe_routing="token", train_size=24)).eval()
    weights = model.state_dict()
    assert weights["config_json"].dtype == torch.uint8
    assert read_config(weights) == model.config
    model.switch_to_deploy()
    assert model.config.deploy and read_config(model.state_dict()) == model.config
    assert build_from_state_dict(model.state_dict()).config == model.config


def test_records_that_cannot_be_used_are_clear_errors():
    weights = tiny_hersr().state_dict()

    def with_record(text: str) -> dict:
        return {**weights, "config_json": torch.tensor(list(text.encode()), dtype=torch.uint8)}

    record = json.loads(weights["config_json"].numpy().tobytes().decode())
    newer = json.dumps({**record, "format": CONFIG_FORMAT + 1})
    unknown = json.dumps({**record, "future_flag": True})
    bad_value = json.dumps({**record, "freq_split": "dct"})
    for text, message in (
        (newer, "written by a newer HERSR"),
        (unknown, "fields this HERSR does not know: \\['future_flag'\\]"),
        (bad_value, "freq_split='dct' is not supported"),
        ("{not json", "not valid JSON"),
    ):
        with pytest.raises(CheckpointError, match=message):
            read_config(with_record(text))
    damaged = {**weights, "config_json": torch.tensor([0xFF, 0xFE], dtype=torch.uint8)}
    with pytest.raises(CheckpointError, match="damaged"):
        read_config(damaged)


# ----------------------------------------------------------------------------------------------
# Files written before the config record (format 1)
# ----------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def older():
    return torch.load(FORMAT1, weights_only=True)


@pytest.mark.parametrize("form", ["train", "deployed", "deployed_before_project_fold"])
def test_format1_files_load_with_their_settings(form, older):
    weights = older[form]
    assert "hyper" in weights and not any(k.endswith(".layer_scale") for k in weights)
    model = build_from_state_dict(weights)
    expected = HERSRConfig(**older["config"], deploy=form != "train")
    assert model.config == expected  # the hyper buffer's settings and the weights' structure
    with torch.no_grad():
        torch.testing.assert_close(model(older["input"]), older["output"], atol=1e-5, rtol=0)
    assert "hyper" in weights  # the caller's dict is left as it is


def test_migration_renames_the_layer_scale_and_leaves_current_files_alone(older):
    migrated = migrate_state_dict(older["train"])
    assert not any(k.endswith("blocks.0.scale") for k in migrated)
    assert any(k.endswith("blocks.0.layer_scale") for k in migrated)
    assert "hyper" not in migrated and "config_json" in migrated
    current = perturb_(tiny_hersr(upscale=2)).state_dict()
    again = migrate_state_dict(current)
    assert list(again) == list(current) and all(torch.equal(again[k], current[k]) for k in current)


def test_the_arch_alone_refuses_unmigrated_files_and_option_checks_migrate(older, tmp_path):
    """A copied arch file has no migration: torch names the old keys. BasicSR's path migrates."""
    model = HERSR(HERSRConfig(**older["config"]))
    with pytest.raises(RuntimeError, match="hyper"):
        model.load_state_dict(older["train"])
    torch.save({"params": older["train"]}, tmp_path / "format1.pth")
    check_checkpoint_fits(model, tmp_path / "format1.pth")  # passes: migrated as HERSRModel does


def test_hersr_model_load_network_migrates(older, tmp_path):
    import hersr_arch.basicsr_plugin  # noqa: F401  (BasicSR needs the torchvision fix)
    from hersr_arch.models.hersr_model import HERSRModel

    class Stub:  # the two BasicSR methods load_network uses
        get_bare_model = staticmethod(lambda net: net)
        _print_different_keys_loading = staticmethod(lambda *args: None)

    torch.save({"params_ema": older["deployed_before_project_fold"]}, tmp_path / "net_g.pth")
    model = HERSR(HERSRConfig(**older["config"], deploy=True)).eval()
    HERSRModel.load_network(Stub(), model, tmp_path / "net_g.pth", True, "params_ema")
    with torch.no_grad():
        torch.testing.assert_close(model(older["input"]), older["output"], atol=1e-5, rtol=0)


def test_hersr_migrate_rewrites_older_files_for_the_arch_alone(older, tmp_path):
    from hersr_arch.cli.hersr_cli import main

    torch.save({"params": older["train"], "params_ema": older["train"], "iter": 7}, tmp_path / "old.pth")
    assert main(["migrate", str(tmp_path / "old.pth"), str(tmp_path / "new.pth")]) == 0
    new = torch.load(tmp_path / "new.pth", weights_only=True)
    assert new["iter"] == 7 and set(new) == {"params", "params_ema", "iter"}
    model = HERSR(HERSRConfig(**older["config"])).eval()
    model.load_state_dict(new["params_ema"])  # strict, no migration: what a copied arch file does
    with torch.no_grad():
        torch.testing.assert_close(model(older["input"]), older["output"], atol=1e-5, rtol=0)

    from safetensors.torch import load_file, save_file

    save_file({k: v.contiguous() for k, v in older["deployed"].items()}, tmp_path / "old.safetensors")
    assert main(["migrate", str(tmp_path / "old.safetensors"), str(tmp_path / "new.safetensors")]) == 0
    assert read_config(load_file(tmp_path / "new.safetensors")).deploy
    assert main(["migrate", str(tmp_path / "missing.pth"), str(tmp_path / "x.pth")]) != 0
    assert not (tmp_path / "x.pth").exists()
