"""SuRP: successive-refinement pruning (thesis ch.2; Isik, Weissman, No, *An
Information-Theoretic Justification for Model Pruning*, AISTATS 2022; docs/pruning.md).

The weights of a trained network are close to Laplacian. For a Laplacian source the
rate-distortion function under absolute error is R(D) = −ln(λD) nats (0 < D ≤ 1/λ), the
Laplacian is successively refinable, and the optimal reconstruction is exactly zero with
probability (λD)²: a good compressor prunes. SuRP is the successive-refinement coder that
follows from it, applied to the magnitudes of the weights:

1. Normalise each layer by its L2 norm (kept as float32 side information), keep the signs,
   and concatenate the magnitudes into ``u`` (length ``n``).
2. ``s = ln(n / ln n)``; ``λ⁻¹ = (α/s)·mean(u)`` with ``α = 10``; the threshold is
   ``θ = λ⁻¹·s`` (= α·mean(u) at the start of an epoch).
3. Repeat: pick a random index ``m`` with ``u_m > θ`` and send it; ``ŵ_m += θ``,
   ``u_m −= θ``; then shrink ``λ⁻¹ ← λ⁻¹·(1 − 1/n)`` (``lam_rule="n-1"``, DESIGN's and the
   authors' code's rule; ``"n-s"`` shrinks by (1 − s/n), ``"mean"`` recomputes
   ``λ⁻¹ = (α/s)·mean residual`` after every step — see :data:`LAM_RULES` and docs/pruning.md).
4. When no index qualifies, *reset*: ``λ⁻¹ = (α/s)·mean(residual)`` — the same formula as
   at the start, so the threshold is again α times the mean residual (in the authors'
   code the variable ``alpha`` already holds α/s) — and every 20th reset first decays
   ``α ← 0.9·α``. The mean is over the non-zero residuals (the authors' iterative code;
   identical for a dense input, and it ignores already-pruned zeros).

Weights never picked stay exactly 0 (pruned); a picked weight is ``sign·‖layer‖·Σ θ_t``
over the steps that picked it.

**Index choice and rate.** The random choice *is* the index code: encoder and decoder share
a random stream of i.i.d. uniform indices ``j_1, j_2, …`` in ``[0, n)`` (from ``seed``);
the encoder sends the position ``K`` of the first stream entry that is a candidate and the
decoder reads ``m = j_K``. So ``m`` is uniform over the candidates and ``K`` is exactly
geometric with ``p = #candidates/n`` — the paper's geometric index cost — and a Golomb-family
code (Golomb–Rice or exponential-Golomb, whose order the encoder picks per epoch) writes it
in about ``log₂(1/p) + 1.5`` bits. A weight's sign costs 1 bit the first time it is picked.
Side information: the layer norms (float32), Σu (float64) and the number of non-zero inputs
— from which the decoder computes every λ⁻¹ itself, since the mean residual is
(Σu − Σθ_t)/n_nonzero — the α schedule and the λ rule, the number of epochs and, per epoch (the steps
between resets), the resets before it, its step count (Elias gamma) and its code (7 bits).
:meth:`SurpCode.to_bytes` writes exactly these bits and :func:`surp_decode` rebuilds the
weights from them and the seed, bit for bit.

Distortion: what SuRP reduces is the absolute error of the normalised magnitudes — every
step removes exactly ``θ`` from ``Σ|u − û|`` — the distortion of R(D) = −ln(λD).
"""

from __future__ import annotations

import heapq
import math
from dataclasses import dataclass, field
from typing import Any, NamedTuple, Sequence

import numpy as np

from analogmem._checks import check_fraction, check_positive
from analogmem._io import progress as progress_bar
from analogmem._seeding import SeedLike, as_seed_sequence

from ._errors import PruningError
from .codes import CODE_FAMILIES, BitReader, BitWriter, best_code, code_lengths, elias_gamma_length

__all__ = [
    "DEFAULT_ALPHA",
    "ALPHA_DECAY",
    "DECAY_EVERY",
    "LAM_RULES",
    "RefinementRun",
    "SurpCode",
    "check_layers",
    "scale_factor",
    "successive_refinement",
    "surp_decode",
    "surp_encode",
    "target_nonzero",
]

#: α of the threshold α·mean(residual) (the paper's and the authors' default).
DEFAULT_ALPHA = 10.0
#: α ← ALPHA_DECAY·α every DECAY_EVERY resets.
ALPHA_DECAY = 0.9
DECAY_EVERY = 20

#: How λ⁻¹ changes after a step: ``"n-1"`` λ⁻¹·(1 − 1/n) (DESIGN and the authors' code, the
#: default); ``"n-s"`` λ⁻¹·(1 − s/n); ``"mean"`` λ⁻¹ = (α/s)·mean residual recomputed every step
#: (the reset formula, so θ = α·mean residual throughout). See docs/pruning.md.
LAM_RULES = ("n-1", "n-s", "mean")

_FIRST_CHUNK = 1024
_MAX_CHUNK = 1 << 20


def scale_factor(n: int) -> float:
    """``s = ln(n / ln n)`` for ``n ≥ 2`` weights (nats)."""
    if n < 2:
        raise PruningError(f"SuRP needs at least 2 weights, got n={n}")
    return math.log(n / math.log(n))


def target_nonzero(n: int, sparsity: float) -> int:
    """Number of weights kept at ``sparsity`` (fraction of zeros, in [0, 1)) among ``n``:
    ``round((1 − sparsity)·n)``, at least 1."""
    check_fraction(sparsity, "sparsity", zero=True, one=False, error=PruningError)
    keep = int(round((1.0 - float(sparsity)) * n))
    if keep < 1:
        raise PruningError(f"sparsity={sparsity!r} keeps no weight of n={n}; the largest allowed is "
                           f"{1.0 - 0.5 / n:.6g}")
    return keep


def check_layers(layers: Sequence[Any], names: Sequence[str] | None = None) -> tuple[list[np.ndarray], list[str]]:
    """Validate weight tensors (numpy arrays or torch tensors) and return them as float64
    arrays with their names. Raises :class:`PruningError` naming the layer for an empty
    layer or NaN/inf values."""
    if isinstance(layers, np.ndarray) or hasattr(layers, "detach"):
        layers = [layers]
    layers = list(layers)
    if not layers:
        raise PruningError("no layers to prune")
    names = [f"layer{i}" for i in range(len(layers))] if names is None else list(names)
    if len(names) != len(layers):
        raise PruningError(f"{len(names)} names for {len(layers)} layers")
    out = []
    for name, w in zip(names, layers):
        if hasattr(w, "detach"):
            w = w.detach().cpu().numpy()
        a = np.asarray(w)
        if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer)):
            raise PruningError(f"layer {name!r} has dtype {a.dtype}; weights must be real numbers")
        a = a.astype(np.float64)
        if a.size == 0:
            raise PruningError(f"layer {name!r} is empty (shape {a.shape})")
        bad = ~np.isfinite(a)
        if bad.any():
            i = int(np.flatnonzero(bad.reshape(-1))[0])
            raise PruningError(f"layer {name!r} has {int(bad.sum())} NaN/inf weights (first at flat index {i}: "
                               f"{a.reshape(-1)[i]})")
        out.append(a)
    return out, names


# --------------------------------------------------------------------------- shared index stream

def geometric_code_bits(n_candidates: np.ndarray, gaps: np.ndarray, n: int) -> np.ndarray:
    """−log₂ P(K = k) of each gap k under Geometric(p = n_candidates/n) (bits, one per step);
    a step where every index is a candidate (p = 1, k = 1) costs 0 bits."""
    p = np.asarray(n_candidates, dtype=np.float64) / n
    k = np.asarray(gaps, dtype=np.float64)
    with np.errstate(divide="ignore", invalid="ignore"):
        tail = np.where(k > 1, (k - 1) * np.log1p(-p), 0.0)
    return -np.log2(p) - tail / math.log(2.0)

class _IndexStream:
    """The shared random index stream of SuRP: for every step, i.i.d. uniform indices in
    ``[0, n)`` (``⌊n·U⌋``, ``U`` a float64 uniform), drawn in chunks of 1024, 2048, … up to
    2²⁰ — the same chunks on both sides, so encoder and decoder stay in step."""

    def __init__(self, seed_seq: np.random.SeedSequence, n: int):
        self._gen = np.random.Generator(np.random.PCG64(seed_seq))
        self._n = n

    def _chunk(self, size: int) -> np.ndarray:
        j = (self._gen.random(size) * self._n).astype(np.int64)
        np.minimum(j, self._n - 1, out=j)
        return j

    def first_hit(self, is_candidate: np.ndarray) -> tuple[int, int]:
        """``(K, m)``: the 1-based position of the first candidate in this step's stream and
        the candidate (needs at least one candidate)."""
        offset, size = 0, _FIRST_CHUNK
        while True:
            j = self._chunk(size)
            hits = is_candidate[j]
            i = int(np.argmax(hits))
            if hits[i]:
                return offset + i + 1, int(j[i])
            offset += size
            size = min(2 * size, _MAX_CHUNK)

    def at(self, k: int) -> int:
        """The ``k``-th index of this step's stream (the decoder's side)."""
        offset, size = 0, _FIRST_CHUNK
        while True:
            j = self._chunk(size)
            if k <= offset + size:
                return int(j[k - offset - 1])
            offset += size
            size = min(2 * size, _MAX_CHUNK)


def _seed_state(ss: np.random.SeedSequence) -> dict[str, Any]:
    return {"entropy": int(ss.entropy), "spawn_key": [int(k) for k in ss.spawn_key], "pool_size": int(ss.pool_size)}


def _seed_from_state(state: dict[str, Any]) -> np.random.SeedSequence:
    return np.random.SeedSequence(int(state["entropy"]), spawn_key=tuple(state["spawn_key"]),
                                  pool_size=int(state["pool_size"]))


# --------------------------------------------------------------------------- the algorithm
@dataclass
class RefinementRun:
    """What :func:`successive_refinement` did, step by step (``T`` steps, ``E`` epochs).

    Attributes:
        n: number of magnitudes; ``scale``: s = ln(n/ln n); ``alpha0``, ``decay``,
            ``decay_every``: the α schedule; ``u_sum``: Σu (float64) and ``positive``: the
            number of non-zero inputs — with them the decoder computes every λ⁻¹ itself.
        indices, gaps: (T,) int64 — the index ``m_t`` picked at step t and its position
            ``K_t ≥ 1`` in the shared stream (geometric with ``p_t = n_candidates_t/n``).
        thresholds: (T,) float64 — θ_t = s·λ⁻¹_t, what step t added to ``ŵ_{m_t}``.
        n_candidates: (T,) int64 — #{i : u_i > θ_t} at step t.
        residual_before: (T,) float64 — u_{m_t} before step t.
        new: (T,) bool — step t picked a weight for the first time (its sign is sent).
        epoch_of_step: (T,) int64.
        epoch_lam_inv, epoch_alpha: (E,) float64 — λ⁻¹ and α at the start
            of each epoch; ``epoch_resets``: (E,) int64 — resets before it (0 for the
            first; a reset that found no candidate leaves an epoch of 0 steps);
            ``epoch_steps``: (E,) int64.
        reconstruction, residual: (n,) float64 — û and u − û.
        n_resets, alpha_final, stop_reason ("steps", "nonzero", "distortion", "exhausted").
        lam_rule: the λ⁻¹ update after each step (one of :data:`LAM_RULES`).
    """

    n: int
    scale: float
    alpha0: float
    decay: float
    decay_every: int
    u_sum: float
    positive: int
    indices: np.ndarray
    gaps: np.ndarray
    thresholds: np.ndarray
    n_candidates: np.ndarray
    residual_before: np.ndarray
    new: np.ndarray
    epoch_of_step: np.ndarray
    epoch_lam_inv: np.ndarray
    epoch_alpha: np.ndarray
    epoch_resets: np.ndarray
    epoch_steps: np.ndarray
    reconstruction: np.ndarray
    residual: np.ndarray
    n_resets: int
    alpha_final: float
    stop_reason: str
    lam_rule: str = "n-1"

    @property
    def n_steps(self) -> int:
        return int(self.indices.size)

    @property
    def nonzero(self) -> int:
        return int(np.count_nonzero(self.reconstruction))


def _lam_inv(alpha: float, s: float, u_sum: float, sent: float, positive: int) -> float:
    """λ⁻¹ = (α/s)·mean residual, the mean over the ``positive`` non-zero inputs computed from
    running sums (Σ residual = Σu − Σθ), so the decoder can compute it too."""
    return (alpha / s) * ((u_sum - sent) / positive)


def _next_lam(rule: str, lam: float, n: int, s: float, alpha: float, u_sum: float, sent: float,
              positive: int) -> float:
    """λ⁻¹ for the next step under ``rule`` (encoder and decoder share this)."""
    if rule == "n-1":
        return lam * (1.0 - 1.0 / n)
    if rule == "n-s":
        return lam * (1.0 - s / n)
    return _lam_inv(alpha, s, u_sum, sent, positive)


def _check_rule(lam_rule: Any) -> str:
    if lam_rule not in LAM_RULES:
        raise PruningError(f"lam_rule must be one of {LAM_RULES}, got {lam_rule!r}")
    return str(lam_rule)


class _Step(NamedTuple):
    """One refinement step: index ``m_t`` picked, its position ``K_t`` in the stream, the
    threshold θ_t added, candidates then, residual of ``m_t`` before, first pick, epoch."""

    index: int
    gap: int
    threshold: float
    n_candidates: int
    residual_before: float
    new: bool
    epoch: int


@dataclass
class _Epoch:
    """One epoch (between resets): λ⁻¹ and α at its start, resets before it, steps in it."""

    lam_inv: float
    alpha: float
    resets: int
    steps: int = 0


class _Candidates:
    """The candidate set {i : residual_i > θ} kept incrementally as θ falls: untouched
    inputs enter in descending order of ``u``; a picked input whose residual fell to or below
    the threshold waits on a max-heap until θ falls below its residual."""

    def __init__(self, u: np.ndarray):
        self.order = np.argsort(-u, kind="stable")
        self.neg_sorted = -u[self.order]
        self.ptr = 0
        self.heap: list[tuple[float, int]] = []
        self.mask = np.zeros(u.size, dtype=bool)
        self.count = 0

    def activate(self, theta: float) -> None:
        """Add every input whose residual is now above ``theta``."""
        k = int(np.searchsorted(self.neg_sorted, -theta, side="left"))  # entries with u > theta
        if k > self.ptr:
            self.mask[self.order[self.ptr:k]] = True
            self.count += k - self.ptr
            self.ptr = k
        heap = self.heap
        while heap and -heap[0][0] > theta:
            _, i = heapq.heappop(heap)
            self.mask[i] = True
            self.count += 1

    def drop(self, m: int, residual: float) -> None:
        """Input ``m`` (residual ``residual``) is no longer above the threshold."""
        self.mask[m] = False
        self.count -= 1
        heapq.heappush(self.heap, (-residual, m))


def _check_refinement(u: Any, alpha: Any, decay: Any, decay_every: Any, target_nonzero: int | None,
                      max_steps: int | None, target_mean_residual: float | None) -> tuple[np.ndarray, int]:
    """The magnitudes as a flat float64 array and their non-zero count, every setting
    checked (:class:`PruningError` naming the value)."""
    u = np.asarray(u, dtype=np.float64).reshape(-1)
    if not np.all(np.isfinite(u)) or (u.size and float(u.min()) < 0):
        raise PruningError("successive_refinement needs finite non-negative magnitudes")
    check_positive(alpha, "alpha", error=PruningError)
    if not (0 < decay <= 1) or int(decay_every) < 1:
        raise PruningError(f"need 0 < decay <= 1 and decay_every >= 1, got decay={decay!r}, decay_every={decay_every!r}")
    if target_nonzero is None and max_steps is None and target_mean_residual is None:
        raise PruningError("give a stopping target: target_nonzero, max_steps or target_mean_residual")
    positive = int(np.count_nonzero(u))
    if positive == 0:
        raise PruningError("all magnitudes are zero: nothing to refine")
    if target_nonzero is not None and not 1 <= target_nonzero <= positive:
        raise PruningError(f"target_nonzero={target_nonzero} must be in [1, {positive}] (the non-zero inputs)")
    return u, positive


def _target_reached(t: int, nnz: int, mean_residual: float, max_steps: int | None, target_nonzero: int | None,
                    target_mean_residual: float | None) -> str | None:
    """The stop reason if a target is met before step ``t`` (``nnz`` non-zeros so far, mean
    residual ``mean_residual``), else None."""
    if max_steps is not None and t >= max_steps:
        return "steps"
    if target_nonzero is not None and nnz >= target_nonzero:
        return "nonzero"
    if target_mean_residual is not None and mean_residual <= target_mean_residual:
        return "distortion"
    return None


def successive_refinement(u: np.ndarray, *, seed: SeedLike = None, alpha: float = DEFAULT_ALPHA,
                          target_nonzero: int | None = None, max_steps: int | None = None,
                          target_mean_residual: float | None = None, decay: float = ALPHA_DECAY,
                          decay_every: int = DECAY_EVERY, progress: bool = False,
                          lam_rule: str = "n-1") -> RefinementRun:
    """Run SuRP's successive refinement on non-negative magnitudes ``u`` (shape (n,)).

    Stops before the first step at which ``max_steps`` steps were made, the reconstruction
    has ``target_nonzero`` non-zero entries, or the mean residual ``Σ(u − û)/n`` is at most
    ``target_mean_residual`` (units of ``u``) — or when every residual is 0. At least one
    of the three targets is required. ``seed`` fixes the shared index stream. ``lam_rule``
    is the λ⁻¹ update after each step (:data:`LAM_RULES`; default ``"n-1"``, DESIGN's and the
    authors' (1 − 1/n) shrink).
    """
    lam_rule = _check_rule(lam_rule)
    u, positive = _check_refinement(u, alpha, decay, decay_every, target_nonzero, max_steps, target_mean_residual)
    n = int(u.size)
    st = _Refinement(u, scale_factor(n), float(alpha), positive, lam_rule)
    stream = _IndexStream(as_seed_sequence(seed), n)
    bar = progress_bar(total=target_nonzero if target_nonzero is not None else max_steps, enabled=progress, desc="SuRP",
                       unit="nz" if target_nonzero is not None else "step", mininterval=0.5)
    empty_resets = 0
    while True:
        stop_reason = _target_reached(len(st.steps), st.nnz, (st.u_sum - st.sent) / n, max_steps, target_nonzero,
                                      target_mean_residual)
        if stop_reason is not None:
            break
        if st.cand.count == 0:  # reset: a new epoch with a fresh λ⁻¹ (and α decayed every decay_every resets)
            empty_resets += 1
            if empty_resets > 100_000:
                raise PruningError(f"{empty_resets} resets in a row found no index above the threshold "
                                   f"(alpha={st.alpha!r}, decay={decay!r}); use decay < 1")
            st.resets += 1
            if st.resets % decay_every == 0:
                st.alpha *= decay
            if not st.u_sum - st.sent > 0:
                stop_reason = "exhausted"
                break
            st.new_epoch()
            continue
        empty_resets = 0
        if st.step(*stream.first_hit(st.cand.mask)) or target_nonzero is None:
            bar.update(1)
    bar.close()
    return RefinementRun(
        n=n, scale=st.s, alpha0=float(alpha), decay=float(decay), decay_every=int(decay_every), u_sum=st.u_sum,
        positive=positive, **_step_arrays(st.steps), **_epoch_arrays(st.epochs), reconstruction=st.recon,
        residual=st.res, n_resets=st.resets, alpha_final=st.alpha, stop_reason=stop_reason, lam_rule=lam_rule,
    )


class _Refinement:
    """The state of one run of successive refinement: residuals ``res`` and reconstruction
    ``recon`` (units of ``u``), Σθ sent so far, the candidate set, λ⁻¹ and α, the steps and
    epochs so far."""

    def __init__(self, u: np.ndarray, s: float, alpha: float, positive: int, lam_rule: str):
        self.n, self.s, self.alpha, self.positive, self.lam_rule = int(u.size), s, alpha, positive, lam_rule
        self.cand = _Candidates(u)
        self.res = u.copy()
        self.recon = np.zeros(self.n)
        self.u_sum = float(u.sum())
        self.sent = 0.0  # Σ θ_t so far; Σ residual = u_sum − sent exactly (every picked residual stays > 0)
        self.nnz = 0
        self.resets = 0
        self.steps: list[_Step] = []
        self.epochs: list[_Epoch] = []
        self.new_epoch()

    def new_epoch(self) -> None:
        """Start an epoch: λ⁻¹ from the mean residual at the current α; activate its candidates."""
        self.lam = _lam_inv(self.alpha, self.s, self.u_sum, self.sent, self.positive)
        self.epochs.append(_Epoch(self.lam, self.alpha, self.resets))
        self.cand.activate(self.s * self.lam)

    def step(self, k: int, m: int) -> bool:
        """Step at index ``m`` (position ``k`` in the stream): add θ = s·λ⁻¹ to ``recon[m]``,
        shrink λ⁻¹ by the rule, update the candidates. Returns whether ``m`` was new."""
        s, res, cand = self.s, self.res, self.cand
        theta = s * self.lam
        r_before = float(res[m])
        is_new = bool(self.recon[m] == 0.0)
        self.steps.append(_Step(m, k, theta, cand.count, r_before, is_new, len(self.epochs) - 1))
        self.epochs[-1].steps += 1
        self.recon[m] += theta
        res[m] = r_before - theta
        self.sent += theta
        if is_new:
            self.nnz += 1
        self.lam = _next_lam(self.lam_rule, self.lam, self.n, s, self.alpha, self.u_sum, self.sent, self.positive)
        if not res[m] > s * self.lam:
            cand.drop(m, float(res[m]))
        cand.activate(s * self.lam)
        return is_new


def _step_arrays(steps: list[_Step]) -> dict[str, np.ndarray]:
    """The per-step fields of a :class:`RefinementRun`, each a (T,) array."""
    cols = list(zip(*steps)) if steps else [()] * len(_Step._fields)
    types = (np.int64, np.int64, np.float64, np.int64, np.float64, bool, np.int64)
    names = ("indices", "gaps", "thresholds", "n_candidates", "residual_before", "new", "epoch_of_step")
    return {name: np.asarray(col, dtype=t) for name, col, t in zip(names, cols, types)}


def _epoch_arrays(epochs: list[_Epoch]) -> dict[str, np.ndarray]:
    """The per-epoch fields of a :class:`RefinementRun`, each an (E,) array."""
    return {"epoch_lam_inv": np.array([e.lam_inv for e in epochs], dtype=np.float64),
            "epoch_alpha": np.array([e.alpha for e in epochs], dtype=np.float64),
            "epoch_resets": np.array([e.resets for e in epochs], dtype=np.int64),
            "epoch_steps": np.array([e.steps for e in epochs], dtype=np.int64)}


# --------------------------------------------------------------------------- the code
def _gamma(k: int) -> int:
    return int(elias_gamma_length(int(k)))


@dataclass
class SurpCode:
    """A SuRP encoding of a list of weight tensors (layers): the run, the side information
    and the bit accounting. :meth:`layers` gives the reconstruction, :meth:`to_bytes` the
    bitstream that :func:`surp_decode` decodes.

    Attributes:
        run: the :class:`RefinementRun` on the normalised magnitudes.
        names, shapes: the layers.
        norms: (L,) float32 — each layer's L2 norm (side information).
        signs: (n,) int8 — signs of the normalised weights (+1 for zeros).
        seed_state: the shared stream's seed (entropy, spawn key, pool size), which the
            decoder needs (shared randomness, not sent).
        epoch_codes: per epoch with ≥ 1 step, ``(family, order, bits)`` of its index code.
    """

    run: RefinementRun
    names: list[str]
    shapes: list[tuple[int, ...]]
    norms: np.ndarray
    signs: np.ndarray
    seed_state: dict[str, Any]
    epoch_codes: list[tuple[str, int, int]] = field(default_factory=list)

    # ------------------------------------------------------------ sizes and bits
    @property
    def n(self) -> int:
        return self.run.n

    @property
    def n_steps(self) -> int:
        return self.run.n_steps

    @property
    def nonzero(self) -> int:
        return self.run.nonzero

    @property
    def sparsity(self) -> float:
        """Fraction of weights that are exactly zero."""
        return 1.0 - self.nonzero / self.n

    def _epochs(self) -> list[tuple[int, int, np.ndarray]]:
        """Per non-empty epoch: (epoch id, resets since the previous non-empty epoch, steps)."""
        out, prev = [], 0
        for e in np.flatnonzero(self.run.epoch_steps > 0):
            r = int(self.run.epoch_resets[e])
            out.append((int(e), r - prev, np.flatnonzero(self.run.epoch_of_step == e)))
            prev = r
        return out

    def _fixed_header_bits(self) -> int:
        return (32 * len(self.shapes) + 64 + _gamma(self.run.positive) + 64 + 64 + _gamma(self.run.decay_every)
                + _gamma(LAM_RULES.index(self.run.lam_rule) + 1))

    def step_code_lengths(self) -> np.ndarray:
        """(T,) bits of each step's index code ``K_t`` under its epoch's code."""
        out = np.zeros(self.n_steps, dtype=np.int64)
        for (family, order, _), (_, _, steps) in zip(self.epoch_codes, self._epochs()):
            out[steps] = code_lengths(self.run.gaps[steps], family, order)
        return out

    @property
    def index_bits(self) -> int:
        """Bits of all index codes: Σ_t (code length of K_t)."""
        return int(sum(c[2] for c in self.epoch_codes))

    @property
    def geometric_index_bits(self) -> float:
        """Σ_t −log₂ P(K_t) under Geometric(p_t = n_candidates_t/n): what an entropy coder
        that knew every p_t would spend (the paper's geometric index cost; p_t is known to
        the encoder only, so :attr:`index_bits` is what is actually sent)."""
        return float(np.sum(geometric_code_bits(self.run.n_candidates, self.run.gaps, self.n)))

    @property
    def sign_bits(self) -> int:
        """One bit per weight picked at least once (= the non-zero weights)."""
        return int(self.run.new.sum())

    @property
    def side_bits(self) -> int:
        """Header (layer norms 32 bits each, Σu float64, #non-zero inputs Elias gamma, α₀ and
        the decay factor float64, decay period Elias gamma, λ-rule Elias gamma — 1 bit for the
        default —, #epochs Elias gamma) and, per
        non-empty epoch, the resets since the previous one and the step count (Elias gamma)
        and the code (1-bit family, 6-bit order)."""
        epochs = self._epochs()
        return self._fixed_header_bits() + _gamma(len(epochs) + 1) + sum(
            _gamma(d + 1) + _gamma(steps.size) + 7 for _, d, steps in epochs)

    @property
    def total_bits(self) -> int:
        return self.index_bits + self.sign_bits + self.side_bits

    @property
    def bits_per_weight(self) -> float:
        return self.total_bits / self.n

    def bit_summary(self) -> dict[str, Any]:
        """Bits (index, sign, side, total; per weight) and the run's counts, JSON-ready."""
        return {"index_bits": self.index_bits, "geometric_index_bits": round(self.geometric_index_bits, 1),
                "sign_bits": self.sign_bits, "side_bits": self.side_bits, "total_bits": self.total_bits,
                "bits_per_weight": self.bits_per_weight, "n_weights": self.n, "nonzero": self.nonzero,
                "sparsity": self.sparsity, "steps": self.n_steps, "resets": self.run.n_resets,
                "epochs": len(self.epoch_codes), "alpha_final": self.run.alpha_final}

    # ------------------------------------------------------------ reconstruction
    def flat(self) -> np.ndarray:
        """(n,) float64 reconstruction of all layers, concatenated (signed, un-normalised)."""
        scale = np.repeat(self.norms.astype(np.float64), [int(np.prod(s, dtype=np.int64)) for s in self.shapes])
        return self.signs * self.run.reconstruction * scale

    def layers(self) -> list[np.ndarray]:
        """The reconstructed layers (float64, original shapes); unpicked weights are exactly 0."""
        return _split(self.flat(), self.shapes)

    def rate_trace(self) -> dict[str, np.ndarray]:
        """After each step t = 0…T (0 = nothing sent), arrays of length T + 1:

        * ``bits`` — length of the bitstream cut after step t (each epoch keeps the code
          chosen over its whole run, so this is an achievable rate; the last entry is
          :attr:`total_bits`);
        * ``l1``, ``l2`` — Σ|u − û| and Σ(u − û)² over the normalised magnitudes;
        * ``nonzero`` — weights picked so far.
        """
        run = self.run
        step_bits = self.step_code_lengths() + run.new.astype(np.int64)
        fixed = self._fixed_header_bits()
        bits = np.zeros(self.n_steps + 1, dtype=np.int64)
        bits[0] = fixed + _gamma(1)
        closed = 0
        for k, (_, d, steps) in enumerate(self._epochs()):
            j = np.arange(1, steps.size + 1)
            within = np.cumsum(step_bits[steps])
            bits[steps + 1] = (fixed + _gamma(k + 2) + closed + _gamma(d + 1) + 7 + elias_gamma_length(j) + within)
            closed += _gamma(d + 1) + 7 + _gamma(steps.size) + int(within[-1])
        u = run.reconstruction + run.residual
        drops1 = np.r_[0.0, np.cumsum(run.thresholds)]
        drops2 = np.r_[0.0, np.cumsum(run.thresholds * (2.0 * run.residual_before - run.thresholds))]
        return {"step": np.arange(self.n_steps + 1), "bits": bits, "l1": float(u.sum()) - drops1,
                "l2": float(np.sum(u * u)) - drops2, "nonzero": np.r_[0, np.cumsum(run.new)]}

    # ------------------------------------------------------------ bitstream
    def to_bytes(self) -> bytes:
        """The SuRP bitstream (exactly :attr:`total_bits` bits, zero-padded to whole bytes):

        Elias-gamma(#epochs + 1); the layer norms (float32); Σu (float64); Elias-gamma(#non-zero
        inputs); α₀, decay (float64); Elias-gamma(decay period); Elias-gamma(λ-rule index + 1, see
        :data:`LAM_RULES`); then per non-empty epoch
        Elias-gamma(resets since the previous one + 1), Elias-gamma(#steps), the family bit
        and 6-bit order of its code, and per step the code of ``K_t`` followed — for a
        weight's first pick — by its sign bit (1 = negative).
        """
        run = self.run
        w = BitWriter()
        epochs = self._epochs()
        w.write_gamma(len(epochs) + 1)
        for v in self.norms:
            w.write_float32(float(v))
        w.write_float64(run.u_sum)
        w.write_gamma(run.positive)
        w.write_float64(run.alpha0)
        w.write_float64(run.decay)
        w.write_gamma(run.decay_every)
        w.write_gamma(LAM_RULES.index(run.lam_rule) + 1)
        for (family, order, _), (_, d, steps) in zip(self.epoch_codes, epochs):
            w.write_gamma(d + 1)
            w.write_gamma(steps.size)
            w.write(CODE_FAMILIES.index(family), 1)
            w.write(order, 6)
            for t in steps:
                w.write_code(int(run.gaps[t]), family, order)
                if run.new[t]:
                    w.write(1 if self.signs[run.indices[t]] < 0 else 0, 1)
        if w.n_bits != self.total_bits:  # the accounting and the writer must agree
            raise AssertionError(f"bitstream has {w.n_bits} bits, the accounting says {self.total_bits}")
        return w.getvalue()


def _split(flat: np.ndarray, shapes: Sequence[tuple[int, ...]]) -> list[np.ndarray]:
    out, start = [], 0
    for shape in shapes:
        size = int(np.prod(shape, dtype=np.int64))
        out.append(flat[start:start + size].reshape(shape))
        start += size
    return out


def target_nonzero_for(u: np.ndarray, sparsity: float) -> int:
    """:func:`target_nonzero` for the magnitudes ``u``, checked against their zeros."""
    keep = target_nonzero(int(u.size), sparsity)
    positive = int(np.count_nonzero(u))
    if keep > positive:
        raise PruningError(f"sparsity={sparsity!r} keeps {keep} of {u.size} weights, but only {positive} are "
                           f"non-zero (the input is already {1 - positive / u.size:.4f} sparse)")
    return keep


def surp_encode(layers: Sequence[Any], *, sparsity: float | None = None, target_nonzero: int | None = None,
                max_steps: int | None = None, target_mean_residual: float | None = None,
                names: Sequence[str] | None = None, alpha: float = DEFAULT_ALPHA, seed: SeedLike = None,
                progress: bool = False, lam_rule: str = "n-1") -> SurpCode:
    """Encode weight tensors with SuRP (see the module docstring).

    Args:
        layers: weight tensors (numpy or torch), any shapes; each is normalised by its own
            L2 norm and all are refined together (``n`` = total size).
        sparsity: stop when exactly ``round((1 − sparsity)·n)`` weights are non-zero; or
            give ``target_nonzero``, ``max_steps`` or ``target_mean_residual`` (the mean
            absolute residual of the *normalised* magnitudes).
        names: layer names for error messages.
        alpha: the initial α (10).
        seed: the shared index stream (recorded in the code, so the bitstream decodes).
        lam_rule: the λ⁻¹ update after each step (:data:`LAM_RULES`; default ``"n-1"``; sent in
            the header, so every rule decodes).

    Raises :class:`PruningError` for empty/NaN/all-zero layers (naming the layer) and for a
    sparsity outside [0, 1) or below the fraction of zeros already in the input.
    """
    arrays, names = check_layers(layers, names)
    norms = np.empty(len(arrays), dtype=np.float32)
    mags, signs = [], []
    for i, (name, a) in enumerate(zip(names, arrays)):
        nrm = np.float32(np.linalg.norm(a))
        if not nrm > 0:
            raise PruningError(f"layer {name!r} is all zeros; SuRP normalises each layer by its L2 norm")
        norms[i] = nrm
        wn = a.reshape(-1) / float(nrm)
        mags.append(np.abs(wn))
        signs.append(np.where(wn < 0, -1, 1).astype(np.int8))
    u = np.concatenate(mags)
    if sparsity is not None:
        if target_nonzero is not None:
            raise PruningError("give sparsity or target_nonzero, not both")
        target_nonzero = target_nonzero_for(u, sparsity)
    ss = as_seed_sequence(seed)
    run = successive_refinement(u, seed=ss, alpha=alpha, target_nonzero=target_nonzero, max_steps=max_steps,
                                target_mean_residual=target_mean_residual, progress=progress, lam_rule=lam_rule)
    code = SurpCode(run, names, [tuple(a.shape) for a in arrays], norms, np.concatenate(signs), _seed_state(ss))
    for e in np.flatnonzero(run.epoch_steps > 0):
        code.epoch_codes.append(best_code(run.gaps[run.epoch_of_step == e]))
    return code


def surp_decode(data: bytes, shapes: Sequence[Sequence[int]], seed_state: dict[str, Any]) -> list[np.ndarray]:
    """Rebuild the layers from a :meth:`SurpCode.to_bytes` bitstream, the layer shapes (the
    architecture) and the shared stream's seed (:attr:`SurpCode.seed_state`). The result is
    bit-identical to :meth:`SurpCode.layers`. Raises :class:`PruningError` for a truncated
    or corrupted stream."""
    shapes = [tuple(int(d) for d in s) for s in shapes]
    n = int(sum(int(np.prod(s, dtype=np.int64)) for s in shapes))
    s = scale_factor(n)
    r = BitReader(data)
    n_epochs = r.read_gamma() - 1
    norms = np.array([r.read_float32() for _ in shapes], dtype=np.float32)
    u_sum = r.read_float64()
    positive = r.read_gamma()
    a = r.read_float64()
    decay = r.read_float64()
    decay_every = r.read_gamma()
    rule_id = r.read_gamma() - 1
    if not 0 <= rule_id < len(LAM_RULES):
        raise PruningError(f"corrupted SuRP stream: λ-rule index {rule_id} (known: {len(LAM_RULES)})")
    lam_rule = LAM_RULES[rule_id]
    stream = _IndexStream(_seed_from_state(seed_state), n)
    recon = np.zeros(n)
    signs = np.ones(n, dtype=np.int8)
    resets, sent = 0, 0.0
    for _ in range(n_epochs):
        for _ in range(r.read_gamma() - 1):
            resets += 1
            if resets % decay_every == 0:
                a *= decay
        lam = _lam_inv(a, s, u_sum, sent, positive)
        steps = r.read_gamma()
        family = CODE_FAMILIES[r.read(1)]
        order = r.read(6)
        for _ in range(steps):
            theta = s * lam
            m = stream.at(r.read_code(family, order))
            if recon[m] == 0.0:
                signs[m] = -1 if r.read(1) else 1
            recon[m] += theta
            sent += theta
            lam = _next_lam(lam_rule, lam, n, s, a, u_sum, sent, positive)
    scale = np.repeat(norms.astype(np.float64), [int(np.prod(sh, dtype=np.int64)) for sh in shapes])
    return _split(signs * recon * scale, shapes)
