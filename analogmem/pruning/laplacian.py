"""SuRP on an i.i.d. Laplacian source against its rate-distortion function (thesis ch.2).

Source: ``n`` i.i.d. samples of density (λ/2)·e^(−λ|x|). Under absolute-error distortion
D = E|X − X̂| its rate-distortion function is

    R(D) = −ln(λD) nats = −log₂(λD) bits per sample,  0 < D ≤ 1/λ,

and the optimal reconstruction is exactly 0 with probability (λD)² (:func:`rd_laplacian`,
:func:`zero_probability`). SuRP reduces exactly this distortion (every step removes θ_t
from Σ|w − ŵ|), so that is the comparison; for the mean squared error we also give the
Shannon lower bound of the Laplacian under MSE, h(X) − ½·log₂(2πe·D_mse) with
h(X) = log₂(2e/λ) bits (:func:`slb_mse_laplacian`; a lower bound on the MSE R(D), tight as
D → 0).

What is counted as rate (bits per sample): the bitstream of
:meth:`~analogmem.pruning.surp.SurpCode.to_bytes` — the Golomb-family codes of the index
positions ``K_t`` in the shared random stream, one sign bit per non-zero weight, and the
side information (the vector's norm, Σ|w|, the α schedule, per-epoch reset and step counts
and code parameters). The rows also split it into index, sign and side bits, and give the
geometric information content of the indices (Σ −log₂ P(K_t) under Geometric(p_t)).
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from analogmem._io import progress as progress_bar
from analogmem._seeding import SeedLike, as_seed_sequence

from ._errors import PruningError
from .surp import DEFAULT_ALPHA, geometric_code_bits, surp_encode

__all__ = [
    "LAPLACIAN_UNITS",
    "format_laplacian_table",
    "laplacian_experiment",
    "plot_laplacian",
    "rd_laplacian",
    "slb_mse_laplacian",
    "zero_probability",
]

LAPLACIAN_UNITS = {
    "n": "samples in the source vector",
    "lambda_D": "target absolute-error distortion D times the Laplacian rate λ (dimensionless)",
    "mae": "achieved mean absolute error E|w - ŵ| per sample (units of w, λ = 1)",
    "mse": "achieved mean squared error per sample (units of w², λ = 1)",
    "rate_bits": "total bits per sample (index + sign + side information)",
    "index_bits": "bits per sample of the index codes", "sign_bits": "bits per sample of the signs",
    "side_bits": "bits per sample of side information",
    "geometric_index_bits": "Σ -log2 P(K_t) per sample under Geometric(p_t)",
    "rd_bits": "R(D) = -log2(λ·mae), bits per sample, at the achieved distortion",
    "gap_bits": "rate_bits - rd_bits", "index_gap_bits": "index_bits - rd_bits",
    "slb_mse_bits": "Shannon lower bound of the MSE rate-distortion function at the achieved MSE, bits per sample",
    "zero_fraction": "fraction of ŵ exactly 0", "zero_fraction_optimal": "(λ·mae)², the optimal reconstruction's P(0)",
}


def _check_lam_d(lam_d: Any) -> np.ndarray:
    x = np.asarray(lam_d, dtype=np.float64)
    if np.any(~np.isfinite(x)) or np.any(x <= 0):
        raise PruningError(f"λD must be > 0, got {lam_d!r}")
    return x


def rd_laplacian(lam_d: Any, unit: str = "bits") -> np.ndarray:
    """R(D) of the Laplacian under absolute error at ``λD`` (array): ``max(−log(λD), 0)`` in
    ``"bits"`` or ``"nats"`` per sample."""
    x = _check_lam_d(lam_d)
    r = np.maximum(-np.log(x), 0.0)
    if unit == "nats":
        return r
    if unit == "bits":
        return r / math.log(2.0)
    raise PruningError(f"unit must be 'bits' or 'nats', got {unit!r}")


def zero_probability(lam_d: Any) -> np.ndarray:
    """P(X̂ = 0) = (λD)² of the R(D)-achieving reconstruction (1 for λD ≥ 1)."""
    return np.minimum(_check_lam_d(lam_d), 1.0) ** 2


def slb_mse_laplacian(mse: Any, lam: float = 1.0) -> np.ndarray:
    """Shannon lower bound (bits per sample) of the Laplacian's MSE rate-distortion function:
    ``max(log₂(2e/λ) − ½·log₂(2πe·D), 0)``."""
    d = np.asarray(mse, dtype=np.float64)
    if np.any(~np.isfinite(d)) or np.any(d <= 0) or not lam > 0:
        raise PruningError(f"need mse > 0 and λ > 0, got mse={mse!r}, λ={lam!r}")
    return np.maximum(np.log2(2 * math.e / lam) - 0.5 * np.log2(2 * math.pi * math.e * d), 0.0)


def laplacian_experiment(ns: Sequence[int] = (1_000, 10_000, 100_000),
                         lam_ds: Sequence[float] = (0.8, 0.6, 0.4, 0.25, 0.15), *, seed: SeedLike = 0,
                         alpha: float = DEFAULT_ALPHA, progress: bool = False, lam_rule: str = "n-1",
                         max_steps_per_n: float | None = None) -> dict[str, Any]:
    """Run SuRP on Laplacian vectors (λ = 1) of each size in ``ns`` down to the smallest
    ``λD`` of ``lam_ds``, and read the rate at which each ``λD`` is first reached.
    ``lam_rule`` is SuRP's λ⁻¹ update (:data:`~analogmem.pruning.surp.LAM_RULES`);
    ``max_steps_per_n`` caps a run at that many steps per sample (a rule that stalls then
    gives no row for the distortions it never reaches).

    Returns ``{"rows": [...], "curves": {n: {"rate_bits", "mae", "mse"}}}`` — one row per
    (n, λD) with the keys of :data:`LAPLACIAN_UNITS`, and for the plot the achievable
    (rate, distortion) trace of each run (thinned to ≤ 400 points).
    """
    ns = [int(n) for n in ns]
    lam_ds = sorted((float(x) for x in lam_ds), reverse=True)
    if not ns or min(ns) < 16:
        raise PruningError(f"ns must hold sizes >= 16, got {ns}")
    if not lam_ds or not all(math.isfinite(x) and 0 < x < 1 for x in lam_ds):
        raise PruningError(f"lam_ds must lie in (0, 1), got {lam_ds}")
    seeds = as_seed_sequence(seed).spawn(2 * len(ns))
    rows, curves = [], {}
    for i, n in enumerate(progress_bar(ns, enabled=progress, desc="laplacian", unit="n")):
        w = np.random.Generator(np.random.PCG64(seeds[2 * i])).laplace(0.0, 1.0, n)
        nrm = float(np.float32(np.linalg.norm(w)))
        cap = None if max_steps_per_n is None else max(1, int(max_steps_per_n * n))
        code = surp_encode([w], target_mean_residual=lam_ds[-1] / nrm, seed=seeds[2 * i + 1], alpha=alpha,
                           lam_rule=lam_rule, max_steps=cap)
        tr = code.rate_trace()
        # trace distortions are of the normalised magnitudes; |w − ŵ| = ‖w‖·|u − û|
        mae, mse = tr["l1"] * nrm / n, tr["l2"] * nrm * nrm / n
        rate = tr["bits"] / n
        step_bits = np.r_[0, np.cumsum(code.step_code_lengths())] / n
        signs = tr["nonzero"] / n
        for ld in lam_ds:
            hit = np.flatnonzero(mae <= ld)
            if not hit.size:
                continue
            t = int(hit[0])
            rd = float(rd_laplacian(mae[t]))
            geo = float(np.sum(_geometric_bits(code, t))) / n
            rows.append({
                "n": n, "lambda_D": ld, "steps": t, "mae": float(mae[t]), "mse": float(mse[t]),
                "rate_bits": float(rate[t]), "index_bits": float(step_bits[t]), "sign_bits": float(signs[t]),
                "side_bits": float(rate[t] - step_bits[t] - signs[t]), "geometric_index_bits": geo,
                "rd_bits": rd, "gap_bits": float(rate[t]) - rd, "index_gap_bits": float(step_bits[t]) - rd,
                "slb_mse_bits": float(slb_mse_laplacian(mse[t])),
                "zero_fraction": 1.0 - float(signs[t]), "zero_fraction_optimal": float(zero_probability(mae[t])),
            })
        keep = np.unique(np.linspace(0, tr["step"].size - 1, min(400, tr["step"].size)).astype(int))
        curves[n] = {"rate_bits": rate[keep].tolist(), "mae": mae[keep].tolist(), "mse": mse[keep].tolist()}
    return {"rows": rows, "curves": curves}


def _geometric_bits(code, t: int) -> np.ndarray:
    return geometric_code_bits(code.run.n_candidates[:t], code.run.gaps[:t], code.n)


def format_laplacian_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of :func:`laplacian_experiment` rows."""
    head = ("| n | λD target | λ·MAE | R(D) bits | SuRP bits | gap | index | sign | side | geometric index |"
            " P(0) SuRP | P(0) optimal | MSE | MSE SLB bits |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for r in rows:
        lines.append(f"| {r['n']} | {r['lambda_D']:g} | {r['mae']:.4f} | {r['rd_bits']:.3f} | {r['rate_bits']:.3f} | "
                     f"{r['gap_bits']:+.3f} | {r['index_bits']:.3f} | {r['sign_bits']:.3f} | {r['side_bits']:.3f} | "
                     f"{r['geometric_index_bits']:.3f} | {r['zero_fraction']:.3f} | {r['zero_fraction_optimal']:.3f} | "
                     f"{r['mse']:.4f} | {r['slb_mse_bits']:.3f} |")
    return "\n".join(lines)


def plot_laplacian(result: dict[str, Any], path) -> None:
    """PNG: rate (bits/sample) vs λ·MAE for each n, with R(D) = −log₂(λD)."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    from analogmem._io import save_figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    d = np.linspace(0.05, 1.0, 200)
    ax.plot(d, rd_laplacian(d), "k-", lw=2, label="R(D) = −log₂(λD)")
    for n, c in result["curves"].items():
        ax.plot(c["mae"], c["rate_bits"], lw=1.2, label=f"SuRP, n = {int(n):,}")
    ax.set_xlabel("distortion λ·E|w − ŵ|")
    ax.set_ylabel("rate (bits per sample)")
    ax.set_xlim(0.1, 1.0)
    ax.set_ylim(0, 6)
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title("SuRP on a Laplacian source (index + sign + side bits)")
    fig.tight_layout()
    save_figure(fig, path)
