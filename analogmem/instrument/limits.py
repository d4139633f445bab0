"""Safety limits and the pulse scheme of a bench, as data, with small validators.

Every :class:`~analogmem.instrument.InstrumentBench` carries a :class:`SafetyLimits`
(maximum |V| for SET, RESET and read, the compliance current, the pulse-width window and
the cell addresses it may touch) and a :class:`VoltageScheme` (how a target conductance
becomes SET/RESET voltage pulses and how a read current becomes a conductance). Any
request outside the limits raises :class:`~analogmem.errors.SafetyLimitError` naming the
limit — before a byte is sent to an instrument.

Both load from a TOML bench file (:func:`load_bench_config`)::

    [instrument]
    model = "2450"                   # or a 2600B-family TSP model: "2636B", ...

    [matrix]
    rows = 32
    cols = 32

    [limits]
    max_set_V = 2.0
    max_reset_V = 2.5
    max_read_V = 0.3
    compliance_A = 1e-4
    min_pulse_width_s = 1e-6
    max_pulse_width_s = 1e-2
    allowed_cells = [[0, 1024]]      # half-open [start, stop) ranges

    [scheme]
    v_read_V = 0.2
    v_set_threshold_V = 0.8
    v_set_full_V = 1.6
    v_reset_V = -1.8
    set_width_s = 1e-3
    reset_width_s = 1e-3

Units are SI: V, A, S, s.
"""

from __future__ import annotations

import math
import tomllib
from dataclasses import asdict, dataclass, field, fields, replace
from pathlib import Path
from typing import Any, Callable

import numpy as np

from .._checks import check_positive
from ..emulator.toml_table import TomlTable
from ..errors import SafetyLimitError, SettingError

__all__ = [
    "SafetyLimits",
    "VoltageScheme",
    "BenchConfig",
    "load_bench_config",
    "check_within",
    "safety_range",
]


#: Instruments a bench file may name: the 2450 (SCPI) and the 2600B family (TSP).
INSTRUMENT_MODELS = ("2450", "2601B", "2602B", "2604B", "2611B", "2612B", "2614B", "2634B", "2635B", "2636B")


def check_within(name: str, value: float, lo: float, hi: float, unit: str, what: str = "") -> float:
    """Return ``value`` as float if ``lo <= value <= hi``; otherwise raise
    :class:`SafetyLimitError` naming the limit ``name``, the value and the allowed range.

    NaN and infinities are always refused.
    """
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise SafetyLimitError(f"{what or name}: {value!r} is not a number ({unit}); nothing was sent") from None
    if not math.isfinite(v) or v < lo or v > hi:
        label = f"{what} " if what else ""
        raise SafetyLimitError(
            f"{label}{v:g} {unit} is outside the safety limit {name} = [{lo:g}, {hi:g}] {unit}; "
            "refused before anything was sent to the instrument")
    return v


def safety_range(limit_name: str, unit: str) -> Callable[[float, Any], float]:
    """A pymeasure-style validator ``(value, values) -> value`` that accepts
    ``values[0] <= value <= values[1]`` and raises :class:`SafetyLimitError` naming
    ``limit_name`` otherwise (pymeasure's ``strict_range`` raises a bare ``ValueError``
    and ``truncated_range`` silently clips — neither is acceptable for a safety limit)."""

    def validator(value: float, values: Any) -> float:
        lo, hi = float(min(values)), float(max(values))
        return check_within(limit_name, value, lo, hi, unit)

    validator.__name__ = f"safety_range_{limit_name}"
    return validator


def _positive(name: str, v: float, allow_zero: bool = False) -> float:
    return check_positive(v, name, allow_zero=allow_zero, error=SettingError)


@dataclass(frozen=True)
class SafetyLimits:
    """What a bench may ever apply.

    Attributes:
        max_set_V: largest SET pulse amplitude (V, positive polarity).
        max_reset_V: largest RESET pulse magnitude |V| (V).
        max_read_V: largest read voltage |V| (V); reads must not disturb the cell.
        compliance_A: current compliance programmed into the source-measure unit
            (``:SOUR:VOLT:ILIM``, A); it is also the largest compliance ever set.
        min_pulse_width_s, max_pulse_width_s: allowed pulse widths (s).
        allowed_cells: half-open ``(start, stop)`` address ranges the bench may route to;
            ``None`` allows every cell of the matrix.
    """

    max_set_V: float = 2.0
    max_reset_V: float = 2.5
    max_read_V: float = 0.3
    compliance_A: float = 1e-4
    min_pulse_width_s: float = 1e-6
    max_pulse_width_s: float = 1e-2
    allowed_cells: tuple[tuple[int, int], ...] | None = None

    def __post_init__(self) -> None:
        for name in ("max_set_V", "max_reset_V", "max_read_V", "compliance_A", "max_pulse_width_s"):
            _positive(f"SafetyLimits.{name}", getattr(self, name))
        _positive("SafetyLimits.min_pulse_width_s", self.min_pulse_width_s, allow_zero=True)
        if self.min_pulse_width_s > self.max_pulse_width_s:
            raise SettingError(f"SafetyLimits: min_pulse_width_s = {self.min_pulse_width_s:g} s exceeds "
                             f"max_pulse_width_s = {self.max_pulse_width_s:g} s")
        if self.allowed_cells is not None:
            ranges = []
            for r in self.allowed_cells:
                if len(r) != 2 or int(r[0]) < 0 or int(r[1]) <= int(r[0]):
                    raise SettingError(f"SafetyLimits.allowed_cells: {r!r} is not a [start, stop) range "
                                     "with 0 <= start < stop")
                ranges.append((int(r[0]), int(r[1])))
            object.__setattr__(self, "allowed_cells", tuple(ranges))

    # ------------------------------------------------------------------ checks
    def check_set(self, voltage_V: float) -> float:
        """A SET pulse amplitude (V) within ``[0, max_set_V]``."""
        return check_within("max_set_V", voltage_V, 0.0, self.max_set_V, "V", "SET pulse amplitude")

    def check_reset(self, voltage_V: float) -> float:
        """A RESET pulse amplitude (V) with ``|V| <= max_reset_V``."""
        return check_within("max_reset_V", voltage_V, -self.max_reset_V, self.max_reset_V, "V",
                            "RESET pulse amplitude")

    def check_read(self, voltage_V: float) -> float:
        """A read voltage (V) with ``|V| <= max_read_V`` and ``V != 0``."""
        v = check_within("max_read_V", voltage_V, -self.max_read_V, self.max_read_V, "V", "read voltage")
        if v == 0:
            raise SafetyLimitError("read voltage 0 V cannot measure a conductance; refused before anything was sent")
        return v

    def check_width(self, width_s: float, what: str = "pulse width") -> float:
        """A pulse width (s) within ``[min_pulse_width_s, max_pulse_width_s]``."""
        return check_within("[min_pulse_width_s, max_pulse_width_s]", width_s, self.min_pulse_width_s,
                            self.max_pulse_width_s, "s", what)

    def check_compliance(self, current_A: float) -> float:
        """A compliance current (A) within ``(0, compliance_A]``."""
        v = check_within("compliance_A", current_A, 0.0, self.compliance_A, "A", "compliance current")
        if v == 0:
            raise SafetyLimitError("compliance current 0 A is not allowed; refused before anything was sent")
        return v

    def check_cells(self, addresses: np.ndarray) -> None:
        """Raise :class:`SafetyLimitError` naming the first address outside ``allowed_cells``."""
        if self.allowed_cells is None or addresses.size == 0:
            return
        ok = np.zeros(addresses.shape, dtype=bool)
        for start, stop in self.allowed_cells:
            ok |= (addresses >= start) & (addresses < stop)
        if not ok.all():
            i = int(np.argmin(ok))
            allowed = ", ".join(f"[{a}, {b})" for a, b in self.allowed_cells)
            raise SafetyLimitError(
                f"cell address {int(addresses[i])} (addresses[{i}]) is outside the safety limit "
                f"allowed_cells = {allowed}; {int((~ok).sum())} address(es) refused, nothing was sent")


@dataclass(frozen=True)
class VoltageScheme:
    """How target conductances become pulses, and read currents conductances, on an
    instrument bench (the bench's target→voltage mapping; not a card's ISPP/RADAR
    :class:`analogmem.emulator.pulse_response.PulseScheme`).

    * **Read**: the source-measure unit applies ``v_read_V`` to the routed cell and
      measures the current ``I``; the conductance is ``G = I / v_read_V`` (S).
    * **SET** (nominal transfer): a SET pulse of amplitude ``V`` and width ``set_width_s``
      leaves the cell near ``g(V) = g_min_S + (g_max_S − g_min_S)·(V − v_set_threshold_V) /
      (v_set_full_V − v_set_threshold_V)``, clipped to the range; the first amplitude for a
      target ``g_T`` is the inverse, :meth:`set_voltage`.
    * **RESET**: a pulse of ``v_reset_V`` (sign = polarity) and ``reset_width_s`` brings
      the cell back near ``g_min_S``. With ``reset_first`` each ``program`` starts every
      cell from RESET; a verify read above the window is followed by a RESET before the
      next SET (a SET pulse can only raise a phase-change cell's conductance).
    * **Verify loop** (with :class:`~analogmem.emulator.bench.WriteVerify`): after each SET pulse the
      cell is read; inside the window ``[lo, hi]`` it is done; else the next amplitude is
      ``V + verify_gain·(g_T − G)/slope`` (``slope`` the nominal S/V of the transfer),
      kept inside ``[v_set_threshold_V, max_set_V]`` — a damped search that learns a
      miscalibrated transfer without amplifying programming noise; ``verify_gain = 0``
      re-pulses at the same amplitude (right for a well-calibrated transfer whose pulses
      re-draw around it, as the emulator's own :class:`WriteVerify` assumes). At most
      ``max_pulses`` SET pulses per cell.

    ``g_min_S``/``g_max_S`` default to the device card the bench is built for.
    """

    g_min_S: float = 0.0
    g_max_S: float = 25e-6
    v_read_V: float = 0.2
    v_set_threshold_V: float = 0.8
    v_set_full_V: float = 1.6
    v_reset_V: float = -1.8
    set_width_s: float = 1e-3
    reset_width_s: float = 1e-3
    verify_gain: float = 0.5
    reset_first: bool = True

    def __post_init__(self) -> None:
        if not (math.isfinite(self.g_min_S) and math.isfinite(self.g_max_S) and 0 <= self.g_min_S < self.g_max_S):
            raise SettingError(f"VoltageScheme needs 0 <= g_min_S < g_max_S, "
                               f"got [{self.g_min_S!r}, {self.g_max_S!r}] S")
        if not (0 < self.v_set_threshold_V < self.v_set_full_V):
            raise SettingError("VoltageScheme needs 0 < v_set_threshold_V < v_set_full_V, got "
                             f"{self.v_set_threshold_V!r} V, {self.v_set_full_V!r} V")
        if not math.isfinite(self.v_read_V) or self.v_read_V == 0:
            raise SettingError(f"VoltageScheme.v_read_V must be finite and non-zero, got {self.v_read_V!r}")
        if not math.isfinite(self.v_reset_V) or self.v_reset_V == 0:
            raise SettingError(f"VoltageScheme.v_reset_V must be finite and non-zero, got {self.v_reset_V!r}")
        _positive("VoltageScheme.set_width_s", self.set_width_s)
        _positive("VoltageScheme.reset_width_s", self.reset_width_s)
        if not (0 <= self.verify_gain <= 1):
            raise SettingError(f"VoltageScheme.verify_gain must be in [0, 1], got {self.verify_gain!r}")

    @property
    def slope_S_per_V(self) -> float:
        """Nominal conductance gained per volt of SET amplitude (S/V)."""
        return (self.g_max_S - self.g_min_S) / (self.v_set_full_V - self.v_set_threshold_V)

    def set_voltage(self, g_target_S: np.ndarray) -> np.ndarray:
        """The nominal SET amplitude (V) for each target conductance (S)."""
        g = np.asarray(g_target_S, dtype=np.float64)
        return self.v_set_threshold_V + (g - self.g_min_S) / self.slope_S_per_V

    def transfer(self, voltage_V: np.ndarray | float) -> np.ndarray:
        """The nominal conductance (S) a SET pulse of ``voltage_V`` leaves (clipped)."""
        v = np.asarray(voltage_V, dtype=np.float64)
        return np.clip(self.g_min_S + (v - self.v_set_threshold_V) * self.slope_S_per_V, self.g_min_S, self.g_max_S)

    def conductance(self, current_A: np.ndarray | float) -> np.ndarray:
        """Conductance (S) from a read current (A) at ``v_read_V``: ``G = I / V``."""
        return np.asarray(current_A, dtype=np.float64) / self.v_read_V

    def for_range(self, g_min_S: float, g_max_S: float) -> "VoltageScheme":
        """The same scheme for another target range (S)."""
        return replace(self, g_min_S=float(g_min_S), g_max_S=float(g_max_S))


@dataclass(frozen=True)
class BenchConfig:
    """Geometry, limits and pulse scheme of a bench.

    Attributes:
        rows, cols: switch-matrix size; cell ``a`` sits at row ``a // cols``, column
            ``a % cols`` and is routed with ``:ROUT:CLOS (@1!row+1!col+1)``.
        limits: :class:`SafetyLimits`.
        scheme: :class:`VoltageScheme`.
    """

    rows: int = 32
    cols: int = 32
    limits: SafetyLimits = field(default_factory=SafetyLimits)
    scheme: VoltageScheme = field(default_factory=VoltageScheme)
    model: str = "2450"

    def __post_init__(self) -> None:
        if not isinstance(self.model, str) or self.model.strip().upper() not in INSTRUMENT_MODELS:
            raise SettingError(f"BenchConfig.model ([instrument] model) must be one of {INSTRUMENT_MODELS}, "
                               f"got {self.model!r}")
        object.__setattr__(self, "model", self.model.strip().upper())
        for name in ("rows", "cols"):
            v = getattr(self, name)
            if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
                raise SettingError(f"BenchConfig.{name} must be a positive integer, got {v!r}")

    @property
    def n_cells(self) -> int:
        """Cells in the matrix (rows × cols)."""
        return int(self.rows) * int(self.cols)

    @property
    def is_tsp(self) -> bool:
        """True for a 2600B-family instrument (TSP), False for the 2450 (SCPI)."""
        return self.model != "2450"

    def check_scheme(self) -> None:
        """Raise :class:`SafetyLimitError` if the scheme's fixed voltages, widths or the
        compliance break the limits (called before a bench opens its instruments)."""
        lim, s = self.limits, self.scheme
        lim.check_read(s.v_read_V)
        lim.check_reset(s.v_reset_V)
        lim.check_set(s.v_set_threshold_V)
        lim.check_width(s.set_width_s, "SET pulse width")
        lim.check_width(s.reset_width_s, "RESET pulse width")
        # The read current of the most conductive cell must stay below compliance, else a
        # read would clip and return a wrong conductance.
        i_max = s.g_max_S * abs(s.v_read_V)
        if i_max >= lim.compliance_A:
            raise SafetyLimitError(
                f"a read of g_max_S = {s.g_max_S:g} S at {s.v_read_V:g} V draws {i_max:g} A, at or above the "
                f"compliance limit compliance_A = {lim.compliance_A:g} A; reads would clip")

    def with_range(self, g_min_S: float, g_max_S: float) -> "BenchConfig":
        """This config with the scheme's target range replaced (S)."""
        return replace(self, scheme=self.scheme.for_range(g_min_S, g_max_S))

    def to_dict(self) -> dict[str, Any]:
        """Plain-data form (for JSON summaries)."""
        return {"instrument": {"model": self.model}, "matrix": {"rows": self.rows, "cols": self.cols},
                "limits": asdict(self.limits),
                "scheme": asdict(self.scheme)}


_MAX_CONFIG_BYTES = 1 << 20


def load_bench_config(path: str | Path | None = None) -> BenchConfig:
    """Load a :class:`BenchConfig` from a TOML file (see the module docstring); ``None``
    gives the defaults. Read through :class:`~analogmem.emulator.toml_table.TomlTable`, as
    device cards are: a wrong type, a missing or unknown table or field is a
    :class:`SettingError` naming ``[table].field``."""
    if path is None:
        return BenchConfig()
    p = Path(path)
    try:
        if not p.is_file():
            raise SettingError(f"bench config {p}: not a regular file (missing, a directory or a device)")
        if p.stat().st_size > _MAX_CONFIG_BYTES:
            raise SettingError(f"bench config {p}: {p.stat().st_size} bytes, more than a bench file's "
                               f"{_MAX_CONFIG_BYTES} bytes")
        data = tomllib.loads(p.read_text(encoding="utf-8"))
    except SettingError:
        raise
    except (OSError, UnicodeDecodeError, tomllib.TOMLDecodeError, RecursionError) as exc:
        raise SettingError(f"bench config {p}: cannot read it as TOML: {exc}") from None
    root = TomlTable(str(p), "", data, kind="bench config", error=SettingError)
    instrument, matrix = root.table("instrument", {}), root.table("matrix", {})
    lim, sch = root.table("limits", {}), root.table("scheme", {})
    root.done()
    model = instrument.string("model", "2450")
    rows, cols = matrix.integer("rows", 32, lo=1), matrix.integer("cols", 32, lo=1)
    limits = {f.name: lim.number(f.name, f.default) for f in fields(SafetyLimits) if f.name != "allowed_cells"}
    limits["allowed_cells"] = _allowed_cells(lim)
    scheme = {f.name: (sch.boolean if f.name == "reset_first" else sch.number)(f.name, f.default)
              for f in fields(VoltageScheme)}
    for t in (instrument, matrix, lim, sch):
        t.done()
    try:  # the checks across fields (a pulse-width window, a SET transfer)
        return BenchConfig(rows=rows, cols=cols, limits=SafetyLimits(**limits), scheme=VoltageScheme(**scheme),
                           model=model)
    except SettingError as exc:
        raise SettingError(f"bench config {p}: {exc}") from None


def _allowed_cells(lim: TomlTable) -> tuple[tuple[int, int], ...] | None:
    """``[limits] allowed_cells``: absent (every cell) or a list of ``[start, stop]`` integer pairs."""
    v = lim.get("allowed_cells", None)
    if v is None:
        return None
    if not isinstance(v, list) or not v:
        lim.fail(f"expected a list of [start, stop) address ranges, got {str(v)[:200]}", "allowed_cells")
    for i, r in enumerate(v):
        if not (isinstance(r, list) and len(r) == 2 and all(isinstance(e, int) and not isinstance(e, bool)
                                                            for e in r)):
            lim.fail(f"element {i} must be a [start, stop) pair of integers, got {r!r}", "allowed_cells")
    return tuple((r[0], r[1]) for r in v)
