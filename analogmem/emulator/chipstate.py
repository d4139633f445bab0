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

Nothing on disk is trusted blindly. The header carries a CRC32C of itself and one CRC32C per
chunk of :attr:`FileArrays.CHUNK_CELLS` cells (4 Mi by default) of every state file: a
chunk read whole (every whole-chip pass) is checked every time it is read, at memory speed
in the background I/O thread; a chunk read in part (a few addresses, a cell range that
does not start on a chunk boundary) is checked once per open (its other cells are read
for it), then trusted while this process holds the chip's lock; a chunk written in part is
checked before the write. Loaded values are range-checked (finite, conductances within
1 kS, stuck states 0/1/2). State-file sizes are checked before anything is mapped or
written. A chip directory is locked (``flock`` on its file ``lock``) from create/open to
:meth:`FileArrays.close`: exclusively by a bench that may write, shared by read-only opens;
a second opener gets :class:`~analogmem.errors.StorageError` naming the holder.
"""

from __future__ import annotations

import datetime
import errno
import fcntl
import hashlib
import json
import os
import shutil
import socket
import stat
import threading
import weakref
from collections import OrderedDict
from concurrent.futures import Future, ThreadPoolExecutor
from pathlib import Path
from typing import Any, Iterator

import crc32c as _crc32c
import numpy as np

from .._io import atomic_write_bytes
from .._version import __version__
from ..errors import StorageError

__all__ = ["STATE_KEYS", "state_keys", "bytes_per_cell", "RamArrays", "FileArrays", "STATE_FORMAT",
           "STATE_FORMAT_VERSION", "STATE_POOL", "release_state_pool", "DIRECT_ALIGN", "supports_direct_io"]

#: The per-cell state arrays, in the order the kernels take them.
STATE_KEYS = ("g_eff", "g_prog", "nu", "z_relax", "q_read")
STATE_FORMAT = "analogmem-chip-state"
#: 2: the header carries CRC32C checksums of itself and of every state chunk.
STATE_FORMAT_VERSION = 2
_HEADER = "header.json"
_CARD = "card.toml"
_LOCK = "lock"
#: The largest header.json / card.toml read (a bigger one is not analogmem's).
MAX_HEADER_BYTES = 64 << 20
#: Arrays a chip directory may hold, with the dtypes each may have.
_ARRAY_DTYPES = {**{k: ("<f8", "<f4") for k in ("g_eff", "g_prog", "nu", "z_relax", "q_read")},
                 "t_prog_s": ("<f8",), "stuck": ("|i1", "<i1")}
#: Allowed value range of each loaded array (finite, inside [lo, hi]): conductances within
#: the 1 kS window calibration uses, the other latents within bounds no card reaches.
STATE_BOUNDS = {"g_eff": (-1e6, 1e6), "g_prog": (0.0, 1e3), "nu": (-1e3, 1e3), "z_relax": (-1e6, 1e6),
                "q_read": (0.0, 1e6), "t_prog_s": (0.0, 1e300), "stuck": (0, 2)}


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

    def flush(self) -> None:
        """Nothing in flight in memory."""

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


def crc32c(data: Any, value: int = 0) -> int:
    """CRC32C (Castagnoli) of a bytes-like object (continuing from ``value``)."""
    return int(_crc32c.crc32c(memoryview(data).cast("B"), value))


_ZERO_CRC: dict[int, int] = {}


def _zeros_crc(nbytes: int) -> int:
    """CRC32C of ``nbytes`` zero bytes (a freshly made sparse state file), cached per length."""
    if nbytes not in _ZERO_CRC:
        _ZERO_CRC[nbytes] = crc32c(np.zeros(nbytes, dtype=np.uint8))
    return _ZERO_CRC[nbytes]


def header_crc(header: dict[str, Any]) -> int:
    """CRC32C of a chip header without its own ``header_crc32c`` (canonical JSON)."""
    body = {k: v for k, v in header.items() if k != "header_crc32c"}
    return crc32c(json.dumps(body, sort_keys=True, separators=(",", ":"), allow_nan=True).encode("utf-8"))


def check_state_range(name: str, values: np.ndarray, where: str) -> None:
    """Refuse (:class:`~analogmem.errors.StorageError`) loaded state outside
    :data:`STATE_BOUNDS` (NaN included): state no program writes."""
    if values.size == 0 or name not in STATE_BOUNDS:
        return
    lo, hi = STATE_BOUNDS[name]
    vmin, vmax = values.min(), values.max()  # NaN propagates into both
    if not (lo <= vmin and vmax <= hi):
        bad = values[~((values >= lo) & (values <= hi))]
        raise StorageError(f"{where}: {name} holds {bad.size} value(s) outside [{lo:g}, {hi:g}] (e.g. {bad[0]!r}): "
                           "state no program writes, refused")


def _read_capped(path: Path, what: str) -> bytes:
    """The bytes of a regular file of at most :data:`MAX_HEADER_BYTES` (no FIFO, device or
    /proc file is read)."""
    st = os.stat(path)
    if not stat.S_ISREG(st.st_mode):
        raise StorageError(f"{what}: {str(path)!r} is not a regular file")
    if st.st_size > MAX_HEADER_BYTES:
        raise StorageError(f"{what}: {str(path)!r} has {st.st_size} bytes, more than a chip's "
                           f"{MAX_HEADER_BYTES} B limit")
    with open(path, "rb") as fh:
        return fh.read(MAX_HEADER_BYTES + 1)


class ChipLock:
    """An ``flock`` on ``<chip>/lock``: exclusive for a bench that may write, shared for
    read-only opens, held until :meth:`release` (or the object is garbage-collected, or
    the process ends: the kernel drops it then). An exclusive holder writes its process id,
    host and start time into the file, which a refused opener quotes. A read-only open of a
    chip on read-only media without a lock file takes no lock (nothing can write there)."""

    def __init__(self, chip: Path, exclusive: bool):
        self.path = Path(chip) / _LOCK
        self.exclusive = exclusive
        try:
            fd = os.open(self.path, os.O_RDWR | os.O_CREAT | getattr(os, "O_CLOEXEC", 0), 0o666)
        except OSError as exc:
            fd = -1
            if not exclusive:
                try:
                    fd = os.open(self.path, os.O_RDONLY | getattr(os, "O_CLOEXEC", 0))
                except OSError:
                    fd = -1
            if fd < 0 and (exclusive or exc.errno not in (errno.EROFS, errno.EACCES, errno.EPERM)):
                hint = ("; a chip on read-only media is opened with EmulatedBench.open(path, read_only=True)"
                        if exc.errno in (errno.EROFS, errno.EACCES, errno.EPERM) else "")
                raise StorageError(f"chip {str(chip)!r}: cannot open its lock file: {exc}{hint}") from None
        self.fd = fd
        self._finalizer = weakref.finalize(self, _close_fd, fd)
        if fd < 0:
            return
        try:
            fcntl.flock(fd, (fcntl.LOCK_EX if exclusive else fcntl.LOCK_SH) | fcntl.LOCK_NB)
        except BlockingIOError:
            holder = self._holder()
            self.release()
            raise StorageError(f"chip {str(chip)!r} is in use: {holder}; close it there first "
                               "(EmulatedBench.close()); read-only opens may share a chip, but not with a "
                               "bench that writes it") from None
        if exclusive:
            who = (f"{_LOCK_NOTE.decode()} {os.getpid()} on host {socket.gethostname()} since "
                   f"{datetime.datetime.now(datetime.timezone.utc).isoformat(timespec='seconds')}")
            try:
                os.ftruncate(fd, 0)
                os.pwrite(fd, who.encode("utf-8"), 0)
            except OSError:
                pass  # the lock holds without the note

    def _holder(self) -> str:
        """Who holds the lock (from the file; readers write nothing)."""
        try:
            fcntl.flock(self.fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
            fcntl.flock(self.fd, fcntl.LOCK_UN)
            return "it is open read-only in another bench (a shared lock)"
        except BlockingIOError:
            pass
        try:
            text = os.pread(self.fd, 4096, 0).decode("utf-8", "replace").strip()
        except OSError:
            text = ""
        return text or "another bench holds it for writing (it has not written its name yet)"

    def release(self) -> None:
        """Drop the lock (idempotent)."""
        self._finalizer()


def _close_fd(fd: int) -> None:
    if fd >= 0:
        os.close(fd)  # closing the descriptor drops its flock


def _is_stale_temp(name: str) -> bool:
    return name.startswith(".") and name.endswith(".tmp")


_LOCK_NOTE = b"opened for writing by process"


def _check_empty(path: Path) -> None:
    """Refuse to make a chip in ``path`` unless it is empty (apart from stale temporary
    files and an analogmem lock file)."""
    if (path / _HEADER).exists():
        raise StorageError(f"{str(path)!r} already holds a chip: reopen it with EmulatedBench.open(), or "
                           "choose an empty directory")
    others = []
    for e in sorted(os.listdir(path)):
        if _is_stale_temp(e):
            continue
        if e == _LOCK:
            f = path / e
            try:
                ours = f.is_file() and not f.is_symlink() and f.stat().st_size < 4096 and (
                    f.read_bytes() in (b"",) or f.read_bytes().startswith(_LOCK_NOTE))
            except OSError:
                ours = False
            if ours:
                continue
        others.append(e)
    if others:
        shown = ", ".join(others[:5]) + (f" and {len(others) - 5} more" if len(others) > 5 else "")
        raise StorageError(f"state_dir {str(path)!r} is not empty and is not an analogmem chip (it holds "
                           f"{shown}): choose a new or empty directory; nothing was written")


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
                 direct_io: bool | None = None, lock: ChipLock | None = None, read_only: bool = False):
        self.path = Path(path)
        self.n = n
        self.header = header
        self.read_only = bool(read_only)
        self.lock = lock
        self.chunk_cells = int(chunk_cells or self.CHUNK_CELLS)
        #: cells per checksum chunk (fixed when the chip is made)
        self.crc_cells = int(header.setdefault("crc_chunk_cells", self.chunk_cells))
        header.setdefault("crc32c", {})
        #: (array, chunk) checked whole since this open: trusted for partial reads while the lock is held
        self._verified: set[tuple[str, int]] = set()
        self._crc_lock = threading.Lock()
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
            ahead[1].exception()  # a read ahead that is not used: wait for it, its error is not this call's
        if pending is not None:
            pending.result()

    def close(self) -> None:
        """Finish pending I/O, stop the I/O threads and release the chip's lock."""
        try:
            self.flush()
        finally:
            for pool in (self._io, self._fanout):
                if pool is not None:
                    pool.shutdown(wait=True)
            self._io = self._fanout = None
            if self.lock is not None:
                self.lock.release()

    # ---------------------------------------------------------------- create / open
    @classmethod
    def create(cls, path: str | os.PathLike, n: int, header: dict[str, Any], card_text: str,
               chunk_cells: int | None = None, direct_io: bool | None = None,
               expected_bytes: int = 0) -> "FileArrays":
        """A new chip directory, locked for writing until :meth:`close`. The directory is
        made if missing; an existing one must be empty (stale temporary files and a lock
        file apart). Refused (:class:`StorageError`, nothing written, no directory left
        behind) for ``""``, a directory that holds a chip or anything else, one locked by
        another bench, or a file system with less free space than ``expected_bytes`` (the
        state files of a programmed chip)."""
        if os.fspath(path) in ("", b""):
            raise StorageError("state_dir is empty: name a new or empty directory for the chip")
        path = Path(path)
        made = [p for p in [path, *path.parents] if not p.exists()]  # removed again if the create fails
        try:
            path.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise StorageError(f"cannot create chip directory {str(path)!r}: {exc}") from None
        if not path.is_dir():
            raise StorageError(f"state_dir {str(path)!r} is not a directory")
        lock = None
        written: list[Path] = []
        try:
            _check_empty(path)  # before the lock file is made: nothing is written into a foreign folder
            lock = ChipLock(path, exclusive=True)
            _check_empty(path)  # again, now that no other bench can be creating it
            free = shutil.disk_usage(path).free
            need = int(expected_bytes) + len(card_text.encode()) + (1 << 20)
            if free < need:
                raise StorageError(f"chip directory {str(path)!r}: its file system has {free} bytes free, the chip's "
                                   f"state needs {need} ({n} cells); free space or choose another place")
            header = dict(header, format=STATE_FORMAT, format_version=STATE_FORMAT_VERSION,
                          analogmem_version=__version__, n_cells=n,
                          card_sha256=hashlib.sha256(card_text.encode()).hexdigest(), arrays={}, dirty=False)
            written.append(path / _CARD)
            try:
                atomic_write_bytes(path / _CARD, card_text.encode("utf-8"))
            except OSError as exc:
                raise StorageError(f"chip directory {str(path)!r}: cannot write card.toml: {exc}") from None
            self = cls(path, n, header, chunk_cells, direct_io, lock=lock)
            written.append(path / _HEADER)
            self.save_header()
            return self
        except BaseException:
            for f in written:
                f.unlink(missing_ok=True)
            if lock is not None:
                lock.release()
                if made or not (path / _HEADER).exists():
                    (path / _LOCK).unlink(missing_ok=True)
            for p in made:
                try:
                    p.rmdir()
                except OSError:
                    break
            raise

    @classmethod
    def open(cls, path: str | os.PathLike, chunk_cells: int | None = None,
             direct_io: bool | None = None, read_only: bool = False) -> tuple["FileArrays", str]:
        """An existing chip directory and its card text, locked until :meth:`close`
        (exclusively; shared with ``read_only``, which never writes anything there). Raises
        :class:`StorageError` for a missing or foreign directory, a chip locked by another
        bench, an unknown format version, a header whose checksum does not match, a chip
        interrupted while being programmed (``dirty``), a card whose text does not match its
        sha256, or state files of the wrong size or type."""
        if os.fspath(path) in ("", b""):
            raise StorageError("state_dir is empty: name a chip directory")
        path = Path(path)
        if not (path / _HEADER).is_file():
            raise StorageError(f"{str(path)!r} is not a readable analogmem chip directory: it has no "
                               f"regular file {_HEADER}")
        lock = ChipLock(path, exclusive=not read_only)
        try:
            self, card_text = cls._open_locked(path, chunk_cells, direct_io, lock, read_only)
        except BaseException:
            lock.release()
            raise
        return self, card_text

    @classmethod
    def _open_locked(cls, path: Path, chunk_cells: int | None, direct_io: bool | None, lock: ChipLock,
                     read_only: bool) -> tuple["FileArrays", str]:
        try:
            header = json.loads(_read_capped(path / _HEADER, f"chip {str(path)!r}").decode("utf-8"))
            card_text = _read_capped(path / _CARD, f"chip {str(path)!r}").decode("utf-8")
        except (OSError, ValueError, RecursionError) as exc:
            raise StorageError(f"{str(path)!r} is not a readable analogmem chip directory: "
                               f"{type(exc).__name__}: {exc}") from None
        if not isinstance(header, dict):
            raise StorageError(f"{str(path)!r} is not an analogmem chip: header.json holds a "
                               f"{type(header).__name__}, not an object")
        if header.get("format") != STATE_FORMAT or header.get("format_version") != STATE_FORMAT_VERSION:
            raise StorageError(f"{str(path)!r} is not an analogmem chip of format {STATE_FORMAT!r} version "
                               f"{STATE_FORMAT_VERSION} (header says {header.get('format')!r} "
                               f"version {header.get('format_version')!r})")
        if header.get("header_crc32c") != header_crc(header):
            raise StorageError(f"chip {str(path)!r}: header.json does not match its checksum (header_crc32c "
                               f"{header.get('header_crc32c')!r}, computed {header_crc(header)}): it was edited "
                               "or damaged; its state is not read")
        if header.get("dirty"):
            raise StorageError(
                f"chip {str(path)!r} was interrupted while being programmed (operation "
                f"{header.get('dirty_operation', '?')!r}) and no bench holds it now: its cell state is incomplete "
                "and is not read; program the chip again into a new directory")
        sha = hashlib.sha256(card_text.encode()).hexdigest()
        if sha != header.get("card_sha256"):
            raise StorageError(f"chip {str(path)!r}: card.toml has sha256 {sha}, the header recorded "
                               f"{header.get('card_sha256')}")
        n = header.get("n_cells")
        arrays, crcs, crc_cells = header.get("arrays"), header.get("crc32c"), header.get("crc_chunk_cells")
        if isinstance(n, bool) or not isinstance(n, int) or n < 1:
            raise StorageError(f"chip {str(path)!r}: header n_cells must be a positive integer, got {n!r}")
        if isinstance(crc_cells, bool) or not isinstance(crc_cells, int) or crc_cells < 1:
            raise StorageError(f"chip {str(path)!r}: header crc_chunk_cells must be a positive integer, "
                               f"got {crc_cells!r}")
        if not isinstance(arrays, dict) or not isinstance(crcs, dict) or set(crcs) != set(arrays):
            raise StorageError(f"chip {str(path)!r}: header arrays/crc32c are malformed")
        n_chunks = -(-n // crc_cells)
        for name, dt in arrays.items():
            if name not in _ARRAY_DTYPES or dt not in _ARRAY_DTYPES[name]:
                raise StorageError(f"chip {str(path)!r}: header lists array {name!r} of dtype {dt!r}; known arrays "
                                   f"and dtypes are {_ARRAY_DTYPES}")
            c = crcs[name]
            if not isinstance(c, list) or len(c) != n_chunks or not all(
                    isinstance(v, int) and not isinstance(v, bool) for v in c):
                raise StorageError(f"chip {str(path)!r}: header checksums of {name!r} are malformed")
        self = cls(path, n, header, chunk_cells, direct_io, lock=lock, read_only=read_only)
        for name, dt in arrays.items():
            self.check_file(name)
        return self, card_text

    def check_file(self, name: str) -> None:
        """Refuse a state file that is missing, not a regular file, or not of its nominal size
        (truncated or extended since it was written)."""
        f, want = self._file(name), self.n * self.dtype(name).itemsize
        try:
            st = os.stat(f)
        except FileNotFoundError:
            raise StorageError(f"chip {str(self.path)!r}: state file {name}.bin is missing (expected {want} bytes: "
                               f"{self.n} cells of {self.dtype(name)})") from None
        if not stat.S_ISREG(st.st_mode):
            raise StorageError(f"chip {str(self.path)!r}: {name}.bin is not a regular file")
        if st.st_size != want:
            raise StorageError(f"chip {str(self.path)!r}: {name}.bin has {st.st_size} bytes, expected "
                               f"{want} ({self.n} cells of {self.dtype(name)}): it was truncated or extended")

    def save_header(self) -> None:
        if self.read_only:
            raise StorageError(f"chip {str(self.path)!r} is open read-only: nothing is written there")
        self.header["header_crc32c"] = header_crc(self.header)
        try:
            atomic_write_bytes(self.path / _HEADER, json.dumps(self.header, indent=1).encode("utf-8"))
        except OSError as exc:
            raise StorageError(f"chip {str(self.path)!r}: cannot write header.json: {exc}") from None

    def begin_write(self, operation: str) -> None:
        """Mark the chip dirty (on disk) before any state byte changes, after checking that
        every state file still has its size (a file truncated under an open bench is not
        written into: the write would zero-extend it)."""
        if self.read_only:
            raise StorageError(f"chip {str(self.path)!r} is open read-only: {operation} is refused "
                               "(reopen it without read_only=True)")
        self.flush()
        for name in self.header["arrays"]:
            self.check_file(name)
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

    # ---------------------------------------------------------------- checksums
    def _chunks(self, lo: int, hi: int) -> Iterator[tuple[int, int, int]]:
        """``(chunk, first cell, end cell)`` of the checksum chunks that cells [lo, hi) touch."""
        C = self.crc_cells
        for c in range(lo // C, (hi - 1) // C + 1 if hi > lo else lo // C):
            yield c, c * C, min(self.n, (c + 1) * C)

    def _read_cells(self, name: str, lo: int, hi: int) -> np.ndarray:
        """Cells [lo, hi) of one state file, read through the page cache."""
        out = np.empty(hi - lo, dtype=self.dtype(name))
        try:
            fd = os.open(self._file(name), os.O_RDONLY)
            try:
                _transfer_all(fd, memoryview(out).cast("B"), lo * out.dtype.itemsize, False,
                              f"chip {str(self.path)!r}: {name}.bin")
            finally:
                os.close(fd)
        except OSError as exc:
            raise StorageError(f"chip {str(self.path)!r}: reading {name}.bin failed: {exc}") from None
        return out

    def _check_crc(self, name: str, c: int, lo: int, hi: int, data: np.ndarray) -> None:
        got, want = crc32c(data), self.header["crc32c"][name][c]
        if got != want:
            raise StorageError(f"chip {str(self.path)!r}: {name}.bin cells {lo}..{hi - 1} do not match their "
                               f"checksum (crc32c {got:#010x}, header {want:#010x}): the state file was damaged "
                               "or edited; its values are not used")
        self._verified.add((name, c))

    def _verify(self, name: str, lo: int, values: np.ndarray) -> None:
        """Check cells [lo, lo + len(values)) just read: whole chunks against their checksum
        every time, chunks read in part once per open (their other cells are read for it);
        then their range."""
        hi = lo + values.shape[0]
        for c, c_lo, c_hi in self._chunks(lo, hi):
            if lo <= c_lo and c_hi <= hi:
                self._check_crc(name, c, c_lo, c_hi, values[c_lo - lo:c_hi - lo])
            elif (name, c) not in self._verified:
                self._check_crc(name, c, c_lo, c_hi, self._read_cells(name, c_lo, c_hi))
        check_state_range(name, values, f"chip {str(self.path)!r}: {name}.bin cells {lo}..{hi - 1}")

    def _crcs_after_write(self, name: str, lo: int, values: np.ndarray) -> dict[int, int]:
        """The checksums of the chunks that writing ``values`` at cell ``lo`` leaves; a chunk
        written in part is read (and checked) first."""
        hi = lo + values.shape[0]
        out = {}
        for c, c_lo, c_hi in self._chunks(lo, hi):
            if lo <= c_lo and c_hi <= hi:
                out[c] = crc32c(values[c_lo - lo:c_hi - lo])
                continue
            old = self._read_cells(name, c_lo, c_hi)
            if (name, c) not in self._verified:
                self._check_crc(name, c, c_lo, c_hi, old)
            a, b = max(lo, c_lo), min(hi, c_hi)
            old[a - c_lo:b - c_lo] = values[a - lo:b - lo]
            out[c] = crc32c(old)
        return out

    def _set_crcs(self, name: str, crcs: dict[int, int]) -> None:
        table = self.header["crc32c"][name]
        for c, v in crcs.items():
            table[c] = v
            self._verified.add((name, c))

    # ---------------------------------------------------------------- arrays
    def _file(self, name: str) -> Path:
        return self.path / f"{name}.bin"

    def has(self, name: str) -> bool:
        return name in self.header["arrays"]

    def dtype(self, name: str) -> np.dtype:
        return np.dtype(self.header["arrays"][name])

    def _ensure(self, name: str, dt: np.dtype) -> None:
        dt = np.dtype(dt).newbyteorder("<") if np.dtype(dt).itemsize > 1 else np.dtype(dt)
        if self.header["arrays"].get(name) == dt.str:
            return
        try:
            with open(self._file(name), "wb") as fh:  # sparse: no block is written until a chunk is
                fh.truncate(self.n * dt.itemsize)
        except OSError as exc:
            raise StorageError(f"chip {str(self.path)!r}: cannot make {name}.bin: {exc}") from None
        self.header["arrays"][name] = dt.str
        self.header["crc32c"][name] = [_zeros_crc((hi - lo) * dt.itemsize) for _, lo, hi in self._chunks(0, self.n)]
        self._verified.difference_update({k for k in self._verified if k[0] == name})

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
            while True:  # a loop, not a recursive call: a self-referencing closure would keep self alive
                try:
                    fd = os.open(self._file(name), (os.O_WRONLY if write else os.O_RDONLY) | (os.O_DIRECT if direct else 0))
                    try:
                        _transfer_all(fd, view, offset, write, f"chip {str(self.path)!r}: {name}.bin")
                    finally:
                        os.close(fd)
                    return
                except OSError as exc:
                    # a file system that accepts O_DIRECT at open but not these requests (EINVAL):
                    # this request and every later one go through the page cache
                    if not direct or exc.errno != errno.EINVAL:
                        raise StorageError(f"chip {str(self.path)!r}: {'writing' if write else 'reading'} {name}.bin "
                                           f"failed: {exc}") from None
                    self.direct_io = False
                    direct = False

        if len(requests) == 1:
            run(requests[0])
            return
        if self._fanout is None:
            self._fanout = ThreadPoolExecutor(max_workers=DIRECT_IN_FLIGHT, thread_name_prefix="analogmem-chip-io-req")
        list(self._fanout.map(run, requests))

    def _write(self, lo: int, buffers: dict[str, np.ndarray]) -> None:
        arrays = {name: np.ascontiguousarray(buf, dtype=self.dtype(name)) for name, buf in buffers.items()}
        crcs = {name: self._crcs_after_write(name, lo, a) for name, a in arrays.items()}
        self._transfer(arrays, lo, write=True)
        for name, c in crcs.items():
            self._set_crcs(name, c)

    def _read(self, names: tuple[str, ...], lo: int, hi: int, kind: str) -> dict[str, np.ndarray]:
        out = {name: self._buffer(name, kind, hi - lo) for name in names}
        self._transfer(out, lo, write=False)
        for name, values in out.items():
            self._verify(name, lo, values)
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
                ahead[1].exception()  # not the chunk asked for: wait, and leave its error unraised
            kind = f"r{self._read_set}"
            out = self._read(names, lo, hi, kind)
        self._read_set = 1 if kind == "r0" else 0
        nxt_hi = min(self.n, hi + (hi - lo))
        if hi < self.n and hi - lo >= 1 << 16:  # only whole-chip passes are worth reading ahead
            nxt_kind = f"r{self._read_set}"
            self._ahead = ((names, hi, nxt_hi, nxt_kind),
                           self._executor().submit(self._read, names, hi, nxt_hi, nxt_kind))
        return out

    def _map(self, name: str) -> np.memmap:
        self.check_file(name)  # a mapping past the end of a truncated file would fault
        return np.memmap(self._file(name), dtype=self.dtype(name), mode="r", shape=(self.n,))

    def gather(self, names: tuple[str, ...], addr: np.ndarray) -> dict[str, np.ndarray]:
        """Entries ``addr`` of each array (mapped for this call only, then unmapped); the
        chunks they lie in are checked against their checksums (once per open)."""
        self.flush()
        out = {}
        addr = np.asarray(addr, dtype=np.int64)
        chunks = np.unique(addr // self.crc_cells) if addr.size else np.zeros(0, dtype=np.int64)
        for name in names:
            mm = self._map(name)
            try:
                for c in chunks.tolist():
                    if (name, c) not in self._verified:
                        c_lo, c_hi = c * self.crc_cells, min(self.n, (c + 1) * self.crc_cells)
                        self._check_crc(name, c, c_lo, c_hi, np.ascontiguousarray(mm[c_lo:c_hi]))
                out[name] = np.array(mm[addr])
            finally:
                del mm
            check_state_range(name, out[name], f"chip {str(self.path)!r}: {name}.bin")
        return out

    def verify_at(self, names: tuple[str, ...], addr: np.ndarray) -> None:
        """Check the chunks holding cells ``addr`` of ``names`` (those not yet checked since
        this open) against their checksums, before a write into them changes anything."""
        self.flush()
        addr = np.asarray(addr, dtype=np.int64)
        for name in names:
            if not self.has(name):
                continue
            self.check_file(name)
            for c in (np.unique(addr // self.crc_cells).tolist() if addr.size else []):
                if (name, c) not in self._verified:
                    c_lo, c_hi = c * self.crc_cells, min(self.n, (c + 1) * self.crc_cells)
                    self._check_crc(name, c, c_lo, c_hi, self._read_cells(name, c_lo, c_hi))

    def scatter(self, addr: np.ndarray, values: dict[str, np.ndarray]) -> None:
        """Write entries ``addr`` of each array: each chunk they touch is read, checked,
        changed and written back whole with its new checksum (no mapping: a full disk is an
        error, not a fault)."""
        self.flush()
        addr = np.asarray(addr, dtype=np.int64)
        order = np.argsort(addr, kind="stable")
        sorted_addr = addr[order]
        chunk_of = sorted_addr // self.crc_cells
        cuts = np.flatnonzero(np.diff(chunk_of)) + 1
        for name, v in values.items():
            v = np.asarray(v)
            self._ensure(name, v.dtype)
            self.check_file(name)
            v = np.broadcast_to(v, addr.shape).astype(self.dtype(name))[order]
            for sel in np.split(np.arange(sorted_addr.size), cuts):
                if sel.size == 0:
                    continue
                c = int(chunk_of[sel[0]])
                c_lo, c_hi = c * self.crc_cells, min(self.n, (c + 1) * self.crc_cells)
                buf = self._read_cells(name, c_lo, c_hi)
                if (name, c) not in self._verified:
                    self._check_crc(name, c, c_lo, c_hi, buf)
                buf[sorted_addr[sel] - c_lo] = v[sel]
                crc = crc32c(buf)
                self._transfer({name: buf}, c_lo, write=True)
                self._set_crcs(name, {c: crc})

    def drop(self, name: str) -> None:
        self.flush()
        if self.header["arrays"].pop(name, None) is not None:
            self.header["crc32c"].pop(name, None)
            self._verified.difference_update({k for k in self._verified if k[0] == name})
            self._file(name).unlink(missing_ok=True)

    @property
    def nbytes(self) -> int:
        """Bytes of state held in memory: none (it is on disk)."""
        return 0

    @property
    def file_bytes(self) -> int:
        """Bytes of the state files (their nominal size; sparse until written)."""
        return sum(self.n * np.dtype(dt).itemsize for dt in self.header["arrays"].values())
