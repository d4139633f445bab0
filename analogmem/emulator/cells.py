"""Cell models: the statistics of one memory technology, loaded from a device card.

A :class:`DeviceModel` describes a *channel*: what a cell reads, some time after it was
written with a target. It is pure data plus the closed-form statistics of the model
(vectorised numpy); the per-cell sampling runs in the compiled kernels of
:mod:`analogmem.emulator.bench` (and, as a test oracle, in :mod:`analogmem.emulator.reference`).

The model, for a target conductance ``g_T`` in ``[g_min_S, g_max_S]`` and its fraction of
the maximum ``x = g_T / g_max_S`` (the variable of the published models: Nandakumar et al.,
ICECS 2019; Wan et al., Nature 2022; not the storage layer's relative level
``(g − g_min)/(g_max − g_min)``):

1. programming noise: ``g_P = clip(g_T + σ_P(x)·z₁)``;
2. drift: ``g(t) = g_P · ((t + t0)/t0)^(−ν)``, ``ν = |μ_ν(x) + σ_ν(x)·z₂|`` drawn once per cell;
3. relaxation: ``+ σ_relax(x, t)·z₃`` with ``z₃`` drawn once per cell (spread that grows
   with time after programming);
4. read noise: ``+ σ_R(x, g(t), t)·z₄`` drawn at every read; result clipped to the
   card's physical range.

The laws of μ_ν, σ_ν and Q_s are clipped log-linear in x, optionally with a polynomial
branch above a break (``x_break``, ``above``: the HERMES fits); μ_ν, σ_ν may instead be a
table over g (``[drift] model = "table"``: a measured ν(g)). Read noise may be relative
(``σ_R ∝ |g|``) or ``"log10-1/f"`` (``σ_R = K·log10(g/µS)·F(t)``: CMO/HfOx); relaxation may be
``"log-linear-time"``: a target-independent mean shift and spread linear in ln t, added to
the programmed value (not a total that includes σ_P).

A card may instead describe its write channel *empirically* (``[programming] model =
"empirical"``, :class:`EmpiricalWriteChannel`): for each of a finite set of write inputs
(conductances, voltages or level indices) the quantile function of ln(g/S) read after
writing, linearly interpolated between quantile knots and, for inputs between two levels,
between the two levels' quantile functions. Such cards have no time axis (no drift,
relaxation or read noise).

Stuck cells (probabilities ``p_stuck_low``/``p_stuck_high``) sit at ``g_min_S``/``g_max_S``
for life, with no drift. Conductances are in siemens, times in seconds; card noise
coefficients carry ``_uS`` and are referenced to ``g_ref_S`` (scaled by
``g_max_S / g_ref_S``).
"""

from __future__ import annotations

import hashlib
import math
import os
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import DeviceCardError
from .pulse_response import P_EFFECTS, SCHEME_TERMS, WEIGHT_EFFECTS, PulseResponse, PulseScheme, PulseTable
from .toml_table import TomlTable as _Table

__all__ = [
    "DeviceModel",
    "acceleration_factor",
    "BOLTZMANN_eV_per_K",
    "ConductanceRange",
    "ProgrammingNoise",
    "EmpiricalWriteChannel",
    "ClippedLogLinear",
    "Drift",
    "ReadNoise",
    "Relaxation",
    "StuckFaults",
    "Retention",
    "PulseResponse",
    "load_device",
    "bundled_devices",
    "parse_card",
    "X_FLOOR",
]

#: Smallest fraction of g_max (x = g/g_max) used inside ln x and x^e (numerical guard for g_T = 0;
#: every published form clips long before this).
X_FLOOR = 1e-12

_SCHEMA_VERSION = 1
#: Physical bounds every card is held to: conductances (and σ's in S) within the window
#: calibration uses (1 fS to 1 kS, :data:`~analogmem.calibrate.tidy.PLAUSIBLE_CONDUCTANCE_S`),
#: times (reference times of drift and read noise) of at least 1 ns — no instrument reads
#: faster, and a subnormal time makes ln(t/t0) reach 745.
G_BOUNDS_S = (1e-15, 1e3)
MIN_TIME_S = 1e-9
#: The largest card read (bytes) and the most numbers in one list (:mod:`.toml_table`): a
#: calibrated card is a few kB; a 100 MB one took 53 s to refuse.
MAX_CARD_BYTES = 4 << 20
#: Write-input domains and their units: a target conductance (S), a write-pulse voltage
#: (V), or a level index (dimensionless).
INPUT_UNITS = {"conductance": "S", "voltage": "V", "level": ""}
_INPUT_DOMAINS = tuple(INPUT_UNITS)
_UNIT_uS = 1e-6


# --------------------------------------------------------------------------- parameters
@dataclass(frozen=True)
class ConductanceRange:
    """Target range ``[g_min_S, g_max_S]`` and physical clip ``[clip_min_S, clip_max_S]`` (S)."""

    g_min_S: float
    g_max_S: float
    clip_min_S: float
    clip_max_S: float


def _poly(coefficients: tuple[float, ...], x: np.ndarray) -> np.ndarray:
    """Evaluate ``Σ_k c_k x^k`` (coefficients low → high order) by Horner's rule."""
    out = np.zeros_like(x, dtype=np.float64)
    for c in reversed(coefficients):
        out = out * x + c
    return out


@dataclass(frozen=True)
class ProgrammingNoise:
    """``σ_P(x) = Σ_k c_k x^k`` µS at ``g_ref_S``, scaled by ``g_max/g_ref``."""

    coefficients_uS: tuple[float, ...]
    g_ref_S: float


@dataclass(frozen=True)
class EmpiricalWriteChannel:
    """Empirical write channel: per write input ``inputs[k]`` (strictly increasing, in the
    card's input unit) the quantiles ``log_g_quantiles[k][j]`` of ln(g / 1 S) at
    probabilities ``probabilities[j]`` (strictly increasing, from 0 to 1).

    Sampling: ``u ~ U(0, 1)``; the quantile function of each level is linear between knots;
    an input between levels ``k`` and ``k+1`` mixes their quantile functions linearly in the
    input (displacement interpolation), so the read distribution moves smoothly between
    measured levels.
    """

    inputs: tuple[float, ...]
    probabilities: tuple[float, ...]
    log_g_quantiles: tuple[tuple[float, ...], ...]
    fit: str = "empirical"

    def bracket(self, x_in: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Level index ``k`` at or below each input and the weight ``w`` of level ``k+1``."""
        levels = np.asarray(self.inputs)
        x = np.asarray(x_in, dtype=np.float64)
        if len(levels) == 1:
            return np.zeros(x.shape, dtype=np.intp), np.zeros(x.shape)
        k = np.clip(np.searchsorted(levels, x, side="right") - 1, 0, len(levels) - 2)
        w = np.clip((x - levels[k]) / (levels[k + 1] - levels[k]), 0.0, 1.0)
        return k, w

    def quantile_log_S(self, x_in: np.ndarray, u: np.ndarray) -> np.ndarray:
        """ln(g/S) at probability ``u`` for write inputs ``x_in`` (arrays of one shape)."""
        probs, table = np.asarray(self.probabilities), np.asarray(self.log_g_quantiles)
        u = np.asarray(u, dtype=np.float64)
        k, w = self.bracket(x_in)
        j = np.clip(np.searchsorted(probs, u, side="right") - 1, 0, len(probs) - 2)
        t = (u - probs[j]) / (probs[j + 1] - probs[j])

        def level(kk: np.ndarray) -> np.ndarray:
            return table[kk, j] + t * (table[kk, j + 1] - table[kk, j])

        lo = level(k)
        if table.shape[0] == 1:
            return lo
        return lo + w * (level(np.minimum(k + 1, table.shape[0] - 1)) - lo)

    def cdf_log(self, level: int, log_g: np.ndarray) -> np.ndarray:
        """CDF of ln(g/S) of measured level ``level`` (by index) at ``log_g``."""
        return np.interp(log_g, np.asarray(self.log_g_quantiles[level]), np.asarray(self.probabilities),
                         left=0.0, right=1.0)


@dataclass(frozen=True)
class ClippedLogLinear:
    """``clip(slope·ln x + intercept, min, max)`` (dimensionless) for ``x < x_break``, and
    from ``x_break`` on the polynomial ``Σ_k above[k] x^k`` (at most cubic) when the card
    gives one — the branch fits of Le Gallo et al. 2023 (``x_break = inf``: one branch)."""

    slope: float
    intercept: float
    min: float
    max: float
    x_break: float = math.inf
    above: tuple[float, ...] = ()

    def __call__(self, ln_x: np.ndarray) -> np.ndarray:
        low = np.clip(self.slope * ln_x + self.intercept, self.min, self.max)
        if not self.above:
            return low
        return np.where(ln_x < math.log(self.x_break), low, _poly(self.above, np.exp(ln_x)))


@dataclass(frozen=True)
class Drift:
    """Power-law drift ``((t + t0)/t0)^(−ν)``, ``ν ~ |N(μ(x), σ(x))|``; model ``"none"``
    means ν = 0. ``"log-clip"``: μ, σ are :class:`ClippedLogLinear` laws of ln x;
    ``"table"``: μ, σ given at fractions of g_max ``x_knots`` (the card's ``g_knots_S``
    / g_max), linear in x between knots (a measured ν(g), as aihwkit's
    CustomDriftPCMLikeNoiseModel takes it)."""

    model: str
    t0_s: float = 1.0
    mu: ClippedLogLinear | None = None
    sigma: ClippedLogLinear | None = None
    x_knots: tuple[float, ...] = ()
    mu_table: tuple[float, ...] = ()
    sigma_table: tuple[float, ...] = ()

    @property
    def tabulated(self) -> bool:
        return self.model == "table"

    @property
    def enabled(self) -> bool:
        return self.model != "none"


@dataclass(frozen=True)
class ReadNoise:
    """Accumulated 1/f read noise, ``F(t) = sqrt(max(ln((t + t0 + t_read)/(2 t_read)), 0))``:

    * ``"pcm-1/f"``: ``σ_R = |g(t)| · min(q_coefficient / x^q_exponent, q_max) · F(t)``;
    * ``"pcm-1/f-piecewise"``: ``σ_R = |g(t)| · Q_s(x) · F(t)``, ``Q_s`` a
      :class:`ClippedLogLinear` law with an upper polynomial branch (``q``);
    * ``"log10-1/f"``: ``σ_R = K · log10(g(t) / 1 µS) · F(t)`` (K = ``k_uS`` µS per decade);
    * ``"none"``: no read noise."""

    model: str
    q_coefficient: float = 0.0
    q_exponent: float = 0.0
    q_max: float = 0.0
    t_read_s: float = 1.0
    q: ClippedLogLinear | None = None
    k_uS: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.model != "none"


@dataclass(frozen=True)
class Relaxation:
    """Spread after programming, published at ``times_s`` and interpolated linearly in ln t;
    held outside that span (``extrapolation = "hold"``). The relaxation part is
    ``σ_relax = sqrt(max(σ_tot² − σ_P², 0))``.

    ``model = "polynomial-log-time"``: ``σ_tot(x, t) = Σ_k c_k(t) x^k`` µS at ``g_ref_S``
    (``coefficients_uS`` holds the c_k per time). ``model = "table-log-time"``: σ_tot (µS at
    ``g_ref_S``) tabulated at ``x_knots`` (x = g/g_max), linear in x between knots and held
    outside them (``coefficients_uS`` holds the σ values per time) — for measured spreads
    that no low-order polynomial follows; its optional ``mean_uS`` rows (same layout) shift
    the mean read from the programmed value (a fitted mean drift through bakes, in
    Arrhenius-equivalent time)."""

    model: str
    g_ref_S: float = 1.0
    times_s: tuple[float, ...] = ()
    coefficients_uS: tuple[tuple[float, ...], ...] = ()
    extrapolation: str = "hold"
    x_knots: tuple[float, ...] = ()
    #: False: ``coefficients_uS`` give the relaxation spread itself (added to σ_P), not a total
    additive: bool = False
    #: mean shift rows (µS at g_ref, like a tabulated σ row), interpolated the same way; () none
    mean_uS: tuple[tuple[float, ...], ...] = ()

    @property
    def tabulated(self) -> bool:
        return self.model in ("table-log-time", "log-linear-time")

    def sigma_rows(self, x: np.ndarray) -> list[np.ndarray]:
        """σ_tot (µS at ``g_ref_S``) at fractions of g_max ``x``, one array per published time."""
        if self.tabulated:
            return [np.interp(x, self.x_knots, row) for row in self.coefficients_uS]
        return [_poly(c, x) for c in self.coefficients_uS]

    @property
    def enabled(self) -> bool:
        return self.model != "none"

    def segment(self, t_s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """For times ``t_s``: the index ``a`` of the published time at or below each
        (segment ``[a, a+1]``) and the weight ``w`` of ``a+1`` (linear in ln t), with
        ``w`` clamped to [0, 1] (the "hold" rule)."""
        times = np.asarray(self.times_s)
        t = np.asarray(t_s, dtype=np.float64)
        if len(times) == 1:
            return np.zeros(t.shape, dtype=np.intp), np.zeros(t.shape)
        a = np.clip(np.searchsorted(times, t, side="right") - 1, 0, len(times) - 2)
        ln_t = np.log(np.maximum(t, times[0]))
        w = (ln_t - np.log(times[a])) / (np.log(times[a + 1]) - np.log(times[a]))
        return a, np.clip(w, 0.0, 1.0)


@dataclass(frozen=True)
class Retention:
    """Arrhenius time–temperature equivalence (``"arrhenius"``): a bake of t s at T K ages
    cells like ``t·exp(E_a/k_B·(1/T_ref − 1/T))`` s at ``reference_temperature_K``, the
    temperature the card's time-dependent models describe; ``"none"``: no temperature model."""

    model: str = "none"
    activation_energy_eV: float = 0.0
    reference_temperature_K: float = 300.0
    activation_energy_stderr_eV: float = 0.0

    @property
    def enabled(self) -> bool:
        return self.model != "none"

    def acceleration_factor(self, temperature_K: np.ndarray | float) -> np.ndarray:
        """Seconds at ``reference_temperature_K`` per second at ``temperature_K``."""
        return acceleration_factor(temperature_K, self.activation_energy_eV, self.reference_temperature_K)


#: Boltzmann constant in eV/K (CODATA 2018, exact).
BOLTZMANN_eV_per_K = 8.617333262e-5


def acceleration_factor(temperature_K: np.ndarray | float, activation_energy_eV: float,
                        reference_temperature_K: float) -> np.ndarray:
    """AF(T) = exp(E_a/k_B · (1/T_ref − 1/T)): seconds at ``T_ref`` per second at ``T``."""
    t = np.asarray(temperature_K, dtype=np.float64)
    return np.exp(activation_energy_eV / BOLTZMANN_eV_per_K * (1.0 / reference_temperature_K - 1.0 / t))


@dataclass(frozen=True)
class StuckFaults:
    """Per-cell probabilities of being stuck at ``g_min_S`` / ``g_max_S`` for life."""

    p_stuck_low: float = 0.0
    p_stuck_high: float = 0.0


# --------------------------------------------------------------------------- the model
@dataclass(frozen=True)
class DeviceModel:
    """The statistics of one cell technology, as read from a device card.

    Build it with :func:`load_device`. The methods below are the closed-form statistics
    of the model (all vectorised; conductances in S, times in s, arrays of any shape).
    """

    name: str
    technology: str
    input: str
    description: str
    source: dict[str, Any]
    range: ConductanceRange
    programming: ProgrammingNoise | EmpiricalWriteChannel
    drift: Drift
    read_noise: ReadNoise
    relaxation: Relaxation
    faults: StuckFaults
    retention: Retention = Retention()
    write_verify: PulseResponse = PulseResponse()
    card_path: str = ""
    card_sha256: str = ""
    card_text: str = field(default="", repr=False)
    fit_report: dict[str, Any] = field(default_factory=dict, repr=False)

    # ---- helpers
    @property
    def g_min_S(self) -> float:
        return self.range.g_min_S

    @property
    def g_max_S(self) -> float:
        return self.range.g_max_S

    @property
    def empirical(self) -> bool:
        """True when the write channel is an :class:`EmpiricalWriteChannel`."""
        return isinstance(self.programming, EmpiricalWriteChannel)

    @property
    def level_targets_S(self) -> np.ndarray:
        """Programming targets (S), shape (n_levels,), for the levels of a card with a
        ``[write_verify]`` model: the middle of each level's verify window (a window open at
        the top is taken up to ``g_max_S``). :class:`DeviceCardError` for a card without one."""
        pr = self.write_verify
        if not pr.enabled:
            raise DeviceCardError(f"device {self.name!r} has no [write_verify] model, so no verified levels")
        lo = np.asarray(pr.window_lo_S, dtype=np.float64)
        hi = np.minimum(np.asarray(pr.window_hi_S, dtype=np.float64), self.g_max_S)
        return (lo + np.maximum(hi, lo)) / 2

    @property
    def input_unit(self) -> str:
        """Unit of programming targets: ``"S"``, ``"V"`` or ``""`` (level index)."""
        return INPUT_UNITS[self.input]

    @property
    def input_range(self) -> tuple[float, float]:
        """Allowed programming targets ``(lo, hi)`` in the card's input unit."""
        if isinstance(self.programming, EmpiricalWriteChannel):
            return self.programming.inputs[0], self.programming.inputs[-1]
        return self.range.g_min_S, self.range.g_max_S

    def fraction_of_g_max(self, g_T_S: np.ndarray) -> np.ndarray:
        """``x = g_T / g_max`` (dimensionless), the published models' variable."""
        return np.asarray(g_T_S, dtype=np.float64) / self.range.g_max_S

    def relative(self, g_T_S: np.ndarray) -> np.ndarray:
        """Deprecated name of :meth:`fraction_of_g_max` (renamed: the storage layer's relative
        level is another quantity, (g − g_min)/(g_max − g_min))."""
        import warnings

        warnings.warn("DeviceModel.relative is renamed fraction_of_g_max; the old name will be removed",
                      DeprecationWarning, stacklevel=2)
        return self.fraction_of_g_max(g_T_S)

    def _ln_x(self, g_T_S: np.ndarray) -> np.ndarray:
        return np.log(np.maximum(self.fraction_of_g_max(g_T_S), X_FLOOR))

    # ---- 1. programming noise
    def sigma_program_S(self, g_T_S: np.ndarray) -> np.ndarray:
        """Standard deviation σ_P (S) of the programmed conductance around ``g_T_S``
        (polynomial programming noise only)."""
        if isinstance(self.programming, EmpiricalWriteChannel):
            raise DeviceCardError(f"device {self.name!r} has an empirical channel: no σ_P(g) polynomial")
        scale = _UNIT_uS * self.range.g_max_S / self.programming.g_ref_S
        return scale * _poly(self.programming.coefficients_uS, self.fraction_of_g_max(g_T_S))

    # ---- 2. drift
    def drift_mu(self, g_T_S: np.ndarray) -> np.ndarray:
        """μ_ν(x) of the drift exponent's normal (before the absolute value); 0 without drift."""
        if not self.drift.enabled:
            return np.zeros(np.shape(g_T_S))
        if self.drift.tabulated:
            return np.interp(self.fraction_of_g_max(g_T_S), self.drift.x_knots, self.drift.mu_table)
        return self.drift.mu(self._ln_x(g_T_S))

    def drift_sigma(self, g_T_S: np.ndarray) -> np.ndarray:
        """σ_ν(x) of the drift exponent's normal; 0 without drift."""
        if not self.drift.enabled:
            return np.zeros(np.shape(g_T_S))
        if self.drift.tabulated:
            return np.interp(self.fraction_of_g_max(g_T_S), self.drift.x_knots, self.drift.sigma_table)
        return self.drift.sigma(self._ln_x(g_T_S))

    def drift_factor(self, nu: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """``((t + t0)/t0)^(−ν)`` for drift exponents ``nu`` at ``t_s`` seconds after programming."""
        if not self.drift.enabled:
            return np.ones(np.broadcast(np.asarray(nu), np.asarray(t_s)).shape)
        t0 = self.drift.t0_s
        return np.exp(-np.asarray(nu) * np.log((np.asarray(t_s, dtype=np.float64) + t0) / t0))

    # ---- 3. relaxation
    def sigma_total_relaxation_S(self, g_T_S: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """The card's total spread σ_tot(x, t) (S) at ``t_s`` after programming (relaxation
        cards only; interpolated in ln t, held outside the published span)."""
        rel = self.relaxation
        if not rel.enabled:
            raise DeviceCardError(f"device {self.name!r} has no relaxation model")
        x = self.fraction_of_g_max(g_T_S)
        a, w = rel.segment(np.broadcast_to(np.asarray(t_s, dtype=np.float64), np.shape(x)))
        table = rel.sigma_rows(x)
        sig = np.choose(a, table) if len(table) > 1 else table[0]
        if len(table) > 1:
            sig = sig + w * (np.choose(a + 1, table) - sig)
        return _UNIT_uS * self.range.g_max_S / rel.g_ref_S * sig

    def relaxation_mean_S(self, g_T_S: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """Mean shift (S) of the relaxation at ``t_s`` (``"log-linear-time"``: linear in ln t,
        held outside the span); 0 for cards without one."""
        rel = self.relaxation
        shape = np.broadcast(np.asarray(g_T_S), np.asarray(t_s)).shape
        if not rel.enabled or not rel.mean_uS:
            return np.zeros(shape)
        x = np.broadcast_to(self.fraction_of_g_max(g_T_S), shape)
        a, w = rel.segment(np.broadcast_to(np.asarray(t_s, dtype=np.float64), shape))
        rows = [np.interp(x, rel.x_knots, row) for row in rel.mean_uS]
        m = np.choose(a, rows) if len(rows) > 1 else rows[0]
        if len(rows) > 1:
            m = m + w * (np.choose(a + 1, rows) - m)
        return _UNIT_uS * self.range.g_max_S / rel.g_ref_S * m

    def sigma_relaxation_S(self, g_T_S: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """Relaxation part of the spread, ``sqrt(max(σ_tot² − σ_P², 0))`` (S), or σ_tot itself
        for an additive relaxation; 0 without relaxation."""
        if not self.relaxation.enabled:
            return np.zeros(np.broadcast(np.asarray(g_T_S), np.asarray(t_s)).shape)
        tot = self.sigma_total_relaxation_S(g_T_S, t_s)
        if self.relaxation.additive:
            return tot
        prog = self.sigma_program_S(g_T_S)
        return np.sqrt(np.maximum(tot * tot - prog * prog, 0.0))

    # ---- 4. read noise
    def read_noise_q(self, g_T_S: np.ndarray) -> np.ndarray:
        """The per-cell read-noise factor kept from programming: Q_s(x) (dimensionless) of
        the ``"pcm-1/f"`` forms, K (S per decade) of ``"log10-1/f"``; 0 without read noise."""
        rn = self.read_noise
        if not rn.enabled:
            return np.zeros(np.shape(g_T_S))
        if rn.model == "log10-1/f":
            return np.full(np.shape(g_T_S), _UNIT_uS * rn.k_uS)
        if rn.model == "pcm-1/f-piecewise":
            return rn.q(self._ln_x(g_T_S))
        return np.minimum(rn.q_coefficient * np.exp(-rn.q_exponent * self._ln_x(g_T_S)), rn.q_max)

    def read_noise_time_factor(self, t_s: np.ndarray | float) -> np.ndarray:
        """``sqrt(max(ln((t + t0 + t_read)/(2 t_read)), 0))`` at ``t_s`` after programming
        (0 where the log is negative: reads sooner than t_read after programming with t0 = 0)."""
        rn = self.read_noise
        t0 = self.drift.t0_s if self.drift.enabled else 0.0
        arg = np.log((np.asarray(t_s, dtype=np.float64) + t0 + rn.t_read_s) / (2.0 * rn.t_read_s))
        return np.sqrt(np.maximum(arg, 0.0))

    def read_noise_scale(self, g_now_S: np.ndarray) -> np.ndarray:
        """What multiplies ``q · F(t) · z`` at a read of conductance ``g_now_S``: |g| (S),
        or log10(|g| / 1 µS) (dimensionless) for ``"log10-1/f"``."""
        g = np.abs(np.asarray(g_now_S, dtype=np.float64))
        if self.read_noise.model == "log10-1/f":
            return (np.log(np.maximum(g, X_FLOOR * self.range.g_max_S)) - math.log(_UNIT_uS)) / math.log(10.0)
        return g

    def sigma_read_S(self, g_T_S: np.ndarray, g_now_S: np.ndarray, t_s: np.ndarray | float) -> np.ndarray:
        """Read-noise standard deviation (S) for cells with target ``g_T_S`` whose noiseless
        conductance at ``t_s`` is ``g_now_S``."""
        if not self.read_noise.enabled:
            return np.zeros(np.shape(g_now_S))
        return np.abs(self.read_noise_scale(g_now_S) * self.read_noise_q(g_T_S) * self.read_noise_time_factor(t_s))

    def __str__(self) -> str:  # short, human
        r = self.range
        parts = [f"{self.name} ({self.technology}, input={self.input}, "
                 f"g in [{r.g_min_S * 1e6:g}, {r.g_max_S * 1e6:g}] µS"]
        parts.append(f"; drift={self.drift.model}; read noise={self.read_noise.model}; "
                     f"relaxation={self.relaxation.model})")
        return "".join(parts)


# --------------------------------------------------------------------------- card parsing
def _clipped_log_linear(t: _Table, key: str) -> ClippedLogLinear:
    s = t.table(key)
    x_break = s.number("x_break", default=math.inf, lo=0.0, lo_open=True, allow_inf=True)
    above: tuple[float, ...] = ()
    if "above" in s.data:
        above = s.numbers("above")
        if len(above) > 4:
            s.fail(f"at most 4 coefficients (a cubic) are supported, got {len(above)}", "above")
        if math.isinf(x_break):
            s.fail("an upper branch needs x_break (the fraction of g_max it starts at)", "above")
        if min(_poly(above, np.linspace(min(x_break, 1.0), 1.0, 1001))) < 0:
            s.fail(f"the upper branch is negative somewhere in [{x_break:g}, 1]", "above")
    elif not math.isinf(x_break):
        s.fail("x_break needs an upper branch (above = [c0, c1, ...])", "x_break")
    out = ClippedLogLinear(slope=s.number("slope"), intercept=s.number("intercept"),
                           min=s.number("min", lo=0.0), max=s.number("max", lo=0.0), x_break=x_break, above=above)
    if out.min > out.max:
        s.fail(f"min {out.min:g} > max {out.max:g}")
    s.done()
    return out


def _drift_table(dr: _Table, g_min: float, g_max: float) -> Drift:
    """``[drift] model = "table"``: ν ~ |N(μ(g), σ(g))| with μ, σ given at ``g_knots_S``,
    linear in g between knots. The knots must cover the target range [g_min_S, g_max_S]
    (a measured ν(g) is not extrapolated; aihwkit refuses the same)."""
    knots = dr.numbers("g_knots_S", min_len=2)
    if knots[0] < 0 or any(b <= a for a, b in zip(knots, knots[1:])):
        dr.fail(f"must be non-negative and strictly increasing, got {list(knots)}", "g_knots_S")
    if knots[0] > g_min or knots[-1] < g_max:
        dr.fail(f"the knots [{knots[0]:g}, {knots[-1]:g}] S must cover the target range "
                f"[{g_min:g}, {g_max:g}] S (a measured drift is not extrapolated)", "g_knots_S")
    mu, sigma = dr.numbers("mu"), dr.numbers("sigma")
    for key, values in (("mu", mu), ("sigma", sigma)):
        if len(values) != len(knots) or min(values) < 0:
            dr.fail(f"expected {len(knots)} non-negative numbers (one per knot), got {list(values)}", key)
    return Drift("table", t0_s=dr.number("t0_s", lo=MIN_TIME_S), x_knots=tuple(k / g_max for k in knots),
                 mu_table=mu, sigma_table=sigma)


def _relaxation_mean_rows(rl: _Table, label: str, n_times: int, n_knots: int) -> tuple[tuple[float, ...], ...]:
    """``[relaxation] mean_uS`` of a ``table-log-time`` card (optional): the mean shift of
    the read from the programmed value, one row per time of ``times_s`` and one value per x
    knot (µS at ``g_ref_S``, either sign), interpolated like ``sigma_uS``; () when absent."""
    if "mean_uS" not in rl.data:
        return ()
    rows = rl.get("mean_uS")
    if not isinstance(rows, list) or len(rows) != n_times:
        rl.fail(f"expected one mean list per entry of times_s ({n_times}), got {rows!r}", "mean_uS")
    out = []
    for i, row in enumerate(rows):
        values = _Table(label, f"relaxation.mean_uS[{i}]", {"m": row}).numbers("m")
        if len(values) != n_knots:
            rl.fail(f"row {i} must have {n_knots} values (one per x knot), got {list(values)}", "mean_uS")
        out.append(values)
    return tuple(out)


def _log_linear_relaxation(rl: _Table) -> Relaxation:
    """``[relaxation] model = "log-linear-time"``: a target-independent shift
    ``mean_slope_uS·ln(t/1 s)`` and spread ``sigma_intercept_uS + sigma_slope_uS·ln(t/1 s)``
    (µS at ``g_ref_S``), added to the programmed value, for ``t`` in ``times_s = [t_lo, t_hi]``
    and held outside. Stored as a two-time, two-knot table (exactly linear in ln t)."""
    span = rl.numbers("times_s")
    if len(span) != 2 or not 0 < span[0] < span[1]:
        rl.fail(f"expected [t_lo, t_hi] with 0 < t_lo < t_hi, got {list(span)}", "times_s")
    m1 = rl.number("mean_slope_uS")
    s0, s1 = rl.number("sigma_intercept_uS"), rl.number("sigma_slope_uS")
    sig = [s0 + s1 * math.log(t) for t in span]
    if min(sig) < 0:
        rl.fail(f"the spread is negative at the span's ends ({sig[0]:g}, {sig[1]:g} µS)", "sigma_slope_uS")
    mean = [m1 * math.log(t) for t in span]
    return Relaxation("log-linear-time", g_ref_S=rl.number("g_ref_S", lo=G_BOUNDS_S[0], hi=G_BOUNDS_S[1]), times_s=span,
                      coefficients_uS=tuple((v, v) for v in sig), extrapolation="hold", x_knots=(0.0, 1.0),
                      additive=True, mean_uS=tuple((v, v) for v in mean))


def _check_nonnegative(t: _Table, key: str, coefficients: tuple[float, ...], x_min: float = 0.0,
                       scale: float = 1e-6) -> None:
    """σ polynomials must be >= 0 wherever targets may lie: x = g/g_max in [g_min/g_max, 1],
    and (times ``scale``: S per µS of the polynomial, 1e-6·g_max/g_ref) at most 1 kS."""
    x = np.linspace(x_min, 1.0, 1001)
    with np.errstate(over="ignore", invalid="ignore"):
        sig = _poly(coefficients, x)
        sig_S = sig * scale
    if np.any(sig < 0):
        bad = x[np.argmax(sig < 0)]
        t.fail(f"the polynomial gives a negative standard deviation at x = g/g_max = {bad:.3f}", key)
    if not np.all(np.isfinite(sig_S)) or np.max(sig_S) > G_BOUNDS_S[1]:
        t.fail(f"the polynomial gives a standard deviation of {np.max(sig_S):.3g} S, beyond the {G_BOUNDS_S[1]:g} S "
               "of any memory cell", key)


def card_name_problem(name: Any) -> str | None:
    """Why ``name`` cannot name a card (None if it can): a card name is non-empty printable
    ASCII without ``,`` or ``;`` — it is sent in instrument (SCPI) replies."""
    if not isinstance(name, str) or not name.strip() or any(not (" " <= ch <= "~") or ch in ",;" for ch in name):
        return (f"name {name!r} must be non-empty printable ASCII without ',' or ';' (no control characters or "
                "newlines: it appears in instrument replies)")
    return None


def _check_name(t: _Table, name: str) -> None:
    problem = card_name_problem(name)
    if problem:
        t.fail(problem, "name")


def _empirical_channel(prog: _Table) -> EmpiricalWriteChannel:
    inputs = prog.numbers("inputs")
    if any(b <= a for a, b in zip(inputs, inputs[1:])):
        prog.fail(f"must be strictly increasing, got {list(inputs)}", "inputs")
    probs = prog.numbers("probabilities", min_len=2)
    if probs[0] != 0.0 or probs[-1] != 1.0 or any(b <= a for a, b in zip(probs, probs[1:])):
        prog.fail("must increase strictly from 0 to 1", "probabilities")
    rows = prog.get("log_conductance_quantiles")
    if not isinstance(rows, list) or len(rows) != len(inputs):
        prog.fail(f"expected one row per input ({len(inputs)}), got "
                  f"{len(rows) if isinstance(rows, list) else type(rows).__name__}", "log_conductance_quantiles")
    table = []
    for k, row in enumerate(rows):
        sub = _Table(prog.source, f"programming.log_conductance_quantiles[{k}]", {"q": row})
        q = sub.numbers("q")
        if len(q) != len(probs):
            prog.fail(f"row {k} has {len(q)} quantiles for {len(probs)} probabilities", "log_conductance_quantiles")
        if any(b < a for a, b in zip(q, q[1:])):
            prog.fail(f"row {k} (input {inputs[k]:g}) is not non-decreasing", "log_conductance_quantiles")
        lo, hi = math.log(G_BOUNDS_S[0]), math.log(G_BOUNDS_S[1])
        if q[0] < lo or q[-1] > hi:
            prog.fail(f"row {k} reaches ln g = {q[0] if q[0] < lo else q[-1]:g}, outside [{lo:.3g}, {hi:.3g}] "
                      f"(conductances of {G_BOUNDS_S[0]:g} to {G_BOUNDS_S[1]:g} S)", "log_conductance_quantiles")
        table.append(q)
    return EmpiricalWriteChannel(inputs=inputs, probabilities=probs, log_g_quantiles=tuple(table),
                            fit=prog.string("fit", default="empirical"))


def _rows(t: _Table, label: str, key: str, n_rows: int, n_cols: int | None = None) -> list[tuple[float, ...]]:
    data = t.get(key)
    if not isinstance(data, list) or len(data) != n_rows:
        t.fail(f"expected {n_rows} lists (one per level), got {data!r}", key)
    rows = [_Table(label, f"{t.path}.{key}[{i}]", {"v": r}).numbers("v") for i, r in enumerate(data)]
    for i, r in enumerate(rows):
        if n_cols is not None and len(r) != n_cols:
            t.fail(f"row {i} must have {n_cols} values, got {len(r)}", key)
    return rows


def _windows_field(t: _Table, min_len: int = 1) -> tuple[tuple[float, ...], tuple[float, ...]]:
    """``window_lo_S`` / ``window_hi_S``: one window per level, 0 <= lo < hi (hi may be inf),
    no two overlapping."""
    lo = t.numbers("window_lo_S", min_len=min_len)
    hi_raw = t.get("window_hi_S")
    if not isinstance(hi_raw, list) or len(hi_raw) != len(lo):
        t.fail(f"expected {len(lo)} numbers (one per level, inf allowed), got {hi_raw!r}", "window_hi_S")
    hi = tuple(float(v) if isinstance(v, (int, float)) and not isinstance(v, bool) else math.nan for v in hi_raw)
    for j, (a, b) in enumerate(zip(lo, hi)):
        if not (math.isfinite(a) and a >= 0 and b > a):
            t.fail(f"level {j}: window [{a!r}, {b!r}] S must have 0 <= lo < hi", "window_hi_S")
    order = sorted(range(len(lo)), key=lambda j: lo[j])
    for a, b in zip(order, order[1:]):
        if hi[a] >= lo[b]:
            t.fail(f"windows of levels {a} and {b} overlap", "window_lo_S")
    return lo, hi


def _probabilities(t: _Table) -> tuple[float, ...]:
    probs = t.numbers("probabilities", min_len=2)
    if abs(probs[0]) > 0 or abs(probs[-1] - 1.0) > 0 or any(b <= a for a, b in zip(probs, probs[1:])):
        t.fail("must increase strictly from 0 to 1", "probabilities")
    return probs


def _max_pulses(t: _Table, key: str = "max_pulses") -> int:
    v = t.number(key, lo=1.0)
    if v != int(v):
        t.fail(f"must be an integer, got {v!r}", key)
    return int(v)


def _quantile_row(t: _Table, key: str, n: int, lo: float = -math.inf, hi: float = math.inf) -> tuple[float, ...]:
    q = t.numbers(key)
    if len(q) != n:
        t.fail(f"expected {n} quantiles (one per probability), got {len(q)}", key)
    if any(b < a for a, b in zip(q, q[1:])) or q[0] < lo or q[-1] > hi:
        t.fail(f"must be non-decreasing within [{lo:g}, {hi:g}]", key)
    return q


def _pulse_response(t: _Table, label: str) -> PulseResponse:
    model = t.string("model", choices=("none", "geometric-mixture", "shared-geometric-mixture"))
    if model == "none":
        t.done()
        return PulseResponse()
    lo, hi = _windows_field(t)
    n = len(lo)
    probs = _probabilities(t)
    if model == "shared-geometric-mixture":
        return _shared_pulse_response(t, lo, hi, probs)
    weights = _rows(t, label, "weights", n)
    p_hit = _rows(t, label, "p_hit", n)
    for j, (w, p) in enumerate(zip(weights, p_hit)):
        if len(w) != len(p) or not 1 <= len(w) <= 4:
            t.fail(f"level {j}: weights and p_hit need the same number (1..4) of components", "weights")
        if min(w) < 0 or abs(sum(w) - 1.0) > 1e-9:
            t.fail(f"level {j}: weights must be >= 0 and sum to 1, got {list(w)}", "weights")
        if not all(0.0 < v <= 1.0 for v in p):
            t.fail(f"level {j}: p_hit must lie in (0, 1], got {list(p)}", "p_hit")
    offsets = t.numbers("offset_pulses")
    if len(offsets) != n or any(o < 0 or o != int(o) for o in offsets):
        t.fail(f"expected {n} non-negative integers, got {list(offsets)}", "offset_pulses")
    max_pulses = _max_pulses(t)
    quant = _rows(t, label, "log_g_quantiles", n, len(probs))
    for j, q in enumerate(quant):
        if any(b < a for a, b in zip(q, q[1:])):
            t.fail(f"level {j}: quantiles must be non-decreasing", "log_g_quantiles")
    t.done()
    table = PulseTable(lo, hi, tuple(weights), tuple(p_hit), tuple(int(o) for o in offsets), max_pulses, probs,
                       tuple(quant))
    return PulseResponse(model, window_lo_S=lo, window_hi_S=hi, max_pulses=max_pulses, probabilities=probs,
                         fitted=table)


def _shared_pulse_response(t: _Table, lo: tuple[float, ...], hi: tuple[float, ...],
                           probs: tuple[float, ...]) -> PulseResponse:
    """``model = "shared-geometric-mixture"``: validated field by field."""
    rng = t.get("range_S")
    if (not isinstance(rng, list) or len(rng) != 2 or any(isinstance(v, bool) or not isinstance(v, (int, float))
                                                            for v in rng) or not (0 <= rng[0] < rng[1])):
        t.fail(f"expected [lo, hi] with 0 <= lo < hi (hi may be inf), got {rng!r}", "range_S")
    r_lo, r_hi = float(rng[0]), float(rng[1])
    if min(lo) < r_lo or max(hi) > r_hi:
        t.fail(f"the levels' windows must lie inside range_S [{r_lo:g}, {r_hi:g}]", "window_lo_S")
    g_ref = t.number("g_ref_S", lo=0.0, lo_open=True)
    alpha = t.numbers("class_logit_p")
    k = len(alpha)
    if not 1 <= k <= 4:
        t.fail(f"1..4 response classes are supported, got {k}", "class_logit_p")
    gamma = t.numbers("class_logit_weight")
    if len(gamma) != k or gamma[0] != 0.0:
        t.fail(f"expected {k} numbers (one per class), the first 0 (the reference class)", "class_logit_weight")
    run_sd = t.number("run_sd", lo=0.0)
    variation = _run_variation(t.table("run_variation")) if "run_variation" in t.data else (0.0, 0.0, (), {})
    support = _support(t.table("support")) if "support" in t.data else {}
    pe = t.table("p_effects")
    p_effects = {name: pe.number(name) for name in P_EFFECTS if name in pe.data}
    pe.done()
    we = t.table("weight_effects")
    weight_effects = {}
    for name in WEIGHT_EFFECTS:
        if name in we.data:
            v = we.numbers(name, min_len=0) if k > 1 else ()
            if len(v) != k - 1:
                we.fail(f"expected {k - 1} numbers (one per class after the first), got {len(v)}", name)
            weight_effects[name] = v
    we.done()
    st = t.table("schemes")
    schemes = []
    for name in list(st.data):
        s = st.table(name)
        shifts = {}
        for p_field, w_field in SCHEME_TERMS.values():
            shifts[p_field] = s.number(p_field, default=0.0)
            shift = s.numbers(w_field, min_len=0) if w_field in s.data else ()
            if shift and len(shift) != k - 1:
                s.fail(f"expected {k - 1} numbers (one per class after the first), got {len(shift)}", w_field)
            shifts[w_field] = shift
        steps = s.numbers("steps_V", min_len=0) if "steps_V" in s.data else ()
        if any(v <= 0 for v in steps):
            s.fail(f"steps must be > 0 V, got {list(steps)}", "steps_V")
        nq = len(probs)
        schemes.append(PulseScheme(name, _max_pulses(s), steps_V=steps,
                                   position_quantiles=_quantile_row(s, "position_quantiles", nq, 0.0, 1.0),
                                   open_above_log_quantiles=_quantile_row(s, "open_above_log_quantiles", nq, 0.0),
                                   open_below_log_quantiles=_quantile_row(s, "open_below_log_quantiles", nq, 0.0),
                                   **shifts))
        s.done()
    st.done()
    if not schemes:
        st.fail("at least one pulse scheme is needed (the first is the default)")
    t.done()
    return PulseResponse("shared-geometric-mixture", window_lo_S=lo, window_hi_S=hi, max_pulses=schemes[0].max_pulses,
                         probabilities=probs, range_S=(r_lo, r_hi), g_ref_S=g_ref, class_logit_p=alpha,
                         class_logit_weight=gamma, p_effects=p_effects, weight_effects=weight_effects, run_sd=run_sd,
                         schemes=tuple(schemes), run_sd_between=variation[0], run_sd_within=variation[1],
                         run_sd_replicates=variation[2], run_variation_table=variation[3], support=support)


def _support(t: _Table) -> dict[str, Any]:
    """``[write_verify.support]``: the covariate ranges the fit saw (scripts/cards/README.md,
    "Run-to-run variation")."""
    out: dict[str, Any] = {}
    for kind in ("two_sided", "open_above", "open_below"):
        if kind in t.data:
            k = t.table(kind)
            out[kind] = {}
            for key in ("position",) + (("ln_width",) if kind == "two_sided" else ()):
                v = k.numbers(key)
                if len(v) != 2 or v[0] > v[1]:
                    k.fail(f"expected [min, max], got {list(v)}", key)
                out[kind][key] = v
            k.done()
    if "max_prior_programs" in t.data:
        out["max_prior_programs"] = int(t.number("max_prior_programs", lo=0.0))
    t.done()
    return out


def _run_variation(t: _Table) -> tuple[float, float, tuple[tuple[float, float], ...], dict[str, Any]]:
    """``[write_verify.run_variation]`` (scripts/cards/README.md, "Run-to-run variation"): σ_b,
    σ_w of a new run's shift of logit p and their bootstrap replicates (the other fields are
    the estimate's record)."""
    sb = t.number("sd_between", lo=0.0)
    sw = t.number("sd_within", lo=0.0)
    rb = t.numbers("replicates_between", min_len=0) if "replicates_between" in t.data else ()
    rw = t.numbers("replicates_within", min_len=0) if "replicates_within" in t.data else ()
    if len(rb) != len(rw) or min(rb + rw, default=0.0) < 0:
        t.fail(f"replicates_between and replicates_within must be equally long (got {len(rb)}, {len(rw)}) and >= 0",
               "replicates_between")
    for key in ("sd_between_interval90", "sd_within_interval90"):
        if key in t.data and len(t.numbers(key)) != 2:
            t.fail("expected [lo, hi]", key)
    t.get("method", "")
    t.get("n_runs", 0)
    t.get("n_pairs", 0)
    t.done()
    return sb, sw, tuple(zip(rb, rw)), dict(t.data)


def parse_card(text: str, label: str = "<string>") -> DeviceModel:
    """Parse and validate a device card given as TOML text; ``label`` names it in errors.

    Raises :class:`~analogmem.errors.DeviceCardError` naming the field for anything
    malformed, missing, unknown or physically impossible.
    """
    text, raw = _toml(text, label)
    root = _Table(label, "", raw)
    card, name, technology, input_domain, description = _card_table(root)
    source = _source_table(root)
    programming, limits = _programming_and_range(root, card, input_domain)
    g_min, g_max = limits.g_min_S, limits.g_max_S
    drift = _drift_model(root, g_min, g_max)
    read_noise = _read_noise_model(root)
    relaxation = _relaxation_model(root, label, g_min, g_max)
    if isinstance(programming, EmpiricalWriteChannel):
        for table_name, part in (("drift", drift), ("read_noise", read_noise), ("relaxation", relaxation)):
            if part.enabled:
                root.fail("must have model = 'none' with an empirical programming model "
                          "(an empirical channel has no time axis)", table_name)
    faults = _faults_model(root)
    retention = _retention_model(root, raw)
    write_verify = PulseResponse()
    if "write_verify" in raw:
        write_verify = _pulse_response(root.table("write_verify"), label)
    fit_report = root.get("fit_report", default={})  # free-form: written by analogmem.calibrate
    if not isinstance(fit_report, dict):
        root.fail("expected a table", "fit_report")
    root.done()

    return DeviceModel(
        name=name, technology=technology, input=input_domain, description=description, source=source,
        range=limits, programming=programming, drift=drift,
        read_noise=read_noise, relaxation=relaxation, faults=faults, retention=retention,
        write_verify=write_verify, card_path=label,
        card_sha256=hashlib.sha256(text.encode()).hexdigest(), card_text=text, fit_report=fit_report,
    )


def _toml(text: str, label: str) -> tuple[str, dict[str, Any]]:
    """A card's text (without a byte-order mark) and its parsed TOML, size-checked."""
    if not isinstance(text, str):
        raise DeviceCardError(f"device card {label}: expected TOML text, got {type(text).__name__}")
    if len(text) > MAX_CARD_BYTES:
        raise DeviceCardError(f"device card {label}: {len(text)} characters, more than the {MAX_CARD_BYTES} a card "
                              "may have")
    if text.startswith("\ufeff"):  # a UTF-8 byte-order mark (some editors write one): not TOML, but harmless
        text = text[1:]
    try:
        return text, tomllib.loads(text)
    except tomllib.TOMLDecodeError as exc:
        raise DeviceCardError(f"device card {label}: not valid TOML: {exc}") from None
    except RecursionError:
        raise DeviceCardError(f"device card {label}: arrays or tables nested too deeply to be a device card") from None


def _card_table(root: _Table) -> tuple[_Table, str, str, str, str]:
    """``[card]``: the table (later checks name its ``input``), name, technology, input, description."""
    card = root.table("card")
    version = card.get("schema_version")
    if isinstance(version, bool) or version != _SCHEMA_VERSION:
        card.fail(f"unsupported schema_version {version!r} (this analogmem reads {_SCHEMA_VERSION})",
                  "schema_version")
    name = card.string("name")
    _check_name(card, name)
    technology = card.string("technology")
    input_domain = card.string("input", choices=_INPUT_DOMAINS)
    description = card.string("description", default="")
    card.done()
    return card, name, technology, input_domain, description


def _source_table(root: _Table) -> dict[str, Any]:
    """``[source]``: free-form, with a required citation."""
    src = root.table("source")
    src.string("citation")
    source = dict(src.data)
    src.used.update(source)
    return source


def _programming_and_range(root: _Table, card: _Table, input_domain: str
                           ) -> tuple[ProgrammingNoise | EmpiricalWriteChannel, ConductanceRange]:
    """``[programming]`` and ``[range]`` (an empirical channel's range is its own conductances)."""
    prog = root.table("programming")
    prog_model = prog.string("model", choices=("polynomial", "empirical"))
    rng = root.table("range")
    clip_min = rng.number("clip_min_S", default=0.0, lo=0.0)
    clip_max = rng.number("clip_max_S", default=math.inf, lo=clip_min, lo_open=True, allow_inf=True)
    programming: ProgrammingNoise | EmpiricalWriteChannel
    if prog_model == "polynomial":
        if input_domain != "conductance":
            card.fail(f"a polynomial programming model needs input = 'conductance', got {input_domain!r}", "input")
        g_min = rng.number("g_min_S", lo=0.0, hi=G_BOUNDS_S[1])
        g_max = rng.number("g_max_S", lo=max(g_min, G_BOUNDS_S[0]), hi=G_BOUNDS_S[1], lo_open=g_min >= G_BOUNDS_S[0])
        if clip_min > g_min:
            rng.fail(f"{clip_min:g} is above g_min_S {g_min:g}", "clip_min_S")
        if clip_max < g_max:
            rng.fail(f"{clip_max:g} is below g_max_S {g_max:g}", "clip_max_S")
        programming = ProgrammingNoise(coefficients_uS=prog.numbers("coefficients_uS"),
                                       g_ref_S=prog.number("g_ref_S", lo=G_BOUNDS_S[0], hi=G_BOUNDS_S[1]))
        _check_nonnegative(prog, "coefficients_uS", programming.coefficients_uS, g_min / g_max,
                           1e-6 * g_max / programming.g_ref_S)
    else:
        programming = _empirical_channel(prog)
        table = np.asarray(programming.log_g_quantiles)
        g_min, g_max = float(np.exp(table.min())), float(np.exp(table.max()))
        if clip_max < g_max or clip_min > g_min:
            rng.fail(f"[{clip_min:g}, {clip_max:g}] S would clip the card's own conductances [{g_min:g}, {g_max:g}] S",
                     "clip_max_S" if clip_max < g_max else "clip_min_S")
    rng.done()
    prog.done()
    return programming, ConductanceRange(g_min, g_max, clip_min, clip_max)


def _drift_model(root: _Table, g_min: float, g_max: float) -> Drift:
    """``[drift]``."""
    dr = root.table("drift")
    model = dr.string("model", choices=("none", "log-clip", "table"))
    if model == "none":
        drift = Drift("none")
    elif model == "table":
        drift = _drift_table(dr, g_min, g_max)
    else:
        drift = Drift(model, t0_s=dr.number("t0_s", lo=MIN_TIME_S),
                      mu=_clipped_log_linear(dr, "mu"), sigma=_clipped_log_linear(dr, "sigma"))
    dr.done()
    return drift


def _read_noise_model(root: _Table) -> ReadNoise:
    """``[read_noise]``."""
    rn = root.table("read_noise")
    model = rn.string("model", choices=("none", "pcm-1/f", "pcm-1/f-piecewise", "log10-1/f"))
    if model == "none":
        read_noise = ReadNoise("none")
    elif model == "pcm-1/f-piecewise":
        read_noise = ReadNoise(model, q=_clipped_log_linear(rn, "q"),
                               t_read_s=rn.number("t_read_s", lo=MIN_TIME_S))
    elif model == "log10-1/f":
        read_noise = ReadNoise(model, k_uS=rn.number("k_uS", lo=0.0),
                               t_read_s=rn.number("t_read_s", lo=MIN_TIME_S))
    else:
        read_noise = ReadNoise(model, q_coefficient=rn.number("q_coefficient", lo=0.0),
                               q_exponent=rn.number("q_exponent", lo=0.0),
                               q_max=rn.number("q_max", lo=0.0),
                               t_read_s=rn.number("t_read_s", lo=MIN_TIME_S))
    rn.done()
    return read_noise


def _relaxation_model(root: _Table, label: str, g_min: float, g_max: float) -> Relaxation:
    """``[relaxation]``."""
    rl = root.table("relaxation")
    model = rl.string("model", choices=("none", "polynomial-log-time", "table-log-time", "log-linear-time"))
    if model == "none":
        relaxation = Relaxation("none")
    elif model == "log-linear-time":
        relaxation = _log_linear_relaxation(rl)
    else:
        times = rl.numbers("times_s")
        if any(t <= 0 for t in times) or any(b <= a for a, b in zip(times, times[1:])):
            rl.fail(f"must be positive and strictly increasing, got {list(times)}", "times_s")
        tabulated = model == "table-log-time"
        key = "sigma_uS" if tabulated else "coefficients_uS"
        knots: tuple[float, ...] = ()
        if tabulated:
            knots = rl.numbers("x_knots", min_len=2)
            if knots[0] < 0 or any(b <= a for a, b in zip(knots, knots[1:])):
                rl.fail(f"must be non-negative and strictly increasing, got {list(knots)}", "x_knots")
        coeffs = rl.get(key)
        if not isinstance(coeffs, list) or len(coeffs) != len(times):
            rl.fail(f"expected one {'sigma' if tabulated else 'coefficient'} list per entry of times_s ({len(times)}), got {coeffs!r}", key)
        rows = []
        for i, row in enumerate(coeffs):
            sub = _Table(label, f"relaxation.{key}[{i}]", {"c": row})
            rows.append(sub.numbers("c"))
            if tabulated:
                if len(rows[-1]) != len(knots) or min(rows[-1]) < 0:
                    rl.fail(f"row {i} must have {len(knots)} non-negative values (one per x knot), "
                            f"got {list(rows[-1])}", key)
            else:
                _check_nonnegative(rl, f"coefficients_uS[{i}]", rows[-1], g_min / g_max,
                                   1e-6 * g_max / rl.number("g_ref_S", lo=G_BOUNDS_S[0], hi=G_BOUNDS_S[1]))
        mean_rows = _relaxation_mean_rows(rl, label, len(times), len(knots)) if tabulated else ()
        relaxation = Relaxation(model, g_ref_S=rl.number("g_ref_S", lo=G_BOUNDS_S[0], hi=G_BOUNDS_S[1]),
                                times_s=times, coefficients_uS=tuple(rows),
                                extrapolation=rl.string("extrapolation", default="hold", choices=("hold",)),
                                x_knots=knots, mean_uS=mean_rows)
    rl.done()
    return relaxation


def _faults_model(root: _Table) -> StuckFaults:
    """``[faults]``."""
    ft = root.table("faults")
    faults = StuckFaults(p_stuck_low=ft.number("p_stuck_low", default=0.0, lo=0.0, hi=1.0),
                         p_stuck_high=ft.number("p_stuck_high", default=0.0, lo=0.0, hi=1.0))
    if faults.p_stuck_low + faults.p_stuck_high > 1.0:
        ft.fail("p_stuck_low + p_stuck_high exceeds 1")
    ft.done()
    return faults


def _retention_model(root: _Table, raw: dict[str, Any]) -> Retention:
    """``[retention]`` (optional)."""
    retention = Retention()
    if "retention" in raw:
        rt = root.table("retention")
        if rt.string("model", choices=("none", "arrhenius")) == "arrhenius":
            retention = Retention("arrhenius",
                                  activation_energy_eV=rt.number("activation_energy_eV", lo=0.0, lo_open=True),
                                  reference_temperature_K=rt.number("reference_temperature_K", lo=0.0, lo_open=True),
                                  activation_energy_stderr_eV=rt.number("activation_energy_stderr_eV", default=0.0,
                                                                        lo=0.0))
        rt.done()
    return retention


def _cards() -> Any:
    """The folder of the bundled cards: the package ``analogmem.devices`` of an installed
    wheel (or an editable install), else the top-level ``devices/`` beside this source tree's
    ``analogmem/`` (a checkout imported from its root, where ``analogmem.devices`` is no
    package because ``devices/`` is mapped onto it only at install time)."""
    try:
        return resources.files("analogmem.devices")
    except ModuleNotFoundError:
        here = Path(__file__).resolve().parents[2] / "devices"
        if here.is_dir():
            return here
        raise DeviceCardError(f"no bundled device cards: neither the package analogmem.devices nor {here} "
                              "exists (a broken install: reinstall analogmem)") from None


def bundled_devices() -> list[str]:
    """Names of the device cards shipped with analogmem."""
    return sorted(p.name[:-5] for p in _cards().iterdir() if p.name.endswith(".toml"))


def load_device(name_or_path: str | Path) -> DeviceModel:
    """Load a device card: a bundled one by name (see :func:`bundled_devices`, e.g.
    ``"pcm-nandakumar2019"``) or a TOML file by path.

    A string is a *path* when it looks like one — it contains a path separator or ends in
    ``.toml`` (``"./my-card"``, ``"cards/x.toml"``, ``"x.toml"``) — and a *bundled name*
    otherwise; a :class:`pathlib.Path` (any ``os.PathLike``) is always a path. A bare name
    always means the bundled card, even where a file of that name lies in the working
    folder; a bare name that is not bundled but exists as a local file or folder is
    ambiguous and refused with a message saying how to load each.

    Raises :class:`~analogmem.errors.DeviceCardError` if the name is unknown or
    ambiguous, the file cannot be read or is not UTF-8 text, or the card is malformed (the
    message names the field).
    """
    if isinstance(name_or_path, DeviceModel):
        return name_or_path
    if isinstance(name_or_path, os.PathLike):
        return _load_card_file(Path(name_or_path))
    if not isinstance(name_or_path, str) or not name_or_path:
        raise DeviceCardError(f"a device is a bundled card name, a path to a .toml card or a DeviceModel, "
                              f"got {name_or_path!r} ({type(name_or_path).__name__})")
    name = name_or_path
    separators = {"/", os.sep} | ({os.altsep} if os.altsep else set())
    if name.endswith(".toml") or any(sep in name for sep in separators):
        return _load_card_file(Path(name))
    resource = _cards() / f"{name}.toml"
    if resource.is_file():
        return parse_card(_decode_card(resource.read_bytes(), name), name)
    bundled = ", ".join(bundled_devices())
    if Path(name).exists():
        raise DeviceCardError(
            f"{name!r} is not a bundled card name, and a {'folder' if Path(name).is_dir() else 'file'} of that "
            f"name is in the working folder: to load that file pass it as a path ('./{name}' or a .toml name); "
            f"bundled cards: {bundled}")
    raise DeviceCardError(f"no bundled device card named {name!r}; bundled: {bundled} "
                          "(or pass a path to a .toml card)")


def _decode_card(data: bytes, label: str) -> str:
    """A card file's bytes as text; :class:`DeviceCardError` naming the first bad byte if
    they are not UTF-8."""
    try:
        return data.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise DeviceCardError(f"device card {label}: not UTF-8 text (byte 0x{data[exc.start]:02x} at offset "
                              f"{exc.start}); a card is a UTF-8 TOML file") from None


def _load_card_file(path: Path) -> DeviceModel:
    """Read and parse the card file at ``path`` (a regular file of at most
    :data:`MAX_CARD_BYTES`: a FIFO, device or huge file is refused before reading)."""
    import stat as _stat

    try:
        st = os.stat(path)
        if not _stat.S_ISREG(st.st_mode):
            raise DeviceCardError(f"device card {path}: not a regular file (a folder, device or FIFO is not read)")
        if st.st_size > MAX_CARD_BYTES:
            raise DeviceCardError(f"device card {path}: {st.st_size} bytes, more than the {MAX_CARD_BYTES} a card "
                                  "may have")
        with open(path, "rb") as fh:
            data = fh.read(MAX_CARD_BYTES + 1)
    except OSError as exc:
        hint = ""
        stem = path.name[:-5] if path.name.endswith(".toml") else path.name
        if stem in bundled_devices():
            hint = f" (for the bundled card, pass the name {stem!r} as a string)"
        raise DeviceCardError(f"device card {path}: cannot read: {exc.strerror or exc}{hint}") from None
    return parse_card(_decode_card(data, str(path)), str(path))


from .._deprecated import renamed as _renamed  # noqa: E402  (old public name, deprecated)

__getattr__ = _renamed(__name__, {"EmpiricalChannel": "EmpiricalWriteChannel"}, globals())
