#!/usr/bin/env bash
# The torch backend on a GPU, in one short run (README "Benchmarks"):
#   1. the distribution tests of tests/test_torch_backend.py on CUDA
#      (ANALOGMEM_TEST_TORCH_DEVICES=cuda);
#   2. cells/s of program + read at 1 day for 10^9 PCM cells (float32 state, ~25 GiB of
#      GPU memory, chunked by the backend), against the compiled kernels on 2e7 cells.
# On a machine without CUDA it runs the same tests on the CPU (CUDA cases skipped) and the
# benchmark on 10^6 CPU cells, so the script itself can be checked anywhere.
#
#   benchmarks/gpu_check.sh            # results in $OUT (if set) or results/gpu_check
# Environment: PYTHON (default .venv/bin/python, else python3), CELLS (default 1e9 on CUDA,
# 1e6 on the CPU), BASE_CELLS (cells of the compiled-kernel baseline), REPEAT (timed runs, 2),
# TESTS_K (a pytest -k expression selecting the tests; default all). tests/test_gpu_check.py
# runs the CPU path with tiny settings, so the script cannot rot unnoticed.
set -euo pipefail
cd "$(dirname "$0")/.."
PY=${PYTHON:-.venv/bin/python}
[ -x "$PY" ] || PY=$(command -v python3)
DEST=${OUT:-results}/gpu_check
mkdir -p "$DEST"
if ! "$PY" -c "import analogmem.emulator._kernels" 2>/dev/null; then
    echo "== building analogmem (compiled kernels)"
    "$PY" -m pip install -q --no-build-isolation --no-deps -e .
fi
if "$PY" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"; then
    "$PY" -c "import torch; print('== CUDA:', torch.cuda.get_device_name(0), torch.__version__)"
    DEVICES=cuda; TDEV=cuda; CELLS=${CELLS:-1000000000}; BASE=${BASE_CELLS:-20000000}
else
    echo "== CUDA is not available: tests on the CPU (CUDA cases skipped), benchmark on 1e6 CPU cells"
    DEVICES=cpu,cuda; TDEV=cpu; CELLS=${CELLS:-1000000}; BASE=${BASE_CELLS:-1000000}
fi
echo "== distribution tests (torch devices: $DEVICES)"
ANALOGMEM_TEST_TORCH_DEVICES=$DEVICES "$PY" -m pytest -q -p no:cacheprovider -rs \
    --junitxml="$DEST/tests.xml" ${TESTS_K:+-k "$TESTS_K"} tests/test_torch_backend.py
echo "== throughput: $CELLS cells on $TDEV"
"$PY" benchmarks/bench_torch_backend.py --torch-device "$TDEV" --cells "$CELLS" --dtype float32 \
    --baseline-cells "$BASE" --repeat "${REPEAT:-2}" --json "$DEST/bench_torch_backend.json"
echo "== results in $DEST"
