"""The program-and-verify policy of every instrument bench, in one place.

The 2450 bench (:class:`~analogmem.instrument.InstrumentBench`) runs it on the host, one
pulse per round trip; the 2600B bench (:class:`~analogmem.instrument.TspBench`) renders
the same numbers into the TSP function that runs it on the instrument
(:mod:`~analogmem.instrument.tsp_script`). Both take windows, pulse budget, first
amplitude, amplitude update and the stuck classification from :class:`VerifyPolicy`.

The policy, per cell with target ``g_T`` (S) and window ``[lo, hi]`` (S):

1. optional RESET (``scheme.reset_first``);
2. SET at ``v = scheme.set_voltage(g_T)`` (V), read ``G = I / v_read_V``;
3. inside the window: done (success); else ``v ← clip(v + gain·(g_T − G)/slope, v_lo,
   v_hi)`` with ``v_lo = v_set_threshold_V / 2`` and ``v_hi = max_set_V``; a read above the
   window is followed by a RESET (a SET only raises a phase-change cell's conductance);
4. at most ``max_pulses`` SET pulses; a failure is "stuck low" (1) when the last read is
   below the window with ``v`` at its ceiling, "stuck high" (2) when above it after a RESET.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from ..emulator.bench import WriteVerify
from ..emulator.cells import DeviceModel
from ..errors import SettingError, TargetRangeError
from .limits import SafetyLimits, VoltageScheme

__all__ = ["VerifyPolicy", "DEFAULT_MAX_PULSES", "check_program_request", "check_targets"]

#: SET pulses per cell when a :meth:`WriteVerify.card` leaves the budget to the card
#: (``max_pulses=None``) and the card states none.
DEFAULT_MAX_PULSES = 20


@dataclass(frozen=True)
class VerifyPolicy:
    """The numbers of the verify loop (see the module docstring), all SI.

    Build it with :meth:`build`; ``window``/``first_voltage``/``next_voltage``/``stuck``
    are vectorised over cells.
    """

    scheme: VoltageScheme
    limits: SafetyLimits
    max_pulses: int
    tolerance_S: float
    tolerance_rel: float
    levels: tuple[tuple[float, float], ...] | None = None

    @classmethod
    def build(cls, scheme: VoltageScheme, limits: SafetyLimits, verify: WriteVerify,
              device: DeviceModel | None = None) -> "VerifyPolicy":
        """The policy of ``verify`` on a bench with ``scheme`` and ``limits``.

        ``WriteVerify(...)`` (tolerance windows) and ``WriteVerify.card(...)`` are both
        accepted: a card verify on an instrument uses its windows (``windows=``, else its
        tolerance, else the card's own levels) and its budget (``max_pulses``, else the
        card's, else :data:`DEFAULT_MAX_PULSES`). Raises :class:`SettingError` when no
        window can be told."""
        if not isinstance(verify, WriteVerify):
            raise SettingError(f"verify must be a WriteVerify or None, got {type(verify).__name__}")
        levels = verify.levels
        pr = device.write_verify if device is not None else None
        if verify.windows == "card" and levels is None and not (verify.tolerance_S or verify.tolerance_rel):
            if pr is None or not pr.enabled or pr.n_levels == 0:
                raise SettingError("WriteVerify.card() without windows or a tolerance needs a device card with "
                                   "[write_verify] levels; give windows=... or tolerance_rel=...")
            levels = tuple(zip(map(float, pr.window_lo_S), map(float, pr.window_hi_S)))
        n = verify.max_pulses
        if n is None:
            n = int(pr.max_pulses) if pr is not None and pr.enabled and pr.max_pulses > 0 else DEFAULT_MAX_PULSES
        return cls(scheme, limits, int(n), float(verify.tolerance_S), float(verify.tolerance_rel), levels)

    # ------------------------------------------------------------------ numbers
    @property
    def v_lo_V(self) -> float:
        """Lowest SET amplitude the update may choose (V)."""
        return 0.5 * self.scheme.v_set_threshold_V

    @property
    def v_hi_V(self) -> float:
        """Highest SET amplitude the update may choose (V): the limit ``max_set_V``."""
        return self.limits.max_set_V

    def window(self, g_target_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """``(lo, hi)`` (S) per target, shape like ``g_target_S``; with ``levels``, the
        level holding each target (:class:`TargetRangeError` for one in none)."""
        g = np.asarray(g_target_S, dtype=np.float64)
        if self.levels is None:
            h = self.tolerance_S + self.tolerance_rel * np.abs(g)
            return g - h, g + h
        lo_l = np.array([a for a, _ in self.levels])
        hi_l = np.array([b for _, b in self.levels])
        inside = (g[..., None] >= lo_l) & (g[..., None] <= hi_l)
        if not inside.any(axis=-1).all():
            i = int(np.argmin(inside.any(axis=-1).ravel()))
            raise TargetRangeError(f"target {g.ravel()[i]:.6g} S lies in none of the verify windows "
                                   f"{list(self.levels)}; nothing was sent")
        k = np.argmax(inside, axis=-1)
        return lo_l[k], hi_l[k]

    def first_voltage(self, g_target_S: np.ndarray) -> np.ndarray:
        """The first SET amplitude (V) per target."""
        return self.scheme.set_voltage(g_target_S)

    def next_voltage(self, v_V: np.ndarray, g_target_S: np.ndarray, g_read_S: np.ndarray) -> np.ndarray:
        """The next SET amplitude (V) after reading ``g_read_S`` at amplitude ``v_V``."""
        s = self.scheme
        v = np.asarray(v_V, dtype=np.float64) + s.verify_gain * (np.asarray(g_target_S) - g_read_S) / s.slope_S_per_V
        return np.clip(v, self.v_lo_V, self.v_hi_V)

    def stuck(self, success: np.ndarray, last_read_S: np.ndarray, last_v_V: np.ndarray, resets: np.ndarray,
              lo: np.ndarray, hi: np.ndarray) -> np.ndarray:
        """Stuck classification (int8: 0, 1 low, 2 high) per cell after the loop."""
        out = np.zeros(np.shape(success), dtype=np.int8)
        fail = ~np.asarray(success, dtype=bool)
        out[fail & (last_read_S < lo) & (last_v_V >= self.v_hi_V)] = 1
        out[fail & (last_read_S > hi) & (resets > 0) & (out == 0)] = 2
        return out


def check_program_request(scheme: VoltageScheme, limits: SafetyLimits, g_target_S: np.ndarray,
                          verify: WriteVerify | None, device: DeviceModel | None = None) -> VerifyPolicy | None:
    """Check a whole program request against ``limits`` before anything is sent: every
    first SET amplitude, the SET threshold, the RESET and read voltages, both widths and
    the verify windows. Returns the verify policy (None without verify). Raises
    :class:`SafetyLimitError` (naming the limit), :class:`TargetRangeError` or
    :class:`SettingError`. Both instrument benches call it."""
    s, lim = scheme, limits
    policy = None if verify is None else VerifyPolicy.build(s, lim, verify, device)
    v0 = s.set_voltage(g_target_S)
    if v0.size:
        imax = int(np.argmax(v0))
        if v0[imax] > lim.max_set_V:
            lim.check_set(v0[imax])  # raises, naming max_set_V
    lim.check_set(s.v_set_threshold_V)
    if s.reset_first or verify is not None:
        lim.check_reset(s.v_reset_V)
    lim.check_width(s.set_width_s, "SET pulse width")
    lim.check_width(s.reset_width_s, "RESET pulse width")
    lim.check_read(s.v_read_V)
    if policy is not None:
        policy.window(g_target_S)
    return policy


def check_targets(scheme: VoltageScheme, targets: Any, n: int) -> np.ndarray:
    """``targets`` as ``n`` conductances (S) inside the scheme's target range, else
    :class:`TargetRangeError` naming the first one outside (nothing is sent or written)."""
    from ..emulator.validation import as_target_array

    g = as_target_array(targets, n)
    bad = ~np.isfinite(g) | (g < scheme.g_min_S) | (g > scheme.g_max_S)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise TargetRangeError(f"targets[{i}] = {g[i]:.6g} S is outside the bench's target range "
                               f"[{scheme.g_min_S:g}, {scheme.g_max_S:g}] S; nothing was sent")
    return g
