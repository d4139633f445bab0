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


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_docs_tsp_snippets_run_against_the_tsp_emulator(tmp_path):
    pytest.importorskip("keithley2600")
    from analogmem.instrument import TspEmulatorServer

    blocks = re.findall(r"```python\n(.*?)```", DOC.read_text(), flags=re.S)
    driver = next(b for b in blocks if "from keithley2600 import Keithley2600" in b)
    bench = next(b for b in blocks if "TspBench(" in b)
    with TspEmulatorServer("pcm-nandakumar2019", rows=32, cols=32, seed=0) as srv:
        for k, code in enumerate((driver, bench)):
            path = tmp_path / f"snippet{k}.py"
            path.write_text(code.replace("127.0.0.1::5025::", f"127.0.0.1::{srv.port}::"))
            out = subprocess.run([sys.executable, "-W", "ignore::DeprecationWarning", str(path)], cwd=tmp_path,
                                 capture_output=True, text=True, timeout=300)
            assert out.returncode == 0, out.stderr
            lines = out.stdout.split()
            if k == 0:
                assert lines[0] == "0" and lines[-1] == "[]"
            else:
                success, pulses, trips = (float(x) for x in lines)
                assert success > 0.95 and pulses >= 1 and trips < 20
