"""The random stream of the cell kernels, in numpy: counter-based Philox4x32-10.

Every operation (one ``program`` or ``read`` call) has a key of three 32-bit words taken
from its :class:`~numpy.random.SeedSequence` (:func:`op_key`). Draw ``d`` (0, 1, 2, ...)
of the cell at op-local position ``i`` is the 64-bit word ``d & 1`` of

    Philox4x32-10(counter = (i mod 2^32, i >> 32, d >> 1, key[2]), key = (key[0], key[1]))

(Salmon, Moraes, Dror, Shaw, "Parallel random numbers: as easy as 1, 2, 3", SC'11; the
generator of Random123, cuRAND and JAX's ``rbg``). A draw depends only on (key, i, d): no
state passes from cell to cell, so the result never depends on how cells are split into
chunks, which thread runs them, or whether the chip lives in RAM or on disk. Philox is
vectorisable (32x32→64-bit multiplies) and so is Box–Muller, which is why they replaced the
per-chunk SFC64 streams and numpy's ziggurat: the kernels fill whole blocks of normals
with SIMD.

A uniform is ``(floor(bits / 2^12) + 0.5) / 2^52`` (in (0, 1), exact in double). Normals
come in Box–Muller pairs: draws ``2j`` and ``2j + 1`` as normals are ``r cos 2πu₂`` and
``r sin 2πu₂`` with ``r = sqrt(−2 ln u₁)`` from the two uniforms of block ``j`` (53-bit
uniforms: tails reach 8.57 σ). A draw used as a uniform (an empirical write, write-verify's
class, pulse count and verified value) takes a pair of its own — the next even index, and
the draw after it is skipped — so no normal shares a word with it (a shared word would make
the normal's Box–Muller radius depend on the uniform). A read draws one normal per cell: the cells at positions
``2j`` and ``2j + 1`` share the pair of counter ``j``. Stuck-at faults are a pure function
of the bench's fault key and the cell's address (:func:`stuck_states`), so a bench never
stores them.

This module is the numpy twin of ``ext/am_kernels.h`` (tests check both against the
Random123 known-answer vectors and against each other); :mod:`analogmem.emulator.reference`
uses it.
"""

from __future__ import annotations

import numpy as np

__all__ = ["op_key", "philox4x32", "draw_bits", "uniform", "box_muller", "sincos2pi", "normal_draws", "normals", "read_normals",
           "uniforms",
           "inv_log1m", "geometric", "stuck_states"]

_M0, _M1 = np.uint64(0xD2511F53), np.uint64(0xCD9E8D57)
_W0, _W1 = 0x9E3779B9, 0xBB67AE85
_MASK32 = np.uint64(0xFFFFFFFF)
_S32 = np.uint64(32)


def op_key(seed: np.random.SeedSequence) -> tuple[int, int, int]:
    """The three 32-bit words that key one operation's draws."""
    k = seed.generate_state(3, dtype=np.uint32)
    return int(k[0]), int(k[1]), int(k[2])


def philox4x32(c0, c1, c2, c3, k0: int, k1: int) -> tuple[np.ndarray, ...]:
    """Philox4x32-10 of counters ``(c0, c1, c2, c3)`` (arrays of uint32 values, broadcast)
    under key ``(k0, k1)``: four uint64 arrays holding the 32-bit output words."""
    c0, c1, c2, c3 = (np.asarray(c, dtype=np.uint64) for c in np.broadcast_arrays(c0, c1, c2, c3))
    for r in range(10):
        key0 = np.uint64((k0 + r * _W0) & 0xFFFFFFFF)
        key1 = np.uint64((k1 + r * _W1) & 0xFFFFFFFF)
        p0, p1 = c0 * _M0, c2 * _M1
        c0, c1, c2, c3 = ((p1 >> _S32) ^ c1 ^ key0, p1 & _MASK32, (p0 >> _S32) ^ c3 ^ key1, p0 & _MASK32)
    return c0, c1, c2, c3


def draw_bits(key: tuple[int, int, int], cells: np.ndarray, d) -> np.ndarray:
    """Draw ``d`` (an int, or one per cell) of the cells at op-local positions ``cells``:
    64-bit words as uint64."""
    cells = np.asarray(cells, dtype=np.uint64)
    d = np.asarray(d, dtype=np.uint64)
    w = philox4x32(cells & _MASK32, cells >> _S32, d >> np.uint64(1), np.uint64(key[2]), key[0], key[1])
    odd = (d & np.uint64(1)).astype(bool)
    return np.where(odd, w[2] | (w[3] << _S32), w[0] | (w[1] << _S32))


def uniform(bits: np.ndarray) -> np.ndarray:
    """Uniforms in (0, 1) from 64-bit draws: ``(floor(bits / 2^12) + 0.5) / 2^52``."""
    return ((np.asarray(bits, dtype=np.uint64) >> np.uint64(12)).astype(np.float64) + 0.5) * 2.0**-52


def box_muller(bits_a: np.ndarray, bits_b: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """The Box–Muller pair (Box & Muller, 1958) of two 64-bit draws:
    ``r cos 2πu₂, r sin 2πu₂`` with ``r = sqrt(−2 ln u₁)``."""
    r = np.sqrt(-2.0 * np.log(uniform(bits_a)))
    sin, cos = sincos2pi(uniform(bits_b))
    return r * cos, r * sin


def sincos2pi(u: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``sin 2πu, cos 2πu`` reduced as the kernels do: ``4u = q + g`` with ``q = rint(4u)``
    and ``|g| ≤ 1/2`` (both exact), then sin/cos of ``(π/2)·g`` rotated by ``q`` quarter
    turns (accurate near the zeros, where ``sin(2π·u)`` rounded ``2πu`` first is not)."""
    t = 4.0 * np.asarray(u, dtype=np.float64)
    k = np.rint(t)
    x = (t - k) * 1.57079632679489661923
    q = k.astype(np.int64) & 3
    s, c = np.sin(x), np.cos(x)
    return np.choose(q, [s, c, -s, -c]), np.choose(q, [c, -s, -c, s])


def normal_draws(key: tuple[int, int, int], cells: np.ndarray, d) -> np.ndarray:
    """Draw ``d`` (an int, or one per cell) of the cells at op-local positions ``cells`` as
    standard normals: component ``d & 1`` of the Box–Muller pair of the two words of block
    ``d >> 1`` (draws ``2j`` and ``2j + 1``)."""
    cells = np.asarray(cells, dtype=np.uint64)
    d = np.asarray(d, dtype=np.int64)
    even = d - (d & 1)
    z0, z1 = box_muller(draw_bits(key, cells, even), draw_bits(key, cells, even + 1))
    return np.where((d & 1).astype(bool), z1, z0)


def normals(key: tuple[int, int, int], n: int, draws, first: int = 0) -> np.ndarray:
    """``(n, len(draws))`` standard normals: draws ``range(draws)`` (or the listed draw
    indices) of the cells at positions ``first .. first + n - 1``."""
    idx = list(range(draws) if isinstance(draws, int) else draws)
    cells = np.arange(first, first + n, dtype=np.uint64)
    out = np.empty((n, len(idx)))
    for j, d in enumerate(idx):
        out[:, j] = normal_draws(key, cells, d)
    return out


def read_normals(key: tuple[int, int, int], n: int, first: int = 0) -> np.ndarray:
    """The read-noise normals of the cells at positions ``first .. first + n - 1`` of a
    read: positions ``2j`` and ``2j + 1`` share the Box–Muller pair of block 0 of counter
    ``j`` (half the random bits of one pair per cell)."""
    pos = np.arange(first, first + n, dtype=np.uint64)
    pair = pos >> np.uint64(1)
    z0, z1 = box_muller(draw_bits(key, pair, 0), draw_bits(key, pair, 1))
    return np.where((pos & np.uint64(1)).astype(bool), z1, z0)


def uniforms(key: tuple[int, int, int], n: int, d: int) -> np.ndarray:
    """Draw ``d`` of cells ``0 .. n-1`` as uniforms in (0, 1)."""
    return uniform(draw_bits(key, np.arange(n, dtype=np.uint64), d))


def inv_log1m(p: np.ndarray) -> np.ndarray:
    """``1 / ln(1 − p)`` (0 where p = 1: one pulse always suffices), as the kernels take it."""
    p = np.asarray(p, dtype=np.float64)
    out = np.zeros(p.shape)
    m = p < 1.0
    with np.errstate(divide="ignore"):
        out[m] = 1.0 / np.log1p(-p[m])
    return out


def geometric(bits: np.ndarray, inv: np.ndarray) -> np.ndarray:
    """Geometric(p) draws (support 1, 2, ...) by inversion, ``ceil(ln u · inv)`` with
    ``inv = inv_log1m(p)``, held to [1, 1e9]."""
    v = np.ceil(np.log(uniform(bits)) * np.asarray(inv, dtype=np.float64))
    return np.clip(v, 1.0, 1e9).astype(np.int64)


def stuck_states(fault_key: tuple[int, int, int], p_low: float, p_high: float, addresses: np.ndarray) -> np.ndarray:
    """Stuck-at state (int8: 0 healthy, 1 stuck at g_min, 2 at g_max) of the cells at
    ``addresses``: draw 0 of each address under the bench's fault key, ``u < p_low`` → 1,
    ``u < p_low + p_high`` → 2."""
    u = uniform(draw_bits(fault_key, np.asarray(addresses, dtype=np.uint64), 0))
    return np.where(u < p_low, 1, np.where(u < p_low + p_high, 2, 0)).astype(np.int8)
