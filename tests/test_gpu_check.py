"""benchmarks/gpu_check.sh, the one script meant for a lent GPU, runs here on its CPU path
with tiny settings (issue 26: a broken import in its benchmark went unnoticed): its tests
step, its throughput step, and the results it writes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("torch")

ROOT = Path(__file__).resolve().parents[1]


def test_gpu_check_cpu_path_runs_and_writes_its_results(tmp_path):
    import torch

    if torch.cuda.is_available():
        pytest.skip("this machine has CUDA: the script would run its full GPU sizes")
    env = {**os.environ, "OUT": str(tmp_path), "PYTHON": sys.executable, "CELLS": "20000", "BASE_CELLS": "5000",
           "REPEAT": "1", "TESTS_K": "test_comparison_has_power or test_float32_state_matches_the_reference"}
    r = subprocess.run(["bash", str(ROOT / "benchmarks" / "gpu_check.sh")], capture_output=True, text=True,
                       env=env, timeout=600)
    assert r.returncode == 0, r.stdout[-3000:] + r.stderr[-3000:]
    assert "CUDA is not available" in r.stdout
    dest = tmp_path / "gpu_check"
    junit = (dest / "tests.xml").read_text()
    assert 'failures="0"' in junit and 'errors="0"' in junit and 'tests="2"' in junit, junit[:400]
    body = json.loads((dest / "bench_torch_backend.json").read_text())
    assert body["cells"] == 20000 and body["torch_device"] == "cpu"
    assert "provenance" in body and body["baseline"]["cells"] == 5000
    assert body["cells_per_s"] > 0 and body["torch_over_cython"] > 0
