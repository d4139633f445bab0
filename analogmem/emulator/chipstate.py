"""Where a bench's per-cell state lives: in memory, allocated on first use, or in files.

A card needs only some per-cell arrays (:func:`state_keys`): ``g_prog`` always, ``nu``
with drift, ``q_read`` with read noise, ``g_eff`` and ``z_relax`` with relaxation. They
are float64 or float32 (the bench's ``dtype``). Optional arrays appear only when needed:
``t_prog_s`` (float64) once cells were programmed at different times, ``stuck`` (int8) only
when a restored chip's stuck-at pattern differs from the one its fault key gives.

:class:`RamArrays` keeps them as numpy arrays, created only when first written (a new
bench holds nothing, whatever its size). :class:`FileArrays` keeps one raw little-endian
file per array under a directory (``<name>.bin``, made sparse with ``ftruncate``) plus
``header.json`` (format version, dtype of each array, the bench's clock and random state,
the card's sha256) and ``card.toml`` (the card's text). It is read and written in chunks
with ``pread``/``pwrite`` — never memory-mapped for whole-chip passes, so resident memory
stays at a few chunks however large the chip. Where the file system allows it, whole-chip
passes use direct I/O (``O_DIRECT``: the bytes go between the chunk buffers and the disk
without a copy into the page cache, several requests in flight): a chip larger than memory
cannot live in the page cache anyway, and buffered writes of one would cost a copy per byte
and the kernel's write-back throttling, which made a 10⁹-cell program about 2.5× slower
(``benchmarks/bench_out_of_core.py --io buffered``). Unaligned pieces (a chip's last
partial block, chunks of a size that is not a multiple of 4096 B) go through the page
cache, which the kernel keeps coherent with direct I/O. Every program call marks the
header ``dirty`` before the first state byte is written and clears it after the last; a
directory found dirty is refused on open.
"""

from __future__ import annotations

import errno
import hashlib
import json
import os
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import numpy as np

from .._io import atomic_write_bytes
from .._version import __version__
from ..errors import StorageError

__all__ = ["STATE_KEYS", "state_keys", "bytes_per_cell", "RamArrays", "FileArrays", "STATE_FORMAT",
           "STATE_FORMAT_VERSION", "STATE_POOL", "release_state_pool", "DIRECT_ALIGN", "supports_direct_io"]

#: The per-cell state arrays, in the order the kernels take them.
STATE_KEYS = ("g_eff", "g_prog", "nu", "z_relax", "q_read")
STATE_FORMAT = "analogmem-chip-state"
STATE_FORMAT_VERSION = 1
_HEADER = "header.json"
_CARD = "card.toml"


#: Alignment (bytes) of direct-I/O offsets, lengths and buffer addresses: a multiple of
#: every logical block size in use (512 B or 4 KiB).
DIRECT_ALIGN = 4096
#: Bytes per direct-I/O request; the requests of one chunk run :data:`DIRECT_IN_FLIGHT` at a
#: time (one request at a time leaves a virtual disk idle between requests: 0.76 GB/s read
#: with one in flight against 1.07 GB/s with six on the development machine; reading a
#: 10⁹-cell chip: 7.3 s with four, 6.3 s with eight, 7.2 s with sixteen).
DIRECT_PIECE_BYTES = 4 << 20
DIRECT_IN_FLIGHT = 8


def supports_direct_io(path: str | os.PathLike) -> bool:
    """Whether the file system holding the existing file ``path`` accepts ``O_DIRECT``
    (tmpfs and some network file systems do not)."""
    flag = getattr(os, "O_DIRECT", 0)
    if not flag:
        return False
    try:
        fd = os.open(path, os.O_RDONLY | flag)
    except OSError:
        return False
    os.close(fd)
    return True


def _aligned_empty(n: int, dtype: Any) -> np.ndarray:
    """An uninitialised array of ``n`` entries whose data starts on a :data:`DIRECT_ALIGN` boundary."""
    dt = np.dtype(dtype)
    raw = np.empty(n * dt.itemsize + DIRECT_ALIGN, dtype=np.uint8)
    skip = -raw.ctypes.data % DIRECT_ALIGN
    return raw[skip:skip + n * dt.itemsize].view(dt)


def _transfer_all(fd: int, view: memoryview, offset: int, write: bool, what: str) -> None:
    """Write ``view`` to, or read it from, ``fd`` at byte ``offset``, however many calls it takes."""
    done = 0
    while done < len(view):
        got = os.pwrite(fd, view[done:], offset + done) if write else os.preadv(fd, [view[done:]], offset + done)
        if got <= 0:
            raise StorageError(f"{what} ends early at byte {offset + done}")
        done += got


def state_keys(device: Any) -> tuple[str, ...]:
    """The state arrays a card needs (a subset of :data:`STATE_KEYS`, in that order)."""
    need = {"g_prog": True, "g_eff": device.relaxation.enabled, "nu": device.drift.enabled,
            "z_relax": device.relaxation.enabled, "q_read": device.read_noise.enabled}
    return tuple(k for k in STATE_KEYS if need[k])


def bytes_per_cell(device: Any, dtype: Any) -> int:
    """Bytes of per-cell state a programmed chip of this card holds per cell."""
    return len(state_keys(device)) * np.dtype(dtype).itemsize


class _StatePool:
    """Freed in-memory state arrays kept for the next bench (like a caching allocator).

    Fresh memory costs the kernel a zeroed page per page touched — for a 11.2 M-cell
    float32 PCM bench that is most of an end-to-end construct + program + read — so the
    arrays of a bench that is garbage-collected wait here (as raw bytes, up to
    ``limit_bytes`` in all, oldest dropped first) for a bench that needs arrays of the same
    size. State arrays never leave a bench except as copies, so a reused buffer is never
    visible to two owners; a bench writes every cell of an array before reading it."""

    def __init__(self, limit_bytes: int):
        self.limit_bytes = limit_bytes
        self._lock = threading.Lock()
        self._free: OrderedDict[int, list[np.ndarray]] = OrderedDict()
        self._bytes = 0

    def take(self, n: int, dtype: np.dtype) -> np.ndarray:
        nbytes = n * np.dtype(dtype).itemsize
        with self._lock:
            stack = self._free.get(nbytes)
            if stack:
                owner = stack.pop()
                self._bytes -= nbytes
                if not stack:
                    del self._free[nbytes]
                return owner.view(dtype)
        return np.empty(n, dtype=dtype)

    def give(self, arrays: Iterator[np.ndarray]) -> None:
        with self._lock:
            for a in arrays:
                owner = a if a.base is None else a.base  # the array that owns the memory
                if (not isinstance(owner, np.ndarray) or owner.base is not None or owner.nbytes != a.nbytes
                        or not owner.flags.c_contiguous or a.nbytes > self.limit_bytes):
                    continue
                self._free.setdefault(owner.nbytes, []).append(owner)
                self._free.move_to_end(owner.nbytes)
                self._bytes += owner.nbytes
                while self._bytes > self.limit_bytes:
                    size, stack = next(iter(self._free.items()))
                    stack.pop(0)
                    self._bytes -= size
                    if not stack:
                        del self._free[size]

    def clear(self) -> int:
        with self._lock:
            freed, self._free, self._bytes = self._bytes, OrderedDict(), 0
        return freed


#: Bytes of freed state arrays kept for reuse (``ANALOGMEM_STATE_POOL_BYTES``, default 512 MiB; 0 disables).
STATE_POOL = _StatePool(int(os.environ.get("ANALOGMEM_STATE_POOL_BYTES", 1 << 29)))


def release_state_pool() -> int:
    """Free the state arrays kept for reuse; returns the bytes released."""
    return STATE_POOL.clear()


class RamArrays:
    """Named arrays of ``n`` entries in memory, each created when first asked for (from
    :data:`STATE_POOL` when it holds one of the right size); returned to the pool when the
    owner is garbage-collected or drops an array."""

    in_memory = True

    def __init__(self, n: int):
        self.n = n
        self.arrays: dict[str, np.ndarray] = {}
        weakref.finalize(self, _return_arrays, self.arrays)

    def has(self, name: str) -> bool:
        return name in self.arrays

    def dtype(self, name: str) -> np.dtype:
        return self.arrays[name].dtype

    def ranges(self, chunk_cells: int | None = None) -> Iterator[tuple[int, int]]:
        """One range (the kernels take the whole array at once), or chunks of
        ``chunk_cells`` when the caller streams its input."""
        step = chunk_cells or self.n
        for lo in range(0, self.n, step):
            yield lo, min(self.n, lo + step)

    def for_write(self, names: dict[str, np.dtype], lo: int, hi: int) -> dict[str, np.ndarray]:
        """Buffers for cells [lo, hi) of ``names`` to be filled and then :meth:`commit`-ted:
        here, views of the arrays themselves (uninitialised on first use)."""
        out = {}
        for name, dt in names.items():
            a = self.arrays.get(name)
            if a is None or a.dtype != dt:
                self.drop(name)
                a = self.arrays[name] = STATE_POOL.take(self.n, dt)
            out[name] = a[lo:hi]
        return out

    def commit(self, lo: int, buffers: dict[str, np.ndarray]) -> None:
        """Nothing to do: :meth:`for_write` gave views."""

    def load(self, names: tuple[str, ...], lo: int, hi: int) -> dict[str, np.ndarray]:
        return {k: self.arrays[k][lo:hi] for k in names}

    def gather(self, names: tuple[str, ...], addr: np.ndarray) -> dict[str, np.ndarray]:
        return {k: self.arrays[k][addr] for k in names}

    def scatter(self, addr: np.ndarray, values: dict[str, np.ndarray]) -> None:
        for k, v in values.items():
            self.arrays[k][addr] = v

    def drop(self, name: str) -> None:
        a = self.arrays.pop(name, None)
        if a is not None:
            STATE_POOL.give([a])

    @property
    def nbytes(self) -> int:
        """Bytes of state held in memory."""
        return sum(a.nbytes for a in self.arrays.values())


def _return_arrays(arrays: dict[str, np.ndarray]) -> None:
    STATE_POOL.give(list(arrays.values()))
    arrays.clear()


class FileArrays:
    """Named arrays of ``n`` entries, one raw file each under ``path``, with a JSON header.

    Args:
        path: the chip's directory.
        n: entries per array.
        header: the header (as written to ``header.json``).
        chunk_cells: cells per chunk of a whole-chip pass.
        direct_io: None (default) uses direct I/O where the file system supports it; False
            always goes through the page cache; True requires direct I/O
            (:class:`~analogmem.errors.StorageError` if the file system refuses it).
    """

    in_memory = False
    #: Cells per chunk of a whole-chip pass (float32 PCM: 12 B/cell → 48 MB of state per chunk).
    CHUNK_CELLS = 1 << 22

    def __init__(self, path: Path, n: int, header: dict[str, Any], chunk_cells: int | None = None,
                 direct_io: bool | None = None):
        self.path = Path(path)
        self.n = n
        self.header = header
        self.chunk_cells = int(chunk_cells or self.CHUNK_CELLS)
        self.direct_io = False if direct_io is False else supports_direct_io(self.path / _CARD)
        if direct_io and not self.direct_io:
            raise StorageError(f"chip directory {str(self.path)!r}: its file system does not support direct "
                               "I/O (O_DIRECT); use direct_io=None or False")
        # Chunk-sized buffers reused chunk after chunk (fresh memory would cost a page fault
        # per page of every chunk), in two sets: while the kernels fill one, a background
        # thread writes the other (write-behind) or reads the next chunk into it (read-ahead).
        self._buffers: dict[tuple[str, str], np.ndarray] = {}
        self._io: ThreadPoolExecutor | None = None
        self._fanout: ThreadPoolExecutor | None = None  # direct-I/O requests of one chunk
        self._pending: Future | None = None           # the write in flight
        self._ahead: tuple[tuple, Future] | None = None  # ((names, lo, hi, set), the read in flight)
        self._write_set = 0
        self._read_set = 0

    def _buffer(self, name: str, kind: str, size: int) -> np.ndarray:
        dt = self.dtype(name)
        buf = self._buffers.get((name, kind))
        if buf is None or buf.dtype != dt or buf.shape[0] < size:
            buf = self._buffers[(name, kind)] = _aligned_empty(max(size, min(self.chunk_cells, self.n)), dt)
        return buf[:size]

    def _executor(self) -> ThreadPoolExecutor:
        if self._io is None:
            self._io = ThreadPoolExecutor(max_workers=1, thread_name_prefix="analogmem-chip-io")
        return self._io

    def flush(self) -> None:
        """Wait for the write in flight (raising its error, if any) and drop any read-ahead."""
        pending, self._pending = self._pending, None
        ahead, self._ahead = self._ahead, None
        if ahead is not None:
            ahead[1].result()
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish pending I/O and stop the I/O thread."""
        try:
            self.flush()
        finally:
            for pool in (self._io, self._fanout):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._io = self._fanout = None

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | os.PathLike, n: int, header: dict[str, Any], card_text: str,
               chunk_cells: int | None = None, direct_io: bool | None = None) -> "FileArrays":
        """A new chip directory (created if missing; refused if it already holds a chip)."""
        path = Path(path)
        if (path / _HEADER).exists():
            raise StorageError(f"{str(path)!r} already holds a chip: reopen it with EmulatedBench.open(), or "
                               "choose an empty directory")
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create chip directory {str(path)!r}: {exc}") from None
        header = dict(header, format=STATE_FORMAT, format_version=STATE_FORMAT_VERSION,
                      analogmem_version=__version__, n_cells=n, card_sha256=hashlib.sha256(card_text.encode()).hexdigest(),
                      arrays={}, dirty=False)
        atomic_write_bytes(path / _CARD, card_text.encode("utf-8"))
        try:
            self = cls(path, n, header, chunk_cells, direct_io)
        except StorageError:
            (path / _CARD).unlink()
            raise
        self.save_header()
        return self

    @classmethod
    def open(cls, path: str | os.PathLike, chunk_cells: int | None = None,
             direct_io: bool | None = None) -> tuple["FileArrays", str]:
        """An existing chip directory and its card text. Raises :class:`StorageError` for a
        missing or foreign directory, an unknown format version, a chip interrupted while
        being programmed (``dirty``), a card whose text does not match its sha256, or state
        files of the wrong size."""
        path = Path(path)
        try:
            header = json.loads((path / _HEADER).read_text())
            card_text = (path / _CARD).read_text()
        except (OSError, ValueError) as exc:
            raise StorageError(f"{str(path)!r} is not a readable analogmem chip directory: {exc}") from None
        if header.get("format") != STATE_FORMAT or header.get("format_version") != STATE_FORMAT_VERSION:
            raise StorageError(f"{str(path)!r} is not an analogmem chip of format {STATE_FORMAT!r} version "
                               f"{STATE_FORMAT_VERSION} (header says {header.get('format')!r} "
                               f"version {header.get('format_version')!r})")
        if header.get("dirty"):
            raise StorageError(
                f"chip {str(path)!r} was interrupted while being programmed (operation "
                f"{header.get('dirty_operation', '?')!r}): its cell state is incomplete and is not read; "
                "program the chip again into a new directory")
        sha = hashlib.sha256(card_text.encode()).hexdigest()
        if sha != header.get("card_sha256"):
            raise StorageError(f"chip {str(path)!r}: card.toml has sha256 {sha}, the header recorded "
                               f"{header.get('card_sha256')}")
        n = int(header["n_cells"])
        self = cls(path, n, header, chunk_cells, direct_io)
        for name, dt in header["arrays"].items():
            size = self._file(name).stat().st_size if self._file(name).exists() else -1
            if size != n * np.dtype(dt).itemsize:
                raise StorageError(f"chip {str(path)!r}: {name}.bin has {size} bytes, expected "
                                   f"{n * np.dtype(dt).itemsize} ({n} cells of {dt})")
        return self, card_text

    def save_header(self) -> None:
        atomic_write_bytes(self.path / _HEADER, json.dumps(self.header, indent=1).encode("utf-8"))

    def begin_write(self, operation: str) -> None:
        """Mark the chip dirty (on disk) before any state byte changes."""
        self.flush()
        self.header["dirty"] = True
        self.header["dirty_operation"] = operation
        self.save_header()

    def end_write(self, durable: bool = False) -> None:
        """Clear the dirty mark after the state is complete (with ``durable``: fsync every
        state file first, so it also survives a power loss)."""
        self.flush()
        if durable:
            for name in self.header["arrays"]:
                fd = os.open(self._file(name), os.O_RDONLY)
                try:
                    os.fsync(fd)
                finally:
                    os.close(fd)
        self.header["dirty"] = False
        self.header.pop("dirty_operation", None)
        self.save_header()

    # ---------------------------------------------------------------- arrays
    def _file(self, name: str) -> Path:
        return self.path / f"{name}.bin"

    def has(self, name: str) -> bool:
        return name in self.header["arrays"]

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self.header["arrays"][name])

    def _ensure(self, name: str, dt: np.dtype) -> None:
        dt = np.dtype(dt).newbyteorder("<")
        if self.header["arrays"].get(name) == dt.str:
            return
        with open(self._file(name), "wb") as fh:  # sparse: no block is written until a chunk is
            fh.truncate(self.n * dt.itemsize)
        self.header["arrays"][name] = dt.str

    def ranges(self, chunk_cells: int | None = None) -> Iterator[tuple[int, int]]:
        """Chunks of the chip (``chunk_cells`` is ignored: files are always streamed in
        :attr:`chunk_cells`)."""
        for lo in range(0, self.n, self.chunk_cells):
            yield lo, min(self.n, lo + self.chunk_cells)

    def for_write(self, names: dict[str, np.dtype], lo: int, hi: int) -> dict[str, np.ndarray]:
        """Buffers for cells [lo, hi) to fill and :meth:`commit`; the other set of buffers
        may still be being written in the background."""
        if self._ahead is not None:
            self.flush()
        for name, dt in names.items():
            self._ensure(name, dt)
        return {name: self._buffer(name, f"w{self._write_set}", hi - lo) for name in names}

    def commit(self, lo: int, buffers: dict[str, np.ndarray]) -> None:
        """Write the buffers of cells [lo, ...) in the background (after the write before
        them has finished, so at most one is in flight); :meth:`flush` waits for it."""
        if self._pending is not None:
            self._pending, pending = None, self._pending
            pending.result()
        self._pending = self._executor().submit(self._write, lo, dict(buffers))
        self._write_set ^= 1

    def _transfer(self, arrays: dict[str, np.ndarray], lo: int, write: bool) -> None:
        """Write each array (contiguous, its file's dtype) to cells [lo, ...) of the file of
        its name, or read those cells into it. With direct I/O the aligned part of every
        array goes in requests that run :data:`DIRECT_IN_FLIGHT` at a time (a write: one
        request per file, the files in parallel — parallel writes into one sparse file wait
        on each other's block allocation; a read: :data:`DIRECT_PIECE_BYTES` pieces); the
        rest (or all, without direct I/O) goes through the page cache."""
        requests = []  # (file, view, byte offset, direct)
        for name, array in arrays.items():
            view = memoryview(array).cast("B")
            offset = lo * array.dtype.itemsize
            head = 0
            if self.direct_io and offset % DIRECT_ALIGN == 0 and array.ctypes.data % DIRECT_ALIGN == 0:
                head = len(view) - len(view) % DIRECT_ALIGN
            step = max(head, 1) if write else DIRECT_PIECE_BYTES
            requests += [(name, view[p:min(head, p + step)], offset + p, True) for p in range(0, head, step)]
            if head < len(view):
                requests.append((name, view[head:], offset + head, False))

        def run(request: tuple[str, memoryview, int, bool]) -> None:
            name, view, offset, direct = request
            try:
                fd = os.open(self._file(name), (os.O_WRONLY if write else os.O_RDONLY) | (os.O_DIRECT if direct else 0))
                try:
                    _transfer_all(fd, view, offset, write, f"chip {str(self.path)!r}: {name}.bin")
                finally:
                    os.close(fd)
            except OSError as exc:
                # a file system that accepts O_DIRECT at open but not these requests (EINVAL):
                # this request and every later one go through the page cache
                if not direct or exc.errno != errno.EINVAL:
                    raise
                self.direct_io = False
                run((name, view, offset, False))

        if len(requests) == 1:
            run(requests[0])
            return
        if self._fanout is None:
            self._fanout = ThreadPoolExecutor(max_workers=DIRECT_IN_FLIGHT, thread_name_prefix="analogmem-chip-io-req")
        list(self._fanout.map(run, requests))

    def _write(self, lo: int, buffers: dict[str, np.ndarray]) -> None:
        self._transfer({name: np.ascontiguousarray(buf, dtype=self.dtype(name)) for name, buf in buffers.items()},
                       lo, write=True)

    def _read(self, names: tuple[str, ...], lo: int, hi: int, kind: str) -> dict[str, np.ndarray]:
        out = {name: self._buffer(name, kind, hi - lo) for name in names}
        self._transfer(out, lo, write=False)
        return out

    def load(self, names: tuple[str, ...], lo: int, hi: int) -> dict[str, np.ndarray]:
        """Cells [lo, hi) of ``names``, in buffers valid until the next load of those arrays.
        Sequential loads are read ahead: the next chunk is read in the background."""
        if self._pending is not None:
            self.flush()
        names = tuple(names)
        ahead, self._ahead = self._ahead, None
        if ahead is not None and ahead[0][:3] == (names, lo, hi):
            out, kind = ahead[1].result(), ahead[0][3]
        else:
            if ahead is not None:
                ahead[1].result()
            kind = f"r{self._read_set}"
            out = self._read(names, lo, hi, kind)
        self._read_set = 1 if kind == "r0" else 0
        nxt_hi = min(self.n, hi + (hi - lo))
        if hi < self.n and hi - lo >= 1 << 16:  # only whole-chip passes are worth reading ahead
            nxt_kind = f"r{self._read_set}"
            self._ahead = ((names, hi, nxt_hi, nxt_kind),
                           self._executor().submit(self._read, names, hi, nxt_hi, nxt_kind))
        return out

    def _map(self, name: str, mode: str) -> np.memmap:
        return np.memmap(self._file(name), dtype=self.dtype(name), mode=mode, shape=(self.n,))

    def gather(self, names: tuple[str, ...], addr: np.ndarray) -> dict[str, np.ndarray]:
        """Entries ``addr`` of each array (mapped for this call only, then unmapped)."""
        self.flush()
        out = {}
        for name in names:
            mm = self._map(name, "r")
            out[name] = np.array(mm[addr])
            del mm
        return out

    def scatter(self, addr: np.ndarray, values: dict[str, np.ndarray]) -> None:
        self.flush()
        for name, v in values.items():
            self._ensure(name, np.asarray(v).dtype)
            mm = self._map(name, "r+")
            mm[addr] = v
            mm.flush()
            del mm

    def drop(self, name: str) -> None:
        self.flush()
        if self.header["arrays"].pop(name, None) is not None:
            self._file(name).unlink(missing_ok=True)

    @property
    def nbytes(self) -> int:
        """Bytes of state held in memory: none (it is on disk)."""
        return 0

    @property
    def file_bytes(self) -> int:
        """Bytes of the state files (their nominal size; sparse until written)."""
        return sum(self.n * np.dtype(dt).itemsize for dt in self.header["arrays"].values())
