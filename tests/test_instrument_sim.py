"""Fast driver tests on the static pyvisa-sim definitions in tests/fixtures/keithley2450.yaml:
identification, error queue, settings and their ranges, timeouts."""

from __future__ import annotations

import time
from pathlib import Path

import pytest

pytest.importorskip("pyvisa_sim")

from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    InstrumentTimeoutError,
    SafetyLimits,
    SourceMeter2450,
    open_adapter,
)
from analogmem.instrument.instrument_bench import _Link  # noqa: E402

SIM = str(Path(__file__).resolve().parent / "fixtures" / "keithley2450.yaml") + "@sim"  # a test fixture, not shipped
SMU = "USB0::0x05E6::0x2450::04412345::INSTR"
SILENT = "USB0::0x05E6::0x2450::04499999::INSTR"


@pytest.fixture
def smu():
    inst = SourceMeter2450(open_adapter(SMU, SIM, timeout_s=0.2), limits=SafetyLimits())
    yield inst
    inst.adapter.close()


def test_identification_and_settings(smu):
    assert smu.id == "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.3"
    smu.compliance_current = 5e-5
    assert smu.compliance_current == pytest.approx(5e-5)
    smu.source_voltage = 0.2
    assert smu.source_voltage == pytest.approx(0.2)
    assert smu.current == pytest.approx(5e-6)  # :READ?
    assert smu.check_errors() == []


def test_error_queue_reports_and_empties(smu):
    smu.write(":NOT:A:COMMAND")
    assert smu.next_error[0] == -113
    assert smu.next_error[0] == 0


def test_instrument_range_error_lands_in_queue(smu):
    # Bypass our validator to show the instrument's own range check (pyvisa-sim reports
    # every error as -113) — the driver would have refused this before sending.
    before = smu.compliance_current
    smu.write(":SOUR:VOLT:ILIM 5")
    assert smu.next_error[0] == -113
    assert smu.compliance_current == before  # refused by the instrument, unchanged


def test_timeout_is_specific_and_bounded():
    inst = SourceMeter2450(open_adapter(SILENT, SIM, timeout_s=0.1), limits=SafetyLimits())
    link = _Link("smu", inst, SILENT, SIM, 0.1, retries=2)
    t0 = time.perf_counter()
    with pytest.raises(InstrumentTimeoutError, match=r"no reply to ':READ\?' within 0.1 s .*3 attempts"):
        link.query(":READ?", float, retry_safe=True)
    assert time.perf_counter() - t0 < 3.0
    assert link.resyncs == 3
    inst.adapter.close()


def test_bench_setup_over_sim():
    bench = InstrumentBench(SMU, visa_library=SIM, device="pcm-nandakumar2019", config=BenchConfig(rows=2, cols=2),
                            timeout_s=0.2)
    assert bench.identity == {"manufacturer": "KEITHLEY INSTRUMENTS", "model": "MODEL 2450", "serial": "04412345",
                              "firmware": "1.7.3"}
    assert bench.is_emulator is False and bench.clock == "host"
    bench.smu.adapter.close()
