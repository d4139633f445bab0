"""The cell physics behind both instrument emulators (the 2450 SCPI server and the 2600B
TSP server): an :class:`~analogmem.emulator.bench.EmulatedBench` of ``rows × cols`` cells
reached through a crosspoint matrix, a wall clock that the client may move forward, and
what a voltage pulse does to a cell.

A pulse of amplitude ``V`` (V) on a routed cell:

* ``V >= scheme.v_set_threshold_V``: SET — the cell is programmed through
  :meth:`EmulatedBench.program` (the card's programming noise, drift, relaxation, stuck
  faults) with the card's write input for ``V``: the nominal transfer ``scheme.transfer(V)``
  (S) for a conductance-input card, the pulse amplitude itself (V, clipped to the card's
  inputs) for a voltage-input card such as ``pcm-stanford``, the level nearest the
  transfer for a level-input card;
* ``V <= -reset_fraction·|scheme.v_reset_V|``: RESET — programmed to the lowest input;
* otherwise nothing changes (a read does not disturb the cell).

A read at ``V`` returns ``I = G·V`` (A), ``G`` from :meth:`EmulatedBench.read` at the
emulated clock, clipped at the compliance.

``limits`` (a :class:`~analogmem.instrument.limits.SafetyLimits`, optional) makes the
emulator enforce a bench file's limits as a lab's interlock would: :meth:`check_level`
raises :class:`~analogmem.errors.SafetyLimitError` for a level past them.
"""

from __future__ import annotations

import threading
import time

import numpy as np

from .._seeding import SeedLike
from ..emulator.bench import EmulatedBench
from ..emulator.cells import DeviceModel
from ..errors import AddressError, SafetyLimitError
from .limits import SafetyLimits, VoltageScheme

__all__ = ["PulsedCells"]


class PulsedCells:
    """Cells, clock and pulse physics of an emulated bench (see the module docstring).

    Args:
        device: the device card of the cells.
        rows, cols: matrix size (cells = rows × cols, both ≥ 1).
        scheme: the pulse physics (transfer curve, RESET voltage) over the card's range.
        seed: randomness of the cells.
        reset_fraction: RESET acts for ``V <= -reset_fraction·|v_reset_V|``.
        n_threads: threads of the emulated bench.
        limits: enforce these limits on every level, width, compliance and route
            (None: accept what the real instrument accepts).
    """

    def __init__(self, device: DeviceModel, rows: int, cols: int, scheme: VoltageScheme, seed: SeedLike,
                 reset_fraction: float = 0.5, n_threads: int = 1, limits: SafetyLimits | None = None):
        self.device, self.rows, self.cols, self.scheme = device, int(rows), int(cols), scheme
        self.reset_fraction = float(reset_fraction)
        self.limits = limits
        self.bench = EmulatedBench(device, self.rows * self.cols, seed=seed, n_threads=n_threads)
        self.lock = threading.RLock()
        self._t_wall0 = time.monotonic()
        self._offset_s = 0.0
        self.pulses = 0
        self.reads = 0
        lo, hi = device.input_range
        self._input_lo, self._input_hi = float(lo), float(hi)

    @property
    def n_cells(self) -> int:
        return self.rows * self.cols

    # ------------------------------------------------------------------ clock
    def clock_s(self) -> float:
        """The emulated clock (s): wall time since start plus every forward move."""
        return time.monotonic() - self._t_wall0 + self._offset_s

    def advance_to(self, t_s: float) -> None:
        """Move the clock forward to ``t_s`` (s; absolute, never backwards)."""
        now = self.clock_s()
        if t_s > now:
            self._offset_s += t_s - now

    def advance(self, seconds: float) -> None:
        """Let ``seconds`` (≥ 0) of emulated time pass without wall time (a pulse width,
        a TSP ``delay``)."""
        if seconds > 0:
            self._offset_s += float(seconds)

    def sync(self) -> None:
        """Move the emulated bench's clock to now."""
        now = self.clock_s()
        if now > self.bench.time_s:
            self.bench.wait(now - self.bench.time_s)

    # ------------------------------------------------------------------ limits
    def check_level(self, v_V: float) -> None:
        """With ``limits``: refuse a source level past ``max_set_V`` (positive) or
        ``max_reset_V`` (negative) with :class:`SafetyLimitError`."""
        lim = self.limits
        if lim is None:
            return
        if v_V > lim.max_set_V or v_V < -lim.max_reset_V:
            raise SafetyLimitError(f"source level {v_V:g} V is outside the enforced limits [-max_reset_V, max_set_V]"
                                   f" = [{-lim.max_reset_V:g}, {lim.max_set_V:g}] V")

    def check_compliance(self, i_A: float) -> None:
        if self.limits is not None and i_A > self.limits.compliance_A:
            raise SafetyLimitError(f"compliance {i_A:g} A exceeds the enforced limit compliance_A = "
                                   f"{self.limits.compliance_A:g} A")

    def check_width(self, w_s: float) -> None:
        if self.limits is not None and w_s > self.limits.max_pulse_width_s:
            raise SafetyLimitError(f"pulse width {w_s:g} s exceeds the enforced limit max_pulse_width_s = "
                                   f"{self.limits.max_pulse_width_s:g} s")

    def check_cell(self, cell: int) -> None:
        """A cell address inside the matrix (and, with limits, ``allowed_cells``)."""
        if not 0 <= cell < self.n_cells:
            raise AddressError(f"cell {cell} is outside the {self.rows}x{self.cols} matrix")
        if self.limits is not None:
            self.limits.check_cells(np.array([cell]))

    # ------------------------------------------------------------------ physics
    def write_input(self, v_V: float) -> float | None:
        """The card's write input for a pulse of ``v_V`` (V) — S, V or a level index —
        or None when the pulse changes nothing."""
        s = self.scheme
        if v_V >= s.v_set_threshold_V:
            if self.device.input == "voltage":
                x = v_V
            elif self.device.input == "level":
                frac = (v_V - s.v_set_threshold_V) / (s.v_set_full_V - s.v_set_threshold_V)
                x = round(self._input_lo + frac * (self._input_hi - self._input_lo))
            else:
                x = float(s.transfer(v_V))
        elif v_V <= -abs(s.v_reset_V) * self.reset_fraction:
            x = self._input_lo if self.device.input != "conductance" else s.g_min_S
        else:
            return None
        return float(min(max(x, self._input_lo), self._input_hi))

    def pulse(self, cell: int, v_V: float) -> bool:
        """Apply a pulse of ``v_V`` (V) to ``cell``; True if it SET or RESET the cell."""
        x = self.write_input(v_V)
        if x is None:
            return False
        self.sync()
        self.bench.program(np.array([x]), addresses=np.array([cell]))
        self.pulses += 1
        return True

    def current(self, cell: int, v_V: float, compliance_A: float) -> float:
        """The current (A) through ``cell`` at ``v_V`` (V), clipped at ``compliance_A``."""
        self.sync()
        g = float(self.bench.read(addresses=np.array([cell]))[0])
        self.reads += 1
        return float(np.clip(g * v_V, -compliance_A, compliance_A))
