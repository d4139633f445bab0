"""Safety limits, the pulse scheme, and the drivers' command surface (protocol level).

A refused request must raise SafetyLimitError naming the limit *before a byte is sent*:
the recording adapter below proves it by counting every write and read.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

pytest.importorskip("pyvisa")
pytest.importorskip("pymeasure")

from pymeasure.adapters import Adapter  # noqa: E402
from pymeasure.test import expected_protocol  # noqa: E402

from analogmem import SafetyLimitError, WriteVerify  # noqa: E402
from analogmem.errors import AddressError, TargetRangeError  # noqa: E402
from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    SafetyLimits,
    SourceMeter2450,
    SwitchMatrix,
    VoltageScheme,
    load_bench_config,
)


class RecordingAdapter(Adapter):
    """A pymeasure adapter that records every message and answers like a 2450 would to
    the bench's set-up queries; anything unexpected is answered with garbage so a test
    that wrongly reaches the instrument fails loudly."""

    def __init__(self, answers=None):
        super().__init__()
        self.sent: list[str] = []
        self.reads = 0
        self._last = ""
        self.answers = {"*IDN?": "KEITHLEY INSTRUMENTS,MODEL 2450,04412345,1.7.3",
                        ":SOUR:VOLT:ILIM?;:SYST:ERR?": '1.000000E-04;0,"No error"'}
        self.answers.update(answers or {})

    def _write(self, command, **kwargs):
        self.sent.append(command)
        self._last = command

    def _read(self, **kwargs):
        self.reads += 1
        return self.answers.get(self._last, "??")

    def flush_read_buffer(self):
        pass


@pytest.fixture
def recorded_bench():
    ad = RecordingAdapter()
    bench = InstrumentBench(ad, device="pcm-nandakumar2019", config=BenchConfig(rows=4, cols=4),
                            clock="host", retries=0)
    assert ad.sent[0] == "*IDN?" and bench.identity["model"] == "MODEL 2450"
    assert ":SOUR:VOLT:ILIM 0.0001" in ad.sent  # compliance programmed from the limits
    ad.sent.clear()
    ad.reads = 0
    return bench, ad


def test_limits_validate_their_own_fields():
    with pytest.raises(ValueError, match="max_set_V"):
        SafetyLimits(max_set_V=-1.0)
    with pytest.raises(ValueError, match="min_pulse_width_s"):
        SafetyLimits(min_pulse_width_s=1.0, max_pulse_width_s=0.1)
    with pytest.raises(ValueError, match="allowed_cells"):
        SafetyLimits(allowed_cells=((5, 2),))
    with pytest.raises(ValueError, match="v_set_threshold_V"):
        VoltageScheme(v_set_threshold_V=2.0, v_set_full_V=1.0)


def test_checks_name_the_limit_and_value():
    lim = SafetyLimits(max_set_V=2.0, max_reset_V=2.5, max_read_V=0.3, compliance_A=1e-4)
    assert lim.check_set(1.5) == 1.5
    with pytest.raises(SafetyLimitError, match=r"2\.1 V .*max_set_V = \[0, 2\] V"):
        lim.check_set(2.1)
    with pytest.raises(SafetyLimitError, match="max_reset_V"):
        lim.check_reset(-3.0)
    with pytest.raises(SafetyLimitError, match="max_read_V"):
        lim.check_read(0.5)
    with pytest.raises(SafetyLimitError, match="0 V"):
        lim.check_read(0.0)
    with pytest.raises(SafetyLimitError, match="compliance_A"):
        lim.check_compliance(2e-4)
    with pytest.raises(SafetyLimitError, match="pulse width"):
        lim.check_width(1.0)
    with pytest.raises(SafetyLimitError, match="max_set_V"):
        lim.check_set(float("nan"))
    lim2 = SafetyLimits(allowed_cells=((0, 4), (8, 12)))
    lim2.check_cells(np.array([0, 3, 8, 11]))
    with pytest.raises(SafetyLimitError, match=r"cell address 5 .*allowed_cells = \[0, 4\), \[8, 12\)"):
        lim2.check_cells(np.array([0, 5]))


def test_scheme_transfer_and_inverse_agree():
    s = VoltageScheme(g_min_S=0.0, g_max_S=25e-6)
    g = np.linspace(0, 25e-6, 11)
    np.testing.assert_allclose(s.transfer(s.set_voltage(g)), g, rtol=0, atol=1e-18)
    assert s.set_voltage(np.array([0.0]))[0] == pytest.approx(s.v_set_threshold_V)
    assert s.set_voltage(np.array([25e-6]))[0] == pytest.approx(s.v_set_full_V)
    assert float(s.conductance(5e-6)) == pytest.approx(25e-6)  # 5 µA at 0.2 V


def test_scheme_outside_limits_is_refused_before_opening(tmp_path):
    # A read voltage above max_read_V: the bench refuses before touching the adapter.
    ad = RecordingAdapter()
    cfg = BenchConfig(rows=2, cols=2, scheme=VoltageScheme(v_read_V=0.5))
    with pytest.raises(SafetyLimitError, match="max_read_V"):
        InstrumentBench(ad, config=cfg)
    # A compliance too low for reading the most conductive cell would clip reads.
    cfg = BenchConfig(rows=2, cols=2, limits=SafetyLimits(compliance_A=1e-6))
    with pytest.raises(SafetyLimitError, match="compliance_A"):
        InstrumentBench(ad, device="pcm-nandakumar2019", config=cfg)
    assert ad.sent == [] and ad.reads == 0


def test_refused_requests_send_nothing(recorded_bench):
    bench, ad = recorded_bench
    # SET amplitude for the top targets beyond max_set_V: lower the limit below v_set_full_V.
    tight = dataclasses.replace(bench.limits, max_set_V=1.2)
    bench.limits = tight
    bench.smu.set_limits(tight)
    with pytest.raises(SafetyLimitError, match=r"SET pulse amplitude 1\.6 V .*max_set_V"):
        bench.program(np.full(4, 25e-6), addresses=np.arange(4))
    # A single low-level pulse beyond the RESET limit.
    with pytest.raises(SafetyLimitError, match="max_reset_V"):
        bench.apply_pulse(0, -5.0, 1e-3, "reset")
    # A pulse width beyond the limit.
    with pytest.raises(SafetyLimitError, match="pulse width"):
        bench.apply_pulse(0, 1.0, 1.0, "set")
    # The driver's declarative properties use the same limits.
    with pytest.raises(SafetyLimitError, match="compliance_A"):
        bench.smu.compliance_current = 1.0
    with pytest.raises(SafetyLimitError, match="max"):
        bench.smu.source_voltage = 10.0
    # Targets and addresses are checked before anything is sent, too.
    with pytest.raises(TargetRangeError, match="targets\\[1\\]"):
        bench.program(np.array([1e-6, 30e-6]), addresses=np.array([0, 1]))
    with pytest.raises(AddressError, match="outside"):
        bench.read(addresses=np.array([16]))
    assert ad.sent == [] and ad.reads == 0


def test_allowed_cells_refused_before_sending():
    ad = RecordingAdapter()
    cfg = BenchConfig(rows=4, cols=4, limits=SafetyLimits(allowed_cells=((0, 8),)))
    bench = InstrumentBench(ad, device="pcm-nandakumar2019", config=cfg, clock="host")
    ad.sent.clear()
    ad.reads = 0
    with pytest.raises(SafetyLimitError, match="cell address 9"):
        bench.program(np.full(3, 10e-6), addresses=np.array([1, 9, 2]), verify=WriteVerify())
    with pytest.raises(SafetyLimitError, match="allowed_cells"):
        bench.read(addresses=np.array([12]))
    with pytest.raises(SafetyLimitError, match="allowed_cells"):
        bench.apply_pulse(15, 1.0, 1e-3, "set")
    assert ad.sent == [] and ad.reads == 0


def test_driver_protocol_exact_commands():
    lim = SafetyLimits(compliance_A=1e-4)
    with expected_protocol(SourceMeter2450, [(":SOUR:VOLT:ILIM 5e-05", None), (":SOUR:VOLT:ILIM?", "5.000000E-05"),
                                              (":SOUR:VOLT:LEV 0.2", None), (":OUTP ON", None), (":OUTP?", "1")],
                           limits=lim) as smu:
        smu.compliance_current = 5e-5
        assert smu.compliance_current == pytest.approx(5e-5)
        smu.source_voltage = 0.2
        smu.output_enabled = True
        assert smu.output_enabled is True
    with expected_protocol(SourceMeter2450, [], limits=lim) as smu:  # nothing may be sent
        with pytest.raises(SafetyLimitError):
            smu.compliance_current = 5e-4
        with pytest.raises(SafetyLimitError):
            smu.pulse_message(2.2, 1e-3, "set")
    with expected_protocol(SourceMeter2450, [], limits=lim) as smu:
        assert smu.pulse_message(1.2, 1e-3, "set", read_V=0.2) == (
            ":SOUR:VOLT:LEV 1.2;:SOUR:VOLT:DEL 0.001;:OUTP ON;:READ?;:OUTP OFF;"
            ":SOUR:VOLT:LEV 0.2;:SOUR:VOLT:DEL 0;:OUTP ON;:READ?;:OUTP OFF;:SOUR:VOLT:LEV 0;:SYST:ERR?")
        assert smu.read_message(0.2) == ":SOUR:VOLT:LEV 0.2;:SOUR:VOLT:DEL 0;:OUTP ON;:READ?;:OUTP OFF;:SYST:ERR?"
    with expected_protocol(SwitchMatrix, [(":ROUT:OPEN:ALL", None), (":ROUT:CLOS?", "(@1!2!3)")],
                           rows=4, cols=4) as sw:
        sw.open_all()
        assert sw.closed_channels == "(@1!2!3)"
        assert sw.channel(6) == "(@1!2!3)"
        with pytest.raises(AddressError, match="outside"):
            sw.channel(16)


def test_shutdown_sends_safe_state(recorded_bench):
    bench, ad = recorded_bench
    bench.shutdown()
    assert ad.sent == [":SOUR:VOLT:LEV 0;:OUTP OFF", ":ROUT:OPEN:ALL"]
    bench.shutdown()  # idempotent
    assert len(ad.sent) == 2


def test_bench_config_toml(tmp_path):
    p = tmp_path / "bench.toml"
    p.write_text("[matrix]\nrows = 8\ncols = 4\n[limits]\nmax_set_V = 1.8\nallowed_cells = [[0, 16]]\n"
                 "[scheme]\nv_read_V = 0.1\n")
    cfg = load_bench_config(p)
    assert (cfg.rows, cfg.cols, cfg.n_cells) == (8, 4, 32)
    assert cfg.limits.max_set_V == 1.8 and cfg.limits.allowed_cells == ((0, 16),)
    assert cfg.scheme.v_read_V == 0.1
    p.write_text("[limits]\nmax_set_volts = 1.8\n")
    with pytest.raises(ValueError, match="max_set_volts"):
        load_bench_config(p)


@pytest.mark.parametrize("body, where, what", [
    ('[limits]\nmax_set_V = "high"\n', "[limits].max_set_V", "expected a number, got 'high'"),
    ("[limits]\nmax_set_V = nan\n", "[limits].max_set_V", "must be finite"),
    ("[limits]\nallowed_cells = 5\n", "[limits].allowed_cells", "expected a list of [start, stop) address ranges"),
    ("[limits]\nallowed_cells = [[0, 1.5]]\n", "[limits].allowed_cells", "element 0 must be a [start, stop) pair"),
    ("[matrix]\nrows = 2.5\n", "[matrix].rows", "expected an integer, got 2.5"),
    ("[matrix]\ncols = 0\n", "[matrix].cols", "0 is below the minimum 1"),
    ("[scheme]\nreset_first = 1\n", "[scheme].reset_first", "expected true or false"),
    ("[instrument]\nmodel = 2450\n", "[instrument].model", "expected a string"),
    ("[limits]\nmax_set_volts = 1.8\n", "[limits]", "unknown field(s) max_set_volts"),
    ("[limitz]\n", "top level", "unknown field(s) limitz"),
    ("limits = 3\n", "[limits]", "expected a table, got int"),
])
def test_a_bad_bench_file_is_refused_naming_its_field(tmp_path, body, where, what):
    """Bench files are read the way device cards are (emulator.toml_table): the error is a
    SettingError (an AnalogMemError) naming the file, the table and the field."""
    from analogmem.errors import SettingError

    p = tmp_path / "bench.toml"
    p.write_text(body)
    with pytest.raises(SettingError) as exc:
        load_bench_config(p)
    assert str(exc.value).startswith(f"bench config {p}: {where}: ") and what in str(exc.value), exc.value
