"""Weights that stay on a torch device: :class:`TorchStore`, a store over a
:class:`~analogmem.emulator.torch_bench.TorchBench`.

``store_model(module, TorchStore(card, n_cells, seed, torch_device="cuda"), encoder)`` and
``load_model(handle, t_s)`` then keep a model's weights on the GPU: tensors go in as torch
tensors on any device and come back as torch tensors on the store's ``torch_device`` (in
their original dtype and shape).

What runs on the device and what goes through numpy (the *analog path* is weights →
relative targets → cells → reads → decoded weights):

* on the device, for the cell maps :class:`~analogmem.storage.encoders.LinearMap` (``naive``,
  ``adaptive``), :class:`~analogmem.storage.encoders.DifferentialPair`,
  :class:`~analogmem.storage.encoders.SignMagnitude`, :class:`~analogmem.storage.encoders.Sliced`,
  :class:`~analogmem.storage.encoders.Repetition` of any of them, and
  :class:`~analogmem.storage.encoders.MMSE` decoding of them: the finiteness check, the
  range fit (percentiles of ``|w|`` by selection on the device), encoding, programming,
  reading, drift compensation and decoding, also with per-weight repetition counts;
* through numpy, but only O(1) in the tensor's size: the adaptive (``"auto"``) range fit
  scores its candidate ranges on at most 20,000 sampled weights with the card's channel
  statistics (as :meth:`CellMap.fit` does), MMSE's channel table (mean and spread of the
  ``grid`` candidate weights) is computed on the host, and the side information (scale,
  prior histogram) and per-weight repetition counts are kept on the host as digital
  side information;
* entirely through numpy: :class:`~analogmem.storage.encoders.DigitalECC` (the BCH code runs on
  the CPU) — the tensor is moved to the host, stored with the numpy path of
  :class:`~analogmem.storage.stores.BenchStore`, and the decoded tensor moved back.

Digital tensors (``put_digital``: batch-norm buffers) stay on the device, exact.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .._seeding import SeedLike, as_seed_sequence, seed_state
from ..emulator.cells import DeviceModel
from ..emulator.torch_bench import TorchBench
from ..errors import StorageError
from .encoders import (_AUTO_PERCENTILES, MMSE, CellMap, Channel, DifferentialPair, Encoder, LinearMap, Repetition,
                       SignMagnitude, Sliced, check_finite, encoder_from_spec, global_drift_scale)
from .stores import BenchStore, Entry, _check_name

__all__ = ["TorchStore", "torch_encode", "torch_decode", "torch_fit", "on_device"]

#: The adaptive range fit scores candidate ranges on at most this many weights (as CellMap.fit).
_FIT_SAMPLE = 20000


def on_device(encoder: Encoder) -> bool:
    """Whether ``encoder``'s analog path runs on the torch device (see the module docstring)."""
    if isinstance(encoder, (MMSE, Repetition)):
        return on_device(encoder.inner)
    return type(encoder) in (LinearMap, DifferentialPair, SignMagnitude, Sliced)


# --------------------------------------------------------------------------- the cell maps on tensors
def _cells(enc: CellMap, w: Any, s: float) -> Any:
    """``enc._encode`` on a tensor: (n,) weights → (n, cells_per_weight) relative targets."""
    import torch

    if isinstance(enc, (MMSE, Repetition)):
        inner = _cells(enc.inner, w, s)
        return inner if isinstance(enc, MMSE) else inner.repeat(1, enc.r)
    if isinstance(enc, LinearMap):
        return ((w.clamp(-s, s) / s + 1.0) / 2.0)[:, None]
    if isinstance(enc, DifferentialPair):
        m = (w.abs() / s).clamp(max=1.0)
        zero = torch.zeros_like(m)
        return torch.stack([torch.where(w > 0, m, zero), torch.where(w < 0, m, zero)], dim=1)
    if isinstance(enc, SignMagnitude):
        return torch.stack([(w < 0).to(w.dtype), (w.abs() / s).clamp(max=1.0)], dim=1)
    if isinstance(enc, Sliced):
        b = enc.base
        u = (w.clamp(-s, s) / s + 1.0) / 2.0
        cols = []
        for _ in range(enc.n_slices - 1):
            d = torch.floor(u * b).clamp(max=b - 1)
            cols.append(d / (b - 1))
            u = u * b - d
        cols.append(u)
        return torch.stack(cols, dim=1)
    raise StorageError(f"encoder {enc!r} has no torch implementation")


def _naive_decode(enc: CellMap, y: Any, s: float) -> Any:
    """``enc._decode`` on a tensor: (n, cells_per_weight) relative reads → (n,) weights."""
    import torch

    if isinstance(enc, MMSE):
        return _naive_decode(enc.inner, y, s)
    if isinstance(enc, Repetition):
        c = enc.inner.cells_per_weight
        return _naive_decode(enc.inner, y.reshape(y.shape[0], enc.r, c).mean(dim=1), s)
    if isinstance(enc, LinearMap):
        return s * (2.0 * y[:, 0] - 1.0)
    if isinstance(enc, DifferentialPair):
        return s * (y[:, 0] - y[:, 1])
    if isinstance(enc, SignMagnitude):
        return torch.where(y[:, 0] > 0.5, -y[:, 1], y[:, 1]) * s
    if isinstance(enc, Sliced):
        b = enc.base
        u = y[:, -1]
        for k in range(enc.n_slices - 2, -1, -1):
            u = (torch.round(y[:, k] * (b - 1)).clamp(0, b - 1) + u) / b
        return s * (2.0 * u - 1.0)
    raise StorageError(f"encoder {enc!r} has no torch implementation")


def torch_encode(enc: CellMap, w: Any, side: dict[str, Any]) -> Any:
    """:meth:`Encoder.encode` on a tensor: relative targets in [0, 1], shape (n_cells(n),)."""
    return _cells(enc, w.reshape(-1), float(side["scale"])).clamp(0.0, 1.0).reshape(-1)


def torch_decode(enc: CellMap, y: Any, side: dict[str, Any], n_weights: int, channel: Channel | None = None) -> Any:
    """:meth:`Encoder.decode` on a tensor of relative reads (shape (n_cells,)): weights (n_weights,)."""
    c = enc.cells_per_weight
    y = y.reshape(int(n_weights), c)
    if isinstance(enc, MMSE) and channel is not None:
        return _mmse_decode(enc, y, side, channel)
    return _naive_decode(enc, y, float(side["scale"]))


def _mmse_decode(enc: MMSE, y: Any, side: dict[str, Any], channel: Channel) -> Any:
    """Posterior mean E[w | y] over the candidate grid (as :meth:`MMSE.decode`): the
    channel's mean and spread of the ``grid`` candidates come from the host (a small
    table), the per-weight likelihoods and posterior run on the device."""
    import torch

    s, wmax = float(side["scale"]), float(side["prior_range"])
    edges = np.linspace(-wmax, wmax, enc.grid + 1)
    w_k = 0.5 * (edges[:-1] + edges[1:])
    prior = np.asarray(side["prior_counts"], dtype=np.float64) + 1e-3
    x_k = np.clip(enc.inner._encode(w_k, s), 0.0, 1.0)  # (K, c)
    m, sd = channel.mean_std(x_k)
    t = lambda a: torch.as_tensor(np.asarray(a, dtype=np.float64), device=y.device)  # noqa: E731
    m, sd, log_prior, w_k = t(m), t(sd), t(np.log(prior / prior.sum())), t(w_k)
    lo = channel.clip_lo
    censored = torch.special.log_ndtr((lo - m) / sd) if math.isfinite(lo) else None
    y = y.double()
    out = torch.empty(y.shape[0], dtype=torch.float64, device=y.device)
    step = max(1, (1 << 24) // (enc.grid * y.shape[1]))
    for a in range(0, y.shape[0], step):
        yy = y[a:a + step, None, :]
        z = (yy - m) / sd
        dens = -0.5 * z * z - sd.log() - 0.5 * math.log(2 * math.pi)
        if censored is not None:
            dens = torch.where(yy <= lo + 1e-12, censored, dens)
        post = torch.softmax(log_prior + dens.sum(dim=2), dim=1)
        out[a:a + step] = post @ w_k
    return out


def _percentile_abs(a: Any, percentile: float) -> float:
    """numpy's ``percentile(a, p)`` (linear method) of a 1-D float64 tensor, by selection
    of the two order statistics on the device."""
    n = a.numel()
    q = percentile / 100.0
    vi = (n - 1) * q
    below = min(int(math.floor(vi)), n - 1)
    gamma = vi - below
    lo = float(a.kthvalue(below + 1).values)
    hi = float(a.kthvalue(min(below + 2, n)).values)
    diff = hi - lo
    return hi - diff * (1.0 - gamma) if gamma >= 0.5 else lo + diff * gamma


def _range(a: Any, percentile: float) -> float:
    """The range ``s`` of :func:`analogmem.storage.encoders._range` from ``a = |w|`` (float64 tensor)."""
    s = float(a.max()) if percentile >= 100 else _percentile_abs(a, percentile)
    if s <= 0:
        s = float(a.max()) if a.numel() else 0.0
    return s if s > 0 else 1.0


def torch_fit(enc: CellMap, w: Any, channel: Channel | None = None) -> dict[str, Any]:
    """:meth:`Encoder.fit` of a device-capable cell map on a tensor ``w`` (flat): the same
    side information as the numpy fit (scale; MMSE's prior histogram)."""
    import torch

    if isinstance(enc, MMSE):
        side = torch_fit(enc.inner, w, channel)
        wmax = float(w.abs().max()) if w.numel() else 1.0
        wmax = wmax if wmax > 0 else 1.0
        # numpy's histogram bins: [edge_k, edge_k+1), the last one closed, at numpy's edges
        edges = torch.as_tensor(np.linspace(-wmax, wmax, enc.grid + 1), device=w.device)
        k = (torch.searchsorted(edges, w.double().contiguous(), right=True) - 1).clamp(max=enc.grid - 1)
        counts = torch.bincount(k[k >= 0], minlength=enc.grid)[:enc.grid]
        side.update(prior_range=wmax, prior_counts=counts.cpu().numpy().astype(np.float32))
        return side
    a = w.double().abs()
    if enc.clip_percentile != "auto":
        return {"scale": _range(a, float(enc.clip_percentile))}
    if channel is None:
        return {"scale": _range(a, 99.9)}
    # CellMap.fit's adaptive range: the percentile minimising clipping error² + channel
    # noise variance, scored on <= 20,000 sampled weights (the only weights that reach the host)
    sample = (w if w.numel() <= _FIT_SAMPLE else w[:: max(1, w.numel() // _FIT_SAMPLE)]).double().cpu().numpy()
    best = None
    for p in _AUTO_PERCENTILES:
        s = _range(a, p)
        err = np.sum((np.abs(sample) - s).clip(min=0) ** 2) + np.sum(enc.noise_variance(sample, {"scale": s}, channel))
        if best is None or err < best[0]:
            best = (err, s)
    return {"scale": best[1]}


# --------------------------------------------------------------------------- the store
class TorchStore(BenchStore):
    """A :class:`~analogmem.storage.stores.BenchStore` over a new
    :class:`~analogmem.emulator.torch_bench.TorchBench` of ``n_cells`` cells of ``device`` on
    ``torch_device``: ``put`` takes torch tensors (or arrays), ``get``/``get_all`` return
    torch tensors on ``torch_device`` in each tensor's dtype and shape. See the module
    docstring for what runs on the device."""

    def __init__(self, device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *,
                 torch_device: Any = "cpu", dtype: str = "float64", compensate_drift: bool | None = None):
        self.seed_sequence = as_seed_sequence(seed)
        self.initial_seed_state = seed_state(self.seed_sequence)
        bench = TorchBench(device, n_cells, seed=self.seed_sequence, torch_device=torch_device, dtype=dtype)
        super().__init__(bench, bench.device, compensate_drift=compensate_drift)
        self.torch_device = bench.torch_device
        self._digital_t: dict[str, Any] = {}

    def _tensor(self, name: str, tensor: Any) -> Any:
        """``tensor`` as a torch tensor on the store's device, checked finite (the message
        of :func:`~analogmem.storage.encoders.check_finite`)."""
        import torch

        t = tensor.detach() if torch.is_tensor(tensor) else torch.as_tensor(np.asarray(tensor))
        if t.is_complex():
            raise StorageError(f"tensor {name!r} has dtype {t.dtype}; only real numbers can be stored")
        t = t.to(self.torch_device)
        if t.is_floating_point() and t.numel() and not bool(torch.isfinite(t).all()):
            check_finite(name, t.double().cpu().numpy())  # raises, naming the first bad index
        return t

    def put(self, name: str, tensor: Any, encoder: Encoder | None = None, counts: Any = None,
            t_fit_s: float = 86400.0) -> None:
        """As :meth:`BenchStore.put`; on the device when ``on_device(encoder)``."""
        import torch

        _check_name(self._entries, name)
        if encoder is None:
            raise StorageError(f"tensor {name!r}: an encoder is needed to put it on analog cells")
        t = self._tensor(name, tensor)
        if not on_device(encoder):  # DigitalECC: the numpy path, then nothing more here
            return super().put(name, t.cpu().numpy(), encoder, None if counts is None else np.asarray(counts), t_fit_s)
        w = t.to(self.bench.dtype).reshape(-1)
        channel = Channel(self.device, t_fit_s)
        side = torch_fit(encoder, w, channel)
        if counts is None:
            plan = [(1, None, encoder)]
        else:
            counts = counts.cpu().numpy() if torch.is_tensor(counts) else np.asarray(counts)
            if counts.shape != (w.numel(),) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
                raise StorageError(f"tensor {name!r}: counts must be non-negative integers of shape ({w.numel()},), "
                                   f"got shape {counts.shape} dtype {counts.dtype}")
            plan = [(int(r), torch.as_tensor(np.flatnonzero(counts == r), device=self.torch_device),
                     encoder.with_repetition(int(r))) for r in np.unique(counts) if r > 0]
        targets, groups, start = [], [], self._next
        span, g_min = channel.span_S, self.device.g_min_S
        for r, idx, enc in plan:
            g = g_min + torch_encode(enc, w if idx is None else w[idx], side) * span
            targets.append(g)
            groups.append((r, start, int(g.numel()), float(g.mean()) if g.numel() else 0.0))
            start += g.numel()
        if start > self.bench.n_cells:
            raise StorageError(f"tensor {name!r} needs {start - self._next} cells but only "
                               f"{self.bench.n_cells - self._next} of {self.bench.n_cells} are free; nothing was programmed")
        if start > self._next:
            self.bench.program(torch.cat(targets), addresses=torch.arange(self._next, start, device=self.torch_device))
        self._entries[name] = Entry(name, tuple(t.shape), str(t.dtype).replace("torch.", ""), "analog",
                                    encoder.spec(), side, groups,
                                    None if counts is None else counts.astype(np.uint8 if counts.max(initial=0) < 256
                                                                              else np.int64))
        self._next = start

    def put_digital(self, name: str, tensor: Any) -> None:
        """Keep ``tensor`` exactly, as a tensor on the store's device."""
        _check_name(self._entries, name)
        t = self._tensor(name, tensor)
        self._entries[name] = Entry(name, tuple(t.shape), str(t.dtype).replace("torch.", ""), "digital")
        self._digital_t[name] = t.clone()

    def get(self, name: str, t_s: float | None = None) -> Any:
        """Tensor ``name`` read ``t_s`` s after programming, on the store's device."""
        import torch

        e = self.entry(name)
        if e.kind == "digital":
            return self._digital_t[name].clone()
        lo = min((g[1] for g in e.groups), default=0)
        hi = max((g[1] + g[2] for g in e.groups), default=0)
        reads = (self.bench.read(t_s, addresses=torch.arange(lo, hi, device=self.torch_device)) if hi > lo
                 else torch.empty(0, dtype=self.bench.dtype, device=self.torch_device))
        return self._decode(e, reads, lo, t_s)

    def get_all(self, t_s: float | None = None, names: list[str] | None = None) -> dict[str, Any]:
        """All tensors (or ``names``) from one read of the used cells, on the store's device."""
        import torch

        names = self.names() if names is None else list(names)
        if not self._next:
            reads = torch.empty(0, dtype=self.bench.dtype, device=self.torch_device)
        else:
            addr = None if self._next == self.bench.n_cells else torch.arange(self._next, device=self.torch_device)
            reads = self.bench.read(t_s, addresses=addr)
        return {n: self._digital_t[n].clone() if self.entry(n).kind == "digital" else self._decode(self.entry(n), reads, 0, t_s)
                for n in names}

    def _decode(self, e: Entry, reads: Any, offset: int, t_s: float | None) -> Any:
        import torch

        enc = encoder_from_spec(e.encoder)
        if not on_device(enc):  # numpy path (DigitalECC), result back on the device
            w = super()._decode(e, reads.cpu().numpy(), offset, t_s)
            return torch.as_tensor(w).to(self.torch_device)
        t = float(t_s) if t_s is not None else max(self.bench.time_s, 0.0)
        channel = Channel(self.device, max(t, 0.0))
        if e.counts is None:
            (r, start, n, gmean), = e.groups
            w = self._decode_group_t(enc, e, reads[start - offset:start - offset + n], gmean, e.size, channel)
        else:
            w = torch.zeros(e.size, dtype=reads.dtype, device=self.torch_device)
            for r, start, n, gmean in e.groups:
                idx = torch.as_tensor(np.flatnonzero(e.counts == r), device=self.torch_device)
                w[idx] = self._decode_group_t(enc.with_repetition(r), e, reads[start - offset:start - offset + n],
                                              gmean, idx.numel(), channel).to(w.dtype)
        return w.reshape(e.shape).to(getattr(torch, e.dtype))

    def _decode_group_t(self, enc: Encoder, e: Entry, g: Any, gmean: float, n: int, channel: Channel) -> Any:
        if self.compensate_drift and not enc.uses_channel and g.numel():
            # global_drift_scale needs only the mean read: one number from the device
            g = g * global_drift_scale(np.array([float(g.mean())]), gmean)
        y = (g - self.device.g_min_S) / channel.span_S
        return torch_decode(enc, y, e.side, n, channel)

    def usage(self) -> dict[str, Any]:
        """As :meth:`BenchStore.usage`, counting the digital tensors kept on the device."""
        u = super().usage()
        u["digital_bits"] += int(sum(t.numel() * t.element_size() * 8 for t in self._digital_t.values()))
        return u
