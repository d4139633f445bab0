"""A TSP emulator of a Keithley 2600B source-measure unit (2636B and kin) with a crosspoint
switch, on a loopback TCP socket, backed by an :class:`~analogmem.emulator.bench.EmulatedBench`.

Connect as the ``keithley2600`` driver does, ``TCPIP::127.0.0.1::<port>::SOCKET`` with
pyvisa-py (line terminator ``\\n``). Each line is a TSP chunk, run by the small Lua-subset
interpreter of :mod:`~analogmem.instrument.tsp_lua`; ``print`` output is the reply
(tab-separated values, one line per ``print``). ``loadscript NAME`` … ``endscript`` (or
``loadandrunscript``) stores a multi-line script as the global ``NAME`` (``NAME()`` or
``NAME.run()`` runs it). Common commands ``*IDN?``, ``*RST``, ``*CLS``, ``*OPC?`` answer as
on the instrument.

What the emulated instrument offers (the subset the ``keithley2600`` driver and analogmem's
:class:`~analogmem.instrument.TspBench` use):

* ``smua`` (and ``smub`` on two-channel models): ``source.levelv``, ``source.leveli``,
  ``source.limiti``, ``source.limitv``, ``source.func`` (``smua.OUTPUT_DCVOLTS``),
  ``source.output`` (``smua.OUTPUT_ON``/``OUTPUT_OFF``), ranges and delays (stored);
  ``measure.i([buffer])``, ``measure.v()``, ``measure.iv()``, ``measure.r()``, ``measure.nplc``;
  ``nvbuffer1``/``nvbuffer2`` reading buffers (``n``, ``clear()``, ``readings[i]``,
  ``buffer[i]``), ``makebuffer(n)``, ``reset()``;
* ``PulseVMeasureI(smu, bias, level, ton, toff, points)`` (the factory KIPulse function):
  ``points`` pulses to ``level`` V for ``ton`` s from ``bias``, the current at the end of each
  appended to ``smu.nvbuffer1``;
* ``channel.close("1!row!col")``, ``channel.open("allslots")``, ``channel.getclose("allslots")``:
  the crosspoint switch (one crosspoint at a time, never switched with the output on);
* ``errorqueue.next()`` (``code, message, severity, node``; ``0, "Queue Is Empty", 0, 0``),
  ``errorqueue.count``, ``errorqueue.clear()``; ``delay(s)``; ``waitcomplete()``; ``reset()``;
  ``printbuffer(i, j, buffer)``; ``format.asciiprecision``; ``localnode.model`` …;
  ``timer.reset()``/``timer.measure.t()``;
* emulator only: ``analogmem.clock()``, ``analogmem.setclock(t)`` (absolute, never back),
  ``analogmem.rows``, ``analogmem.cols``, ``analogmem.card``.

Physics (:class:`~analogmem.instrument.pulsed_cells.PulsedCells`, shared with the 2450
emulator): with a crosspoint closed and the output on in voltage mode, a level at or above
the SET threshold programs the cell, one at or below the RESET threshold resets it; a
measurement returns ``I = G·V`` clipped at ``limiti``. ``delay``, pulse widths and
``analogmem.setclock`` advance the emulated clock without wall time.

Errors: a syntax error (nothing of the line runs) is queued as -285, a runtime error (what
ran before it stays done) as -286, a setting out of range as -222, an over-long line
(> 64 KiB) as -363 without running any of it; the instrument never hangs (each chunk is
bounded in steps and time) and the connection stays up. ``limits``
(``bench serve --enforce-limits``) refuses source levels, compliances, pulse widths and
crosspoints past a bench file's :class:`SafetyLimits`, as a lab interlock would.
"""

from __future__ import annotations

import collections
import math
import socket
from typing import Any, Callable

from .._seeding import SeedLike
from .._version import __version__
from ..emulator.bench import EmulatedBench
from ..emulator.cells import DeviceModel, load_device
from ..errors import AnalogMemError, SettingError
from .limits import SafetyLimits, VoltageScheme
from .pulsed_cells import PulsedCells
from .scpi_server import (
    MAX_CONNECTIONS,
    LoopbackServer,
    _TCPServer,
    check_geometry,
    check_lifetime,
    check_server_address,
    read_message,
)
from .tsp_lua import (
    Interpreter,
    LuaRuntimeError,
    LuaSyntaxError,
    LuaTable,
    PyFunction,
    install_stdlib,
    lua_tostring,
    tonumber,
)

__all__ = ["TspEmulatorServer", "TSP_EMULATOR_MANUFACTURER", "TSP_CHANNELS"]

#: ``*IDN?``/``localnode.manufacturer`` of the emulator (a real one says "Keithley Instruments").
TSP_EMULATOR_MANUFACTURER = "analogmem"
#: SMU channels per 2600B model.
TSP_CHANNELS = {"2601B": 1, "2602B": 2, "2604B": 2, "2611B": 1, "2612B": 2, "2614B": 2, "2634B": 2,
                "2635B": 1, "2636B": 2}
_MAX_ERRORS = 32
_MAX_SCRIPT_BYTES = 1 << 22
_MAX_OUTPUT_BYTES = 1 << 24
_V_MAX = 202.0  # the 2636B's 200 V range, with its 1 % over-range
_I_MAX = 1.515  # the 1.5 A range, with over-range
OUTPUT_OFF, OUTPUT_ON = 0.0, 1.0
OUTPUT_DCAMPS, OUTPUT_DCVOLTS = 0.0, 1.0


class TspSettingError(LuaRuntimeError):
    """A setting out of its range (queued as -222)."""


class HostTable(LuaTable):
    """An instrument object: ``props`` are attributes with a getter and (optionally) a
    setter; other fields (functions, constants, sub-objects) live in ``hash`` and are
    read-only; an unknown attribute cannot be set."""

    __slots__ = ("name", "props", "luatype")

    def __init__(self, name: str, luatype: str | None = None):
        super().__init__()
        self.name, self.luatype = name, luatype
        self.props: dict[str, tuple[Callable[[], Any], Callable[[Any], None] | None]] = {}

    def get(self, key: Any) -> Any:
        p = self.props.get(key) if isinstance(key, str) else None
        if p is not None:
            return p[0]()
        return super().get(key)

    def set(self, key: Any, value: Any) -> None:
        p = self.props.get(key) if isinstance(key, str) else None
        if p is None:
            what = "read-only field" if super().get(key) is not None else "unknown attribute"
            raise LuaRuntimeError(f"cannot set {what} '{self.name}.{lua_tostring(key)}'")
        if p[1] is None:
            raise LuaRuntimeError(f"attribute '{self.name}.{key}' is read-only")
        p[1](value)

    def keys(self) -> list[Any]:
        return list(self.props) + list(self.hash)

    def prop(self, name: str, getter: Callable[[], Any], setter: Callable[[Any], None] | None = None) -> None:
        self.props[name] = (getter, setter)

    def func(self, name: str, f: Callable[..., Any]) -> None:
        self.hash[name] = PyFunction(f"{self.name}.{name}", f)


class _Buffer(HostTable):
    """A reading buffer: readings (A or V), their source values (V) and time stamps (s)."""

    def __init__(self, name: str, capacity: int = 100_000):
        super().__init__(name, "reading_buffer")
        self.capacity = int(capacity)
        self.values: list[float] = []
        self.sources: list[float] = []
        self.stamps: list[float] = []
        self.prop("n", lambda: float(len(self.values)))
        self.prop("capacity", lambda: float(self.capacity))
        for flag in ("appendmode", "collectsourcevalues", "collecttimestamps", "fillmode", "timestampresolution"):
            self._flag(flag)
        self.func("clear", self.clear)
        self.hash["readings"] = _Series(f"{name}.readings", self.values)
        self.hash["sourcevalues"] = _Series(f"{name}.sourcevalues", self.sources)
        self.hash["timestamps"] = _Series(f"{name}.timestamps", self.stamps)
        self.metatable = LuaTable({"luatype": "reading_buffer"})

    def _flag(self, name: str) -> None:
        box = [1.0]

        def setter(v: Any) -> None:
            x = tonumber(v)
            if x is None:
                raise TspSettingError(f"{self.name}.{name} needs a number, got {lua_tostring(v)}")
            box[0] = x
        self.prop(name, lambda: box[0], setter)

    def clear(self) -> None:
        self.values.clear()
        self.sources.clear()
        self.stamps.clear()

    def append(self, value: float, source: float, stamp: float) -> None:
        if len(self.values) >= self.capacity:
            raise LuaRuntimeError(f"{self.name} is full ({self.capacity} readings)")
        self.values.append(float(value))
        self.sources.append(float(source))
        self.stamps.append(float(stamp))

    def get(self, key: Any) -> Any:
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            i = int(key)
            return self.values[i - 1] if 1 <= i <= len(self.values) else None
        return super().get(key)


class _Series(HostTable):
    def __init__(self, name: str, values: list[float]):
        super().__init__(name, "buffer_series")
        self.values = values
        self.metatable = LuaTable({"luatype": "buffer_series"})

    def get(self, key: Any) -> Any:
        if isinstance(key, (int, float)) and not isinstance(key, bool):
            i = int(key)
            return self.values[i - 1] if 1 <= i <= len(self.values) else None
        return super().get(key)

    def length(self) -> int:
        return len(self.values)


class _Smu:
    """One SMU channel's state and its TSP object."""

    def __init__(self, inst: "_TspInstrument", name: str):
        self.inst, self.name = inst, name
        self.table = HostTable(name)
        self.reset_state()
        src, meas = HostTable(f"{name}.source"), HostTable(f"{name}.measure")
        self.table.hash["source"], self.table.hash["measure"] = src, meas
        self.buffers = [_Buffer(f"{name}.nvbuffer1"), _Buffer(f"{name}.nvbuffer2")]
        self.table.hash["nvbuffer1"], self.table.hash["nvbuffer2"] = self.buffers
        for const, v in (("OUTPUT_OFF", OUTPUT_OFF), ("OUTPUT_ON", OUTPUT_ON), ("OUTPUT_DCAMPS", OUTPUT_DCAMPS),
                         ("OUTPUT_DCVOLTS", OUTPUT_DCVOLTS), ("AUTORANGE_OFF", 0.0), ("AUTORANGE_ON", 1.0),
                         ("DISABLE", 0.0), ("ENABLE", 1.0), ("OUTPUT_NORMAL", 0.0), ("OUTPUT_HIGH_Z", 1.0),
                         ("OUTPUT_ZERO", 2.0), ("SENSE_LOCAL", 0.0), ("SENSE_REMOTE", 1.0)):
            self.table.hash[const] = v
        self.table.func("reset", self.reset)
        self.table.func("makebuffer", lambda n=100: _Buffer(f"{name}.buffer", int(min(max(tonumber(n) or 0, 1),
                                                                                           100_000))))
        src.prop("levelv", lambda: self.level_V, self.set_level)
        src.prop("leveli", lambda: self.level_A, lambda v: setattr(self, "level_A", self._range(v, -_I_MAX, _I_MAX,
                                                                                               "source.leveli")))
        src.prop("limiti", lambda: self.limit_A, self.set_limit)
        src.prop("limitv", lambda: self.limit_V, lambda v: setattr(self, "limit_V", self._range(v, 0.02, _V_MAX,
                                                                                               "source.limitv")))
        src.prop("func", lambda: self.func, self.set_func)
        src.prop("output", lambda: self.output, self.set_output)
        for attr in ("rangev", "rangei", "autorangev", "autorangei", "delay", "offmode", "settling", "sink",
                     "highc", "lowrangev", "lowrangei"):
            self._stored(src, attr)
        for attr in ("nplc", "rangei", "rangev", "autorangei", "autorangev", "autozero", "delay", "count",
                     "interval", "filter", "lowrangei", "lowrangev"):
            self._stored(meas, attr)
        meas.func("i", lambda buf=None: self.measure("i", buf))
        meas.func("v", lambda buf=None: self.measure("v", buf))
        meas.func("r", lambda buf=None: self.measure("r", buf))
        meas.func("iv", lambda ibuf=None, vbuf=None: (self.measure("i", ibuf), self.measure("v", vbuf)))

    def _stored(self, table: HostTable, attr: str) -> None:
        box = [0.0]

        def setter(v: Any) -> None:
            x = tonumber(v)
            if x is None or not math.isfinite(x):
                raise TspSettingError(f"{table.name}.{attr} needs a finite number, got {lua_tostring(v)}")
            box[0] = x
        table.prop(attr, lambda: box[0], setter)

    def reset_state(self) -> None:
        self.level_V, self.level_A = 0.0, 0.0
        self.limit_A, self.limit_V = 1e-4, 20.0
        self.func, self.output = OUTPUT_DCVOLTS, OUTPUT_OFF

    def reset(self) -> None:
        self.reset_state()
        for b in getattr(self, "buffers", ()):
            b.clear()

    @staticmethod
    def _range(v: Any, lo: float, hi: float, what: str) -> float:
        x = tonumber(v)
        if x is None or not math.isfinite(x) or x < lo or x > hi:
            raise TspSettingError(f"parameter out of range: {what} = {lua_tostring(v)} not in [{lo:g}, {hi:g}]")
        return x

    def _check(self, check: Callable[[float], None], x: float) -> float:
        try:
            check(x)
        except AnalogMemError as exc:
            raise TspSettingError(f"limit enforced by the bench file: {exc}") from None
        return x

    def set_level(self, v: Any) -> None:
        x = self._check(self.inst.cells.check_level, self._range(v, -_V_MAX, _V_MAX, "source.levelv"))
        self.level_V = x
        self.apply()

    def set_limit(self, v: Any) -> None:
        self.limit_A = self._check(self.inst.cells.check_compliance, self._range(v, 1e-9, _I_MAX, "source.limiti"))

    def set_func(self, v: Any) -> None:
        x = tonumber(v)
        if x not in (OUTPUT_DCAMPS, OUTPUT_DCVOLTS):
            raise TspSettingError(f"{self.name}.source.func must be OUTPUT_DCVOLTS or OUTPUT_DCAMPS")
        self.func = x

    def set_output(self, v: Any) -> None:
        x = tonumber(v) if not isinstance(v, bool) else float(v)
        if x not in (OUTPUT_OFF, OUTPUT_ON):
            raise TspSettingError(f"{self.name}.source.output must be OUTPUT_ON or OUTPUT_OFF")
        self.output = x
        self.apply()

    def connected_cell(self) -> int | None:
        """The cell this SMU reaches (channel A through the switch; others reach none)."""
        return self.inst.closed if self.name == "smua" else None

    def apply(self) -> None:
        """The routed cell sees the source: a pulse when the level crosses a threshold."""
        cell = self.connected_cell()
        if self.output == OUTPUT_ON and self.func == OUTPUT_DCVOLTS and cell is not None:
            if self.inst.cells.pulse(cell, self.level_V):
                self.inst.max_pulse_V = max(self.inst.max_pulse_V, abs(self.level_V))

    def measure(self, what: str, buf: Any = None) -> float:
        cell = self.connected_cell()
        on = self.output == OUTPUT_ON and self.func == OUTPUT_DCVOLTS
        v = self.level_V if on else 0.0
        i = self.inst.cells.current(cell, v, self.limit_A) if (cell is not None and on) else 0.0
        value = {"i": i, "v": v, "r": (v / i) if i else 9.91e37}[what]
        if buf is not None:
            if not isinstance(buf, _Buffer):
                raise LuaRuntimeError(f"bad argument to {self.name}.measure.{what} (reading buffer expected)")
            buf.append(value, v, self.inst.cells.clock_s())
        return value

    def pulse_v_measure_i(self, bias: Any, level: Any, ton: Any, toff: Any, points: Any) -> None:
        b = self._range(bias, -_V_MAX, _V_MAX, "PulseVMeasureI bias")
        lv = self._range(level, -_V_MAX, _V_MAX, "PulseVMeasureI level")
        t_on = self._range(ton, 0.0, 1e3, "PulseVMeasureI ton")
        t_off = self._range(toff, 0.0, 1e3, "PulseVMeasureI toff")
        n = int(self._range(points, 1, 1e5, "PulseVMeasureI points"))
        self._check(self.inst.cells.check_width, t_on)
        self.func, self.output = OUTPUT_DCVOLTS, OUTPUT_ON
        for _ in range(n):
            self.set_level(lv)
            self.inst.cells.advance(t_on)
            self.measure("i", self.buffers[0])
            self.set_level(b)
            self.inst.cells.advance(t_off)
        self.output = OUTPUT_OFF


class _TspInstrument:
    """The emulated 2600B + switch: one state shared by every connection (as on the
    instrument); chunks run one at a time under ``lock``."""

    def __init__(self, device: DeviceModel, rows: int, cols: int, scheme: VoltageScheme, seed: SeedLike,
                 reset_fraction: float, n_threads: int, limits: SafetyLimits | None, model: str):
        self.cells = PulsedCells(device, rows, cols, scheme, seed, reset_fraction, n_threads, limits)
        self.device, self.rows, self.cols, self.model = device, rows, cols, model
        self.bench: EmulatedBench = self.cells.bench
        self.lock = self.cells.lock
        self.messages = 0
        self.chunks = 0
        self.max_pulse_V = 0.0
        self.closed: int | None = None
        self.errors: collections.deque[tuple[float, str, float, float]] = collections.deque()
        self.out: list[str] = []
        self.out_bytes = 0
        self.interp = Interpreter(max_steps=50_000_000, max_depth=100, max_seconds=20.0)
        self._build()

    # ------------------------------------------------------------------ globals
    def _build(self) -> None:
        """The TSP globals: the Lua standard library, the instrument functions and
        the ``smua``/``smub``, ``errorqueue``, ``format``, ``localnode``, ``channel``,
        ``timer`` and ``analogmem`` tables."""
        it = self.interp
        install_stdlib(it)
        g = it.globals
        g.set("print", PyFunction("print", self._print))
        g.set("printbuffer", PyFunction("printbuffer", self._printbuffer))
        g.set("delay", PyFunction("delay", self._delay))
        g.set("waitcomplete", PyFunction("waitcomplete", lambda *a: None))
        g.set("opc", PyFunction("opc", lambda: None))
        g.set("reset", PyFunction("reset", self.reset))
        g.set("getmetatable", PyFunction("getmetatable", lambda t=None: getattr(t, "metatable", None)))
        self.smus = [_Smu(self, n) for n in ("smua", "smub")[:TSP_CHANNELS[self.model]]]
        for smu in self.smus:
            g.set(smu.name, smu.table)
        g.set("PulseVMeasureI", PyFunction("PulseVMeasureI", self._pulse_v_measure_i))
        for name, make in (("errorqueue", self._errorqueue_table), ("format", self._format_table),
                           ("localnode", self._localnode_table), ("channel", self._channel_table),
                           ("timer", self._timer_table), ("analogmem", self._emulator_table)):
            g.set(name, make())

    def _errorqueue_table(self) -> HostTable:
        """``errorqueue``: ``count``, ``next()``, ``clear()``."""
        eq = HostTable("errorqueue")
        eq.prop("count", lambda: float(len(self.errors)))
        eq.func("next", self._next_error)
        eq.func("clear", self.errors.clear)
        return eq

    def _format_table(self) -> HostTable:
        """``format``: ``asciiprecision`` (1–16 digits)."""
        fmt = HostTable("format")
        self.ascii_precision = 6.0

        def set_precision(v: Any) -> None:
            x = tonumber(v)
            if x is None or not 1 <= x <= 16:
                raise TspSettingError("format.asciiprecision must be in [1, 16]")
            self.ascii_precision = float(int(x))
        fmt.prop("asciiprecision", lambda: self.ascii_precision, set_precision)
        return fmt

    def _localnode_table(self) -> HostTable:
        """``localnode``: identity (model, serial, revision) and the settings scripts set."""
        node = HostTable("localnode")
        for k, v in (("model", self.model), ("serialno", f"{self.device.name}"), ("revision", __version__),
                     ("description", f"analogmem TSP emulator of a Keithley {self.model}"),
                     ("manufacturer", TSP_EMULATOR_MANUFACTURER)):
            node.hash[k] = v
        for k in ("prompts", "prompts4882", "showerrors", "linefreq"):
            box = [0.0 if k != "linefreq" else 50.0]
            node.prop(k, (lambda b: lambda: b[0])(box), (lambda b: lambda v: b.__setitem__(0, tonumber(v) or 0.0))(box))
        return node

    def _channel_table(self) -> HostTable:
        """``channel``: ``close``, ``open``, ``getclose``, ``reset`` of the crosspoint matrix."""
        ch = HostTable("channel")
        ch.func("close", self._close)
        ch.func("open", self._open)
        ch.func("getclose", self._getclose)
        ch.func("reset", lambda *a: self._open("allslots"))
        return ch

    def _timer_table(self) -> HostTable:
        """``timer``: ``reset()`` and ``measure.t()`` on the emulated clock (s)."""
        timer = HostTable("timer")
        meas = HostTable("timer.measure")
        timer.hash["measure"] = meas
        self._t_timer = 0.0
        timer.func("reset", lambda: setattr(self, "_t_timer", self.cells.clock_s()))
        meas.func("t", lambda: self.cells.clock_s() - self._t_timer)
        return timer

    def _emulator_table(self) -> HostTable:
        """``analogmem``: the emulator's own clock, ``setclock``, geometry and card name."""
        emu = HostTable("analogmem")
        emu.func("clock", self.cells.clock_s)
        emu.func("setclock", self._setclock)
        emu.hash["rows"], emu.hash["cols"] = float(self.rows), float(self.cols)
        emu.hash["card"] = self.device.name
        return emu

    # ------------------------------------------------------------------ functions
    def _print(self, *args: Any) -> None:
        parts = []
        for a in args:
            if isinstance(a, (int, float)) and not isinstance(a, bool):
                x = float(a)
                parts.append(f"{x:.{int(self.ascii_precision) - 1}e}" if math.isfinite(x) else lua_tostring(x))
            else:
                parts.append(lua_tostring(a))
        line = "\t".join(parts)
        self.out_bytes += len(line) + 1
        if self.out_bytes > _MAX_OUTPUT_BYTES:
            raise LuaRuntimeError(f"output of one command exceeds {_MAX_OUTPUT_BYTES} bytes")
        self.out.append(line)

    def _printbuffer(self, i: Any, j: Any, *series: Any) -> None:
        lo, hi = int(tonumber(i) or 1), int(tonumber(j) or 0)
        vals = []
        for k in range(lo, hi + 1):
            for s in series:
                v = s.get(float(k)) if isinstance(s, LuaTable) else None
                if v is None:
                    raise LuaRuntimeError(f"printbuffer: no reading {k}")
                vals.append(f"{v:.{int(self.ascii_precision) - 1}e}")
        self._print(", ".join(vals))

    def _delay(self, s: Any) -> None:
        x = tonumber(s)
        if x is None or not math.isfinite(x) or x < 0:
            raise TspSettingError(f"delay needs seconds >= 0, got {lua_tostring(s)}")
        self.cells.advance(x)

    def _setclock(self, t: Any) -> float:
        x = tonumber(t)
        if x is None or not math.isfinite(x) or x < 0:
            raise TspSettingError(f"analogmem.setclock needs a time >= 0 s, got {lua_tostring(t)}")
        self.cells.advance_to(x)
        return self.cells.clock_s()

    def _pulse_v_measure_i(self, smu: Any = None, *args: Any) -> bool:
        for s in self.smus:
            if smu is s.table:
                if len(args) != 5:
                    raise LuaRuntimeError("PulseVMeasureI(smu, bias, level, ton, toff, points) needs 6 arguments")
                s.pulse_v_measure_i(*args)
                return True
        raise LuaRuntimeError("bad argument #1 to 'PulseVMeasureI' (an SMU expected)")

    def _channel(self, name: Any) -> int:
        text = lua_tostring(name).strip()
        parts = text.split("!")
        try:
            card, row, col = (int(p) for p in parts)
        except ValueError:
            raise TspSettingError(f"channel {text!r} is not 'card!row!column'") from None
        if card != 1 or not (1 <= row <= self.rows) or not (1 <= col <= self.cols):
            raise TspSettingError(f"channel {text!r} not in 1!1..1!{self.rows}!{self.cols}")
        cell = (row - 1) * self.cols + (col - 1)
        try:
            self.cells.check_cell(cell)
        except AnalogMemError as exc:
            raise TspSettingError(f"limit enforced by the bench file: {exc}") from None
        return cell

    def _hot(self) -> bool:
        return any(s.output == OUTPUT_ON for s in self.smus)

    def _close(self, name: Any) -> None:
        cell = self._channel(name)
        if self._hot():
            raise LuaRuntimeError("settings conflict: output on while switching")
        if self.closed is not None and self.closed != cell:
            raise LuaRuntimeError("settings conflict: another crosspoint is closed")
        self.closed = cell

    def _open(self, name: Any = "allslots") -> None:
        if self._hot():
            raise LuaRuntimeError("settings conflict: output on while switching")
        text = lua_tostring(name).strip().lower()
        if text in ("allslots", "slot1"):
            self.closed = None
        elif self.closed is not None and self._channel(name) == self.closed:
            self.closed = None

    def _getclose(self, name: Any = "allslots") -> str | None:
        if self.closed is None:
            return None
        return f"1!{self.closed // self.cols + 1}!{self.closed % self.cols + 1}"

    def _next_error(self) -> tuple:
        if not self.errors:
            return 0.0, "Queue Is Empty", 0.0, 0.0
        return self.errors.popleft()

    # ------------------------------------------------------------------ state
    def reset(self) -> None:
        for s in self.smus:
            s.reset()
        self.closed = None
        self.errors.clear()

    def push_error(self, code: int, message: str, severity: float = 20.0) -> None:
        message = message.encode("ascii", "backslashreplace").decode("ascii").replace("\n", " ").replace("\t", " ")
        if len(self.errors) >= _MAX_ERRORS:
            self.errors[-1] = (-350.0, "Queue overflow", 20.0, 1.0)
        else:
            self.errors.append((float(code), message, severity, 1.0))

    def idn(self) -> str:
        return f"{TSP_EMULATOR_MANUFACTURER},TSP-EMULATOR-{self.model},{self.device.name},{__version__}"

    def run_chunk(self, src: str) -> list[str]:
        """Run one TSP chunk; return its ``print`` lines. Errors go to the queue."""
        with self.lock:
            self.messages += 1
            self.out, self.out_bytes = [], 0
            try:
                self.interp.compile(src)()
                self.chunks += 1
            except LuaSyntaxError as exc:
                self.push_error(-285, f"TSP Syntax error at line {exc.line}: {exc.message}")
            except TspSettingError as exc:
                self.push_error(-222, f"Parameter data out of range at line {exc.line or self.interp.line}: "
                                      f"{exc.message}")
            except LuaRuntimeError as exc:
                self.push_error(-286, f"TSP Runtime error at line {exc.line or self.interp.line}: {exc.message}")
            except Exception as exc:  # noqa: BLE001 - a defect here must not kill the connection
                self.push_error(-286, f"TSP Runtime error: {type(exc).__name__}: {exc}")
            return self.out

    def common(self, line: str) -> list[str] | None:
        """IEEE 488.2 common commands a 2600B accepts in TSP mode (None: not one)."""
        key = line.strip().upper()
        with self.lock:
            if key == "*IDN?":
                return [self.idn()]
            if key == "*RST":
                self.reset()
                return []
            if key == "*CLS":
                self.errors.clear()
                return []
            if key == "*OPC?":
                return ["1"]
            if key in ("*WAI", "*OPC"):
                return []
        return None


class _TspHandler:
    """One connection: lines in, ``print`` lines out; ``loadscript`` … ``endscript``
    accumulates a script."""

    def __init__(self, request: socket.socket, client_address: Any, server: _TCPServer):
        self.request, self.server = request, server
        self.script: list[str] | None = None
        self.script_name = ""
        self.script_run = False
        self.script_bytes = 0
        request.settimeout(server.idle_timeout_s)
        server.track(request, add=True)
        rfile = request.makefile("rb")
        try:
            self.handle(rfile)
        finally:
            server.track(request, add=False)
            try:
                rfile.close()
            except OSError:
                pass

    def send(self, lines: list[str]) -> bool:
        if not lines:
            return True
        data = "".join(f"{ln}\n" for ln in lines).encode("ascii", "backslashreplace")
        try:
            self.request.sendall(data)
        except OSError:
            return False
        return True

    def handle(self, rfile: Any) -> None:
        inst: _TspInstrument = self.server.instrument
        while not self.server.stopping.is_set():
            try:
                line, overrun = read_message(rfile)
            except (OSError, ValueError):
                return
            if line is None:
                with inst.lock:
                    inst.messages += 1
                    inst.push_error(-363, f"Input buffer overrun; line of {overrun} bytes exceeds 65536 bytes, "
                                          "not executed")
                continue
            if not line:
                return
            if not line.isascii():
                i = next(k for k, b in enumerate(line) if b >= 0x80)
                with inst.lock:
                    inst.push_error(-101, f"Invalid character; byte 0x{line[i]:02X} at column {i}, not executed")
                continue
            text = line.decode("ascii").rstrip("\r\n")
            if not self.send(self.line(inst, text)):
                return

    def line(self, inst: _TspInstrument, text: str) -> list[str]:
        stripped = text.strip()
        if self.script is not None:
            if stripped == "endscript":
                src, name, run = "\n".join(self.script), self.script_name, self.script_run
                self.script = None
                return self.store_script(inst, name, src, run)
            self.script_bytes += len(text) + 1
            if self.script_bytes > _MAX_SCRIPT_BYTES:
                self.script = None
                with inst.lock:
                    inst.push_error(-363, f"script {self.script_name!r} exceeds {_MAX_SCRIPT_BYTES} bytes; discarded")
                return []
            self.script.append(text)
            return []
        head, _, rest = stripped.partition(" ")
        if head in ("loadscript", "loadandrunscript"):
            name = rest.strip() or "anonymous"
            if not name.replace("_", "a").isalnum() or name[0].isdigit():
                with inst.lock:
                    inst.push_error(-285, f"TSP Syntax error: bad script name {name!r}")
                return []
            self.script, self.script_name, self.script_run, self.script_bytes = [], name, head == "loadandrunscript", 0
            return []
        if stripped.startswith("*"):
            r = inst.common(stripped)
            if r is not None:
                return r
        if not stripped:
            return []
        return inst.run_chunk(text)

    @staticmethod
    def store_script(inst: _TspInstrument, name: str, src: str, run: bool) -> list[str]:
        with inst.lock:
            try:
                chunk = inst.interp.compile(src)
            except LuaSyntaxError as exc:
                inst.push_error(-285, f"TSP Syntax error at line {exc.line} of script {name}: {exc.message}")
                return []
            script = HostTable(name, "script")
            script.hash["source"] = src
            script.hash["name"] = name

            def run_script(*_: Any) -> None:
                chunk()
            script.func("run", run_script)
            script.metatable = LuaTable({"__call": PyFunction(f"{name}.__call", run_script)})
            inst.interp.globals.set(name, script)
        return inst.run_chunk(f"{name}.run()") if run else []


class _TspTCPServer(_TCPServer):
    def finish_request(self, request: Any, client_address: Any) -> None:
        _TspHandler(request, client_address, self)


class TspEmulatorServer(LoopbackServer):
    """A TSP emulator of a Keithley 2600B (default 2636B) and a crosspoint switch on
    ``host:port`` (loopback only); see the module docstring for what it speaks.

    Args:
        device: device card (name, path or :class:`DeviceModel`) of the emulated cells.
        model: the 2600B-family model to answer as (``localnode.model``; 1 or 2 SMUs).
        rows, cols: switch-matrix size; seed: randomness of the cells.
        scheme: pulse physics (default :class:`VoltageScheme` over the card's range).
        host, port: loopback address; port 0 picks a free one.
        idle_timeout_s: a silent connection is closed after this long (s).
        max_lifetime_s: stop by itself after this long (s); None runs until :meth:`stop`.
        limits: enforce these :class:`SafetyLimits` on the instrument side (None: accept
            what a real 2600B accepts, ±200 V, 1.5 A).
        max_connections: clients served at once.
        reset_on_connect: accepted for symmetry with the SCPI server.
        chunk_seconds: wall time one TSP line (chunk) may run before it is stopped with a
            runtime error (s) — ``while true do end`` never hangs the instrument.
    """

    language = "TSP"

    def __init__(self, device: DeviceModel | str = "pcm-nandakumar2019", rows: int = 32, cols: int = 32,
                 seed: SeedLike = None, *, model: str = "2636B", scheme: VoltageScheme | None = None,
                 host: str = "127.0.0.1", port: int = 0, idle_timeout_s: float = 120.0,
                 max_lifetime_s: float | None = None, reset_fraction: float = 0.5, n_threads: int = 1,
                 limits: SafetyLimits | None = None, max_connections: int = MAX_CONNECTIONS,
                 reset_on_connect: bool = False, chunk_seconds: float = 20.0):
        dev = load_device(device)
        model = str(model).strip().upper()
        if model not in TSP_CHANNELS:
            raise SettingError(f"model must be a 2600B-family model {sorted(TSP_CHANNELS)}, got {model!r}")
        host = check_server_address(host, port)
        rows, cols = check_geometry(rows, cols)
        self.max_lifetime_s = check_lifetime(max_lifetime_s)
        scheme = scheme or VoltageScheme().for_range(dev.g_min_S, dev.g_max_S)
        self.instrument = _TspInstrument(dev, rows, cols, scheme, seed, reset_fraction, n_threads, limits, model)
        self.instrument.interp.max_seconds = float(chunk_seconds)
        self.model_name = f"Keithley {model}"
        self._init_serving(host, port, idle_timeout_s, self.max_lifetime_s, reset_on_connect, max_connections)

    _thread_prefix = "tsp-emulator"

    def _new_server(self) -> "_TspTCPServer":
        _TspTCPServer.address_family = socket.AF_INET6 if ":" in self.host else socket.AF_INET
        return _TspTCPServer((self.host, self._port), self.instrument, self.idle_timeout_s, self.reset_on_connect,
                             None, self.max_connections)

    @property
    def resource(self) -> str:
        """The VISA resource, ``TCPIP::127.0.0.1::<port>::SOCKET``."""
        return f"TCPIP::{self.host}::{self.port}::SOCKET"

    def run(self, src: str) -> list[str]:
        """Run a TSP chunk on the emulated instrument from Python (tests); its output."""
        return self.instrument.run_chunk(src)

    def stats(self) -> dict[str, Any]:
        """Counters: messages, chunks run, pulses, reads, largest |V| pulsed, clock."""
        i = self.instrument
        return {"messages": i.messages, "chunks": i.chunks, "pulses": i.cells.pulses, "reads": i.cells.reads,
                "max_pulse_V": i.max_pulse_V, "clock_s": i.cells.clock_s(), "errors_queued": len(i.errors),
                "refused_connections": self.refused_connections}

    def __repr__(self) -> str:
        i = self.instrument
        return (f"TspEmulatorServer(model={i.model!r}, device={i.device.name!r}, resource={self.resource!r}, "
                f"cells={i.rows}x{i.cols}, running={self.running})")
