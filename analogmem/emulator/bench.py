"""Benches: where cells are programmed and read.

:class:`Bench` is the narrow protocol that both the emulator and (later) real instruments
implement: ``n_cells``, ``program``, ``read``, an emulated or real clock (``time_s``,
``wait``) and ``shutdown``. Code above it never needs to know which one it has.

:class:`EmulatedBench` keeps per-cell state in numpy arrays and runs the compiled
Cython kernels of ``ext/`` (``analogmem.emulator._kernels``); there is no silent fallback to
Python — the numpy reference (:mod:`analogmem.emulator.reference`) is used only when asked for
with ``backend="numpy"``.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any, Protocol, runtime_checkable

import numpy as np

from . import reference
from .._seeding import SeedLike, as_seed_sequence
from ._streams import CHUNK_CELLS, chunk_bit_generators
from .cells import X_FLOOR, DeviceModel, load_device
from .pulse_response import MAX_WINDOWS, PulseTable
from ..errors import AddressError, DeviceCardError, KernelUnavailableError, StorageError, TargetRangeError

try:
    from . import _kernels
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    raise KernelUnavailableError(
        "analogmem's compiled kernels (analogmem.emulator._kernels) are not built: install the package "
        "with `pip install .` or `pip install -e .` (needs a C compiler)") from exc

__all__ = ["Bench", "EmulatedBench", "ProgramReport", "WriteVerify", "kernels_info", "default_threads",
           "check_addresses", "as_target_array"]

_BACKENDS = ("cython", "numpy")
#: Per-cell state arrays, in the order the kernels take them.
_STATE_KEYS = ("g_eff", "g_prog", "nu", "z_relax", "q_read")


def default_threads() -> int:
    """Threads the kernels use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def kernels_info() -> dict[str, Any]:
    """Where the compiled kernels come from and how they were built."""
    return {"module": _kernels.__name__, "path": _kernels.__file__, "openmp": bool(_kernels.OPENMP),
            "max_threads": int(_kernels.max_threads()), "chunk_cells": CHUNK_CELLS}


@dataclass(frozen=True)
class WriteVerify:
    """Program-and-verify settings: pulse, read, compare with the cell's window; repeat
    until the read lies inside the window or ``max_pulses`` pulses were spent.

    ``windows = "tolerance"`` (default): the window of a cell with target ``g_T`` (S) is
    ``[g_T − h, g_T + h]`` with ``h = tolerance_S + tolerance_rel·|g_T|``, and each pulse
    re-draws the cell from the card's write channel.

    ``windows = "card"``: the card's calibrated pulse-response model (``[write_verify]``,
    :mod:`~analogmem.emulator.pulse_response`) draws the pulses each cell needs and its
    verified value. The windows are ``levels`` (a sequence of (lo_S, hi_S)), else target ±
    tolerance when a tolerance is given, else the card's own levels; every target must lie
    in one. A ``shared-geometric-mixture`` card emulates any window inside its range, with
    the start state (``prior_programs``: programs of the cell into the same window directly
    before this one), the pulse scheme (``scheme``, ``step_V``) and the run
    (``run_effect``, in standard deviations of the run-to-run effect; 0 the median run);
    a ``geometric-mixture`` card only its fitted windows. ``max_pulses=None`` takes the
    scheme's budget. Build it with :meth:`card`.
    """

    max_pulses: int | None = 20
    tolerance_S: float = 0.0
    tolerance_rel: float = 0.05
    windows: str = "tolerance"
    levels: tuple[tuple[float, float], ...] | None = None
    prior_programs: int = 0
    scheme: str | None = None
    step_V: float | None = None
    run_effect: float = 0.0

    @classmethod
    def card(cls, max_pulses: int | None = None, windows: Any = None, tolerance_S: float = 0.0,
             tolerance_rel: float = 0.0, prior_programs: int = 0, scheme: str | None = None,
             step_V: float | None = None, run_effect: float = 0.0) -> "WriteVerify":
        """Verify with the card's pulse-response model: in ``windows`` (sequence of
        (lo_S, hi_S)), in target ± (``tolerance_S`` + ``tolerance_rel``·target), or (neither
        given) in the card's levels."""
        levels = None if windows is None else tuple((float(a), float(b)) for a, b in windows)
        return cls(max_pulses=max_pulses, tolerance_S=tolerance_S, tolerance_rel=tolerance_rel, windows="card",
                   levels=levels, prior_programs=prior_programs, scheme=scheme, step_V=step_V,
                   run_effect=run_effect)

    def __post_init__(self) -> None:
        if self.windows not in ("tolerance", "card"):
            raise ValueError(f"WriteVerify.windows must be 'tolerance' or 'card', got {self.windows!r}")
        if not (self.max_pulses is None and self.windows == "card") and (
                isinstance(self.max_pulses, bool) or not isinstance(self.max_pulses, (int, np.integer))
                or self.max_pulses < 1):
            raise ValueError(f"WriteVerify.max_pulses must be a positive integer, got {self.max_pulses!r}")
        for name in ("tolerance_S", "tolerance_rel", "run_effect"):
            v = getattr(self, name)
            if not np.isfinite(v) or (v < 0 and name != "run_effect"):
                raise ValueError(f"WriteVerify.{name} must be finite{' and >= 0' if name != 'run_effect' else ''}, "
                                 f"got {v!r}")
        if self.windows == "tolerance" and self.tolerance_S == 0 and self.tolerance_rel == 0:
            raise ValueError("WriteVerify needs a window: tolerance_S or tolerance_rel must be > 0")
        if self.levels is not None and (self.tolerance_S or self.tolerance_rel):
            raise ValueError("WriteVerify.card: give windows or a tolerance, not both")
        if (isinstance(self.prior_programs, bool) or not isinstance(self.prior_programs, (int, np.integer))
                or self.prior_programs < 0):
            raise ValueError(f"WriteVerify.prior_programs must be a non-negative integer, got {self.prior_programs!r}")

    def pulse_table(self, device: DeviceModel, g_target_S: np.ndarray) -> PulseTable:
        """``windows = "card"``: the card model's table for these targets (S, shape (n,)).

        Raises :class:`~analogmem.errors.DeviceCardError` for a card without a pulse-response
        model and :class:`~analogmem.errors.TargetRangeError` for a target in none of the
        windows, a window outside the card's range, or more than ``MAX_WINDOWS`` windows."""
        pr = device.write_verify
        if not pr.enabled:
            raise DeviceCardError(f"device {device.name!r} has no [write_verify] pulse-response "
                                  "model: use WriteVerify(tolerance_rel=...) windows instead")
        g = np.asarray(g_target_S, dtype=np.float64)
        settings = {"prior_programs": int(self.prior_programs), "scheme": self.scheme, "step_V": self.step_V,
                    "run_effect": float(self.run_effect), "max_pulses": self.max_pulses}
        if self.tolerance_S or self.tolerance_rel:
            targets = np.unique(g)
            if targets.size > MAX_WINDOWS:
                raise TargetRangeError(f"{targets.size} distinct targets: target + tolerance verify takes at most "
                                       f"{MAX_WINDOWS} (give windows=... to share windows between targets)")
            lo, hi = self.window(targets)
            table = pr.table(list(zip(np.maximum(lo, 0.0), hi)), lookup=list(zip(targets, targets)), **settings)
        else:
            table = pr.table(self.levels, **settings)
        level = table.level_of(g)
        if np.any(level < 0):
            i = int(np.argmax(level < 0))
            where = "given" if self.levels is not None else "card's"
            raise TargetRangeError(
                f"targets[{i}] = {g[i]:g} {device.input_unit} lies in none of the {where} {table.n_levels} verify "
                "windows (see device.write_verify.window_lo_S / window_hi_S, or pass windows=...)")
        return table

    def pulse_budget(self, device: DeviceModel) -> int:
        """The pulse budget on ``device`` (the card's default when ``max_pulses`` is None)."""
        return int(device.write_verify.max_pulses if self.max_pulses is None else self.max_pulses)

    def window(self, g_target_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The verify window ``(lo, hi)`` (S) of each target, each shape like ``g_target_S``."""
        g = np.asarray(g_target_S, dtype=np.float64)
        h = self.tolerance_S + self.tolerance_rel * np.abs(g)
        return g - h, g + h


@dataclass(frozen=True)
class ProgramReport:
    """What a ``program`` call did.

    Attributes:
        n_cells: number of cells programmed.
        time_s: bench time (s) at which they were programmed.
        stuck: per programmed cell, 0 healthy, 1 stuck at g_min, 2 stuck at g_max; shape (n_cells,).
        addresses: the cells programmed, shape (n_cells,); None means every cell of the bench.
        pulses: programming pulses spent per cell, shape (n_cells,); None means one pulse
            per cell (a single-shot write without verify).
        success: with write-verify, whether each cell ended inside its window, shape
            (n_cells,); None for a single-shot write.
    """

    n_cells: int
    time_s: float
    stuck: np.ndarray
    addresses: np.ndarray | None = None
    pulses: np.ndarray | None = None
    success: np.ndarray | None = None

    @property
    def n_stuck(self) -> int:
        """Programmed cells that are stuck (their target was not reached)."""
        return int(np.count_nonzero(self.stuck))


@runtime_checkable
class Bench(Protocol):
    """The protocol every bench implements (emulated or real).

    Targets are in the device card's input domain (conductance in S for the published
    cards); reads return conductance in S; times are in seconds.
    """

    n_cells: int

    def program(self, targets: np.ndarray, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program ``targets`` into the cells at ``addresses`` (all cells when None),
        single-shot or with program-and-verify."""
        ...

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S) of ``addresses`` (all cells when None)."""
        ...

    @property
    def time_s(self) -> float:
        """The bench clock (s)."""
        ...

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the bench clock."""
        ...

    def shutdown(self) -> None:
        """Bring the bench to a safe idle state."""
        ...


def _kernel_params(device: DeviceModel) -> dict[str, Any]:
    """Flatten a device card into the kernels' parameter dict (checked against the
    kernels' fixed table sizes)."""
    r, pr, dr, rn, rl = device.range, device.programming, device.drift, device.read_noise, device.relaxation
    if not device.empirical and len(pr.coefficients_uS) > _kernels.MAX_COEFFICIENTS:
        raise DeviceCardError(f"device card {device.card_path}: [programming].coefficients_uS: at most "
                              f"{_kernels.MAX_COEFFICIENTS} coefficients are supported")
    if rl.enabled and (len(rl.times_s) > _kernels.MAX_RELAXATION_TIMES
                       or len(rl.coefficients_uS[0]) > _kernels.MAX_COEFFICIENTS):
        raise DeviceCardError(f"device card {device.card_path}: [relaxation]: at most "
                              f"{_kernels.MAX_RELAXATION_TIMES} times and {_kernels.MAX_COEFFICIENTS} "
                              "coefficients are supported")
    emp = device.programming if device.empirical else None
    mu = dr.mu if dr.enabled else None
    sg = dr.sigma if dr.enabled else None
    return {
        "g_min": r.g_min_S, "g_max": r.g_max_S, "clip_lo": r.clip_min_S, "clip_hi": r.clip_max_S,
        "x_floor": X_FLOOR,
        "prog_c": [0.0] if emp else list(pr.coefficients_uS),
        "prog_scale": 0.0 if emp else 1e-6 * r.g_max_S / pr.g_ref_S,
        "emp_on": int(emp is not None),
        "emp_levels": np.ascontiguousarray(emp.inputs if emp else [0.0], dtype=np.float64),
        "emp_probs": np.ascontiguousarray(emp.probabilities if emp else [0.0, 1.0], dtype=np.float64),
        "emp_q": np.ascontiguousarray(emp.log_g_quantiles if emp else [[0.0, 0.0]], dtype=np.float64),
        "drift_on": int(dr.enabled), "t0": dr.t0_s,
        "mu": (mu.slope, mu.intercept, mu.min, mu.max) if mu else (0.0, 0.0, 0.0, 0.0),
        "sigma_nu": (sg.slope, sg.intercept, sg.min, sg.max) if sg else (0.0, 0.0, 0.0, 0.0),
        "read_on": int(rn.enabled), "q_coef": rn.q_coefficient, "q_exp": rn.q_exponent, "q_max": rn.q_max,
        "t_read": rn.t_read_s, "t0_read": dr.t0_s if dr.enabled else 0.0,
        "relax_on": int(rl.enabled), "relax_scale": 1e-6 * r.g_max_S / rl.g_ref_S if rl.enabled else 0.0,
        "relax_t": list(rl.times_s), "relax_c": [list(c) for c in rl.coefficients_uS],
        "relax_table": int(rl.enabled and rl.tabulated), "relax_x": list(rl.x_knots),
        "pr_on": 0,  # a write-verify program call adds its pulse-response table (_pulse_table_params)
    }


def _pulse_table_params(table: PulseTable | None) -> dict[str, Any]:
    """The kernels' arrays for a pulse-response table (``pr_on = 0`` without one)."""
    if table is None:
        return {"pr_on": 0}
    k_max = _kernels.MAX_PULSE_COMPONENTS
    n = table.n_levels
    cumw, p_hit = np.ones((n, k_max)), np.ones((n, k_max))
    for j in range(n):
        k = len(table.weights[j])
        cumw[j, :k] = np.cumsum(table.weights[j])
        cumw[j, k - 1:] = 2.0  # past the last component: never stop below it
        p_hit[j, :k] = table.p_hit[j]
    f64 = lambda a: np.ascontiguousarray(a, dtype=np.float64)  # noqa: E731
    return {"pr_on": 1, "pr_lo": f64(table.window_lo_S), "pr_hi": f64(table.window_hi_S), "pr_cumw": cumw,
            "pr_p": p_hit, "pr_off": f64(table.offset_pulses), "pr_probs": f64(table.probabilities),
            "pr_q": f64(table.log_g_quantiles)}


def check_addresses(addresses: Any, n_cells: int) -> np.ndarray | None:
    """Validate cell addresses for a bench of ``n_cells`` cells: None (every cell) or a 1-D
    array of distinct integers in ``[0, n_cells)``, returned as ``intp``. Raises
    :class:`~analogmem.errors.AddressError` naming the first offending entry."""
    if addresses is None:
        return None
    a = np.asarray(addresses)
    if a.ndim != 1 or (a.size and not np.issubdtype(a.dtype, np.integer)):
        raise AddressError(f"addresses must be a 1-D array of integers, got shape {a.shape} dtype {a.dtype}")
    a = a.astype(np.intp)
    bad = (a < 0) | (a >= n_cells)
    if np.any(bad):
        i = int(np.argmax(bad))
        raise AddressError(f"addresses[{i}] = {a[i]} is outside [0, {n_cells - 1}]")
    if a.size > 1 and not np.all(a[1:] > a[:-1]):  # increasing addresses cannot repeat
        # a mask over the array, not np.unique: numpy's hash-based unique takes ~20 s on 2e7
        seen = np.zeros(n_cells, dtype=bool)
        seen[a] = True
        if np.count_nonzero(seen) != a.size:
            raise AddressError("addresses contain duplicates; program each cell once per call")
    return a


def as_target_array(targets: Any, n_expected: int, unit: str = "S") -> np.ndarray:
    """``targets`` as a contiguous float64 array of shape (n_expected,); raises
    :class:`~analogmem.errors.TargetRangeError` for non-numbers or a wrong shape (range
    checks are each bench's own)."""
    try:
        g = np.ascontiguousarray(targets, dtype=np.float64)
    except (TypeError, ValueError):
        raise TargetRangeError(f"targets must be numbers ({unit}), got {type(targets).__name__}") from None
    if g.ndim != 1 or g.shape[0] != n_expected:
        raise TargetRangeError(f"targets must be a 1-D array of {n_expected} values ({unit}), got shape {g.shape}")
    return g


def _check_seconds(name: str, value: float) -> float:
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise TargetRangeError(f"{name} must be a number of seconds, got {value!r}") from None
    if not np.isfinite(v) or v < 0:
        raise TargetRangeError(f"{name} must be finite and >= 0 s, got {value!r}")
    return v


class EmulatedBench:
    """An emulated array of ``n_cells`` cells of one device technology.

    Args:
        device: a :class:`~analogmem.emulator.cells.DeviceModel`, a bundled card name or a card path.
        n_cells: number of cells in the array.
        seed: randomness (None, int, SeedSequence, Generator); the same seed and the same
            sequence of calls give bit-identical results, whatever ``n_threads``.
        n_threads: kernel threads (default: the cores this process may use).
        backend: ``"cython"`` (compiled kernels, the default) or ``"numpy"`` (the plain
            reference implementation, same results; slow, for checking).

    Cells start unprogrammed at ``g_min_S``. Stuck-at faults (the card's
    ``p_stuck_low``/``p_stuck_high``) are drawn once, when the bench is made, and last for
    the array's life. The clock starts at 0 s; ``program`` stamps cells with the current
    time; ``read(t_s)`` reads ``t_s`` seconds after the most recent ``program`` call (and
    moves the clock there if that is later); ``wait`` advances the clock.
    """

    def __init__(self, device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *,
                 n_threads: int | None = None, backend: str = "cython"):
        self.device = load_device(device)
        if isinstance(n_cells, bool) or not isinstance(n_cells, (int, np.integer)) or n_cells < 1:
            raise ValueError(f"n_cells must be a positive integer, got {n_cells!r}")
        if backend not in _BACKENDS:
            raise ValueError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if n_threads is not None and (not isinstance(n_threads, (int, np.integer)) or n_threads < 1):
            raise ValueError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        self.n_cells = int(n_cells)
        self.backend = backend
        self.n_threads = int(n_threads) if n_threads is not None else default_threads()
        self._seed = as_seed_sequence(seed)
        self._params = _kernel_params(self.device)
        self._time_s = 0.0
        self._last_program_s = 0.0
        n, r = self.n_cells, self.device.range
        self.stuck = self._draw_stuck(self._seed.spawn(1)[0])
        g0 = np.where(self.stuck == 2, r.g_max_S, r.g_min_S).astype(np.float64)
        # g_eff holds each cell's effective target in the card's input domain (S, V or
        # level); unprogrammed cells read g_min_S.
        self._state = {"g_eff": g0.copy() if not self.device.empirical else np.full(n, self.device.input_range[0]),
                       "g_prog": g0.copy(), "nu": np.zeros(n), "z_relax": np.zeros(n),
                       "q_read": self.device.read_noise_q(g0)}
        # Programming times: one scalar while every cell shares it, else one per cell.
        self._uniform_t_prog: float | None = 0.0
        self._t_prog: np.ndarray | None = None

    # ------------------------------------------------------------------ helpers
    def _draw_stuck(self, seed: np.random.SeedSequence) -> np.ndarray:
        f = self.device.faults
        stuck = np.zeros(self.n_cells, dtype=np.int8)
        if f.p_stuck_low > 0 or f.p_stuck_high > 0:
            u = np.random.Generator(np.random.PCG64(seed)).random(self.n_cells)
            stuck[u < f.p_stuck_low] = 1
            stuck[(u >= f.p_stuck_low) & (u < f.p_stuck_low + f.p_stuck_high)] = 2
        return stuck

    def _addresses(self, addresses: Any) -> np.ndarray | None:
        return check_addresses(addresses, self.n_cells)

    def _check_targets(self, targets: Any, n_expected: int) -> np.ndarray:
        g = as_target_array(targets, n_expected, self.device.input_unit or "level")
        if g.size == 0:
            return g
        lo_ok, hi_ok = self.device.input_range
        lo, hi = g.min(), g.max()  # one pass each; NaN propagates into both
        if not (np.isfinite(lo) and np.isfinite(hi)):
            i = int(np.argmin(np.isfinite(g)))
            raise TargetRangeError(f"targets[{i}] = {g[i]} is not finite; nothing was programmed")
        if lo < lo_ok or hi > hi_ok:
            bad = (g < lo_ok) | (g > hi_ok)
            i = int(np.argmax(bad))
            unit = self.device.input_unit
            if unit == "S":
                shown = (f"{g[i]:.6g} S ({g[i] * 1e6:.6g} µS) is outside the input range "
                         f"[{lo_ok * 1e6:g}, {hi_ok * 1e6:g}] µS")
            else:
                shown = f"{g[i]:.6g} {unit} is outside the input range [{lo_ok:g}, {hi_ok:g}] {unit}".replace(" ]", "]")
            raise TargetRangeError(f"targets[{i}] = {shown} of device {self.device.name!r}; "
                                   f"{int(bad.sum())} target(s) out of range, nothing was programmed")
        return g

    def _op_seed(self) -> np.random.SeedSequence:
        """A fresh child seed for one operation (program or read)."""
        return self._seed.spawn(1)[0]

    # ------------------------------------------------------------------ protocol
    @property
    def time_s(self) -> float:
        """The emulated clock (s)."""
        return self._time_s

    def wait(self, seconds: float) -> None:
        """Advance the emulated clock by ``seconds`` (≥ 0; may be years)."""
        self._time_s += _check_seconds("seconds", seconds)

    def bake(self, seconds: float, temperature_K: float) -> float:
        """Emulate ``seconds`` at ``temperature_K``: with the card's Arrhenius retention
        model the clock advances by the equivalent time at the card's reference
        temperature. Returns that equivalent time (s). Raises
        :class:`~analogmem.errors.DeviceCardError` if the card has no retention model."""
        rt = self.device.retention
        if not rt.enabled:
            raise DeviceCardError(f"device {self.device.name!r} has no [retention] model: it cannot emulate "
                                  "a bake (fit one with analogmem.calibrate.fit_arrhenius)")
        t = _check_seconds("seconds", seconds)
        temp = float(temperature_K)
        if not np.isfinite(temp) or temp <= 0:
            raise TargetRangeError(f"temperature_K must be a positive temperature in kelvin, got {temperature_K!r}")
        equivalent = t * float(rt.acceleration_factor(temp))
        self._time_s += equivalent
        return equivalent

    def program(self, targets: np.ndarray, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program cells to ``targets`` (in the card's input domain: S for the published cards).

        Args:
            targets: shape (n_cells,) when ``addresses`` is None, else (len(addresses),).
            addresses: distinct cell indices in ``[0, n_cells)``; None means every cell.
            verify: program-and-verify settings; None writes each cell with one pulse. With
                verify, each pulse re-draws the cell from the card's write channel and the
                cell is read right after it (with the card's read noise) until the read lies
                in the window or ``verify.max_pulses`` pulses were spent; the report gives
                pulses and success per cell.

        Raises :class:`~analogmem.errors.TargetRangeError` / :class:`~analogmem.errors.AddressError`
        before touching any cell if an input is invalid; the bench is then unchanged.
        """
        addr = self._addresses(addresses)
        g_t = self._check_targets(targets, self.n_cells if addr is None else addr.shape[0])
        table = None
        if verify is not None:
            if not isinstance(verify, WriteVerify):
                raise TypeError(f"verify must be a WriteVerify, got {type(verify).__name__}")
            if verify.windows == "card":
                table = verify.pulse_table(self.device, g_t)
            elif self.device.input != "conductance":
                raise DeviceCardError(
                    f"device {self.device.name!r} takes {self.device.input} targets: write-verify needs a "
                    "conductance window per cell, which only conductance-input cards define")
        stuck = self.stuck if addr is None else self.stuck[addr]
        now = self._time_s
        if addr is None:
            # Inputs are valid, so the kernel cannot fail now: it may write the state in place.
            result = self._run_program(g_t, stuck, self._op_seed(), verify, out=self._state, table=table)
        else:
            result = self._run_program(g_t, stuck, self._op_seed(), verify, table=table)
        outcome = {k: result.pop(k) for k in ("pulses", "success") if k in result}
        if addr is None:
            self._state = result
            self._uniform_t_prog, self._t_prog = now, None
        else:
            for key, values in result.items():
                self._state[key][addr] = values
            if self._t_prog is None:
                self._t_prog = np.full(self.n_cells, self._uniform_t_prog)
            self._t_prog[addr] = now
            self._uniform_t_prog = None
        self._last_program_s = now
        return ProgramReport(n_cells=g_t.shape[0], time_s=now, stuck=stuck.copy(), addresses=addr,
                             pulses=outcome.get("pulses"),
                             success=outcome["success"].astype(bool) if "success" in outcome else None)

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S).

        Args:
            t_s: seconds after the most recent ``program`` call at which to read (the clock
                moves there if that is later than now); None reads at the current clock.
            addresses: cell indices to read; None reads every cell.

        Returns:
            float64 array, shape (n_cells,) or (len(addresses),). Drift and relaxation of a
            cell are consistent across reads; read noise is fresh at every read.
        """
        addr = self._addresses(addresses)
        when = self._time_s if t_s is None else self._last_program_s + _check_seconds("t_s", t_s)
        self._time_s = max(self._time_s, when)
        if self._t_prog is None:
            age = np.array([when - self._uniform_t_prog])
        else:
            age = when - (self._t_prog if addr is None else self._t_prog[addr])
        state = self._state if addr is None else {k: v[addr] for k, v in self._state.items()}
        return self._run_read(state, np.maximum(age, 0.0), self._op_seed())

    def shutdown(self) -> None:
        """Nothing to make safe on an emulator; present for the :class:`Bench` protocol."""

    def __enter__(self) -> "EmulatedBench":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()

    # ------------------------------------------------------------------ state access
    def cell_state(self) -> dict[str, np.ndarray]:
        """Copies of the per-cell state: ``g_eff`` (S, effective target), ``g_prog`` (S,
        programmed conductance), ``nu`` (drift exponent), ``z_relax`` (relaxation latent),
        ``q_read`` (read-noise factor Q_s), ``t_prog_s`` (programming time, s), ``stuck``
        (0/1/2). Each shape (n_cells,)."""
        out = {k: v.copy() for k, v in self._state.items()}
        t_prog = self._t_prog if self._t_prog is not None else np.full(self.n_cells, self._uniform_t_prog)
        out.update(t_prog_s=t_prog.copy(), stuck=self.stuck.copy())
        return out

    @property
    def seed_sequence(self) -> np.random.SeedSequence:
        """The bench's root :class:`~numpy.random.SeedSequence`; each operation spawns one
        child, so ``(entropy, spawn_key, n_children_spawned)`` pin its random state."""
        return self._seed

    def restore_state(self, cell_state: dict[str, np.ndarray], *, time_s: float,
                      seed: np.random.SeedSequence) -> None:
        """Restore a chip saved with :meth:`cell_state` (all keys, each shape (n_cells,)),
        with its clock ``time_s`` and random state ``seed`` (a SeedSequence whose
        ``n_children_spawned`` continues where the saved bench stopped). Raises
        :class:`~analogmem.errors.StorageError` for missing keys or wrong shapes; the
        bench is then unchanged."""
        keys = _STATE_KEYS + ("t_prog_s", "stuck")
        missing = [k for k in keys if k not in cell_state]
        if missing:
            raise StorageError(f"cell state lacks {missing}")
        for k in keys:
            if np.shape(cell_state[k]) != (self.n_cells,):
                raise StorageError(f"cell state {k!r} has shape {np.shape(cell_state[k])}, expected ({self.n_cells},)")
        if not isinstance(seed, np.random.SeedSequence):
            raise StorageError(f"seed must be a numpy SeedSequence, got {type(seed).__name__}")
        self._state = {k: np.array(cell_state[k], dtype=np.float64) for k in _STATE_KEYS}
        self.stuck = np.array(cell_state["stuck"], dtype=np.int8)
        self._t_prog = np.array(cell_state["t_prog_s"], dtype=np.float64)
        self._uniform_t_prog = None
        self._last_program_s = float(self._t_prog.max())
        self._time_s = _check_seconds("time_s", time_s)
        self._seed = seed

    # ------------------------------------------------------------------ backends
    def _run_program(self, g_t: np.ndarray, stuck: np.ndarray, seed: np.random.SeedSequence,
                     verify: WriteVerify | None, out: dict[str, np.ndarray] | None = None,
                     table: PulseTable | None = None) -> dict[str, np.ndarray]:
        """State arrays of the programmed cells (written into ``out`` when given), plus
        ``pulses`` and ``success`` with verify (``table``: the pulse-response table of a
        ``WriteVerify.card`` call)."""
        if self.backend == "numpy":
            return reference.program_reference(self.device, g_t, stuck, seed, verify, table=table)
        n = g_t.shape[0]
        # zeros: the kernel does not write the arrays of components the card lacks
        out = {k: np.zeros(n) for k in _STATE_KEYS} if out is None else dict(out)
        gens = chunk_bit_generators(seed, n)
        extra: dict[str, Any] = {}
        if verify is not None:
            out["pulses"], out["success"] = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int8)
            budget = table.max_pulses if table is not None else verify.pulse_budget(self.device)
            extra = {"verify_max_pulses": budget, "tol_abs": verify.tolerance_S,
                     "tol_rel": verify.tolerance_rel, "pulses": out["pulses"], "success": out["success"],
                     "verify_card": int(table is not None)}
        params = self._params if table is None else {**self._params, **_pulse_table_params(table)}
        _kernels.program(params, g_t, np.ascontiguousarray(stuck), *(out[k] for k in _STATE_KEYS),
                         [g.capsule for g in gens], CHUNK_CELLS, self.n_threads, **extra)
        return out

    def _run_read(self, state: dict[str, np.ndarray], age: np.ndarray, seed: np.random.SeedSequence) -> np.ndarray:
        if self.backend == "numpy":
            return reference.read_reference(self.device, state, age[0] if age.shape[0] == 1 else age, seed)
        n = state["g_prog"].shape[0]
        out = np.empty(n)
        gens = chunk_bit_generators(seed, n)
        _kernels.read(self._params, *(state[k] for k in _STATE_KEYS), np.ascontiguousarray(age, dtype=np.float64),
                      out, [g.capsule for g in gens], CHUNK_CELLS, self.n_threads)
        return out

    def __repr__(self) -> str:
        return (f"EmulatedBench(device={self.device.name!r}, n_cells={self.n_cells}, backend={self.backend!r}, "
                f"n_threads={self.n_threads}, time_s={self._time_s:g})")

