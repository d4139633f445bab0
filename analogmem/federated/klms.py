"""KLMS: importance-sampling side-information coding of stochastic updates (thesis ch.7).

Isik, Pase, Gündüz, Koyejo, Weissman, Zorzi, *Adaptive Compression in Federated Learning via
Side Information*, AISTATS 2024; docs/federated.md. The client holds a posterior ``q`` over its update,
the server a prior ``p`` (side information: the global model both know). Here both are products
of Bernoulli distributions, ``q_i = P(x_i = 1)`` and ``p_i``, which covers FedPM masks (``q`` = the
client's θ, ``p`` = the global θ) and stochastic sign quantisers (:mod:`.signsgd`).

Encoding, per block of consecutive parameters:

1. **blocks** — adaptive: a block is closed where the running ``KL(q_i‖p_i)`` (bits) — or the
   running KL predicted from ``p`` (``boundaries="predicted"``, below) — reaches
   ``kl_budget_bits`` (≈ 2 bits) or it holds ``max_block`` (≤ 256) parameters
   (:func:`adaptive_block_lengths`);
2. **shared candidates** — both ends draw ``K`` candidates per block from ``p`` with shared
   randomness (``shared_seed``): one uniform ``u_{ik}`` per parameter and candidate, ``x_{ik} =
   [u_{ik} < p_i]`` (:func:`candidate_samples`);
3. **selection** — the client picks candidate ``k`` with probability ``∝ Π_{i∈block}
   q(x_{ik})/p(x_{ik})`` (:func:`importance_weights`), using its private randomness, and sends
   ``k`` in ``log₂K`` bits;
4. the decoder regenerates the candidates and reads off the chosen one (:func:`klms_decode`).

With ``K = 2^⌈kl_budget_bits⌉ ≈ 2^{KL(q‖p) of the block}`` the chosen sample is approximately
distributed as ``q`` and the rate is about ``KL(q‖p)`` bits per block.

**Block boundaries.** The server does not know ``q``, so the client's adaptive boundaries must be
sent, or replaced by boundaries both ends can compute. :func:`klms_encode` has three modes:

* ``boundaries="sent"`` — the client computes adaptive blocks from its own ``KL(q_i‖p_i)`` and
  **sends** every block length (``length − 1`` in ``⌈log₂ max_block⌉`` = 8 bits per block);
* ``boundaries="predicted"`` — both ends cut adaptive blocks on a *predicted* KL profile
  ``κ_i = t[bin(p_i)]``: ``p`` is known to both, the bins are ``n_bins`` equal intervals of [0, 1],
  and the table ``t`` (the client's mean ``KL(q_i‖p_i)`` over the parameters of each bin, as
  float16) is **sent**, 16 bits per occupied bin (≤ 256 bits per message, whatever ``N``;
  :func:`predicted_kl`);
* ``block_lengths=`` a given array — boundaries both ends hold (e.g. broadcast by the server in
  the downlink from an earlier round); nothing is sent for them.

Wire format (:attr:`KLMSMessage.payload`): the boundary fields (lengths or table, if any) then the
index fields, MSB first, packed into bytes (zero-padded to a byte). ``KLMSMessage.bits`` counts
the fields exactly: ``Σ_blocks log₂K`` + 8 per block (``"sent"``) or + 16 per occupied bin
(``"predicted"``); the bytes on the wire are ``⌈bits/8⌉``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from analogmem._seeding import SeedLike, as_generator

from ._validation import FederatedError, check_int, check_positive, check_probabilities

__all__ = [
    "KLMSMessage",
    "bernoulli_kl_bits",
    "adaptive_block_lengths",
    "candidate_samples",
    "importance_weights",
    "klms_encode",
    "klms_decode",
    "samples_for_budget",
    "BOUNDARY_MODES",
    "probability_bins",
    "kl_table",
    "predicted_kl",
]

#: The largest number of candidates per block (2^16): the shared uniforms are N·K floats.
MAX_SAMPLES = 2**16

#: How the block boundaries of a message are obtained (see the module docstring).
BOUNDARY_MODES = ("sent", "predicted")

#: Default number of prior bins of the ``"predicted"`` boundaries (16 equal intervals of [0, 1]).
DEFAULT_BINS = 16


def bernoulli_kl_bits(q, p) -> np.ndarray:
    """``KL(Bern(q_i) ‖ Bern(p_i))`` in bits, elementwise; ``q`` in [0, 1], ``p`` in (0, 1)."""
    q = check_probabilities(q, "q")
    p = check_probabilities(p, "p", open_interval=True)
    if q.shape != p.shape:
        raise FederatedError(f"q and p must have the same length, got {q.size} and {p.size}")
    with np.errstate(divide="ignore", invalid="ignore"):
        a = np.where(q > 0, q * np.log2(q / p), 0.0)
        b = np.where(q < 1, (1 - q) * np.log2((1 - q) / (1 - p)), 0.0)
    return np.maximum(a + b, 0.0)


def samples_for_budget(kl_budget_bits: float) -> int:
    """``K = 2^⌈kl_budget_bits⌉`` candidates per block (``K ≈ 2^KL`` for a block at the budget)."""
    return 2 ** max(1, math.ceil(check_positive(kl_budget_bits, "kl_budget_bits") - 1e-12))


def adaptive_block_lengths(kl_bits, kl_budget_bits: float = 2.0, max_block: int = 256) -> np.ndarray:
    """Lengths of consecutive blocks (int64, summing to ``len(kl_bits)``): each block ends at the
    first parameter where its running KL reaches ``kl_budget_bits``, or at ``max_block``
    parameters, or at the end."""
    kl = np.asarray(kl_bits, dtype=np.float64).reshape(-1)
    if kl.size == 0 or not np.isfinite(kl).all() or (kl < 0).any():
        raise FederatedError(f"kl_bits must be a non-empty array of finite values >= 0 (got {kl.size} entries)")
    budget = check_positive(kl_budget_bits, "kl_budget_bits")
    max_block = check_int(max_block, "max_block", 1)
    c = np.cumsum(kl)
    n = kl.size
    lengths = []
    s = 0
    while s < n:
        base = c[s - 1] if s else 0.0
        e = int(np.searchsorted(c, base + budget, side="left"))  # first index with c[e] >= base + budget
        e = min(e, s + max_block - 1, n - 1)
        lengths.append(e - s + 1)
        s = e + 1
    return np.asarray(lengths, dtype=np.int64)


def candidate_samples(p, n_samples: int, shared_seed: SeedLike) -> np.ndarray:
    """The shared candidates: bool ``(N, K)`` with ``x_{ik} = [u_{ik} < p_i]``, ``u`` uniform float64
    from ``shared_seed`` — the same on the client and the server."""
    p = check_probabilities(p, "p")
    k = check_int(n_samples, "n_samples", 1, MAX_SAMPLES)
    u = as_generator(shared_seed).random((p.size, k))
    return u < p[:, None]


def probability_bins(p, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The bin of each prior probability: ``min(⌊p_i·n_bins⌋, n_bins − 1)`` (int64 ``(N,)``)."""
    p = check_probabilities(p, "p")
    n_bins = check_int(n_bins, "n_bins", 1, 2**12)
    return np.minimum(np.floor(p * n_bins).astype(np.int64), n_bins - 1)


def kl_table(kl_bits, p, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The table of ``"predicted"`` boundaries: the mean of ``kl_bits`` over the parameters of each
    *occupied* prior bin (bins in increasing order), rounded to float16 (what is sent)."""
    kl = np.asarray(kl_bits, dtype=np.float64).reshape(-1)
    b = probability_bins(p, n_bins)
    if kl.size != b.size:
        raise FederatedError(f"kl_bits and p must have the same length, got {kl.size} and {b.size}")
    counts = np.bincount(b, minlength=n_bins)
    sums = np.bincount(b, weights=kl, minlength=n_bins)
    occ = counts > 0
    return (sums[occ] / counts[occ]).astype(np.float16)


def predicted_kl(p, table, n_bins: int = DEFAULT_BINS) -> np.ndarray:
    """The predicted KL profile ``κ_i = table[bin(p_i)]`` (float64 ``(N,)``) from a :func:`kl_table`
    (one float16 per occupied bin of ``p``) — the same on the client and the server."""
    b = probability_bins(p, n_bins)
    occ = np.flatnonzero(np.bincount(b, minlength=n_bins))
    t = np.asarray(table)
    if t.dtype != np.float16 or t.shape != (occ.size,) or not np.isfinite(t).all() or (t < 0).any():
        raise FederatedError(f"a KL table must hold {occ.size} finite float16 values >= 0 (one per occupied "
                             f"bin of p), got {t.size} values of dtype {t.dtype}")
    lut = np.zeros(n_bins, dtype=np.float64)
    lut[occ] = t.astype(np.float64)
    return lut[b]


def _check_lengths(lengths, n: int, max_block: int | None = None) -> np.ndarray:
    ln = np.asarray(lengths).reshape(-1)
    if ln.size == 0 or not np.issubdtype(ln.dtype, np.integer) or (ln < 1).any() or int(ln.sum()) != n \
            or (max_block is not None and (ln > max_block).any()):
        lim = "" if max_block is None else f", each <= {max_block}"
        raise FederatedError(f"block lengths must be integers >= 1{lim} summing to N={n}; "
                             f"got {ln.size} blocks summing to {int(ln.sum()) if ln.size else 0}")
    return ln.astype(np.int64)


def importance_weights(q, p, block_lengths, candidates: np.ndarray) -> np.ndarray:
    """Selection probabilities ``(n_blocks, K)``: for block ``b`` and candidate ``k``,
    ``∝ Π_{i∈b} q(x_{ik})/p(x_{ik})`` with ``q(1) = q_i``, ``q(0) = 1 − q_i`` (same for ``p``),
    normalised over ``k``."""
    q = check_probabilities(q, "q")
    p = check_probabilities(p, "p", open_interval=True)
    ln = _check_lengths(block_lengths, q.size)
    x = np.asarray(candidates, dtype=bool)
    if x.shape[0] != q.size or p.size != q.size:
        raise FederatedError(f"q, p and candidates disagree on N: {q.size}, {p.size}, {x.shape[0]}")
    with np.errstate(divide="ignore"):
        l1 = np.log(q) - np.log(p)
        l0 = np.log1p(-q) - np.log1p(-p)
    log_ratio = np.where(x, l1[:, None], l0[:, None])
    starts = np.concatenate([[0], np.cumsum(ln)[:-1]])
    logw = np.add.reduceat(log_ratio, starts, axis=0)
    logw = logw - logw.max(axis=1, keepdims=True)
    w = np.exp(logw)
    return w / w.sum(axis=1, keepdims=True)


@dataclass(frozen=True)
class KLMSMessage:
    """What a client sends.

    Attributes:
        payload: the bytes on the wire.
        bits: the exact number of field bits (``len(payload)·8`` rounds it up to a byte).
        n_blocks: number of blocks.
        n_samples: candidates per block ``K``.
        boundaries: ``"sent"`` (block lengths in the payload), ``"predicted"`` (KL table in the
            payload) or ``"given"`` (boundaries both ends held; nothing sent for them).
        boundary_bits: the field bits spent on the boundaries (lengths or table), included in ``bits``.
    """

    payload: bytes
    bits: int
    n_blocks: int
    n_samples: int
    boundaries: str
    boundary_bits: int

    @property
    def lengths_sent(self) -> bool:
        """Whether the block lengths themselves are in the payload (``boundaries == "sent"``)."""
        return self.boundaries == "sent"

    @property
    def wire_bits(self) -> int:
        """``8·len(payload)``: the bits actually sent."""
        return 8 * len(self.payload)


def _width(n: int) -> int:
    return max(0, math.ceil(math.log2(n))) if n > 1 else 0


def _fields_to_bits(values: np.ndarray, width: int) -> np.ndarray:
    if width == 0:
        return np.zeros(0, dtype=np.uint8)
    shifts = np.arange(width - 1, -1, -1, dtype=np.int64)
    return ((values.astype(np.int64)[:, None] >> shifts) & 1).astype(np.uint8).reshape(-1)


def _bits_to_fields(bits: np.ndarray, width: int, count: int) -> np.ndarray:
    if width == 0:
        return np.zeros(count, dtype=np.int64)
    b = bits[: width * count].reshape(count, width).astype(np.int64)
    return (b << np.arange(width - 1, -1, -1, dtype=np.int64)).sum(axis=1)


def _f16_fields(table: np.ndarray) -> np.ndarray:
    return _fields_to_bits(np.asarray(table, dtype=np.float16).view(np.uint16), 16)


def _boundary_args(boundaries: str, max_block: int, n_bins: int) -> tuple[str, int, int]:
    if boundaries not in BOUNDARY_MODES:
        raise FederatedError(f"boundaries must be one of {BOUNDARY_MODES}, got {boundaries!r}")
    return boundaries, check_int(max_block, "max_block", 1, 2**16), check_int(n_bins, "n_bins", 1, 2**12)


def klms_encode(q, p, shared_seed: SeedLike, *, kl_budget_bits: float = 2.0, max_block: int = 256,
                n_samples: int | None = None, block_lengths=None, boundaries: str = "sent",
                n_bins: int = DEFAULT_BINS, seed: SeedLike = None) -> tuple[KLMSMessage, np.ndarray, np.ndarray]:
    """Encode a sample of ``q`` (Bernoulli probabilities ``(N,)``) with side information ``p``.

    Args:
        q: the client's posterior, probabilities in [0, 1], ``(N,)``.
        p: the prior both ends know, probabilities in (0, 1), ``(N,)``.
        shared_seed: the randomness both ends share (the candidates).
        kl_budget_bits: bits of KL per adaptive block (≈ 2).
        max_block: the largest block (≤ 256 in the paper); lengths are sent in ⌈log₂ max_block⌉ bits.
        n_samples: ``K``, a power of two; default :func:`samples_for_budget`.
        block_lengths: boundaries both ends already hold (then none are sent and ``boundaries`` is
            ignored); None → adaptive boundaries of mode ``boundaries``.
        boundaries: ``"sent"`` (adaptive on the client's KL, lengths sent) or ``"predicted"``
            (adaptive on the predicted KL profile of :func:`predicted_kl`, the table sent).
        n_bins: prior bins of ``"predicted"`` boundaries.
        seed: the client's *private* randomness for the selection.

    Returns:
        ``(message, sample, block_lengths)``: the message, the chosen sample (uint8 ``(N,)`` —
        what the server will decode) and the block lengths used.
    """
    q = check_probabilities(q, "q")
    p = check_probabilities(p, "p", open_interval=True)
    if q.size != p.size or q.size == 0:
        raise FederatedError(f"q and p must be non-empty and of the same length, got {q.size} and {p.size}")
    boundaries, max_block, n_bins = _boundary_args(boundaries, max_block, n_bins)
    k = samples_for_budget(kl_budget_bits) if n_samples is None else check_int(n_samples, "n_samples", 1, MAX_SAMPLES)
    if k & (k - 1):
        raise FederatedError(f"n_samples must be a power of two (an index is log2(K) bits), got {k}")
    fields = []
    if block_lengths is not None:
        lengths = _check_lengths(block_lengths, q.size, max_block)
        mode = "given"
    elif boundaries == "sent":
        lengths = adaptive_block_lengths(bernoulli_kl_bits(q, p), kl_budget_bits, max_block)
        fields.append(_fields_to_bits(lengths - 1, _width(max_block)))
        mode = "sent"
    else:
        table = kl_table(bernoulli_kl_bits(q, p), p, n_bins)
        lengths = adaptive_block_lengths(predicted_kl(p, table, n_bins), kl_budget_bits, max_block)
        fields.append(_f16_fields(table))
        mode = "predicted"
    boundary_bits = int(sum(f.size for f in fields))
    x = candidate_samples(p, k, shared_seed)
    w = importance_weights(q, p, lengths, x)
    u = as_generator(seed).random(w.shape[0])
    idx = np.minimum((np.cumsum(w, axis=1) < u[:, None]).sum(axis=1), k - 1)
    sample = x[np.arange(q.size), np.repeat(idx, lengths)].astype(np.uint8)
    fields.append(_fields_to_bits(idx, _width(k)))
    bits = np.concatenate(fields)
    msg = KLMSMessage(np.packbits(bits).tobytes(), int(bits.size), int(lengths.size), k, mode, boundary_bits)
    return msg, sample, lengths


def klms_decode(payload: bytes, p, shared_seed: SeedLike, *, n_samples: int, max_block: int = 256,
                block_lengths=None, boundaries: str = "sent", kl_budget_bits: float = 2.0,
                n_bins: int = DEFAULT_BINS) -> tuple[np.ndarray, np.ndarray]:
    """Regenerate the chosen sample from a payload.

    ``n_samples``, ``max_block``, ``boundaries`` (and for ``"predicted"`` boundaries
    ``kl_budget_bits`` and ``n_bins``) and ``shared_seed`` must be those of the encoder; pass the
    same ``block_lengths`` when they were given to it. Returns ``(sample uint8 (N,), block_lengths)``.
    """
    p = check_probabilities(p, "p", open_interval=True)
    n = p.size
    k = check_int(n_samples, "n_samples", 1, MAX_SAMPLES)
    boundaries, max_block, n_bins = _boundary_args(boundaries, max_block, n_bins)
    bits = np.unpackbits(np.frombuffer(bytes(payload), dtype=np.uint8))
    wl, wi = _width(max_block), _width(k)
    pos = 0
    if block_lengths is not None:
        lengths = _check_lengths(block_lengths, n, max_block)
    elif boundaries == "sent":
        lengths = []
        total = 0
        while total < n:
            if pos + wl > bits.size:
                raise FederatedError(f"truncated KLMS payload: block lengths cover {total} of N={n} parameters")
            ln = int(_bits_to_fields(bits[pos:pos + wl], wl, 1)[0]) + 1
            lengths.append(ln)
            total += ln
            pos += wl
        lengths = _check_lengths(np.asarray(lengths, dtype=np.int64), n, max_block)
    else:
        n_occ = int(np.count_nonzero(np.bincount(probability_bins(p, n_bins), minlength=n_bins)))
        if 16 * n_occ > bits.size:
            raise FederatedError(f"truncated KLMS payload: {bits.size} bits for a KL table of {n_occ} bins")
        table = _bits_to_fields(bits[:16 * n_occ], 16, n_occ).astype(np.uint16).view(np.float16)
        pos = 16 * n_occ
        lengths = adaptive_block_lengths(predicted_kl(p, table, n_bins), kl_budget_bits, max_block)
    if pos + wi * lengths.size > bits.size:
        raise FederatedError(f"truncated KLMS payload: {bits.size} bits for {lengths.size} blocks of {wi}-bit indices")
    idx = _bits_to_fields(bits[pos:], wi, lengths.size)
    if (idx >= k).any():
        raise FederatedError(f"KLMS payload has a candidate index >= K={k}")
    x = candidate_samples(p, k, shared_seed)
    return x[np.arange(n), np.repeat(idx, lengths)].astype(np.uint8), lengths
