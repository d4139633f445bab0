"""InstrumentBench: the :class:`~analogmem.emulator.bench.Bench` protocol on a real set-up through
PyVISA — a source-measure unit (reference: Keithley 2450, driven by pymeasure's driver)
that reaches one cell at a time through a crosspoint switch matrix.

How targets become pulses and currents become conductances is the bench's
:class:`~analogmem.instrument.limits.VoltageScheme`; every voltage, width, compliance and
address is checked against its :class:`~analogmem.instrument.limits.SafetyLimits` for the
*whole request* before the first byte goes out.

Communication rules (why a fault never hangs and never becomes a silently wrong value):

* every query has the VISA timeout ``timeout_s``; a late, dropped or garbled reply raises
  :class:`InstrumentTimeoutError` / :class:`InstrumentReplyError`, and the link is
  re-synchronised (the VISA session is closed and reopened — a late reply to the old
  session can never be read as the answer to a new query) before anything else is sent;
* operations that only observe (identification, reads, routing, clock) are retried up to
  ``retries`` times after a resync; pulses are never retried (a pulse whose reply was lost
  may have been applied), they raise;
* every message ends with ``:SYST:ERR?``: a non-zero entry drains the queue and raises
  :class:`InstrumentReportedError` with every ``(code, message)``; the value that came
  with it is discarded;
* a reading must parse, be finite and lie within the compliance; otherwise it is garbage.
"""

from __future__ import annotations

import logging
import math
from typing import Any, Callable

import numpy as np

from .._io import progress as progress_bar
from ..emulator.bench import ProgramReport, WriteVerify
from ..emulator.cells import DeviceModel
from ..errors import InstrumentError, SettingError
from .drivers import EMULATOR_MANUFACTURER, EMULATOR_MODEL, SourceMeter2450, SwitchMatrix, parse_idn
from .errors import (
    InstrumentConnectionError,
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
)
from .lab_bench import LabBench
from .limits import BenchConfig

__all__ = ["InstrumentBench", "open_adapter"]

log = logging.getLogger(__name__)

_MAX_DRAIN = 32
_VISALIBS: dict[str, Any] = {}


def open_adapter(resource: str, visa_library: str | None = None, timeout_s: float = 2.0) -> Any:
    """Open a pymeasure ``VISAAdapter`` on ``resource`` with ``\\n`` terminations and a
    ``timeout_s`` (s) VISA timeout. ``visa_library``: ``"@py"`` (pyvisa-py), ``"@ivi"``,
    ``"path.yaml@sim"`` (pyvisa-sim) or None for PyVISA's default. Raises
    :class:`InstrumentConnectionError` naming the resource if it cannot be opened."""
    import pyvisa
    from pymeasure.adapters import VISAAdapter

    try:
        # Resolve the backend once per process: PyVISA's default search (IVI first, then
        # pyvisa-py) costs ~0.2 s, which a resync after a fault should not pay again.
        key = visa_library or ""
        if key not in _VISALIBS:
            _VISALIBS[key] = pyvisa.ResourceManager(key).visalib
        return VISAAdapter(resource, visa_library=_VISALIBS[key], timeout=int(round(timeout_s * 1000)),
                           read_termination="\n", write_termination="\n", open_timeout=int(round(timeout_s * 1000)))
    except (pyvisa.errors.Error, OSError, ValueError) as exc:
        raise InstrumentConnectionError(f"cannot open VISA resource {resource!r}"
                                        f"{f' with library {visa_library!r}' if visa_library else ''}: {exc}") from exc


class _Link:
    """One instrument connection: query with timeout classification, resync and retries."""

    def __init__(self, name: str, instrument: Any, resource: Any, visa_library: str | None, timeout_s: float,
                 retries: int):
        self.name, self.instrument, self.resource = name, instrument, resource
        self.visa_library, self.timeout_s, self.retries = visa_library, timeout_s, retries
        self.on_resync: Callable[[], None] | None = None
        self.resyncs = 0

    @property
    def reopenable(self) -> bool:
        return isinstance(self.resource, str)

    def resync(self) -> None:
        """Forget anything in flight: reopen the VISA session (a fresh connection), or
        flush the adapter's read buffer when it was handed in as an object."""
        self.resyncs += 1
        if self.on_resync:
            self.on_resync()
        if self.reopenable:
            try:
                self.instrument.adapter.close()
            except Exception:  # noqa: BLE001 - the old session may already be dead
                pass
            self.instrument.adapter = open_adapter(self.resource, self.visa_library, self.timeout_s)
        else:
            try:
                self.instrument.adapter.flush_read_buffer()
            except Exception:  # noqa: BLE001
                pass

    def write(self, message: str) -> None:
        try:
            self.instrument.write(message)
        except InstrumentError:
            raise
        except Exception as exc:  # noqa: BLE001 - classify below
            raise self._classify(exc, message) from exc

    def _classify(self, exc: BaseException, message: str) -> InstrumentError:
        import pyvisa

        where = f"{self.name} ({self.resource if isinstance(self.resource, str) else type(self.resource).__name__})"
        if isinstance(exc, pyvisa.errors.VisaIOError):
            if exc.error_code == pyvisa.constants.StatusCode.error_timeout:
                return InstrumentTimeoutError(f"{where}: no reply to {message!r} within {self.timeout_s:g} s")
            return InstrumentConnectionError(f"{where}: I/O error on {message!r}: {exc}")
        if isinstance(exc, (UnicodeDecodeError,)):
            return InstrumentReplyError(f"{where}: undecodable reply to {message!r}: {exc}")
        if isinstance(exc, (ConnectionError, OSError, EOFError)):
            return InstrumentConnectionError(f"{where}: connection lost on {message!r}: {exc}")
        return InstrumentConnectionError(f"{where}: {type(exc).__name__} on {message!r}: {exc}")

    def query(self, message: str, parse: Callable[[str], Any], retry_safe: bool) -> Any:
        """Send ``message``, read one reply and ``parse`` it (``parse`` raises
        :class:`InstrumentReplyError` / :class:`InstrumentReportedError`). Transport
        and garbage faults resync the link and, if ``retry_safe``, retry up to
        ``retries`` times; reported instrument errors are never retried."""
        attempts = 1 + (self.retries if retry_safe else 0)
        last: InstrumentError | None = None
        for attempt in range(attempts):
            try:
                reply = self.instrument.ask(message)
            except InstrumentError as exc:
                last = exc
            except Exception as exc:  # noqa: BLE001 - classified
                last = self._classify(exc, message)
            else:
                try:
                    return parse(reply)
                except InstrumentReportedError:
                    raise
                except InstrumentReplyError as exc:
                    last = exc
            log.warning("%s: %s (attempt %d of %d)", self.name, last, attempt + 1, attempts)
            self.resync()
        assert last is not None
        if not retry_safe:
            raise type(last)(f"{last}; not retried: the message applies a pulse, which may or may not have "
                             "happened (pulses are not idempotent)") from last
        if attempts > 1:
            raise type(last)(f"{last} — still failing after {attempts} attempts") from last
        raise last


def _split_reply(reply: str, n_values: int, message: str) -> tuple[list[str], int, str]:
    """``v1;...;vn;code,"msg"`` → ([v1..vn], code, msg); garbage → InstrumentReplyError."""
    parts = reply.strip().split(";", n_values)
    if len(parts) != n_values + 1:
        raise InstrumentReplyError(f"reply {reply!r} to {message!r} has {len(parts)} field(s), expected "
                                   f"{n_values} value(s) and an error-queue entry")
    code_s, _, msg = parts[-1].partition(",")
    try:
        code = int(code_s.strip())
    except ValueError:
        raise InstrumentReplyError(f"reply {reply!r} to {message!r}: error-queue field {parts[-1]!r} is not "
                                   "'code,\"message\"'") from None
    return parts[:-1], code, msg.strip().strip('"')


def _float(text: str, what: str, reply: str) -> float:
    try:
        v = float(text)
    except ValueError:
        raise InstrumentReplyError(f"{what}: {text!r} in reply {reply!r} is not a number") from None
    if not math.isfinite(v) or abs(v) >= 9.9e37:
        raise InstrumentReplyError(f"{what}: {text!r} in reply {reply!r} is not a valid reading (SCPI NaN/overflow)")
    return v


class InstrumentBench(LabBench):
    """The :class:`~analogmem.emulator.bench.Bench` protocol on a PyVISA bench.

    Args:
        resource: VISA resource string of the source-measure unit (e.g.
            ``"TCPIP0::127.0.0.1::5025::SOCKET"`` for the emulator server,
            ``"USB0::0x05E6::0x2450::04412345::INSTR"`` for a 2450), or a pymeasure
            adapter object (tests).
        device: device card (name, path or model) whose target range ``[g_min_S,
            g_max_S]`` the pulse scheme uses; None keeps ``config.scheme``'s range.
        config: :class:`BenchConfig` (matrix size, :class:`SafetyLimits`,
            :class:`VoltageScheme`); default :class:`BenchConfig()`.
        switch_resource: VISA resource (or adapter) of the switch matrix; None means the
            matrix answers on ``resource`` (as the emulator server does).
        visa_library: PyVISA backend (``"@py"``, ``"@ivi"``, ``"file.yaml@sim"``); None
            is PyVISA's default.
        timeout_s: VISA timeout per reply (s).
        retries: extra attempts for operations that are safe to repeat.
        clock: ``"host"`` (this computer's monotonic clock; ``wait`` sleeps),
            ``"instrument"`` (the emulator's clock, ``wait`` costs no wall time) or
            ``"auto"`` (``"instrument"`` when ``*IDN?`` names the analogmem emulator).
        progress: show tqdm progress bars over cells in ``program``/``read``.

    Raises :class:`SafetyLimitError` if the scheme itself breaks the limits (nothing is
    opened), :class:`InstrumentConnectionError` if a resource cannot be opened.
    """

    def __init__(self, resource: Any, *, device: DeviceModel | str | None = None, config: BenchConfig | None = None,
                 switch_resource: Any = None, visa_library: str | None = None, timeout_s: float = 2.0,
                 retries: int = 2, clock: str = "auto", progress: bool = False):
        if not (isinstance(retries, int) and retries >= 0):
            raise SettingError(f"retries must be a non-negative integer, got {retries!r}")
        self._open_bench(config or BenchConfig(), device, clock, timeout_s)
        config = self.config
        self.progress = progress
        self._routed: int | None = None

        smu_adapter = open_adapter(resource, visa_library, timeout_s) if isinstance(resource, str) else resource
        self.smu = SourceMeter2450(smu_adapter, limits=self.limits)
        self._smu = _Link("source-measure unit", self.smu, resource, visa_library, timeout_s, retries)
        try:
            if switch_resource is None:
                sw_adapter, sw_res = smu_adapter, None
            elif isinstance(switch_resource, str):
                sw_adapter, sw_res = open_adapter(switch_resource, visa_library, timeout_s), switch_resource
            else:
                sw_adapter, sw_res = switch_resource, switch_resource
            self.switch = SwitchMatrix(sw_adapter, config.rows, config.cols)
            self._sw = self._smu if switch_resource is None else _Link(
                "switch matrix", self.switch, sw_res, visa_library, timeout_s, retries)
            self._smu.on_resync = self._forget_route
            self._sw.on_resync = self._forget_route
            if switch_resource is None:
                # One session serves both: after a resync the switch uses the new adapter too.
                orig = self._smu.resync

                def resync_both() -> None:
                    orig()
                    self.switch.adapter = self.smu.adapter

                self._smu.resync = resync_both  # type: ignore[method-assign]
            self._setup(clock)
        except BaseException:
            self._close_adapters()
            raise

    # ------------------------------------------------------------------ setup
    def _forget_route(self) -> None:
        self._routed = None

    def _setup(self, clock: str) -> None:
        def idn(reply: str) -> dict[str, str]:
            return parse_idn(reply)

        self.identity = self._smu.query("*IDN?", idn, retry_safe=True)
        self.is_emulator = (self.identity["manufacturer"] == EMULATOR_MANUFACTURER
                            and self.identity["model"] == EMULATOR_MODEL)
        self.clock = ("instrument" if self.is_emulator else "host") if clock == "auto" else clock
        if self.clock == "instrument" and not self.is_emulator:
            raise InstrumentError(f"clock='instrument' needs the analogmem SCPI emulator; {self.identity['manufacturer']} "
                                  f"{self.identity['model']} has no emulated clock")
        self._smu.write("*CLS")
        self.smu.configure_voltage_source(self.limits.compliance_A)
        (ilim,) = self._smu.query(":SOUR:VOLT:ILIM?;:SYST:ERR?", self._parser(1, ":SOUR:VOLT:ILIM?"),
                                  retry_safe=True)
        if not math.isclose(ilim, self.limits.compliance_A, rel_tol=1e-6):
            raise InstrumentReplyError(f"compliance read back as {ilim:g} A after setting {self.limits.compliance_A:g} A")
        if self._sw is not self._smu:
            self._sw.query("*IDN?", idn, retry_safe=True)
            self._sw.write("*CLS")
        self._sw.write(":ROUT:OPEN:ALL")
        if self.is_emulator:
            def geometry(reply: str) -> tuple[float, float]:
                fields, code, m = _split_reply(reply, 1, ":EMUL:GEOM?")
                if code != 0:
                    raise self._drain(self._smu, (code, m), ":EMUL:GEOM?")
                parts = fields[0].split(",")
                if len(parts) != 2:
                    raise InstrumentReplyError(f":EMUL:GEOM? reply {reply!r} is not 'rows,cols'")
                return _float(parts[0], ":EMUL:GEOM?", reply), _float(parts[1], ":EMUL:GEOM?", reply)

            rows, cols = self._smu.query(":EMUL:GEOM?;:SYST:ERR?", geometry, retry_safe=True)
            if (int(rows), int(cols)) != (self.config.rows, self.config.cols):
                raise InstrumentError(f"the bench config describes a {self.config.rows}x{self.config.cols} matrix but "
                                      f"the emulator at {self._smu.resource} has {int(rows)}x{int(cols)} cells; "
                                      "set [matrix] rows/cols (or --rows/--cols) to match")
        if self.clock == "instrument":
            (t_inst,) = self._smu.query(":EMUL:CLOC?;:SYST:ERR?", self._parser(1, ":EMUL:CLOC?", check_range=False),
                                        retry_safe=True)
            self._emulator_delta_s = t_inst - self.time_s

    def _drain(self, link: _Link, first: tuple[int, str], message: str) -> InstrumentReportedError:
        errors = [first]
        for _ in range(_MAX_DRAIN):
            try:
                reply = link.instrument.ask(":SYST:ERR?")
                _, code, msg = _split_reply(reply, 0, ":SYST:ERR?")
            except Exception:  # noqa: BLE001 - best effort; the first error is what matters
                link.resync()
                break
            if code == 0:
                break
            errors.append((code, msg))
        listing = "; ".join(f"{c},\"{m}\"" for c, m in errors)
        return InstrumentReportedError(f"instrument reported {len(errors)} error(s) after {message!r}: {listing}",
                                       errors, message)

    def _parser(self, n_values: int, what: str, check_range: bool = True, link: _Link | None = None,
                currents: tuple[int, ...] = ()) -> Callable[[str], list[float]]:
        link = link or self._smu
        ilim = self.limits.compliance_A

        def parse(reply: str) -> list[float]:
            fields, code, msg = _split_reply(reply, n_values, what)
            if code != 0:
                raise self._drain(link, (code, msg), what)
            vals = [_float(f, what, reply) for f in fields]
            for i in currents:
                if check_range and abs(vals[i]) > ilim * (1 + 1e-6):
                    raise InstrumentReplyError(f"{what}: current {vals[i]:g} A exceeds the compliance {ilim:g} A — "
                                               "not a possible reading")
            return vals

        return parse

    # ------------------------------------------------------------------ clock
    def _set_emulator_clock(self, target_s: float) -> None:
        msg = f":EMUL:CLOC {target_s:.9f};:EMUL:CLOC?;:SYST:ERR?"
        self._smu.query(msg, self._parser(1, msg, check_range=False), retry_safe=True)

    # ------------------------------------------------------------------ primitives
    def _route(self, address: int) -> None:
        if self._routed == address:
            return
        msg = self.switch.route_message(address)
        expected = self.switch.channel(address)

        def parse(reply: str) -> None:
            fields, code, m = _split_reply(reply, 1, msg)
            if code != 0:
                raise self._drain(self._sw, (code, m), msg)
            if fields[0].replace(" ", "") != expected:
                raise InstrumentReplyError(f"switch reports {fields[0]!r} closed after closing {expected} "
                                           f"(cell {address})")

        self._sw.query(msg, parse, retry_safe=True)
        self._routed = address

    def read_current(self, address: int) -> float:
        """Route to ``address`` and measure the current (A) at the scheme's read voltage."""
        self._route(address)
        msg = self.smu.read_message(self.scheme.v_read_V)
        (i,) = self._smu.query(msg, self._parser(1, msg, currents=(0,)), retry_safe=True)
        return i

    def apply_pulse(self, address: int, voltage_V: float, width_s: float, kind: str,
                    read_after: bool = False) -> tuple[float, float | None]:
        """Route to ``address`` and apply one ``kind`` (``"set"``/``"reset"``) pulse;
        return the current during the pulse (A) and, with ``read_after``, the read
        current (A) just after it. Every value is checked against the limits first;
        never retried."""
        self.limits.check_cells(np.array([address]))
        msg = self.smu.pulse_message(voltage_V, width_s, kind, self.scheme.v_read_V if read_after else None)
        self._route(address)
        n = 2 if read_after else 1
        vals = self._smu.query(msg, self._parser(n, msg, currents=tuple(range(n))), retry_safe=False)
        return vals[0], (vals[1] if read_after else None)

    # ------------------------------------------------------------------ protocol
    def program(self, targets: np.ndarray, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program conductance ``targets`` (S) into ``addresses`` (all cells when None),
        single-shot or with program-and-verify (see :class:`VoltageScheme`).

        The whole request — addresses, targets, every first SET amplitude, the RESET and
        read voltages, widths — is validated before anything is sent: a
        :class:`SafetyLimitError`, :class:`AddressError` or :class:`TargetRangeError`
        leaves the instrument untouched.

        Returns a :class:`ProgramReport`: ``time_s`` the bench time when programming
        ended; ``pulses`` SET pulses per cell; ``success`` (with verify) whether each cell
        ended inside its window; ``stuck`` 1/2 where verify failed with the amplitude at
        its ceiling below the window / right after a RESET above it (0 otherwise or
        without verify). RESET pulses are in :attr:`last_program_resets`, the final
        verify reads in :attr:`last_program_reads_S`.
        """
        addr, g_t, policy = self._program_request(targets, addresses, verify)
        s = self.scheme
        n = addr.shape[0]
        pulses = np.zeros(n, dtype=np.int64)
        resets = np.zeros(n, dtype=np.int64)
        success = np.zeros(n, dtype=bool) if verify is not None else None
        reads = np.full(n, np.nan)
        last_v = np.zeros(n)
        stuck = np.zeros(n, dtype=np.int8)
        v0 = s.set_voltage(g_t)
        if policy is not None:
            win_lo, win_hi = policy.window(g_t)
        for j in self._iter(n, "program"):
            a = int(addr[j])
            if s.reset_first:
                self.apply_pulse(a, s.v_reset_V, s.reset_width_s, "reset")
                resets[j] += 1
            v = float(v0[j])
            if policy is None:
                self.apply_pulse(a, v, s.set_width_s, "set")
                pulses[j] = 1
            else:
                lo, hi = win_lo[j], win_hi[j]
                for _ in range(policy.max_pulses):
                    _, i_read = self.apply_pulse(a, v, s.set_width_s, "set", read_after=True)
                    pulses[j] += 1
                    g = float(s.conductance(i_read))
                    reads[j] = g
                    if lo <= g <= hi:
                        success[j] = True
                        break
                    v = float(policy.next_voltage(v, g_t[j], g))
                    if g > hi and pulses[j] < policy.max_pulses:
                        self.apply_pulse(a, s.v_reset_V, s.reset_width_s, "reset")
                        resets[j] += 1
                last_v[j] = v
            self.cell_program_time_s[a] = self.time_s
        if policy is not None:
            stuck = policy.stuck(success, reads, last_v, resets, win_lo, win_hi)
        return self._program_done(addr, addresses is None, pulses, success, stuck, resets, reads)

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S) = read current (A) / ``scheme.v_read_V`` (V).

        Args:
            t_s: seconds after the end of the most recent ``program`` at which to start
                reading (the bench waits until then); None reads now. A moment more than
                ``read_time_tolerance_s`` in the past raises :class:`ReadTimeError`.
            addresses: cells to read; None reads every cell.

        Cells are read one after another; their exact ages are in :attr:`last_read_age_s`.
        If a read fails part-way, the exception carries ``partial_read`` (the addresses,
        values (S) and ages (s) measured before it).
        """
        addr, _ = self._read_request(t_s, addresses)
        out = np.empty(addr.shape[0])
        when = np.empty(addr.shape[0])
        done = 0
        try:
            for j in self._iter(addr.shape[0], "read"):
                out[j] = self.read_current(int(addr[j])) / self.scheme.v_read_V
                when[j] = self.time_s
                done = j + 1
        except BaseException as exc:
            # Keep what was measured: callers that log as they go (characterise) write it.
            exc.partial_read = {"addresses": addr[:done].copy(), "values_S": out[:done].copy(),  # type: ignore[attr-defined]
                                "age_s": when[:done] - self.cell_program_time_s[addr[:done]]}
            raise
        self.last_read_age_s = when - self.cell_program_time_s[addr]
        return out

    def shutdown(self) -> None:
        """Safe idle: output off at 0 V, every crosspoint open, sessions closed
        (idempotent). Every step is tried; the first failure is raised at the end."""
        if self._closed:
            return
        self._closed = True
        first: BaseException | None = None
        for step in (self.smu.shutdown, self.switch.shutdown):
            try:
                step()
            except Exception as exc:  # noqa: BLE001 - try every step
                first = first or exc
        self._close_adapters()
        if first is not None:
            raise InstrumentConnectionError(f"shutdown did not complete: {first}") from first

    close = shutdown

    def _close_adapters(self) -> None:
        for inst in (getattr(self, "smu", None), getattr(self, "switch", None)):
            try:
                if inst is not None:
                    inst.adapter.close()
            except Exception:  # noqa: BLE001
                pass

    def _iter(self, n: int, what: str):
        if self.progress and n > 1:
            return progress_bar(range(n), desc=f"{what} ({self.identity['model']})", unit="cell", leave=False)
        return range(n)
