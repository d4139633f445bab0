"""Baselines for private mean estimation of unit vectors: PrivUnitG and SQKR.

- **PrivUnitG** (Asi, Feldman, Talwar, *Optimal Algorithms for Mean Estimation under Local
  Differential Privacy*, ICML 2022): the Gaussian variant of PrivUnit; ε-LDP, unbiased, no
  bit limit (it sends d real numbers). For g ~ N(0, I_d) and a unit x: with probability p
  draw α ~ N(0, 1) conditioned on α ≥ γ, otherwise conditioned on α < γ; output
  σ·(g − ⟨g, x⟩x + α·x) with σ = 1/E[α]. ε-LDP holds when p(1 − q)/(q(1 − p)) = e^ε,
  q = P(N(0, 1) ≥ γ); p is chosen to minimise the exact variance, which is
  E‖x̂ − x‖² = σ²·(d − 1 + E[α²]) − 1 per user.
- **SQKR** (Chen, Kairouz, Özgür, *Breaking the Communication-Privacy-Accuracy Trilemma*,
  NeurIPS 2020): Kashin representation of x over a random tight frame U ∈ R^{N×d}
  (N = 2^(⌈log₂ d⌉ + 1), coefficients bounded by K/√N), stochastic 1-bit quantisation of each
  coefficient to ±K/√N, k coefficients sampled uniformly (shared randomness), and the k sign
  bits privatised with 2^k-ary randomized response; ε-LDP, unbiased, k ≤ b bits per user.
  By default k = min(⌈ε⌉, b), the choice of the SQKR paper.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
from scipy import optimize, special

from analogmem._seeding import SeedLike, as_generator

from ._validation import (
    PrivacyParameterError,
    check_bits,
    check_dimension,
    check_epsilon,
    check_unit_vectors,
)
from .rrsc import haar_frame

__all__ = [
    "PrivUnitGParameters",
    "kashin_representation",
    "privunitg",
    "privunitg_mse",
    "privunitg_parameters",
    "random_tight_frame",
    "sqkr_mean",
]


# --------------------------------------------------------------------------- PrivUnitG
@dataclass(frozen=True)
class PrivUnitGParameters:
    """PrivUnitG constants at (d, ε): ``p`` (probability of the cap), ``gamma`` (threshold on
    ⟨g, x⟩ in units of the standard deviation), ``scale`` σ = 1/E[α], ``alpha_second_moment``
    E[α²], ``variance_per_user`` σ²·(d − 1 + E[α²]) − 1 (exact E‖x̂ − x‖²)."""

    d: int
    epsilon: float
    p: float
    gamma: float
    scale: float
    alpha_second_moment: float
    variance_per_user: float


def _privunitg_moments(p: float, epsilon: float) -> tuple[float, float, float]:
    """(γ, E[α], E[α²]) for cap probability p under the ε constraint."""
    # q = P(N(0,1) >= γ) solves p(1 − q)/(q(1 − p)) = e^ε;  1/q − 1 = e^ε (1 − p)/p.
    log_odds = epsilon + math.log1p(-p) - math.log(p)  # log(1/q − 1)
    log_q = -np.logaddexp(0.0, log_odds)
    gamma = -float(special.ndtri_exp(log_q))  # Q^{-1}(q) = −Φ^{-1}(q)
    log_phi = -0.5 * gamma * gamma - 0.5 * math.log(2 * math.pi)
    mills_up = math.exp(log_phi - special.log_ndtr(-gamma))  # φ(γ)/Q(γ) = E[α | α ≥ γ]
    mills_lo = math.exp(log_phi - special.log_ndtr(gamma))  # φ(γ)/Φ(γ) = −E[α | α < γ]
    mean = p * mills_up - (1 - p) * mills_lo
    second = p * (1 + gamma * mills_up) + (1 - p) * (1 - gamma * mills_lo)
    return gamma, mean, second


def privunitg_parameters(d: int, epsilon: float) -> PrivUnitGParameters:
    """The PrivUnitG parameters at (d, ε) that minimise the exact per-user variance.

    ``d`` dimension (≥ 2); ``epsilon`` ε > 0 (nats). p is optimised on a grid then refined
    by bounded Brent search (the variance is smooth and unimodal in p).
    """
    d = check_dimension(d)
    epsilon = check_epsilon(epsilon)

    def variance(p: float) -> float:
        _, mean, second = _privunitg_moments(p, epsilon)
        return (d - 1 + second) / (mean * mean) - 1.0 if mean > 0 else math.inf

    grid = np.linspace(0.001, 0.999, 999)
    i = int(np.argmin([variance(p) for p in grid]))
    lo, hi = grid[max(i - 1, 0)], grid[min(i + 1, grid.size - 1)]
    p = float(optimize.minimize_scalar(variance, bounds=(lo, hi), method="bounded",
                                       options={"xatol": 1e-10}).x)
    gamma, mean, second = _privunitg_moments(p, epsilon)
    return PrivUnitGParameters(d, epsilon, p, gamma, 1.0 / mean, second, variance(p))


def privunitg_mse(d: int, epsilon: float, n: int) -> float:
    """Closed-form E‖x̂ − x̄‖² of the mean of ``n`` PrivUnitG outputs: (σ²(d − 1 + E[α²]) − 1)/n."""
    return privunitg_parameters(d, epsilon).variance_per_user / check_dimension(n, minimum=1, name="n")


def privunitg(vectors, epsilon: float, seed: SeedLike = None, *, params: PrivUnitGParameters | None = None) -> np.ndarray:
    """Privatise each unit vector with PrivUnitG; returns unbiased estimates, shape ``(n, d)``.

    ``vectors`` ``(n, d)`` unit vectors; ``epsilon`` ε > 0; ``seed`` the users' randomness;
    ``params`` precomputed :func:`privunitg_parameters` (must match d and ε).
    """
    x = check_unit_vectors(vectors)
    n, d = x.shape
    epsilon = check_epsilon(epsilon)
    if params is None:
        params = privunitg_parameters(d, epsilon)
    elif params.d != d or params.epsilon != epsilon:
        raise PrivacyParameterError(
            f"params are for d={params.d}, epsilon={params.epsilon}, not d={d}, epsilon={epsilon}"
        )
    rng = as_generator(seed)
    g = rng.standard_normal((n, d))
    g -= np.einsum("ij,ij->i", g, x)[:, None] * x
    cap = rng.random(n) < params.p
    u = 1.0 - rng.random(n)  # in (0, 1]
    # Inverse-CDF sampling of the truncated normal: tail Q^{-1}(u·Q(γ)), body Φ^{-1}(u·Φ(γ)).
    alpha = np.where(
        cap,
        -special.ndtri(u * special.ndtr(-params.gamma)),
        special.ndtri(u * special.ndtr(params.gamma)),
    )
    return params.scale * (g + alpha[:, None] * x)


# --------------------------------------------------------------------------- SQKR
def random_tight_frame(d: int, seed: SeedLike = None) -> np.ndarray:
    """A random tight frame for Kashin's representation: ``(N, d)`` with orthonormal columns,
    N = 2^(⌈log₂ d⌉ + 1) (so N/d ≥ 2), uniformly (Haar) distributed."""
    d = check_dimension(d)
    n_frame = 2 ** (math.ceil(math.log2(d)) + 1)
    return haar_frame(n_frame, d, seed)


def kashin_representation(vectors, frame, *, eta: float = 0.4, delta: float = 0.8,
                          n_iter: int | None = None) -> tuple[np.ndarray, float]:
    """Kashin coefficients of each vector over ``frame`` by iterated truncation
    (Lyubarskii–Vershynin), as in the SQKR paper.

    ``vectors`` ``(n, d)`` with norm ≤ 1; ``frame`` ``(N, d)`` with orthonormal columns.
    Returns ``(a, level)``: ``a`` ``(n, N)`` with ``a @ frame == vectors`` (exactly, up to
    rounding) and the nominal bound ``level`` = K/√N, K = 1/((1 − η)√δ), that |a| respects
    when the frame satisfies the uncertainty principle with (η, δ). ``n_iter`` defaults
    to ⌊ln N⌋ truncation rounds; the residual is added at the end.
    """
    x = np.asarray(vectors, dtype=np.float64)
    u = np.asarray(frame, dtype=np.float64)
    if u.ndim != 2 or x.ndim != 2 or u.shape[1] != x.shape[1]:
        raise PrivacyParameterError(f"frame must be (N, d) with d = vectors.shape[1]; got frame {u.shape}, vectors {x.shape}")
    n_frame = u.shape[0]
    level = 1.0 / ((1 - eta) * math.sqrt(delta)) / math.sqrt(n_frame)
    threshold = eta / math.sqrt(delta * n_frame)
    n_iter = int(math.log(n_frame)) if n_iter is None else int(n_iter)
    a = np.zeros((x.shape[0], n_frame))
    y = x.copy()
    for _ in range(n_iter):
        b = np.clip(y @ u.T, -threshold, threshold)
        y -= b @ u
        a += b
        threshold *= eta
    a += y @ u.T
    return a, level


def sqkr_mean(vectors, epsilon: float, bits: int, seed: SeedLike = None, *, k: int | None = None,
              frame: np.ndarray | None = None, coefficients: tuple[np.ndarray, float] | None = None) -> np.ndarray:
    """SQKR estimate of the mean of the unit ``vectors`` ``(n, d)``, shape ``(d,)``.

    ``epsilon`` ε > 0 (nats); ``bits`` b ≥ 1 (bit budget per user); ``k`` sampled
    coefficients = bits sent (default min(⌈ε⌉, b), at most b); ``seed`` all randomness
    (shared frame and coordinate sampling, users' quantisation and randomized response).
    ``frame``/``coefficients`` (from :func:`random_tight_frame` /
    :func:`kashin_representation`) may be passed to reuse the costly representation across
    several (ε, b); they are independent of ε and b.
    """
    x = check_unit_vectors(vectors)
    n, d = x.shape
    epsilon = check_epsilon(epsilon)
    bits = check_bits(bits)
    if k is None:
        k = min(math.ceil(epsilon), bits)
    k = check_bits(k, name="k")
    if k > bits:
        raise PrivacyParameterError(f"k={k} sampled coefficients need k bits but the budget is bits={bits}")
    rng = as_generator(seed)
    if frame is None:
        frame = random_tight_frame(d, rng)
    if coefficients is None:
        coefficients = kashin_representation(x, frame)
    a, level = coefficients
    n_frame = frame.shape[0]
    if a.shape != (n, n_frame):
        raise PrivacyParameterError(f"coefficients have shape {a.shape}, expected {(n, n_frame)}")
    # k coordinates per user (uniform, with replacement), each quantised to ±level unbiasedly.
    coords = rng.integers(0, n_frame, (n, k))
    picked = np.clip(np.take_along_axis(a, coords, axis=1), -level, level)
    signs = np.where(rng.random((n, k)) < (picked + level) / (2 * level), 1.0, -1.0)
    # 2^k-ary randomized response on the k-bit string: keep it with probability
    # (e^ε − 1)/(e^ε + 2^k − 1), else send a uniform string (so P(true) = e^ε/(e^ε + 2^k − 1)).
    keep_prob = -math.expm1(-epsilon) / (1.0 + (2**k - 1) * math.exp(-epsilon))
    replace = rng.random(n) >= keep_prob
    signs[replace] = rng.choice([-1.0, 1.0], size=(int(replace.sum()), k))
    # Unbiased coefficient estimate: (N/k)·(1/keep_prob)·level·Σ_l sign_l e_{coord_l}.
    sums = np.bincount(coords.ravel(), weights=signs.ravel(), minlength=n_frame)
    a_hat = sums * (n_frame / k) * level / keep_prob / n
    return a_hat @ frame
