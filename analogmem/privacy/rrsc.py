"""Randomly rotated simplex coding (RRSC) for private distributed mean estimation.

Isik, Chen, Özgür, Weissman, No, *Exact Optimality of Communication-Privacy-Utility
Tradeoffs in Distributed Mean Estimation*, NeurIPS 2023 (thesis ch.9).

Setting: n users hold unit vectors x_i ∈ R^d; each sends b bits under ε-local differential
privacy; the server estimates the mean (1/n) Σ x_i.

Mechanism (as the paper states it):

- **Codebook.** M = 2^b simplex codewords c_1..c_M: unit vectors with pairwise inner
  product −1/(M−1) (they span an (M−1)-dimensional space; here, rows of
  :func:`simplex_codebook`, shape (M, M−1)).
- **Shared random rotation.** User i and the server share a uniformly random (Haar) frame
  F_i ∈ R^{d×(M−1)} with orthonormal columns; the user's codewords are F_i c_j ∈ R^d.
  Frames are independent across users (the exact MSE below needs that).
- **k-closest encoding.** With the k codewords that have the largest ⟨x_i, F_i c_j⟩, the user
  sends index j with probability e^ε/(k·e^ε + M − k) if c_j is one of them and
  1/(k·e^ε + M − k) otherwise: b bits, and the ratio of the probabilities of any index under
  two inputs is at most e^ε (ε-LDP).
- **Decoding.** The server outputs C·F_i c_j with
  C = (k·e^ε + M − k) / [(e^ε − 1)·E(sum of the k largest ⟨U, c_j⟩)], U uniform on the
  unit sphere of R^d; this makes every user's estimate unbiased, and the mean of the n
  estimates has the exact MSE E‖x̂ − x̄‖² = (C² − 1)/n.
- **Optimal k** minimises C over k ∈ {1, …, M−1}.

The expectation in C is computed by numerical integration, not Monte Carlo: for
U = g/‖g‖ with g ~ N(0, I_d), ⟨g, c_j⟩ = sqrt(M/(M−1))·(h_j − h̄) with h ~ N(0, I_M), and
‖g‖ is independent of g/‖g‖, so

    E[sum of k largest ⟨U, c_j⟩] = sqrt(M/(M−1)) · E[sum of the k largest of M iid N(0,1)] / E‖g‖,

with E‖g‖ = √2·Γ((d+1)/2)/Γ(d/2) and the normal order-statistic means integrated on a fine
grid (see :func:`expected_top_k_sums`).

Restriction: the M codewords span M − 1 dimensions, so M = 2^b ≤ d + 1 (b ≤ 8 at d = 500).

Two ways to run the mechanism:

- the literal one, :meth:`RRSC.encode` / :meth:`RRSC.decode` with explicit frames, wrapped
  for federated use by :class:`RRSCAggregator` (frames derived from a shared seed per
  client and round);
- :meth:`RRSC.simulate_each` / :meth:`RRSC.simulate_mean`, which draw the server's
  estimates from exactly the same distribution in O(n·(M + d)) instead of O(n·d·M²) (no
  frames are built). Used for the paper-scale sweeps; the equivalence is tested against
  the literal mechanism.
"""

from __future__ import annotations

import functools
import math
from dataclasses import dataclass

import numpy as np
from scipy import linalg as sla
from scipy import special

from analogmem._seeding import SeedLike, as_generator, as_seed_sequence

from ._validation import (
    PrivacyParameterError,
    check_bits,
    check_dimension,
    check_epsilon,
    check_unit_vectors,
)

__all__ = [
    "RRSC",
    "RRSCAggregator",
    "RRSCParameters",
    "expected_sphere_norm",
    "expected_top_k_sums",
    "haar_frame",
    "rrsc_mse",
    "rrsc_parameters",
    "simplex_codebook",
]

# Integration grid for the normal order statistics: N(0,1) mass beyond ±10 is < 1e-22.
_GRID = np.linspace(-10.0, 10.0, 20001)


def simplex_codebook(n_codewords: int) -> np.ndarray:
    """The regular simplex with ``n_codewords`` = M vertices, shape ``(M, M - 1)``.

    Rows are unit vectors with pairwise inner product −1/(M−1) and sum to zero (the centred
    standard basis of R^M scaled to unit norm, written in an orthonormal basis of the
    hyperplane ⟂ (1, …, 1), i.e. sqrt(M/(M−1)) times the transposed Helmert matrix).
    """
    m = int(n_codewords)
    if m < 2:
        raise PrivacyParameterError(f"a simplex needs n_codewords >= 2, got {n_codewords!r}")
    return math.sqrt(m / (m - 1)) * sla.helmert(m).T


def expected_sphere_norm(d: int) -> float:
    """E‖g‖ for g ~ N(0, I_d): √2·Γ((d+1)/2)/Γ(d/2) (dimensionless)."""
    return math.sqrt(2.0) * math.exp(special.gammaln((d + 1) / 2) - special.gammaln(d / 2))


@functools.lru_cache(maxsize=256)
def _normal_top_k_sums(m: int) -> np.ndarray:
    # E[X_(r)] for the r-th smallest of m iid N(0,1):
    #   ∫ x · m · Binom(r−1; m−1, Φ(x)) · φ(x) dx,  r = 1..m  (trapezoid rule on _GRID).
    x = _GRID
    r = np.arange(1, m + 1)[:, None]
    log_pmf = (
        special.gammaln(m) - special.gammaln(r) - special.gammaln(m - r + 1)
        + (r - 1) * special.log_ndtr(x) + (m - r) * special.log_ndtr(-x)
    )
    log_phi = -0.5 * x * x - 0.5 * math.log(2 * math.pi)
    order_means = m * np.trapezoid(x * np.exp(log_pmf + log_phi), x, axis=1)
    # k largest = r from m down to m−k+1; prepend k = 0.
    sums = np.concatenate([[0.0], np.cumsum(order_means[::-1])])
    sums[-1] = 0.0  # the sum of all m is exactly m·E[X] = 0
    sums.setflags(write=False)
    return sums


def expected_top_k_sums(d: int, n_codewords: int) -> np.ndarray:
    """E[sum of the k largest ⟨U, c_j⟩] for k = 0..M, shape ``(M + 1,)`` (dimensionless).

    U is uniform on the unit sphere of R^``d`` and c_1..c_M the simplex codewords embedded
    isometrically in R^d (M = ``n_codewords`` ≤ d + 1). Entry 0 and entry M are 0.
    Cached per M; accurate to ~1e-12 relative (trapezoid rule on a 1e-3 grid).
    """
    d = check_dimension(d)
    m = int(n_codewords)
    if not 2 <= m <= d + 1:
        raise PrivacyParameterError(f"n_codewords must be in [2, d + 1] = [2, {d + 1}], got {m}")
    return _normal_top_k_sums(m) * math.sqrt(m / (m - 1)) / expected_sphere_norm(d)


@dataclass(frozen=True)
class RRSCParameters:
    """Derived constants of RRSC at (d, ε, b).

    Attributes: ``n_codewords`` M = 2^b; ``k`` the number of favoured codewords;
    ``unbiasing_constant`` C (dimensionless); ``variance_per_user`` C² − 1, the exact
    E‖x̂_i − x_i‖² of one user (so the mean over n users has MSE (C² − 1)/n).
    """

    d: int
    epsilon: float
    bits: int
    n_codewords: int
    k: int
    unbiasing_constant: float
    variance_per_user: float


def _unbiasing_constants(d: int, m: int, epsilon: float) -> np.ndarray:
    """C(k) for k = 1..M−1 (index k−1), written with e^{−ε} so that large ε cannot overflow."""
    k = np.arange(1, m)
    e_neg = math.exp(-epsilon)
    top = expected_top_k_sums(d, m)[1:m]
    return (k + (m - k) * e_neg) / (-math.expm1(-epsilon) * top)


def rrsc_parameters(d: int, epsilon: float, bits: int, k: int | None = None) -> RRSCParameters:
    """k (the optimal one unless given), C and the per-user variance of RRSC at (d, ε, b).

    ``d`` vector dimension (≥ 2); ``epsilon`` LDP budget ε > 0 (nats); ``bits`` b ≥ 1 bits
    per user, with 2^b ≤ d + 1; ``k`` in 1..2^b − 1, or ``None`` for the k minimising C.
    """
    d = check_dimension(d)
    epsilon = check_epsilon(epsilon)
    bits = check_bits(bits)
    if bits > 62 or 2**bits > d + 1:
        raise PrivacyParameterError(
            f"RRSC needs 2**bits <= d + 1 (the {2**bits if bits <= 62 else 'many'} simplex "
            f"codewords span 2**bits - 1 dimensions); got bits={bits}, d={d}: "
            f"use bits <= {int(math.floor(math.log2(d + 1)))}"
        )
    m = 2**bits
    constants = _unbiasing_constants(d, m, epsilon)
    if k is None:
        k = int(np.argmin(constants)) + 1
    elif isinstance(k, bool) or not isinstance(k, (int, np.integer)) or not 1 <= k <= m - 1:
        raise PrivacyParameterError(f"k must be an integer in [1, 2**bits - 1] = [1, {m - 1}], got k={k!r}")
    c = float(constants[int(k) - 1])
    return RRSCParameters(d, epsilon, bits, m, int(k), c, c * c - 1.0)


def rrsc_mse(d: int, epsilon: float, bits: int, n: int, k: int | None = None) -> float:
    """The exact MSE E‖x̂ − x̄‖² = (C² − 1)/n of RRSC's mean estimate over ``n`` users
    (squared Euclidean norm of the error, unit input vectors; dimensionless)."""
    n = check_dimension(n, minimum=1, name="n")
    return rrsc_parameters(d, epsilon, bits, k).variance_per_user / n


def haar_frame(d: int, m: int, seed: SeedLike = None) -> np.ndarray:
    """A uniformly random (Haar) frame: ``(d, m)`` matrix with orthonormal columns, m ≤ d.

    QR of a Gaussian matrix with the signs of R's diagonal moved into Q (which makes Q exactly
    Haar-distributed).
    """
    rng = as_generator(seed)
    q, r = np.linalg.qr(rng.standard_normal((d, m)))
    return q * np.where(np.diag(r) < 0, -1.0, 1.0)


class RRSC:
    """The RRSC mechanism at fixed (d, ε, b): encoder, decoder and exact MSE.

    Parameters: ``d`` vector dimension (≥ 2); ``epsilon`` ε > 0 (nats); ``bits`` b ≥ 1
    (M = 2^b ≤ d + 1 codewords); ``k`` favoured codewords (default: the MSE-optimal k).

    Attributes: ``d``, ``epsilon``, ``bits``, ``n_codewords`` (M), ``k``,
    ``unbiasing_constant`` (C), ``variance_per_user`` (C² − 1), ``codebook`` (M, M−1).
    """

    def __init__(self, d: int, epsilon: float, bits: int, *, k: int | None = None):
        p = rrsc_parameters(d, epsilon, bits, k)
        self.params = p
        self.d, self.epsilon, self.bits = p.d, p.epsilon, p.bits
        self.n_codewords, self.k = p.n_codewords, p.k
        self.unbiasing_constant = p.unbiasing_constant
        self.variance_per_user = p.variance_per_user
        self.codebook = simplex_codebook(self.n_codewords)
        # P(send a given one of the k closest) and P(send a given other), scaled by e^{-ε}.
        denom = self.k + (self.n_codewords - self.k) * math.exp(-self.epsilon)
        self._p_top = 1.0 / denom
        self._p_rest = math.exp(-self.epsilon) / denom

    def __repr__(self) -> str:
        return (f"RRSC(d={self.d}, epsilon={self.epsilon:g}, bits={self.bits}, k={self.k}, "
                f"C={self.unbiasing_constant:.6g})")

    def mse(self, n: int) -> float:
        """Exact E‖x̂ − x̄‖² = (C² − 1)/n of the mean over ``n`` users."""
        return self.variance_per_user / check_dimension(n, minimum=1, name="n")

    # ----------------------------------------------------------------- literal mechanism
    def frame(self, seed: SeedLike = None) -> np.ndarray:
        """A shared random frame, shape ``(d, M − 1)`` (one per user; see :func:`haar_frame`)."""
        return haar_frame(self.d, self.n_codewords - 1, seed)

    def _check_frames(self, frames, n: int) -> np.ndarray:
        f = np.asarray(frames, dtype=np.float64)
        if f.ndim == 2:
            f = np.broadcast_to(f, (n,) + f.shape)
        want = (n, self.d, self.n_codewords - 1)
        if f.shape != want:
            raise PrivacyParameterError(f"frames must have shape (d, M-1) or {want}, got {np.shape(frames)}")
        return f

    def inner_products(self, vectors, frames) -> np.ndarray:
        """⟨x_i, F_i c_j⟩ for every user i and codeword j, shape ``(n, M)``.

        ``vectors`` unit vectors ``(n, d)``; ``frames`` ``(d, M−1)`` (shared by all) or
        ``(n, d, M−1)`` (one per user).
        """
        x = check_unit_vectors(vectors, self.d)
        f = self._check_frames(frames, x.shape[0])
        return np.matmul(x[:, None, :], f)[:, 0, :] @ self.codebook.T

    def output_probabilities(self, vectors, frames) -> np.ndarray:
        """P(index j | x_i, F_i), shape ``(n, M)``; rows sum to 1.

        e^ε/(k·e^ε + M − k) for the k codewords closest to x_i, 1/(k·e^ε + M − k) otherwise.
        """
        s = self.inner_products(vectors, frames)
        top = np.argpartition(-s, self.k - 1, axis=1)[:, : self.k]
        p = np.full(s.shape, self._p_rest)
        np.put_along_axis(p, top, self._p_top, axis=1)
        return p

    def _sample(self, s: np.ndarray, rng: np.random.Generator) -> np.ndarray:
        """Sample one index per row of inner products ``s`` (n, M): with probability
        k·e^ε/(k·e^ε + M − k) a uniform one of the k largest, else a uniform one of the rest."""
        n, m = s.shape
        k = self.k
        order = np.argpartition(-s, k - 1, axis=1)  # first k columns: the k largest
        in_top = rng.random(n) < k * self._p_top
        pos = np.where(in_top, rng.integers(0, k, n), k + rng.integers(0, m - k, n))
        return order[np.arange(n), pos]

    def encode(self, vectors, frames, seed: SeedLike = None) -> np.ndarray:
        """Client side: the index each user sends, ``(n,)`` int64 in [0, M) (b bits each).

        ``seed`` is the users' *private* randomness (it must not be known to the server).
        """
        s = self.inner_products(vectors, frames)
        return self._sample(s, as_generator(seed))

    def _check_indices(self, indices) -> np.ndarray:
        idx = np.asarray(indices)
        if idx.ndim != 1 or not np.issubdtype(idx.dtype, np.integer):
            raise PrivacyParameterError(f"indices must be a 1-D integer array, got dtype {idx.dtype}, shape {idx.shape}")
        if idx.size and (idx.min() < 0 or idx.max() >= self.n_codewords):
            bad = idx[(idx < 0) | (idx >= self.n_codewords)][0]
            raise PrivacyParameterError(f"indices must be in [0, {self.n_codewords - 1}], got {int(bad)}")
        return idx.astype(np.int64)

    def decode(self, indices, frames) -> np.ndarray:
        """Server side: each user's unbiased estimate C·F_i c_{j_i}, shape ``(n, d)``."""
        idx = self._check_indices(indices)
        f = self._check_frames(frames, idx.size)
        return self.unbiasing_constant * np.matmul(f, self.codebook[idx][:, :, None])[:, :, 0]

    # ----------------------------------------------------------------- fast simulation
    def simulate_each(self, vectors, seed: SeedLike = None) -> np.ndarray:
        """Each user's decoded estimate C·F_i c_{j_i}, shape ``(n, d)``, drawn from exactly the
        distribution of the literal mechanism (:meth:`encode` then :meth:`decode` with fresh
        Haar frames) without building any frame.

        Why it is exact: z = F_iᵀx_i is the first M − 1 coordinates of a uniform unit vector
        of R^d, so the inner products are ⟨x_i, F_i c_j⟩ = sqrt(M/(M−1))·(h_j − h̄)/r with
        h ~ N(0, I_M) and r² = ‖h − h̄‖² + χ²_{d−M+1}; and given z and the index j, F_i is
        invariant under rotations that fix x_i, so the unit codeword u = F_i c_j equals
        s_j·x_i + sqrt(1 − s_j²)·w with w uniform on the unit sphere of x_i^⊥.
        Cost O(n·(M + d)).
        """
        x = check_unit_vectors(vectors, self.d)
        rng = as_generator(seed)
        n, d = x.shape
        m = self.n_codewords
        h = rng.standard_normal((n, m))
        h -= h.mean(axis=1, keepdims=True)
        r2 = np.einsum("ij,ij->i", h, h)
        if d - m + 1 > 0:
            r2 += rng.chisquare(d - m + 1, n)
        s = math.sqrt(m / (m - 1)) * h / np.sqrt(r2)[:, None]
        j = self._sample(s, rng)
        s_j = s[np.arange(n), j]
        w = rng.standard_normal((n, d))
        w -= np.einsum("ij,ij->i", w, x)[:, None] * x
        w /= np.linalg.norm(w, axis=1, keepdims=True)
        u = s_j[:, None] * x + np.sqrt(np.clip(1.0 - s_j * s_j, 0.0, None))[:, None] * w
        return self.unbiasing_constant * u

    def simulate_mean(self, vectors, seed: SeedLike = None, *, chunk: int = 2048) -> np.ndarray:
        """The server's mean estimate (1/n) Σ C·F_i c_{j_i}, shape ``(d,)``, drawn from exactly
        the distribution of the literal mechanism (see :meth:`simulate_each`); ``chunk`` users
        at a time bound the memory."""
        x = check_unit_vectors(vectors, self.d)
        rng = as_generator(seed)
        total = np.zeros(self.d)
        for start in range(0, x.shape[0], chunk):
            total += self.simulate_each(x[start : start + chunk], rng).sum(axis=0)
        return total / x.shape[0]


class RRSCAggregator:
    """Private aggregation of client vectors through RRSC, for a federated server.

    ``RRSCAggregator(d, epsilon, bits, seed)``: ``seed`` is the *shared* randomness of the
    clients and the server. The frame of client ``c`` in round ``r`` is derived from
    (seed, r, c) alone, so clients and server regenerate it independently, in any order.

    - ``encode(vectors, client_ids=..., round=..., seed=...) -> indices`` runs on the clients:
      ``vectors`` ``(n, d)`` unit vectors (clip/normalise updates first and send the norm
      separately if needed), returns ``(n,)`` int64 indices in [0, 2^bits); ``seed`` is the
      clients' private randomness and must stay unknown to the server.
    - ``decode(indices, client_ids=..., round=...) -> (d,)`` runs on the server: the unbiased
      mean estimate, with E‖estimate − mean‖² = (C² − 1)/n.
    - ``decode_each`` returns the ``(n, d)`` per-client estimates (for weighted means).

    Each client costs one QR of a d × (2^b − 1) matrix on each side. A Flower-style strategy
    wraps this object in its aggregation hook.
    """

    def __init__(self, d: int, epsilon: float, bits: int, seed: SeedLike = None, *, k: int | None = None):
        self.mechanism = RRSC(d, epsilon, bits, k=k)
        self.d = self.mechanism.d
        self._shared = as_seed_sequence(seed)

    def __repr__(self) -> str:
        return f"RRSCAggregator({self.mechanism!r})"

    @property
    def bits_per_client(self) -> int:
        """Bits each client sends per round (b)."""
        return self.mechanism.bits

    def mse(self, n: int) -> float:
        """Exact E‖decode(...) − mean‖² for ``n`` clients: (C² − 1)/n."""
        return self.mechanism.mse(n)

    def _ids(self, client_ids, n: int) -> np.ndarray:
        if client_ids is None:
            return np.arange(n)
        ids = np.asarray(client_ids)
        if ids.shape != (n,) or not np.issubdtype(ids.dtype, np.integer) or (ids.size and ids.min() < 0):
            raise PrivacyParameterError(
                f"client_ids must be {n} non-negative integers (one per vector/index), got shape {ids.shape}"
            )
        return ids

    def frame(self, client_id: int, round: int = 0) -> np.ndarray:
        """The shared frame of ``client_id`` in ``round``, shape ``(d, 2^b − 1)``."""
        ss = np.random.SeedSequence(
            self._shared.entropy, spawn_key=tuple(self._shared.spawn_key) + (int(round), int(client_id))
        )
        return self.mechanism.frame(ss)

    def _frames(self, ids, round: int) -> np.ndarray:
        return np.stack([self.frame(c, round) for c in ids])

    def encode(self, vectors, *, client_ids=None, round: int = 0, seed: SeedLike = None, chunk: int = 64) -> np.ndarray:
        """Indices ``(n,)`` int64 in [0, 2^b) that the clients send (see the class docstring)."""
        x = check_unit_vectors(vectors, self.d)
        ids = self._ids(client_ids, x.shape[0])
        rng = as_generator(seed)
        out = np.empty(x.shape[0], dtype=np.int64)
        for a in range(0, x.shape[0], chunk):
            out[a : a + chunk] = self.mechanism.encode(x[a : a + chunk], self._frames(ids[a : a + chunk], round), rng)
        return out

    def decode_each(self, indices, *, client_ids=None, round: int = 0, chunk: int = 64) -> np.ndarray:
        """Per-client unbiased estimates, shape ``(n, d)``."""
        idx = self.mechanism._check_indices(indices)
        ids = self._ids(client_ids, idx.size)
        out = np.empty((idx.size, self.d))
        for a in range(0, idx.size, chunk):
            out[a : a + chunk] = self.mechanism.decode(idx[a : a + chunk], self._frames(ids[a : a + chunk], round))
        return out

    def decode(self, indices, *, client_ids=None, round: int = 0) -> np.ndarray:
        """The server's unbiased estimate of the clients' mean vector, shape ``(d,)``."""
        if np.size(indices) == 0:
            raise PrivacyParameterError("decode needs at least one index")
        return self.decode_each(indices, client_ids=client_ids, round=round).mean(axis=0)
