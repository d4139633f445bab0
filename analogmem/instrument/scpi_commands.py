"""The Keithley 2450 SCPI surface of the reference bench, as one table (:data:`COMMANDS`).

Each row is one command the bench sends or the emulator answers: its header (the short
form analogmem sends), whether it sets or queries, the type of its parameter or reply, the
instrument's range for a number, and the unit. The same rows serve

* the pymeasure driver (:mod:`~analogmem.instrument.drivers`): its property and message
  strings are built from the headers here;
* the SCPI emulator (:mod:`~analogmem.instrument.scpi_server`): it dispatches every
  command through :func:`lookup` and takes its number ranges from the rows;
* the pyvisa-sim definitions of the instrument (``tests/fixtures/keithley2450.yaml``): a
  test checks that every command and range there agrees with the table.

Headers are matched as the 2450 matches them (:func:`normalise`): long or short node
names, any case, optional nodes (``:LEVel``, ``:IMMediate``, ``:STATe``, ...) dropped. The
commands are those of the Keithley 2450 reference manual (2450-901-01), SCPI command
reference; the ``:EMUL`` subsystem exists only on the analogmem emulator.
"""

from __future__ import annotations

from dataclasses import dataclass

from ..errors import SettingError

__all__ = ["ScpiCommand", "COMMANDS", "KINDS", "VALUES", "normalise", "lookup", "command"]

#: ``set``: a command (``header [parameter]``, no reply); ``query``: ``header?``, one reply.
KINDS = ("set", "query")
#: What a row's parameter (``set``) or reply (``query``) is: ``none``; ``number`` (SCPI
#: <NRf>, in ``unit``, within ``[lo, hi]`` for a ``set``); ``bool`` (``ON|OFF|1|0``);
#: ``choice`` (one of ``choices``); ``channel`` (a channel list ``(@card!row!col)``);
#: ``text`` (a reply of its own format); ``fault`` (the emulator's fault arguments);
#: ``ignored`` (a parameter is required; the emulator accepts it and changes nothing).
VALUES = ("none", "number", "bool", "choice", "channel", "text", "fault", "ignored")

#: Long SCPI node names the 2450 accepts, and their short forms.
LONG_NODES = {
    "SOURCE": "SOUR", "VOLTAGE": "VOLT", "LEVEL": "LEV", "IMMEDIATE": "IMM", "AMPLITUDE": "AMPL",
    "DELAY": "DEL", "OUTPUT": "OUTP", "STATE": "STAT", "SENSE": "SENS", "FUNCTION": "FUNC",
    "CURRENT": "CURR", "RANGE": "RANG", "ROUTE": "ROUT", "CLOSE": "CLOS", "OPEN": "OPEN",
    "SYSTEM": "SYST", "ERROR": "ERR", "NEXT": "NEXT", "COUNT": "COUN", "EMULATOR": "EMUL",
    "CLOCK": "CLOC", "GEOMETRY": "GEOM", "FAULT": "FAUL", "CLEAR": "CLE", "MEASURE": "MEAS", "MULTIPLE": "MULT",
    "AUTO": "AUTO", "ILIMIT": "ILIM", "READ": "READ", "ALL": "ALL", "NPLCYCLES": "NPLC"}
#: Optional nodes (dropped when matching): ``:SOUR:VOLT:LEV:IMM:AMPL`` is ``:SOUR:VOLT``.
OPTIONAL_NODES = {"LEV", "IMM", "AMPL", "STAT", "NEXT", "MULT"}


def normalise(header: str) -> str:
    """``:SOURce:VOLTage:LEVel`` → ``SOUR:VOLT`` (short forms, optional nodes dropped, no
    leading colon; a query keeps its ``?``)."""
    h = header.strip().upper().lstrip(":")
    query = h.endswith("?")
    h = h.rstrip("?")
    nodes = []
    for n in h.split(":"):
        n = LONG_NODES.get(n, n)
        if n not in OPTIONAL_NODES:
            nodes.append(n)
    return ":".join(nodes) + ("?" if query else "")


@dataclass(frozen=True)
class ScpiCommand:
    """One row of the command table.

    Attributes:
        name: what the command is about; the ``set`` and ``query`` rows of one setting
            share it (``source_voltage``), and the driver's property of that setting has
            this name where it has one.
        header: the header analogmem sends, e.g. ``:SOUR:VOLT:LEV`` or ``:READ?``.
        kind: ``"set"`` or ``"query"`` (:data:`KINDS`).
        value: the parameter (``set``) or reply (``query``) type (:data:`VALUES`).
        lo, hi: the instrument's range of a ``number`` parameter, in ``unit``.
        unit: SI unit of a number (``"V"``, ``"A"``, ``"s"``), ``""`` otherwise.
        choices: the accepted values of a ``choice``.
        aliases: other headers the instrument answers with the same command.
        emulator_only: ``True`` for the analogmem emulator's ``:EMUL`` subsystem.
    """

    name: str
    header: str
    kind: str
    value: str = "none"
    lo: float | None = None
    hi: float | None = None
    unit: str = ""
    choices: tuple[str, ...] = ()
    aliases: tuple[str, ...] = ()
    emulator_only: bool = False

    def __post_init__(self) -> None:
        if self.kind not in KINDS or self.value not in VALUES:
            raise SettingError(f"SCPI table row {self.header!r}: kind {self.kind!r} / value {self.value!r} unknown")
        if (self.kind == "query") != self.header.endswith("?"):
            raise SettingError(f"SCPI table row {self.header!r}: a query header ends with '?', a set header does not")

    @property
    def keys(self) -> tuple[str, ...]:
        """The normalised headers (:func:`normalise`) this row answers to."""
        return tuple(normalise(h) for h in (self.header, *self.aliases))


def _setting(name: str, set_header: str, query_header: str, value: str, lo: float | None = None,
             hi: float | None = None, unit: str = "", choices: tuple[str, ...] = (),
             emulator_only: bool = False) -> tuple[ScpiCommand, ScpiCommand]:
    """The ``set`` and ``query`` rows of one setting."""
    return (ScpiCommand(name, set_header, "set", value, lo, hi, unit, choices, emulator_only=emulator_only),
            ScpiCommand(name, query_header, "query", value, unit=unit, choices=choices, emulator_only=emulator_only))


def _ignored(name: str, header: str) -> ScpiCommand:
    """A setting the emulator accepts (it needs a parameter) and ignores."""
    return ScpiCommand(name, header, "set", "ignored")


#: The command table (Keithley 2450 reference manual, SCPI command reference; ``:EMUL``
#: is the analogmem emulator's own subsystem).
COMMANDS: tuple[ScpiCommand, ...] = (
    # IEEE 488.2 common commands
    ScpiCommand("identify", "*IDN?", "query", "text"),
    ScpiCommand("reset", "*RST", "set"),
    ScpiCommand("clear_status", "*CLS", "set"),
    ScpiCommand("operation_complete", "*OPC?", "query", "text"),
    ScpiCommand("operation_complete", "*OPC", "set"),
    ScpiCommand("wait", "*WAI", "set"),
    # error queue
    ScpiCommand("next_error", ":SYST:ERR?", "query", "text"),
    ScpiCommand("error_count", ":SYST:ERR:COUN?", "query", "number"),
    # source
    *_setting("source_function", ":SOUR:FUNC", ":SOUR:FUNC?", "choice", choices=("VOLT", "CURR")),
    *_setting("source_voltage", ":SOUR:VOLT:LEV", ":SOUR:VOLT?", "number", -210.0, 210.0, "V"),
    *_setting("compliance_current", ":SOUR:VOLT:ILIM", ":SOUR:VOLT:ILIM?", "number", 1e-9, 1.05, "A"),
    *_setting("source_voltage_delay", ":SOUR:VOLT:DEL", ":SOUR:VOLT:DEL?", "number", 0.0, 999.9999, "s"),
    _ignored("source_voltage_range", ":SOUR:VOLT:RANG"),
    _ignored("source_voltage_autorange", ":SOUR:VOLT:RANG:AUTO"),
    _ignored("source_voltage_delay_auto", ":SOUR:VOLT:DEL:AUTO"),
    # sense
    *_setting("sense_function", ":SENS:FUNC", ":SENS:FUNC?", "choice", choices=("CURR", "VOLT", "RES")),
    _ignored("current_range", ":SENS:CURR:RANG"),
    _ignored("current_autorange", ":SENS:CURR:RANG:AUTO"),
    _ignored("current_nplc", ":SENS:CURR:NPLC"),
    # output and measurement
    *_setting("output_enabled", ":OUTP", ":OUTP?", "bool"),
    ScpiCommand("current", ":READ?", "query", "number", unit="A", aliases=(":MEAS:CURR?", ":MEAS?")),
    # switch matrix
    ScpiCommand("open_all", ":ROUT:OPEN:ALL", "set"),
    *_setting("closed_channels", ":ROUT:CLOS", ":ROUT:CLOS?", "channel"),
    # the analogmem emulator only
    ScpiCommand("emulator_geometry", ":EMUL:GEOM?", "query", "text", emulator_only=True),
    *_setting("emulator_clock", ":EMUL:CLOC", ":EMUL:CLOC?", "number", 0.0, 1e12, "s", emulator_only=True),
    ScpiCommand("emulator_fault", ":EMUL:FAUL", "set", "fault", emulator_only=True),
    ScpiCommand("emulator_fault_clear", ":EMUL:FAUL:CLE", "set", emulator_only=True),
)

_BY_KEY: dict[str, ScpiCommand] = {}
_BY_NAME: dict[tuple[str, str], ScpiCommand] = {}
for _c in COMMANDS:
    for _k in _c.keys:
        if _k in _BY_KEY:
            raise SettingError(f"SCPI table: {_k!r} stands in two rows")
        _BY_KEY[_k] = _c
    _BY_NAME[_c.name, _c.kind] = _c
del _c, _k


def lookup(header: str) -> ScpiCommand | None:
    """The row a received ``header`` (any form the 2450 accepts) names, or None."""
    return _BY_KEY.get(normalise(header))


def command(name: str, kind: str = "set") -> ScpiCommand:
    """The ``kind`` row of ``name`` (e.g. ``command("source_voltage", "query")``)."""
    return _BY_NAME[name, kind]
