#!/bin/bash
# The torch thread count on a busy machine: a training step on a quiet machine with 2 and 1 threads,
# then beside two busy processes (one per core of a 2-core machine) with 2, 1 and the automatic
# choice (hersr_arch.threads). Run from the repository root: bash benchmarks/busy_machine.sh
set -e
PY=${PY:-.venv/bin/python}
echo "quiet machine:"
for t in 2 1; do env -u OMP_NUM_THREADS "$PY" benchmarks/train_step_time.py $t; done
python3 -c "while True: pass" & B1=$!
python3 -c "while True: pass" & B2=$!
trap 'kill $B1 $B2' EXIT
sleep 65  # the 1-minute load average sees them
echo "two busy processes, 1-minute load $(cut -d' ' -f1 /proc/loadavg):"
for t in 2 1 auto; do env -u OMP_NUM_THREADS "$PY" benchmarks/train_step_time.py $t; done
