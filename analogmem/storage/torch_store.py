"""Weights that stay on a torch device: :class:`TorchStore`, a store over a
:class:`~analogmem.emulator.torch_bench.TorchBench`.

``store_model(module, TorchStore(card, n_cells, seed, torch_device="cuda"), encoder)`` and
``load_model(handle, t_s)`` then keep a model's weights on the GPU: tensors go in as torch
tensors on any device and come back as torch tensors on the store's ``torch_device`` (in
their original dtype and shape).

What runs on the device and what goes through numpy (the *analog path* is weights →
relative targets → cells → reads → decoded weights):

* on the device, for every cell map (:class:`~analogmem.storage.encoders.CellMap`:
  :class:`~analogmem.storage.encoders.LinearMap` (``naive``, ``adaptive``),
  :class:`~analogmem.storage.encoders.DifferentialPair`,
  :class:`~analogmem.storage.encoders.SignMagnitude`, :class:`~analogmem.storage.encoders.Sliced`,
  :class:`~analogmem.storage.encoders.Repetition` of any of them, and
  :class:`~analogmem.storage.encoders.MMSE` decoding of them): the finiteness check, the
  range fit (percentiles of ``|w|`` from a sort on the device), MMSE's prior histogram,
  encoding, programming, reading, drift compensation and decoding (MMSE: the per-weight
  likelihoods and posterior mean), also with per-weight repetition counts. This module has
  no encoder math of its own: the store calls the encoders' own methods
  (:meth:`~analogmem.storage.encoders.CellMap.fit`,
  :meth:`~analogmem.storage.encoders.CellMap.encode_S`,
  :meth:`~analogmem.storage.encoders.CellMap.decode_S`) on the tensors, whose array math is
  written once against the array API standard (``array_api_compat``) for numpy arrays and
  torch tensors alike; for numpy arrays those methods take the compiled
  ``analogmem.storage._codec`` kernels where they have one, for tensors the same maps run
  as torch operations on the tensor's device;
* through numpy, but only O(1) in the tensor's size: the adaptive (``"auto"``) range fit
  scores its candidate ranges on at most 20,000 sampled weights with the card's channel
  statistics (as :meth:`CellMap.fit` does), MMSE's channel table (the likelihood
  coefficients of the ``grid`` candidate weights) is computed on the host and moved to the
  device, and the side information (scale, prior histogram) is kept on the host as digital
  side information;
* on the host, as metadata: per-weight repetition counts from an allocation (and so the
  indices of each repetition group, which are moved to the device to gather and scatter
  the weights) and the bench's cell addresses of each tensor;
* entirely through numpy: :class:`~analogmem.storage.encoders.DigitalECC` (the BCH code runs on
  the CPU) — the tensor is moved to the host, stored with the numpy path of
  :class:`~analogmem.storage.stores.BenchStore`, and the decoded tensor moved back.

Digital tensors (``put_digital``: batch-norm buffers) stay on the device, exact.
"""

from __future__ import annotations

from typing import Any

import numpy as np

from .._seeding import SeedLike, as_seed_sequence, seed_state
from ..emulator.cells import DeviceModel
from ..emulator.torch_bench import TorchBench
from ..errors import StorageError
from .encoders import CellMap, ReadChannel, Encoder, check_finite, encoder_from_spec
from .stores import BenchStore, Entry, _check_name

__all__ = ["TorchStore", "on_device"]


def on_device(encoder: Encoder) -> bool:
    """Whether ``encoder``'s analog path runs on the torch device: every cell map (its math is
    array-API, see the module docstring); not :class:`~analogmem.storage.encoders.DigitalECC`."""
    return isinstance(encoder, CellMap)


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
        check_finite(name, t)  # on the device; raises naming the first bad index
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

    def _fit(self, encoder: Encoder, w: Any, channel: ReadChannel) -> dict[str, Any]:
        if on_device(encoder):
            return encoder.fit(w, channel)  # the encoder's own fit, on the tensor
        return encoder.fit(w.double().cpu().numpy(), channel)  # numpy path (DigitalECC)

    def _targets_S(self, enc: Encoder, w: Any, idx: np.ndarray | None, side: dict[str, Any],
                   channel: ReadChannel) -> tuple[Any, int, float]:
        import torch

        if on_device(enc):
            w_sel = w if idx is None else w[torch.as_tensor(idx, device=self.torch_device)]
            g = enc.encode_S(w_sel, side, channel)  # the encoder's own map, on the tensor
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
    def _decode_group(self, enc: Encoder, e: Entry, g: Any, gmean: float, n: int, channel: ReadChannel) -> Any:
        if isinstance(g, np.ndarray):
            return super()._decode_group(enc, e, g, gmean, n, channel)
        # BenchStore's: global_drift_scale (one number from the device), then the encoder's
        # own decode_S on the tensor; in the reads' dtype
        return super()._decode_group(enc, e, g, gmean, n, channel).to(g.dtype)

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
