"""The ``keithley2600`` package's own, unmodified ``Keithley2600`` class over pyvisa-py TCP
against ``analogmem bench serve --model 2636B`` (a separate process): set a voltage, run
a pulse, read a current, read the error queue. The driver's debug log is the transcript
(``ANALOGMEM_TSP_TRANSCRIPT=path`` writes it to a file)."""

from __future__ import annotations

import io
import logging
import os
import subprocess
import sys
import time
import warnings

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)  # keithley2600 imports xdrlib
    keithley_driver = pytest.importorskip("keithley2600.keithley_driver")

from keithley2600 import Keithley2600  # noqa: E402


@pytest.fixture(scope="module")
def served(tmp_path_factory):
    port_file = tmp_path_factory.mktemp("serve") / "port"
    proc = subprocess.Popen([sys.executable, "-m", "analogmem", "bench", "serve", "--model", "2636B",
                             "--device", "pcm-nandakumar2019", "--rows", "4", "--cols", "4", "--seed", "3",
                             "--port-file", str(port_file), "--max-seconds", "120"],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    t0 = time.monotonic()
    while not (port_file.exists() and port_file.read_text().strip()):
        if proc.poll() is not None or time.monotonic() - t0 > 60:
            proc.kill()
            raise RuntimeError(f"bench serve did not start: {proc.communicate()}")
        time.sleep(0.05)
    yield int(port_file.read_text())
    proc.terminate()
    out, err = proc.communicate(timeout=10)
    assert "TSP emulator (Keithley 2636B)" in out, (out, err)


def test_unmodified_keithley2600_driver(served):
    log = io.StringIO()
    keithley_driver.log_to_stream(log, logging.DEBUG)
    try:
        k = Keithley2600(f"TCPIP::127.0.0.1::{served}::SOCKET", visa_library="@py", timeout=10_000)
        assert k.connected
        assert k.localnode.model == "2636B"
        k.smua.reset()
        k.channel.close("1!2!3")
        # set a voltage (read back), read a current at it: an unprogrammed cell, g_min = 0 S
        k.smua.source.levelv = 0.2
        assert k.smua.source.levelv == pytest.approx(0.2)
        k.smua.source.limiti = 1e-4
        k.smua.source.output = k.smua.OUTPUT_ON
        i0 = k.smua.measure.i()
        k.smua.source.output = k.smua.OUTPUT_OFF
        # a 1 ms, 1.5 V SET pulse with the factory PulseVMeasureI (current into nvbuffer1)
        k.smua.nvbuffer1.clear()
        k.PulseVMeasureI(k.smua, 0, 1.5, 1e-3, 1e-3, 1)
        assert k.smua.nvbuffer1.n == 1
        i_pulse = k.smua.nvbuffer1[1]
        # read the current at 0.2 V after the pulse: the cell was SET near the transfer (~18 µS)
        k.smua.source.levelv = 0.2
        k.smua.source.output = k.smua.OUTPUT_ON
        i1 = k.smua.measure.i()
        k.smua.source.output = k.smua.OUTPUT_OFF
        assert i0 == 0 and 5e-6 < i_pulse / 1.5 < 30e-6 and 5e-6 < i1 / 0.2 < 30e-6
        # error queue: empty, then two errors the driver's own read_error_queue drains
        assert k.read_error_queue() == []
        k.smua.source.levelv = 500  # past the 200 V range
        k._write("nosuchfunction(")  # a syntax error, as a user's typo would send
        errs = k.read_error_queue()
        assert [e[0] for e in errs] == [-222, -285] and "levelv" in errs[0][1]
        assert k.errorqueue.next() == (0, "Queue Is Empty", 0, 0)
        k.disconnect()
    finally:
        keithley_driver.log_to_stream(None, logging.WARNING)
    transcript = log.getvalue()
    assert "write: print(_G.PulseVMeasureI(_G.smua, 0, 1.5, 0.001, 0.001, 1))" in transcript
    assert "write: _G.smua.source.levelv = 0.2" in transcript
    path = os.environ.get("ANALOGMEM_TSP_TRANSCRIPT")
    if path:
        with open(path, "w") as fh:
            fh.write(transcript)


def test_driver_reads_buffers_and_lists(served):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        k = Keithley2600(f"TCPIP::127.0.0.1::{served}::SOCKET", visa_library="@py", timeout=10_000)
    if not k.connected:  # the package's factory hands back its instance for this address
        assert k.connect()
    k.smua.nvbuffer1.clear()
    k.channel.open("allslots")
    k.channel.close("1!1!1")
    k.PulseVMeasureI(k.smua, 0, 1.2, 1e-4, 1e-4, 3)
    vals = [k.smua.nvbuffer1[i] for i in range(1, int(k.smua.nvbuffer1.n) + 1)]
    assert len(vals) == 3 and np.all(np.isfinite(vals))
    k.channel.open("allslots")
    k.disconnect()
