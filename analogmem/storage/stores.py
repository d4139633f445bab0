"""Storage backends: named tensors on analog cells (or exactly, digitally), whole torch
models on a store (docs/storage.md "Stores").

A :class:`Store` keeps named tensors and gives them back *as read at a time* ``t_s``
(seconds after programming)::

    store = EmulatedStore("rram-wan2022", n_cells=1_000_000, seed=0)
    store.put("fc.weight", w, encoder=make_encoder("differential-mmse"))
    w_1day = store.get("fc.weight", t_s=86400.0)

* :class:`BenchStore` — a store over **any** object implementing the
  :class:`~analogmem.emulator.bench.Bench` protocol plus the device card that describes its cells
  (a store on real cells, docs/instrument.md, is a ``BenchStore`` over an
  ``InstrumentBench``); cells are handed out in order, one tensor after another.
* :class:`EmulatedStore` — a ``BenchStore`` over an :class:`~analogmem.emulator.bench.EmulatedBench`
  it makes itself (so it knows its random state and can be snapshotted).
* :class:`DigitalStore` — exact storage (the baseline); ``t_s`` is ignored.
* :class:`~analogmem.storage.torch_store.TorchStore` — a ``BenchStore`` over the emulator's
  torch backend whose tensors stay on a torch device (it overrides ``put``'s and
  ``_decode``'s hooks).

Every store also keeps *digital* tensors (:meth:`Store.put_digital`: exact, counted in
bits) for what is not worth putting on analog cells. :func:`store_model` puts every
``torch.nn.Module`` parameter (conv, linear and batch-norm weights and biases) on the
store with an encoder, and keeps the buffers (batch-norm ``running_mean``,
``running_var``, ``num_batches_tracked``) digital; :func:`load_model` rebuilds the module
from a read at ``t_s``.
Chip snapshots on disk are in :mod:`.snapshots`.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Protocol, runtime_checkable

import numpy as np

from .._io import progress as progress_bar
from .._seeding import SeedLike, as_seed_sequence, seed_state
from ..emulator.bench import Bench, ChunkedTargets, EmulatedBench
from ..emulator.cells import DeviceModel, load_device
from ..errors import SettingTypeError, StorageError
from .allocate import allocate_cells
from .encoders import CellMap, ReadChannel, Encoder, check_finite, encoder_from_spec, global_drift_scale

__all__ = [
    "Store",
    "BenchStore",
    "EmulatedStore",
    "DigitalStore",
    "Entry",
    "ModelHandle",
    "store_model",
    "load_model",
]

# --------------------------------------------------------------------------- protocol
@runtime_checkable
class Store(Protocol):
    """Named tensors, put once and read back at a time ``t_s`` (s after programming)."""

    def put(self, name: str, tensor: np.ndarray, encoder: Encoder | None = None,
            counts: np.ndarray | None = None) -> None:
        """Store ``tensor`` (any shape, finite floats) under ``name``."""
        ...

    def put_digital(self, name: str, tensor: np.ndarray) -> None:
        """Keep ``tensor`` exactly (digital memory)."""
        ...

    def get(self, name: str, t_s: float | None = None) -> np.ndarray:
        """The tensor ``name`` as read ``t_s`` seconds after programming (its shape and dtype)."""
        ...

    def names(self) -> list[str]:
        """Names of the stored tensors, in the order they were put."""
        ...

    def usage(self) -> dict[str, Any]:
        """Resources used: analog cells, weights, digital bits."""
        ...


@dataclass
class Entry:
    """One tensor on a store.

    Attributes:
        name, shape, dtype: the tensor's identity (dtype as a numpy name).
        kind: ``"analog"`` (on cells) or ``"digital"`` (kept exactly).
        encoder: the encoder's spec (analog only).
        side: side information (floats / arrays) from :meth:`Encoder.fit`.
        groups: ``(r, start, n_cells, g_target_mean_S)`` per repetition count ``r`` — the
            cells ``[start, start + n_cells)`` hold the weights allotted ``r`` repetitions.
        counts: per-weight repetition counts (0 = pruned) from an allocation, or None.
    """

    name: str
    shape: tuple[int, ...]
    dtype: str
    kind: str
    encoder: dict[str, Any] | None = None
    side: dict[str, Any] = field(default_factory=dict)
    groups: list[tuple[int, int, int, float]] = field(default_factory=list)
    counts: np.ndarray | None = None

    @property
    def size(self) -> int:
        return int(np.prod(self.shape, dtype=np.int64))

    @property
    def n_cells(self) -> int:
        return int(sum(g[2] for g in self.groups))


def _as_array(name: str, tensor: Any) -> np.ndarray:
    if hasattr(tensor, "detach"):  # a torch tensor
        t = tensor.detach()
        if getattr(t, "is_meta", False):
            raise StorageError(f"tensor {name!r} is on torch's meta device (no values); materialise it first")
        if str(t.dtype) == "torch.bfloat16":  # numpy has no bfloat16: its values are exact in float32
            t = t.float()
        try:
            tensor = t.cpu().numpy()
        except TypeError as exc:
            raise StorageError(f"tensor {name!r} of dtype {t.dtype} cannot be stored: {exc}") from None
    a = np.asarray(tensor)
    if not (np.issubdtype(a.dtype, np.floating) or np.issubdtype(a.dtype, np.integer) or a.dtype == bool):
        raise StorageError(f"tensor {name!r} has dtype {a.dtype}; only numbers can be stored")
    return a


def _stored_dtype(tensor: Any, a: np.ndarray) -> str:
    """The dtype name a tensor is given back in (``"bfloat16"`` for torch bfloat16 tensors)."""
    return "bfloat16" if str(getattr(tensor, "dtype", "")) == "torch.bfloat16" else a.dtype.name


def _analog_floats(name: str, a: np.ndarray) -> None:
    """Analog cells hold real numbers: refuse integer and boolean tensors (their decode would
    round and wrap: int8 127 read back as -128, bools all True)."""
    if not np.issubdtype(a.dtype, np.floating):
        raise StorageError(f"tensor {name!r} has dtype {a.dtype}: analog cells store floating-point weights; keep "
                           "integer and boolean tensors digital (put_digital; store_model does so)")


def _check_name(store_names: dict[str, Entry], name: str) -> None:
    if not isinstance(name, str) or not name or '"' in name or "\\" in name:
        raise StorageError(f"tensor name must be a non-empty string without quotes or backslashes, got {name!r}")
    if name in store_names:
        raise StorageError(f"tensor {name!r} is already stored; stores are write-once per name")


def _check_counts(name: str, counts: Any, size: int, encoder: Encoder) -> np.ndarray:
    """Per-weight repetition counts for tensor ``name`` of ``size`` weights, checked."""
    counts = np.asarray(counts)
    if counts.shape != (size,) or not np.issubdtype(counts.dtype, np.integer) or np.any(counts < 0):
        raise StorageError(f"tensor {name!r}: counts must be non-negative integers of shape ({size},), "
                           f"got shape {counts.shape} dtype {counts.dtype}")
    if not isinstance(encoder, CellMap):
        raise StorageError(f"tensor {name!r}: per-weight counts need a cell-map encoder, got {encoder.name}")
    return counts


def _cells_needed(name: str, size: int, encoder: Encoder, counts: Any) -> int:
    """Cells that :meth:`BenchStore.put` will program for a tensor of ``size`` weights."""
    if counts is None:
        return int(encoder.n_cells(size))
    c = _check_counts(name, counts, size, encoder)
    return int(sum(encoder.with_repetition(int(r)).n_cells(int(np.count_nonzero(c == r)))
                   for r in np.unique(c) if r > 0))


def chunked_targets(pieces: list[tuple[int, Any, Any, dict[str, Any]]], channel: ReadChannel,
                    n_threads: int = 1) -> ChunkedTargets:
    """Targets (S) of consecutive tensors as :class:`~analogmem.emulator.bench.ChunkedTargets`:
    ``pieces`` are ``(n_cells, encoder, flat weights, side)`` laid out one after another from
    op-local cell 0; each chunk of cells is encoded from just the weights it covers into one
    reused buffer (so programming holds one chunk of targets, never the whole tensor's)."""
    starts = np.cumsum([0] + [int(p[0]) for p in pieces])
    total = int(starts[-1])
    buf: list[np.ndarray] = [np.empty(0)]

    def fn(lo: int, hi: int) -> np.ndarray:
        if buf[0].size < hi - lo:
            buf[0] = np.empty(hi - lo)
        out = buf[0][:hi - lo]
        i = int(np.searchsorted(starts, lo, side="right")) - 1
        pos = lo
        while pos < hi:
            n_c, enc, w, side = pieces[i]
            cpw = enc.cells_per_weight
            a, b = pos - int(starts[i]), min(hi - int(starts[i]), n_c)  # cells of this tensor
            wa, wb = a // cpw, -(-b // cpw)
            dest = out[pos - lo:pos - lo + (b - a)]
            if a % cpw == 0 and b % cpw == 0:  # whole weights: encoded in place
                enc.encode_S(w[wa:wb], side, channel, n_threads, out=dest)
            else:
                dest[...] = enc.encode_S(w[wa:wb], side, channel, n_threads)[a - wa * cpw:b - wa * cpw]
            pos = int(starts[i]) + b
            i += 1
        return out

    # cell maps clip every target into [g_min, g_max]: the bench need not check them first
    return ChunkedTargets(total, fn, prechecked=all(isinstance(p[1], CellMap) for p in pieces))


def mean_target_S(enc: CellMap, w: Any, side: dict[str, Any], channel: ReadChannel, n_threads: int = 1,
                  chunk_weights: int = 1 << 21) -> float:
    """The mean cell target (S) of tensor ``w`` under ``enc`` (for drift compensation), a chunk at a time."""
    total, n = 0.0, 0
    for lo in range(0, len(w), chunk_weights):
        g = enc.encode_S(w[lo:lo + chunk_weights], side, channel, n_threads)
        total += float(np.sum(g))
        n += g.size
    return total / n if n else 0.0


# --------------------------------------------------------------------------- digital store
class DigitalStore:
    """Exact storage (the error-free baseline): ``get`` returns what was put, whatever
    ``t_s``. Analog and digital puts both count 32 bits per float32 value (the dtype's bits)."""

    def __init__(self) -> None:
        self._entries: dict[str, Entry] = {}
        self._data: dict[str, np.ndarray] = {}

    def put(self, name, tensor, encoder=None, counts=None):
        self._put(name, tensor, "analog")

    def put_digital(self, name, tensor):
        self._put(name, tensor, "digital")

    def _put(self, name, tensor, kind):
        _check_name(self._entries, name)
        a = _as_array(name, tensor)
        if np.issubdtype(a.dtype, np.floating):
            check_finite(name, a)
        self._entries[name] = Entry(name, tuple(a.shape), a.dtype.name, kind)
        self._data[name] = a.copy()

    def get(self, name, t_s=None):
        if name not in self._data:
            raise StorageError(f"no tensor named {name!r} on this store (has {len(self._data)})")
        return self._data[name].copy()

    def names(self):
        return list(self._entries)

    def usage(self):
        bits = sum(a.size * a.dtype.itemsize * 8 for a in self._data.values())
        n = sum(e.size for e in self._entries.values() if e.kind == "analog")
        return {"analog_cells": 0, "analog_weights": n, "digital_bits": int(bits), "side_info_bits": 0}


# --------------------------------------------------------------------------- bench store
class BenchStore:
    """A store over any :class:`~analogmem.emulator.bench.Bench` whose cells the card ``device``
    describes. Cells are allotted in order from address 0; a tensor that does not fit
    raises :class:`StorageError` before anything is programmed.

    Args:
        bench: the bench (emulated or instrument).
        device: the card of its cells (a name, path or DeviceModel); by default
            ``bench.device``.
        compensate_drift: apply :func:`~analogmem.storage.encoders.global_drift_scale` per tensor
            group before decoding (skipped for encoders that decode with the channel model,
            which already includes the mean drift). None (the default): only when the card
            has a mean drift — on a card without one, the mean of reads clipped at 0 S is
            biased upwards and "compensating" it would shrink every weight.
        verify: program every cell with these program-and-verify settings (a
            :class:`~analogmem.emulator.bench.WriteVerify`); None: single-shot writes.
            :attr:`verify_totals` sums the pulses and failed cells of every program call.
    """

    def __init__(self, bench: Bench, device: DeviceModel | str | None = None, *,
                 compensate_drift: bool | None = None, verify: Any = None):
        if not isinstance(bench, Bench):
            raise SettingTypeError(f"bench must implement the Bench protocol, got {type(bench).__name__}")
        if device is None:
            device = getattr(bench, "device", None)
            if device is None:
                raise SettingTypeError("pass the device card describing the bench's cells (device=...)")
        self.bench = bench
        self.device = load_device(device)
        self.compensate_drift = self.device.drift.enabled if compensate_drift is None else bool(compensate_drift)
        self._entries: dict[str, Entry] = {}
        self._digital: dict[str, np.ndarray] = {}
        self._next = 0
        self.verify = verify
        #: with ``verify``: cells programmed, pulses spent and cells that failed to verify
        self.verify_totals = {"cells": 0, "pulses": 0, "failed": 0}

    # ---------------------------------------------------------------- writing
    @property
    def cells_used(self) -> int:
        return self._next

    def put(self, name: str, tensor: Any, encoder: Encoder | None = None, counts: np.ndarray | None = None,
            t_fit_s: float = 86400.0) -> None:
        """Encode ``tensor`` with ``encoder`` and program it onto the next free cells.

        Args:
            name: a new name.
            tensor: finite floats, any shape (torch tensors accepted).
            encoder: an :class:`~analogmem.storage.encoders.Encoder` (required).
            counts: optional per-weight repetition counts, shape ``tensor.size`` (0 =
                pruned: decoded as 0, no cells), from :func:`analogmem.storage.allocate.allocate_cells`;
                needs a :class:`~analogmem.storage.encoders.CellMap` encoder.
            t_fit_s: the read time (s) whose channel the encoder may use to fit its range.

        Raises :class:`StorageError` for a duplicate name, non-finite values (naming the
        tensor), bad counts or too few free cells; nothing is programmed then.
        """
        _check_name(self._entries, name)
        if encoder is None:
            raise StorageError(f"tensor {name!r}: an encoder is needed to put it on analog cells")
        w, shape, dtype = self._flat_weights(name, tensor)
        n_w = int(np.prod(shape, dtype=np.int64))
        channel = ReadChannel(self.device, t_fit_s)
        if counts is None:
            side = self._fit(encoder, w, channel)
            plan = [(1, None, encoder)]
        else:
            counts = _check_counts(name, counts, n_w, encoder)
            nz = w[w != 0]  # side information (range, prior) without the exact zeros that pruning left,
            side = self._fit(encoder, nz if len(nz) else w, channel)  # as analogmem.storage.allocate models it
            plan = [(int(r), np.flatnonzero(counts == r), encoder.with_repetition(int(r)))
                    for r in np.unique(counts) if r > 0]
        if counts is None and isinstance(encoder, CellMap) and isinstance(self.bench, EmulatedBench):
            # streamed: a chunk of targets at a time, no full-size copy
            n_new = int(encoder.n_cells(n_w))
            if self._next + n_new > self.bench.n_cells:
                raise StorageError(f"tensor {name!r} needs {n_new} cells but only {self.bench.n_cells - self._next} "
                                   f"of {self.bench.n_cells} are free; nothing was programmed")
            gmean = mean_target_S(encoder, w, side, channel, self._threads) \
                if self.compensate_drift and not encoder.uses_channel else 0.0
            if n_new:
                self._program(chunked_targets([(n_new, encoder, w, side)], channel, self._threads),
                              range(self._next, self._next + n_new))
            self._entries[name] = Entry(name, shape, dtype, "analog", encoder.spec(), side,
                                        [(1, self._next, n_new, gmean)], None)
            self._next += n_new
            return
        targets, groups, start = [], [], self._next
        for r, idx, enc in plan:
            g, n_g, g_mean = self._targets_S(enc, w, idx, side, channel)
            targets.append(g)
            groups.append((r, start, n_g, g_mean))
            start += n_g
        n_new = start - self._next
        if start > self.bench.n_cells:
            raise StorageError(f"tensor {name!r} needs {n_new} cells but only {self.bench.n_cells - self._next} of "
                               f"{self.bench.n_cells} are free; nothing was programmed")
        if n_new:
            self._program_cells(targets, self._next, start)
        self._entries[name] = Entry(name, shape, dtype, "analog", encoder.spec(), side, groups,
                                    None if counts is None else counts.astype(np.uint8 if counts.max(initial=0) < 256
                                                                              else np.int64))
        self._next = start

    # hooks of put (a store over tensors of another library overrides them)
    def _flat_weights(self, name: str, tensor: Any) -> tuple[np.ndarray, tuple[int, ...], str]:
        """The tensor's weights, flat float32 or float64 (float16 and bfloat16 as float32:
        no float64 copy), checked finite; its shape and dtype name."""
        a = _as_array(name, tensor)
        _analog_floats(name, a)
        check_finite(name, a)
        w = a.reshape(-1)
        if w.dtype not in (np.float32, np.float64):
            w = w.astype(np.float32)
        return np.ascontiguousarray(w), tuple(a.shape), _stored_dtype(tensor, a)

    def _fit(self, encoder: Encoder, w: np.ndarray, channel: ReadChannel) -> dict[str, Any]:
        return encoder.fit(w, channel)

    def _targets_S(self, enc: Encoder, w: np.ndarray, idx: np.ndarray | None, side: dict[str, Any],
                   channel: ReadChannel) -> tuple[np.ndarray, int, float]:
        """Cell targets (S) of the weights ``w[idx]`` (all when None), their number and mean."""
        ww = w if idx is None else w[idx]
        g = enc.encode_S(ww, side, channel, self._threads) if isinstance(enc, CellMap) else \
            channel.to_S(enc.encode(ww, side))
        return g, int(g.size), float(g.mean()) if g.size else 0.0

    @property
    def _threads(self) -> int:
        return int(getattr(self.bench, "n_threads", 1) or 1)

    def _cell_span(self, start: int, stop: int) -> Any:
        """The addresses of cells ``[start, stop)`` for the bench: a ``range`` for an
        :class:`~analogmem.emulator.bench.EmulatedBench` (streamed, no address array), else an array."""
        return range(start, stop) if isinstance(self.bench, EmulatedBench) else np.arange(start, stop)

    def _program_cells(self, targets: list[np.ndarray], start: int, stop: int) -> None:
        """Program the concatenated ``targets`` onto cells ``[start, stop)``."""
        self._program(targets[0] if len(targets) == 1 else np.concatenate(targets), self._cell_span(start, stop))

    def _program(self, targets: Any, addresses: Any) -> None:
        """``bench.program`` with the store's ``verify``, its pulses and failures counted."""
        if self.verify is None:
            self.bench.program(targets, addresses=addresses)
            return
        rep = self.bench.program(targets, addresses=addresses, verify=self.verify)
        t = self.verify_totals
        t["cells"] += int(rep.n_cells)
        t["pulses"] += int(rep.pulses.sum())  # numpy arrays or torch tensors (TorchBench's report)
        t["failed"] += int(rep.n_cells) - int(rep.success.sum())

    def put_digital(self, name: str, tensor: Any) -> None:
        """Keep ``tensor`` exactly, in digital memory (counted in bits by :meth:`usage`)."""
        _check_name(self._entries, name)
        a = _as_array(name, tensor)
        if np.issubdtype(a.dtype, np.floating):
            check_finite(name, a)
        self._entries[name] = Entry(name, tuple(a.shape), a.dtype.name, "digital")
        self._digital[name] = np.array(a, copy=True)

    # ---------------------------------------------------------------- reading
    def names(self) -> list[str]:
        return list(self._entries)

    def entry(self, name: str) -> Entry:
        if name not in self._entries:
            raise StorageError(f"no tensor named {name!r} on this store (has {len(self._entries)})")
        return self._entries[name]

    def get(self, name: str, t_s: float | None = None) -> np.ndarray:
        """Read tensor ``name`` ``t_s`` seconds after programming (None: the bench clock)
        and decode it; returns its original shape and dtype."""
        e = self.entry(name)
        if e.kind == "digital":
            return self._digital[name].copy()
        lo = min((g[1] for g in e.groups), default=0)
        hi = max((g[1] + g[2] for g in e.groups), default=0)
        reads = self.bench.read(t_s, addresses=self._cell_span(lo, hi)) if hi > lo else np.empty(0)
        return self._decode(e, reads, lo, t_s)

    def get_all(self, t_s: float | None = None, names: list[str] | None = None) -> dict[str, np.ndarray]:
        """All tensors (or ``names``), from a single read of the used cells at ``t_s``."""
        names = self.names() if names is None else list(names)
        if not self._next:
            reads = np.empty(0)
        else:  # every cell in use: no address list to validate and gather
            addr = None if self._next == self.bench.n_cells else self._cell_span(0, self._next)
            reads = self.bench.read(t_s, addresses=addr)
        out = {}
        for n in names:
            e = self.entry(n)
            out[n] = self._digital[n].copy() if e.kind == "digital" else self._decode(e, reads, 0, t_s)
        return out

    def _decode(self, e: Entry, reads: np.ndarray, offset: int, t_s: float | None) -> np.ndarray:
        enc = encoder_from_spec(e.encoder)
        t = float(t_s) if t_s is not None else max(self.bench.time_s, 0.0)
        channel = ReadChannel(self.device, max(t, 0.0))
        if e.counts is None:
            (r, start, n, gmean), = e.groups
            w = self._decode_group(enc, e, reads[start - offset:start - offset + n], gmean, e.size, channel)
        else:
            w = self._zeros_like(reads, e.size)
            counts = e.counts
            for r, start, n, gmean in e.groups:
                idx = np.flatnonzero(counts == r)
                w[idx] = self._decode_group(enc.with_repetition(r), e, reads[start - offset:start - offset + n],
                                            gmean, idx.size, channel)
        return self._as_stored(w, e)

    # hooks of _decode (with _decode_group; a store over tensors of another library overrides them)
    def _zeros_like(self, reads: np.ndarray, n: int) -> np.ndarray:
        return np.zeros(n)

    def _as_stored(self, w: np.ndarray, e: Entry) -> Any:
        """Decoded weights in the tensor's shape and dtype (float16 clipped to its finite
        range, so a weight near 65504 does not read back as inf; bfloat16 as a torch tensor)."""
        return as_stored_dtype(w.reshape(e.shape), e.dtype)

    def _decode_group(self, enc: Encoder, e: Entry, g: np.ndarray, gmean: float, n: int, channel: ReadChannel):
        gain = 1.0
        if self.compensate_drift and not enc.uses_channel and math.prod(g.shape):  # numpy or torch
            gain = global_drift_scale(g, gmean)
        dtype = np.float32 if e.dtype in ("float32", "float16", "bfloat16") and e.counts is None else np.float64
        if isinstance(enc, CellMap):
            return enc.decode_S(g, e.side, n, channel, gain, dtype, self._threads)
        g = g * gain if gain != 1.0 else g
        return enc.decode(channel.to_relative(g), e.side, n, channel)

    def usage(self) -> dict[str, Any]:
        """``analog_cells`` (cells programmed), ``analog_weights``, ``digital_bits`` (tensors
        kept digital, at their dtype's bits), ``side_info_bits`` (encoder side information
        at 32 bits per value) and ``allocation_map_bits`` (per-weight counts at their
        empirical entropy, what an entropy coder needs)."""
        side_bits = alloc_bits = 0
        for e in self._entries.values():
            if e.kind != "analog":
                continue
            for v in e.side.values():
                side_bits += 32 * (np.size(v))
            if e.counts is not None and e.counts.size:
                p = np.bincount(e.counts.astype(np.int64)) / e.counts.size
                p = p[p > 0]
                alloc_bits += float(-(p * np.log2(p)).sum() * e.counts.size)
        return {
            "analog_cells": int(self._next),
            "analog_weights": int(sum(e.size for e in self._entries.values() if e.kind == "analog")),
            "digital_bits": int(sum(a.size * a.dtype.itemsize * 8 for a in self._digital.values())),
            "side_info_bits": int(side_bits),
            "allocation_map_bits": int(math.ceil(alloc_bits)),
        }


class EmulatedStore(BenchStore):
    """A :class:`BenchStore` over a new :class:`~analogmem.emulator.bench.EmulatedBench` of
    ``n_cells`` cells of ``device``, seeded by ``seed`` (whose state snapshots record).

    ``dtype`` (``"float64"`` or ``"float32"``: the cells' state and reads), ``state_dir``
    (cells on disk, for models larger than memory) and ``direct_io`` are the bench's
    (:class:`~analogmem.emulator.bench.EmulatedBench`). For tensors that stay on a torch
    device use :class:`~analogmem.storage.torch_store.TorchStore` (the torch backend)."""

    def __init__(self, device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *,
                 n_threads: int | None = None, compensate_drift: bool | None = None, dtype: Any = "float64",
                 state_dir: Any = None, direct_io: bool | None = None, verify: Any = None):
        self.seed_sequence = as_seed_sequence(seed)
        self.initial_seed_state = seed_state(self.seed_sequence)
        bench = EmulatedBench(device, n_cells, seed=self.seed_sequence, n_threads=n_threads, dtype=dtype,
                              state_dir=state_dir, direct_io=direct_io)
        super().__init__(bench, bench.device, compensate_drift=compensate_drift, verify=verify)


def as_stored_dtype(w: np.ndarray, dtype: str) -> Any:
    """Decoded weights ``w`` as ``dtype`` (a numpy name or ``"bfloat16"``): float16 and
    bfloat16 clipped to their largest finite value first; bfloat16 comes back as a torch tensor."""
    if dtype == "bfloat16":
        import torch

        big = float(torch.finfo(torch.bfloat16).max)
        return torch.from_numpy(np.clip(w, -big, big).astype(np.float32, copy=False)).to(torch.bfloat16)
    dt = np.dtype(dtype)
    if dt == np.float16:
        big = float(np.finfo(np.float16).max)
        w = np.clip(w, -big, big)
    return w.astype(dt, copy=False)


# --------------------------------------------------------------------------- models
@dataclass
class ModelHandle:
    """A model on a store: the store, a template module (architecture, no trust in its
    weights), which state-dict entries are analog and which digital, and the usage."""

    store: Any
    template: Any
    analog: list[str]
    digital: list[str]

    def usage(self) -> dict[str, Any]:
        u = dict(self.store.usage())
        u["cells_per_weight"] = u["analog_cells"] / max(u["analog_weights"], 1)
        return u


def store_model(module: Any, store: Any, encoder: Encoder | None = None, budget: int | None = None,
                counts: dict[str, np.ndarray] | None = None, sensitivity: dict[str, np.ndarray] | None = None,
                t_fit_s: float = 86400.0, max_repetitions: int = 8, progress: bool = False) -> ModelHandle:
    """Put a ``torch.nn.Module`` on ``store``.

    Every floating-point parameter (conv / linear / batch-norm weights and biases) goes on
    the store with ``encoder``; every buffer (batch-norm ``running_mean``/``running_var``/
    ``num_batches_tracked``) and every integer or boolean tensor is kept digital. With ``budget`` (total analog cells) and
    ``sensitivity`` (per-parameter arrays h_i, e.g. from
    :func:`analogmem.storage.allocate.fisher_diagonal`), per-weight repetition counts come from
    :func:`analogmem.storage.allocate.allocate_cells` (pruning where a weight gets 0); or pass
    ``counts`` directly.

    Everything that can be checked is checked for the whole model before the first tensor
    is programmed: NaN/inf weights, names already on the store, a missing encoder, counts,
    and (on a store over a bench) that the free cells hold every tensor. Raises
    :class:`StorageError` naming the tensor; nothing is programmed then. If a tensor still
    fails part-way (e.g. an instrument error), every tensor this call had put is removed
    from the store again (its cells are free for the next call) and the error says so.
    """
    import torch

    state = module.state_dict()
    params = {n for n, _ in module.named_parameters()}
    for n, v in state.items():
        if v.is_meta:
            raise StorageError(f"tensor {n!r} is on torch's meta device (no values); materialise the module first "
                               "(e.g. module.to_empty(device='cpu') and load its weights)")
        if v.is_floating_point() and not bool(torch.isfinite(v).all()):  # checked where the tensor lives
            check_finite(n, v.detach().cpu().numpy())
    # floating-point parameters go on analog cells; buffers, integer and boolean tensors stay digital
    analog = [n for n in state if n in params and state[n].is_floating_point()]
    digital = [n for n in state if n not in analog]
    taken = [n for n in state if n in set(store.names())]
    if taken:
        raise StorageError(f"tensor(s) {taken} are already on this store (names are write-once); nothing was "
                           "programmed: store the model on a fresh store")
    if analog and encoder is None and isinstance(store, BenchStore):
        raise StorageError(f"an encoder is needed to put {analog[0]!r} (and the other parameters) on analog "
                           "cells; nothing was programmed")
    if budget is not None and counts is None:
        if sensitivity is None:
            raise StorageError("a cell budget needs per-weight sensitivities (see analogmem.storage.allocate.fisher_diagonal)")
        if not isinstance(encoder, CellMap):
            raise StorageError(f"allocation needs a cell-map encoder, got {encoder!r}")
        flat_w = {n: state[n].detach().cpu().numpy().reshape(-1) for n in analog}
        counts = allocate_cells(flat_w, sensitivity, encoder, ReadChannel(store.device, t_fit_s), int(budget),
                                max_repetitions=max_repetitions)
    if counts is not None:
        missing = [n for n in analog if n not in counts]
        if missing:
            raise StorageError(f"counts has no entry for tensor(s) {missing}; nothing was programmed")
    if isinstance(store, BenchStore):
        need = {n: _cells_needed(n, int(state[n].numel()), encoder, None if counts is None else counts[n])
                for n in analog}
        free = store.bench.n_cells - store.cells_used
        if sum(need.values()) > free:
            big = max(need, key=need.get)
            raise StorageError(f"the model needs {sum(need.values())} cells ({len(need)} tensors, the largest "
                               f"{big!r} {need[big]}) but only {free} of {store.bench.n_cells} are free; nothing "
                               "was programmed")
    cells_before = store.cells_used if isinstance(store, BenchStore) else 0
    done: list[str] = []
    try:
        for n in progress_bar(analog, enabled=progress, desc="program", unit="tensor"):
            store.put(n, state[n], encoder=encoder, counts=None if counts is None else counts[n])
            done.append(n)
        for n in digital:
            store.put_digital(n, state[n])
            done.append(n)
    except Exception as exc:
        if done and _remove(store, done, cells_before):
            exc.add_note(f"store_model: the {len(done)} tensor(s) this call had already put ({done[0]!r} ...) were "
                         "removed from the store again; their cells are free")
        raise
    template = copy.deepcopy(module)
    return ModelHandle(store, template, analog, digital)


def _remove(store: Any, names: list[str], cells_used: int) -> bool:
    """Take ``names`` off one of this module's stores (and give back its cells after
    ``cells_used``); False for a store of another kind, which is left as it is."""
    if isinstance(store, BenchStore):
        for n in names:
            store._entries.pop(n, None)
            store._digital.pop(n, None)
        store._next = cells_used
        return True
    if isinstance(store, DigitalStore):
        for n in names:
            store._entries.pop(n, None)
            store._data.pop(n, None)
        return True
    return False


def load_model(handle: ModelHandle, t_s: float | None = None, device: Any = None) -> Any:
    """A copy of the stored module with every tensor as read ``t_s`` seconds after
    programming (one read of all cells), on the device the module was stored from, or on
    ``device`` (a torch device) if given. Stores may return numpy arrays or torch tensors
    (a :class:`~analogmem.storage.torch_store.TorchStore` returns tensors on its device)."""
    import torch

    if hasattr(handle.store, "get_all"):
        values = handle.store.get_all(t_s, handle.analog + handle.digital)
    else:
        values = {n: handle.store.get(n, t_s) for n in handle.analog + handle.digital}
    module = copy.deepcopy(handle.template)
    module.load_state_dict({n: v if torch.is_tensor(v) else torch.from_numpy(np.ascontiguousarray(v))
                            for n, v in values.items()})
    return module if device is None else module.to(device)
