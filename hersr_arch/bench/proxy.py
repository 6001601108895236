"""Equal-budget quality proxy: every model trained on the same pre-generated batches, then scored.

Each model gets the same data (the embedded dataset), the same batch sequence (crops, flips and
order drawn once from a seed), the same optimizer, learning rate, iterations and seed; then PSNR
and SSIM (Y channel, border = scale) on the held-out photographs. HERSR starts at bicubic quality
(global residual) while most peers start far below it, so a short budget ranks starting points,
not architectures: the report gives bicubic as the floor, flags models that have not passed it,
and gives each model's wall time (iterations cost very different amounts). With ``eval_every``
each model is also scored during training, which gives the iteration (and second) at which it first
passed bicubic and its PSNR at an equal wall time: the shortest training time of the run.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hersr_arch.bench.targets import load_targets
from hersr_arch.data.prepare import build_embedded_dataset, list_images


@dataclass
class ProxyConfig:
    iters: int = 2000
    seconds: float = 0.0  # > 0: train each model for this wall time instead of ``iters``
    batch: int = 8
    patch: int = 32  # LR patch side
    lr: float = 5e-4
    seed: int = 0
    eval_every: int = 0  # > 0: also score every this many iterations (the learning curve)
    scale: int = 4
    data_root: str = "datasets/embedded"


def _read(path: Path) -> np.ndarray:
    img = cv2.imread(str(path), cv2.IMREAD_COLOR)
    return img[:, :, ::-1].astype(np.float32) / 255.0  # RGB in [0, 1]


def _to_tensor(img: np.ndarray) -> torch.Tensor:
    return torch.from_numpy(np.ascontiguousarray(img.transpose(2, 0, 1)))


class BatchSequence:
    """The shared training batches: drawn once, replayed identically for every model."""

    def __init__(self, root: Path, config: ProxyConfig, length: int):
        gt_dir, lq_dir = root / "train" / "GT", root / "train" / f"LRbicx{config.scale}"
        names = [p.name for p in list_images(gt_dir)]
        self.gt = [_to_tensor(_read(gt_dir / n)) for n in names]
        self.lq = [_to_tensor(_read(lq_dir / n)) for n in names]
        rng = np.random.default_rng(config.seed)
        self.plan = []
        for _ in range(length):
            picks = []
            for _ in range(config.batch):
                i = int(rng.integers(len(names)))
                h, w = self.lq[i].shape[-2:]
                y, x = int(rng.integers(h - config.patch + 1)), int(rng.integers(w - config.patch + 1))
                picks.append((i, y, x, bool(rng.integers(2)), int(rng.integers(4))))
            self.plan.append(picks)
        self.config = config

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        p, s = self.config.patch, self.config.scale
        lqs, gts = [], []
        for i, y, x, flip, rot in self.plan[step % len(self.plan)]:
            lq = self.lq[i][:, y : y + p, x : x + p]
            gt = self.gt[i][:, y * s : (y + p) * s, x * s : (x + p) * s]
            if flip:
                lq, gt = lq.flip(-1), gt.flip(-1)
            lqs.append(torch.rot90(lq, rot, (1, 2)))
            gts.append(torch.rot90(gt, rot, (1, 2)))
        return torch.stack(lqs), torch.stack(gts)


def _y_metrics(sr: np.ndarray, gt: np.ndarray, border: int) -> tuple[float, float]:
    from hersr_arch._compat import apply_torchvision_compat

    apply_torchvision_compat()
    from basicsr.metrics import calculate_psnr, calculate_ssim

    a = (np.clip(sr, 0, 1) * 255).round()[:, :, ::-1]  # BGR as BasicSR expects
    b = (gt * 255).round()[:, :, ::-1]
    kwargs = dict(crop_border=border, input_order="HWC", test_y_channel=True)
    return calculate_psnr(a, b, **kwargs), calculate_ssim(a, b, **kwargs)


def evaluate(forward: Callable[[torch.Tensor], torch.Tensor], root: Path, scale: int) -> tuple[float, float]:
    """Mean Y-PSNR / SSIM over the held-out images."""
    scores = []
    gt_dir, lq_dir = root / "test" / f"GTmod{scale}", root / "test" / f"LRbicx{scale}"
    for path in list_images(gt_dir):
        gt = _read(path)
        lq = _to_tensor(_read(lq_dir / path.name))[None]
        with torch.inference_mode():
            sr = forward(lq)[0].float().numpy().transpose(1, 2, 0)
        scores.append(_y_metrics(sr, gt, scale))
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def bicubic_floor(root: Path, scale: int) -> tuple[float, float]:
    """MATLAB's bicubic up-sampling of the 8-bit LR images: the literature's 'Bicubic' row."""
    from hersr_arch.archs.bicubic_arch import MATLABBicubic

    return evaluate(MATLABBicubic(scale), root, scale)


def train_and_score(
    net: nn.Module,
    batches: BatchSequence,
    config: ProxyConfig,
    root: Path,
    floor_psnr: float | None = None,
    log=None,
    *,
    loss_fn: Callable[[torch.Tensor | tuple, torch.Tensor], torch.Tensor] | None = None,
    evaluate_fn: Callable[[Callable[[torch.Tensor], torch.Tensor]], tuple[float, float]] | None = None,
    until_seconds: float = 0.0,
) -> dict:
    """Train ``net`` on the shared batches and score it; scoring time is not counted as training time.

    ``loss_fn(output, gt)`` replaces the L1 loss of the main output (``output`` is the network's return
    value, a tuple for MSG outputs); the network's MoE aux loss is added either way. ``evaluate_fn``
    replaces the held-out x``scale`` scoring. With ``until_seconds`` (equal wall time against another
    model), training also goes on past ``iters`` until that many seconds, and the model is scored at
    the step that crosses it.

    Returns iterations, training seconds, final PSNR/SSIM, ``curve``: ``[iters, seconds, psnr, ssim]``
    at every ``eval_every`` iterations and at the end, ``at_iters`` (the curve point at ``iters``) and,
    with ``until_seconds``, ``at_time`` (the point that crossed it).
    """
    torch.manual_seed(config.seed)
    opt = torch.optim.Adam(net.parameters(), lr=config.lr, betas=(0.9, 0.99))
    curve = []
    at_time = None

    def score(step: int, seconds: float) -> list:
        if curve and curve[-1][0] == step:
            return curve[-1]
        net.eval()
        if evaluate_fn is None:
            psnr, ssim = evaluate(lambda x: net(x), root, config.scale)
        else:
            psnr, ssim = evaluate_fn(lambda x: net(x))
        net.train()
        curve.append([step, seconds, psnr, ssim])
        if log is not None:
            log(f"proxy:   {step} iterations, {seconds:.0f} s: {psnr:.2f} dB")
        return curve[-1]

    def running(step: int, trained: float) -> bool:
        if config.seconds > 0:
            return trained < config.seconds
        return step < config.iters or trained < until_seconds

    net.train()
    trained = 0.0  # seconds spent training, scoring excluded
    step = 0
    while running(step, trained):
        start = time.perf_counter()
        lq, gt = batches[step]
        out = net(lq)
        if loss_fn is None:
            loss = F.l1_loss(out[0] if isinstance(out, tuple) else out, gt)
        else:
            loss = loss_fn(out, gt)
        aux = getattr(net, "aux_loss", None)
        if isinstance(aux, torch.Tensor) and aux.requires_grad:
            loss = loss + aux
        opt.zero_grad(set_to_none=True)
        loss.backward()
        opt.step()
        trained += time.perf_counter() - start
        step += 1
        if (config.eval_every > 0 and step % config.eval_every == 0) or (config.seconds <= 0 and step == config.iters):
            score(step, trained)
        if until_seconds > 0 and at_time is None and trained >= until_seconds:
            at_time = score(step, trained)
    last = score(step, trained)
    passed = next((p for p in curve if floor_psnr is not None and p[2] > floor_psnr), None)
    at_iters = next((p for p in curve if p[0] == config.iters), None)
    return {
        "iters": step,
        "seconds": trained,
        "psnr": last[2],
        "ssim": last[3],
        "curve": curve,
        "passed_bicubic_at": None if passed is None else passed[:2],
        "at_iters": at_iters,
        "at_time": at_time,
    }


def run_proxy(models: dict[str, Callable[[], nn.Module]], config: ProxyConfig, log=print) -> dict:
    """Train and score every model; returns ``{'bicubic': (psnr, ssim), 'models': {name: result}}``."""
    root = build_embedded_dataset(config.data_root, show_progress=False).root
    length = config.iters if config.seconds <= 0 else 100_000
    batches = BatchSequence(root, config, min(length, 100_000))
    floor = bicubic_floor(root, config.scale)
    results = {}
    for name, make in models.items():
        log(f"proxy: training {name}")
        torch.manual_seed(config.seed)
        results[name] = train_and_score(make(), batches, config, root, floor[0], log)
    return {"bicubic": floor, "models": results, "config": config.__dict__}




def psnr_within(result: dict, seconds: float) -> float | None:
    """PSNR at the last score taken within ``seconds`` of training (None if there is none)."""
    points = [p for p in result["curve"] if p[1] <= seconds * 1.001]
    return points[-1][2] if points else None


def check_proxy_targets(result: dict) -> list[tuple[str, str]]:
    """``(target, verdict)`` for each HERSR-vs-peer quality target whose two models were trained."""
    models, floor = result["models"], result["bicubic"][0]
    equal_time = min((r["seconds"] for r in models.values()), default=0.0)
    rows = []
    for ours, peer in load_targets()["proxy"]:
        if ours not in models or peer not in models:
            continue
        a, b = models[ours], models[peer]
        verdict = f"{a['psnr'] - b['psnr']:+.2f} dB at equal iterations" + (
            " (met)" if a["psnr"] >= b["psnr"] else " (MISSED)"
        )
        ta, tb = psnr_within(a, equal_time), psnr_within(b, equal_time)
        if ta is not None and tb is not None:
            verdict += f"; {ta - tb:+.2f} dB at {equal_time:.0f} s each" + (
                " (met)" if ta >= tb else " (MISSED)"
            )
        never = [name for name, r in ((ours, a), (peer, b)) if r["passed_bicubic_at"] is None]
        dipped = [name for name, r in ((ours, a), (peer, b)) if r["passed_bicubic_at"] and r["psnr"] <= floor]
        if never:
            verdict = f"not conclusive, {' and '.join(never)} never passed bicubic (this ranks starting points): " + verdict
        elif dipped:
            verdict += f" ({' and '.join(dipped)} passed bicubic, then ended below it: a noisy last score)"
        rows.append((f"{ours.split(' ')[0]} proxy PSNR >= {peer}", verdict))
    return rows


def render_proxy(result: dict) -> str:
    cfg = result["config"]
    budget = (
        f"{cfg['seconds']:.0f} s of training each"
        if cfg["seconds"] > 0
        else f"{cfg['iters']} iterations each"
    )
    floor_psnr, floor_ssim = result["bicubic"]
    equal_time = min((r["seconds"] for r in result["models"].values()), default=0.0)
    lines = [
        "",
        f"## Quality proxy (equal budget: {budget}; batch {cfg['batch']}, LR patch {cfg['patch']}, Adam "
        f"{cfg['lr']}, seed {cfg['seed']}, embedded dataset, x{cfg['scale']})",
        "",
        "PSNR/SSIM on Y over the held-out photographs. A short budget ranks starting points, not "
        "architectures: HERSR starts at bicubic quality, most peers far below it. 'Passed bicubic' is the "
        f"first score above the floor (scored every {cfg['eval_every'] or cfg['iters']} iterations); "
        f"'PSNR at {equal_time:.0f} s' is each model's last score within the shortest training time of the "
        "run (equal wall time; training seconds exclude scoring).",
        "",
        f"| model | iterations | train s | PSNR | SSIM | vs bicubic | passed bicubic at | PSNR at {equal_time:.0f} s |",
        "| --- | ---: | ---: | ---: | ---: | --- | --- | ---: |",
        f"| Bicubic (MATLAB) | - | - | {floor_psnr:.2f} | {floor_ssim:.4f} | floor | - | - |",
    ]
    for name, r in result["models"].items():
        delta = r["psnr"] - floor_psnr
        behind = " (not yet past bicubic)" if r["passed_bicubic_at"] is None else " (below bicubic at the end)"
        verdict = f"{delta:+.2f} dB" + ("" if delta > 0 else behind)
        passed = r["passed_bicubic_at"]
        passed_text = "not yet" if passed is None else f"{passed[0]} it / {passed[1]:.0f} s"
        at_time = psnr_within(r, equal_time)
        lines.append(
            f"| {name} | {r['iters']} | {r['seconds']:.0f} | {r['psnr']:.2f} | {r['ssim']:.4f} | {verdict} "
            f"| {passed_text} | {'n/a' if at_time is None else f'{at_time:.2f}'} |"
        )
    targets = check_proxy_targets(result)
    if targets:
        lines += ["", "Quality targets:", ""] + [f"- {text}: {verdict}" for text, verdict in targets]
    return "\n".join(lines) + "\n"
