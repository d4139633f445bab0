"""What the 2450 (:class:`~analogmem.instrument.InstrumentBench`) and 2600B
(:class:`~analogmem.instrument.TspBench`) benches share (:class:`LabBench`): checking the
options they are opened with, checking a ``program`` / ``read`` request before anything is
sent, the per-cell bookkeeping of programming times, and their lifetime (``shutdown`` once,
context manager). Each bench keeps only how it talks to its instrument.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._checks import check_positive
from ..emulator.bench import ProgramReport, WriteVerify
from ..emulator.cells import DeviceModel, load_device
from ..emulator.validation import check_addresses, check_read_time
from ..errors import ReadTimeError, SettingError
from .bench_clock import BenchClock
from .errors import InstrumentConnectionError, InstrumentReadTimeError
from .limits import BenchConfig
from .verify_policy import VerifyPolicy, check_program_request, check_targets

__all__ = ["LabBench", "CLOCKS"]

#: The bench clocks a lab bench can run on (see :class:`~analogmem.instrument.bench_clock.BenchClock`).
CLOCKS = ("auto", "host", "instrument")


class LabBench(BenchClock):
    """Base of the instrument benches: request checks and bookkeeping (see the module docstring).

    A bench calls :meth:`_open_bench` first in its ``__init__`` (nothing is opened before
    the options pass), then opens its instrument."""

    _closed: bool

    def _open_bench(self, config: BenchConfig, device: DeviceModel | str | None, clock: str, timeout_s: Any) -> None:
        """Check the options and set the bench's state: ``config`` (its scheme's range set
        to ``device``'s when one is given, then checked against its limits), ``clock`` one of
        :data:`CLOCKS`, ``timeout_s`` a finite number of seconds > 0. Raises
        :class:`SafetyLimitError` / :class:`SettingError` before anything is opened."""
        self.device = load_device(device) if device is not None else None
        if self.device is not None:
            config = config.with_range(self.device.g_min_S, self.device.g_max_S)
        config.check_scheme()
        if clock not in CLOCKS:
            raise SettingError(f"clock must be one of {CLOCKS}, got {clock!r}")
        check_positive(timeout_s, "timeout_s (--timeout-s, s)", error=SettingError)
        self.config, self.limits, self.scheme = config, config.limits, config.scheme
        self.n_cells = config.n_cells
        self.read_time_tolerance_s = 1.0
        self._closed = False
        self._start_clock()
        self._last_program_s = 0.0
        #: bench time (s) at which each cell was last programmed (NaN: never by this bench).
        self.cell_program_time_s = np.full(self.n_cells, np.nan)
        #: ages (s since programming) of the cells of the most recent ``read``.
        self.last_read_age_s: np.ndarray = np.empty(0)
        #: RESET pulses per cell of the most recent ``program``.
        self.last_program_resets: np.ndarray = np.empty(0, dtype=np.int64)
        #: final verify reads (S) of the most recent ``program`` (NaN without verify).
        self.last_program_reads_S: np.ndarray = np.empty(0)

    # ------------------------------------------------------------------ requests
    def _addresses(self, addresses: Any) -> np.ndarray:
        """``addresses`` checked against the matrix and the limits (every cell when None)."""
        a = check_addresses(addresses, self.n_cells)
        if a is None:
            a = np.arange(self.n_cells, dtype=np.intp)
        self.limits.check_cells(a)
        return a

    def check_program(self, g_target_S: np.ndarray, verify: WriteVerify | None) -> VerifyPolicy | None:
        """Check a whole program request against the limits before anything is sent:
        every first SET amplitude, the threshold, RESET and read voltages, both widths,
        the verify windows. Returns the verify policy (None without verify). Raises
        :class:`SafetyLimitError` / :class:`TargetRangeError` / :class:`SettingError`."""
        return check_program_request(self.scheme, self.limits, g_target_S, verify, self.device)

    def _program_request(self, targets: Any, addresses: Any,
                         verify: WriteVerify | None) -> tuple[np.ndarray, np.ndarray, VerifyPolicy | None]:
        """A whole ``program`` request checked before anything is sent: the addresses, the
        targets (S, one per address) and the verify policy (None without verify)."""
        self._check_open()
        addr = self._addresses(addresses)
        g_t = check_targets(self.scheme, targets, addr.shape[0])
        return addr, g_t, self.check_program(g_t, verify)

    def _program_done(self, addr: np.ndarray, every: bool, pulses: np.ndarray, success: np.ndarray | None,
                      stuck: np.ndarray | None, resets: np.ndarray, reads_S: np.ndarray) -> ProgramReport:
        """Record the end of a ``program`` (its time, RESETs, final reads) and report it."""
        n = addr.shape[0]
        self._last_program_s = self.time_s
        self.last_program_resets, self.last_program_reads_S = resets, reads_S
        return ProgramReport(n_cells=n, time_s=self._last_program_s,
                             stuck=np.zeros(n, dtype=np.int8) if stuck is None else stuck,
                             addresses=None if every else addr, pulses=pulses, success=success)

    def _read_request(self, t_s: float | None, addresses: Any) -> tuple[np.ndarray, float]:
        """Check a ``read`` request (addresses, the read voltage against the limits) and
        wait until ``t_s`` s after the end of the last ``program`` (now when None).
        Returns the addresses and the read voltage (V). A moment more than
        ``read_time_tolerance_s`` in the past raises :class:`InstrumentReadTimeError`."""
        self._check_open()
        addr = self._addresses(addresses)
        v_read = self.limits.check_read(self.scheme.v_read_V)
        if t_s is not None:
            try:
                when = check_read_time(t_s, self._last_program_s, self.time_s, self.read_time_tolerance_s)
            except ReadTimeError as exc:
                raise InstrumentReadTimeError(str(exc)) from None
            late = self.time_s - when
            if late < 0:
                self.wait(-late)
        return addr, v_read

    # ------------------------------------------------------------------ lifetime
    def _check_open(self) -> None:
        if self._closed:
            raise InstrumentConnectionError(f"this {type(self).__name__} was shut down; open a new one")

    def shutdown(self) -> None:
        """Leave the instrument safe and close it (each bench; idempotent)."""
        raise NotImplementedError

    def __enter__(self) -> Any:
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    def __repr__(self) -> str:
        ident = getattr(self, "identity", {})
        return (f"{type(self).__name__}({ident.get('manufacturer', '?')} {ident.get('model', '?')}, "
                f"{self.config.rows}x{self.config.cols} cells, clock={getattr(self, 'clock', '?')!r})")
