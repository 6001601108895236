"""HERSRModel: BasicSR's SRModel, plus SRGAN training when ``network_d`` is given.

Overrides only what differs from ``basicsr.models.sr_model.SRModel``: training settings (extra
losses, discriminator, AMP, clipping), ``optimize_parameters`` and ``test`` (tiling and
self-ensemble). Validation, metrics, saving and resuming are BasicSR's.

Training options (under ``train:``), each optional:

- ``pixel_opt``, ``perceptual_opt``: as in SRModel (``perceptual_opt`` may be used without GAN).
- ``frequency_opt``: e.g. ``{type: FFTLoss, loss_weight: 0.05}``.
- ``msg_opt``: MSG deep supervision, e.g. ``{type: L1Loss, loss_weight: 1.0, weights: [0.5, 0.25,
  0.125]}``: per-scale loss of the network's MSG images (``network_g.msg_outputs: true``) against the
  GT area-downscaled to their size; ``weights`` are per scale (finest first).
- ``moe_aux_weight`` (default 1.0): weight of the network's ``aux_loss`` (MoE balance + z-loss).
- ``gan_opt``, ``optim_d``, ``net_d_iters`` (1), ``net_d_init_iters`` (0): SRGAN semantics, used when
  the options have ``network_d`` (e.g. BasicSR's ``UNetDiscriminatorSN``).
- ``ema_decay`` (0 = off): EMA generator, saved as ``params_ema``.
- ``grad_clip`` (0 = off): max global gradient norm of the generator.
- ``amp`` (``null``, ``bf16`` or ``fp16``): autocast for forward and losses; fp16 uses a GradScaler
  and needs CUDA; bf16 works on CPU and on GPUs that support it.
- ``compile`` (default false): ``true``, or ``{backend: ..., mode: ...}``, runs the training forward
  (and so its backward) through ``torch.compile`` with ``fullgraph=True`` and static shapes: one graph
  for the training patch size, compiled on the first step (its time is logged). The weights, EMA,
  checkpoints and validation are those of the plain network.
- ``max_nonfinite_steps`` (default 10): a non-finite loss or gradient skips the step with a warning;
  this many in a row stop training with :class:`TrainingStopped` (the last checkpoint is left
  intact). Under DDP the ranks agree: a step is skipped on every rank when the loss is non-finite on
  any of them (a rank that skipped ``backward`` alone would leave the others waiting for it).

The network options (``network_g``, ``network_d``) are checked before the networks are built: an
unknown keyword is an error that lists the allowed ones (``hersr_arch.option_checks``).

Validation options (under ``val:``): ``tile_size`` (0 = whole image), ``tile_pad`` (16),
``self_ensemble`` (false). Validation is deterministic: the network is in eval mode, where the
texture noise is a fixed seeded map.
"""

from __future__ import annotations

import contextlib
import math
import time
from collections import OrderedDict

import torch
import torch.distributed as dist
import torch.nn.functional as F
from basicsr.archs import build_network
from basicsr.losses import build_loss
from basicsr.models.sr_model import SRModel
from basicsr.utils import get_root_logger
from basicsr.utils.registry import MODEL_REGISTRY

from hersr_arch.archs.hersr_arch import HERSR
from hersr_arch.cpu_inference import prepare_cpu_inference
from hersr_arch.inference import self_ensemble, tiled_forward
from hersr_arch.loading import migrate_state_dict
from hersr_arch.option_checks import check_network_options

_AMP_DTYPES = {"bf16": torch.bfloat16, "fp16": torch.float16}


class TrainingStopped(RuntimeError):
    """Training stopped on purpose (``train.max_nonfinite_steps`` non-finite steps in a row)."""


@MODEL_REGISTRY.register()
class HERSRModel(SRModel):
    """SR/restoration model for HERSR (SRModel-like; SRGAN-style when ``network_d`` is set)."""

    def __init__(self, opt):
        for key in ("network_g", "network_d"):
            if opt.get(key) is not None:
                check_network_options(opt[key], key)
        super().__init__(opt)
        if self.device.type == "cpu":  # CPU kernels for inference; training keeps the plain forward
            for net in (self.net_g, getattr(self, "net_g_ema", None)):
                if net is not None:
                    prepare_cpu_inference(net)

    def load_network(self, net, load_path, strict=True, param_key="params"):
        """BasicSR's ``load_network``; HERSR weights written by older versions are migrated first
        (``hersr_arch.loading.migrate_state_dict``)."""
        bare = self.get_bare_model(net)
        if not isinstance(bare, HERSR):
            return super().load_network(net, load_path, strict, param_key)
        weights = torch.load(load_path, map_location="cpu", weights_only=True)
        if param_key is not None:
            if param_key not in weights and "params" in weights:  # BasicSR's fallback, e.g. no params_ema
                param_key = "params"
            weights = weights[param_key]
        weights = migrate_state_dict({k.removeprefix("module."): v for k, v in weights.items()})
        get_root_logger().info(f"Loading HERSR model from {load_path}, with param key: [{param_key}].")
        self._print_different_keys_loading(bare, weights, strict)
        bare.load_state_dict(weights, strict=strict)

    def init_training_settings(self):
        train_opt = self.opt["train"]
        self.net_g.train()
        self.use_gan = self.opt.get("network_d") is not None
        self.ema_decay = train_opt.get("ema_decay", 0)
        if self.ema_decay > 0:
            get_root_logger().info(f"Use Exponential Moving Average with decay: {self.ema_decay}")
            self.net_g_ema = build_network(self.opt["network_g"]).to(self.device)
            load_path = self.opt["path"].get("pretrain_network_g")
            if load_path is not None:
                self.load_network(
                    self.net_g_ema, load_path, self.opt["path"].get("strict_load_g", True), "params_ema"
                )
            else:
                self.model_ema(0)
            self.net_g_ema.eval()

        if self.use_gan:
            self.net_d = self.model_to_device(build_network(self.opt["network_d"]))
            self.print_network(self.net_d)
            load_path = self.opt["path"].get("pretrain_network_d")
            if load_path is not None:
                param_key = self.opt["path"].get("param_key_d", "params")
                self.load_network(self.net_d, load_path, self.opt["path"].get("strict_load_d", True), param_key)
            self.net_d.train()
            if not train_opt.get("gan_opt"):
                raise ValueError("Options have network_d but no train.gan_opt: add a GANLoss, e.g. "
                                 "{type: GANLoss, gan_type: vanilla, loss_weight: 0.1}.")
            self.cri_gan = build_loss(train_opt["gan_opt"]).to(self.device)
            self.net_d_iters = train_opt.get("net_d_iters", 1)
            self.net_d_init_iters = train_opt.get("net_d_init_iters", 0)

        self.cri_pix = self._build_optional_loss("pixel_opt")
        self.cri_perceptual = self._build_optional_loss("perceptual_opt")
        self.cri_freq = self._build_optional_loss("frequency_opt")
        msg_opt = dict(train_opt.get("msg_opt") or {})
        self.msg_weights = list(msg_opt.pop("weights", [0.5, 0.25, 0.125]))
        self.cri_msg = build_loss(msg_opt).to(self.device) if msg_opt else None
        if self.cri_msg is not None and not getattr(self.get_bare_model(self.net_g), "msg_outputs", False):
            raise ValueError("train.msg_opt is set but network_g has msg_outputs: false; enable it or drop msg_opt.")
        if self.cri_pix is None and self.cri_perceptual is None:
            raise ValueError("Both pixel and perceptual losses are None: set train.pixel_opt or perceptual_opt.")
        self.moe_aux_weight = float(train_opt.get("moe_aux_weight", 1.0))
        self.grad_clip = float(train_opt.get("grad_clip", 0) or 0)
        self.max_nonfinite_steps = int(train_opt.get("max_nonfinite_steps", 10))
        self.nonfinite_steps = 0
        self._setup_amp(train_opt.get("amp"))
        self.train_forward = self._training_forward(train_opt.get("compile", False))

        self.setup_optimizers()
        self.setup_schedulers()

    def _training_forward(self, option):
        """``net_g`` itself, or with ``train.compile`` the same module through ``torch.compile`` (shared
        parameters, so the state dict keeps its keys)."""
        self.compile_seconds = None
        if option in (None, False):
            return self.net_g
        kwargs = {} if option is True else option
        if not isinstance(kwargs, dict) or set(kwargs) - {"backend", "mode"}:
            raise ValueError(f"train.compile={option!r} is not supported; use true, false, or a mapping with "
                             "'backend' and/or 'mode' (torch.compile's arguments).")  # fmt: skip
        get_root_logger().info(f"train.compile: torch.compile(fullgraph=True, dynamic=False, {kwargs}) of net_g")
        self.compile_seconds = 0.0  # set by the first step
        return torch.compile(self.net_g, fullgraph=True, dynamic=False, **kwargs)

    def _build_optional_loss(self, key):
        opt = self.opt["train"].get(key)
        return build_loss(opt).to(self.device) if opt else None

    def _setup_amp(self, amp):
        if amp in (None, False, "none", "fp32"):
            self.amp_dtype = None
        elif amp not in _AMP_DTYPES:
            raise ValueError(f"train.amp={amp!r} is not supported; use one of null, 'bf16', 'fp16'.")
        elif amp == "fp16" and self.device.type != "cuda":
            raise ValueError("train.amp='fp16' needs a CUDA device (CPU has no fp16 autocast training); "
                             "use amp: bf16 on CPU.")
        elif amp == "bf16" and self.device.type == "cuda" and not torch.cuda.is_bf16_supported():
            raise ValueError("train.amp='bf16' is not supported by this GPU; use amp: fp16.")
        else:
            self.amp_dtype = _AMP_DTYPES[amp]
        use_scaler = self.amp_dtype == torch.float16
        self.scaler = torch.amp.GradScaler(self.device.type, enabled=use_scaler)

    def _autocast(self):
        if self.amp_dtype is None:
            return contextlib.nullcontext()
        return torch.autocast(device_type=self.device.type, dtype=self.amp_dtype)

    def setup_optimizers(self):
        train_opt = self.opt["train"]
        optim_opt = dict(train_opt["optim_g"])
        optim_type = optim_opt.pop("type")
        params = [p for p in self.net_g.parameters() if p.requires_grad]
        self.optimizer_g = self.get_optimizer(optim_type, params, **optim_opt)
        self.optimizers.append(self.optimizer_g)
        if self.use_gan:
            optim_opt = dict(train_opt["optim_d"])
            optim_type = optim_opt.pop("type")
            self.optimizer_d = self.get_optimizer(optim_type, self.net_d.parameters(), **optim_opt)
            self.optimizers.append(self.optimizer_d)

    # -- training ------------------------------------------------------------------------------

    def _generator_losses(self, output, aux_images, loss_dict, adversarial: bool):
        bare = self.get_bare_model(self.net_g)
        total = output.new_zeros((), dtype=torch.float32)
        if self.cri_pix:
            loss_dict["l_pix"] = self.cri_pix(output, self.gt)
            total = total + loss_dict["l_pix"]
        if self.cri_freq:
            loss_dict["l_freq"] = self.cri_freq(output, self.gt)
            total = total + loss_dict["l_freq"]
        if self.cri_msg and aux_images:
            l_msg = 0
            for weight, aux in zip(self.msg_weights, aux_images):
                target = F.adaptive_avg_pool2d(self.gt, aux.shape[-2:])
                l_msg = l_msg + weight * self.cri_msg(aux, target)
            loss_dict["l_msg"] = l_msg
            total = total + l_msg
        aux_loss = getattr(bare, "aux_loss", None)
        if self.moe_aux_weight and isinstance(aux_loss, torch.Tensor) and aux_loss.requires_grad:
            loss_dict["l_moe"] = self.moe_aux_weight * aux_loss
            total = total + loss_dict["l_moe"]
        if self.cri_perceptual and (adversarial or not self.use_gan):
            l_percep, l_style = self.cri_perceptual(output, self.gt)
            for name, value in (("l_percep", l_percep), ("l_style", l_style)):
                if value is not None:
                    loss_dict[name] = value
                    total = total + value
        if adversarial:
            loss_dict["l_g_gan"] = self.cri_gan(self.net_d(output), True, is_disc=False)
            total = total + loss_dict["l_g_gan"]
        return total

    def _loss_is_finite(self, loss) -> bool:
        """Whether ``loss`` is finite, on every rank under DDP (all ranks then skip or step together)."""
        finite = torch.isfinite(loss.detach()).to(torch.int32)
        if self.opt.get("dist") and dist.is_available() and dist.is_initialized():
            dist.all_reduce(finite, op=dist.ReduceOp.MIN)
        return bool(finite.item())

    def _step(self, loss, optimizer, params, clip: float, name: str) -> bool:
        """Backward + (clipped) step; skips and counts a non-finite loss or gradient."""
        if not self._loss_is_finite(loss):
            why = f"loss is {loss.item()}" if not torch.isfinite(loss) else "loss is non-finite on another rank"
            return self._skip(name, why)
        self.scaler.scale(loss).backward()
        self.scaler.unscale_(optimizer)
        norm = torch.nn.utils.clip_grad_norm_(params, clip if clip > 0 else math.inf)
        if not torch.isfinite(norm) and not self.scaler.is_enabled():
            optimizer.zero_grad(set_to_none=True)
            return self._skip(name, f"gradient norm is {norm.item()}")
        self.scaler.step(optimizer)  # with fp16, GradScaler itself skips steps with inf gradients
        self.scaler.update()
        return True

    def _skip(self, name: str, why: str) -> bool:
        self.nonfinite_steps += 1
        get_root_logger().warning(
            f"Non-finite {name} step skipped ({why}); {self.nonfinite_steps} in a row "
            f"(training stops at {self.max_nonfinite_steps})."
        )
        if self.nonfinite_steps >= self.max_nonfinite_steps:
            message = (
                f"{self.nonfinite_steps} consecutive non-finite steps (train.max_nonfinite_steps: "
                f"{self.max_nonfinite_steps}): training stopped. The last saved checkpoint is intact; lower the "
                "learning rate, enable train.grad_clip, or check the data."
            )
            get_root_logger().error(message)
            raise TrainingStopped(message)
        return False

    def optimize_parameters(self, current_iter):
        loss_dict = OrderedDict()
        adversarial = self.use_gan and current_iter % self.net_d_iters == 0 and current_iter > self.net_d_init_iters
        if self.use_gan:
            for p in self.net_d.parameters():
                p.requires_grad = False
        g_ok = False
        self.optimizer_g.zero_grad(set_to_none=True)
        with self._autocast():
            start = time.perf_counter()
            result = self.train_forward(self.lq)
            if self.compile_seconds == 0.0:
                self.compile_seconds = time.perf_counter() - start
                get_root_logger().info(f"train.compile: first forward, compile included, {self.compile_seconds:.1f} s")
            self.output, aux_images = result if isinstance(result, tuple) else (result, [])
            if not self.use_gan or adversarial:
                l_g_total = self._generator_losses(self.output, aux_images, loss_dict, adversarial)
        if not self.use_gan or adversarial:
            g_ok = self._step(l_g_total, self.optimizer_g, self.net_g.parameters(), self.grad_clip, "generator")

        d_ok = True
        if self.use_gan:
            for p in self.net_d.parameters():
                p.requires_grad = True
            self.optimizer_d.zero_grad(set_to_none=True)
            with self._autocast():
                real_pred = self.net_d(self.gt)
                fake_pred = self.net_d(self.output.detach())
                l_d_real = self.cri_gan(real_pred, True, is_disc=True)
                l_d_fake = self.cri_gan(fake_pred, False, is_disc=True)
            loss_dict.update(l_d_real=l_d_real, l_d_fake=l_d_fake,
                             out_d_real=real_pred.detach().float().mean(),
                             out_d_fake=fake_pred.detach().float().mean())
            d_ok = self._step(l_d_real + l_d_fake, self.optimizer_d, self.net_d.parameters(), 0, "discriminator")
        if (g_ok or self.use_gan and not adversarial) and d_ok:
            self.nonfinite_steps = 0

        self._log_gates(loss_dict)
        self.log_dict = self.reduce_loss_dict({k: v.detach().float() for k, v in loss_dict.items()})
        if self.ema_decay > 0:
            self.model_ema(decay=self.ema_decay)

    def _log_gates(self, loss_dict):
        """Router usage: mean gate per expert over the batch (``gate_conv``, ``gate_attn``, ...)."""
        bare = self.get_bare_model(self.net_g)
        gates = getattr(bare, "last_gates", None)
        moe = getattr(bare, "moe", None)
        if gates is None or moe is None:
            return
        usage = gates.float().transpose(0, 1).reshape(gates.shape[1], -1).mean(1)
        for name, value in zip(moe.expert_names, usage):
            loss_dict[f"gate_{name}"] = value

    # -- inference -----------------------------------------------------------------------------

    def test(self):
        net = self.net_g_ema if hasattr(self, "net_g_ema") else self.net_g
        was_training = net.training
        net.eval()
        val_opt = self.opt.get("val") or {}
        tile = int(val_opt.get("tile_size", 0) or 0)
        tile_pad = int(val_opt.get("tile_pad", 16))
        scale = self.opt.get("scale", 1)

        def forward(x):
            with torch.no_grad():
                if tile:
                    return tiled_forward(lambda t: net(t).float(), x, scale, tile, tile_pad)
                return net(x).float()

        with torch.no_grad():
            self.output = self_ensemble(forward, self.lq) if val_opt.get("self_ensemble") else forward(self.lq)
        net.train(was_training)

    def save(self, epoch, current_iter):
        if hasattr(self, "net_g_ema"):
            self.save_network([self.net_g, self.net_g_ema], "net_g", current_iter, param_key=["params", "params_ema"])
        else:
            self.save_network(self.net_g, "net_g", current_iter)
        if self.use_gan:
            self.save_network(self.net_d, "net_d", current_iter)
        self.save_training_state(epoch, current_iter)
