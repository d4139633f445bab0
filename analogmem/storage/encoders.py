"""Encoders and decoders: weight tensors ⇄ analog cell targets (thesis ch.3; Isik et al.,
ACM TECS 2023; docs/storage.md "Encoders").

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
  weight given the reads, using the card's channel statistics (:class:`ReadChannel`) and a
  per-tensor prior histogram of the weights (side information).
* :class:`DigitalECC` — the baseline: ``k``-bit uniform quantisation, the bits protected
  by a BCH code (``bchlib``, the Linux kernel BCH library) and stored ``b`` bits per
  multi-level cell (Gray-coded levels, nearest-level detection).

:func:`global_drift_scale` is the drift compensation users of aihwkit expect: one global
scale per tensor re-estimated from a read (the mean target is known at write time; no
clean weights are needed).

The array math of the encoders is written once against the array API standard
(``array_api_compat.array_namespace``): the cell maps' ``_encode``/``_decode``/``_gain``,
:meth:`CellMap.encode`/:meth:`CellMap.decode`/:meth:`CellMap.fit`, the MMSE posterior mean
and prior histogram, the percentile range fit, :func:`check_finite` and
:func:`global_drift_scale` take numpy arrays or torch tensors (on any device) and return the
same kind. numpy arrays are computed in float64 (as they always were); other arrays keep
their floating dtype (the torch bench's float32 or float64; MMSE's posterior is float64).
Where ``analogmem.storage._codec`` has a kernel (:meth:`CellMap.encode_S`,
:meth:`CellMap.decode_S`, :meth:`MMSE.decode_S`) numpy arrays take it; that is the hot
loop of the same map, not a second encoder. The channel statistics (:class:`ReadChannel`) and
the side information stay on the host: they are small tables.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np
from array_api_compat import array_namespace, device as array_device, is_numpy_array, to_device
from scipy.special import log_ndtr

from ..emulator._kernels import max_threads as _omp_max_threads
from ..emulator.bench import default_threads
from ..emulator.cells import DeviceModel
from ..errors import DeviceCardError, SettingError, StorageError
from . import _codec

# array_api_compat loads its numpy namespace on the first array_namespace() of a numpy array
# (about 8 ms): once here, at import, rather than inside the first put of a tensor
array_namespace(np.empty(0))

__all__ = [
    "ReadChannel",
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


def _is_np(a: Any) -> bool:
    """Whether ``a`` is computed with numpy (a numpy array, or something numpy takes: lists, scalars)."""
    return is_numpy_array(a) or isinstance(a, (list, tuple, float, int, np.generic))


def _work(a: Any) -> Any:
    """``a`` flat, as the encoders compute on it: a numpy array (or list) in float64, another
    library's array in float32 or float64 as it is (16-bit floats: float32, integers:
    float64), on its own device."""
    if _is_np(a):
        return np.asarray(a, dtype=np.float64).reshape(-1)
    xp = array_namespace(a)
    a = xp.reshape(a, (-1,))
    if a.dtype in (xp.float32, xp.float64):
        return a
    return xp.astype(a, xp.float32 if xp.isdtype(a.dtype, "real floating") else xp.float64)  # 16-bit floats: float32


def _like(a: np.ndarray, ref: Any) -> Any:
    """The host (numpy) table ``a`` as an array of ``ref``'s namespace and device (``a`` itself for numpy)."""
    if _is_np(ref):
        return a
    return array_namespace(ref).asarray(np.ascontiguousarray(a), device=array_device(ref))


def _host(a: Any) -> np.ndarray:
    """``a`` as a float64 numpy array (moved to the host: only for small arrays)."""
    return np.asarray(a if _is_np(a) else to_device(a, "cpu"), dtype=np.float64)


def check_finite(name: str, w: Any) -> None:
    """Raise :class:`~analogmem.errors.StorageError` naming tensor ``name`` and the first bad
    index if ``w`` (a numpy array or another array-API array, any device) holds NaN or ±inf
    (nothing is stored then)."""
    if _is_np(w):
        w = np.asarray(w)
    xp = array_namespace(w)
    if xp.isdtype(w.dtype, "bool") or xp.isdtype(w.dtype, "integral"):
        return
    size = math.prod(w.shape)
    if size and not bool(xp.all(xp.isfinite(w))):
        fin = xp.isfinite(xp.reshape(w, (-1,)))
        i = int(xp.argmin(xp.astype(fin, xp.int8)))
        bad = float(xp.reshape(w, (-1,))[i]) if not is_numpy_array(w) else w.reshape(-1)[i]
        raise StorageError(f"tensor {name!r} has a non-finite value {bad} at flat index {i} "
                           f"({int(xp.sum(xp.astype(~fin, xp.int64)))} non-finite in all); nothing was stored")


# --------------------------------------------------------------------------- the channel
@dataclass(frozen=True)
class ReadChannel:
    """The read channel of one device card at ``t_s`` seconds after programming, in
    relative units ``x = (g − g_min)/(g_max − g_min)``.

    For a target ``x`` the read is modelled as Gaussian with the exact mean and variance of
    the card's read (the cell model of README "Device cards"): programmed ``g_P = g_T + σ_P·ε``, drift factor
    ``d = ((t + t0)/t0)^(−ν)`` with ``ν ~ |N(μ_ν(x), σ_ν(x))|`` drawn per cell, relaxation
    spread ``σ_relax(x, t)`` and read noise ``σ_R = |g_P·d|·Q_s(x)·f(t)``, so
    ``E[g] = g_T·E[d]`` and
    ``Var[g] = (g_T² + σ_P²)·E[d²]·(1 + Q_s²f²) − g_T²·E[d]² + σ_relax²``; a card's
    relaxation mean shift (``rram-cmo-hfox``) adds to ``E[g]``, and an additive read noise
    (``"log10-1/f"``: ``σ_R = K·log10(g/µS)·f``) adds ``σ_R²`` at the mean read instead of the
    ``Q_s²f²`` factor
    (``E[d^k]`` of the folded normal in closed form, :func:`_folded_normal_mgf`; ``d = 1``
    without drift), in relative units of ``g_max − g_min``, censored at the physical clip:
    a read at ``clip_min_S`` has probability ``Φ((clip_lo − m)/σ)``. The spread of the
    per-cell drift exponent is what makes PCM reads at long times wide (at 1 year,
    ``σ_ν·ln((t + t0)/t0)`` is 0.1–0.6 in ln g).
    """

    device: DeviceModel
    t_s: float

    def __post_init__(self) -> None:
        if self.device.empirical:
            from ..emulator.cells import bundled_devices, load_device

            usable = [n for n in bundled_devices() if not load_device(n).empirical]
            raise DeviceCardError(
                f"device card {self.device.name!r} has an empirical (measured) write channel, which the "
                f"Gaussian channel model of the encoders cannot use; use a card with a σ_P(g) "
                f"polynomial: {', '.join(usable)}")

    @property
    def span_S(self) -> float:
        return self.device.g_max_S - self.device.g_min_S

    def to_S(self, x: Any) -> Any:
        """Relative targets → conductance (S); numpy in float64, another array-API array in its dtype."""
        return self.device.g_min_S + (np.asarray(x, dtype=np.float64) if _is_np(x) else x) * self.span_S

    def to_relative(self, g_S: Any) -> Any:
        """Conductance (S) → relative units; numpy in float64, another array-API array in its dtype."""
        return ((np.asarray(g_S, dtype=np.float64) if _is_np(g_S) else g_S) - self.device.g_min_S) / self.span_S

    def mean_std(self, x: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Mean and standard deviation of the relative read for relative targets ``x`` (any shape)."""
        dev, t = self.device, float(self.t_s)
        g = self.to_S(np.clip(x, 0.0, 1.0))
        if dev.drift.enabled:
            L = math.log((t + dev.drift.t0_s) / dev.drift.t0_s)
            mu, sd = dev.drift_mu(g), dev.drift_sigma(g)
            d1, d2 = _folded_normal_mgf(mu, sd, -L), _folded_normal_mgf(mu, sd, -2.0 * L)
        else:
            d1 = d2 = np.ones_like(g)
        sp2 = dev.sigma_program_S(g) ** 2
        shift = dev.relaxation_mean_S(g, t)
        additive_read = dev.read_noise.model == "log10-1/f"  # σ_R = K·log10(g/µS)·f(t), at the mean read
        qf2 = (dev.read_noise_q(g) * dev.read_noise_time_factor(t)) ** 2 if dev.read_noise.enabled else 0.0
        var = (g * g + sp2) * d2 * (1.0 + (0.0 if additive_read else qf2)) - (g * d1) ** 2 \
            + dev.sigma_relaxation_S(g, t) ** 2
        if additive_read:
            var = var + qf2 * dev.read_noise_scale(g * d1 + shift) ** 2
        std = np.sqrt(np.maximum(var, 1e-30)) / self.span_S
        return self.to_relative(g * d1 + shift), std

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


def _folded_normal_mgf(mu: np.ndarray, sigma: np.ndarray, s: float) -> np.ndarray:
    """``E[exp(s·|X|)]`` for ``X ~ N(mu, sigma²)`` (elementwise; ``sigma = 0``: ``exp(s·|mu|)``):
    ``e^{sμ + s²σ²/2}·Φ(μ/σ + sσ) + e^{−sμ + s²σ²/2}·Φ(−μ/σ + sσ)``."""
    mu, sigma = np.broadcast_arrays(np.asarray(mu, dtype=np.float64), np.asarray(sigma, dtype=np.float64))
    out = np.exp(s * np.abs(mu))
    pos = sigma > 0
    if np.any(pos):
        m, v = mu[pos], sigma[pos]
        a = s * m + 0.5 * (s * v) ** 2 + log_ndtr(m / v + s * v)
        b = -s * m + 0.5 * (s * v) ** 2 + log_ndtr(-m / v + s * v)
        out = out.copy()
        out[pos] = np.exp(np.logaddexp(a, b))
    return out


def global_drift_scale(g_read_S: Any, g_target_mean_S: float) -> float:
    """Global drift compensation (as aihwkit's ``GlobalDriftCompensation``): the factor
    ``α = mean target / mean read`` by which every read of a tensor is multiplied. The
    mean target (S) is recorded at write time, so no clean weights are needed. ``g_read_S``:
    a numpy array or another array-API array (its mean, one number, comes to the host)."""
    m = float(np.mean(g_read_S)) if _is_np(g_read_S) else float(array_namespace(g_read_S).mean(g_read_S))
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

    def fit(self, w: np.ndarray, channel: ReadChannel | None = None) -> Side:
        """Side information for tensor ``w`` (flat float array)."""
        raise NotImplementedError

    def encode(self, w: np.ndarray, side: Side) -> np.ndarray:
        """Relative targets in [0, 1], shape ``(n_cells(len(w)),)``."""
        raise NotImplementedError

    def decode(self, y: np.ndarray, side: Side, n_weights: int, channel: ReadChannel | None = None) -> np.ndarray:
        """Weights, shape ``(n_weights,)``, from relative reads ``y`` (shape ``(n_cells,)``)."""
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        """A JSON-able description from which :func:`encoder_from_spec` rebuilds the encoder."""
        raise NotImplementedError

    def __repr__(self) -> str:
        return f"{type(self).__name__}({self.spec()})"


def _range(w: np.ndarray, percentile: float) -> float:
    return _ranges(w, (percentile,))[0]


def _ranges(w: Any, percentiles: tuple[float, ...]) -> list[float]:
    """The ranges ``s`` at ``percentiles`` of ``|w|`` (100: ``max|w|``; a range of 0 becomes
    ``max|w|``, and 1 for an all-zero tensor), from one pass over ``w``: the percentiles are
    numpy's (linear interpolation), computed exactly on the tail of ``|w|`` above a bound
    estimated from a sample, so only that tail is sorted. ``w``: numpy or another array-API
    array (the order statistics are selected on its device)."""
    if _is_np(w):
        w = np.asarray(w).reshape(-1)
    else:
        w = array_namespace(w).reshape(w, (-1,))
    if math.prod(w.shape) == 0:
        return [1.0] * len(percentiles)
    amax = _abs_max(w)
    out = _abs_percentiles(w, [p for p in percentiles if p < 100])
    res = []
    for p in percentiles:
        v = amax if p >= 100 else out.pop(0)
        if v <= 0:
            v = amax
        res.append(v if v > 0 else 1.0)
    return res


def _abs_max(w: Any) -> float:
    """``max |w|`` of a non-empty flat array (numpy or another array-API array), without an ``|w|`` temporary."""
    xp = np if _is_np(w) else array_namespace(w)
    return max(float(xp.max(w)), -float(xp.min(w)))


def _fit_threads() -> int:
    """Threads of the storage layer's fit passes (range tails, prior histograms): the cores this
    process may use, within OpenMP's current limit (so ``threadpoolctl.threadpool_limits``, as
    the store job's parallel chips set it, is respected: an explicit thread count would override it)."""
    return max(1, min(default_threads(), int(_omp_max_threads())))


def _abs_percentiles(w: np.ndarray, percentiles: list[float]) -> list[float]:
    """``np.percentile(|w|, percentiles)`` (float64, linear) for a 1-D ``w``; for large ``w``
    only the values of ``|w|`` at or above a lower bound of the smallest asked-for order
    statistic are selected (``analogmem.storage._codec.abs_tail`` for float32/float64) and
    partitioned (exact: the ranks are shifted by the count below)."""
    if not percentiles:
        return []
    if not _is_np(w):  # another array library: the order statistics by sorting |w| on its device
        xp = array_namespace(w)
        n = math.prod(w.shape)
        ranks = [p / 100.0 * (n - 1) for p in percentiles]
        return _interpolate(xp.sort(xp.astype(xp.abs(w), xp.float64)), ranks, 0, n)
    n = w.size
    if n <= 1 << 16:
        return [float(v) for v in np.percentile(np.abs(w).astype(np.float64), percentiles)]
    ranks = [p / 100.0 * (n - 1) for p in percentiles]
    r_lo = int(math.floor(min(ranks)))
    sample = np.abs(w[:: max(1, n // 65536)])
    q = max(0.0, min(ranks) / (n - 1) - 4.0 / math.sqrt(sample.size) - 1e-3)
    bound = float(np.quantile(sample, q)) if q > 0 else -math.inf
    if w.dtype in (np.float32, np.float64) and w.flags.c_contiguous:
        below, tail = _codec.abs_tail(w, bound, _fit_threads())
    else:
        a = np.abs(w)
        below = int(np.count_nonzero(a < bound)) if q > 0 else 0
        tail = (a[a >= bound] if q > 0 else a).astype(np.float64)
    if below > r_lo:  # the sample's bound was too high: select on everything
        tail, below = np.abs(w).astype(np.float64), 0
    idx = sorted({int(math.floor(r)) - below for r in ranks} | {min(int(math.ceil(r)), n - 1) - below for r in ranks})
    return _interpolate(np.partition(tail, idx), ranks, below, n)


def _interpolate(part: Any, ranks: list[float], below: int, n: int) -> list[float]:
    """numpy's linear percentile at fractional ``ranks`` of ``n`` values, from ``part``: the
    values at or above the ``below`` smallest, each order statistic the percentiles need in
    its sorted place (a partition or a sort)."""
    res = []
    for r in ranks:
        lo_i, hi_i = int(math.floor(r)), min(int(math.ceil(r)), n - 1)
        lo_v, hi_v, t = float(part[lo_i - below]), float(part[hi_i - below]), r - math.floor(r)
        d = hi_v - lo_v  # numpy's _lerp
        res.append(hi_v - d * (1.0 - t) if t >= 0.5 else lo_v + d * t)
    return res


_AUTO_PERCENTILES = (99.0, 99.5, 99.9, 99.99, 100.0)
#: The adaptive range is scored on at most this many weights.
FIT_SAMPLE = 20000


def fit_sample(w: Any) -> Any:
    """The weights (1-D) the adaptive range is scored on: all up to :data:`FIT_SAMPLE`, else every k-th."""
    n = len(w)
    return w if n <= FIT_SAMPLE else w[:: max(1, n // FIT_SAMPLE)]


def _float_flat(a: Any) -> Any:
    """``a`` flat and contiguous as float32 or float64 (other floats and integers become
    float64); another array library's array as :func:`_work` makes it (on its device)."""
    if not _is_np(a):
        return _work(a)
    a = np.asarray(a).reshape(-1)
    if a.dtype not in (np.float32, np.float64):
        a = a.astype(np.float32 if a.dtype == np.float16 else np.float64)
    return np.ascontiguousarray(a)


def _device_decode(enc: "CellMap", g_S: Any, side: Side, n_weights: int, channel: ReadChannel, dtype: Any) -> Any:
    """:meth:`CellMap.decode` of reads ``g_S`` (S) of another array library, on their device,
    as ``dtype`` (float32 or float64 of that library)."""
    w = enc.decode(channel.to_relative(g_S), side, n_weights, channel)
    xp = array_namespace(w)
    return xp.astype(w, xp.float32 if np.dtype(dtype) == np.float32 else xp.float64, copy=False)


def _map_kind(enc: Any) -> tuple[int, int] | None:
    """``(kind, r)`` of the maps ``analogmem.storage._codec`` runs (0 linear, 1 differential;
    r copies), None for the others."""
    inner, r = (enc.inner, enc.r) if isinstance(enc, Repetition) else (enc, 1)
    if type(inner) is LinearMap:
        return 0, r
    if type(inner) is DifferentialPair:
        return 1, r
    return None


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
            raise SettingError(f"clip_percentile must be in [50, 100] or 'auto', got {clip_percentile!r}")
        self.clip_percentile = clip_percentile

    def n_cells(self, n_weights: int) -> int:
        return int(n_weights) * self.cells_per_weight

    def fit(self, w: np.ndarray, channel: ReadChannel | None = None) -> Side:
        w = _float_flat(w)
        if self.clip_percentile != "auto":
            return {"scale": _range(w, float(self.clip_percentile))}
        if channel is None:
            return {"scale": _range(w, 99.9)}
        # the candidate ranges on w's device; only the fit sample (<= FIT_SAMPLE) reaches the host
        return {"scale": self.best_scale(_ranges(w, _AUTO_PERCENTILES), _host(fit_sample(w)), channel)}

    def best_scale(self, scales: list[float], sample: np.ndarray, channel: ReadChannel) -> float:
        """The adaptive range: among candidate ``scales`` (the ranges at ``_AUTO_PERCENTILES``),
        the one minimising clipping error² + channel noise variance over ``sample`` (see
        :func:`fit_sample`)."""
        best = None
        for s in scales:
            err = np.sum((np.abs(sample) - s).clip(min=0) ** 2) + np.sum(self.noise_variance(sample, {"scale": s}, channel))
            if best is None or err < best[0]:
                best = (err, s)
        return best[1]

    def encode(self, w: Any, side: Side) -> Any:
        w = _work(w)
        xp = array_namespace(w)
        return xp.reshape(xp.clip(self._encode(w, float(side["scale"])), 0.0, 1.0), (-1,))

    def decode(self, y: Any, side: Side, n_weights: int, channel: ReadChannel | None = None) -> Any:
        y = _work(y)
        y = array_namespace(y).reshape(y, (int(n_weights), self.cells_per_weight))
        return self._decode(y, float(side["scale"]))

    def encode_S(self, w: np.ndarray, side: Side, channel: ReadChannel, n_threads: int = 1,
                 out: np.ndarray | None = None) -> np.ndarray:
        """Cell targets in S (float64, shape ``(n_cells(len(w)),)``) of flat float weights ``w``:
        :meth:`encode` then :meth:`ReadChannel.to_S`, in one pass of ``analogmem.storage._codec``
        for the linear and differential maps and their repetitions (the same bits); into
        ``out`` (float64, contiguous) when given. Another array-API array (a torch tensor on
        its device): :meth:`encode` then :meth:`ReadChannel.to_S` there, in its dtype (no ``out``)."""
        if not _is_np(w):
            return channel.to_S(self.encode(w, side))
        kr = _map_kind(self)
        if kr is None:
            g = channel.to_S(self.encode(w, side))
            if out is None:
                return g
            out[...] = g
            return out
        w = _float_flat(w)
        if out is None:
            out = np.empty(self.n_cells(w.size))
        _codec.encode_map(kr[0], w, float(side["scale"]), kr[1], channel.device.g_min_S, channel.span_S, out,
                          n_threads)
        return out

    def decode_S(self, g_S: np.ndarray, side: Side, n_weights: int, channel: ReadChannel, gain: float = 1.0,
                 dtype: Any = np.float64, n_threads: int = 1, table: Any = "auto") -> np.ndarray:
        """Weights (shape ``(n_weights,)``, ``dtype``) from reads ``g_S`` (S, float32 or float64)
        multiplied by ``gain`` (the drift compensation factor): :meth:`decode` of the reads in
        relative units, in one pass of ``analogmem.storage._codec`` for the linear and
        differential maps and their repetitions. (``table``: for :class:`MMSE`; unused here.)
        Reads of another array library are decoded on their device (:meth:`decode`)."""
        if not _is_np(g_S):
            return _device_decode(self, g_S * gain if gain != 1.0 else g_S, side, n_weights, channel, dtype)
        kr = _map_kind(self)
        dt = np.dtype(dtype)
        if kr is None or dt not in (np.float32, np.float64):
            g = np.asarray(g_S)
            y = channel.to_relative(g * gain if gain != 1.0 else g)
            return self.decode(y, side, n_weights, channel).astype(dt, copy=False)
        out = np.empty(int(n_weights), dtype=dt)
        _codec.decode_map(kr[0], _float_flat(g_S), float(gain), float(side["scale"]), kr[1], channel.device.g_min_S,
                          channel.span_S, out, n_threads)
        return out

    def noise_variance(self, w: np.ndarray, side: Side, channel: ReadChannel) -> np.ndarray:
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

    # subclass hooks: array-API math on numpy arrays or tensors (w (n,), y (n, c)), returning the same kind
    def _encode(self, w: Any, s: float) -> Any:
        raise NotImplementedError

    def _decode(self, y: Any, s: float) -> Any:
        raise NotImplementedError

    def _gain(self, w: Any, s: float) -> Any:
        raise NotImplementedError

    def spec(self) -> dict[str, Any]:
        return {"kind": type(self).__name__, "clip_percentile": self.clip_percentile}


class LinearMap(CellMap):
    """``x = (clip(w, −s, s)/s + 1)/2`` on one cell; ``ŵ = s·(2y − 1)``. ``s`` = the
    ``clip_percentile`` of ``|w|`` (100: the naive max-abs map; ``"auto"``: adaptive)."""

    name = "linear"
    cells_per_weight = 1

    def _encode(self, w, s):
        return ((array_namespace(w).clip(w, -s, s) / s + 1.0) / 2.0)[:, None]

    def _decode(self, y, s):
        return s * (2.0 * y[:, 0] - 1.0)

    def _gain(self, w, s):
        return array_namespace(w).full((w.shape[0], 1), 2.0 * s, dtype=w.dtype, device=array_device(w))


class DifferentialPair(CellMap):
    """Differential pair with sign protection: ``x+ = m·[w > 0]``, ``x− = m·[w < 0]``,
    ``m = min(|w|/s, 1)``; ``ŵ = s·(y+ − y−)``."""

    name = "differential"
    cells_per_weight = 2

    def _encode(self, w, s):
        xp = array_namespace(w)
        m = xp.clip(xp.abs(w) / s, None, 1.0)
        return xp.stack([xp.where(w > 0, m, 0.0), xp.where(w < 0, m, 0.0)], axis=1)

    def _decode(self, y, s):
        return s * (y[:, 0] - y[:, 1])

    def _gain(self, w, s):
        xp = array_namespace(w)
        return xp.tile(xp.asarray([[s, -s]], dtype=w.dtype, device=array_device(w)), (w.shape[0], 1))


class SignMagnitude(CellMap):
    """Sign protection: the sign on a binary cell (1 for w < 0, decoded by a 1/2
    threshold), the magnitude ``min(|w|/s, 1)`` on an analog cell; ``ŵ = ±s·y_mag``."""

    name = "sign-magnitude"
    cells_per_weight = 2

    def _encode(self, w, s):
        xp = array_namespace(w)
        return xp.stack([xp.astype(w < 0, w.dtype), xp.clip(xp.abs(w) / s, None, 1.0)], axis=1)

    def _decode(self, y, s):  # (±s)·y: the bits of (±1)·s·y
        xp = array_namespace(y)
        kw = dict(dtype=y.dtype, device=array_device(y))
        return xp.where(y[:, 0] > 0.5, xp.asarray(-s, **kw), xp.asarray(s, **kw)) * y[:, 1]

    def _gain(self, w, s):
        xp = array_namespace(w)
        n, kw = w.shape[0], dict(dtype=w.dtype, device=array_device(w))
        return xp.stack([xp.zeros(n, **kw), xp.full(n, s, **kw)], axis=1)


class Sliced(CellMap):
    """Multi-cell slicing: ``u = (clip(w, −s, s)/s + 1)/2`` written as
    ``u = (d_1 + (d_2 + … + r/B)/B)/B`` — base-``B`` digits ``d_k`` on the first
    ``n_slices − 1`` cells (levels ``d/(B−1)``, decoded by rounding) and the analog
    remainder ``r`` on the last cell."""

    name = "sliced"

    def __init__(self, clip_percentile: float | str = 100.0, n_slices: int = 2, base: int = 4):
        super().__init__(clip_percentile)
        if int(n_slices) < 2 or int(base) < 2:
            raise SettingError(f"Sliced needs n_slices >= 2 and base >= 2, got {n_slices}, {base}")
        self.n_slices, self.base = int(n_slices), int(base)
        self.cells_per_weight = self.n_slices

    def _encode(self, w, s):
        xp = array_namespace(w)
        B = self.base
        u = (xp.clip(w, -s, s) / s + 1.0) / 2.0
        cols = []
        for _ in range(self.n_slices - 1):
            d = xp.clip(xp.floor(u * B), None, float(B - 1))
            cols.append(d / (B - 1))
            u = u * B - d
        cols.append(u)
        return xp.stack(cols, axis=1)

    def _decode(self, y, s):
        xp = array_namespace(y)
        B = self.base
        u = y[:, -1]
        for k in range(self.n_slices - 2, -1, -1):
            d = xp.clip(xp.round(y[:, k] * (B - 1)), 0.0, float(B - 1))  # round half to even, as np.rint
            u = (d + u) / B
        return s * (2.0 * u - 1.0)

    def _gain(self, w, s):  # digits assumed decoded correctly: only the remainder's noise
        xp = array_namespace(w)
        kw = dict(dtype=w.dtype, device=array_device(w))
        last = xp.full((w.shape[0], 1), 2.0 * s / self.base ** (self.n_slices - 1), **kw)
        return xp.concat([xp.zeros((w.shape[0], self.n_slices - 1), **kw), last], axis=1)

    def spec(self):
        return {**super().spec(), "n_slices": self.n_slices, "base": self.base}


class Repetition(CellMap):
    """``inner`` with each weight's cells written ``r`` times (layout: copy-major per
    weight); the naive decoder averages the ``r`` reads of each cell, then decodes."""

    def __init__(self, inner: CellMap, r: int):
        if not isinstance(inner, CellMap) or isinstance(inner, MMSE):
            raise SettingError(f"Repetition wraps a plain cell map, got {inner!r}")
        if int(r) < 1:
            raise SettingError(f"repetitions r must be >= 1, got {r!r}")
        self.inner, self.r = inner, int(r)
        self.clip_percentile = inner.clip_percentile
        self.cells_per_weight = inner.cells_per_weight * self.r
        self.name = f"{inner.name}x{self.r}"

    def _encode(self, w, s):
        return array_namespace(w).tile(self.inner._encode(w, s), (1, self.r))

    def _decode(self, y, s):
        xp = array_namespace(y)
        c = self.inner.cells_per_weight
        return self.inner._decode(xp.mean(xp.reshape(y, (y.shape[0], self.r, c)), axis=1), s)

    def _gain(self, w, s):
        return array_namespace(w).tile(self.inner._gain(w, s) / self.r, (1, self.r))

    def noise_variance(self, w, side, channel):
        """The inner map's naive-decode variance divided by ``r`` (the ``r`` copies are
        independent reads of the same targets, averaged)."""
        return self.inner.noise_variance(w, side, channel) / self.r

    def with_repetition(self, r):
        return Repetition(self.inner, self.r * r)

    def spec(self):
        return {"kind": "Repetition", "inner": self.inner.spec(), "r": self.r}


#: Smallest tensor (weights) whose MMSE decode interpolates a table of posterior means.
TABLE_MIN_WEIGHTS = 1 << 20
#: Weights per table node, at least: the table's exact posteriors cost at most 1/8 of
#: decoding every weight exactly.
TABLE_WEIGHTS_PER_NODE = 8


@dataclass(frozen=True)
class PosteriorTable:
    """Posterior means at a grid of reads (:meth:`MMSE.posterior_table`), relative units:
    nodes ``y0 + j·h``; ``table`` (1, N) or (N, N); ``cen_first``/``cen_second`` (N,) for a
    pair whose first/second read is at the clip ``lo``; ``cen_both`` both at the clip."""

    lo: float
    y0: float
    h: float
    table: np.ndarray
    cen_first: np.ndarray
    cen_second: np.ndarray
    cen_both: float


class MMSE(CellMap):
    """MMSE decoding of any cell map: ``ŵ = E[w | y] = Σ_k p_k L_k w_k / Σ_k p_k L_k`` over a
    grid of ``grid`` candidate weights ``w_k`` spanning ``[−max|w|, max|w|]`` with prior
    ``p_k`` (the tensor's histogram, side information) and channel likelihood
    ``L_k = Π_j p(y_j | x_j(w_k))`` from :class:`ReadChannel` (the card's statistics at the
    read time). Encoding is the inner map's."""

    uses_channel = True

    def __init__(self, inner: CellMap, grid: int = 64):
        if not isinstance(inner, CellMap) or isinstance(inner, MMSE):
            raise SettingError(f"MMSE wraps a plain cell map, got {inner!r}")
        if int(grid) < 2:
            raise SettingError(f"grid must be >= 2, got {grid!r}")
        self.inner, self.grid = inner, int(grid)
        self.clip_percentile = inner.clip_percentile
        self.cells_per_weight = inner.cells_per_weight
        self.name = f"{inner.name}+mmse"

    def fit(self, w, channel=None):
        w = _float_flat(w)
        return {**self.inner.fit(w, channel), **_prior_histogram(w, self.grid)}

    def _encode(self, w, s):
        return self.inner._encode(w, s)

    def _gain(self, w, s):
        return self.inner._gain(w, s)

    def _decode(self, y, s):  # without a channel: the inner map's naive decoder
        return self.inner._decode(y, s)

    def candidates(self, side: Side) -> np.ndarray:
        """The candidate weights ``w_k`` (bin centres of the prior histogram), shape ``(grid,)``."""
        wmax = float(side["prior_range"])
        edges = np.linspace(-wmax, wmax, self.grid + 1)
        return 0.5 * (edges[:-1] + edges[1:])

    def log_prior(self, side: Side) -> np.ndarray:
        """``log p_k`` of the prior histogram (every candidate kept possible), shape ``(grid,)``."""
        prior = np.asarray(side["prior_counts"], dtype=np.float64) + 1e-3
        return np.log(prior / prior.sum())

    def decode(self, y, side, n_weights, channel=None):
        """The posterior mean of each weight (float64, shape ``(n_weights,)``) from relative
        reads ``y`` (numpy, or another array-API array: decoded on its device; the candidates'
        channel table is made on the host)."""
        if channel is None:
            return super().decode(y, side, n_weights)
        c = self.cells_per_weight
        host = _is_np(y)
        y = _work(y)
        xp = array_namespace(y)
        y = xp.reshape(xp.astype(y, xp.float64, copy=False), (int(n_weights), c))
        w_k = self.candidates(side)
        x_k = np.clip(self.inner._encode(w_k, float(side["scale"])), 0.0, 1.0)  # (K, c)
        like = _GaussianLikelihood(x_k, channel)
        log_prior, w_k = _like(self.log_prior(side), y), _like(w_k, y)
        out = xp.empty(y.shape[0], dtype=xp.float64, device=array_device(y))
        # weights per chunk: cache-sized on the host, larger (fewer kernel launches) on a device
        step = max(1, (4_000_000 if host else 1 << 24) // (self.grid * max(c, 4)))
        for a in range(0, y.shape[0], step):
            out[a:a + step] = _posterior_mean(log_prior[None, :] + like.matrix(y[a:a + step, :]), w_k)
        return out

    def encode_S(self, w, side, channel, n_threads=1, out=None):
        return self.inner.encode_S(w, side, channel, n_threads, out)

    def posterior_table(self, side: Side, channel: ReadChannel, n_weights: int,
                        n_threads: int = 1) -> "PosteriorTable | None":
        """The posterior mean tabulated for a tensor of ``n_weights`` weights read through
        ``channel``, or None where the exact posterior is used: maps of 1 or 2 cells per weight
        (linear, differential) and tensors of at least :data:`TABLE_MIN_WEIGHTS` weights.

        The exact posterior (64 candidates: a likelihood and an exponential per candidate and
        weight) costs about 200 ns per weight; for a large tensor it is computed once, exactly
        (:func:`~analogmem.storage._codec.mmse_posterior`), at the nodes of a grid of reads —
        ``N`` nodes per cell, spaced a quarter of the smallest read spread of any candidate,
        spanning the candidates' read means ± 8 standard deviations from just above the clip;
        used when the table (``N^c`` nodes) costs at most 1/:data:`TABLE_WEIGHTS_PER_NODE` of
        the exact decode — and each weight's posterior mean is interpolated (bilinear) from the
        table, with reads at the clip (censored) taken from tables of the other read. The
        posterior mean is smooth in the reads on the scale of the read noise, which the grid
        resolves four times over: the interpolated decode differs from the exact one by about
        10⁻³ of the weights' read-noise error (RMS; ``tests/test_encoders.py`` bounds it)."""
        c = self.cells_per_weight
        n = int(n_weights)
        if c not in (1, 2) or n < TABLE_MIN_WEIGHTS or type(self.inner) not in (LinearMap, DifferentialPair):
            return None
        w_k = self.candidates(side)
        x_k = np.clip(self.inner._encode(w_k, float(side["scale"])), 0.0, 1.0)  # (K, c)
        like = _GaussianLikelihood(x_k, channel)
        if like.direct:
            return None
        m, sd = channel.mean_std(x_k)
        lo = like.lo if math.isfinite(like.lo) else -math.inf
        y0 = lo + 1e-9 if math.isfinite(lo) else float(np.min(m - 8.0 * sd))
        y1 = float(np.max(m + 8.0 * sd))
        # node spacing: a quarter of the smallest read spread; the table may cost at most
        # 1/TABLE_WEIGHTS_PER_NODE of the exact decode, else the exact posterior is used
        N = max(64, int(math.ceil((y1 - y0) / (0.25 * float(np.min(sd))))) + 1)
        if y1 <= y0 or N ** c > n // TABLE_WEIGHTS_PER_NODE:
            return None
        nodes = np.linspace(y0, y1, N)
        to_S = lambda y: np.ascontiguousarray(y, dtype=np.float64).reshape(-1) * channel.span_S \
            + channel.device.g_min_S  # noqa: E731
        exact = lambda y, k: self.decode_S(to_S(y), side, k, channel, n_threads=n_threads, table=None)  # noqa: E731
        at_lo = np.full(N, lo)
        if c == 1:
            table = exact(nodes, N)[None, :]
            cen_first = cen_second = np.zeros(N)
            both = float(exact(np.array([lo]), 1)[0]) if math.isfinite(lo) else 0.0
        else:
            y_a, y_b = np.meshgrid(nodes, nodes, indexing="ij")
            table = exact(np.stack([y_a.ravel(), y_b.ravel()], axis=1), N * N).reshape(N, N)
            if math.isfinite(lo):
                cen_first = exact(np.stack([at_lo, nodes], axis=1), N)
                cen_second = exact(np.stack([nodes, at_lo], axis=1), N)
                both = float(exact(np.array([lo, lo]), 1)[0])
            else:
                cen_first = cen_second = np.zeros(N)
                both = 0.0
        return PosteriorTable(lo, y0, (y1 - y0) / (N - 1), np.ascontiguousarray(table), cen_first, cen_second, both)

    def decode_S(self, g_S, side, n_weights, channel, gain=1.0, dtype=np.float64, n_threads=1, table="auto"):
        """The posterior mean of each weight from reads ``g_S`` (S), in one pass of
        ``analogmem.storage._codec.mmse_posterior`` (``gain`` is ignored: the channel model
        holds the mean drift); as :meth:`decode` to rounding. ``table``: ``"auto"``
        (:meth:`posterior_table` for these ``n_weights``: a tensor decoded in one call), a
        :class:`PosteriorTable` made for the whole tensor (when it is decoded chunk by chunk),
        or None (the exact posterior). Reads of another array library: :meth:`decode` on their device."""
        if not _is_np(g_S):
            return _device_decode(self, g_S, side, n_weights, channel, dtype)
        dt = np.dtype(dtype)
        if isinstance(table, str):
            table = self.posterior_table(side, channel, n_weights, n_threads)
        if table is not None and dt in (np.float32, np.float64):
            out = np.empty(int(n_weights), dtype=dt)
            _codec.mmse_table(_float_flat(g_S), channel.device.g_min_S, channel.span_S, table.lo, table.y0, table.h,
                              table.table, table.cen_first, table.cen_second, table.cen_both, out, n_threads)
            return out
        w_k = self.candidates(side)
        x_k = np.clip(self.inner._encode(w_k, float(side["scale"])), 0.0, 1.0)  # (K, c)
        like = _GaussianLikelihood(x_k, channel)
        if like.direct or dt not in (np.float32, np.float64):
            y = channel.to_relative(np.asarray(g_S))
            return self.decode(y, side, n_weights, channel).astype(dt, copy=False)
        out = np.empty(int(n_weights), dtype=dt)
        _codec.mmse_posterior(_float_flat(g_S), channel.device.g_min_S, channel.span_S,
                              np.ascontiguousarray(like.group, dtype=np.int64), np.ascontiguousarray(like.coefficients),
                              like.lo if math.isfinite(like.lo) else -math.inf, np.ascontiguousarray(self.log_prior(side)),
                              np.ascontiguousarray(w_k), out, n_threads)
        return out

    def distortion_table(self, side: Side, channel: ReadChannel, max_repetitions: int, n_samples: int = 64,
                         seed: Any = 0, points: np.ndarray | None = None) -> tuple[np.ndarray, np.ndarray]:
        """Mean squared error of *this* decoder (the posterior mean) for a weight ``w`` stored
        on ``r`` copies of the inner map, ``r = 1..max_repetitions``, through ``channel``.

        Monte Carlo on the channel model (Gaussian reads of mean/std :meth:`ReadChannel.mean_std`,
        clipped at the card's lower clip): for each of ``2·grid + 1`` points ``w_p`` evenly
        spaced on ``[−prior_range, prior_range]``, ``n_samples`` read vectors of ``r`` copies
        (common quasi-random numbers across ``w_p`` and ``r``, :func:`_normal_points` from
        ``seed``) are decoded exactly as :meth:`decode` does (or at the given ``points``).
        Returns ``(w_p (P,), mse (P, R))`` in weight units²; a weight between points is
        interpolated linearly (:meth:`distortion`). 64 samples put the mean MSE within a few
        per cent of the emulator's (``tests/test_encoders.py``)."""
        R, S = int(max_repetitions), int(n_samples)
        if R < 1 or S < 1:
            raise SettingError(f"max_repetitions and n_samples must be >= 1, got {max_repetitions}, {n_samples}")
        s, wmax = float(side["scale"]), float(side["prior_range"])
        inner = self.inner  # r copies of it: MMSE(inner.with_repetition(r))
        w_p = np.linspace(-wmax, wmax, 2 * self.grid + 1) if points is None \
            else np.asarray(points, dtype=np.float64).reshape(-1)
        w_k = self.candidates(side)
        x_k = np.clip(inner._encode(w_k, s), 0.0, 1.0)  # (K, c) one copy
        like = _GaussianLikelihood(x_k, channel)
        log_prior = self.log_prior(side)
        x_p = np.clip(inner._encode(w_p, s), 0.0, 1.0)  # (P, c)
        m_p, s_p = channel.mean_std(x_p)
        z = _normal_points(S, R, x_p.shape[1], seed)[:, :, None, :]  # (R, S, 1, c)
        lo = channel.clip_lo
        stats = 0.0
        mse = np.empty((w_p.size, R))
        for r in range(R):  # reads of copy r; the statistics of r + 1 copies are cumulative sums
            y = m_p[None] + s_p[None] * z[r]  # (S, P, c)
            if math.isfinite(lo):
                y = np.maximum(y, lo)
            stats = stats + like.statistics(y.reshape(-1, x_p.shape[1]))
            w_hat = _posterior_mean(log_prior[None, :] + stats @ like.coefficients, w_k).reshape(S, w_p.size)
            mse[:, r] = np.mean((w_hat - w_p[None, :]) ** 2, axis=0)
        return w_p, mse

    def distortion(self, w: np.ndarray, side: Side, channel: ReadChannel, max_repetitions: int, n_samples: int = 64,
                   seed: Any = 0) -> np.ndarray:
        """:meth:`distortion_table` at the weights ``w`` (linear interpolation), shape ``(n, R)``."""
        w = np.asarray(w, dtype=np.float64).reshape(-1)
        if w.size <= 2 * self.grid + 1:  # a small tensor: at its own weights
            return self.distortion_table(side, channel, max_repetitions, n_samples, seed, points=w)[1]
        w_p, mse = self.distortion_table(side, channel, max_repetitions, n_samples, seed)
        wc = np.clip(w, w_p[0], w_p[-1])
        j = np.clip(np.searchsorted(w_p, wc) - 1, 0, w_p.size - 2)
        f = ((wc - w_p[j]) / (w_p[j + 1] - w_p[j]))[:, None]
        return (1.0 - f) * mse[j] + f * mse[j + 1]

    def with_repetition(self, r):
        return self if r == 1 else MMSE(self.inner.with_repetition(r), self.grid)

    def spec(self):
        return {"kind": "MMSE", "inner": self.inner.spec(), "grid": self.grid}


def _normal_points(n: int, copies: int, cells: int, seed: Any) -> np.ndarray:
    """``n`` standard-normal read-noise vectors for ``copies × cells`` reads, shape
    ``(copies, n, cells)``: a scrambled Sobol sequence (seeded) through the normal quantile
    function — quasi-Monte Carlo, whose error shrinks nearly as 1/n instead of 1/√n."""
    from scipy.stats import norm, qmc

    from .._seeding import as_generator

    u = qmc.Sobol(d=copies * cells, scramble=True, seed=as_generator(seed)).random(n)
    z = norm.ppf(np.clip(u, 1e-12, 1.0 - 1e-12))
    return np.ascontiguousarray(z.reshape(n, copies, cells).transpose(1, 0, 2))


def _posterior_mean(ll: Any, w_k: Any) -> Any:
    """``Σ_k e^{ll_k} w_k / Σ_k e^{ll_k}`` row by row (``ll`` shape ``(n, K)``, ``w_k`` (K,);
    arrays of one namespace and device)."""
    xp = array_namespace(ll)
    ll = ll - xp.max(ll, axis=1, keepdims=True)
    p = xp.exp(ll)
    return (p @ w_k) / xp.sum(p, axis=1)


def _prior_histogram(w: Any, grid: int) -> Side:
    """:meth:`MMSE.fit`'s prior of flat float weights ``w``: ``max|w|`` (1 if 0) and numpy's
    ``histogram(w, grid, (−wmax, wmax))`` counts (float32, on the host), exactly: the bins are
    ``[e_k, e_k+1)`` (the last one closed) at ``np.linspace`` edges in ``w``'s dtype. A numpy
    array is counted in one threaded pass (``analogmem.storage._codec.histogram``), another
    array library's from one sort on its device."""
    n = math.prod(w.shape)
    wmax = _abs_max(w) if n else 1.0
    wmax = wmax if wmax > 0 else 1.0
    if _is_np(w):
        edges = np.linspace(-wmax, wmax, grid + 1, dtype=w.dtype)
        return {"prior_range": wmax, "prior_counts": _codec.histogram(w, edges, _fit_threads()).astype(np.float32)}
    xp = array_namespace(w)
    edges = np.linspace(-wmax, wmax, grid + 1, dtype=np.float32 if w.dtype == xp.float32 else np.float64)
    ws = xp.sort(w)
    e = _like(edges, w)
    below = xp.searchsorted(ws, e[:-1], side="left")  # values < e_k
    upper = xp.concat([xp.searchsorted(ws, e[1:-1], side="left"), xp.searchsorted(ws, e[-1:], side="right")])
    return {"prior_range": wmax, "prior_counts": _host(upper - below).astype(np.float32)}


class _GaussianLikelihood:
    """``log p(y | x_k)`` summed over a weight's cells, for all candidates ``k`` at once, as
    one matrix product: per cell ``j`` the Gaussian log-density
    ``−(y − m)²/(2s²) − log s = y²·(−1/2s²) + y·(m/s²) + (−m²/2s² − log s)`` for a read
    above the clip, ``log Φ((lo − m)/s)`` for a read at the clip (censored), so the
    log-likelihood is linear in the per-cell statistics ``(y², y, 1, 1)`` of uncensored and
    censored reads. Cells whose target is the same for every candidate (the copies of a
    repetition) share their coefficients and their statistics are summed first. Exactly
    :meth:`ReadChannel.log_likelihood` summed over cells, up to a constant per read (which the
    posterior normalisation removes); where a spread is below 10⁻⁴ of the range the
    expansion would lose precision and the direct sum is used instead."""

    def __init__(self, x_k: np.ndarray, channel: ReadChannel):
        self.channel, self.x_k = channel, x_k
        cols, self.group = np.unique(x_k, axis=1, return_inverse=True)  # (K, G), (C,)
        self.group = np.asarray(self.group).reshape(-1)
        m, s = channel.mean_std(cols)
        self.lo = channel.clip_lo
        self.direct = bool(np.min(s) < 1e-4)
        cens = log_ndtr((self.lo - m) / s) if math.isfinite(self.lo) else np.zeros_like(m)
        inv = 1.0 / (s * s)
        self.coefficients = np.concatenate([(-0.5 * inv).T, (m * inv).T, (-0.5 * m * m * inv - np.log(s)).T,
                                            cens.T], axis=0)  # (4G, K)
        self.n_groups = cols.shape[1]
        self.M = np.zeros((x_k.shape[1], self.n_groups))  # cell → group indicator, (C, G)
        self.M[np.arange(x_k.shape[1]), self.group] = 1.0
        if self.direct:  # the direct sum's per-candidate tables, (K, C)
            m_k, s_k = channel.mean_std(x_k)
            cens_k = log_ndtr((self.lo - m_k) / s_k) if math.isfinite(self.lo) else None
            self._direct = (m_k, s_k, np.log(s_k), cens_k)
        self._on: dict[Any, tuple] = {}

    def _tables(self, y: Any) -> tuple:
        """``(coefficients, M, direct tables)`` as arrays of ``y``'s namespace and device (cached per device)."""
        if _is_np(y):
            return self.coefficients, self.M, getattr(self, "_direct", None)
        key = (type(y), str(array_device(y)))
        if key not in self._on:
            d = getattr(self, "_direct", None)
            self._on[key] = (_like(self.coefficients, y), _like(self.M, y),
                             None if d is None else tuple(None if t is None else _like(t, y) for t in d))
        return self._on[key]

    def statistics(self, y: Any) -> Any:
        """Per-group sums of ``(y², y, 1)`` over uncensored reads and the count of censored
        reads, shape ``(n, 4G)``, for reads ``y`` of shape ``(n, C)`` (numpy or another
        array-API array, float64)."""
        xp = array_namespace(y)
        at_lo = y <= self.lo + 1e-12 if math.isfinite(self.lo) else xp.zeros(y.shape, dtype=xp.bool,
                                                                               device=array_device(y))
        unc = xp.astype(~at_lo, xp.float64)
        yu = xp.where(at_lo, 0.0, y)
        M = self._tables(y)[1]
        return xp.concat([(yu * yu) @ M, yu @ M, unc @ M, xp.astype(at_lo, xp.float64) @ M], axis=1)

    def matrix(self, y: Any) -> Any:
        """``Σ_j log p(y_j | x_kj)`` up to a constant per row, shape ``(n, K)`` (``y``: (n, C)
        float64, numpy or another array-API array). The direct sum is
        :meth:`ReadChannel.log_likelihood` with the candidates' read statistics tabulated."""
        coefficients, _, direct = self._tables(y)
        if not self.direct:
            return self.statistics(y) @ coefficients
        xp = array_namespace(y)
        m, s, log_s, cens = direct
        yy = y[:, None, :]
        z = (yy - m[None, :, :]) / s[None, :, :]
        dens = -0.5 * z * z - log_s[None, :, :] - 0.5 * math.log(2 * math.pi)
        if cens is not None:
            at_lo = yy <= self.lo + 1e-12
            if bool(xp.any(at_lo)):
                dens = xp.where(at_lo, cens[None, :, :], dens)
        return xp.sum(dens, axis=2)


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
    levels. Levels are detected by the nearest level (``detect="nearest"``, after the
    store's drift compensation on drifting cards) or, with ``detect="ml"``, by maximum
    likelihood under the card's channel at the read time (:class:`ReadChannel`: level-dependent
    drift and spread, so the thresholds move with them). ``m=None`` takes the smallest
    Galois field GF(2^m), m ≥ 10, whose code length holds the block and its parity, so strong
    codes (large ``t``) fit. Cells per weight ≈
    ``bits·(1 + ecc_bytes/block_bytes)/bits_per_cell``."""

    name = "digital-ecc"

    def __init__(self, bits: int = 8, bits_per_cell: int = 2, t: int = 8, block_bytes: int = 64,
                 m: int | None = 10, detect: str = "nearest"):
        if not 2 <= int(bits) <= 16:
            raise SettingError(f"bits must be in [2, 16], got {bits!r}")
        if not 1 <= int(bits_per_cell) <= 8:
            raise SettingError(f"bits_per_cell must be in [1, 8], got {bits_per_cell!r}")
        if detect not in ("nearest", "ml"):
            raise SettingError(f"detect must be 'nearest' or 'ml', got {detect!r}")
        self.bits, self.bits_per_cell, self.t = int(bits), int(bits_per_cell), int(t)
        self.block_bytes, self.detect = int(block_bytes), detect
        self.uses_channel = detect == "ml"
        if self.t > 0:
            import bchlib

            self._bch = None
            for mm in ([int(m)] if m is not None else range(10, 16)):
                try:
                    bch = bchlib.BCH(self.t, m=mm)
                except RuntimeError:  # t too large for this field
                    continue
                if self.block_bytes * 8 + bch.ecc_bits <= bch.n:
                    self._bch, self.m = bch, mm
                    break
            if self._bch is None:
                raise SettingError(f"{self.block_bytes} data bytes and the parity correcting t = {self.t} errors do not "
                                 f"fit a BCH code over GF(2^{m if m is not None else '10..15'}) (bchlib: t <= 64); "
                                 "lower t or block_bytes")
            self.ecc_bytes = int(self._bch.ecc_bytes)
        else:
            self._bch, self.ecc_bytes, self.m = None, 0, (10 if m is None else int(m))
        self.name = f"digital{self.bits}b-{self.bits_per_cell}bpc-bch{self.t}" + ("-ml" if self.uses_channel else "")

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

    def detect_levels(self, y: np.ndarray, channel: ReadChannel | None = None) -> np.ndarray:
        """Level index (0..2^b − 1) of each relative read ``y``: nearest level, or the most
        likely one under ``channel`` (``detect="ml"``)."""
        L = 2 ** self.bits_per_cell
        y = np.asarray(y, dtype=np.float64).reshape(-1)
        if self.detect != "ml" or channel is None:
            return np.clip(np.rint(y * (L - 1)), 0, L - 1).astype(np.uint32)
        x_l = np.arange(L, dtype=np.float64) / (L - 1)
        out = np.empty(y.size, dtype=np.uint32)
        step = 1 << 18
        for a in range(0, y.size, step):
            ll = channel.log_likelihood(y[a:a + step, None], x_l[None, :])
            out[a:a + step] = np.argmax(ll, axis=1)
        return out

    def decode(self, y, side, n_weights, channel=None):
        b = self.bits_per_cell
        level = self.detect_levels(y, channel)
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
                "block_bytes": self.block_bytes, "m": self.m, "detect": self.detect}


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
        raise SettingError(f"unknown encoder {name!r}; choose from {sorted(base)}")
    enc = base[name]()
    c = enc.cells_per_weight
    if cells_per_weight % c:
        raise SettingError(f"encoder {name!r} uses {c} cells per weight; {cells_per_weight} is not a multiple")
    return enc.with_repetition(cells_per_weight // c)


from .._deprecated import renamed as _renamed  # noqa: E402  (old public name, deprecated)

__getattr__ = _renamed(__name__, {"Channel": "ReadChannel"}, globals())
