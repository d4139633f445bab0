"""TspBench: the :class:`~analogmem.emulator.bench.Bench` protocol on a Keithley 2600B
(2636B and kin) through TSP, with the ``keithley2600`` driver (TSP over PyVISA) for I/O,
and write-verify **executed on the instrument**.

On connect the bench loads one TSP script (:mod:`~analogmem.instrument.tsp_script`) whose
constants are the bench's :class:`SafetyLimits`; ``program`` then sends one message per
batch of cells — ``analogmem_program({cells}, {targets}, {lo}, {hi}, {v0}, nmax, verify)``
wrapped in ``pcall`` — and reads back one line: pulses, success, final read, RESETs and
last amplitude per cell, and the instrument's error count. The pulse → read → compare loop
runs on the instrument (µs-scale pulses with ``PulseVMeasureI``); the host spends one round
trip per batch instead of two per pulse. ``read`` does the same with ``analogmem_read``.

Safety, twice: the whole request is checked against the limits on the host before anything
is sent (:func:`~analogmem.instrument.verify_policy.check_program_request`, the same check
as the 2450 bench), and the script clamps every level, width and pulse count to the limits
on the instrument side.

Errors: a batch whose reply is late raises :class:`InstrumentTimeoutError` (never retried:
pulses are not idempotent); garbage raises :class:`InstrumentReplyError`; entries in the
instrument's error queue are drained (``keithley2600``'s ``read_error_queue``) and raised as
:class:`InstrumentReportedError`.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._io import progress as progress_bar
from ..emulator.bench import ProgramReport, WriteVerify
from ..emulator.cells import DeviceModel
from ..errors import InstrumentError, SettingError
from .errors import (
    InstrumentConnectionError,
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
)
from .lab_bench import LabBench
from .limits import BenchConfig
from .tsp_script import SCRIPT_NAME, render_script
from .verify_policy import DEFAULT_MAX_PULSES, VerifyPolicy

__all__ = ["TspBench"]

#: Longest message the bench sends (bytes); a batch is split to stay under it.
MAX_BATCH_MESSAGE_BYTES = 60_000


def _lua_list(values: np.ndarray, fmt: str) -> str:
    return "{" + ",".join(fmt % v for v in values.tolist()) + "}"


class TspBench(LabBench):
    """The :class:`~analogmem.emulator.bench.Bench` protocol on a 2600B through TSP.

    Args:
        resource: VISA resource of the instrument (``"TCPIP::127.0.0.1::PORT::SOCKET"``
            for ``analogmem bench serve --model 2636B``, ``"TCPIP0::192.168.1.50::INSTR"``
            for a 2636B on the network).
        device: device card (name, path or model) giving the target range; None keeps
            ``config.scheme``'s range.
        config: :class:`BenchConfig` (matrix, limits, scheme; ``model`` names the 2600B).
        visa_library: PyVISA backend for the driver (default ``"@py"``, pyvisa-py).
        timeout_s: VISA timeout of a reply (s); a batch gets this plus its pulses' time.
        batch_cells: cells per on-instrument call (split further to keep a message under
            60 kB).
        clock: ``"host"``, ``"instrument"`` (the emulator's clock: ``wait`` costs no wall
            time) or ``"auto"`` (``"instrument"`` on the analogmem emulator).
        progress: a progress bar over batches.

    Raises :class:`SafetyLimitError` if the scheme breaks the limits (nothing opened),
    :class:`InstrumentConnectionError` if the resource cannot be opened.
    """

    def __init__(self, resource: str, *, device: DeviceModel | str | None = None, config: BenchConfig | None = None,
                 visa_library: str = "@py", timeout_s: float = 5.0, batch_cells: int = 256, clock: str = "auto",
                 progress: bool = False):
        if isinstance(batch_cells, bool) or not isinstance(batch_cells, (int, np.integer)) or batch_cells < 1:
            raise SettingError(f"batch_cells must be a positive integer, got {batch_cells!r}")
        self._open_bench(config or BenchConfig(model="2636B"), device, clock, timeout_s)
        self.timeout_s, self.batch_cells, self.progress = float(timeout_s), int(batch_cells), progress
        self.round_trips = 0

        import pyvisa
        # the driver's class itself: the package's ``Keithley2600`` factory shares one
        # instance per address, and a bench owns its connection
        from keithley2600.keithley_driver import Keithley2600

        self.resource = resource
        try:
            self.k = Keithley2600(resource, visa_library=visa_library, raise_keithley_errors=False,
                                  timeout=int(round(self.timeout_s * 1000)), open_timeout=int(round(self.timeout_s * 1000)))
        except (pyvisa.errors.Error, OSError, ValueError) as exc:
            raise InstrumentConnectionError(f"cannot open VISA resource {resource!r}: {exc}") from exc
        if not self.k.connected:
            raise InstrumentConnectionError(f"cannot open VISA resource {resource!r} (keithley2600 could not connect)")
        try:
            self._setup(clock)
        except BaseException:
            self.k.disconnect()
            raise

    # ------------------------------------------------------------------ I/O
    def _ask(self, message: str, timeout_s: float | None = None, what: str = "") -> str:
        import pyvisa

        conn = self.k.connection
        try:
            if timeout_s is not None:
                conn.timeout = int(round(timeout_s * 1000))
            self.round_trips += 1
            return conn.query(message)
        except pyvisa.errors.VisaIOError as exc:
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                raise InstrumentTimeoutError(f"{self.resource}: no reply to {what or message[:60]!r} within "
                                             f"{conn.timeout / 1000:g} s (not retried: it may have pulsed)") from exc
            raise InstrumentConnectionError(f"{self.resource}: I/O error on {what or message[:60]!r}: {exc}") from exc
        except UnicodeDecodeError as exc:
            raise InstrumentReplyError(f"{self.resource}: undecodable reply to {what!r}: {exc}") from exc
        except (OSError, EOFError) as exc:
            raise InstrumentConnectionError(f"{self.resource}: connection lost on {what!r}: {exc}") from exc
        finally:
            if timeout_s is not None:
                conn.timeout = int(round(self.timeout_s * 1000))

    def _raise_errors(self, what: str) -> None:
        errs = [(int(e[0]), str(e[1])) for e in self.k.read_error_queue()]
        listing = "; ".join(f"{c},\"{m}\"" for c, m in errs)
        raise InstrumentReportedError(f"instrument reported {len(errs)} error(s) after {what}: {listing}", errs, what)

    def _call(self, function: str, args: str, n_values: int, timeout_s: float, what: str) -> np.ndarray:
        """Run ``function(args)`` (returning a ``,``-joined string) on the instrument under
        ``pcall``; one reply line with the values and the error count."""
        msg = (f"local ok, r = pcall({function}, {args}) if not ok then r = 'error: ' .. tostring(r) end "
               f"print(r, errorqueue.count)")
        if len(msg) > 1 << 16:
            raise SettingError(f"{what}: message of {len(msg)} bytes exceeds the 64 KiB input buffer")
        reply = self._ask(msg, timeout_s, what)
        body, sep, count = reply.rstrip("\r\n").rpartition("\t")
        try:
            n_err = int(float(count))
        except ValueError:
            raise InstrumentReplyError(f"reply to {what} does not end with the error count: {reply[:80]!r}") from None
        if body.startswith("error: ") or n_err:
            if n_err == 0:
                raise InstrumentReportedError(f"{what} failed on the instrument: {body[7:]}", [], what)
            self._raise_errors(what)
        try:
            vals = np.array([float(x) for x in body.split(",")]) if body else np.empty(0)
        except ValueError:
            raise InstrumentReplyError(f"reply to {what} is not a list of numbers: {reply[:80]!r}") from None
        if vals.size != n_values or not np.isfinite(vals).all():
            raise InstrumentReplyError(f"reply to {what} has {vals.size} value(s), expected {n_values} finite ones")
        return vals

    def _setup(self, clock: str) -> None:
        k = self.k
        k.errorqueue.clear()
        self.identity = {"manufacturer": "", "model": str(k.localnode.model), "serial": str(k.localnode.serialno),
                         "firmware": str(k.localnode.revision)}
        self.is_emulator = self._ask("print(type(analogmem))", what="emulator check").strip() == "table"
        self.identity["manufacturer"] = "analogmem" if self.is_emulator else "Keithley Instruments"
        self.clock = ("instrument" if self.is_emulator else "host") if clock == "auto" else clock
        if self.clock == "instrument" and not self.is_emulator:
            raise InstrumentError(f"clock='instrument' needs the analogmem TSP emulator; a {self.identity['model']} "
                                  "has no emulated clock")
        smu = k.smua
        smu.source.output = smu.OUTPUT_OFF
        smu.source.func = smu.OUTPUT_DCVOLTS
        smu.source.levelv = 0
        smu.source.limiti = self.limits.compliance_A
        ilim = float(smu.source.limiti)
        if not math.isclose(ilim, self.limits.compliance_A, rel_tol=1e-5):
            raise InstrumentReplyError(f"compliance read back as {ilim:g} A after setting {self.limits.compliance_A:g} A")
        k.channel.open("allslots")
        budget = max(DEFAULT_MAX_PULSES, 1000)
        self.script = render_script(self.scheme, self.limits, self.config.cols, budget, 0.5 * self.scheme.v_set_threshold_V)
        conn = k.connection
        conn.write(f"loadscript {SCRIPT_NAME}")
        for line in self.script.splitlines():
            conn.write(line)
        conn.write("endscript")
        n = self._ask(f"{SCRIPT_NAME}.run() print(errorqueue.count)", what="loading the write-verify script")
        if int(float(n)) != 0:
            self._raise_errors("loading the write-verify script")
        if self.is_emulator:
            rows, cols = (int(float(x)) for x in self._ask("print(analogmem.rows, analogmem.cols)").split("\t"))
            if (rows, cols) != (self.config.rows, self.config.cols):
                raise InstrumentError(f"the bench config describes a {self.config.rows}x{self.config.cols} matrix but "
                                      f"the emulator at {self.resource} has {rows}x{cols} cells; set [matrix] "
                                      "rows/cols (or --rows/--cols) to match")
        if self.clock == "instrument":
            self._emulator_delta_s = float(self._ask("print(analogmem.clock())")) - self.time_s

    # ------------------------------------------------------------------ clock
    def _set_emulator_clock(self, target_s: float) -> None:
        self._ask(f"print(analogmem.setclock({target_s!r}))", what="wait")

    # ------------------------------------------------------------------ protocol
    def _batches(self, n: int, per_cell_bytes: int) -> list[tuple[int, int]]:
        size = max(1, min(self.batch_cells, MAX_BATCH_MESSAGE_BYTES // max(per_cell_bytes, 1)))
        return [(lo, min(lo + size, n)) for lo in range(0, n, size)]

    def _iter(self, batches: list[tuple[int, int]], what: str) -> Any:
        if self.progress and len(batches) > 1:
            return progress_bar(batches, desc=f"{what} ({self.identity['model']})", unit="batch", leave=False)
        return batches

    def program(self, targets: np.ndarray, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program conductance ``targets`` (S) into ``addresses`` (every cell when None),
        single-shot or with write-verify executed on the instrument.

        The whole request is checked before anything is sent (as on the 2450 bench).
        Returns a :class:`ProgramReport` (``pulses`` SET pulses per cell, ``success`` and
        ``stuck`` with verify); RESETs in :attr:`last_program_resets`, final verify reads
        (S) in :attr:`last_program_reads_S`.
        """
        addr, g_t, policy = self._program_request(targets, addresses, verify)
        return self._program(addr, g_t, policy, addresses is None)

    def _program(self, addr: np.ndarray, g_t: np.ndarray, policy: VerifyPolicy | None, every: bool) -> ProgramReport:
        s = self.scheme
        n = addr.shape[0]
        v0 = policy.first_voltage(g_t) if policy is not None else s.set_voltage(g_t)
        lo, hi = policy.window(g_t) if policy is not None else (g_t, g_t)
        nmax = policy.max_pulses if policy is not None else 1
        out = np.empty((n, 5))
        per_pulse_s = 2 * s.set_width_s + 2 * s.reset_width_s + 0.05
        for a, b in self._iter(self._batches(n, 100), "program"):
            args = (f"{_lua_list(addr[a:b], '%d')},{_lua_list(g_t[a:b], '%.17g')},"
                    f"{_lua_list(lo[a:b], '%.12g')},{_lua_list(hi[a:b], '%.12g')},{_lua_list(v0[a:b], '%.12g')},"
                    f"{nmax},{1 if policy is not None else 0}")
            vals = self._call("analogmem_program", args, 5 * (b - a), self.timeout_s + (b - a) * nmax * per_pulse_s,
                              f"program of cells {int(addr[a])}..{int(addr[b - 1])}")
            out[a:b] = vals.reshape(b - a, 5)
            self.cell_program_time_s[addr[a:b]] = self.time_s
        pulses = out[:, 0].astype(np.int64)
        resets = out[:, 3].astype(np.int64)
        reads = np.where(out[:, 2] >= 0, out[:, 2], np.nan)
        success = stuck = None
        if policy is not None:
            success = out[:, 1] > 0.5
            stuck = policy.stuck(success, out[:, 2], out[:, 4], resets, lo, hi)
        return self._program_done(addr, every, pulses, success, stuck, resets, reads)

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S) = read current (A) / ``scheme.v_read_V``, batched on
        the instrument; ``t_s`` seconds after the end of the last ``program`` (the bench
        waits until then), None now. Ages in :attr:`last_read_age_s`."""
        addr, v_read = self._read_request(t_s, addresses)
        out = np.empty(addr.shape[0])
        when = np.empty(addr.shape[0])
        for a, b in self._iter(self._batches(addr.shape[0], 8), "read"):
            vals = self._call("analogmem_read", f"{_lua_list(addr[a:b], '%d')},{v_read!r}", b - a,
                              self.timeout_s + 0.05 * (b - a), f"read of cells {int(addr[a])}..{int(addr[b - 1])}")
            if np.any(np.abs(vals) > self.limits.compliance_A * (1 + 1e-6)):
                raise InstrumentReplyError(f"a read current exceeds the compliance {self.limits.compliance_A:g} A")
            out[a:b] = vals / v_read
            when[a:b] = self.time_s
        self.last_read_age_s = when - self.cell_program_time_s[addr]
        return out

    def shutdown(self) -> None:
        """Output off at 0 V, crosspoints open, connection closed (idempotent)."""
        if self._closed:
            return
        self._closed = True
        try:
            self.k.connection.write("smua.source.output = smua.OUTPUT_OFF smua.source.levelv = 0 "
                                    "channel.open('allslots')")
        except Exception as exc:  # noqa: BLE001 - still disconnect
            self.k.disconnect()
            raise InstrumentConnectionError(f"shutdown did not complete: {exc}") from exc
        self.k.disconnect()

    close = shutdown

