#!/usr/bin/env bash
# The one command to run on a machine with a CUDA GPU (see gpu_check.py for what it checks):
#   bash benchmarks/gpu_check.sh [--budget 480] [--iters 20]
# It uses the project's .venv when there is one (make install), else the python on PATH.
set -euo pipefail
cd "$(dirname "$0")/.."
python=python3
[ -x .venv/bin/python ] && python=.venv/bin/python
exec "$python" benchmarks/gpu_check.py "$@"
