"""Encoders and decoders: weight tensors ⇄ analog cell targets (thesis ch.3, DESIGN §5).

An encoder turns a 1-D weight tensor ``w`` (shape ``(n,)``) into *relative* cell targets
``x`` in ``[0, 1]`` (shape ``(n_cells,)``), where 0 is the card's ``g_min_S`` and 1 its
``g_max_S``; the store converts them to siemens. Its decoder turns the relative reads back
into weights. What an encoder must remember about a tensor (its range, a prior histogram,
...) is *side information*, kept digitally next to the cells and counted in bits.

Every encoder follows one small interface (:class:`Encoder`)::

    side = enc.fit(w, channel)              # side information: dict of floats / arrays
    x = enc.encode(w, side)                 # (enc.n_cells(n),) relative targets in [0, 1]
    w_hat = enc.decode(y, side, n, channel) # (n,) weights from relative reads y

The schemes (all comparable at equal cell count, see :meth:`Encoder.n_cells`):

* :class:`LinearMap` — a weight range ``[-s, s]`` mapped linearly onto ``[0, 1]``
  (``x = (w/s + 1)/2``). With ``clip_percentile=100`` (``s = max|w|``) it is the *naive*
  mapping; with a percentile or ``"auto"`` it is the *adaptive per-layer range mapping*
  (``s`` chosen per tensor to minimise clipping error + channel noise).
* :class:`DifferentialPair` — ``w ⇒ (G+, G−)``, the magnitude ``|w|/s`` on the cell of
  the weight's sign, the other at ``g_min``; ``ŵ = s·(x+ − x−)``. Small weights (most of
  them) sit near ``g_min`` where the RRAM spread is smallest.
* :class:`SignMagnitude` — sign protection: the sign on a binary cell (0 or 1, decoded by
  a 1/2 threshold), the magnitude ``|w|/s`` on an analog cell.
* :class:`Sliced` — multi-cell slicing: ``u = (w/s + 1)/2`` split into base-``B`` digits on
  the more-significant cells (decoded by rounding) and the analog remainder on the last.
* :class:`Repetition` — any cell map repeated on ``r`` cells per cell, reads averaged.
* :class:`MMSE` — the decoder that returns the posterior mean ``E[w | y]`` of the written
  weight given the reads, using the card's channel statistics (:class:`Channel`) and a
  per-tensor prior histogram of the weights (side information).
* :class:`DigitalECC` — the baseline: ``k``-bit uniform quantisation, the bits protected
  by a BCH code (``bchlib``, the Linux kernel BCH library) and stored ``b`` bits per
  multi-level cell (Gray-coded levels, nearest-level detection).

:func:`global_drift_scale` is the drift compensation users of aihwkit expect: one global
scale per tensor re-estimated from a read (the mean target is known at write time; no
clean weights are needed).
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from scipy.special import log_ndtr

from ..emulator.cells import DeviceModel
from ..errors import StorageError

__all__ = [
    "Channel",
    "Encoder",
    "CellMap",
    "LinearMap",
    "DifferentialPair",
    "SignMagnitude",
    "Sliced",
    "Repetition",
    "MMSE",
    "DigitalECC",
    "encoder_from_spec",
    "make_encoder",
    "ENCODER_NAMES",
    "global_drift_scale",
    "check_finite",
]

Side = dict[str, Any]


def check_finite(name: str, w: np.ndarray) -> None:
    """Raise :class:`~analogmem.errors.StorageError` naming tensor ``name`` and the first bad
    index if ``w`` holds NaN or ±inf (nothing is stored then)."""
    w = np.asarray(w)
    if w.size and not np.all(np.isfinite(w)):
        flat = w.reshape(-1)
        i = int(np.argmin(np.isfinite(flat)))
        raise StorageError(f"tensor {name!r} has a non-finite value {flat[i]} at flat index {i} "
                           f"({int(np.count_nonzero(~np.isfinite(flat)))} non-finite in all); nothing was stored")


# --------------------------------------------------------------------------- the channel
@dataclass(frozen=True)
class Channel:
    """The read channel of one device card at ``t_s`` seconds after programming, in
    relative units ``x = (g − g_min)/(g_max − g_min)``.

    For a target ``x`` the read is modelled as Gaussian with mean
    ``m(x) = (g_T·d(x, t) − g_min)/(g_max − g_min)`` — ``d = ((t + t0)/t0)^(−μ_ν(x))`` the drift
    at the mean exponent (1 without drift) — and standard deviation
    ``sqrt((σ_P·d)² + σ_relax(x, t)² + σ_R²)/(g_max − g_min)`` from the card's formulas
    (DESIGN §2), censored at the physical clip: a read at ``clip_min_S`` has probability
    ``Φ((clip_lo − m)/σ)``.
    """

    device: DeviceModel
    t_s: float

    @property
    def span_S(self) -> float:
        return self.device.g_max_S - self.device.g_min_S

    def to_S(self, x: np.ndarray) -> np.ndarray:
        """Relative targets → conductance (S)."""
        return self.device.g_min_S + np.asarray(x, dtype=np.float64) * self.span_S

    def to_relative(self, g_S: np.ndarray) -> np.ndarray:
        """Conductance (S) → relative units."""
        return (np.asarray(g_S, dtype=np.float64) - self.device.g_min_S) / self.span_S

    def mean_std(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the relative read for relative targets ``x`` (any shape)."""
        dev, t = self.device, float(self.t_s)
        g = self.to_S(np.clip(x, 0.0, 1.0))
        d = dev.drift_factor(dev.drift_mu(g), t) if dev.drift.enabled else np.ones_like(g)
        g_now = g * d
        var = (dev.sigma_program_S(g) * d) ** 2 + dev.sigma_relaxation_S(g, t) ** 2 \
            + dev.sigma_read_S(g, g_now, t) ** 2
        std = np.sqrt(np.maximum(var, 1e-30)) / self.span_S
        return self.to_relative(g_now), std

    @property
    def clip_lo(self) -> float:
        """The physical lower clip in relative units (reads at or below it are censored)."""
        return float(self.to_relative(self.device.range.clip_min_S))

    def log_likelihood(self, y: np.ndarray, x: np.ndarray) -> np.ndarray:
        """``log p(y | x)`` elementwise (broadcasting ``y`` against ``x``), Gaussian with the
        censored lower clip."""
        m, s = self.mean_std(x)
        z = (y - m) / s
        dens = -0.5 * z * z - np.log(s) - 0.5 * math.log(2 * math.pi)
        lo = self.clip_lo
        if math.isfinite(lo):
            at_lo = y <= lo + 1e-12
            if np.any(at_lo):
                cens = log_ndtr((lo - m) / s)
                dens = np.where(at_lo, cens, dens)
        return dens


def global_drift_scale(g_read_S: np.ndarray, g_target_mean_S: float) -> float:
    """Global drift compensation (as aihwkit's ``GlobalDriftCompensation``): the factor
    ``α = mean target / mean read`` by which every read of a tensor is multiplied. The
    mean target (S) is recorded at write time, so no clean weights are needed."""
    m = float(np.mean(g_read_S))
    if not math.isfinite(m) or m <= 0 or g_target_mean_S <= 0:
        return 1.0
    return float(g_target_mean_S) / m


# --------------------------------------------------------------------------- interface
class Encoder:
    """Base class: a weight tensor ⇄ relative cell targets. Subclasses set ``name``."""

    name = "encoder"
    #: whether :meth:`decode` uses the channel (then no drift compensation is applied)
    uses_channel = False

    def n_cells(self, n_weights: int) -> int:
        """Cells used for ``n_weights`` weights."""
        raise NotImplementedError

    def fit(self, w: np.ndarray, channel: Channel | None = None) -> Side:
        """Side information for tensor ``w`` (flat float array)."""
        raise NotImplementedError

    def encode(self, w: np.ndarray, side: Side) -> np.ndarray:
        """Relative targets in [0, 1], shape ``(n_cells(len(w)),)``."""
        raise NotImplementedError

    def decode(self, y: np.ndarray, side: Side, n_weights: int, channel: Channel | None = None) -> np.ndarray:
        """Weights, shape ``(n_weights,)``, from relative reads ``y`` (shape ``(n_cells,)``)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`encoder_from_spec` rebuilds the encoder."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


def _range(w: np.ndarray, percentile: float) -> float:
    a = np.abs(w)
    s = float(a.max()) if percentile >= 100 else float(np.percentile(a, percentile))
    if s <= 0:
        s = float(a.max()) if a.size else 0.0
    return s if s > 0 else 1.0


_AUTO_PERCENTILES = (99.0, 99.5, 99.9, 99.99, 100.0)
#: The adaptive range is scored on at most this many weights.
FIT_SAMPLE = 20000


def fit_sample(w: Any) -> Any:
    """The weights (1-D) the adaptive range is scored on: all up to :data:`FIT_SAMPLE`, else every k-th."""
    n = len(w)
    return w if n <= FIT_SAMPLE else w[:: max(1, n // FIT_SAMPLE)]


class CellMap(Encoder):
    """An encoder that maps each weight to ``cells_per_weight`` cells independently (a
    scalar map); cells of weight ``i`` are ``x[i*c:(i+1)*c]``. Subclasses implement
    ``_encode(w, s) -> (n, c)`` and ``_decode(y (n, c), s) -> (n,)``, and ``_gain(w, s)``:
    the coefficients ``a`` (n, c) of the naive decoder ``ŵ = Σ_j a_j·y_j + b`` (for
    the noise variance used by :mod:`analogmem.storage.allocate`)."""

    cells_per_weight = 1

    def __init__(self, clip_percentile: float | str = 100.0):
        if clip_percentile != "auto" and not (isinstance(clip_percentile, (int, float))
                                              and 50.0 <= clip_percentile <= 100.0):
            raise ValueError(f"clip_percentile must be in [50, 100] or 'auto', got {clip_percentile!r}")
        self.clip_percentile = clip_percentile

    def n_cells(self, n_weights: int) -> int:
        return int(n_weights) * self.cells_per_weight

    def fit(self, w: np.ndarray, channel: Channel | None = None) -> Side:
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if self.clip_percentile != "auto":
            return {"scale": _range(w, float(self.clip_percentile))}
        if channel is None:
            return {"scale": _range(w, 99.9)}
        return {"scale": self.best_scale([_range(w, p) for p in _AUTO_PERCENTILES], fit_sample(w), channel)}

    def best_scale(self, scales: list[float], sample: np.ndarray, channel: Channel) -> float:
        """The adaptive range: among candidate ``scales`` (the ranges at ``_AUTO_PERCENTILES``),
        the one minimising clipping error² + channel noise variance over ``sample`` (see
        :func:`fit_sample`)."""
        best = None
        for s in scales:
            err = np.sum((np.abs(sample) - s).clip(min=0) ** 2) + np.sum(self.noise_variance(sample, {"scale": s}, channel))
            if best is None or err < best[0]:
                best = (err, s)
        return best[1]

    def encode(self, w: np.ndarray, side: Side) -> np.ndarray:
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        return np.clip(self._encode(w, float(side["scale"])), 0.0, 1.0).reshape(-1)

    def decode(self, y: np.ndarray, side: Side, n_weights: int, channel: Channel | None = None) -> np.ndarray:
        y = np.asarray(y, dtype=np.float64).reshape(int(n_weights), self.cells_per_weight)
        return self._decode(y, float(side["scale"]))

    def noise_variance(self, w: np.ndarray, side: Side, channel: Channel) -> np.ndarray:
        """Variance of the naive decode of each weight (shape ``(n,)``) through ``channel``:
        ``Σ_j a_j² σ_j²`` for the decoder's linear coefficients ``a``."""
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        s = float(side["scale"])
        x = np.clip(self._encode(w, s), 0.0, 1.0)
        _, std = channel.mean_std(x)
        return np.sum((self._gain(w, s) * std) ** 2, axis=1)

    def clip_error(self, w: np.ndarray, side: Side) -> np.ndarray:
        """Noise-free reconstruction error of each weight (clipping/quantisation), shape (n,)."""
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        s = float(side["scale"])
        return self._decode(np.clip(self._encode(w, s), 0.0, 1.0), s) - w

    def with_repetition(self, r: int) -> "CellMap":
        """This map with each cell repeated ``r`` times (itself for r = 1)."""
        return self if r == 1 else Repetition(self, r)

    # subclass hooks
    def _encode(self, w: np.ndarray, s: float) -> np.ndarray:
        raise NotImplementedError

    def _decode(self, y: np.ndarray, s: float) -> np.ndarray:
        raise NotImplementedError

    def _gain(self, w: np.ndarray, s: float) -> np.ndarray:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "clip_percentile": self.clip_percentile}


class LinearMap(CellMap):
    """``x = (clip(w, −s, s)/s + 1)/2`` on one cell; ``ŵ = s·(2y − 1)``. ``s`` = the
    ``clip_percentile`` of ``|w|`` (100: the naive max-abs map; ``"auto"``: adaptive)."""

    name = "linear"
    cells_per_weight = 1

    def _encode(self, w, s):
        return ((np.clip(w, -s, s) / s + 1.0) / 2.0)[:, None]

    def _decode(self, y, s):
        return s * (2.0 * y[:, 0] - 1.0)

    def _gain(self, w, s):
        return np.full((w.shape[0], 1), 2.0 * s)


class DifferentialPair(CellMap):
    """Differential pair with sign protection: ``x+ = m·[w > 0]``, ``x− = m·[w < 0]``,
    ``m = min(|w|/s, 1)``; ``ŵ = s·(y+ − y−)``."""

    name = "differential"
    cells_per_weight = 2

    def _encode(self, w, s):
        m = np.minimum(np.abs(w) / s, 1.0)
        return np.stack([np.where(w > 0, m, 0.0), np.where(w < 0, m, 0.0)], axis=1)

    def _decode(self, y, s):
        return s * (y[:, 0] - y[:, 1])

    def _gain(self, w, s):
        return np.tile(np.array([s, -s]), (w.shape[0], 1))


class SignMagnitude(CellMap):
    """Sign protection: the sign on a binary cell (1 for w < 0, decoded by a 1/2
    threshold), the magnitude ``min(|w|/s, 1)`` on an analog cell; ``ŵ = ±s·y_mag``."""

    name = "sign-magnitude"
    cells_per_weight = 2

    def _encode(self, w, s):
        return np.stack([(w < 0).astype(np.float64), np.minimum(np.abs(w) / s, 1.0)], axis=1)

    def _decode(self, y, s):
        return np.where(y[:, 0] > 0.5, -1.0, 1.0) * s * y[:, 1]

    def _gain(self, w, s):
        return np.stack([np.zeros(w.shape[0]), np.full(w.shape[0], s)], axis=1)


class Sliced(CellMap):
    """Multi-cell slicing: ``u = (clip(w, −s, s)/s + 1)/2`` written as
    ``u = (d_1 + (d_2 + … + r/B)/B)/B`` — base-``B`` digits ``d_k`` on the first
    ``n_slices − 1`` cells (levels ``d/(B−1)``, decoded by rounding) and the analog
    remainder ``r`` on the last cell."""

    name = "sliced"

    def __init__(self, clip_percentile: float | str = 100.0, n_slices: int = 2, base: int = 4):
        super().__init__(clip_percentile)
        if int(n_slices) < 2 or int(base) < 2:
            raise ValueError(f"Sliced needs n_slices >= 2 and base >= 2, got {n_slices}, {base}")
        self.n_slices, self.base = int(n_slices), int(base)
        self.cells_per_weight = self.n_slices

    def _encode(self, w, s):
        B = self.base
        u = (np.clip(w, -s, s) / s + 1.0) / 2.0
        cols = []
        for _ in range(self.n_slices - 1):
            d = np.minimum(np.floor(u * B), B - 1)
            cols.append(d / (B - 1))
            u = u * B - d
        cols.append(u)
        return np.stack(cols, axis=1)

    def _decode(self, y, s):
        B = self.base
        u = y[:, -1]
        for k in range(self.n_slices - 2, -1, -1):
            d = np.clip(np.rint(y[:, k] * (B - 1)), 0, B - 1)
            u = (d + u) / B
        return s * (2.0 * u - 1.0)

    def _gain(self, w, s):  # digits assumed decoded correctly: only the remainder's noise
        g = np.zeros((w.shape[0], self.n_slices))
        g[:, -1] = 2.0 * s / self.base ** (self.n_slices - 1)
        return g

    def spec(self):
        return {**super().spec(), "n_slices": self.n_slices, "base": self.base}


class Repetition(CellMap):
    """``inner`` with each weight's cells written ``r`` times (layout: copy-major per
    weight); the naive decoder averages the ``r`` reads of each cell, then decodes."""

    def __init__(self, inner: CellMap, r: int):
        if not isinstance(inner, CellMap) or isinstance(inner, MMSE):
            raise ValueError(f"Repetition wraps a plain cell map, got {inner!r}")
        if int(r) < 1:
            raise ValueError(f"repetitions r must be >= 1, got {r!r}")
        self.inner, self.r = inner, int(r)
        self.clip_percentile = inner.clip_percentile
        self.cells_per_weight = inner.cells_per_weight * self.r
        self.name = f"{inner.name}x{self.r}"

    def _encode(self, w, s):
        return np.tile(self.inner._encode(w, s), (1, self.r))

    def _decode(self, y, s):
        c = self.inner.cells_per_weight
        return self.inner._decode(y.reshape(y.shape[0], self.r, c).mean(axis=1), s)

    def _gain(self, w, s):
        return np.tile(self.inner._gain(w, s) / self.r, (1, self.r))

    def with_repetition(self, r):
        return Repetition(self.inner, self.r * r)

    def spec(self):
        return {"kind": "Repetition", "inner": self.inner.spec(), "r": self.r}


class MMSE(CellMap):
    """MMSE decoding of any cell map: ``ŵ = E[w | y] = Σ_k p_k L_k w_k / Σ_k p_k L_k`` over a
    grid of ``grid`` candidate weights ``w_k`` spanning ``[−max|w|, max|w|]`` with prior
    ``p_k`` (the tensor's histogram, side information) and channel likelihood
    ``L_k = Π_j p(y_j | x_j(w_k))`` from :class:`Channel` (the card's statistics at the
    read time). Encoding is the inner map's."""

    uses_channel = True

    def __init__(self, inner: CellMap, grid: int = 64):
        if not isinstance(inner, CellMap) or isinstance(inner, MMSE):
            raise ValueError(f"MMSE wraps a plain cell map, got {inner!r}")
        if int(grid) < 2:
            raise ValueError(f"grid must be >= 2, got {grid!r}")
        self.inner, self.grid = inner, int(grid)
        self.clip_percentile = inner.clip_percentile
        self.cells_per_weight = inner.cells_per_weight
        self.name = f"{inner.name}+mmse"

    def fit(self, w, channel=None):
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        side = dict(self.inner.fit(w, channel))
        wmax = float(np.abs(w).max()) if w.size else 1.0
        wmax = wmax if wmax > 0 else 1.0
        counts, _ = np.histogram(w, bins=self.grid, range=(-wmax, wmax))
        side.update(prior_range=wmax, prior_counts=counts.astype(np.float32))
        return side

    def _encode(self, w, s):
        return self.inner._encode(w, s)

    def _gain(self, w, s):
        return self.inner._gain(w, s)

    def _decode(self, y, s):  # without a channel: the inner map's naive decoder
        return self.inner._decode(y, s)

    def decode(self, y, side, n_weights, channel=None):
        if channel is None:
            return super().decode(y, side, n_weights)
        c = self.cells_per_weight
        y = np.asarray(y, dtype=np.float64).reshape(int(n_weights), c)
        s, wmax = float(side["scale"]), float(side["prior_range"])
        edges = np.linspace(-wmax, wmax, self.grid + 1)
        w_k = 0.5 * (edges[:-1] + edges[1:])
        prior = np.asarray(side["prior_counts"], dtype=np.float64) + 1e-3  # keep every candidate possible
        log_prior = np.log(prior / prior.sum())
        x_k = np.clip(self.inner._encode(w_k, s), 0.0, 1.0)  # (K, c)
        out = np.empty(y.shape[0])
        step = max(1, 2_000_000 // (self.grid * c))
        for a in range(0, y.shape[0], step):
            yy = y[a:a + step]
            ll = log_prior[None, :] + np.sum(channel.log_likelihood(yy[:, None, :], x_k[None, :, :]), axis=2)
            ll -= ll.max(axis=1, keepdims=True)
            p = np.exp(ll)
            out[a:a + step] = (p @ w_k) / p.sum(axis=1)
        return out

    def with_repetition(self, r):
        return self if r == 1 else MMSE(self.inner.with_repetition(r), self.grid)

    def spec(self):
        return {"kind": "MMSE", "inner": self.inner.spec(), "grid": self.grid}


# --------------------------------------------------------------------------- digital + ECC
def _gray(v: np.ndarray) -> np.ndarray:
    return v ^ (v >> 1)


def _gray_inverse(g: np.ndarray) -> np.ndarray:
    v = g.copy()
    shift = g >> 1
    while np.any(shift):
        v ^= shift
        shift >>= 1
    return v


class DigitalECC(Encoder):
    """The digital baseline: ``bits``-bit symmetric uniform quantisation
    (``q = round(w/Δ)``, ``Δ = max|w|/(2^(bits−1) − 1)``, offset binary), the bit stream cut
    into blocks of ``block_bytes`` bytes, each protected by a binary BCH code correcting
    ``t`` bit errors over GF(2^m) (``bchlib``; ``t = 0``: no ECC), and the codeword bits
    stored ``bits_per_cell`` per cell on ``2^bits_per_cell`` equally spaced Gray-coded
    levels, read by nearest level. Cells per weight ≈
    ``bits·(1 + ecc_bytes/block_bytes)/bits_per_cell``."""

    name = "digital-ecc"

    def __init__(self, bits: int = 8, bits_per_cell: int = 2, t: int = 8, block_bytes: int = 64, m: int = 10):
        if not 2 <= int(bits) <= 16:
            raise ValueError(f"bits must be in [2, 16], got {bits!r}")
        if not 1 <= int(bits_per_cell) <= 8:
            raise ValueError(f"bits_per_cell must be in [1, 8], got {bits_per_cell!r}")
        self.bits, self.bits_per_cell, self.t = int(bits), int(bits_per_cell), int(t)
        self.block_bytes, self.m = int(block_bytes), int(m)
        if self.t > 0:
            import bchlib

            self._bch = bchlib.BCH(self.t, m=self.m)
            if self.block_bytes * 8 + self._bch.ecc_bits > self._bch.n:
                raise ValueError(f"BCH over GF(2^{self.m}) holds {self._bch.n} bits: {self.block_bytes} data bytes "
                                 f"+ {self._bch.ecc_bits} ECC bits do not fit; lower t or block_bytes")
            self.ecc_bytes = int(self._bch.ecc_bytes)
        else:
            self._bch, self.ecc_bytes = None, 0
        self.name = f"digital{self.bits}b-{self.bits_per_cell}bpc-bch{self.t}"

    # layout
    def _n_blocks(self, n_weights: int) -> int:
        return -(-int(n_weights) * self.bits // (8 * self.block_bytes))

    def n_cells(self, n_weights: int) -> int:
        bits = self._n_blocks(n_weights) * (self.block_bytes + self.ecc_bytes) * 8
        return -(-bits // self.bits_per_cell)

    def cells_per_weight(self) -> float:
        """Asymptotic cells per weight of this configuration."""
        return self.bits * (1 + self.ecc_bytes / self.block_bytes) / self.bits_per_cell

    def fit(self, w, channel=None):
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        wmax = float(np.abs(w).max()) if w.size else 0.0
        return {"step": (wmax if wmax > 0 else 1.0) / (2 ** (self.bits - 1) - 1)}

    def quantise(self, w: np.ndarray, side: Side) -> np.ndarray:
        """The k-bit reconstruction of ``w`` (what an error-free read returns)."""
        q = self._codes(np.asarray(w, dtype=np.float64).reshape(-1), side)
        return (q.astype(np.float64) - 2 ** (self.bits - 1)) * float(side["step"])

    def _codes(self, w, side):
        half = 2 ** (self.bits - 1)
        q = np.clip(np.rint(w / float(side["step"])), -(half - 1), half - 1)
        return (q + half).astype(np.uint32)

    def encode(self, w, side):
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        codes = self._codes(w, side)
        bits = ((codes[:, None] >> np.arange(self.bits - 1, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8).reshape(-1)
        nb = self._n_blocks(w.size)
        data = np.zeros(nb * self.block_bytes * 8, dtype=np.uint8)
        data[:bits.size] = bits
        data = np.packbits(data).reshape(nb, self.block_bytes)
        if self._bch is not None:
            ecc = np.frombuffer(b"".join(self._bch.encode(bytes(blk)) for blk in data), dtype=np.uint8)
            code = np.concatenate([data, ecc.reshape(nb, self.ecc_bytes)], axis=1)
        else:
            code = data
        stream = np.unpackbits(code.reshape(-1))
        b = self.bits_per_cell
        pad = (-stream.size) % b
        stream = np.concatenate([stream, np.zeros(pad, dtype=np.uint8)]).reshape(-1, b)
        sym = (stream.astype(np.uint32) << np.arange(b - 1, -1, -1, dtype=np.uint32)).sum(axis=1)
        return _gray(sym).astype(np.float64) / (2 ** b - 1)

    def decode(self, y, side, n_weights, channel=None):
        b, L = self.bits_per_cell, 2 ** self.bits_per_cell
        level = np.clip(np.rint(np.asarray(y, dtype=np.float64) * (L - 1)), 0, L - 1).astype(np.uint32)
        sym = _gray_inverse(level)
        stream = ((sym[:, None] >> np.arange(b - 1, -1, -1, dtype=np.uint32)) & 1).astype(np.uint8).reshape(-1)
        nb = self._n_blocks(n_weights)
        width = self.block_bytes + self.ecc_bytes
        code = np.packbits(stream[: nb * width * 8]).reshape(nb, width)
        data = code[:, : self.block_bytes].copy()
        if self._bch is not None:
            self.last_uncorrectable = 0
            for i in range(nb):
                blk, ecc = bytearray(data[i].tobytes()), bytearray(code[i, self.block_bytes:].tobytes())
                nerr = self._bch.decode(blk, ecc)
                if nerr > 0:
                    self._bch.correct(blk, ecc)
                    data[i] = np.frombuffer(bytes(blk), dtype=np.uint8)
                elif nerr < 0:
                    self.last_uncorrectable += 1
        bits = np.unpackbits(data.reshape(-1))[: int(n_weights) * self.bits].reshape(-1, self.bits)
        codes = (bits.astype(np.uint32) << np.arange(self.bits - 1, -1, -1, dtype=np.uint32)).sum(axis=1)
        return (codes.astype(np.float64) - 2 ** (self.bits - 1)) * float(side["step"])

    def spec(self):
        return {"kind": "DigitalECC", "bits": self.bits, "bits_per_cell": self.bits_per_cell, "t": self.t,
                "block_bytes": self.block_bytes, "m": self.m}


# --------------------------------------------------------------------------- registry
_KINDS = {c.__name__: c for c in (LinearMap, DifferentialPair, SignMagnitude, Sliced)}


def encoder_from_spec(spec: dict[str, Any]) -> Encoder:
    """Rebuild an encoder from :meth:`Encoder.spec` (as saved in snapshots)."""
    try:
        kind = spec["kind"]
        args = {k: v for k, v in spec.items() if k != "kind"}
        if kind == "Repetition":
            return Repetition(encoder_from_spec(args["inner"]), args["r"])
        if kind == "MMSE":
            return MMSE(encoder_from_spec(args["inner"]), args["grid"])
        if kind == "DigitalECC":
            return DigitalECC(**args)
        return _KINDS[kind](**args)
    except (KeyError, TypeError) as exc:
        raise StorageError(f"unknown or malformed encoder spec {spec!r}: {exc!r}") from None


#: Named encoders of the main job, each with its cells per weight.
ENCODER_NAMES = ("naive", "adaptive", "differential", "sign-magnitude", "sliced", "differential-mmse")


def make_encoder(name: str, cells_per_weight: int = 2) -> Encoder:
    """A named scheme at ``cells_per_weight`` cells per weight (repetition fills the cells):

    ``naive`` (max-abs linear map), ``adaptive`` (auto per-layer range), ``differential``,
    ``sign-magnitude``, ``sliced`` (2 cells: base-4 MSB + analog LSB), ``differential-mmse``
    (differential pair, adaptive range, MMSE decoding), ``linear-mmse``.
    """
    base = {
        "naive": lambda: LinearMap(100.0),
        "adaptive": lambda: LinearMap("auto"),
        "linear-mmse": lambda: MMSE(LinearMap("auto")),
        "differential": lambda: DifferentialPair("auto"),
        "sign-magnitude": lambda: SignMagnitude("auto"),
        "sliced": lambda: Sliced(100.0, n_slices=2, base=4),
        "differential-mmse": lambda: MMSE(DifferentialPair("auto")),
    }
    if name not in base:
        raise ValueError(f"unknown encoder {name!r}; choose from {sorted(base)}")
    enc = base[name]()
    c = enc.cells_per_weight
    if cells_per_weight % c:
        raise ValueError(f"encoder {name!r} uses {c} cells per weight; {cells_per_weight} is not a multiple")
    return enc.with_repetition(cells_per_weight // c)
