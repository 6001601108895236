"""Load HERSR weights from any checkpoint users have, rebuilding the model from the weights alone.

Accepted: BasicSR checkpoints (``params_ema`` preferred, then ``params``), plain state dicts,
``state_dict``/``model`` wrappers, DDP ``module.`` prefixes, deployed (reparameterized) and training
weights, ``.pth``/``.pt`` and ``.safetensors`` files. Every constructor argument is recovered from
tensor shapes and key names, plus the ``hyper`` buffer for the few that shapes cannot reveal (see
``HERSR.hyper``). The network file stays free of loading logic (spandrel's convention).
"""

from __future__ import annotations

import os
import re
from collections.abc import Iterable, Mapping
from pathlib import Path

import torch

from hersr_arch.archs.hersr_arch import (
    _FREQ_SPLITS,
    _ROUTINGS,
    HERSR,
    HYPER_FIELDS,
    NoiseInjection,
    blocks_per_scale,
)

StateDict = Mapping[str, torch.Tensor]


class CheckpointError(ValueError):
    """A checkpoint that cannot be read or is not a HERSR checkpoint; the message says which and why."""


# ----------------------------------------------------------------------------------------------
# Reading files
# ----------------------------------------------------------------------------------------------


def read_state_dict(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """The network weights stored in ``path`` (see the module docstring for the accepted forms)."""
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
    return unwrap_state_dict(obj, str(path))


def unwrap_state_dict(obj, source: str = "checkpoint") -> dict[str, torch.Tensor]:
    """Find the weights in a loaded checkpoint object and strip DDP prefixes."""
    if isinstance(obj, Mapping):
        for key in ("params_ema", "params", "state_dict", "model", "net_g"):
            if isinstance(obj.get(key), Mapping):
                obj = obj[key]
                break
    if not isinstance(obj, Mapping) or not all(isinstance(v, torch.Tensor) for v in obj.values()):
        raise CheckpointError(f"{source} holds no state dict of tensors (found {type(obj).__name__}).")
    return {re.sub(r"^(module\.)+", "", k): v for k, v in obj.items()}


# ----------------------------------------------------------------------------------------------
# Recovering hyper-parameters
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


def _hyper_values(sd: StateDict) -> dict[str, int]:
    if "hyper" not in sd:
        return {}
    values = [int(v) for v in sd["hyper"].tolist()]
    return dict(zip(HYPER_FIELDS, values))


def infer_config(sd: StateDict) -> dict:
    """``HERSR`` keyword arguments (with ``deploy``) that rebuild the network of state dict ``sd``."""
    keys = list(sd)
    if "stem.0.weight" not in sd or "reconstruct.weight" not in sd:
        found = ", ".join(keys[:5]) + (" ..." if len(keys) > 5 else "")
        raise CheckpointError(
            "This is not a HERSR checkpoint: it lacks 'stem.0.weight' and 'reconstruct.weight' "
            f"(its first keys: {found or 'none'})."
        )
    hyper = _hyper_values(sd)
    num_in_ch = hyper.get("num_in_ch", sd["stem.0.weight"].shape[1])
    dims = [sd["stem.0.weight"].shape[0]]
    for i in _indices(keys, r"downs\.(\d+)\."):
        dims.append(sd[f"downs.{i}.body.1.weight"].shape[0])
    n = len(dims)
    recon = sd["reconstruct.weight"].shape[0]
    if "upscale" in hyper:
        upscale, num_out_ch = hyper["upscale"], hyper["num_out_ch"]
    else:  # no hyper buffer: assume as many output channels as input channels
        num_out_ch = num_in_ch
        upscale = round((recon / num_out_ch) ** 0.5)
    if num_out_ch * upscale**2 != recon:
        raise CheckpointError(f"Cannot tell output channels and scale apart: reconstruct has {recon} channels.")

    config = dict(num_in_ch=num_in_ch, num_out_ch=num_out_ch, upscale=upscale, dims=tuple(dims))
    config["depths"] = blocks_per_scale(keys, "encoder", n)
    config["dec_depths"] = blocks_per_scale(keys, "decoder", n)
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

    tables = [k for k in keys if k.endswith("rel_pos_table")]
    window = hyper.get("window_size")
    if window is None:
        window = (round(sd[tables[0]].shape[0] ** 0.5) + 1) // 2 if tables else 8
    config["window_size"] = window

    ffn = [(sd[k].shape[0], sd[k].shape[1])
           for k in keys if k.endswith("ffn.project.weight")]
    if ffn:
        config["ffn_expansion"] = _fit_ratio(ffn, "GDFN hidden")
    large = [k for k in keys if k.endswith("plk.large.weight")]
    if large:
        config["plk_kernel"] = sd[large[0]].shape[-1]
        pairs = []
        for k in large:
            owner = k[: -len("plk.large.weight")]
            channels = _channels_of(sd, owner, dims)
            pairs.append((channels, sd[k].shape[0]))
        config["plk_ratio"] = _fit_ratio(pairs, "partial large-kernel")
    # Deployed weights have none of the training-only branches (see ``reparameterize()`` methods).
    training_only = re.compile(
        r"(.*plk\.small\.weight|.*dwconv\.point\.weight|.*norm_attn\.weight|.*norm_ffn\.norm\.weight"
        r"|moe\.experts\.\d+\.norm\.weight|(encoder|decoder)\.\d+\.blocks\.\d+\.scale)$"
    )
    config["deploy"] = not any(training_only.match(k) for k in keys)

    if "freq_split" in hyper:
        config["freq_split"] = _FREQ_SPLITS[hyper["freq_split"]]
    else:
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
        if "moe_routing" in hyper:
            config["moe_routing"] = _ROUTINGS[hyper["moe_routing"]]
        if "moe_top_k" in hyper:
            config["moe_top_k"] = hyper["moe_top_k"]
    config["use_prompt"] = "prompt.bank" in sd
    if config["use_prompt"]:
        config["num_prompts"] = sd["prompt.bank"].shape[0]
    if "train_size" in hyper:
        config["train_size"] = hyper["train_size"]
    if "noise_mode" in hyper:
        config["noise_mode"] = NoiseInjection.MODES[hyper["noise_mode"]]
    elif config["use_texture_head"] and "texture.noise.weight" not in sd:
        config["noise_mode"] = "off"
    return config


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
    """A HERSR model with the weights of ``sd`` loaded (strict), in eval mode.

    ``overrides`` may change behavioural settings such as ``noise_strength`` or ``train_size``.
    """
    config = {**infer_config(sd), **overrides}
    model = HERSR(**config)
    try:
        model.load_state_dict(sd, strict=True)
    except RuntimeError as err:
        raise CheckpointError(f"Weights do not fit the inferred HERSR configuration {config}: {err}") from None
    return model.eval()


def load_hersr(path: str | os.PathLike, **overrides) -> HERSR:
    """Read ``path`` and return the HERSR model it holds, in eval mode on the CPU."""
    return build_from_state_dict(read_state_dict(path), **overrides)
