#!/usr/bin/env bash
# The prepared GPU suite (bench/gpu_suite.py): `bash bench/gpu_suite.sh` on one CUDA GPU,
# `bash bench/gpu_suite.sh --dry-run` on the CPU. PYTHON picks the interpreter.
set -euo pipefail
cd "$(dirname "$0")/.."
exec "${PYTHON:-python}" bench/gpu_suite.py "$@"
