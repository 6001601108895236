"""Load HERSR weights from any checkpoint users have, rebuilding the model from the weights alone.

Accepted: BasicSR checkpoints (``params_ema`` preferred, then ``params``), plain state dicts,
``state_dict``/``model`` wrappers, DDP ``module.`` prefixes, deployed (reparameterized) and training
weights, ``.pth``/``.pt`` and ``.safetensors`` files. The network's :class:`HERSRConfig` is saved
with its weights (the ``config_json`` buffer); for files without one it is inferred from tensor shapes
and key names. Files of older HERSR versions are brought to the current format by one function,
:func:`migrate_state_dict`. The network file stays free of loading logic (spandrel's convention).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from hersr_arch.archs.hersr_arch import (
    HERSR,
    HERSRConfig,
    blocks_per_stage,
    deployed_fusion_width,
    fold_path_projections,
    fold_pointwise_output,
    with_residual_columns,
)

StateDict = Mapping[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not a HERSR checkpoint; the message says which and why."""


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


# Where checkpoints keep their weights, in the order they are looked for (BasicSR's EMA weights first).
_WRAPPER_KEYS = ("params_ema", "params", "state_dict", "model", "net_g")


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights stored in ``path`` (see the module docstring for the accepted forms)."""
    return unwrap_state_dict(read_checkpoint(path), str(path))


def read_checkpoint(path: str | os.PathLike):
    """The object stored in ``path`` (``.pth``/``.pt`` or ``.safetensors``), or a clear ``CheckpointError``."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"Checkpoint {str(path)!r} does not exist.")
    try:
        if path.suffix == ".safetensors":
            from safetensors.torch import load_file

            obj = load_file(str(path))
        else:
            obj = torch.load(path, map_location="cpu", weights_only=True)
    except ImportError:
        raise CheckpointError(f"Reading {path.name} needs the safetensors package: pip install safetensors.") from None
    except Exception as err:  # torch/safetensors raise many types for damaged files
        raise CheckpointError(
            f"Cannot read checkpoint {str(path)!r}: the file is truncated, damaged or not a PyTorch / "
            f"safetensors file ({type(err).__name__}: {str(err)[:200]})."
        ) from None
    return obj


def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights in a loaded checkpoint object and strip DDP prefixes."""
    if isinstance(obj, Mapping):
        for key in _WRAPPER_KEYS:
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors (found {type(obj).__name__}).")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------
# Older files
# ----------------------------------------------------------------------------------------------

# Format 1 stored the settings that shapes cannot show as an int64 ``hyper`` buffer, in this order,
# the names as indices into the tuples of that time.
_FORMAT1_FIELDS = ("format", "upscale", "num_in_ch", "num_out_ch", "window_size", "moe_routing", "train_size",
                   "moe_top_k", "noise_mode", "freq_split")  # fmt: skip
_FORMAT1_NAMES = {
    "moe_routing": ("image", "token"),
    "noise_mode": ("random", "fixed", "off"),
    "freq_split": ("haar", "avgpool", "none"),
}
# Keys only the training form has (each ``reparameterize()`` removes them).
_TRAINING_ONLY = re.compile(
    r"(.*plk\.small\.weight|.*dwconv\.point\.weight|.*norm_attn\.weight|.*norm_ffn\.norm\.weight"
    r"|moe\.experts\.\d+\.norm\.weight|(encoder|decoder)\.\d+\.blocks\.\d+\.layer_scale)$"
)


def migrate_state_dict(sd: StateDict) -> dict[str, torch.Tensor]:
    """``sd`` in the current format, as a new dict (``sd`` is left as it is). Older files differ in:

    * the layer scale of each dual-path block, once ``blocks.N.scale``, now ``blocks.N.layer_scale``;
    * deployed weights written before deploy folded the closing 1x1s of a block's paths (the gated
      conv's and the GDFN's ``project``) into its fusion 1x1, or the attention expert's ``out`` into
      its attention's ``proj``, still carry them: they are folded now (exact up to rounding);
    * deployed weights written before the fusion 1x1 read the block's input (the residual add as
      identity columns) gain those columns (exact);
    * format 1 kept what shapes cannot show in an integer ``hyper`` buffer: it becomes the
      ``config_json`` record, with the rest of the config inferred from the weights.
    """
    sd = {re.sub(r"(\.blocks\.\d+)\.scale$", r"\1.layer_scale", k): v for k, v in sd.items()}
    if not any(_TRAINING_ONLY.match(k) for k in sd):
        _fold_deployed_projections(sd)
    if "hyper" in sd:
        values = dict(zip(_FORMAT1_FIELDS, (int(v) for v in sd.pop("hyper").tolist())))
        settings = {k: _FORMAT1_NAMES[k][v] if k in _FORMAT1_NAMES else v for k, v in values.items() if k != "format"}
        sd["config_json"] = infer_config(sd, settings).to_tensor()
    return sd


def _fold_deployed_projections(sd: dict[str, torch.Tensor]) -> None:
    """Fold, in place, the 1x1s that deploy now folds but older deployed files still carry, and give
    fusion 1x1s written without them the residual's identity columns."""

    def pop(prefix: str) -> tuple[torch.Tensor, torch.Tensor] | None:
        if prefix + "weight" in sd and prefix + "bias" in sd:
            return sd.pop(prefix + "weight"), sd.pop(prefix + "bias")
        return None

    for block in [k[: -len("fuse.weight")] for k in sd if re.search(r"\.blocks\.\d+\.fuse\.weight$", k)]:
        has_local = block + "local.norm.weight" in sd
        weight, sd[block + "fuse.bias"] = fold_path_projections(
            sd[block + "fuse.weight"], sd[block + "fuse.bias"], pop(block + "local.gated.project."),
            pop(block + "context.ffn.project."), has_local=has_local,
        )  # fmt: skip
        channels, expand = weight.shape[0], sd.get(block + "context.ffn.spatial.expand.weight")
        hidden = 0 if expand is None else expand.shape[0] // 2
        without_residual = deployed_fusion_width(channels, hidden, has_local, expand is not None) - channels
        sd[block + "fuse.weight"] = with_residual_columns(weight) if weight.shape[1] == without_residual else weight
    for expert in _indices(sd, r"moe\.experts\.(\d+)\.attn\.proj\.weight$"):
        proj = f"moe.experts.{expert}.attn.proj."
        if (out := pop(f"moe.experts.{expert}.out.")) is not None:
            sd[proj + "weight"], sd[proj + "bias"] = fold_pointwise_output(sd[proj + "weight"], sd[proj + "bias"], *out)


def read_config(sd: StateDict) -> HERSRConfig:
    """The config of (migrated) weights ``sd``: the record saved with them, else inferred from them."""
    _require_hersr(sd)
    if "config_json" not in sd:
        return infer_config(sd)
    try:
        return HERSRConfig.from_tensor(sd["config_json"])
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The checkpoint's config record cannot be used: {err}") from None


# ----------------------------------------------------------------------------------------------
# Inferring the config of files without a record
# ----------------------------------------------------------------------------------------------

_NICE_RATIOS = (0.25, 2.66, 2.0, 0.125, 0.5, 2.5, 3.0, 4.0, 1.0, 1.5)


def _fit_ratio(pairs: Iterable[tuple[int, int]], what: str) -> float:
    """A ratio ``r`` with ``int(c * r) == target`` for every ``(c, target)`` (how widths are derived)."""
    pairs = list(pairs)
    for r in _NICE_RATIOS:
        if all(int(c * r) == t for c, t in pairs):
            return r
    low = max(t / c for c, t in pairs)
    high = min((t + 1) / c for c, t in pairs)
    r = (low + high) / 2
    if low >= high or not all(int(c * r) == t for c, t in pairs):
        raise CheckpointError(f"Inconsistent {what} widths in the checkpoint: {pairs}.")
    return r


def _indices(keys: Iterable[str], pattern: str) -> list[int]:
    return sorted({int(m.group(1)) for k in keys if (m := re.match(pattern, k))})


def _require_hersr(sd: StateDict) -> None:
    if "stem.0.weight" not in sd or "reconstruct.weight" not in sd:
        keys = list(sd)
        found = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise CheckpointError(
            "This is not a HERSR checkpoint: it lacks 'stem.0.weight' and 'reconstruct.weight' "
            f"(its first keys: {found or 'none'})."
        )


def infer_config(sd: StateDict, known: Mapping | None = None) -> HERSRConfig:
    """The config of (migrated) weights ``sd`` from tensor shapes and key names alone.

    ``known`` gives settings that shapes cannot show (``upscale``, ``num_out_ch``, ``window_size``,
    ``moe_routing``, ``moe_top_k``, ``train_size``, ``noise_mode``, ``freq_split``); without them,
    the defaults are assumed, and the output channels and scale that fit the reconstruction conv.
    """
    _require_hersr(sd)
    known = dict(known or {})
    keys = list(sd)
    num_in_ch = known.get("num_in_ch", sd["stem.0.weight"].shape[1])
    dims = [sd["stem.0.weight"].shape[0]]
    for i in _indices(keys, r"downs\.(\d+)\."):
        dims.append(sd[f"downs.{i}.body.1.weight"].shape[0])
    n = len(dims)
    recon = sd["reconstruct.weight"].shape[0]
    # reconstruct has num_out_ch * upscale**2 channels: unless told, try as many output channels as
    # input channels first, then RGB and gray.
    outs = [known["num_out_ch"]] if "num_out_ch" in known else list(dict.fromkeys((num_in_ch, 3, 1)))
    scales = [known["upscale"]] if "upscale" in known else [4, 2, 3, 1]
    fits = [(c, s) for c in outs for s in scales if c * s * s == recon]
    if not fits:
        raise CheckpointError(f"Cannot tell output channels and scale apart: reconstruct has {recon} channels.")
    num_out_ch, upscale = fits[0]

    config = dict(known, num_in_ch=num_in_ch, num_out_ch=num_out_ch, upscale=upscale, dims=tuple(dims))
    config["depths"] = blocks_per_stage(keys, "encoder", n)
    config["dec_depths"] = blocks_per_stage(keys, "decoder", n)
    config["use_local"] = any(".local." in k for k in keys)
    config["use_context"] = any(".context." in k for k in keys)
    if not (config["use_local"] or config["use_context"]):
        config["use_local"] = config["use_context"] = True  # no blocks at all: either is fine

    heads = []
    for i in range(n):
        scales = [k for k in keys if re.match(rf"(encoder|decoder)\.{i}\..*attn\.logit_scale$", k)]
        if i == n - 1:
            scales += [k for k in keys if re.match(r"moe\.experts\.\d+\.attn\.logit_scale$", k)]
        heads.append(sd[scales[0]].shape[0] if scales else 1)
    config["num_heads"] = tuple(heads)

    if "window_size" not in known:
        tables = [k for k in keys if k.endswith("rel_pos_table")]
        config["window_size"] = (round(sd[tables[0]].shape[0] ** 0.5) + 1) // 2 if tables else 8

    # The GDFN expands C to 2 * hidden channels (its ``project``, back from hidden, is folded when deployed).
    ffn = [(sd[k].shape[1], sd[k].shape[0] // 2) for k in keys if k.endswith("ffn.spatial.expand.weight")]
    if ffn:
        config["ffn_expansion"] = _fit_ratio(ffn, "GDFN hidden")
    large = [k for k in keys if k.endswith("plk.large.weight")]
    if large:
        config["plk_kernel"] = sd[large[0]].shape[-1]
        pairs = []
        for k in large:
            owner = k[: -len("plk.large.weight")]
            pairs.append((_channels_of(sd, owner, dims), sd[k].shape[0]))
        config["plk_ratio"] = _fit_ratio(pairs, "partial large-kernel")
    config["deploy"] = not any(_TRAINING_ONLY.match(k) for k in keys)

    if "freq_split" not in known:
        config["freq_split"] = "haar" if "low_inject.weight" in sd else "none"
    config["upsampler"] = "dysample" if any(re.match(r"ups\.\d+\.body\.1\.offset\.", k) for k in keys) else "pixelshuffle"
    config["msg_outputs"] = any(k.startswith("msg_heads.") for k in keys)
    config["use_texture_head"] = any(k.startswith("texture.") for k in keys)

    config["use_moe"] = any(k.startswith("moe.") for k in keys)
    if config["use_moe"]:
        kinds = {"dwconv": "conv", "attn": "attn", "mix": "fft"}  # a layer only that expert has
        experts = []
        for e in _indices(keys, r"moe\.experts\.(\d+)\."):
            parts = {k.split(".")[3] for k in keys if k.startswith(f"moe.experts.{e}.")}
            experts.append(next(kind for part, kind in kinds.items() if part in parts))
        config["moe_experts"] = tuple(experts)
    config["use_prompt"] = "prompt.bank" in sd
    if config["use_prompt"]:
        config["num_prompts"] = sd["prompt.bank"].shape[0]
    if "noise_mode" not in known and config["use_texture_head"] and "texture.noise.weight" not in sd:
        config["noise_mode"] = "off"
    try:
        return HERSRConfig(**config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"The weights give no valid HERSR config: {err}") from None


def _channels_of(sd: StateDict, owner: str, dims: list[int]) -> int:
    """Channel width of the block that owns a partial large-kernel conv (from its scale index)."""
    m = re.match(r"(encoder|decoder)\.(\d+)\.", owner)
    if m:
        return dims[int(m.group(2))]
    return dims[-1]  # the MoE conv expert lives at the bottleneck


# ----------------------------------------------------------------------------------------------
# Building
# ----------------------------------------------------------------------------------------------


def build_from_state_dict(sd: StateDict, **overrides) -> HERSR:
    """A HERSR model with the weights of ``sd`` (any version, migrated) loaded strictly, in eval mode.

    ``overrides`` may change behavioural settings such as ``noise_strength`` or ``train_size``.
    """
    sd = migrate_state_dict(sd)
    config = read_config(sd)
    try:
        config = config.replace(**overrides)
        model = HERSR(config)
    except (TypeError, ValueError) as err:
        raise CheckpointError(f"Cannot build HERSR from this checkpoint with {overrides}: {err}") from None
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"Weights do not fit their HERSR config {config}: {err}") from None
    return model.eval()


def migrate_file(src: str | os.PathLike, dst: str | os.PathLike) -> list[str]:
    """Rewrite checkpoint ``src`` of any HERSR version in the current format at ``dst``.

    For the arch file copied alone into another framework, which loads only the current format. The
    layout is kept: a BasicSR checkpoint keeps ``params`` and ``params_ema`` (each migrated), a plain
    state dict stays plain, ``.safetensors`` stays safetensors; DDP's ``module.`` prefixes are dropped.
    Each migrated state dict must build and load before ``dst`` is written (atomically). Returns the
    names of the migrated entries.
    """
    src, dst = Path(src), Path(dst)
    obj = read_checkpoint(src)
    wrapped = [k for k in _WRAPPER_KEYS if isinstance(obj, Mapping) and isinstance(obj.get(k), Mapping)]
    entries = {k: obj[k] for k in wrapped} if wrapped else {"state dict": obj}
    migrated = {}
    for name, sd in entries.items():
        sd = migrate_state_dict(unwrap_state_dict(sd, f"{src.name} [{name}]"))
        build_from_state_dict(sd)  # raises CheckpointError if it does not load
        migrated[name] = sd
    result = {**obj, **migrated} if wrapped else migrated["state dict"]
    dst.parent.mkdir(parents=True, exist_ok=True)
    tmp = dst.with_name(f".{dst.name}.{os.getpid()}.tmp")
    try:
        if dst.suffix == ".safetensors":
            from safetensors.torch import save_file

            if wrapped:
                raise CheckpointError(f"{src.name} holds {wrapped}; a .safetensors file holds one state dict.")
            save_file({k: v.contiguous() for k, v in result.items()}, str(tmp))
        else:
            torch.save(result, tmp)
        os.replace(tmp, dst)
    finally:
        tmp.unlink(missing_ok=True)
    return list(migrated)


def load_hersr(path: str | os.PathLike, **overrides) -> HERSR:
    """Read ``path`` and return the HERSR model it holds, in eval mode on the CPU."""
    return build_from_state_dict(read_state_dict(path), **overrides)
