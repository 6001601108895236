"""Deployment export: reparameterized weights and ONNX with dynamic batch, height and width.

``export_deploy`` writes the ``switch_to_deploy()`` weights (``.pth`` as BasicSR's ``{'params': ...}``,
or ``.safetensors``); the config saved with the weights describes the network, so
``hersr_arch.loading.load_hersr`` (and spandrel) rebuild it with no other file. The written file is
read back and must give the same outputs as the original model.

``export_onnx`` traces the deployed model with the TorchScript exporter (``dynamo=False``,
``dynamic_axes``) and checks onnxruntime against PyTorch at the export size and at other sizes
(odd, batch 2, tiny). Why this exporter and what is done around it, each verified by that check:

- **The dynamo exporter** is not used: it needs ``onnxscript`` (not among the extras), and it
  failed on an earlier version of the window partition; it is not tested.
- **Trace size.** The tracer records only the branch taken at the trace size. Under tracing the
  network keeps every replicate pad in the graph, computed from the runtime size, even where the
  trace size needs none (a pad of 0 is harmless); skipping it in Python at a window multiple is
  exactly how SwinIR and HAT exports break at a second size. The trace size (:func:`trace_size`)
  is still chosen off every multiple, non-square, with a bottleneck larger than 1x1, so that a
  regression of that guard, or a transposition, fails the check at the second size.
- **Context pooling** (``ContextPool``: global mean up to ``train_size``, TLC box mean above) is
  a size-dependent branch; its traceable form (``ContextPool.forward_traceable``) computes both and
  selects with ``where`` on the runtime size.
- **FFT expert.** The TorchScript exporter has no ``aten::fft_rfft2`` symbolic at any opset and
  cannot trace complex tensors. While tracing, the expert's ``rfft2 -> mix -> irfft2(s=(H, W))``
  is written as products with cos/sin DFT matrices built from the runtime size (same transform,
  ``norm='ortho'``, fp32; O(HW(H + W)) at 1/8 resolution instead of O(HW log HW)).
- **Texture noise** is off in the ONNX graph (``noise_strength=0``): its coordinate hash
  (:func:`~hersr_arch.archs.hersr_arch.coordinate_noise`) needs 64-bit shifts, which ONNX's
  ``BitShift`` (unsigned types only) does not express. The ONNX model equals
  ``hersr upscale --noise-strength 0``.
- **onnxruntime 1.32's** ``CastElimination`` pass corrupts graphs that contain float->float
  ``Cast`` nodes (the session fails to load: "Node input '...Cast_6_output_0' is not a graph
  input, initializer, or output of a previous node"); those no-op casts are removed from the file.

The traceable forms are methods of their modules (``forward_traceable``); they replace ``forward`` on
module instances only for the duration of the trace.
"""

from __future__ import annotations

import copy
import os
import uuid
import warnings
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import torch

from hersr_arch.archs.hersr_arch import (
    HERSR,
    DySample,
    FrequencyExpert,
    WindowAttention,
)
from hersr_arch.loading import CheckpointError, load_hersr

# Largest |onnxruntime - PyTorch| allowed on outputs of [0, 1] inputs. fp32: float32 round-off (observed
# <= 1e-5 for every preset); a traced branch that does not hold at another size gives 1e-2 or more.
# fp16: half-precision weights and activations against the fp32 PyTorch model (observed <= 5e-3), the
# same bound as bf16 autocast in the precision tests.
TOLERANCE = {"fp32": 1e-4, "fp16": 2e-2}
DEFAULT_OPSET = 17
# Minimum opsets (checked by the tests): window attention (scaled_dot_product_attention) needs 14,
# DySample's GridSample 16. 17 adds LayerNormalization as one op.
MIN_OPSET = 14
MIN_OPSET_DYSAMPLE = 16
EXTRA_HINT = "pip install 'hersr[export]' (onnx, onnxruntime, safetensors)"


class ExportError(RuntimeError):
    """An export that cannot be done or did not verify; the message says which and why."""


def _require(module: str):
    """Import an optional export dependency, or fail with the install command."""
    import importlib

    try:
        return importlib.import_module(module)
    except ImportError:
        raise ExportError(f"{module} is not installed; {EXTRA_HINT}.") from None


def _load(model_path: str | os.PathLike, **overrides) -> HERSR:
    try:
        return load_hersr(model_path, **overrides)
    except CheckpointError as err:
        raise ExportError(str(err)) from None


def _atomic_target(out_path: Path) -> Path:
    """A fresh temporary path beside ``out_path``: written, verified, then renamed over it."""
    out_path.parent.mkdir(parents=True, exist_ok=True)
    return out_path.with_name(f".{out_path.stem}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp{out_path.suffix}")


def _default_permissions(path: Path) -> None:
    umask = os.umask(0)
    os.umask(umask)
    os.chmod(path, 0o666 & ~umask)


# ----------------------------------------------------------------------------------------------
# Deployed weights
# ----------------------------------------------------------------------------------------------


@torch.no_grad()
def export_deploy(model_path: str | os.PathLike, out_path: str | os.PathLike, seed: int = 0) -> dict:
    """Write the reparameterized weights of ``model_path`` to ``out_path`` and verify them.

    ``.safetensors`` needs the safetensors package; anything else is written with ``torch.save`` as
    ``{'params': state_dict}`` (BasicSR's layout, read by ``basicsr test``, spandrel and
    ``load_hersr``). The file is read back with ``load_hersr``: it must rebuild a deployed model
    whose output equals the original model's (max abs diff <= 1e-5 on a [0, 1] input).
    Returns ``{'path', 'params_before', 'params_after', 'max_abs_diff', 'config'}``.
    """
    out_path = Path(out_path)
    safetensors = out_path.suffix == ".safetensors"
    if safetensors:
        _require("safetensors")
    model = _load(model_path)
    params_before = sum(p.numel() for p in model.parameters())
    torch.manual_seed(seed)
    x = torch.rand(1, model.num_in_ch, 29, 37)
    reference = model(x)
    model.switch_to_deploy()
    state = {k: v.detach().contiguous().clone() for k, v in model.state_dict().items()}
    tmp = _atomic_target(out_path)
    try:
        if safetensors:
            from safetensors.torch import save_file

            save_file(state, str(tmp), metadata={"format": "pt", "arch": "HERSR", "deploy": "true"})
            _default_permissions(tmp)  # safetensors creates its files owner-only
        else:
            torch.save({"params": state}, tmp)
        rebuilt = _load(tmp)
        diff = (rebuilt(x) - reference).abs().max().item()
        if not rebuilt.deploy or not diff <= 1e-5:
            raise ExportError(
                f"the deployed weights do not reproduce the model (deploy={rebuilt.deploy}, "
                f"max abs diff {diff:.3g} > 1e-5); nothing was written."
            )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return {
        "path": out_path,
        "params_before": params_before,
        "params_after": sum(p.numel() for p in rebuilt.parameters()),
        "max_abs_diff": diff,
        "config": rebuilt.config,
    }


@contextmanager
def _traceable(model: HERSR) -> Iterator[None]:
    """Run the modules that have a traceable form (``forward_traceable``) in it; restore them afterwards."""
    patched = [m for m in model.modules() if hasattr(m, "forward_traceable")]
    for module in patched:
        module.forward = module.forward_traceable
    try:
        yield
    finally:
        for module in patched:
            del module.forward


# ----------------------------------------------------------------------------------------------
# ONNX
# ----------------------------------------------------------------------------------------------


def trace_size(model: HERSR, start: int = 20) -> tuple[int, int]:
    """An input ``(H, W)`` whose trace holds every size-dependent pad of ``model`` (see module doc).

    Conditions: ``H, W`` not multiples of the internal size multiple (the input pad is traced); at
    every scale, the map is not a window multiple unless every size gives one there (the window
    pad is traced); the bottleneck is at least 2x2; ``H != W`` (a transposition cannot pass).
    """
    multiple = model.size_multiple
    windows = {m.window_size for m in model.modules() if isinstance(m, WindowAttention)}
    scales = model.num_stages

    def good(n: int) -> bool:
        padded = -(-n // multiple) * multiple
        if n % multiple == 0 or padded // 2 ** (scales - 1) < 2:
            return False
        for i in range(scales):
            step = multiple // 2**i  # every size at stage i is a multiple of this
            for ws in windows:
                if step % ws and (padded // 2**i) % ws == 0:
                    return False
        return True

    h = next(n for n in range(start, start + 64 * multiple) if good(n))
    w = next(n for n in range(h + 1, h + 1 + 64 * multiple) if good(n))
    return h, w


def check_shapes(model: HERSR, trace: tuple[int, int]) -> list[tuple[int, int, int, int]]:
    """Inputs on which onnxruntime must match PyTorch: the trace size, an odd size with batch 2, a tiny
    size, and a size just past ``train_size`` (so both ``ContextPool`` regimes are checked)."""
    c = model.num_in_ch
    past = model.context_pool.train_size * 2 ** (model.num_stages - 1) + model.size_multiple + 1
    return [(1, c, *trace), (2, c, 37, 29), (1, c, 7, 5), (1, c, past, 11)]


@dataclass
class OnnxReport:
    """What ``export_onnx`` wrote and how it compared with PyTorch."""

    path: Path
    opset: int
    fp16: bool
    trace_size: tuple[int, int]
    tolerance: float
    checks: list[tuple[tuple[int, ...], float]] = field(default_factory=list)  # ((B, C, H, W), max abs diff)
    notes: list[str] = field(default_factory=list)


def _drop_identity_casts(onnx, model_proto) -> int:
    """Remove ``Cast`` nodes whose input already has the target type (see module doc); returns how many."""
    inferred = onnx.shape_inference.infer_shapes(model_proto)
    graph = model_proto.graph
    types = {v.name: v.type.tensor_type.elem_type for v in (*inferred.graph.value_info, *graph.input)}
    types.update({t.name: t.data_type for t in graph.initializer})
    outputs = {o.name for o in graph.output}
    rename: dict[str, str] = {}
    kept = []
    for node in graph.node:
        for i, name in enumerate(node.input):
            node.input[i] = rename.get(name, name)
        if node.op_type == "Cast" and node.output[0] not in outputs:
            to = next(a.i for a in node.attribute if a.name == "to")
            if types.get(node.input[0]) == to:
                rename[node.output[0]] = node.input[0]
                continue
        kept.append(node)
    del graph.node[:]
    graph.node.extend(kept)
    return len(rename)


def _explain_export_failure(err: Exception, opset: int) -> str:
    text = f"{type(err).__name__}: {str(err).splitlines()[0][:300]}"
    if "grid_sampler" in text:
        return f"DySample (upsampler: dysample) needs GridSample, opset >= 16; got --opset {opset} ({text})."
    if "fft" in text:
        return f"the FFT expert could not be exported at opset {opset} ({text})."
    return f"torch.onnx.export failed at opset {opset}: {text}"


def _dysample_fp32(self: DySample, x: torch.Tensor) -> torch.Tensor:
    return type(self).forward(self, x.float()).to(x.dtype)


def _fp16_model(model: HERSR) -> HERSR:
    """Half-precision weights and activations, with fp32 islands: the MoE router and the FFT expert (fp32
    in HERSR itself) and DySample, whose sampling grid comes from ``Range``, which ONNX defines for
    float32 but not float16."""
    model = model.half()
    for module in model.modules():
        if isinstance(module, FrequencyExpert):
            module.float()
        elif isinstance(module, DySample):
            module.float()
            module.forward = _dysample_fp32.__get__(module)
    if model.moe is not None:
        model.moe.router.float()
    return model


@torch.no_grad()
def export_onnx(
    model_path: str | os.PathLike,
    out_path: str | os.PathLike,
    opset: int = DEFAULT_OPSET,
    fp16: bool = False,
    seed: int = 0,
    log: Callable[[str], None] = lambda message: None,
) -> OnnxReport:
    """Export ``model_path`` to ONNX at ``out_path`` and check it against PyTorch (see module doc).

    Input ``input: (batch, C_in, height, width)``, output ``output: (batch, C_out, s*height, s*width)``,
    float32 (float16 with ``fp16``) in [0, 1]. Raises ``ExportError`` when the export fails or any
    check exceeds ``TOLERANCE``; then nothing is written.
    """
    onnx = _require("onnx")
    ort = _require("onnxruntime")
    out_path = Path(out_path)
    model = _load(model_path).switch_to_deploy()
    if opset < MIN_OPSET:
        raise ExportError(f"--opset {opset} is too old: window attention (scaled_dot_product_attention) needs "
                          f"opset >= {MIN_OPSET}; the default is {DEFAULT_OPSET}.")
    if opset < MIN_OPSET_DYSAMPLE and any(isinstance(m, DySample) for m in model.modules()):
        raise ExportError(f"--opset {opset} is too old for this model: DySample (upsampler: dysample) needs "
                          f"GridSample, opset >= {MIN_OPSET_DYSAMPLE}; the default is {DEFAULT_OPSET}.")
    report = OnnxReport(out_path, opset, fp16, trace_size(model), TOLERANCE["fp16" if fp16 else "fp32"])
    noise = getattr(getattr(model, "texture", None), "noise", None)
    if noise is not None and noise.weight is not None and noise.strength and noise.weight.abs().max() > 0:
        report.notes.append("texture noise is off in the ONNX graph (as --noise-strength 0): its coordinate "
                            "hash needs 64-bit shifts that ONNX BitShift does not express")
    if noise is not None:
        noise.strength = 0.0
    reference = model  # fp32 PyTorch: the ground truth for every check
    traced = _fp16_model(copy.deepcopy(model)) if fp16 else model
    dtype = torch.float16 if fp16 else torch.float32
    gen = torch.Generator().manual_seed(seed)
    h, w = report.trace_size
    example = torch.rand(1, model.num_in_ch, h, w, generator=gen)

    tmp = _atomic_target(out_path)
    try:
        log(f"tracing at {h}x{w} (opset {opset}{', fp16' if fp16 else ''})")
        try:
            with _traceable(traced), warnings.catch_warnings(), _stdout_to_devnull():
                warnings.simplefilter("ignore")  # TracerWarnings about the branches handled above
                torch.onnx.export(
                    traced, (example.to(dtype),), str(tmp), dynamo=False, opset_version=opset,
                    input_names=["input"], output_names=["output"], do_constant_folding=True,
                    dynamic_axes={"input": {0: "batch", 2: "height", 3: "width"},
                                  "output": {0: "batch", 2: "out_height", 3: "out_width"}},
                )  # fmt: skip
        except Exception as err:  # the exporter raises many types
            raise ExportError(_explain_export_failure(err, opset)) from None
        proto = onnx.load(str(tmp))
        _drop_identity_casts(onnx, proto)
        meta = {"arch": "HERSR", "upscale": str(model.upscale), "hersr_config": model.config.to_json(),
                "noise": "off", "precision": "fp16" if fp16 else "fp32"}  # fmt: skip
        for key, value in meta.items():
            proto.metadata_props.add(key=key, value=value)
        onnx.save(proto, str(tmp))

        options = ort.SessionOptions()
        options.log_severity_level = 4  # fp16 warnings per node; a failure is reported in our error instead
        try:
            session = ort.InferenceSession(str(tmp), options, providers=_providers(ort, fp16))
        except Exception as err:  # onnxruntime raises its own types
            raise ExportError(f"onnxruntime {ort.__version__} cannot load the exported graph "
                              f"({str(err).splitlines()[0][:300]}); the file was not written.") from None
        for shape in check_shapes(model, (h, w)):
            x = torch.rand(*shape, generator=gen)
            expected = reference(x).numpy()
            try:
                got = session.run(None, {"input": x.to(dtype).numpy()})[0]
            except Exception as err:  # onnxruntime raises its own types
                first_line = str(err).splitlines()[0][:300]
                raise ExportError(f"onnxruntime failed on an input of shape {shape} ({first_line}); the file was "
                                  "not written.") from None
            if got.shape != expected.shape:
                raise ExportError(f"onnxruntime output shape {got.shape} != PyTorch {expected.shape} for input "
                                  f"{shape}; the file was not written.")
            diff = float(abs(got.astype("float32") - expected).max())
            report.checks.append((shape, diff))
            log(f"check {'x'.join(map(str, shape))}: max |onnxruntime - PyTorch| = {diff:.2e}")
            if not diff <= report.tolerance:
                raise ExportError(
                    f"onnxruntime differs from PyTorch by {diff:.3g} (> {report.tolerance:g}) on an input of shape "
                    f"{shape}; the file was not written."
                )
        os.replace(tmp, out_path)
    finally:
        tmp.unlink(missing_ok=True)
    return report


@contextmanager
def _stdout_to_devnull() -> Iterator[None]:
    """Silence file descriptor 1: on failure the exporter prints the whole TorchScript graph from C++."""
    import sys

    sys.stdout.flush()
    saved = os.dup(1)
    try:
        with open(os.devnull, "w") as null:
            os.dup2(null.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def _providers(ort, fp16: bool) -> list[str]:
    available = ort.get_available_providers()
    if fp16 and "CUDAExecutionProvider" in available:
        return ["CUDAExecutionProvider", "CPUExecutionProvider"]
    return ["CPUExecutionProvider"]
