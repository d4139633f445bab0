"""Put a compressed delta on a :class:`~analogmem.storage.Store` and read it back at a time.

The base model stays digital (it is not on the store at all). Of the delta, the ``bits``-bit
codes of every pruned + quantised layer go on analog cells as *4-level cells* — two bits per
cell, Gray-coded levels, nearest-level detection, optionally protected by a BCH code — through
the store's digital-with-ECC encoder (:class:`~analogmem.storage.encoders.DigitalECC`, which
:class:`CodeCells` feeds with the codes themselves instead of quantising floats). What must
not suffer a single error — the entropy-coded positions (mask streams), the per-row scales and
zero points, BitDelta signs and the float16 remainder — is kept digital (``put_digital``).

:meth:`DeltaOnStore.read` reads every code cell ``t_s`` seconds after programming (drift, read
noise and relaxation as the store's device card says), corrects what BCH can, and gives back a
:class:`~analogmem.deltazip.packed.CompressedDelta` to apply to the base model.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np

from analogmem._io import progress as progress_bar
from analogmem.storage.encoders import DigitalECC

from ._validation import DeltaZipError
from .packed import CompressedDelta, DenseTensor, SignTensor, SparseQuantised, decode_mask, encode_mask

__all__ = ["CodeCells", "DeltaOnStore", "cells_needed", "put_delta"]


class CodeCells(DigitalECC):
    """:class:`~analogmem.storage.encoders.DigitalECC` over given integer codes. A code
    ``c ∈ {0, …, 2^bits − 1}`` is put on the store as the number ``c − 2^(bits−1)`` (what
    :meth:`to_store` returns); ``encode`` stores the bits of ``c`` unchanged (BCH-protected with
    ``t > 0``) on ``2^bits_per_cell``-level cells. Its spec is a plain ``DigitalECC`` whose step
    is 1, so any store gives back ``c − 2^(bits−1)`` — the store's ECC decoder on analog cells,
    a :class:`~analogmem.storage.DigitalStore` exactly — and :meth:`codes_from_read` undoes
    the offset."""

    def fit(self, w: np.ndarray, channel: Any = None) -> dict[str, float]:
        return {"step": 1.0}

    def to_store(self, codes: np.ndarray) -> np.ndarray:
        """The numbers to put on the store for ``codes``."""
        return np.asarray(codes, dtype=np.float64) - 2 ** (self.bits - 1)

    def _codes(self, w: np.ndarray, side: dict[str, Any]) -> np.ndarray:
        c = np.rint(np.asarray(w, dtype=np.float64).reshape(-1)).astype(np.int64) + 2 ** (self.bits - 1)
        if c.size and (c.min() < 0 or c.max() >= 2 ** self.bits):
            raise DeltaZipError(f"codes must be integers in [0, {2 ** self.bits}), got [{c.min()}, {c.max()}]")
        return c.astype(np.uint32)

    def codes_from_read(self, values: np.ndarray) -> np.ndarray:
        """Codes (uint8) from what the store gives back."""
        return np.clip(np.rint(np.asarray(values, dtype=np.float64) + 2 ** (self.bits - 1)), 0,
                       2 ** self.bits - 1).astype(np.uint8)


def _encoder(bits: int, ecc_t: int, block_bytes: int, m: int) -> CodeCells:
    if bits < 2:
        raise DeltaZipError(f"codes of {bits} bit cannot go on the store's digital cells (needs bits >= 2)")
    return CodeCells(bits=bits, bits_per_cell=2, t=ecc_t, block_bytes=block_bytes, m=m)


def cells_needed(delta: CompressedDelta, *, ecc_t: int = 8, block_bytes: int = 64, m: int = 10) -> int:
    """Analog cells :func:`put_delta` will program for ``delta`` (4-level cells, BCH ``t``)."""
    n = 0
    for rec in delta.records.values():
        if rec.kind == "sparse" and rec.codes.size:
            n += _encoder(rec.bits, ecc_t, block_bytes, m).n_cells(rec.codes.size)
    return n


@dataclass
class DeltaOnStore:
    """A compressed delta on a store: ``store``, ``meta`` and ``layout`` (per tensor: kind,
    shape, transposed, method, and for sparse layers bits, grid, stored count, rows), plus the
    encoder settings."""

    store: Any
    meta: dict[str, Any]
    layout: dict[str, dict[str, Any]]
    ecc_t: int
    block_bytes: int
    m: int

    def read(self, t_s: float | None = None) -> CompressedDelta:
        """The delta as read ``t_s`` seconds after programming (one read of all cells)."""
        names = list(self.store.names())
        values = self.store.get_all(t_s, names) if hasattr(self.store, "get_all") else \
            {n: self.store.get(n, t_s) for n in names}
        records: dict[str, Any] = {}
        for name, lay in self.layout.items():
            if lay["kind"] == "sparse":
                rows, cols = lay["shape"]
                k, bits = lay["n_stored"], lay["bits"]
                mask = decode_mask(values[f"{name}/mask"].tobytes(), rows * cols, k, name).reshape(rows, cols)
                if k:
                    codes = _encoder(bits, self.ecc_t, self.block_bytes, self.m).codes_from_read(values[f"{name}/codes"])
                else:
                    codes = np.zeros(0, dtype=np.uint8)
                scale = values[f"{name}/scale"].astype(np.float16)
                zero = (values[f"{name}/zero"].astype(np.float32) if lay["grid"] == "minmax"
                        else np.full(rows, (2 ** bits - 1) / 2.0, dtype=np.float32))
                records[name] = SparseQuantised(name, mask, codes, scale, zero, bits, lay["grid"], lay["transposed"],
                                                lay["method"])
            elif lay["kind"] == "sign":
                n = int(np.prod(lay["shape"]))
                bits = np.unpackbits(values[f"{name}/signs"], bitorder="little")[:n]
                records[name] = SignTensor(name, bits.astype(bool).reshape(lay["shape"]),
                                           values[f"{name}/alpha"].astype(np.float16)[0], lay["transposed"])
            else:
                records[name] = DenseTensor(name, values[f"{name}/delta"].astype(np.float16), lay["transposed"])
        return CompressedDelta(records, dict(self.meta))

    def usage(self) -> dict[str, Any]:
        """The store's resource use (analog cells, digital bits)."""
        return dict(self.store.usage())


def put_delta(delta: CompressedDelta, store: Any, *, ecc_t: int = 8, block_bytes: int = 64, m: int = 10,
              progress: bool = False) -> DeltaOnStore:
    """Put ``delta`` on ``store``: codes on 4-level analog cells (``DigitalECC`` with
    ``bits_per_cell = 2`` and a BCH code correcting ``ecc_t`` bit errors per ``block_bytes``
    bytes; ``ecc_t = 0`` for none), everything else digital. Returns a :class:`DeltaOnStore`."""
    layout: dict[str, dict[str, Any]] = {}
    for name, rec in progress_bar(list(delta.records.items()), enabled=progress, desc="program", unit="tensor"):
        lay = {"kind": rec.kind, "shape": list(rec.shape), "transposed": bool(rec.transposed), "method": rec.method}
        if rec.kind == "sparse":
            lay.update(bits=rec.bits, grid=rec.grid, n_stored=int(rec.codes.size))
            store.put_digital(f"{name}/mask", np.frombuffer(encode_mask(rec.mask), dtype=np.uint8).copy())
            if rec.codes.size:
                enc = _encoder(rec.bits, ecc_t, block_bytes, m)
                store.put(f"{name}/codes", enc.to_store(rec.codes), encoder=enc)
            store.put_digital(f"{name}/scale", np.asarray(rec.scale, dtype=np.float16))
            if rec.grid == "minmax":
                store.put_digital(f"{name}/zero", np.asarray(rec.zero, dtype=np.uint8))
        elif rec.kind == "sign":
            store.put_digital(f"{name}/signs", np.packbits(rec.positive.reshape(-1), bitorder="little"))
            store.put_digital(f"{name}/alpha", np.asarray([rec.alpha], dtype=np.float16))
        else:
            store.put_digital(f"{name}/delta", np.asarray(rec.delta, dtype=np.float16))
        layout[name] = lay
    return DeltaOnStore(store, dict(delta.meta), layout, ecc_t, block_bytes, m)
