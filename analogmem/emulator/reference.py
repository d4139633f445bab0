"""Plain-numpy reference implementation of the cell model (the test oracle).

It computes exactly what the compiled kernels compute — same model, same random streams,
same order of draws (see :mod:`analogmem.emulator._streams`) — from the closed-form statistics of
:class:`~analogmem.emulator.cells.DeviceModel`, one vectorised numpy expression per step. Tests
compare the kernels with it; the benchmark measures how much faster the kernels are.
It is not used by :class:`~analogmem.emulator.bench.EmulatedBench` unless asked for
(``backend="numpy"``).
"""

from __future__ import annotations

import numpy as np

from typing import Any

from ._streams import CHUNK_CELLS, chunk_bit_generators
from .cells import DeviceModel

__all__ = ["program_reference", "read_reference", "draws_per_cell"]


def draws_per_cell(device: DeviceModel) -> int:
    """Random numbers drawn per cell when programming: write noise (a uniform for an
    empirical channel), then the drift exponent (if the card has drift), then the
    relaxation latent (if it has relaxation)."""
    return 1 + int(device.drift.enabled) + int(device.relaxation.enabled)


def _normals(op_seed: np.random.SeedSequence, n: int, k: int, first_uniform: bool = False) -> np.ndarray:
    """``(n, k)`` standard normals, chunk by chunk, in the kernels' order; with
    ``first_uniform`` the first draw of each cell is a standard uniform instead (then
    ``k`` must be 1: empirical channels draw nothing else)."""
    out = np.empty((n, k))
    for c, bg in enumerate(chunk_bit_generators(op_seed, n)):
        lo, hi = c * CHUNK_CELLS, min(n, (c + 1) * CHUNK_CELLS)
        gen = np.random.Generator(bg)
        out[lo:hi] = gen.random((hi - lo, k)) if first_uniform else gen.standard_normal((hi - lo, k))
    return out


def program_reference(device: DeviceModel, g_target_S: np.ndarray, stuck: np.ndarray,
                      op_seed: np.random.SeedSequence, verify: Any = None, table: Any = None) -> dict[str, np.ndarray]:
    """Program cells with targets ``g_target_S`` (S, shape (n,)); ``stuck`` (int8, (n,)):
    0 healthy, 1 stuck at g_min, 2 stuck at g_max. ``verify``: a ``WriteVerify`` (None: a
    single-shot write); ``table``: its pulse-response table (card windows; computed from
    ``verify`` when None).

    Returns the per-cell state ``g_eff`` (S, effective target), ``g_prog`` (S), ``nu``,
    ``z_relax`` and ``q_read`` (read-noise factor Q_s of ``g_eff``), each shape (n,).
    """
    g_t = np.asarray(g_target_S, dtype=np.float64)
    if verify is not None:
        return _program_verify_reference(device, g_t, stuck, op_seed, verify, table)
    n = g_t.shape[0]
    z = _normals(op_seed, n, draws_per_cell(device), first_uniform=device.empirical)
    r = device.range
    if device.empirical:
        written = np.exp(device.programming.quantile_log_S(g_t, z[:, 0]))
    else:
        written = g_t + device.sigma_program_S(g_t) * z[:, 0]
    g_prog = np.clip(written, r.clip_min_S, r.clip_max_S)
    col = 1
    nu = np.zeros(n)
    if device.drift.enabled:
        nu = np.abs(device.drift_mu(g_t) + device.drift_sigma(g_t) * z[:, col])
        col += 1
    z_relax = z[:, col].copy() if device.relaxation.enabled else np.zeros(n)
    low, high = stuck == 1, stuck == 2
    g_prog[low], g_prog[high] = r.g_min_S, r.g_max_S
    g_eff = np.where(low, r.g_min_S, np.where(high, r.g_max_S, g_t))
    nu[low | high] = 0.0
    z_relax[low | high] = 0.0
    return {"g_eff": g_eff, "g_prog": g_prog, "nu": nu, "z_relax": z_relax,
            "q_read": device.read_noise_q(g_eff)}


def read_reference(device: DeviceModel, state: dict[str, np.ndarray], age_s: np.ndarray | float,
                   op_seed: np.random.SeedSequence) -> np.ndarray:
    """Read the cells of ``state`` (as returned by :func:`program_reference`)
    ``age_s`` seconds after programming (scalar or shape (n,)). Returns conductances (S)."""
    g_eff = state["g_eff"]
    n = g_eff.shape[0]
    g = state["g_prog"] * device.drift_factor(state["nu"], age_s)
    if device.relaxation.enabled:
        g = g + device.sigma_relaxation_S(g_eff, age_s) * state["z_relax"]
    if device.read_noise.enabled:
        z = _normals(op_seed, n, 1)[:, 0]
        g = g + device.sigma_read_S(g_eff, g, age_s) * z
    return np.clip(g, device.range.clip_min_S, device.range.clip_max_S)


def _program_verify_reference(device: DeviceModel, g_t: np.ndarray, stuck: np.ndarray,
                              op_seed: np.random.SeedSequence, verify: Any, table: Any = None) -> dict[str, np.ndarray]:
    """Program-and-verify, cell by cell (a plain loop: the oracle for small arrays). Per
    cell: pulse (write draw), read right after it (read-noise draw if the card has read
    noise), compare with the window, repeat; then the drift and relaxation draws."""
    n = g_t.shape[0]
    r = device.range
    card = verify.windows == "card"
    if card:
        pr = verify.pulse_table(device, g_t) if table is None else table
        budget = pr.max_pulses
        level = pr.level_of(g_t)
        cumw = [np.cumsum(w) for w in pr.weights]
        lo_w = hi_w = g_t  # unused
    else:
        budget = verify.pulse_budget(device)
        lo_w, hi_w = verify.window(g_t)
    g_eff = np.where(stuck == 1, r.g_min_S, np.where(stuck == 2, r.g_max_S, g_t))
    q = device.read_noise_q(g_eff)
    f0 = float(device.read_noise_time_factor(0.0)) if device.read_noise.enabled else 0.0
    mu, sd = device.drift_mu(g_t), device.drift_sigma(g_t)
    g_prog, nu, z_relax = np.zeros(n), np.zeros(n), np.zeros(n)
    pulses, success = np.zeros(n, dtype=np.int32), np.zeros(n, dtype=np.int8)
    for c, bg in enumerate(chunk_bit_generators(op_seed, n)):
        gen = np.random.Generator(bg)
        for i in range(c * CHUNK_CELLS, min(n, (c + 1) * CHUNK_CELLS)):
            k = 0
            while card:  # the card's pulse-response model (one pass)
                L = int(level[i])
                u = gen.random()
                comp = 0
                while comp < len(cumw[L]) - 1 and u >= cumw[L][comp]:
                    comp += 1
                need = pr.offset_pulses[L] + int(gen.geometric(pr.p_hit[L][comp])) - 1
                if need <= budget:
                    lq = float(np.interp(gen.random(), pr.probabilities, pr.log_g_quantiles[L]))
                    v = min(max(float(np.exp(lq)), r.clip_min_S), r.clip_max_S)
                    k, ok = (need, True) if stuck[i] == 0 else (budget, False)
                elif device.empirical:
                    v = float(np.exp(device.programming.quantile_log_S(g_t[i], gen.random())))
                    v, k, ok = min(max(v, r.clip_min_S), r.clip_max_S), budget, False
                else:
                    v = float(g_t[i] + device.sigma_program_S(g_t[i]) * gen.standard_normal())
                    v, k, ok = min(max(v, r.clip_min_S), r.clip_max_S), budget, False
                break
            while not card:
                if device.empirical:
                    v = float(np.exp(device.programming.quantile_log_S(g_t[i], gen.random())))
                else:
                    v = float(g_t[i] + device.sigma_program_S(g_t[i]) * gen.standard_normal())
                v = min(max(v, r.clip_min_S), r.clip_max_S)
                k += 1
                read = v if stuck[i] == 0 else g_eff[i]
                if device.read_noise.enabled:
                    read = read + abs(read) * q[i] * f0 * gen.standard_normal()
                ok = lo_w[i] <= read <= hi_w[i]
                if ok or k >= budget:
                    break
            pulses[i], success[i] = k, ok
            g_prog[i] = v if stuck[i] == 0 else g_eff[i]
            if device.drift.enabled:
                draw = abs(mu[i] + sd[i] * gen.standard_normal())
                nu[i] = draw if stuck[i] == 0 else 0.0
            if device.relaxation.enabled:
                draw = gen.standard_normal()
                z_relax[i] = draw if stuck[i] == 0 else 0.0
    return {"g_eff": g_eff, "g_prog": g_prog, "nu": nu, "z_relax": z_relax, "q_read": q,
            "pulses": pulses, "success": success}
