"""Plain-numpy reference implementation of the cell model (the test oracle).

It computes what the compiled kernels compute — same model, same random stream (the
counter-based Philox draws of :mod:`analogmem.emulator._streams`: draw ``d`` of the cell at
op-local position ``i``), same use of each draw — from the closed-form statistics of
:class:`~analogmem.emulator.cells.DeviceModel`, one vectorised numpy expression per step
(program-and-verify: one step per pulse over the cells still trying). Its elementary
functions are numpy's, the kernels' are their own (``ext/am_kernels.h``), so the two agree
to about 1e-15 relative, not bit for bit; tests hold them to 1e-12. Tests compare the
kernels with it; the benchmark measures how much faster the kernels are. It is not used by
:class:`~analogmem.emulator.bench.EmulatedBench` unless asked for (``backend="numpy"``).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ._streams import draw_bits, geometric, normal_draws, read_normals, uniform
from .card_params import pulse_arrays
from .cells import DeviceModel
from .chipstate import state_keys

__all__ = ["program_reference", "read_reference", "draws_per_cell"]


def draws_per_cell(device: DeviceModel) -> int:
    """Random numbers drawn per cell by a single-shot program: the write (a uniform for an
    empirical channel, else a normal), then the drift exponent (if the card has drift),
    then the relaxation latent (if it has relaxation)."""
    return 1 + int(device.drift.enabled) + int(device.relaxation.enabled)


def _uniform_index(d):
    """The index a uniform takes at draw position ``d`` and the next position: a pair of
    its own (``d`` rounded up to even, then past the pair), because the normal of index
    ``d`` is a component of the Box–Muller pair of ``d & ~1`` and ``d | 1`` and must not
    share a word with a uniform (as ``am_uniform_index`` in the kernels)."""
    i = (np.asarray(d, dtype=np.int64) + 1) & ~np.int64(1)
    return i, i + 2


def _write(device: DeviceModel, g_t: np.ndarray, key: tuple[int, int, int], cells: np.ndarray,
           d) -> tuple[np.ndarray, np.ndarray]:
    """One write pulse from draw position ``d`` of ``cells``: the written conductance (S),
    clipped, and the next draw position."""
    r = device.range
    d = np.asarray(d, dtype=np.int64)
    if device.empirical:
        i, d_next = _uniform_index(d)
        written = np.exp(device.programming.quantile_log_S(g_t, uniform(draw_bits(key, cells, i))))
    else:
        written = g_t + device.sigma_program_S(g_t) * normal_draws(key, cells, d)
        d_next = d + 1
    return np.clip(written, r.clip_min_S, r.clip_max_S), np.broadcast_to(d_next, g_t.shape).copy()


def program_reference(device: DeviceModel, g_target_S: np.ndarray, stuck: np.ndarray | None,
                      key: tuple[int, int, int], verify: Any = None, first: int = 0,
                      table: Any = None) -> dict[str, np.ndarray]:
    """Program cells with targets ``g_target_S`` (S, shape (n,)) at op-local positions
    ``first .. first + n - 1`` of the operation keyed by ``key``; ``stuck`` (int8, (n,) or
    None for none): 0 healthy, 1 stuck at g_min, 2 stuck at g_max. ``verify``: a
    ``WriteVerify`` (None: a single-shot write); ``table``: its pulse-response table (card
    windows; computed from ``verify`` when None).

    Returns the per-cell state arrays the card uses (:func:`~analogmem.emulator.chipstate.state_keys`:
    ``g_eff`` effective target, ``g_prog`` (S), ``nu``, ``z_relax``, ``q_read`` Q_s of
    ``g_eff``), float64, each shape (n,); with verify also ``pulses`` and ``success``.
    """
    g_t = np.asarray(g_target_S, dtype=np.float64)
    n = g_t.shape[0]
    stuck = np.zeros(n, dtype=np.int8) if stuck is None else np.asarray(stuck)
    cells = np.arange(first, first + n, dtype=np.uint64)
    r = device.range
    low, high = stuck == 1, stuck == 2
    g_eff = np.where(low, r.g_min_S, np.where(high, r.g_max_S, g_t))
    q = device.read_noise_q(g_eff)
    out: dict[str, np.ndarray] = {}
    if verify is None:
        g_prog, d = _write(device, g_t, key, cells, 0)
    else:
        g_prog, d, out["pulses"], out["success"] = _verify(device, g_t, stuck, q, key, cells, verify, table)
    nu = np.zeros(n)
    if device.drift.enabled:
        z = normal_draws(key, cells, d)
        nu = np.abs(device.drift_mu(g_t) + device.drift_sigma(g_t) * z)
        d = d + 1
    z_relax = normal_draws(key, cells, d) if device.relaxation.enabled else np.zeros(n)
    g_prog = np.where(low, r.g_min_S, np.where(high, r.g_max_S, g_prog))
    nu[low | high] = 0.0
    z_relax[low | high] = 0.0
    full = {"g_eff": g_eff, "g_prog": g_prog, "nu": nu, "z_relax": z_relax, "q_read": q}
    out.update({k: full[k] for k in state_keys(device)})
    return out


def _verify(device: DeviceModel, g_t: np.ndarray, stuck: np.ndarray, q: np.ndarray, key: tuple[int, int, int],
            cells: np.ndarray, verify: Any, table: Any = None) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Program-and-verify: the written conductance, the next draw index, pulses and success
    of each cell (``table``: the pulse-response table of card windows)."""
    n = g_t.shape[0]
    r = device.range
    if verify.windows == "card":
        # class (uniform, index 0), pulses needed (geometric, 2), then the verified value
        # (uniform, 4) or, on failure, a single-shot write from position 4
        pr = verify.pulse_table(device, g_t) if table is None else table
        arr = pulse_arrays(pr)  # the kernels' arrays of the table
        budget = arr.max_pulses
        level = pr.level_of(g_t)
        u = uniform(draw_bits(key, cells, 0))  # uniforms at 0, 2, 4: a Box-Muller pair each
        comp = np.sum(u[:, None] >= arr.cumw[level], axis=1)
        inv = arr.inv_log1mp[level, comp]
        need = arr.offset[level].astype(np.int64) + geometric(draw_bits(key, cells, 2), inv) - 1
        ok = need <= budget
        u3 = uniform(draw_bits(key, cells, 4))
        lq = np.array([np.interp(u3[i], arr.probs, arr.q[level[i]]) for i in range(n)])
        verified = np.clip(np.exp(lq), r.clip_min_S, r.clip_max_S)
        failed, d_failed = _write(device, g_t, key, cells, 4)
        v = np.where(ok, verified, failed)
        success = ok & (stuck == 0)
        pulses = np.where(success, need, budget).astype(np.int32)
        return v, np.where(ok, 6, d_failed), pulses, success.astype(np.int8)
    budget = verify.pulse_budget(device)
    lo, hi = verify.window(g_t)
    f0 = float(device.read_noise_time_factor(0.0)) if device.read_noise.enabled else 0.0
    stuck_value = np.where(stuck == 1, r.g_min_S, r.g_max_S)
    v = np.zeros(n)
    d = np.zeros(n, dtype=np.int64)
    pulses = np.zeros(n, dtype=np.int32)
    ok = np.zeros(n, dtype=bool)
    active = np.arange(n)
    for _ in range(budget):  # per pulse: a write draw, then (with read noise) a read draw
        w, d[active] = _write(device, g_t[active], key, cells[active], d[active])
        v[active] = w
        pulses[active] += 1
        read = np.where(stuck[active] == 0, w, stuck_value[active])
        if device.read_noise.enabled:
            z = normal_draws(key, cells[active], d[active])
            read = read + device.read_noise_scale(read) * q[active] * f0 * z
            d[active] += 1
        hit = (lo[active] <= read) & (read <= hi[active])
        ok[active] = hit
        active = active[~hit]
        if active.size == 0:
            break
    return v, d, pulses, ok.astype(np.int8)


def read_reference(device: DeviceModel, state: dict[str, np.ndarray], age_s: np.ndarray | float,
                   key: tuple[int, int, int], first: int = 0) -> np.ndarray:
    """Read the cells of ``state`` (the card's arrays, as :func:`program_reference` returns
    them; float64 or float32) ``age_s`` seconds after programming (scalar or shape (n,)),
    cells at op-local positions ``first ..`` of the read keyed by ``key``. Returns
    conductances (S, float64)."""
    g_prog = np.asarray(state["g_prog"], dtype=np.float64)
    n = g_prog.shape[0]
    g = g_prog
    if device.drift.enabled:
        g = g * device.drift_factor(np.asarray(state["nu"], dtype=np.float64), age_s)
    if device.relaxation.enabled:
        g_eff = np.asarray(state["g_eff"], dtype=np.float64)
        g = (g + device.relaxation_mean_S(g_eff, age_s)
             + device.sigma_relaxation_S(g_eff, age_s) * np.asarray(state["z_relax"], dtype=np.float64))
    if device.read_noise.enabled:
        z = read_normals(key, n, first)
        g = g + (device.read_noise_scale(g) * np.asarray(state["q_read"], dtype=np.float64)
                 * device.read_noise_time_factor(age_s) * z)
    return np.clip(g, device.range.clip_min_S, device.range.clip_max_S)
