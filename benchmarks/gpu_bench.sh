#!/usr/bin/env bash
# The prepared GPU run (one lent GPU, about ten minutes): sets up .venv if needed, then runs
# benchmarks/gpu_bench.py, which writes benchmarks/RESULTS_gpu.md (+ .json). Without a GPU the
# Python script runs its CPU fallback once and says so in the report.
set -euo pipefail
cd "$(dirname "$0")/.."
make setup >/dev/null
exec .venv/bin/python benchmarks/gpu_bench.py "$@"
