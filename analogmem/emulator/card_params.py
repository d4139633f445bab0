"""A device card flattened into the numbers of the cell model's formulas.

:func:`card_params` turns a :class:`~analogmem.emulator.cells.DeviceModel` into a
:class:`CardParams`: plain floats, coefficient lists and small float64 arrays, the form in
which the compiled kernels (``analogmem.emulator._kernels.KernelParams``, built from it
once per bench) and the torch backend (:mod:`analogmem.emulator.torch_bench`) evaluate the
model of the card (README, "Device cards"). :func:`pulse_arrays` does the same for a
write-verify call's :class:`~analogmem.emulator.pulse_response.PulseTable`, for the kernels,
the torch backend and the numpy reference alike.

The table sizes the kernels hold (:data:`MAX_COEFFICIENTS`, ...) are checked here, so an
oversized card is refused as a :class:`~analogmem.errors.DeviceCardError` when a bench is
made, whichever backend it runs.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

# the sizes of the kernels' fixed tables (AM_MAXC, AM_MAXT, AM_MAXN, AM_MAXK of ext/am_kernels.h)
from ._kernels import MAX_COEFFICIENTS, MAX_DRIFT_KNOTS, MAX_PULSE_COMPONENTS, MAX_RELAXATION_TIMES
from ._streams import inv_log1m
from .cells import X_FLOOR, DeviceModel
from .chipstate import state_keys
from .pulse_response import PulseTable
from ..errors import DeviceCardError

__all__ = ["CardParams", "PulseArrays", "card_params", "pulse_arrays", "MAX_COEFFICIENTS", "MAX_RELAXATION_TIMES",
           "MAX_DRIFT_KNOTS", "MAX_PULSE_COMPONENTS"]



@dataclass(frozen=True, eq=False)  # arrays inside: identity, not elementwise, equality
class CardParams:
    """A card's model as flat numbers (conductances in S; ``*_uS`` polynomial coefficients as
    on the card, scaled by ``prog_scale`` / ``relax_scale`` to S). Piecewise laws are
    ``(slope, intercept, min, max)`` in ln x below ``ln x_break`` (``*_lxb``; inf: one branch)
    and the cubic ``*_hc`` in x from there on. ``state_keys``: the per-cell arrays the card
    needs (:func:`~analogmem.emulator.chipstate.state_keys`)."""

    g_min: float
    g_max: float
    clip_lo: float
    clip_hi: float
    x_floor: float
    prog_c: tuple[float, ...]
    prog_scale: float
    emp_on: bool
    emp_levels: np.ndarray
    emp_probs: np.ndarray
    emp_q: np.ndarray
    drift_on: bool
    t0: float
    mu: tuple[float, float, float, float]
    sigma_nu: tuple[float, float, float, float]
    mu_lxb: float
    mu_hc: tuple[float, ...]
    sg_lxb: float
    sg_hc: tuple[float, ...]
    nu_table: bool
    nu_x: tuple[float, ...]
    nu_mu: tuple[float, ...]
    nu_sg: tuple[float, ...]
    read_on: bool
    q_coef: float
    q_exp: float
    q_max: float
    q_form: int  # 0: power law, 1: piecewise Q_s(x), 2: log10 read noise (constant K)
    read_log10: bool
    q_piece: tuple[float, float, float, float, float]  # slope, intercept, min, max, ln x_break
    q_hc: tuple[float, ...]
    t_read: float
    t0_read: float
    relax_on: bool
    relax_scale: float
    relax_t: tuple[float, ...]
    relax_c: tuple[tuple[float, ...], ...]
    relax_table: bool
    relax_x: tuple[float, ...]
    relax_add: bool
    relax_m: tuple[tuple[float, ...], ...]
    faults_on: bool
    p_stuck_lo: float
    p_stuck_hi: float
    state_keys: tuple[str, ...]


@dataclass(frozen=True, eq=False)  # arrays inside: identity, not elementwise, equality
class PulseArrays:
    """A pulse-response table as arrays (float64, C-contiguous): per window ``lo``/``hi`` (S),
    the cumulative class weights ``cumw`` and hit probabilities ``p_hit`` (``(windows,
    components)``; past a window's last class ``cumw`` is 2 and ``p_hit`` 1), ``1/ln(1 − p_hit)``
    (``inv_log1mp``, 0 where p = 1), the pulse offsets, the quantile probabilities and the
    verified ln(g/S) quantiles ``q`` (``(windows, probabilities)``)."""

    lo: np.ndarray
    hi: np.ndarray
    cumw: np.ndarray
    p_hit: np.ndarray
    inv_log1mp: np.ndarray
    offset: np.ndarray
    probs: np.ndarray
    q: np.ndarray
    max_pulses: int


def _f64(a: Any) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float64)


def card_params(device: DeviceModel) -> CardParams:
    """Flatten ``device`` (checked against the kernels' table sizes: DeviceCardError)."""
    r, pr, dr, rn, rl = device.range, device.programming, device.drift, device.read_noise, device.relaxation
    if not device.empirical and len(pr.coefficients_uS) > MAX_COEFFICIENTS:
        raise DeviceCardError(f"device card {device.card_path}: [programming].coefficients_uS: at most "
                              f"{MAX_COEFFICIENTS} coefficients are supported")
    if rl.enabled and (len(rl.times_s) > MAX_RELAXATION_TIMES or len(rl.coefficients_uS[0]) > MAX_COEFFICIENTS):
        raise DeviceCardError(f"device card {device.card_path}: [relaxation]: at most "
                              f"{MAX_RELAXATION_TIMES} times and {MAX_COEFFICIENTS} coefficients are supported")
    emp = device.programming if device.empirical else None
    if dr.tabulated and len(dr.x_knots) > MAX_DRIFT_KNOTS:
        raise DeviceCardError(f"device card {device.card_path}: [drift].g_knots_S: at most "
                              f"{MAX_DRIFT_KNOTS} knots are supported")
    mu = dr.mu if dr.enabled and not dr.tabulated else None
    sg = dr.sigma if dr.enabled and not dr.tabulated else None
    q = rn.q if rn.model == "pcm-1/f-piecewise" else None

    def upper(law: Any) -> tuple[float, tuple[float, ...]]:  # ln x_break (inf: one branch) and the cubic
        if law is None or not law.above:
            return math.inf, (0.0,) * 4
        return math.log(law.x_break), tuple(law.above) + (0.0,) * (4 - len(law.above))

    (mu_lxb, mu_hc), (sg_lxb, sg_hc), (q_lxb, q_hc) = upper(mu), upper(sg), upper(q)
    f = device.faults
    return CardParams(
        g_min=r.g_min_S, g_max=r.g_max_S, clip_lo=r.clip_min_S, clip_hi=r.clip_max_S, x_floor=X_FLOOR,
        prog_c=(0.0,) if emp else tuple(pr.coefficients_uS),
        prog_scale=0.0 if emp else 1e-6 * r.g_max_S / pr.g_ref_S,
        emp_on=emp is not None,
        emp_levels=_f64(emp.inputs if emp else [0.0]),
        emp_probs=_f64(emp.probabilities if emp else [0.0, 1.0]),
        emp_q=_f64(emp.log_g_quantiles if emp else [[0.0, 0.0]]),
        drift_on=bool(dr.enabled), t0=dr.t0_s,
        mu=(mu.slope, mu.intercept, mu.min, mu.max) if mu else (0.0, 0.0, 0.0, 0.0),
        sigma_nu=(sg.slope, sg.intercept, sg.min, sg.max) if sg else (0.0, 0.0, 0.0, 0.0),
        mu_lxb=mu_lxb, mu_hc=mu_hc, sg_lxb=sg_lxb, sg_hc=sg_hc,
        nu_table=bool(dr.tabulated), nu_x=tuple(dr.x_knots), nu_mu=tuple(dr.mu_table), nu_sg=tuple(dr.sigma_table),
        read_on=bool(rn.enabled), q_coef=1e-6 * rn.k_uS if rn.model == "log10-1/f" else rn.q_coefficient,
        q_exp=rn.q_exponent, q_max=rn.q_max,
        q_form={"pcm-1/f-piecewise": 1, "log10-1/f": 2}.get(rn.model, 0),
        read_log10=rn.model == "log10-1/f",
        q_piece=(q.slope, q.intercept, q.min, q.max, q_lxb) if q else (0.0, 0.0, 0.0, 0.0, math.inf),
        q_hc=q_hc,
        t_read=rn.t_read_s, t0_read=dr.t0_s if dr.enabled else 0.0,
        relax_on=bool(rl.enabled), relax_scale=1e-6 * r.g_max_S / rl.g_ref_S if rl.enabled else 0.0,
        relax_t=tuple(rl.times_s), relax_c=tuple(tuple(c) for c in rl.coefficients_uS),
        relax_table=bool(rl.enabled and rl.tabulated), relax_x=tuple(rl.x_knots),
        relax_add=bool(rl.additive), relax_m=tuple(tuple(m) for m in rl.mean_uS),
        faults_on=f.p_stuck_low > 0 or f.p_stuck_high > 0, p_stuck_lo=f.p_stuck_low, p_stuck_hi=f.p_stuck_high,
        state_keys=state_keys(device),
    )


def pulse_arrays(table: PulseTable, n_components: int = MAX_PULSE_COMPONENTS) -> PulseArrays:
    """``table`` as arrays of ``n_components`` classes per window (at least its largest
    mixture; DeviceCardError beyond :data:`MAX_PULSE_COMPONENTS` when that is the width)."""
    n = table.n_levels
    widest = max(len(w) for w in table.weights)
    if widest > n_components:
        raise DeviceCardError(f"pulse-response table: a window mixes {widest} classes, at most {n_components} "
                              "are supported")
    cumw, p_hit = np.full((n, n_components), 2.0), np.ones((n, n_components))
    for j in range(n):
        k = len(table.weights[j])
        cumw[j, :k - 1] = np.cumsum(table.weights[j])[:k - 1]  # past the last class: never stop below it
        p_hit[j, :k] = table.p_hit[j]
    return PulseArrays(lo=_f64(table.window_lo_S), hi=_f64(table.window_hi_S), cumw=cumw, p_hit=p_hit,
                       inv_log1mp=inv_log1m(p_hit), offset=_f64(table.offset_pulses),
                       probs=_f64(table.probabilities), q=_f64(table.log_g_quantiles), max_pulses=table.max_pulses)
