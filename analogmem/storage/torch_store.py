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
  prior histogram) is kept on the host as digital side information;
* on the host, as metadata: per-weight repetition counts from an allocation (and so the
  indices of each repetition group, which are moved to the device to gather and scatter
  the weights) and the bench's cell addresses of each tensor;
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
                       SignMagnitude, Sliced, check_finite, encoder_from_spec, fit_sample, global_drift_scale)
from .stores import BenchStore, Entry, _check_name

__all__ = ["TorchStore", "torch_encode", "torch_decode", "torch_fit", "on_device"]



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
    # CellMap.fit's adaptive range: candidate ranges on the device, scored on the fit
    # sample (<= 20,000 weights: the only weights that reach the host)
    sample = fit_sample(w).double().cpu().numpy()
    return {"scale": enc.best_scale([_range(a, p) for p in _AUTO_PERCENTILES], sample, channel)}


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
        """As :meth:`BenchStore.put`, on the device when ``on_device(encoder)``; ``counts``
        may be a tensor (it is kept on the host, with the side information)."""
        import torch

        if torch.is_tensor(counts):
            counts = counts.cpu().numpy()
        super().put(name, tensor, encoder, counts, t_fit_s)

    # hooks of BenchStore.put: tensors on the device
    def _flat_weights(self, name: str, tensor: Any) -> tuple[Any, tuple[int, ...], str]:
        t = self._tensor(name, tensor)
        return t.to(self.bench.dtype).reshape(-1), tuple(t.shape), str(t.dtype).replace("torch.", "")

    def _fit(self, encoder: Encoder, w: Any, channel: Channel) -> dict[str, Any]:
        if on_device(encoder):
            return torch_fit(encoder, w, channel)
        return encoder.fit(w.double().cpu().numpy(), channel)  # numpy path (DigitalECC)

    def _targets_S(self, enc: Encoder, w: Any, idx: np.ndarray | None, side: dict[str, Any],
                   channel: Channel) -> tuple[Any, int, float]:
        import torch

        if on_device(enc):
            w_sel = w if idx is None else w[torch.as_tensor(idx, device=self.torch_device)]
            g = torch_encode(enc, w_sel, side) * channel.span_S + self.device.g_min_S
        else:  # numpy path (DigitalECC): targets made on the host, moved to the device
            w_np = w.double().cpu().numpy()
            g = torch.as_tensor(channel.to_S(enc.encode(w_np if idx is None else w_np[idx], side)),
                                device=self.torch_device)
        return g, int(g.numel()), float(g.mean()) if g.numel() else 0.0

    def _program_cells(self, targets: list[Any], start: int, stop: int) -> None:
        import torch

        self.bench.program(torch.cat(targets), addresses=torch.arange(start, stop, device=self.torch_device))

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
        if not on_device(encoder_from_spec(e.encoder)):  # numpy path (DigitalECC): the reads go to the host
            reads = reads.cpu().numpy()
        return super()._decode(e, reads, offset, t_s)

    # hooks of BenchStore._decode: tensors on the device (numpy arrays: the numpy path's own)
    def _decode_group(self, enc: Encoder, e: Entry, g: Any, gmean: float, n: int, channel: Channel) -> Any:
        if isinstance(g, np.ndarray):
            return super()._decode_group(enc, e, g, gmean, n, channel)
        if self.compensate_drift and not enc.uses_channel and g.numel():
            # global_drift_scale needs only the mean read: one number from the device
            g = g * global_drift_scale(np.array([float(g.mean())]), gmean)
        y = (g - self.device.g_min_S) / channel.span_S
        return torch_decode(enc, y, e.side, n, channel).to(g.dtype)

    def _zeros_like(self, reads: Any, n: int) -> Any:
        import torch

        if isinstance(reads, np.ndarray):
            return super()._zeros_like(reads, n)
        return torch.zeros(n, dtype=reads.dtype, device=reads.device)

    def _as_stored(self, w: Any, e: Entry) -> Any:
        import torch

        if isinstance(w, np.ndarray):
            return torch.as_tensor(super()._as_stored(w, e)).to(self.torch_device)
        return w.reshape(e.shape).to(getattr(torch, e.dtype))

    def usage(self) -> dict[str, Any]:
        """As :meth:`BenchStore.usage`, counting the digital tensors kept on the device."""
        u = super().usage()
        u["digital_bits"] += int(sum(t.numel() * t.element_size() * 8 for t in self._digital_t.values()))
        return u
