"""The user script in docs/instrument.md runs unchanged against the SCPI emulator server
(on a real bench only its resource argument changes)."""

from __future__ import annotations

import re
import subprocess
import sys
from pathlib import Path

import pytest

pytest.importorskip("pyvisa_py")

from analogmem.instrument import ScpiEmulatorServer  # noqa: E402

DOC = Path(__file__).resolve().parents[1] / "docs" / "instrument.md"


def test_docs_user_script_runs_against_the_emulator(tmp_path):
    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    script = next(b for b in blocks if "characterise_bench.py" in b)
    (tmp_path / "characterise_bench.py").write_text(script)
    with ScpiEmulatorServer("pcm-nandakumar2019", rows=32, cols=32, seed=0) as srv:
        out = subprocess.run([sys.executable, "characterise_bench.py", srv.resource], cwd=tmp_path,
                             capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert "verify success" in out.stdout and "rows appended" in out.stdout
    assert (tmp_path / "table.csv").read_text().count("\n") == 1 + 4 * 32 * 2
