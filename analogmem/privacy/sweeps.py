"""Paper-scale sweeps for RRSC against PrivUnitG and SQKR (thesis ch.9, NeurIPS 2023 Fig.).

:func:`rrsc_sweep` runs the three mechanisms on the same inputs over a list of (b, ε) points
and returns one self-describing record per point; :func:`paper_points` lists the two sweeps of
the paper's figure (ε = 6 with b = 1…8, and b = ε = 1…8 at d = 500, n = 5000, 10 runs);
:func:`format_rrsc_table` prints paper vs ours; :func:`plot_rrsc` draws the figure.

MSE everywhere is E‖x̂ − x̄‖², the squared Euclidean norm of the error of the mean estimate of
unit vectors (dimensionless), averaged over independent runs.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence

import numpy as np
from scipy import stats

from analogmem._io import progress as progress_bar, save_figure
from analogmem._seeding import SeedLike, as_generator, spawn

from ._validation import PrivacyParameterError, check_bits, check_dimension, check_epsilon
from .baselines import kashin_representation, privunitg, privunitg_parameters, random_tight_frame, sqkr_mean
from .rrsc import RRSC

__all__ = [
    "MSE_UNITS",
    "PAPER_D",
    "PAPER_N",
    "PAPER_PRIVUNITG_B_EQ_EPS",
    "PAPER_RRSC_B_EQ_EPS",
    "PAPER_RRSC_EPS6",
    "format_rrsc_table",
    "paper_inputs",
    "paper_points",
    "paper_reference",
    "plot_rrsc",
    "rrsc_sweep",
    "summarize_rrsc",
]

MSE_UNITS = "squared Euclidean norm of the mean-estimate error, unit input vectors (dimensionless)"

#: Setting of the paper's figure.
PAPER_D, PAPER_N = 500, 5000
#: RRSC MSE read from the paper's figure at ε = 6, keyed by b (bits per user).
PAPER_RRSC_EPS6 = {1: 0.156, 2: 0.0735, 3: 0.0456, 4: 0.0329, 5: 0.0250, 6: 0.0239, 7: 0.0220, 8: 0.0222}
#: RRSC MSE at b = ε, keyed by b.
PAPER_RRSC_B_EQ_EPS = {1: 0.745, 2: 0.185, 3: 0.0862, 4: 0.0492, 5: 0.0340, 6: 0.0240, 7: 0.0180, 8: 0.0144}
#: PrivUnitG (no bit limit) MSE at ε = 1…8, keyed by ε.
PAPER_PRIVUNITG_B_EQ_EPS = {1: 0.616, 2: 0.157, 3: 0.0748, 4: 0.0422, 5: 0.0285, 6: 0.0212, 7: 0.0162, 8: 0.0135}


def paper_points() -> list[tuple[int, float]]:
    """The (b, ε) points of the paper's two sweeps, in order: ε = 6 with b = 1…8, then b = ε = 1…8."""
    return [(b, 6.0) for b in range(1, 9)] + [(b, float(b)) for b in range(1, 9)]


def paper_reference(bits: int, epsilon: float) -> dict:
    """The paper's numbers at (b, ε), where it gives them: ``rrsc_mse`` and ``privunitg_mse`` (or None)."""
    rrsc = PAPER_RRSC_EPS6.get(bits) if epsilon == 6.0 else None
    if rrsc is None and epsilon == bits:
        rrsc = PAPER_RRSC_B_EQ_EPS.get(bits)
    pu = PAPER_PRIVUNITG_B_EQ_EPS.get(int(epsilon)) if float(epsilon).is_integer() else None
    return {"rrsc_mse": rrsc, "privunitg_mse": pu}


def paper_inputs(d: int, n: int, seed: SeedLike = None) -> np.ndarray:
    """The authors' test inputs, ``(n, d)`` unit vectors: the first ⌊n/2⌋ rows are normalised
    N(10, 1)^d draws, the rest normalised N(1, 1)^d draws (two tight clusters)."""
    rng = as_generator(seed)
    half = n // 2
    x = np.concatenate([rng.normal(10.0, 1.0, (half, d)), rng.normal(1.0, 1.0, (n - half, d))])
    return x / np.linalg.norm(x, axis=1, keepdims=True)


def _summary(values: Sequence[float]) -> dict:
    v = np.asarray(values, dtype=float)
    mean = float(v.mean())
    if v.size > 1:
        half = float(stats.t.ppf(0.975, v.size - 1) * v.std(ddof=1) / math.sqrt(v.size))
    else:
        half = math.inf
    return {"mean": mean, "ci95": [mean - half, mean + half], "runs": v.tolist()}


def rrsc_sweep(points: Iterable[tuple[int, float]] | None = None, *, d: int = PAPER_D, n: int = PAPER_N,
               runs: int = 10, seed: SeedLike = None, methods: Sequence[str] = ("rrsc", "privunitg", "sqkr"),
               progress: bool = False) -> list[dict]:
    """Empirical MSE of RRSC, PrivUnitG and SQKR at each (b, ε), with closed forms and paper values.

    ``points`` (b, ε) pairs (default :func:`paper_points`; duplicates are run once);
    ``d``, ``n`` dimension and number of users; ``runs`` independent runs (fresh inputs
    from :func:`paper_inputs` and fresh randomness each); ``methods`` any of ``"rrsc"``,
    ``"privunitg"``, ``"sqkr"``; ``progress`` shows a tqdm bar over runs.

    Returns one dict per distinct point with keys ``bits``, ``epsilon_nats``, ``d``, ``n``,
    ``runs`` and, per method ``m``, ``m_mse`` = {``mean``, ``ci95`` (95 % t-interval of the
    mean), ``runs``}; RRSC adds ``rrsc_k``, ``rrsc_C``, ``rrsc_mse_formula`` ((C² − 1)/n);
    PrivUnitG adds ``privunitg_mse_formula``; SQKR adds ``sqkr_k`` (bits actually sent);
    ``paper_rrsc_mse`` / ``paper_privunitg_mse`` hold the paper's values or None.
    """
    pts = list(dict.fromkeys((check_bits(b), check_epsilon(e)) for b, e in (points or paper_points())))
    d, n = check_dimension(d), check_dimension(n, minimum=1, name="n")
    runs = check_dimension(runs, minimum=1, name="runs")
    unknown = set(methods) - {"rrsc", "privunitg", "sqkr"}
    if unknown:
        raise PrivacyParameterError(f"unknown methods {sorted(unknown)}; choose from rrsc, privunitg, sqkr")
    mechanisms = {p: RRSC(d, p[1], p[0]) for p in pts} if "rrsc" in methods else {}
    pu_params = {e: privunitg_parameters(d, e) for e in {e for _, e in pts}} if "privunitg" in methods else {}
    errors = {(p, m): [] for p in pts for m in methods}

    iterator = progress_bar(range(runs), enabled=progress, desc=f"RRSC sweep d={d} n={n}", unit="run")
    for run_seed in (spawn(seed, runs)[r] for r in iterator):
        s_input, s_rrsc, s_pu, s_sqkr = run_seed.spawn(4)
        x = paper_inputs(d, n, s_input)
        mean = x.mean(axis=0)
        if "privunitg" in methods:
            pu_mse = {e: float(np.sum((privunitg(x, e, s, params=pu_params[e]).mean(axis=0) - mean) ** 2))
                      for e, s in zip(pu_params, s_pu.spawn(len(pu_params)))}
        if "sqkr" in methods:
            s_frame, s_points = s_sqkr.spawn(2)
            frame = random_tight_frame(d, s_frame)
            coefficients = kashin_representation(x, frame)
            sqkr_seeds = s_points.spawn(len(pts))
        rrsc_seeds = s_rrsc.spawn(len(pts))
        for i, p in enumerate(pts):
            if "rrsc" in methods:
                est = mechanisms[p].simulate_mean(x, rrsc_seeds[i])
                errors[(p, "rrsc")].append(float(np.sum((est - mean) ** 2)))
            if "privunitg" in methods:
                errors[(p, "privunitg")].append(pu_mse[p[1]])
            if "sqkr" in methods:
                est = sqkr_mean(x, p[1], p[0], sqkr_seeds[i], frame=frame, coefficients=coefficients)
                errors[(p, "sqkr")].append(float(np.sum((est - mean) ** 2)))

    rows = []
    for b, e in pts:
        ref = paper_reference(b, e)
        row = {"bits": b, "epsilon_nats": e, "d": d, "n": n, "runs": runs,
               "paper_rrsc_mse": ref["rrsc_mse"] if (d, n) == (PAPER_D, PAPER_N) else None,
               "paper_privunitg_mse": ref["privunitg_mse"] if (d, n) == (PAPER_D, PAPER_N) else None}
        for m in methods:
            row[f"{m}_mse"] = _summary(errors[((b, e), m)])
        if "rrsc" in methods:
            mech = mechanisms[(b, e)]
            row.update(rrsc_k=mech.k, rrsc_C=mech.unbiasing_constant, rrsc_mse_formula=mech.mse(n))
        if "privunitg" in methods:
            row["privunitg_mse_formula"] = pu_params[e].variance_per_user / n
        if "sqkr" in methods:
            row["sqkr_k"] = min(math.ceil(e), b)
        rows.append(row)
    return rows


def _t_test_p(values: Sequence[float], expected: float) -> float:
    """Two-sided one-sample t-test p-value of mean(values) = expected (1.0 with < 2 values)."""
    v = np.asarray(values, dtype=float)
    if v.size < 2 or v.std(ddof=1) == 0:
        return 1.0
    return float(stats.ttest_1samp(v, expected).pvalue)


def summarize_rrsc(rows: Sequence[dict]) -> dict:
    """Checks of the paper's claims over ``rows`` of :func:`rrsc_sweep` (only what the rows hold).

    Keys: ``rrsc_mean_abs_rel_diff_vs_paper`` (mean over the paper's 16 plotted points, (6, 6)
    counted in both sweeps, of |ours − paper|/paper), ``rrsc_formula_mean_abs_rel_diff_vs_paper``
    (the same for (C² − 1)/n), ``rrsc_formula_in_ci95`` ("hits/points"),
    ``rrsc_formula_min_p_value`` (smallest two-sided t-test p-value of mean = (C² − 1)/n over the
    points) and ``rrsc_formula_consistent_bonferroni_5pct`` (that p ≥ 0.05/points),
    ``rrsc_beats_sqkr_everywhere``, ``privunitg_mean_abs_rel_diff_vs_closed_form`` (per ε),
    ``privunitg_closed_form_min_p_value``, ``privunitg_closed_form_consistent_bonferroni_5pct``,
    ``privunitg_mean_abs_rel_diff_vs_paper``.
    """
    by_point = {(r["bits"], r["epsilon_nats"]): r for r in rows}
    out: dict = {}
    if rows and "rrsc_mse" in rows[0]:
        ref = [(by_point[p], PAPER_RRSC_EPS6[p[0]] if i < 8 else PAPER_RRSC_B_EQ_EPS[p[0]])
               for i, p in enumerate(paper_points()) if p in by_point]
        if ref and (rows[0]["d"], rows[0]["n"]) == (PAPER_D, PAPER_N):
            out["rrsc_mean_abs_rel_diff_vs_paper"] = float(np.mean([abs(r["rrsc_mse"]["mean"] / p - 1) for r, p in ref]))
            out["rrsc_formula_mean_abs_rel_diff_vs_paper"] = float(np.mean([abs(r["rrsc_mse_formula"] / p - 1) for r, p in ref]))
        hits = sum(r["rrsc_mse"]["ci95"][0] <= r["rrsc_mse_formula"] <= r["rrsc_mse"]["ci95"][1] for r in rows)
        out["rrsc_formula_in_ci95"] = f"{hits}/{len(rows)}"
        p_min = min(_t_test_p(r["rrsc_mse"]["runs"], r["rrsc_mse_formula"]) for r in rows)
        out["rrsc_formula_min_p_value"] = p_min
        out["rrsc_formula_consistent_bonferroni_5pct"] = bool(p_min >= 0.05 / len(rows))
        if "sqkr_mse" in rows[0]:
            out["rrsc_beats_sqkr_everywhere"] = all(r["rrsc_mse"]["mean"] < r["sqkr_mse"]["mean"] for r in rows)
    if rows and "privunitg_mse" in rows[0]:
        per_eps = {r["epsilon_nats"]: r for r in rows}.values()  # PrivUnitG does not depend on b
        out["privunitg_mean_abs_rel_diff_vs_closed_form"] = float(np.mean(
            [abs(r["privunitg_mse"]["mean"] / r["privunitg_mse_formula"] - 1) for r in per_eps]))
        p_min = min(_t_test_p(r["privunitg_mse"]["runs"], r["privunitg_mse_formula"]) for r in per_eps)
        out["privunitg_closed_form_min_p_value"] = p_min
        out["privunitg_closed_form_consistent_bonferroni_5pct"] = bool(p_min >= 0.05 / len(per_eps))
        pu = [(r["privunitg_mse"]["mean"], r["paper_privunitg_mse"]) for r in rows
              if r["paper_privunitg_mse"] is not None and r["bits"] == r["epsilon_nats"]]
        if pu:
            out["privunitg_mean_abs_rel_diff_vs_paper"] = float(np.mean([abs(a / b - 1) for a, b in pu]))
    return out


def _fmt(v) -> str:
    return "—" if v is None else f"{v:.4g}"


def format_rrsc_table(rows: Sequence[dict], points: Iterable[tuple[int, float]] | None = None) -> str:
    """A plain-text table (Markdown pipe syntax) of ``rows`` from :func:`rrsc_sweep`, in the
    order of ``points`` (default: the paper's two sweeps, (6, 6) listed in both), with the
    paper's values, ours (mean ± 95 % half-width over runs), the exact formulas, the relative
    difference to the paper, and whether the formula lies in our 95 % interval."""
    by_point = {(r["bits"], r["epsilon_nats"]): r for r in rows}
    paper_order = points is None
    order = [(b, float(e)) for b, e in (paper_points() if paper_order else points)]
    head = ("| b | ε | k | RRSC paper | RRSC ours (±95%) | (C²−1)/n | ours/paper − 1 | formula in CI "
            "| PrivUnitG paper | PrivUnitG ours | PrivUnitG formula | SQKR ours (k) |")
    lines = [head, "|" + "---|" * (head.count("|") - 1)]
    for i, p in enumerate(order):
        if p not in by_point:
            continue
        r = by_point[p]
        b, e = p
        cells = [str(b), f"{e:g}", str(r.get("rrsc_k", "—"))]
        if "rrsc_mse" in r:
            m, (lo, hi) = r["rrsc_mse"]["mean"], r["rrsc_mse"]["ci95"]
            f = r["rrsc_mse_formula"]
            paper = r["paper_rrsc_mse"]
            if paper is not None and paper_order:  # (6, 6) has one value per sweep
                paper = (PAPER_RRSC_EPS6 if i < 8 else PAPER_RRSC_B_EQ_EPS)[b]
            cells += [_fmt(paper), f"{m:.4g} ± {(hi - lo) / 2:.2g}", f"{f:.4g}",
                      "—" if paper is None else f"{m / paper - 1:+.1%}", "yes" if lo <= f <= hi else "NO"]
        else:
            cells += ["—"] * 5
        if "privunitg_mse" in r:
            cells += [_fmt(r["paper_privunitg_mse"]), f"{r['privunitg_mse']['mean']:.4g}",
                      f"{r['privunitg_mse_formula']:.4g}"]
        else:
            cells += ["—"] * 3
        cells.append(f"{r['sqkr_mse']['mean']:.4g} ({r['sqkr_k']})" if "sqkr_mse" in r else "—")
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def plot_rrsc(rows: Sequence[dict], path) -> None:
    """Write the paper's figure as a PNG: MSE vs b at ε = 6 (left) and vs b = ε (right),
    ours (markers with 95 % bars) and the paper's values (crosses), log scale."""
    from matplotlib.figure import Figure  # no pyplot: the Agg renderer, no global backend state

    by_point = {(r["bits"], r["epsilon_nats"]): r for r in rows}
    fig = Figure(figsize=(11, 4.2))
    axes = fig.subplots(1, 2)
    panels = [("ε = 6", [(b, 6.0) for b in range(1, 9)]), ("b = ε", [(b, float(b)) for b in range(1, 9)])]
    for ax, (title, pts) in zip(axes, panels):
        pts = [p for p in pts if p in by_point]
        if not pts:
            ax.set_visible(False)
            continue
        bs = [p[0] for p in pts]
        for key, label, color in (("rrsc", "RRSC", "C0"), ("privunitg", "PrivUnitG (no bit limit)", "C1"),
                                  ("sqkr", "SQKR", "C2")):
            if f"{key}_mse" not in by_point[pts[0]]:
                continue
            mean = np.array([by_point[p][f"{key}_mse"]["mean"] for p in pts])
            ci = np.array([by_point[p][f"{key}_mse"]["ci95"] for p in pts])
            ax.errorbar(bs, mean, yerr=[mean - ci[:, 0], ci[:, 1] - mean], marker="o", color=color,
                        capsize=3, label=f"{label} (ours)")
        if "rrsc_mse_formula" in by_point[pts[0]]:
            ax.plot(bs, [by_point[p]["rrsc_mse_formula"] for p in pts], "k--", lw=1, label="RRSC (C²−1)/n")
        for key, label, color in (("paper_rrsc_mse", "RRSC (paper)", "C0"),
                                  ("paper_privunitg_mse", "PrivUnitG (paper)", "C1")):
            vals = [(p[0], by_point[p][key]) for p in pts if by_point[p].get(key) is not None]
            if vals and (key != "paper_privunitg_mse" or title == "b = ε"):
                ax.plot(*zip(*vals), "x", color=color, ms=9, mew=2, ls="none", label=label)
        ax.set_yscale("log")
        ax.set_xlabel("bits per user b")
        ax.set_ylabel("MSE  E‖x̂ − x̄‖²")
        r0 = by_point[pts[0]]
        ax.set_title(f"{title}  (d = {r0['d']}, n = {r0['n']}, {r0['runs']} runs)")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=120)
