"""Instrument trouble over real PyVISA (pyvisa-py, loopback TCP): each fault gives a
specific InstrumentError subclass after a bounded number of retries where a retry is
safe — never a hang, never a silently wrong value; an interrupted sweep keeps its data."""

from __future__ import annotations

import contextlib
import time

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")

from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    InstrumentConnectionError,
    InstrumentError,
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
    ScpiEmulatorServer,
    characterise,
)
from analogmem.instrument.characterise import read_table  # noqa: E402
from analogmem.instrument.instrument_bench import _split_reply  # noqa: E402

CARD = "pcm-nandakumar2019"
TIMEOUT_S = 0.25


@pytest.fixture
def rig():
    """A 2x2 server; cell 0 programmed low (~2.5 µS), cell 1 high (~22.5 µS)."""
    with ScpiEmulatorServer(CARD, rows=2, cols=2, seed=4) as srv:
        def make(retries: int) -> InstrumentBench:
            return InstrumentBench(srv.resource, device=CARD, config=BenchConfig(rows=2, cols=2),
                                   timeout_s=TIMEOUT_S, retries=retries)
        bench = make(0)
        bench.program(np.array([2.5e-6, 22.5e-6]), addresses=np.array([0, 1]))
        yield srv, bench, make
        with contextlib.suppress(InstrumentError):  # a test may have stopped the server
            bench.close()


def _timed(fn):
    t0 = time.perf_counter()
    try:
        return fn(), time.perf_counter() - t0
    except InstrumentError as exc:
        return exc, time.perf_counter() - t0


@pytest.mark.parametrize("kind, param, error", [
    ("DEL", 1.0, InstrumentTimeoutError),
    ("DROP", 0, InstrumentTimeoutError),
    ("DISC", 0, InstrumentTimeoutError),
    ("GARB", 0, InstrumentReplyError),
])
def test_fault_without_retry_raises_specific_error_then_recovers(rig, kind, param, error):
    srv, bench, _ = rig
    srv.inject(kind, 1, param)
    exc, dt = _timed(lambda: bench.read(addresses=np.array([1])))  # route of cell 1 is hit
    assert type(exc) is error
    assert dt < TIMEOUT_S + 1.0  # bounded: one timeout at most, no hang
    # The bench resynchronised: the next answer is the right cell's, not a stale reply.
    time.sleep(float(param) + 0.1 if kind == "DEL" else 0.0)
    g = bench.read(addresses=np.array([0, 1]))
    assert g[0] < 6e-6 < 15e-6 < g[1]


def test_late_reply_never_answers_the_next_query(rig):
    srv, bench, _ = rig
    bench.read(addresses=np.array([1]))  # cell 1 routed, so the next read is a single message
    srv.inject("DEL", 1, 0.6)
    with pytest.raises(InstrumentTimeoutError):
        bench.read(addresses=np.array([1]))  # its high reading arrives 0.6 s late ...
    g0 = bench.read(addresses=np.array([0]))  # ... on a closed session: cell 0 reads low
    time.sleep(0.6)
    g0b = bench.read(addresses=np.array([0]))
    assert g0[0] < 6e-6 and g0b[0] < 6e-6


@pytest.mark.parametrize("kind, param", [("DEL", 1.0), ("DROP", 0), ("GARB", 0), ("DISC", 0)])
def test_transient_fault_is_retried_for_reads(rig, kind, param):
    srv, _, make = rig
    with make(retries=2) as bench:
        srv.inject(kind, 2, param)  # two bad replies, three attempts allowed
        g, dt = _timed(lambda: bench.read(addresses=np.array([0, 1])))
        assert isinstance(g, np.ndarray), g
        assert g[0] < 6e-6 < 15e-6 < g[1]
        assert dt < 3 * TIMEOUT_S + 1.0
        srv.inject(kind, 3, param)  # one more than the retries: the specific error
        exc, dt = _timed(lambda: bench.read(addresses=np.array([0])))
        assert isinstance(exc, InstrumentTimeoutError if kind != "GARB" else InstrumentReplyError)
        assert "3 attempts" in str(exc)
        assert dt < 3 * TIMEOUT_S + 1.0


def test_instrument_error_is_reported_not_retried_and_drained(rig):
    srv, bench, _ = rig
    srv.inject("ERR", 1, -222)
    n0 = srv.stats()["messages"]
    with pytest.raises(InstrumentReportedError) as ei:
        bench.read(addresses=np.array([0]))
    assert ei.value.errors[0][0] == -222
    assert "-222" in str(ei.value)
    # one message that failed + one :SYST:ERR? that found the queue empty: no retry
    assert srv.stats()["messages"] - n0 == 2
    assert len(bench.read(addresses=np.array([0, 1]))) == 2  # clean afterwards


def test_error_raised_by_the_instrument_itself(rig):
    """A route the emulator refuses (cell beyond its matrix) surfaces as the instrument's
    own -222, with the value it came with discarded."""
    srv, bench, _ = rig
    with pytest.raises(InstrumentReportedError, match="-222"):
        bench._sw.query(":ROUT:OPEN:ALL;:ROUT:CLOS (@1!9!9);:ROUT:CLOS?;:SYST:ERR?",
                        lambda r: bench._parser(1, "route", check_range=False)(r), retry_safe=True)


def test_pulse_is_never_retried(rig):
    srv, _, make = rig
    with make(retries=3) as bench:
        pulses0 = srv.stats()["pulses"]
        # single-shot program of one cell: route reply, RESET-pulse reply, SET-pulse reply
        srv.inject("DROP", 1, 0, after=1)
        with pytest.raises(InstrumentTimeoutError, match="not retried"):
            bench.program(np.array([10e-6]), addresses=np.array([3]))
        assert srv.stats()["pulses"] - pulses0 == 1  # the RESET happened once, no repeat, no SET


def test_garbage_that_looks_like_data_is_refused():
    with pytest.raises(InstrumentReplyError, match="field"):
        _split_reply("1.0E-06", 1, ":READ?")
    with pytest.raises(InstrumentReplyError, match="error-queue field"):
        _split_reply("1.0E-06;abc", 1, ":READ?")
    from analogmem.instrument.instrument_bench import _float
    with pytest.raises(InstrumentReplyError, match="NaN"):
        _float("9.91E+37", "read", "9.91E+37;0,\"No error\"")


def test_lost_instrument_is_a_connection_error(rig):
    srv, bench, _ = rig
    srv.stop()
    exc, dt = _timed(lambda: bench.read(addresses=np.array([0, 1])))
    assert isinstance(exc, (InstrumentConnectionError, InstrumentTimeoutError))
    assert dt < TIMEOUT_S + 2.0
    with pytest.raises(InstrumentConnectionError, match="refused|cannot open"):
        InstrumentBench(srv.resource, config=BenchConfig(rows=2, cols=2), timeout_s=TIMEOUT_S)


def test_interrupted_sweep_keeps_every_measurement(tmp_path):
    with ScpiEmulatorServer(CARD, rows=8, cols=8, seed=5) as srv:
        with InstrumentBench(srv.resource, device=CARD, config=BenchConfig(rows=8, cols=8), timeout_s=TIMEOUT_S,
                             retries=0) as bench:
            # 64 cells single-shot: 3 replies each (route, RESET, SET); then reads (route +
            # read = 2 replies per cell). Drop the reply of the 41st read.
            srv.inject("DROP", 1, 0, after=64 * 3 + 40 * 2 + 1)
            with pytest.raises(InstrumentTimeoutError) as ei:
                characterise(bench, tmp_path / "t.csv", n_levels=2, cells_per_level=32, read_times_s=(0.0, 60.0),
                             chunk_cells=64, seed=0)
        reads_served = srv.stats()["reads"]
    t = read_table(tmp_path / "t.csv")
    # every :READ? the server did, less the one per RESET and SET pulse, less the lost one
    assert len(t["cell"]) == 40 == reads_served - 2 * 64 - 1
    assert any("40 measurement row(s)" in n for n in ei.value.__notes__)
    assert np.all(t["read_value_S"] > 0)
