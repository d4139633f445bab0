"""Statistical assertions shared by the tests (importable as ``stats_helpers``)."""

from __future__ import annotations

import math
import os
from pathlib import Path

import numpy as np
from scipy import stats

def _shared_data() -> Path:
    """``$ANALOGMEM_DATA`` (the documented variable) or ``$ANALOGMEM_SHARED_DATA`` if set, else the nearest ``shared/data`` beside the
    repository or one of its ancestors (a clone at ``X/repo`` finds ``X/shared/data``, a git
    worktree at ``X/wt/name`` finds it too)."""
    env = os.environ.get("ANALOGMEM_DATA") or os.environ.get("ANALOGMEM_SHARED_DATA")
    if env:
        return Path(env)
    repo = Path(__file__).resolve().parents[1]
    for folder in repo.parents:
        if (folder / "shared" / "data").is_dir():
            return folder / "shared" / "data"
    return repo.parent / "shared" / "data"


#: The measured data beside the repository (../shared/data), when present.
SHARED_DATA = _shared_data()

#: Tolerance in standard errors for moment checks. With fixed seeds the tests are
#: deterministic; 5 standard errors is the confidence bound a correct model passes with
#: probability 1 - 6e-7 for any seed.
Z = 5.0


def assert_mean(samples: np.ndarray, mean: float, sd: float | None = None, what: str = "mean") -> None:
    """Sample mean within Z standard errors of ``mean`` (``sd`` defaults to the sample std)."""
    n = samples.size
    se = (np.std(samples) if sd is None else sd) / math.sqrt(n)
    got = float(np.mean(samples))
    assert abs(got - mean) <= Z * se, f"{what}: sample mean {got:.6g} vs expected {mean:.6g} (±{Z}·{se:.3g})"


def assert_std(samples: np.ndarray, sd: float, what: str = "std", kurtosis_excess: float = 0.0) -> None:
    """Sample std within Z standard errors of ``sd``; se(s)/σ ≈ sqrt((2 + κ)/(4n))."""
    n = samples.size
    rel_se = math.sqrt((2.0 + kurtosis_excess) / (4.0 * n))
    got = float(np.std(samples, ddof=1))
    assert abs(got / sd - 1.0) <= Z * rel_se, f"{what}: sample std {got:.6g} vs expected {sd:.6g} (±{Z * rel_se:.2%})"


def assert_ks(samples: np.ndarray, cdf, what: str = "distribution", alpha: float = 1e-3) -> None:
    """One-sample Kolmogorov–Smirnov test: not rejected at level ``alpha``."""
    res = stats.kstest(samples, cdf)
    assert res.pvalue > alpha, f"{what}: KS statistic {res.statistic:.4g}, p = {res.pvalue:.3g} < {alpha}"


def unit_rows(n: int, d: int, seed: int) -> np.ndarray:
    """``n`` random unit vectors in ``d`` dimensions, shape (n, d)."""
    x = np.random.default_rng(seed).standard_normal((n, d))
    return x / np.linalg.norm(x, axis=1, keepdims=True)
