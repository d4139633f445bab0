"""Opt-in tests on a real bench. Skipped unless pytest is given the instrument address:

    pytest -p analogmem.instrument.pytest_plugin tests/test_instrument_hardware.py \\
        --instrument-resource "USB0::0x05E6::0x2450::04412345::INSTR" \\
        [--instrument-switch "GPIB0::7::INSTR"] [--instrument-config bench.toml]

They touch only the cells the bench config allows and stay inside its limits.
"""

from __future__ import annotations

import numpy as np
import pytest


@pytest.fixture
def hw(request):
    resource = request.config.getoption("--instrument-resource", default=None)
    if not resource:
        pytest.skip("real-hardware test: pass --instrument-resource ADDRESS (with -p analogmem.instrument.pytest_plugin)")
    from analogmem.instrument import InstrumentBench, load_bench_config

    cfg = load_bench_config(request.config.getoption("--instrument-config", default=None))
    with InstrumentBench(resource, config=cfg, switch_resource=request.config.getoption("--instrument-switch",
                                                                                         default=None)) as bench:
        yield bench


def test_identify_and_read_a_few_cells(hw):
    assert hw.identity["manufacturer"]
    g = hw.read(addresses=np.arange(4))
    assert g.shape == (4,) and np.all(np.isfinite(g))


def test_program_and_verify_a_few_cells(hw):
    from analogmem import WriteVerify

    s = hw.scheme
    targets = np.full(4, s.g_min_S + 0.5 * (s.g_max_S - s.g_min_S))
    rep = hw.program(targets, addresses=np.arange(4), verify=WriteVerify(max_pulses=20, tolerance_rel=0.1))
    assert rep.pulses.shape == (4,)
