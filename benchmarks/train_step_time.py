"""Median time of one hersr_s x4 training step (batch 4, 32x32 LR, Adam) with THREADS torch threads.

    python benchmarks/train_step_time.py 2      # two threads
    python benchmarks/train_step_time.py auto   # the choice of hersr_arch.threads (idle cores)
"""

import statistics
import sys
import time
from pathlib import Path

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from hersr_arch.archs.hersr_arch import hersr_s  # noqa: E402
from hersr_arch.threads import choose_threads  # noqa: E402

arg = sys.argv[1] if len(sys.argv) > 1 else "auto"
threads = choose_threads()[0] if arg == "auto" else int(arg)
torch.set_num_threads(threads)
torch.manual_seed(0)
net = hersr_s(upscale=4).train()
opt = torch.optim.Adam(net.parameters(), 5e-4)
x, y = torch.rand(4, 3, 32, 32), torch.rand(4, 3, 128, 128)
times = []
for _ in range(12):
    start = time.perf_counter()
    loss = F.l1_loss(net(x), y) + net.aux_loss
    opt.zero_grad()
    loss.backward()
    opt.step()
    times.append(time.perf_counter() - start)
print(f"threads={threads} ({arg}): median step {statistics.median(times[2:]):.3f} s")
