"""Instrument drivers: the Keithley 2450 source-measure unit (pymeasure's maintained driver,
with our safety limits as its validators) and a SCPI crosspoint switch matrix.

The settings are pymeasure declarative properties (one get/set command, a docstring, a
validator, allowed values); the safety-relevant ones are *dynamic*: their allowed values
come from the bench's :class:`~analogmem.instrument.limits.SafetyLimits`, and their
validator raises :class:`~analogmem.errors.SafetyLimitError` naming the limit instead of
pymeasure's silent ``truncated_range`` clipping.

Hot-path operations (a pulse, a read) are composed from the same SCPI commands into one
IEEE 488.2 program message ending with ``:SYST:ERR?``, so one round trip both acts and
reports the instrument's error queue:

* read:  ``:SOUR:VOLT:LEV Vr;:SOUR:VOLT:DEL 0;:OUTP ON;:READ?;:OUTP OFF;:SYST:ERR?``
* pulse: ``:SOUR:VOLT:LEV V;:SOUR:VOLT:DEL w;:OUTP ON;:READ?;:OUTP OFF`` [``;`` + read]
  ``;:SOUR:VOLT:LEV 0;:SYST:ERR?``

On a 2450 the pulse is the source delay ``w`` plus one current integration with the output
on (ms scale); sub-µs pulses need a pulse unit (e.g. a 4200A-SCS PMU) behind the same
:class:`~analogmem.instrument.InstrumentBench` hooks.
"""

from __future__ import annotations

from typing import Any

from pymeasure.instruments import Instrument, SCPIMixin
from pymeasure.instruments.keithley import Keithley2450
from pymeasure.instruments.validators import strict_discrete_set, strict_range

from ..errors import AddressError, SettingError
from .errors import InstrumentReplyError
from .limits import SafetyLimits, safety_range
from .scpi_commands import command
from .scpi_server import EMULATOR_MANUFACTURER, EMULATOR_MODEL  # defined with the server, which needs no pymeasure

__all__ = ["SourceMeter2450", "SwitchMatrix", "parse_idn", "EMULATOR_MANUFACTURER", "EMULATOR_MODEL"]



def parse_idn(reply: str) -> dict[str, str]:
    """Split an ``*IDN?`` reply ``manufacturer,model,serial,firmware`` into a dict; raise
    :class:`InstrumentReplyError` if it does not have four comma-separated fields."""
    parts = [p.strip() for p in reply.strip().split(",")]
    if len(parts) != 4 or not parts[0]:
        raise InstrumentReplyError(f"*IDN? reply {reply!r} is not 'manufacturer,model,serial,firmware'")
    return dict(zip(("manufacturer", "model", "serial", "firmware"), parts))


def _fmt(x: float) -> str:
    return f"{float(x):.9g}"


def _get(name: str) -> str:
    """The query header of setting ``name`` in the command table."""
    return command(name, "query").header


def _set(name: str, parameter: str) -> str:
    """The set command of setting ``name`` with a pymeasure ``parameter`` format."""
    return f"{command(name).header} {parameter}"


# Headers the messages below are composed from (the command table's rows).
_LEV, _DEL, _OUTP = (command(n).header for n in ("source_voltage", "source_voltage_delay", "output_enabled"))
_READ, _ERR = _get("current"), _get("next_error")
_OPEN_ALL = command("open_all").header


def _source_and_read(level_V: float, delay_s: float = 0.0) -> str:
    """Source ``level_V`` for ``delay_s`` with the output on, read the current, output off."""
    return f"{_LEV} {_fmt(level_V)};{_DEL} {_fmt(delay_s)};{_OUTP} ON;{_READ};{_OUTP} OFF"


class SourceMeter2450(Keithley2450):
    """pymeasure's :class:`~pymeasure.instruments.keithley.Keithley2450` with the
    bench's safety limits as validators.

    Args:
        adapter: a pymeasure adapter or VISA resource string.
        limits: the :class:`SafetyLimits` the dynamic properties enforce.
        **kwargs: passed to pymeasure's ``Instrument`` (e.g. ``timeout`` in ms).
    """

    source_voltage = Instrument.control(
        _get("source_voltage"), _set("source_voltage", "%g"),
        """Control the source voltage level (V). Bounded by the bench's largest allowed
        |V| (SET, RESET or read); outside it raises SafetyLimitError before sending.""",
        validator=safety_range("max |V| (max_set_V, max_reset_V, max_read_V)", "V"),
        values=[-2.5, 2.5],
        dynamic=True,
    )

    compliance_current = Instrument.control(
        _get("compliance_current"), _set("compliance_current", "%g"),
        """Control the current compliance ``:SOUR:VOLT:ILIM`` (A) while sourcing voltage;
        at most the bench's ``compliance_A``.""",
        validator=safety_range("compliance_A", "A"),
        values=[1e-9, 1e-4],
        dynamic=True,
    )

    source_voltage_delay = Instrument.control(
        _get("source_voltage_delay"), _set("source_voltage_delay", "%g"),
        """Control the source delay (s) — the pulse width of a 2450 pulse; within the
        bench's ``[min_pulse_width_s, max_pulse_width_s]`` or 0 (reads).""",
        validator=strict_range,
        values=[0, 1e-2],
        dynamic=True,
    )

    sense_function = Instrument.control(
        _get("sense_function"), _set("sense_function", '"%s"'),
        """Control the measured quantity ('CURR', 'VOLT' or 'RES').""",
        validator=strict_discrete_set,
        values=["CURR", "VOLT", "RES"],
        get_process=lambda v: v.strip().strip('"').split(":")[0].upper(),
    )

    output_enabled = Instrument.control(
        _get("output_enabled"), _set("output_enabled", "%s"),
        """Control whether the source output is on (bool).""",
        validator=strict_discrete_set,
        values={True: "ON", False: "OFF"},
        map_values=True,
        cast=str,
        get_process=lambda v: "ON" if str(v).strip().upper() in ("1", "ON") else "OFF",
    )

    def __init__(self, adapter: Any, limits: SafetyLimits | None = None, name: str = "Keithley 2450 SourceMeter",
                 **kwargs: Any):
        super().__init__(adapter, name=name, **kwargs)
        self.set_limits(limits or SafetyLimits())

    def set_limits(self, limits: SafetyLimits) -> None:
        """Bind the dynamic validators to ``limits``."""
        self.limits = limits
        v = max(limits.max_set_V, limits.max_reset_V, limits.max_read_V)
        self.source_voltage_values = [-v, v]
        self.compliance_current_values = [0.0, limits.compliance_A]
        self.source_voltage_delay_values = [0.0, limits.max_pulse_width_s]

    # ------------------------------------------------------------------ messages
    def read_message(self, read_V: float) -> str:
        """One message that reads the routed cell at ``read_V`` (checked against
        ``max_read_V``); its reply is ``I;code,"message"`` (A; error queue head)."""
        v = self.limits.check_read(read_V)
        return f"{_source_and_read(v)};{_ERR}"

    def pulse_message(self, voltage_V: float, width_s: float, kind: str, read_V: float | None = None) -> str:
        """One message applying a ``kind`` (``"set"`` or ``"reset"``) pulse of
        ``voltage_V`` for ``width_s``, optionally followed by a read at ``read_V``; the
        source returns to 0 V with the output off. Every value is checked against the
        limits first. Reply: ``I_pulse[;I_read];code,"message"`` (A)."""
        if kind == "set":
            v = self.limits.check_set(voltage_V)
        elif kind == "reset":
            v = self.limits.check_reset(voltage_V)
        else:
            raise SettingError(f"pulse kind must be 'set' or 'reset', got {kind!r}")
        w = self.limits.check_width(width_s, f"{kind.upper()} pulse width")
        msg = _source_and_read(v, w)
        if read_V is not None:
            msg += ";" + _source_and_read(self.limits.check_read(read_V))
        return f"{msg};{_LEV} 0;{_ERR}"

    def configure_voltage_source(self, compliance_A: float) -> None:
        """Source voltage, measure current with auto range, output off at 0 V, compliance
        ``compliance_A`` (A)."""
        self.output_enabled = False
        self.source_mode = "voltage"
        self.sense_function = "CURR"
        self.write(_set("current_autorange", "1"))
        self.compliance_current = compliance_A
        self.source_voltage = 0.0

    def shutdown(self) -> None:
        """Source 0 V and switch the output off (no ramp: between operations the output
        is already off; pulses never leave it on)."""
        self.write(f"{_LEV} 0;{_OUTP} OFF")
        self.isShutdown = True


class SwitchMatrix(SCPIMixin, Instrument):
    """A SCPI crosspoint switch matrix (Keithley 7001/7002 style channel lists
    ``(@card!row!column)``, rows and columns from 1) that connects one cell at a time to
    the source-measure unit. No maintained pymeasure driver covers a generic crosspoint
    card, so this is the one driver analogmem writes itself.

    Args:
        adapter: a pymeasure adapter or VISA resource string.
        rows, cols: matrix size; ``card`` the slot (default 1).
    """

    closed_channels = Instrument.measurement(
        _get("closed_channels"),
        """Get the closed crosspoints as the instrument reports them, e.g. '(@1!3!4)'.""",
        cast=str,
        get_process=lambda v: ",".join(v) if isinstance(v, list) else str(v),
    )

    def __init__(self, adapter: Any, rows: int, cols: int, card: int = 1, name: str = "SCPI switch matrix",
                 **kwargs: Any):
        super().__init__(adapter, name=name, **kwargs)
        self.rows, self.cols, self.card = int(rows), int(cols), int(card)

    def channel(self, address: int) -> str:
        """The channel list ``(@card!row!col)`` of cell ``address`` (row-major, from 1)."""
        a = int(address)
        if not 0 <= a < self.rows * self.cols:
            raise AddressError(f"cell address {a} is outside the {self.rows}x{self.cols} matrix")
        return f"(@{self.card}!{a // self.cols + 1}!{a % self.cols + 1})"

    def route_message(self, address: int) -> str:
        """One message that opens every crosspoint, closes the one of ``address`` and
        reports what is closed and the error-queue head: reply ``(@c!r!k);code,"message"``."""
        return f"{_OPEN_ALL};{_set('closed_channels', self.channel(address))};{_get('closed_channels')};{_ERR}"

    def open_all(self) -> None:
        """Open every crosspoint."""
        self.write(_OPEN_ALL)

    def shutdown(self) -> None:
        """Open every crosspoint."""
        self.open_all()
        self.isShutdown = True
