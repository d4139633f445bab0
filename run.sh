#!/usr/bin/env bash
# analogmem's two entry points, each self-contained on a fresh machine:
#   ./run.sh demo [ARGS]   set up .venv, then run the main job (analogmem demo ARGS)
#   ./run.sh test [ARGS]   set up .venv, then run the whole test suite (pytest ARGS)
# The virtual environment lives in .venv (override with ANALOGMEM_VENV=path).
set -euo pipefail
cd "$(dirname "$0")"
VENV="${ANALOGMEM_VENV:-.venv}"

setup() {
    if [ ! -x "$VENV/bin/python" ]; then
        python3 -m venv "$VENV"
    fi
    local py="$VENV/bin/python"
    # torch first, pinned: this takes the CPU build these machines carry. Every later
    # requirement admits it, so no resolver ever replaces it with a CUDA build.
    "$py" -m pip install -q torch==2.13.0
    # build requirements, then the package itself (editable; compiles ext/ into analogmem)
    "$py" -m pip install -q "setuptools>=77.0.3" "Cython>=3.0.10,<4" "numpy>=2.0,<3"
    "$py" -m pip install -q --no-build-isolation -e ".[ml,instrument,llm,fl,test]"
}

cmd="${1:-}"
[ $# -gt 0 ] && shift
case "$cmd" in
    demo)
        setup
        exec "$VENV/bin/analogmem" demo "$@"
        ;;
    test)
        setup
        exec "$VENV/bin/python" -m pytest "$@"
        ;;
    *)
        echo "usage: ./run.sh demo [ARGS] | ./run.sh test [PYTEST ARGS]" >&2
        exit 2
        ;;
esac
