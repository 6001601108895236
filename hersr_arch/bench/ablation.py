"""``hersr bench --ablation``: what each HERSR component buys, at equal iterations and equal time.

Variants of ``hersr_s`` x4 (one component removed or changed each) are trained under the quality
proxy's protocol (``hersr_arch.bench.proxy``): for a given seed every variant gets the same batches,
the same initial seed and the same optimiser, and is scored on the held-out photographs. Each seed
trains the full preset first; its training time is the equal-time budget of that seed, so every
variant is also scored at the step where its own training time crosses the full model's (variants
faster than the full model train on past the iteration budget to get there).

Two seeds (or more) per variant give the seed-to-seed spread; a difference to the full model no
larger than that spread is reported as "no measurable effect". The degradation prompt matters for
restoration, not for bicubic SR, so it has its own short x1 denoising run (prompt off vs on,
Gaussian noise of a level drawn per sample).

Seeds run in parallel worker processes, one torch thread each, each pinned to its own core; each
finished run is written to ``runs_dir`` and reused by a rerun of the same protocol, so an interrupted
ablation resumes where it stopped.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import multiprocessing
import os
import platform
import statistics
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from hersr_arch.archs.hersr_arch import WindowAttention, hersr_s
from hersr_arch.bench.harness import interleaved_latency
from hersr_arch.bench.launch_count import forward_launches
from hersr_arch.bench.model_cost import count_macs, count_params
from hersr_arch.bench.proxy import (
    BatchSequence,
    ProxyConfig,
    _read,
    _to_tensor,
    bicubic_floor,
    train_and_score,
)
from hersr_arch.cpu_inference import prepare_cpu_inference
from hersr_arch.data.prepare import build_embedded_dataset, list_images

MSG_WEIGHTS = (0.5, 0.25, 0.125)  # HERSRModel's default msg_opt weights, coarsest scale last


def without_shift(model: nn.Module) -> nn.Module:
    """Every window attention of ``model`` on the unshifted grid (Swin's shift removed)."""
    for module in model.modules():
        if isinstance(module, WindowAttention):
            module.shift = 0
    return model


def msg_l1(output: tuple[torch.Tensor, list[torch.Tensor]], gt: torch.Tensor) -> torch.Tensor:
    """L1 of the output plus MSG deep supervision: each decoder scale's image against the area-
    downsampled target, weighted as ``HERSRModel``'s ``msg_opt`` default."""
    out, aux_images = output
    loss = F.l1_loss(out, gt)
    for weight, aux in zip(MSG_WEIGHTS, aux_images):
        loss = loss + weight * F.l1_loss(aux, F.adaptive_avg_pool2d(gt, aux.shape[-2:]))
    return loss


@dataclass(frozen=True)
class Variant:
    """One row of the ablation: ``hersr_s`` built with ``kwargs``, then ``adjust`` applied."""

    change: str  # what differs from the full preset, as the table prints it
    kwargs: dict = field(default_factory=dict)
    adjust: Callable[[nn.Module], nn.Module] | None = None
    loss_fn: Callable | None = None
    task: str = "sr"  # 'sr': x4 proxy; 'denoise': the x1 denoising run

    def build(self) -> nn.Module:
        upscale = 4 if self.task == "sr" else 1
        extra = {} if self.task == "sr" else {"train_size": DENOISE_PATCH}
        net = hersr_s(upscale=upscale, **extra, **self.kwargs)
        return self.adjust(net) if self.adjust else net


VARIANTS: dict[str, Variant] = {
    "full": Variant("hersr_s as preset (Haar split, both paths, MoE conv+attn+fft per image, PLK 13)"),
    "freq-none": Variant("no frequency split", dict(freq_split="none")),
    "freq-avgpool": Variant("avg-pool split instead of Haar", dict(freq_split="avgpool")),
    "local-only": Variant("local path only (no window attention + GDFN)", dict(use_context=False)),
    "context-only": Variant("context path only (no PLK + gated conv)", dict(use_local=False)),
    "no-moe": Variant("no MoE bottleneck", dict(use_moe=False)),
    "conv-expert": Variant("MoE with a single conv expert", dict(moe_experts=("conv",))),
    "token-routing": Variant("MoE routed per token instead of per image", dict(moe_routing="token")),
    "no-texture": Variant("no texture head (no noise, no modulated conv)", dict(use_texture_head=False)),
    "plk3": Variant("PLK kernel 3 instead of 13", dict(plk_kernel=3)),
    "no-shift": Variant("no attention shift (every block on the same window grid)", adjust=without_shift),
    "msg": Variant("MSG deep supervision on (loss weights 0.5/0.25/0.125)", dict(msg_outputs=True), loss_fn=msg_l1),
    "denoise-no-prompt": Variant("x1 denoising, no degradation prompt", task="denoise"),
    "denoise-prompt": Variant("x1 denoising, degradation prompt on", dict(use_prompt=True), task="denoise"),
}
BASELINE = {"sr": "full", "denoise": "denoise-no-prompt"}

DENOISE_PATCH = 48
DENOISE_SIGMAS = (15, 25, 50)  # training draws one per sample; scoring averages over the three


@dataclass
class AblationConfig:
    iters: int = 2000
    denoise_iters: int = 1000
    seeds: tuple[int, ...] = (0, 1)
    batch: int = 4
    patch: int = 32
    lr: float = 5e-4
    eval_every: int = 250
    variants: tuple[str, ...] = tuple(VARIANTS)
    workers: int = 0  # 0: one per seed, at most the usable cores
    data_root: str = "datasets/embedded"
    runs_dir: str = "experiments/ablation_runs"
    cost_size: tuple[int, int] = (180, 320)  # (H, W) LR input of the cost columns
    cost_rounds: int = 7

    def protocol(self, task: str, seed: int) -> ProxyConfig:
        if task == "sr":
            return ProxyConfig(iters=self.iters, batch=self.batch, patch=self.patch, lr=self.lr, seed=seed,
                               eval_every=self.eval_every, scale=4, data_root=self.data_root)  # fmt: skip
        return ProxyConfig(iters=self.denoise_iters, batch=self.batch, patch=DENOISE_PATCH, lr=self.lr, seed=seed,
                           eval_every=self.eval_every, scale=1, data_root=self.data_root)  # fmt: skip


def unknown_variants(names) -> list[str]:
    return [n for n in names if n not in VARIANTS]


class NoisyBatches:
    """x1 denoising batches: GT crops of the training photos with Gaussian noise, drawn once from the
    seed (crop, flip, rotation, noise level and noise), so every variant sees the same batches."""

    def __init__(self, root: Path, config: ProxyConfig, length: int):
        gt_dir = root / "train" / "GT"
        self.gt = [_to_tensor(_read(p)) for p in list_images(gt_dir)]
        self.config, self.length = config, length
        rng = np.random.default_rng(config.seed)
        self.plan = []
        for _ in range(length):
            picks = []
            for _ in range(config.batch):
                i = int(rng.integers(len(self.gt)))
                h, w = self.gt[i].shape[-2:]
                y, x = int(rng.integers(h - config.patch + 1)), int(rng.integers(w - config.patch + 1))
                sigma = float(rng.choice(DENOISE_SIGMAS))
                picks.append((i, y, x, bool(rng.integers(2)), int(rng.integers(4)), sigma, int(rng.integers(2**31))))
            self.plan.append(picks)

    def __getitem__(self, step: int) -> tuple[torch.Tensor, torch.Tensor]:
        p = self.config.patch
        noisy, clean = [], []
        for i, y, x, flip, rot, sigma, noise_seed in self.plan[step % len(self.plan)]:
            gt = self.gt[i][:, y : y + p, x : x + p]
            gt = torch.rot90(gt.flip(-1) if flip else gt, rot, (1, 2))
            noise = torch.randn(gt.shape, generator=torch.Generator().manual_seed(noise_seed)) * (sigma / 255)
            noisy.append(gt + noise)
            clean.append(gt)
        return torch.stack(noisy), torch.stack(clean)


def evaluate_denoise(forward: Callable[[torch.Tensor], torch.Tensor], root: Path) -> tuple[float, float]:
    """Mean RGB PSNR / SSIM over the held-out photographs at each noise level (fixed noise per image)."""
    from hersr_arch._compat import apply_torchvision_compat

    apply_torchvision_compat()
    from basicsr.metrics import calculate_psnr, calculate_ssim

    scores = []
    for index, path in enumerate(list_images(root / "test" / "GTmod4")):
        gt = _read(path)
        clean = _to_tensor(gt)[None]
        for sigma in DENOISE_SIGMAS:
            gen = torch.Generator().manual_seed(1000 * index + sigma)
            noisy = clean + torch.randn(clean.shape, generator=gen) * (sigma / 255)
            with torch.inference_mode():
                out = forward(noisy)[0].float().clamp(0, 1).numpy().transpose(1, 2, 0)
            a, b = (out * 255).round(), (gt * 255).round()
            kwargs = dict(crop_border=0, input_order="HWC", test_y_channel=False)
            scores.append((calculate_psnr(a, b, **kwargs), calculate_ssim(a, b, **kwargs)))
    return float(np.mean([s[0] for s in scores])), float(np.mean([s[1] for s in scores]))


def _run_key(config: AblationConfig, name: str, seed: int) -> str:
    """Names a finished run by everything that decides its result, so a rerun reuses only equal runs."""
    variant = VARIANTS[name]
    protocol = asdict(config.protocol(variant.task, seed))
    text = json.dumps([name, variant.change, sorted(variant.kwargs.items()), protocol], sort_keys=True, default=str)
    return hashlib.sha256(text.encode()).hexdigest()[:12]


def _train_seed(args: tuple[AblationConfig, int, list[str], int | None]) -> dict[str, dict]:
    """Worker: every requested variant for one seed, baseline of each task first; one thread, one core."""
    config, seed, names, core = args
    if core is not None and hasattr(os, "sched_setaffinity"):
        os.sched_setaffinity(0, {core})
    torch.set_num_threads(1)
    root = Path(config.data_root)
    runs_dir = Path(config.runs_dir)
    runs_dir.mkdir(parents=True, exist_ok=True)
    results: dict[str, dict] = {}
    order = sorted(names, key=lambda n: (VARIANTS[n].task != "sr", n != BASELINE[VARIANTS[n].task]))
    batches: dict[str, object] = {}
    for name in order:
        variant = VARIANTS[name]
        path = runs_dir / f"{name}_seed{seed}_{_run_key(config, name, seed)}.json"
        if path.is_file():
            results[name] = json.loads(path.read_text())
            continue
        protocol = config.protocol(variant.task, seed)
        if variant.task not in batches:
            maker = BatchSequence if variant.task == "sr" else NoisyBatches
            batches[variant.task] = maker(root, protocol, protocol.iters)
        baseline = results.get(BASELINE[variant.task])
        budget = baseline["seconds_at_iters"] if baseline and name != BASELINE[variant.task] else 0.0
        evaluate_fn = None if variant.task == "sr" else (lambda forward: evaluate_denoise(forward, root))
        torch.manual_seed(seed)
        net = variant.build()
        start = time.perf_counter()
        result = train_and_score(net, batches[variant.task], protocol, root, loss_fn=variant.loss_fn,
                                 evaluate_fn=evaluate_fn, until_seconds=budget)  # fmt: skip
        result["seconds_at_iters"] = result["at_iters"][1]
        result["wall_seconds"] = time.perf_counter() - start
        path.write_text(json.dumps(result))
        results[name] = result
        print(f"ablation: seed {seed} {name}: {result['at_iters'][2]:.2f} dB at {protocol.iters} it "
              f"({result['seconds_at_iters']:.0f} s)", flush=True)  # fmt: skip
    return results


def _usable_cores() -> list[int]:
    if hasattr(os, "sched_getaffinity"):
        return sorted(os.sched_getaffinity(0))
    return list(range(os.cpu_count() or 1))


def variant_costs(names, size: tuple[int, int], rounds: int) -> dict[str, dict]:
    """Deployed params, GMACs, kernel launches and CPU latency (CPU kernels, interleaved rounds, one
    thread) of one forward at ``size`` for each variant of ``names`` (x4 variants at x4, x1 at x1)."""
    torch.set_num_threads(1)
    models, costs = {}, {}
    for name in names:
        torch.manual_seed(0)
        net = VARIANTS[name].build().eval()
        net.switch_to_deploy()
        costs[name] = {
            "params": count_params(net),
            "gmacs": count_macs(net, *size) / 1e9,
            "launches": forward_launches(net, size).total,
        }
        models[name] = prepare_cpu_inference(net)
    times = interleaved_latency(models, size, rounds)
    for name in models:
        costs[name]["cpu_ms"] = 1000 * statistics.median(times[name])
    return costs


def run_ablation(config: AblationConfig, log=print) -> dict:
    """Train and score every variant for every seed, then measure each variant's cost; the report's data."""
    unknown = unknown_variants(config.variants)
    if unknown:
        raise ValueError(f"unknown ablation variant(s) {unknown}; known: {list(VARIANTS)}")
    names = list(dict.fromkeys(config.variants))
    for task in {VARIANTS[n].task for n in names}:  # a task's rows are deltas to its baseline
        if BASELINE[task] not in names:
            names.insert(0, BASELINE[task])
    config.data_root = str(build_embedded_dataset(config.data_root, show_progress=False).root)
    cores = _usable_cores()
    workers = config.workers or min(len(config.seeds), len(cores))
    jobs = [(config, seed, names, cores[i % len(cores)] if workers > 1 else None) for i, seed in enumerate(config.seeds)]
    log(f"ablation: {len(names)} variants x {len(config.seeds)} seeds, {workers} worker(s), runs in {config.runs_dir}")
    if workers > 1:
        with multiprocessing.get_context("spawn").Pool(workers) as pool:
            per_seed = pool.map(_train_seed, jobs)
    else:
        per_seed = [_train_seed(job) for job in jobs]
    log("ablation: measuring deployed cost of each variant")
    costs = variant_costs(names, config.cost_size, config.cost_rounds)
    floor = bicubic_floor(Path(config.data_root), 4) if any(VARIANTS[n].task == "sr" for n in names) else None
    return {
        "date": datetime.date.today().isoformat(),
        "torch": torch.__version__,
        "machine": platform.machine(),
        "config": {**asdict(config), "variants": names},
        "bicubic": floor,
        "variants": {n: {"change": VARIANTS[n].change, "task": VARIANTS[n].task} for n in names},
        "runs": {n: {str(seed): per_seed[i][n] for i, seed in enumerate(config.seeds)} for n in names},
        "costs": costs,
    }


def summarize(report: dict) -> dict[str, dict]:
    """Per variant: mean PSNR/SSIM at equal iterations and at equal time, delta to its baseline, and the
    seed spread (the larger seed-to-seed range of the variant and its baseline) with a verdict."""

    def stats(points):
        psnr = [p[2] for p in points]
        return statistics.mean(psnr), statistics.mean(p[3] for p in points), max(psnr) - min(psnr)

    rows = {}
    for name, runs in report["runs"].items():
        base = BASELINE[report["variants"][name]["task"]]
        seeds = list(runs)
        iters = [runs[s]["at_iters"] for s in seeds]
        timed = [runs[s]["at_time"] or runs[s]["at_iters"] for s in seeds]
        base_iters = [report["runs"][base][s]["at_iters"] for s in seeds]
        psnr, ssim, spread = stats(iters)
        base_psnr, _, base_spread = stats(base_iters)
        t_psnr, t_ssim, t_spread = stats(timed)
        delta, t_delta = psnr - base_psnr, t_psnr - base_psnr
        noise = max(spread, base_spread)
        rows[name] = {
            "psnr": psnr, "ssim": ssim, "delta": delta, "spread": noise,
            "psnr_time": t_psnr, "ssim_time": t_ssim, "delta_time": t_delta, "spread_time": max(t_spread, base_spread),
            "iters_at_time": statistics.mean(r[0] for r in timed),
            "seconds": statistics.mean(runs[s]["seconds_at_iters"] for s in seeds),
            "per_seed": [p[2] for p in iters],
            "verdict": None if name == base else verdict(delta, noise),
            "baseline": base,
            "verdict_time": None if name == base else verdict(t_delta, max(t_spread, base_spread)),
        }  # fmt: skip
    return rows


def verdict(delta: float, spread: float) -> str:
    """How a variant compares with its baseline, given the seed-to-seed spread."""
    if abs(delta) <= spread:
        return "no measurable effect"
    return "better" if delta > 0 else "worse"


def render_ablation(report: dict, command: str, cpu: str) -> str:
    cfg, rows, costs = report["config"], summarize(report), report["costs"]
    seeds = ", ".join(str(s) for s in cfg["seeds"])
    h, w = cfg["cost_size"]
    lines = [
        "# HERSR ablation: what each component buys",
        "",
        f"Date {report['date']} · torch {report['torch']} · CPU {cpu} · one thread per run, one core per seed",
        "",
        f"Command: `{command}`",
        "",
        f"Protocol: `hersr_s` x4 variants, each trained {cfg['iters']} iterations on the embedded data (batch "
        f"{cfg['batch']}, LR patch {cfg['patch']}, Adam {cfg['lr']}, L1 + MoE aux loss), seeds {seeds}: within a "
        "seed every variant sees the same batches and starts from the same seed. Scored on the held-out "
        "photographs (PSNR/SSIM on Y, border 4). 'Equal time' scores each variant at the step where its training "
        "time crosses the full model's time for the same seed (scoring excluded). 'Spread' is the larger seed-to-"
        "seed range of the variant and the full model; a Δ within it is 'no measurable effect'.",
        "",
    ]
    if report["bicubic"]:
        lines += [f"MATLAB bicubic on the same photographs: {report['bicubic'][0]:.2f} dB / {report['bicubic'][1]:.4f}.", ""]
    header = (
        "| variant | change | PSNR (per seed) | SSIM | Δ PSNR | spread | at equal iterations "
        "| PSNR at equal time (iters) | Δ | at equal time | params (deployed) | GMACs | CPU ms | launches |"
    )
    rule = "| --- | --- | --- | ---: | ---: | ---: | --- | --- | ---: | --- | ---: | ---: | ---: | ---: |"

    def row(name: str) -> str:
        r, c = rows[name], costs[name]
        seeds_text = " / ".join(f"{p:.2f}" for p in r["per_seed"])
        if r["verdict"] is None:
            delta, verdict_iters, delta_time, verdict_time = "-", "baseline", "-", "baseline"
        else:
            delta, verdict_iters = f"{r['delta']:+.2f}", r["verdict"]
            delta_time, verdict_time = f"{r['delta_time']:+.2f}", r["verdict_time"]
        return (
            f"| `{name}` | {report['variants'][name]['change']} | {r['psnr']:.2f} ({seeds_text}) | {r['ssim']:.4f} "
            f"| {delta} | {r['spread']:.2f} | {verdict_iters} | {r['psnr_time']:.2f} ({r['iters_at_time']:.0f}) "
            f"| {delta_time} | {verdict_time} | {c['params'] / 1e3:.0f}K | {c['gmacs']:.2f} | {c['cpu_ms']:.1f} "
            f"| {c['launches']} |"
        )

    sr = [n for n in rows if report["variants"][n]["task"] == "sr"]
    denoise = [n for n in rows if report["variants"][n]["task"] == "denoise"]
    if sr:
        lines += [f"## x4 super-resolution ({cfg['iters']} iterations; cost at {w}x{h} input, x4)", "", header, rule]
        lines += [row(n) for n in sr]
    if denoise:
        lines += [
            "",
            f"## x1 denoising, degradation prompt ({cfg['denoise_iters']} iterations)",
            "",
            f"Same protocol at x1 on {DENOISE_PATCH}x{DENOISE_PATCH} crops of the training photographs with Gaussian "
            f"noise, sigma drawn per sample from {list(DENOISE_SIGMAS)} (/255); scored as RGB PSNR/SSIM on the "
            "held-out photographs, averaged over the three levels (fixed noise per image and level). Cost at "
            f"{w}x{h} input, x1.",
            "",
            header,
            rule,
        ]
        lines += [row(n) for n in denoise]
    return "\n".join(lines) + "\n"
