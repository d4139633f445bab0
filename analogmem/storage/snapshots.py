"""Chip snapshots: a programmed chip on disk, re-read later (docs/storage.md "Snapshots").

Snapshots (:func:`save_snapshot` / :func:`load_snapshot`) write a programmed chip to one
safetensors file: the per-cell state of the bench (the arrays its card uses, in the bench's
dtype; format version 2 — version-1 files, with all five arrays in float64, still load), the store's directory (encoders, side
information, addresses), the digital tensors, and JSON metadata with the analogmem
version, the device card (text and sha256) and the random state. The file carries a
SHA-256 of its whole content (computed with the checksum field zeroed), written
atomically; a corrupted or truncated file is refused with
:class:`~analogmem.errors.StorageError`. Loading gives back a store whose reads continue
bit-identically to the original's.
"""

from __future__ import annotations

import hashlib
import json
import re
import struct
from pathlib import Path

import numpy as np

from .._io import atomic_write_bytes
from .._seeding import seed_from_state, seed_state
from .._version import __version__
from ..emulator.bench import EmulatedBench
from ..emulator.cells import DeviceModel, parse_card
from ..errors import AnalogMemError, StorageError
from .stores import BenchStore, EmulatedStore, Entry

__all__ = ["save_snapshot", "load_snapshot", "restore_emulated_bench", "SNAPSHOT_FORMAT"]

SNAPSHOT_FORMAT = "analogmem-chip-snapshot"
_SNAPSHOT_VERSION = 2
#: Version 1 stored all five state arrays as float64; version 2 stores the arrays the card
#: uses (``bench.cell_keys``), in the bench's dtype. Both load.
_READABLE_VERSIONS = (1, 2)
_V1_CELL_KEYS = ("g_eff", "g_prog", "nu", "z_relax", "q_read", "t_prog_s", "stuck")
_CHECKSUM_KEY = b'"checksum_sha256":"'
_ZERO_SUM = "0" * 64


def save_snapshot(store: EmulatedStore, path: str | Path) -> Path:
    """Write the programmed chip of ``store`` to ``path`` (safetensors + JSON metadata,
    atomic, whole-file SHA-256). Only the used cells are written. Temporary files left by
    an earlier save of the same ``path`` that was killed are removed first. Raises
    :class:`StorageError` naming the path if it cannot be written (the file already there,
    if any, is unchanged)."""
    from safetensors.numpy import save as st_save

    if not isinstance(store, BenchStore) or not isinstance(store.bench, EmulatedBench):
        raise StorageError(f"snapshots need a store over an EmulatedBench, got {type(store).__name__}")
    bench: EmulatedBench = store.bench
    n = store.cells_used
    state = bench.cell_state()
    cell_keys = list(state)
    tensors: dict[str, np.ndarray] = {f"cells/{k}": np.ascontiguousarray(state[k][:n]) for k in cell_keys}
    entries = []
    for e in store._entries.values():
        side_scalars = {}
        for k, v in e.side.items():
            if np.ndim(v) == 0:
                side_scalars[k] = float(v)
            else:
                tensors[f"side/{e.name}/{k}"] = np.ascontiguousarray(np.asarray(v))
        if e.counts is not None:
            tensors[f"counts/{e.name}"] = np.ascontiguousarray(e.counts)
        if e.kind == "digital":
            d = store._digital[e.name]
            tensors[f"digital/{e.name}"] = np.ascontiguousarray(d.reshape(-1))
        entries.append({"name": e.name, "shape": list(e.shape), "dtype": e.dtype, "kind": e.kind,
                        "encoder": e.encoder, "side": side_scalars,
                        "side_arrays": [k for k, v in e.side.items() if np.ndim(v) != 0],
                        "groups": [list(g) for g in e.groups], "has_counts": e.counts is not None})
    saved_seed = seed_state(store.seed_sequence) if isinstance(store, EmulatedStore) else None
    t_prog = state["t_prog_s"]
    meta = {
        "format": SNAPSHOT_FORMAT, "format_version": _SNAPSHOT_VERSION, "analogmem_version": __version__,
        "device": {"name": store.device.name, "card_sha256": store.device.card_sha256,
                   "card_text": store.device.card_text},
        "random_state": {"kind": "numpy.random.SeedSequence", "current": saved_seed,
                         "initial": getattr(store, "initial_seed_state", None)},
        "bench": {"n_cells": bench.n_cells, "cells_saved": n, "time_s": bench.time_s, "dtype": bench.dtype.name,
                  "cell_keys": cell_keys,
                  "last_program_s": float(t_prog.max()) if t_prog.size else 0.0,
                  "stuck_unused_cells": int(np.count_nonzero(state["stuck"][n:]))},
        "store": {"compensate_drift": store.compensate_drift, "cells_used": n, "entries": entries},
        "units": {"cells/g_eff": "S", "cells/g_prog": "S", "cells/t_prog_s": "s", "time_s": "s"},
    }
    blob = st_save(tensors, metadata={"analogmem": json.dumps(meta), "checksum_sha256": _ZERO_SUM})
    pos = _checksum_position(blob)
    digest = hashlib.sha256(blob).hexdigest().encode()
    blob = blob[:pos] + digest + blob[pos + 64:]
    try:
        return atomic_write_bytes(path, blob)
    except OSError as exc:  # permission, a folder in the way, a file where a folder should be, disk full
        where = Path(str(exc.filename)) if exc.filename else None
        shown = where is not None and where != Path(path) and not where.name.startswith(f".{Path(path).name}.")
        raise StorageError(f"cannot write snapshot {str(path)!r}: {exc.strerror or exc}"
                           + (f" ({where})" if shown else "") + "; nothing was written") from None


def _checksum_position(blob: bytes) -> int:
    if len(blob) < 8:
        raise StorageError(f"snapshot is truncated: {len(blob)} bytes, not even a header length")
    (hlen,) = struct.unpack("<Q", blob[:8])
    if hlen > len(blob) - 8:
        raise StorageError(f"snapshot is truncated or corrupted: header says {hlen} bytes, file has {len(blob) - 8}")
    header = blob[8:8 + hlen]
    i = header.find(_CHECKSUM_KEY)
    if i < 0 or header.find(_CHECKSUM_KEY, i + 1) >= 0 or i + len(_CHECKSUM_KEY) + 64 > len(header):
        raise StorageError("snapshot is corrupted: no (unique) checksum_sha256 in its header")
    return 8 + i + len(_CHECKSUM_KEY)


def load_snapshot(path: str | Path, *, n_threads: int | None = None) -> EmulatedStore:
    """Read a snapshot written by :func:`save_snapshot` and rebuild its store.

    The whole-file SHA-256 is verified first; a truncated or corrupted file (any byte) or
    a card whose text no longer matches its recorded sha256 raises :class:`StorageError`.
    The returned store's bench has the saved per-cell state, clock and random state, so its
    reads continue exactly as the original's would have.
    """
    from safetensors.numpy import load as st_load

    path = Path(path)
    try:
        blob = path.read_bytes()
    except OSError as exc:
        raise StorageError(f"cannot read snapshot {str(path)!r}: {exc}") from None
    pos = _checksum_position(blob)
    stored = blob[pos:pos + 64]
    if not re.fullmatch(rb"[0-9a-f]{64}", stored):
        raise StorageError(f"snapshot {str(path)!r} is corrupted: malformed checksum")
    actual = hashlib.sha256(blob[:pos] + _ZERO_SUM.encode() + blob[pos + 64:]).hexdigest()
    if actual != stored.decode():
        raise StorageError(f"snapshot {str(path)!r} is corrupted or truncated: SHA-256 {actual} does not match "
                           f"the recorded {stored.decode()}")
    try:
        tensors = st_load(blob)
        (hlen,) = struct.unpack("<Q", blob[:8])
        meta = json.loads(json.loads(blob[8:8 + hlen])["__metadata__"]["analogmem"])
    except Exception as exc:  # noqa: BLE001 - any parse failure is a corrupt file
        raise StorageError(f"snapshot {str(path)!r} cannot be parsed: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != SNAPSHOT_FORMAT or \
            meta.get("format_version") not in _READABLE_VERSIONS:
        raise StorageError(f"{str(path)!r} is not an analogmem chip snapshot of format version "
                           f"{' or '.join(map(str, _READABLE_VERSIONS))}")
    try:
        return _store_from(path, meta, tensors, n_threads)
    except (KeyError, TypeError, ValueError, AttributeError, IndexError, RecursionError) as exc:
        if isinstance(exc, AnalogMemError):
            raise
        raise StorageError(f"snapshot {str(path)!r} is malformed: {type(exc).__name__}: {exc}") from None


def _store_from(path: Path, meta: dict, tensors: dict[str, np.ndarray], n_threads: int | None) -> EmulatedStore:
    """The store a parsed snapshot describes (raw errors of a crafted file are the caller's to name)."""
    dev_meta = meta["device"]
    device = parse_card(dev_meta["card_text"], label=f"{dev_meta['name']} (from snapshot)")
    if device.card_sha256 != dev_meta["card_sha256"]:
        raise StorageError(f"snapshot {str(path)!r}: device card sha256 {device.card_sha256} does not match the "
                           f"recorded {dev_meta['card_sha256']}")
    b = meta["bench"]
    n = int(b["cells_saved"])
    cells = {k: tensors[f"cells/{k}"] for k in b.get("cell_keys", _V1_CELL_KEYS)}
    saved_seed = meta["random_state"]["current"]
    store = EmulatedStore.__new__(EmulatedStore)
    store.seed_sequence = seed_from_state(saved_seed)
    store.initial_seed_state = meta["random_state"]["initial"]
    bench = restore_emulated_bench(device, int(b["n_cells"]), cells, store.seed_sequence, time_s=float(b["time_s"]),
                                   n_threads=n_threads, dtype=b.get("dtype", "float64"))
    BenchStore.__init__(store, bench, device, compensate_drift=bool(meta["store"]["compensate_drift"]))
    for em in meta["store"]["entries"]:
        name = em["name"]
        side = dict(em["side"])
        for k in em["side_arrays"]:
            side[k] = tensors[f"side/{name}/{k}"]
        e = Entry(name, tuple(em["shape"]), em["dtype"], em["kind"], em["encoder"], side,
                  [(int(g[0]), int(g[1]), int(g[2]), float(g[3])) for g in em["groups"]],
                  tensors[f"counts/{name}"] if em["has_counts"] else None)
        store._entries[name] = e
        if e.kind == "digital":
            store._digital[name] = tensors[f"digital/{name}"].reshape(e.shape)
    store._next = n
    return store


def restore_emulated_bench(device: DeviceModel, n_cells: int, cells: dict[str, np.ndarray],
                           seed: np.random.SeedSequence, *, time_s: float, n_threads: int | None = None,
                           dtype: str = "float64") -> EmulatedBench:
    """Rebuild an :class:`~analogmem.emulator.bench.EmulatedBench` (of ``dtype``) from
    saved per-cell state (``cells``: arrays of :meth:`EmulatedBench.cell_state`, each for
    the first ``len`` cells; arrays the card does not use are ignored), its seed sequence
    (at its saved ``n_children_spawned``) and clock.

    Cells beyond the saved ones are left as a fresh bench has them (unprogrammed).
    """
    bench = EmulatedBench(device, n_cells, seed=np.random.SeedSequence(0), n_threads=n_threads, dtype=dtype)
    n = cells["g_prog"].shape[0]
    if n > n_cells:
        raise StorageError(f"snapshot holds {n} cells but the bench has {n_cells}")
    full = bench.cell_state()
    missing = [k for k in full if k not in cells]
    if missing:
        raise StorageError(f"snapshot lacks the cell arrays {missing} that device {device.name!r} needs")
    for k in full:
        full[k][:n] = cells[k]
    bench.restore_state(full, time_s=time_s, seed=seed)
    return bench
