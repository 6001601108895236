"""Checks of a BasicSR option dict before anything runs: one clear sentence per mistake.

BasicSR 1.4.2 finds most option mistakes late (after it has created, or archived, the experiment
folder) and reports them as a traceback from deep inside the library: a ``TypeError`` for an
unknown network keyword, an ``AssertionError`` for a missing folder, a ``KeyError`` for a missing
LMDB key in the middle of training, a failed zip read for a truncated checkpoint. The ``basicsr``
command runs :func:`check_options` first, and ``HERSRModel`` runs :func:`check_network_options`,
so that each of these is an :class:`OptionError` whose message names the option, the bad value and
what is allowed. Every check only reads: nothing given as input is written, moved or deleted (the
LMDBs are opened read-only, without a lock file; images are opened for their header only).
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import os
import re
import tempfile
import typing
from collections.abc import Mapping
from pathlib import Path

import torch

from hersr_arch.archs.hersr_arch import HERSR
from hersr_arch.loading import migrate_state_dict

_SHOWN = 8  # names shown in a message before "..."
_MAX_SIZE_CHECKS = 20000  # image pairs whose sizes are read (evenly spaced beyond that)


class OptionError(ValueError):
    """An option that cannot work; the message names the option, the bad value and what is allowed."""


def _names(items, limit: int = _SHOWN) -> str:
    items = list(items)
    shown = ", ".join(str(i) for i in items[:limit])
    return shown + (f", ... ({len(items)} in all)" if len(items) > limit else "")


# ---------------------------------------------------------------------------------------------
# Networks
# ---------------------------------------------------------------------------------------------


def _registry(kind: str):
    from basicsr.utils.registry import ARCH_REGISTRY, DATASET_REGISTRY, MODEL_REGISTRY

    return {"arch": ARCH_REGISTRY, "dataset": DATASET_REGISTRY, "model": MODEL_REGISTRY}[kind]


def _registered(kind: str, name, where: str):
    """What BasicSR's ``registry.get(name)`` returns (it also tries ``<name>_basicsr``), or an
    ``OptionError`` that lists the registered names."""
    registry = _registry(kind)
    if isinstance(name, str) and (name in registry or f"{name}_basicsr" in registry):
        return registry.get(name)
    names = sorted(n.removesuffix("_basicsr") for n in registry.keys())
    close = difflib.get_close_matches(str(name), names, n=3)
    hint = f" Did you mean {' or '.join(map(repr, close))}?" if close else ""
    raise OptionError(f"{where}: {name!r} is not a registered {kind}.{hint} Registered: {', '.join(names)}.")


def accepted_keywords(factory) -> list[str] | None:
    """Keyword arguments ``factory(**kwargs)`` accepts, or None when it takes any (``**kwargs``).

    A function that forwards ``**kwargs`` to a class named in its return annotation (HERSR's
    presets: ``hersr_s(**kwargs) -> HERSR``) accepts its own keywords plus that class's.
    """
    try:
        params = list(inspect.signature(factory).parameters.values())
    except (TypeError, ValueError):
        return None
    kinds = (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    names = [p.name for p in params if p.kind in kinds]
    if not any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params):
        return names
    if inspect.isclass(factory):
        return None
    try:
        target = typing.get_type_hints(factory).get("return")
    except Exception:  # unresolvable annotations: accept anything, as Python would
        return None
    if not inspect.isclass(target):
        return None
    inner = accepted_keywords(target)
    return None if inner is None else list(dict.fromkeys(names + inner))


def check_network_options(net_opt, key: str = "network_g") -> None:
    """``net_opt`` (a ``network_*`` entry) names a registered arch and only keywords it accepts."""
    if not isinstance(net_opt, Mapping) or "type" not in net_opt:
        raise OptionError(f"{key} must be a mapping with a 'type' (e.g. type: HERSR), got {net_opt!r}.")
    factory = _registered("arch", net_opt["type"], f"{key}.type")
    allowed = accepted_keywords(factory)
    if allowed is None:
        return
    unknown = [k for k in net_opt if k != "type" and k not in allowed]
    if unknown:
        hints = []
        for k in unknown:
            close = difflib.get_close_matches(str(k), allowed, n=1)
            hints.append(f"{k!r}" + (f" (did you mean {close[0]!r}?)" if close else ""))
        raise OptionError(
            f"{key}: {net_opt['type']} has no keyword argument {', '.join(hints)}. "
            f"Allowed: {', '.join(allowed)}."
        )


def check_scale(opt: Mapping) -> None:
    """The top-level ``scale`` (data) and ``network_g.upscale``/``scale`` (network) agree."""
    net = opt.get("network_g") or {}
    scale = opt.get("scale")
    for name in ("upscale", "scale"):
        value = net.get(name) if isinstance(net, Mapping) else None
        if scale is not None and value is not None and value != scale:
            raise OptionError(
                f"network_g.{name}: {value!r} does not match the top-level scale: {scale!r} of the data; "
                f"set both to the same factor."
            )


# ---------------------------------------------------------------------------------------------
# Datasets
# ---------------------------------------------------------------------------------------------


def _image_size(path: Path, where: str) -> tuple[int, int]:
    """``(height, width)`` from the image header only."""
    from PIL import Image

    try:
        with Image.open(path) as im:
            width, height = im.size
    except Exception as err:  # PIL raises many types for damaged files
        raise OptionError(f"{where}: cannot read image {str(path)!r} ({type(err).__name__}: {err}); "
                          "replace or remove the file.") from None
    return height, width


def _check_folder(root, where: str, backend: str = "disk") -> Path:
    path = Path(os.path.expanduser(str(root)))
    expected = "an existing folder of images" if backend == "disk" else "an existing LMDB folder (name.lmdb)"
    if not path.exists():
        raise OptionError(f"{where}: folder {str(path)!r} does not exist; expected {expected}.")
    if not path.is_dir():
        raise OptionError(f"{where}: {str(path)!r} is a file; expected {expected}.")
    return path


def _files(folder: Path) -> list[str]:
    """The file names BasicSR's disk backend reads from ``folder`` (its own ``scandir``), sorted."""
    from basicsr.utils import scandir

    return sorted(scandir(str(folder)))


def _lmdb_meta(root: Path, where: str) -> dict[str, tuple[int, int]]:
    """``{key: (h, w)}`` from ``meta_info.txt`` of a BasicSR LMDB, after checking the folder."""
    if not root.name.endswith(".lmdb"):
        raise OptionError(f"{where}: {str(root)!r} must be an LMDB folder whose name ends with '.lmdb' "
                          "(io_backend: lmdb); use io_backend: {type: disk} for a folder of images.")
    if not (root / "data.mdb").is_file():
        raise OptionError(f"{where}: {str(root)!r} has no data.mdb; it is not an LMDB. Expected an LMDB made "
                          "by datasets/ scripts (hersr_arch.data.prepare.create_lmdb).")
    meta = root / "meta_info.txt"
    if not meta.is_file():
        raise OptionError(f"{where}: LMDB {str(root)!r} has no meta_info.txt; BasicSR's lmdb backend lists its "
                          "images there, one 'name.png (h,w,c) compression' line each (create_lmdb writes it).")
    sizes = {}
    for n, line in enumerate(meta.read_text(encoding="utf-8").splitlines(), 1):
        if not line.strip():
            continue
        m = re.match(r"\s*(\S+)\s+\((\d+),\s*(\d+)(?:,\s*\d+)?\)", line)
        if not m:
            raise OptionError(f"{where}: line {n} of {str(meta)!r} is {line!r}; expected 'name.png (h,w,c) "
                              "compression'.")
        key = m.group(1).split(".")[0]  # BasicSR's key: the name up to its first dot
        if not key.isascii():
            raise OptionError(f"{where}: line {n} of {str(meta)!r} names the non-ASCII key {key!r}; BasicSR's "
                              "lmdb backend needs ASCII keys. Rename the image and rebuild the LMDB.")
        sizes[key] = (int(m.group(2)), int(m.group(3)))
    if not sizes:
        raise OptionError(f"{where}: {str(meta)!r} lists no images; expected one 'name.png (h,w,c) compression' "
                          "line per image.")
    import lmdb

    try:
        env = lmdb.open(str(root), readonly=True, lock=False, readahead=False)
    except lmdb.Error as err:
        raise OptionError(f"{where}: cannot open LMDB {str(root)!r}: {err}.") from None
    try:
        with env.begin(write=False) as txn:
            cursor = txn.cursor()
            missing = [k for k in sizes if not cursor.set_key(k.encode("ascii"))]
    finally:
        env.close()
    if missing:
        raise OptionError(f"{where}: LMDB {str(root)!r} lacks key(s) {_names(map(repr, missing))} that its "
                          "meta_info.txt lists; every listed image must be stored under its name without "
                          "extension. Rebuild the LMDB.")
    return sizes


def _check_pair_sizes(pairs, scale: int, phase: str, gt_size, where: str) -> None:
    """GT is ``scale`` x LQ (exactly in training; up to ``scale - 1`` extra pixels, cropped, otherwise)."""
    for name, (gh, gw), (lh, lw) in pairs:
        exact = (gh, gw) == (lh * scale, lw * scale)
        cropped = lh * scale <= gh < (lh + 1) * scale and lw * scale <= gw < (lw + 1) * scale
        if not (exact or (phase != "train" and cropped)):
            raise OptionError(
                f"{where}: GT {name} is {gh}x{gw} but its LQ is {lh}x{lw}; with scale {scale} the GT must be "
                f"{lh * scale}x{lw * scale} (scale x the LQ size). Check the scale and the LQ folder."
            )
        if phase == "train" and gt_size and (gh < gt_size or gw < gt_size):
            raise OptionError(f"{where}: gt_size {gt_size} is larger than GT {name} ({gh}x{gw}); use a "
                              f"gt_size of at most {min(gh, gw)} or larger images.")


def _check_paired_folders(ds: Mapping, gt: Path, lq: Path, scale: int, where: str) -> None:
    gt_names, lq_names = _files(gt), set(_files(lq))
    if not gt_names:
        raise OptionError(f"{where}: dataroot_gt {str(gt)!r} holds no images; expected image files.")
    tmpl = ds.get("filename_tmpl", "{}")
    partners = {}
    for name in gt_names:
        base, ext = os.path.splitext(name)
        partners[name] = f"{tmpl.format(base)}{ext}"
        if partners[name] not in lq_names:
            raise OptionError(f"{where}: GT image {name!r} has no LQ partner {partners[name]!r} in {str(lq)!r} "
                              f"(filename_tmpl {tmpl!r}); every GT file needs one.")
    extra = sorted(lq_names - set(partners.values()))
    if extra:
        raise OptionError(f"{where}: LQ folder {str(lq)!r} has {len(extra)} file(s) without a GT partner: "
                          f"{_names(map(repr, extra))}.")
    step = max(1, len(gt_names) // _MAX_SIZE_CHECKS)  # headers cost ~0.1 ms each: sample huge sets evenly
    pairs = [(name, _image_size(gt / name, where), _image_size(lq / partners[name], where))
             for name in gt_names[::step]]
    _check_pair_sizes(pairs, scale, ds.get("phase", "train"), ds.get("gt_size"), where)


# Datasets that pair GT and LQ files by name as BasicSR's PairedImageDataset does.
PAIRED_TYPES = ("PairedImageDataset", "BenchmarkPairedDataset")


def check_datasets(opt: Mapping) -> None:
    """Every dataset type is registered, its folders/LMDBs/meta files exist, and pairs fit the scale.

    Pairs of ``PairedImageDataset`` are matched by name as BasicSR matches them; their sizes come
    from image headers (an evenly spaced sample of 20000 in larger folders) or LMDB meta files.
    """
    datasets = opt.get("datasets")
    if not isinstance(datasets, Mapping) or not datasets:
        raise OptionError(f"datasets must map phases (train, val_1, test_1, ...) to dataset options, got {datasets!r}.")
    scale = opt.get("scale", 1)
    for phase_key, ds in datasets.items():
        where = f"datasets.{phase_key}"
        if not isinstance(ds, Mapping):
            raise OptionError(f"{where} must be a mapping of dataset options, got {ds!r}.")
        _registered("dataset", ds.get("type"), f"{where}.type")
        backend = (ds.get("io_backend") or {}).get("type", "disk")
        if backend not in ("disk", "lmdb"):
            continue  # e.g. memcached: nothing to check locally
        roots = {k: v for k, v in ds.items() if k.startswith("dataroot") and isinstance(v, (str, os.PathLike))}
        meta_file = ds.get("meta_info_file")
        if meta_file is not None and not Path(os.path.expanduser(str(meta_file))).is_file():
            raise OptionError(f"{where}.meta_info_file: {str(meta_file)!r} does not exist; expected a text file "
                              "listing the images, or remove the option to use every image of the folder.")
        lmdb_sizes = {}
        for key, root in roots.items():
            path = _check_folder(root, f"{where}.{key}", backend)
            if backend == "lmdb":
                lmdb_sizes[key] = _lmdb_meta(path, f"{where}.{key}")
        if ds.get("type") not in PAIRED_TYPES or not {"dataroot_gt", "dataroot_lq"} <= set(roots):
            continue
        phase = ds.get("phase", phase_key.split("_")[0])
        ds = {**ds, "phase": phase}
        if backend == "lmdb":
            gt, lq = lmdb_sizes["dataroot_gt"], lmdb_sizes["dataroot_lq"]
            if set(gt) != set(lq):
                only = sorted(set(gt) ^ set(lq))
                raise OptionError(f"{where}: the GT and LQ LMDBs hold different keys ({_names(map(repr, only))} "
                                  "in only one); both must list the same image names.")
            pairs = [(k, gt[k], lq[k]) for k in sorted(gt)]
            _check_pair_sizes(pairs, scale, phase, ds.get("gt_size"), where)
        elif meta_file is None:
            _check_paired_folders(ds, Path(roots["dataroot_gt"]).expanduser(),
                                  Path(roots["dataroot_lq"]).expanduser(), scale, where)


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def _read_checkpoint(path, where: str):
    path = Path(os.path.expanduser(str(path)))
    if not path.is_file():
        raise OptionError(f"{where}: checkpoint {str(path)!r} does not exist; expected a .pth file saved by "
                          "BasicSR (e.g. experiments/<name>/models/net_g_latest.pth).")
    try:
        return torch.load(path, map_location="cpu", weights_only=True)
    except Exception as err:  # torch raises many types for damaged files
        reason = " ".join(f"{type(err).__name__}: {err}".split())[:200]
        raise OptionError(f"{where}: cannot read checkpoint {str(path)!r}: the file is truncated, damaged or not a "
                          f"PyTorch checkpoint ({reason}). Use a complete .pth file.") from None


def _hersr_config_diff(model_sd, ckpt_sd) -> str:
    """``'upscale (checkpoint 2, options 4), dims (...)'`` for two HERSR state dicts, else ''."""
    from hersr_arch.loading import CheckpointError, read_config

    try:
        ours = read_config(model_sd)
    except CheckpointError:
        return ""
    try:
        theirs = read_config(ckpt_sd)
    except CheckpointError as err:
        reason = str(err).rstrip(".")
        return reason[:1].lower() + reason[1:]
    diff = [f"{f.name} (checkpoint {_plain(getattr(theirs, f.name))}, options {_plain(getattr(ours, f.name))})"
            for f in dataclasses.fields(ours) if getattr(ours, f.name) != getattr(theirs, f.name)]
    return f"hyper-parameters differ: {', '.join(diff)}" if diff else ""


def _plain(value):
    return list(value) if isinstance(value, tuple) else value


def check_checkpoint_fits(net: torch.nn.Module, path, param_key: str | None = "params", strict: bool = True,
                          where: str = "path.pretrain_network_g", net_name: str = "network_g") -> None:
    """The checkpoint at ``path`` loads into ``net`` as BasicSR's ``load_network`` would load it.

    Raises :class:`OptionError` naming the mismatched hyper-parameters (HERSR) and state-dict keys.
    """
    ckpt = _read_checkpoint(path, where)
    if param_key is not None:
        if not isinstance(ckpt, Mapping):
            raise OptionError(f"{where}: {str(path)!r} holds a {type(ckpt).__name__}, not a dict with "
                              f"{param_key!r}; expected a BasicSR checkpoint {{'params': state_dict}}.")
        if param_key not in ckpt and "params" in ckpt:
            param_key = "params"  # BasicSR's fallback (e.g. no params_ema)
        if param_key not in ckpt:
            raise OptionError(f"{where}: {str(path)!r} has no {param_key!r} entry; its entries are "
                              f"{_names(map(repr, ckpt))}. Set path.param_key_* to one of them.")
        ckpt = ckpt[param_key]
    if not isinstance(ckpt, Mapping) or not all(isinstance(v, torch.Tensor) for v in ckpt.values()):
        raise OptionError(f"{where}: {str(path)!r} holds no state dict of tensors under {param_key!r}.")
    sd = {k[7:] if k.startswith("module.") else k: v for k, v in ckpt.items()}
    if isinstance(net, HERSR):  # as HERSRModel.load_network: files of older versions are migrated
        sd = migrate_state_dict(sd)
    model_sd = net.state_dict()
    problems = []
    shapes = [f"{k} (checkpoint {list(sd[k].shape)}, model {list(v.shape)})"
              for k, v in model_sd.items() if k in sd and sd[k].shape != v.shape]
    missing = [k for k in model_sd if k not in sd]
    unexpected = [k for k in sd if k not in model_sd]
    if shapes:
        problems.append(f"{len(shapes)} key(s) with other shapes: {_names(shapes, 4)}")
    if strict and missing:
        problems.append(f"{len(missing)} key(s) missing from the checkpoint: {_names(missing, 4)}")
    if strict and unexpected:
        problems.append(f"{len(unexpected)} unexpected key(s): {_names(unexpected, 4)}")
    if not problems:
        try:
            net.load_state_dict(sd, strict=strict)
            return
        except (RuntimeError, ValueError) as err:
            problems.append(" ".join(str(err).split())[:400])
    summary = _hersr_config_diff(model_sd, sd)
    raise OptionError(
        f"{where}: checkpoint {str(path)!r} does not fit {net_name} ({type(net).__name__}): "
        + "; ".join(([summary] if summary else []) + problems)
        + f". Use a checkpoint of the same architecture and hyper-parameters, or change {net_name} to match it."
    )


def build_network(net_opt: Mapping, key: str = "network_g") -> torch.nn.Module:
    """``net_opt`` built on the CPU as BasicSR's ``build_network`` would, its errors as :class:`OptionError`."""
    check_network_options(net_opt, key)
    factory = _registered("arch", net_opt["type"], f"{key}.type")
    try:
        return factory(**{k: v for k, v in net_opt.items() if k != "type"})
    except (ValueError, TypeError) as err:  # HERSR's messages name the value and what is allowed
        raise OptionError(f"{key}: {err}") from None


def check_networks(opt: Mapping, resuming: bool = False) -> None:
    """Every ``network_*`` builds, and each ``path.pretrain_network_*`` exists, is readable and fits it.

    HERSR's networks are always built (a bad hyper-parameter is then caught here); other networks only
    when a checkpoint must be checked against them (building some BasicSR archs loads files). When
    resuming, BasicSR loads the experiment's own checkpoints instead of ``pretrain_network_*``.
    """
    paths = opt.get("path") or {}
    for key, net_opt in opt.items():
        if not key.startswith("network_") or net_opt is None:
            continue
        check_network_options(net_opt, key)
        path = None if resuming else paths.get(f"pretrain_{key}")
        ours = getattr(_registered("arch", net_opt["type"], f"{key}.type"), "__module__", "").startswith("hersr_arch")
        if path is None and not ours:
            continue
        net = build_network(net_opt, key)
        if path is not None:
            label = key[len("network_"):]
            check_checkpoint_fits(net, path, paths.get(f"param_key_{label}", "params"),
                                  paths.get(f"strict_load_{label}", True), f"path.pretrain_{key}", key)


# ---------------------------------------------------------------------------------------------
# Outputs and the rest
# ---------------------------------------------------------------------------------------------


def check_writable_folder(path, what: str) -> None:
    """``path`` is a folder that exists and is writable, or can be created (probed with a temporary file)."""
    target = Path(path).absolute()
    existing = target.parent
    while not existing.exists():
        existing = existing.parent
    blocker = next((p for p in [target, *target.parents] if p.exists() and not p.is_dir()), None)
    if blocker is not None:
        raise OptionError(f"cannot write {what} to {str(target)!r}: {str(blocker)!r} is a file, not a folder; "
                          "move it away or run from another folder.")
    try:
        with tempfile.TemporaryFile(dir=existing):
            pass
    except OSError as err:
        raise OptionError(f"cannot write {what} to {str(target)!r}: {str(existing)!r} is not writable "
                          f"({err.strerror}); run from a writable folder.") from None


_DETERMINISTIC = (False, True, "warn")


def check_options(opt: Mapping, command: str, root: str | os.PathLike, resuming: bool = False) -> None:
    """All checks of this module for ``basicsr train|test`` run in ``root`` (the working directory)."""
    _registered("model", opt.get("model_type", "SRModel"), "model_type")
    if opt.get("deterministic", False) not in _DETERMINISTIC:
        raise OptionError(f"deterministic: {opt['deterministic']!r} is not supported; use true, false or 'warn'.")
    check_scale(opt)
    check_networks(opt, resuming)
    root = Path(root)
    if command == "train":
        check_writable_folder(root / "experiments" / str(opt["name"]), "the experiment (checkpoints, logs)")
        if (opt.get("logger") or {}).get("use_tb_logger"):
            check_writable_folder(root / "tb_logger" / str(opt["name"]), "TensorBoard logs")
    else:
        check_writable_folder(root / "results" / str(opt["name"]), "the test results")
    check_datasets(opt)
