"""A SCPI emulator of the reference bench (Keithley 2450 + crosspoint switch matrix) on a
loopback TCP socket, backed by an :class:`~analogmem.emulator.bench.EmulatedBench`.

Connect with PyVISA (pyvisa-py) as ``TCPIP0::127.0.0.1::<port>::SOCKET`` (line
terminator ``\\n``). The cell physics is the emulator's: a SET pulse programs the routed
cell through :meth:`EmulatedBench.program` (the card's programming noise, drift exponent,
relaxation, stuck faults), a read returns ``I = G·V`` with ``G`` from
:meth:`EmulatedBench.read` (drift and read noise at the emulated clock), clipped at the
compliance like a real source-measure unit.

What a pulse does (``:OUTP ON`` with a cell routed and the source at ``V``):

* ``V >= scheme.v_set_threshold_V``: SET — the cell is programmed to the transfer curve
  ``scheme.transfer(V)`` (S) plus the card's programming noise;
* ``V <= -|scheme.v_reset_V|·reset_fraction``: RESET — programmed to ``g_min_S``;
* otherwise (|V| below the disturb threshold): nothing changes; a read is non-destructive.

Command surface: the rows of :data:`~analogmem.instrument.scpi_commands.COMMANDS` (long or
short forms, ``;``-separated, replies joined with ``;``): ``*IDN? *RST *CLS *OPC? *WAI``;
``:SYST:ERR[:NEXT]?`` ``:SYST:ERR:COUN?``; ``:SOUR:FUNC``, ``:SOUR:VOLT[:LEV]``,
``:SOUR:VOLT:ILIM``, ``:SOUR:VOLT:DEL`` (each with ``?``); ``:SENS:FUNC`` (+``?``);
``:OUTP[:STAT]`` (+``?``); ``:READ?`` ``:MEAS:CURR?``; ``:ROUT:OPEN:ALL`` ``:ROUT:CLOS
(@1!row!col)`` ``:ROUT:CLOS?``; ranges and NPLC are accepted and ignored. Each row's
``_set_<name>`` / ``_query_<name>`` method of the instrument runs it. Errors go to the queue
with SCPI codes (-101 invalid character, -113 undefined header, -222 data out of range, -221
settings conflict, -350 queue overflow).

Emulator-only commands (a real instrument has none; :class:`InstrumentBench` uses them only
when ``*IDN?`` names this emulator):

* ``:EMUL:GEOM?`` — the matrix size ``rows,cols``;
* ``:EMUL:CLOC?`` — the emulated clock (s); ``:EMUL:CLOC t`` — move it forward to ``t``
  (absolute, so repeating it is harmless): the bench's ``wait`` costs no wall time.
* ``:EMUL:FAUL kind,count[,param[,after]]`` — inject faults into the next ``count``
  replies after skipping ``after``: ``DEL`` (reply ``param`` s late), ``DROP`` (no reply),
  ``GARB`` (garbage bytes), ``ERR`` (push error ``param`` onto the queue), ``DISC`` (close
  the connection). ``:EMUL:FAUL:CLE`` clears them. Tests can call :meth:`inject` directly.

State: like a real instrument, the server keeps one state (source level, output on/off,
closed crosspoint, error queue) shared by every connection and kept from one connection to
the next — a client that connects after another left the output on at 100 V finds it so.
``*RST`` clears it (source 0 V, output off, crosspoints open, error queue emptied; the cells
keep their programmed state); ``reset_on_connect=True`` does that for every new connection
(for tests). A program message with a non-ASCII byte is not executed: it pushes SCPI error
-101 (invalid character) naming the byte.

Framing and numbers: a program message is read to its ``\n`` terminator; one longer than
:data:`MAX_MESSAGE_BYTES` (64 KiB) is refused whole — SCPI error -363 (input buffer overrun)
and none of it executed, never cut into pieces that run. Numeric parameters are SCPI
<NRf> (:func:`parse_nrf`): ``1_5``, ``0x10``, ``inf`` are -104 data type errors.

Faults armed with ``:EMUL:FAUL`` affect only the replies of the connection that armed them
(:meth:`ScpiEmulatorServer.inject` arms server-wide ones, for tests). At most
``max_connections`` clients are served at once (one more is closed at once); the listen
backlog is :data:`LISTEN_BACKLOG`. ``limits`` (``bench serve --enforce-limits``) makes the
emulator refuse levels, compliances, widths and routes past a bench file's
:class:`SafetyLimits` with -222, as a lab interlock would; without it the emulator accepts
what a real 2450 accepts (±210 V, 1.05 A).

The server binds to a loopback address only; port 0 picks a free ephemeral port.
Connections idle for ``idle_timeout_s`` are closed; ``max_lifetime_s`` stops the server.
"""

from __future__ import annotations

import collections
import ipaddress
import re
import socket
import socketserver
import threading
from dataclasses import dataclass
from typing import Any, Callable

import numpy as np

from .._seeding import SeedLike
from ..emulator.bench import EmulatedBench
from ..emulator.cells import DeviceModel, load_device
from ..errors import AnalogMemError, SettingError
from .limits import SafetyLimits, VoltageScheme
from .pulsed_cells import PulsedCells
from .scpi_commands import LONG_NODES, ScpiCommand, lookup

__all__ = ["ScpiEmulatorServer", "LoopbackServer", "Fault", "FAULT_KINDS", "MAX_MESSAGE_BYTES", "parse_nrf", "check_server_address",
           "EMULATOR_MANUFACTURER", "EMULATOR_MODEL"]

#: ``*IDN?`` fields by which the analogmem SCPI emulator identifies itself (defined here, not
#: with the pymeasure drivers, so that ``analogmem bench serve`` needs neither pymeasure nor PyVISA).
EMULATOR_MANUFACTURER = "analogmem"
EMULATOR_MODEL = "SCPI-EMULATOR-2450"

#: The longest program message (bytes, terminator included) the emulators accept; a
#: longer one is refused whole (-363 input buffer overrun) and none of it is executed.
MAX_MESSAGE_BYTES = 1 << 16
#: Listen backlog: rapid connects must not stall in the kernel's SYN queue.
LISTEN_BACKLOG = 128
#: Connections served at once; one more is accepted and closed at once.
MAX_CONNECTIONS = 32
#: SCPI <NRf>: optional sign, digits with an optional point (or a point and digits), an
#: optional exponent. Nothing else: no digit separators, no hex, no "inf"/"nan".
_NRF = re.compile(r"[+-]?(?:\d+(?:\.\d*)?|\.\d+)(?:[eE][+-]?\d+)?")


def parse_nrf(text: str) -> float | None:
    """``text`` as an SCPI <NRf> number, or None if it is not one (``1_5``, ``0x10``,
    ``inf``, ``1.5.5`` are not)."""
    t = text.strip()
    return float(t) if _NRF.fullmatch(t) else None


def check_geometry(rows: Any, cols: Any) -> tuple[int, int]:
    """Matrix rows and columns: integers ≥ 1 (else :class:`SettingError`)."""
    for name, v in (("rows", rows), ("cols", cols)):
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise SettingError(f"{name} must be an integer >= 1, got {v!r}")
    return int(rows), int(cols)


def check_lifetime(max_lifetime_s: Any) -> float | None:
    """``max_lifetime_s``: None or a finite number of seconds > 0 (else :class:`SettingError`)."""
    if max_lifetime_s is None:
        return None
    try:
        v = float(max_lifetime_s)
    except (TypeError, ValueError):
        v = float("nan")
    if not (np.isfinite(v) and v > 0):
        raise SettingError(f"max_lifetime_s (--max-seconds) must be a finite number of seconds > 0, "
                           f"got {max_lifetime_s!r}")
    return v


def check_server_address(host: str, port: Any) -> str:
    """A loopback ``host`` (``localhost`` means 127.0.0.1) and a port in [0, 65535];
    returns the numeric host. Raises :class:`SettingError` naming what is wrong."""
    h = "127.0.0.1" if str(host).strip().lower() == "localhost" else str(host).strip()
    try:
        loopback = ipaddress.ip_address(h).is_loopback
    except ValueError:
        raise SettingError(f"host must be a loopback IP address (127.0.0.1, ::1 or localhost), got {host!r}") from None
    if not loopback:
        raise SettingError(f"the emulator serves loopback addresses only, got host {host!r}")
    if isinstance(port, bool) or not isinstance(port, (int, np.integer)) or not 0 <= port < 65536:
        raise SettingError(f"port must be an integer in [0, 65535], got {port!r}")
    return h

FAULT_KINDS = ("DEL", "DROP", "GARB", "ERR", "DISC")
_MAX_FAULT_DELAY_S = 60.0
_GARBAGE = b"\x15\x7f#!\xfe\xff-GARBAGE-\x00"

_CHANNEL = re.compile(r"^\(@\s*(\d+)!(\d+)!(\d+)\s*\)$")
_NAN = 9.91e37  # SCPI "not a number"


@dataclass
class Fault:
    """A fault armed on the server: affects ``count`` replies after skipping ``after``."""

    kind: str
    count: int = 1
    param: float = 0.0
    after: int = 0


class _ScpiError(AnalogMemError):
    """A command the emulated instrument refuses: queued as ``(code, message)``."""

    def __init__(self, code: int, message: str):
        super().__init__(message)
        self.code, self.message = code, message


class _Instrument:
    """The emulated instrument state machine (one per server, shared by connections)."""

    def __init__(self, device: DeviceModel, rows: int, cols: int, scheme: VoltageScheme, seed: SeedLike,
                 reset_fraction: float, n_threads: int, limits: SafetyLimits | None = None):
        self.cells = PulsedCells(device, rows, cols, scheme, seed, reset_fraction, n_threads, limits)
        self.device, self.rows, self.cols, self.scheme = device, rows, cols, scheme
        self.bench: EmulatedBench = self.cells.bench
        self.lock = self.cells.lock
        #: faults armed by :meth:`ScpiEmulatorServer.inject` (any connection's replies)
        self.faults: list[Fault] = []
        #: faults armed with ``:EMUL:FAUL`` by the connection now being served (its own)
        self.conn_faults: list[Fault] = self.faults
        self.messages = 0
        self.reset()

    @property
    def pulses(self) -> int:
        return self.cells.pulses

    @property
    def reads(self) -> int:
        return self.cells.reads

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        self.func = "VOLT"
        self.level_V = 0.0
        self.ilim_A = 1.05e-4
        self.delay_s = 0.0
        self.sense = "CURR"
        self.output = False
        self.closed: int | None = None
        self.errors: collections.deque[tuple[int, str]] = collections.deque()

    def push_error(self, code: int, message: str) -> None:
        # SCPI is ASCII: anything else in a message (e.g. a quoted header) is escaped, so a
        # reply built from the queue can always be sent
        message = message.encode("ascii", "backslashreplace").decode("ascii")
        if len(self.errors) >= 10:
            self.errors[-1] = (-350, "Queue overflow")
        else:
            self.errors.append((code, message))

    def clock_s(self) -> float:
        return self.cells.clock_s()

    # ------------------------------------------------------------------ physics
    def _cell(self) -> int:
        if self.closed is None:
            raise _ScpiError(-221, "Settings conflict; no crosspoint closed")
        return self.closed

    def _apply_source(self) -> None:
        """The routed cell sees the source level: SET, RESET or nothing."""
        if not self.output or self.func != "VOLT" or self.closed is None:
            return
        self.cells.pulse(self.closed, self.level_V)

    def _measure(self) -> float:
        if not self.output:
            raise _ScpiError(-221, "Settings conflict; output is off")
        return self.cells.current(self._cell(), self.level_V, self.ilim_A)

    def _enforce(self, check: Any, value: float) -> float:
        try:
            check(value)
        except AnalogMemError as exc:
            raise _ScpiError(-222, f"Data out of range; {exc}") from None
        return value

    # ------------------------------------------------------------------ commands
    @staticmethod
    def _number(arg: str, lo: float, hi: float) -> float:
        v = parse_nrf(arg)
        if v is None:
            raise _ScpiError(-104 if arg.strip() else -109, f"{'Data type error' if arg.strip() else 'Missing parameter'}"
                                                            f"; {arg!r} is not a number")
        if not np.isfinite(v) or v < lo or v > hi:
            raise _ScpiError(-222, f"Data out of range; {v:g} not in [{lo:g}, {hi:g}]")
        return v

    @staticmethod
    def _bool(arg: str) -> bool:
        a = arg.strip().upper()
        if a in ("ON", "1"):
            return True
        if a in ("OFF", "0"):
            return False
        raise _ScpiError(-224, f"Illegal parameter value; {arg!r}")

    def execute(self, command: str) -> str | None:
        """Run one command; return its reply text for a query, else None. The command's
        row in :data:`~analogmem.instrument.scpi_commands.COMMANDS` picks the handler
        (``_set_<name>`` / ``_query_<name>``) and gives its number range."""
        command = command.strip()
        if not command:
            return None
        header, _, arg = command.partition(" ")
        row = lookup(header)
        if row is None:
            raise _ScpiError(-113, f"Undefined header; {header!r}")
        if row.value == "ignored":
            return self._accept(header, arg.strip())
        handler: Callable[[ScpiCommand, str], str | None] = getattr(self, f"_{row.kind}_{row.name}")
        return handler(row, arg.strip())

    # --------------------------------------------------------- IEEE 488.2, error queue
    def _query_identify(self, row: ScpiCommand, arg: str) -> str:
        """``*IDN?``: manufacturer, model, the emulated card's name, analogmem's version."""
        from .._version import __version__
        return f"{EMULATOR_MANUFACTURER},{EMULATOR_MODEL},{self.device.name},{__version__}"

    def _set_reset(self, row: ScpiCommand, arg: str) -> None:
        """``*RST``: source 0 V, output off, crosspoints open, error queue emptied."""
        self.reset()

    def _set_clear_status(self, row: ScpiCommand, arg: str) -> None:
        """``*CLS``: empty the error queue."""
        self.errors.clear()

    def _query_operation_complete(self, row: ScpiCommand, arg: str) -> str:
        """``*OPC?``: every command completes before the next runs, so always ``1``."""
        return "1"

    def _set_operation_complete(self, row: ScpiCommand, arg: str) -> None:
        """``*OPC``: nothing pending, nothing to do."""

    def _set_wait(self, row: ScpiCommand, arg: str) -> None:
        """``*WAI``: nothing pending, nothing to do."""

    def _query_next_error(self, row: ScpiCommand, arg: str) -> str:
        """``:SYST:ERR?``: the oldest queue entry ``code,"message"`` (``0,"No error"``)."""
        code, msg = self.errors.popleft() if self.errors else (0, "No error")
        return f'{code},"{msg}"'

    def _query_error_count(self, row: ScpiCommand, arg: str) -> str:
        """``:SYST:ERR:COUN?``: entries in the error queue."""
        return str(len(self.errors))

    def _accept(self, header: str, arg: str) -> None:
        """A setting the emulator accepts and ignores (ranges, NPLC): it needs a parameter."""
        if not arg:
            raise _ScpiError(-109, f"Missing parameter; {header}")

    # --------------------------------------------------------- source
    def _set_source_function(self, row: ScpiCommand, arg: str) -> None:
        """``:SOUR:FUNC VOLT|CURR``."""
        a = LONG_NODES.get(arg.upper().strip('"'), arg.upper().strip('"'))
        if a not in row.choices:
            raise _ScpiError(-224, f"Illegal parameter value; {arg!r}")
        self.func = a

    def _query_source_function(self, row: ScpiCommand, arg: str) -> str:
        return self.func

    def _set_source_voltage(self, row: ScpiCommand, arg: str) -> None:
        """``:SOUR:VOLT:LEV V``: with the output on and a cell routed, the cell sees it."""
        self.level_V = self._enforce(self.cells.check_level, self._number(arg, row.lo, row.hi))
        self._apply_source()

    def _query_source_voltage(self, row: ScpiCommand, arg: str) -> str:
        return f"{self.level_V:.9E}"

    def _set_compliance_current(self, row: ScpiCommand, arg: str) -> None:
        """``:SOUR:VOLT:ILIM A``: the current compliance while sourcing voltage."""
        self.ilim_A = self._enforce(self.cells.check_compliance, self._number(arg, row.lo, row.hi))

    def _query_compliance_current(self, row: ScpiCommand, arg: str) -> str:
        return f"{self.ilim_A:.9E}"

    def _set_source_voltage_delay(self, row: ScpiCommand, arg: str) -> None:
        """``:SOUR:VOLT:DEL s``: the source delay (a 2450 pulse's width)."""
        self.delay_s = self._enforce(self.cells.check_width, self._number(arg, row.lo, row.hi))

    def _query_source_voltage_delay(self, row: ScpiCommand, arg: str) -> str:
        return f"{self.delay_s:.9E}"

    # --------------------------------------------------------- sense, output, measurement
    def _set_sense_function(self, row: ScpiCommand, arg: str) -> None:
        """``:SENS:FUNC "CURR"`` (``"CURR:DC"`` and long forms too)."""
        a = arg.strip().strip("'\"").upper()
        a = LONG_NODES.get(a.split(":")[0], a.split(":")[0])
        if a not in row.choices:
            raise _ScpiError(-224, f"Illegal parameter value; {arg!r}")
        self.sense = a

    def _query_sense_function(self, row: ScpiCommand, arg: str) -> str:
        return f'"{self.sense}:DC"'

    def _set_output_enabled(self, row: ScpiCommand, arg: str) -> None:
        """``:OUTP ON|OFF``: switching on applies the source to the routed cell."""
        self.output = self._bool(arg)
        self._apply_source()

    def _query_output_enabled(self, row: ScpiCommand, arg: str) -> str:
        return "1" if self.output else "0"

    def _query_current(self, row: ScpiCommand, arg: str) -> str:
        """``:READ?``: the routed cell's current (A) at the source level."""
        if self.sense != "CURR":
            raise _ScpiError(-221, "Settings conflict; sense function is not CURR")
        return f"{self._measure():.9E}"

    # --------------------------------------------------------- switch matrix
    def _set_open_all(self, row: ScpiCommand, arg: str) -> None:
        """``:ROUT:OPEN:ALL``: refused while the output is on."""
        if self.output:
            raise _ScpiError(-221, "Settings conflict; output on while switching")
        self.closed = None

    def _set_closed_channels(self, row: ScpiCommand, arg: str) -> None:
        """``:ROUT:CLOS (@1!row!col)``: one crosspoint at a time, never with the output on."""
        m = _CHANNEL.match(arg)
        if not m:
            raise _ScpiError(-224, f"Illegal parameter value; channel list {arg!r}")
        card, r, c = (int(x) for x in m.groups())
        if card != 1 or not (1 <= r <= self.rows) or not (1 <= c <= self.cols):
            raise _ScpiError(-222, f"Data out of range; channel {arg} not in 1!1..{self.rows}!{self.cols}")
        if self.output:
            raise _ScpiError(-221, "Settings conflict; output on while switching")
        cell = self._enforce(self.cells.check_cell, (r - 1) * self.cols + (c - 1))
        if self.closed is not None and self.closed != cell:
            raise _ScpiError(-221, "Settings conflict; another crosspoint is closed")
        self.closed = cell

    def _query_closed_channels(self, row: ScpiCommand, arg: str) -> str:
        if self.closed is None:
            return "(@)"
        return f"(@1!{self.closed // self.cols + 1}!{self.closed % self.cols + 1})"

    # --------------------------------------------------------- the emulator's own
    def _query_emulator_geometry(self, row: ScpiCommand, arg: str) -> str:
        return f"{self.rows},{self.cols}"

    def _query_emulator_clock(self, row: ScpiCommand, arg: str) -> str:
        return f"{self.clock_s():.9f}"

    def _set_emulator_clock(self, row: ScpiCommand, arg: str) -> None:
        """``:EMUL:CLOC t``: move the emulated clock forward to ``t`` (s, absolute)."""
        self.cells.advance_to(self._number(arg, row.lo, row.hi))

    def _set_emulator_fault(self, row: ScpiCommand, arg: str) -> None:
        """``:EMUL:FAUL kind,count[,param[,after]]``: arm a fault on this connection."""
        parts = [p.strip() for p in arg.split(",")]
        kind = parts[0].upper() if parts and parts[0] else ""
        if kind not in FAULT_KINDS:
            raise _ScpiError(-224, f"Illegal parameter value; fault kind {kind!r} not in {FAULT_KINDS}")
        count = int(self._number(parts[1], 1, 1e6)) if len(parts) > 1 else 1
        param = self._number(parts[2], -1e6, 1e6) if len(parts) > 2 else 0.0
        after = int(self._number(parts[3], 0, 1e9)) if len(parts) > 3 else 0
        try:
            self.arm(Fault(kind, count, param, after), self.conn_faults)
        except SettingError as exc:
            raise _ScpiError(-222, f"Data out of range; {exc}") from None

    def _set_emulator_fault_clear(self, row: ScpiCommand, arg: str) -> None:
        """``:EMUL:FAUL:CLE``: clear this connection's faults."""
        self.conn_faults.clear()

    def arm(self, fault: Fault, faults: list[Fault] | None = None) -> None:
        """Arm ``fault`` on ``faults`` (default: the server-wide list). Raises
        :class:`SettingError` for an unknown kind or a ``DEL`` outside (0, 60] s."""
        if fault.kind not in FAULT_KINDS:
            raise SettingError(f"fault kind must be one of {FAULT_KINDS}, got {fault.kind!r}")
        if fault.kind == "DEL" and not (0 < fault.param <= _MAX_FAULT_DELAY_S):
            raise SettingError(f"DEL fault needs a delay in (0, {_MAX_FAULT_DELAY_S}] s, got {fault.param!r}")
        if fault.count < 1 or fault.after < 0:
            raise SettingError(f"fault count must be >= 1 and after >= 0, got {fault.count!r}, {fault.after!r}")
        (self.faults if faults is None else faults).append(fault)

    @staticmethod
    def _take(faults: list[Fault]) -> Fault | None:
        if not faults:
            return None
        f = faults[0]
        if f.after > 0:
            f.after -= 1
            return None
        f.count -= 1
        if f.count <= 0:
            faults.pop(0)
        return f

    def next_fault(self) -> Fault | None:
        """The fault that applies to the reply being sent now (consumes one use): the
        connection's own first, then the server-wide ones."""
        if self.conn_faults is not self.faults:
            f = self._take(self.conn_faults)
            if f is not None:
                return f
        return self._take(self.faults)

    def reject_bytes(self, line: bytes) -> None:
        """A program message with non-ASCII bytes is not executed: SCPI error -101
        (invalid character) naming the first such byte goes to the queue."""
        i = next(k for k, b in enumerate(line) if b >= 0x80)
        with self.lock:
            self.messages += 1
            self.push_error(-101, f"Invalid character; byte 0x{line[i]:02X} at column {i}, message not executed")

    def reject_overrun(self, n_bytes: int) -> None:
        """A program message longer than :data:`MAX_MESSAGE_BYTES` is not executed: SCPI
        error -363 (input buffer overrun) goes to the queue."""
        with self.lock:
            self.messages += 1
            self.push_error(-363, f"Input buffer overrun; message of {n_bytes} bytes exceeds "
                                  f"{MAX_MESSAGE_BYTES} bytes, not executed")

    def handle_message(self, message: str, conn_faults: list[Fault] | None = None) -> tuple[str | None, Fault | None]:
        """Execute one program message; return (reply, fault to apply to the reply).
        ``conn_faults``: the faults of the connection that sent it (``:EMUL:FAUL`` arms
        there, so one client's faults never touch another's replies)."""
        with self.lock:
            self.conn_faults = self.faults if conn_faults is None else conn_faults
            try:
                return self._handle(message)
            finally:
                self.conn_faults = self.faults

    def _handle(self, message: str) -> tuple[str | None, Fault | None]:
        self.messages += 1
        commands = message.split(";")
        fault = self.next_fault() if any(c.strip().endswith("?") for c in commands) else None
        if fault is not None and fault.kind == "ERR":
            # The error lands in the queue before the message runs, so a :SYST:ERR? in
            # the same message reports it.
            self.errors.appendleft((int(fault.param) if fault.param else -310, "System error; injected fault"))
            fault = None
        replies = []
        for cmd in commands:
            try:
                r = self.execute(cmd)
            except _ScpiError as e:
                self.push_error(e.code, e.message)
                r = f"{_NAN:.2E}" if cmd.strip().endswith("?") else None
            except Exception as e:  # noqa: BLE001 - a defect here must not kill the connection
                self.push_error(-310, f"System error; {type(e).__name__}: {e}")
                r = f"{_NAN:.2E}" if cmd.strip().endswith("?") else None
            if r is not None:
                replies.append(r)
        if not replies:
            return None, None
        return ";".join(replies), fault


def read_message(rfile: Any) -> tuple[bytes | None, int]:
    """Read one ``\n``-terminated program message of at most :data:`MAX_MESSAGE_BYTES`.

    Returns ``(line, 0)``; ``(None, n)`` for a longer message, read (and dropped) up to
    its terminator in bounded pieces so none of it is executed, ``n`` its length in bytes;
    ``(b"", 0)`` at end of stream. A message is never cut in two."""
    line = rfile.readline(MAX_MESSAGE_BYTES + 1)
    if len(line) <= MAX_MESSAGE_BYTES:
        return line, 0
    n = len(line)
    while line and not line.endswith(b"\n"):
        line = rfile.readline(MAX_MESSAGE_BYTES)
        n += len(line)
    return None, n


class _Handler(socketserver.StreamRequestHandler):
    server: "_TCPServer"

    def setup(self) -> None:
        super().setup()
        self.request.settimeout(self.server.idle_timeout_s)
        self.faults: list[Fault] = []
        self.server.track(self.request, add=True)
        if self.server.reset_on_connect:
            with self.server.instrument.lock:
                self.server.instrument.reset()

    def finish(self) -> None:
        self.server.track(self.request, add=False)
        try:
            super().finish()
        except OSError:
            pass

    def handle(self) -> None:
        inst = self.server.instrument
        while not self.server.stopping.is_set():
            try:
                line, overrun = read_message(self.rfile)
            except (OSError, ValueError):
                return
            if line is None:
                inst.reject_overrun(overrun)
                continue
            if not line:
                return
            if not line.isascii():
                inst.reject_bytes(line)
                continue
            message = line.decode("ascii").strip("\r\n")
            reply, fault = inst.handle_message(message, self.faults)
            if reply is None:
                continue
            out = reply.encode("ascii", "backslashreplace") + b"\n"
            if fault is not None:
                if fault.kind == "DROP":
                    continue
                if fault.kind == "DISC":
                    return
                if fault.kind == "GARB":
                    out = _GARBAGE + b"\n"
                if fault.kind == "DEL":
                    if self.server.stopping.wait(min(fault.param, _MAX_FAULT_DELAY_S)):
                        return
            try:
                self.wfile.write(out)
                self.wfile.flush()
            except OSError:
                return


class _TCPServer(socketserver.ThreadingTCPServer):
    daemon_threads = True
    allow_reuse_address = True
    request_queue_size = LISTEN_BACKLOG

    def __init__(self, addr: tuple[str, int], instrument: Any, idle_timeout_s: float,
                 reset_on_connect: bool = False, handler: type = None, max_connections: int = MAX_CONNECTIONS):
        self.instrument = instrument
        self.idle_timeout_s = idle_timeout_s
        self.reset_on_connect = reset_on_connect
        self.max_connections = int(max_connections)
        self.refused = 0
        self.stopping = threading.Event()
        self._conns: set[socket.socket] = set()
        self._conns_lock = threading.Lock()
        self._active = 0
        super().__init__(addr, handler or _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        """Serve in a thread, at most ``max_connections`` at once: one more is closed at
        once (no thread), so idle clients cannot exhaust the process."""
        with self._conns_lock:
            full = self._active >= self.max_connections
            if not full:
                self._active += 1
        if full:
            self.refused += 1
            self.shutdown_request(request)
            return
        super().process_request(request, client_address)

    def process_request_thread(self, request: Any, client_address: Any) -> None:
        try:
            super().process_request_thread(request, client_address)
        finally:
            with self._conns_lock:
                self._active -= 1

    def track(self, sock: socket.socket, add: bool) -> None:
        with self._conns_lock:
            (self._conns.add if add else self._conns.discard)(sock)

    def close_connections(self) -> None:
        with self._conns_lock:
            conns = list(self._conns)
        for s in conns:
            try:
                s.shutdown(socket.SHUT_RDWR)
            except OSError:
                pass


class LoopbackServer:
    """What the SCPI and TSP emulator servers share: serving one emulated instrument
    (``self.instrument``, whose ``bench`` holds the cells) on a loopback socket in a
    background thread, with an optional lifetime. A subclass sets :meth:`_init_serving`'s
    settings in its ``__init__`` and makes its socket server in :meth:`_new_server`."""

    _thread_prefix = "emulator"

    def _init_serving(self, host: str, port: int, idle_timeout_s: float, max_lifetime_s: float | None,
                      reset_on_connect: bool, max_connections: int) -> None:
        self.host, self._port = host, int(port)
        self.idle_timeout_s = float(idle_timeout_s)
        self.max_lifetime_s = max_lifetime_s
        self.reset_on_connect = bool(reset_on_connect)
        self.max_connections = int(max_connections)
        self._server: Any = None
        self._thread: threading.Thread | None = None
        self._timer: threading.Timer | None = None
        self._refused = 0

    def _new_server(self) -> Any:
        """The bound ``socketserver`` server for this instrument (subclasses)."""
        raise NotImplementedError

    @property
    def port(self) -> int:
        """The bound TCP port (after :meth:`start`)."""
        return self._server.server_address[1] if self._server else self._port

    @property
    def bench(self) -> EmulatedBench:
        """The emulated bench behind the server (for tests and inspection)."""
        return self.instrument.bench

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()

    @property
    def refused_connections(self) -> int:
        """Connections refused because :attr:`max_connections` were open."""
        return self._server.refused if self._server else self._refused

    def start(self) -> Any:
        """Bind and serve in a background thread."""
        if self._server is not None:
            raise SettingError("server already started")
        self._server = self._new_server()
        self._thread = threading.Thread(target=self._server.serve_forever, kwargs={"poll_interval": 0.05},
                                        name=f"{self._thread_prefix}-{self.port}", daemon=True)
        self._thread.start()
        if self.max_lifetime_s is not None:
            self._timer = threading.Timer(float(self.max_lifetime_s), self.stop)
            self._timer.daemon = True
            self._timer.start()
        return self

    def stop(self) -> None:
        """Stop serving, close every connection and the socket (idempotent)."""
        srv, self._server = self._server, None
        if self._timer is not None and self._timer is not threading.current_thread():
            self._timer.cancel()
        if srv is None:
            return
        srv.stopping.set()
        srv.shutdown()
        srv.close_connections()
        srv.server_close()
        if self._thread is not None and self._thread is not threading.current_thread():
            self._thread.join(timeout=5.0)
        self._port = srv.server_address[1]
        self._refused = srv.refused

    def wait(self, timeout_s: float | None = None) -> None:
        """Block until the server stops (``max_lifetime_s``, :meth:`stop`) or ``timeout_s``."""
        t = self._thread
        if t is not None:
            t.join(timeout_s)

    def __enter__(self) -> Any:
        return self.start()

    def __exit__(self, *exc: Any) -> None:
        self.stop()


class ScpiEmulatorServer(LoopbackServer):
    """A SCPI emulator of the reference bench on ``host:port`` (loopback only).

    Args:
        device: device card (name, path or :class:`DeviceModel`) whose cells are emulated.
        rows, cols: switch-matrix size (cells = rows × cols).
        seed: randomness of the emulated cells.
        scheme: the pulse physics (transfer curve, read/RESET voltages); default the
            :class:`VoltageScheme` defaults over the card's range. Give a different one to
            emulate a bench whose real transfer differs from the nominal one.
        host: a loopback address (``127.0.0.1`` or ``::1``); anything else is refused.
        port: TCP port, 0 for a free ephemeral port (see :attr:`port` after start).
        idle_timeout_s: a connection silent this long is closed (s).
        max_lifetime_s: stop by itself after this long (s); None runs until :meth:`stop`.
        reset_fraction: RESET acts for ``V <= -reset_fraction·|v_reset_V|``.
        reset_on_connect: give every new connection a freshly reset instrument (as after
            ``*RST``: source 0 V, output off, crosspoints open, error queue empty; the
            cells keep what they were programmed to). Off by default: like a real
            instrument, the source level, output state, route and error queue are one
            state shared by all connections and kept from one connection to the next.

    Use as a context manager (``with ScpiEmulatorServer("pcm-nandakumar2019") as srv:``)
    or :meth:`start`/:meth:`stop`; :attr:`resource` is the VISA resource string.
    """

    language = "SCPI"
    model_name = "Keithley 2450"

    def __init__(self, device: DeviceModel | str, rows: int = 32, cols: int = 32, seed: SeedLike = None, *,
                 scheme: VoltageScheme | None = None, host: str = "127.0.0.1", port: int = 0,
                 idle_timeout_s: float = 120.0, max_lifetime_s: float | None = None,
                 reset_fraction: float = 0.5, n_threads: int = 1, reset_on_connect: bool = False,
                 limits: SafetyLimits | None = None, max_connections: int = MAX_CONNECTIONS):
        dev = load_device(device)
        host = check_server_address(host, port)
        rows, cols = check_geometry(rows, cols)
        max_lifetime_s = check_lifetime(max_lifetime_s)
        scheme = scheme or VoltageScheme().for_range(dev.g_min_S, dev.g_max_S)
        self.instrument = _Instrument(dev, rows, cols, scheme, seed, reset_fraction, n_threads, limits)
        self._init_serving(host, port, idle_timeout_s, max_lifetime_s, reset_on_connect, max_connections)

    _thread_prefix = "scpi-emulator"

    def _new_server(self) -> "_TCPServer":
        _TCPServer.address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return _TCPServer((self.host, self._port), self.instrument, self.idle_timeout_s, self.reset_on_connect,
                          _Handler, self.max_connections)

    @property
    def resource(self) -> str:
        """The VISA resource string, e.g. ``TCPIP0::127.0.0.1::54321::SOCKET``."""
        return f"TCPIP0::{self.host}::{self.port}::SOCKET"

    def inject(self, kind: str, count: int = 1, param: float = 0.0, after: int = 0) -> None:
        """Arm a fault (see the module docstring) for the next ``count`` replies after
        ``after`` replies: ``DEL`` (``param`` s late), ``DROP``, ``GARB``, ``ERR`` (code
        ``param``, default -310), ``DISC``."""
        with self.instrument.lock:
            self.instrument.arm(Fault(kind.upper(), int(count), float(param), int(after)))

    def clear_faults(self) -> None:
        with self.instrument.lock:
            self.instrument.faults.clear()

    def stats(self) -> dict[str, Any]:
        """Counters: messages, pulses and reads served."""
        i = self.instrument
        return {"messages": i.messages, "pulses": i.pulses, "reads": i.reads, "clock_s": i.clock_s(),
                "refused_connections": self.refused_connections}

    def __repr__(self) -> str:
        return (f"ScpiEmulatorServer(device={self.instrument.device.name!r}, resource={self.resource!r}, "
                f"cells={self.instrument.rows}x{self.instrument.cols}, running={self.running})")
