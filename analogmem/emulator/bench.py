"""Benches: where cells are programmed and read.

:class:`Bench` is the narrow protocol that both the emulator and (later) real instruments
implement: ``n_cells``, ``program``, ``read``, an emulated or real clock (``time_s``,
``wait``) and ``shutdown``. Code above it never needs to know which one it has.

:class:`EmulatedBench` keeps per-cell state in numpy arrays (allocated on first use, only
those the card needs) or in files (``state_dir``, :mod:`analogmem.emulator.chipstate`) and
runs the compiled kernels of ``ext/`` (``analogmem.emulator._kernels``); there is no silent
fallback to Python — the numpy reference (:mod:`analogmem.emulator.reference`) is used only
when asked for with ``backend="numpy"``.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Callable, Iterator, Protocol, runtime_checkable

import numpy as np

from ..errors import (AddressError, DeviceCardError, KernelUnavailableError, SettingError, SettingTypeError,
                      StorageError, TargetRangeError)

# before the modules that import the kernels too (card_params, reference), so a missing build says why
try:
    from . import _kernels
except ImportError as exc:  # pragma: no cover - exercised only on a broken install
    from pathlib import Path as _Path

    _here = _Path(__file__).resolve().parents[1]
    _shadow = (_here.parent / "pyproject.toml").is_file() and (_here.parent / "ext").is_dir()
    raise KernelUnavailableError(
        f"analogmem's compiled kernels (analogmem.emulator._kernels) are not built in {_here}"
        + (": this is a source checkout, which shadows an installed analogmem when Python runs from its root; "
           "run from another folder, or build it in place with `pip install -e .`" if _shadow else
           ": install the package with `pip install .` or `pip install -e .` (needs a C compiler)")) from exc

from . import reference
from .._seeding import SeedLike, as_seed_sequence, seed_from_state, seed_state
from ._streams import op_key, stuck_states
from .card_params import card_params, pulse_arrays
from .cells import DeviceModel, load_device, parse_card
from .chipstate import STATE_KEYS, FileArrays, RamArrays, bytes_per_cell, check_state_range
from .pulse_response import MAX_WINDOWS, PulseTable
from .validation import (as_target_array, check_addresses, check_clock, check_n_cells, check_read_time,
                         check_seconds, check_targets, check_temperature_K)

__all__ = ["Bench", "EmulatedBench", "ProgramReport", "WriteVerify", "ChunkedTargets", "kernels_info",
           "default_threads", "check_addresses", "as_target_array"]

_BACKENDS = ("cython", "numpy")
#: The deprecated ``EmulatedBench(..., backend="torch")`` only: the class it returns, registered by
#: :mod:`~analogmem.emulator.torch_bench` (:func:`~analogmem.emulator.factory.make_bench` is the factory).
_DEPRECATED_BACKENDS: dict[str, Any] = {}
_DTYPES = (np.dtype(np.float64), np.dtype(np.float32))


def default_threads() -> int:
    """Threads the kernels use by default: the cores this process may run on."""
    try:
        return max(1, len(os.sched_getaffinity(0)))
    except AttributeError:  # pragma: no cover - not Linux
        return max(1, os.cpu_count() or 1)


def kernels_info() -> dict[str, Any]:
    """Where the compiled kernels come from and how they were built."""
    return {"module": _kernels.__name__, "path": _kernels.__file__, "openmp": bool(_kernels.OPENMP),
            "max_threads": int(_kernels.max_threads()), "work_chunk_cells": int(_kernels.WORK_CHUNK),
            "random_stream": "Philox4x32-10 (counter-based), Box-Muller normals"}


@dataclass(frozen=True)
class WriteVerify:
    """Program-and-verify settings: pulse, read, compare with the cell's window; repeat
    until the read lies inside the window or ``max_pulses`` pulses were spent.

    ``windows = "tolerance"`` (default): the window of a cell with target ``g_T`` (S) is
    ``[g_T − h, g_T + h]`` with ``h = tolerance_S + tolerance_rel·|g_T|``, and each pulse
    re-draws the cell from the card's write channel.

    ``windows = "card"``: the card's calibrated pulse-response model (``[write_verify]``,
    :mod:`~analogmem.emulator.pulse_response`) draws the pulses each cell needs and its
    verified value. The windows are ``levels`` (a sequence of (lo_S, hi_S)), else target ±
    tolerance when a tolerance is given, else the card's own levels; every target must lie
    in one. A ``shared-geometric-mixture`` card emulates any window inside its range, with
    the start state (``prior_programs``: programs of the cell into the same window directly
    before this one), the pulse scheme (``scheme``, ``step_V``) and the run
    (``run_effect``: a number, in standard deviations ``run_sd`` of the fitted run effect;
    ``"mean"`` (default), the population centre of the run effect, 0; ``"sample"``, one
    run effect per programming campaign — per bench — drawn from the bench's seed with the
    card's between-run and per-window within-run spreads,
    :mod:`~analogmem.emulator.run_variation`); a ``geometric-mixture`` card only its fitted
    windows. ``max_pulses=None`` takes the scheme's budget. Build it with :meth:`card`.

    The default ``"mean"`` keeps one bench at the card's closed-form per-level numbers
    (``PulseResponse.mean_pulses``) and bit-identical to earlier results; use ``"sample"``
    for Monte-Carlo chips, which then differ from each other as measured runs do.
    """

    max_pulses: int | None = 20
    tolerance_S: float = 0.0
    tolerance_rel: float = 0.05
    windows: str = "tolerance"
    levels: tuple[tuple[float, float], ...] | None = None
    prior_programs: int = 0
    scheme: str | None = None
    step_V: float | None = None
    run_effect: float | str = 0.0

    @classmethod
    def card(cls, max_pulses: int | None = None, windows: Any = None, tolerance_S: float = 0.0,
             tolerance_rel: float = 0.0, prior_programs: int = 0, scheme: str | None = None,
             step_V: float | None = None, run_effect: float | str = "mean") -> "WriteVerify":
        """Verify with the card's pulse-response model: in ``windows`` (sequence of
        (lo_S, hi_S)), in target ± (``tolerance_S`` + ``tolerance_rel``·target), or (neither
        given) in the card's levels."""
        levels = None if windows is None else tuple((float(a), float(b)) for a, b in windows)
        return cls(max_pulses=max_pulses, tolerance_S=tolerance_S, tolerance_rel=tolerance_rel, windows="card",
                   levels=levels, prior_programs=prior_programs, scheme=scheme, step_V=step_V,
                   run_effect=run_effect)

    def __post_init__(self) -> None:
        if self.windows not in ("tolerance", "card"):
            raise SettingError(f"WriteVerify.windows must be 'tolerance' or 'card', got {self.windows!r}")
        if not (self.max_pulses is None and self.windows == "card") and (
                isinstance(self.max_pulses, bool) or not isinstance(self.max_pulses, (int, np.integer))
                or self.max_pulses < 1):
            raise SettingError(f"WriteVerify.max_pulses must be a positive integer, got {self.max_pulses!r}")
        if isinstance(self.run_effect, str) and self.run_effect not in ("mean", "sample"):
            raise SettingError(f"WriteVerify.run_effect must be a number, 'mean' or 'sample', got {self.run_effect!r}")
        if isinstance(self.run_effect, str) and self.windows != "card":
            raise SettingError("WriteVerify.run_effect 'mean' / 'sample' needs windows='card' (WriteVerify.card)")
        for name in ("tolerance_S", "tolerance_rel") + (() if isinstance(self.run_effect, str) else ("run_effect",)):
            v = getattr(self, name)
            if not np.isfinite(v) or (v < 0 and name != "run_effect"):
                raise SettingError(f"WriteVerify.{name} must be finite{' and >= 0' if name != 'run_effect' else ''}, "
                                 f"got {v!r}")
        if self.windows == "tolerance" and self.tolerance_S == 0 and self.tolerance_rel == 0:
            raise SettingError("WriteVerify needs a window: tolerance_S or tolerance_rel must be > 0")
        if self.levels is not None and (self.tolerance_S or self.tolerance_rel):
            raise SettingError("WriteVerify.card: give windows or a tolerance, not both")
        if (isinstance(self.prior_programs, bool) or not isinstance(self.prior_programs, (int, np.integer))
                or self.prior_programs < 0):
            raise SettingError(f"WriteVerify.prior_programs must be a non-negative integer, got {self.prior_programs!r}")

    def pulse_table(self, device: DeviceModel, g_target_S: np.ndarray,
                    campaign: np.random.SeedSequence | None = None) -> PulseTable:
        """``windows = "card"``: the card model's table for these targets (S, shape (n,));
        ``campaign``: the bench's seed, from which ``run_effect="sample"`` draws.

        Raises :class:`~analogmem.errors.DeviceCardError` for a card without a pulse-response
        model and :class:`~analogmem.errors.TargetRangeError` for a target in none of the
        windows, a window outside the card's range, or more than ``MAX_WINDOWS`` windows."""
        pr = device.write_verify
        if not pr.enabled:
            raise DeviceCardError(f"device {device.name!r} has no [write_verify] pulse-response "
                                  "model: use WriteVerify(tolerance_rel=...) windows instead")
        g = np.asarray(g_target_S, dtype=np.float64)
        sample = self.run_effect == "sample"
        if sample and campaign is None:
            raise SettingError("WriteVerify.card(run_effect='sample') draws from a bench's seed: program through "
                               "an EmulatedBench")
        settings = {"prior_programs": int(self.prior_programs), "scheme": self.scheme, "step_V": self.step_V,
                    "run_effect": 0.0 if isinstance(self.run_effect, str) else float(self.run_effect),
                    "max_pulses": self.max_pulses}
        if self.tolerance_S or self.tolerance_rel:
            targets = np.unique(g)
            if targets.size > MAX_WINDOWS:
                raise TargetRangeError(f"{targets.size} distinct targets: target + tolerance verify takes at most "
                                       f"{MAX_WINDOWS} (give windows=... to share windows between targets)")
            lo, hi = self.window(targets)
            wins, lookup = list(zip(np.maximum(lo, 0.0), hi)), list(zip(targets, targets))
        else:
            wins = list(zip(pr.window_lo_S, pr.window_hi_S)) if self.levels is None else list(self.levels)
            lookup = None
        if sample and not pr.shared:
            raise SettingError(f"device {device.name!r} has a per-window {pr.model!r} write-verify model, which has "
                               "no run-to-run effect to sample: use run_effect='mean'")
        if sample:
            from .run_variation import campaign_shifts

            settings["logit_shift"] = campaign_shifts(pr, campaign, [a for a, _ in wins], [b for _, b in wins])[1]
        table = pr.table(wins if self.levels is not None or lookup is not None else None, lookup=lookup, **settings)
        level = table.level_of(g)
        if np.any(level < 0):
            i = int(np.argmax(level < 0))
            where = "given" if self.levels is not None else "card's"
            raise TargetRangeError(
                f"targets[{i}] = {g[i]:g} {device.input_unit} lies in none of the {where} {table.n_levels} verify "
                "windows (see device.write_verify.window_lo_S / window_hi_S, or pass windows=...)")
        return table

    def pulse_budget(self, device: DeviceModel) -> int:
        """The pulse budget on ``device`` (the card's default when ``max_pulses`` is None)."""
        return int(device.write_verify.max_pulses if self.max_pulses is None else self.max_pulses)

    def window(self, g_target_S: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The verify window ``(lo, hi)`` (S) of each target, each shape like ``g_target_S``."""
        g = np.asarray(g_target_S, dtype=np.float64)
        h = self.tolerance_S + self.tolerance_rel * np.abs(g)
        return g - h, g + h


@dataclass(frozen=True)
class ProgramReport:
    """What a ``program`` call did.

    Attributes:
        n_cells: number of cells programmed.
        time_s: bench time (s) at which they were programmed.
        stuck: per programmed cell, 0 healthy, 1 stuck at g_min, 2 stuck at g_max; shape (n_cells,).
        addresses: the cells programmed, shape (n_cells,); None means every cell of the bench.
        pulses: programming pulses spent per cell, shape (n_cells,); None means one pulse
            per cell (a single-shot write without verify).
        success: with write-verify, whether each cell ended inside its window, shape
            (n_cells,); None for a single-shot write.
    """

    n_cells: int
    time_s: float
    stuck: np.ndarray
    addresses: np.ndarray | None = None
    pulses: np.ndarray | None = None
    success: np.ndarray | None = None

    @property
    def n_stuck(self) -> int:
        """Programmed cells that are stuck (their target was not reached)."""
        return int(np.count_nonzero(self.stuck))


@runtime_checkable
class Bench(Protocol):
    """The protocol every bench implements (emulated or real).

    Targets are in the device card's input domain (conductance in S for the published
    cards); reads return conductance in S; times are in seconds.
    """

    n_cells: int

    def program(self, targets: np.ndarray, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program ``targets`` into the cells at ``addresses`` (all cells when None),
        single-shot or with program-and-verify."""
        ...

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S) of ``addresses`` (all cells when None)."""
        ...

    @property
    def time_s(self) -> float:
        """The bench clock (s)."""
        ...

    def wait(self, seconds: float) -> None:
        """Let ``seconds`` pass on the bench clock."""
        ...

    def shutdown(self) -> None:
        """Bring the bench to a safe idle state."""
        ...


def _contiguous_span(addresses: Any, n_cells: int) -> tuple[int, int] | None:
    """``(lo, hi)`` for ``addresses=range(lo, hi)`` (step 1, inside the bench), else None."""
    if not isinstance(addresses, range):
        return None
    if addresses.step != 1 or not 0 <= addresses.start <= addresses.stop <= n_cells:
        raise AddressError(f"addresses {addresses!r} must be a range of step 1 inside [0, {n_cells}]")
    return addresses.start, addresses.stop


def check_read_at(bench: Any, t_s: float, lo: int, hi: int | None, read_index: int) -> tuple[int, int, float,
                                                                                          tuple[int, ...]]:
    """The checks of a counterfactual read (``read_at``) of cells ``lo .. hi-1`` of ``bench``
    (any backend): returns ``(lo, hi, absolute time (s), tag)``, ``tag`` the spawn-key tail
    that names the read (``read_index`` and the bits of ``t_s``) for its random stream."""
    t = check_seconds("t_s", t_s)
    if isinstance(read_index, bool) or not isinstance(read_index, (int, np.integer)) or not \
            0 <= int(read_index) < 2 ** 32:
        raise SettingError(f"read_index must be an integer in [0, 2**32), got {read_index!r}")
    hi = bench.n_cells if hi is None else int(hi)
    lo = int(lo)
    if not 0 <= lo <= hi <= bench.n_cells:
        raise AddressError(f"cells {lo}..{hi - 1} are outside [0, {bench.n_cells - 1}]")
    when = check_clock(bench._last_program_s + t, f"read_at(t_s={t:g})")
    tb = int(np.float64(t).view(np.uint64))
    return lo, hi, when, (0x52454144, int(read_index), tb >> 32, tb & 0xFFFFFFFF)


def _pieces(lo0: int, m: int, step: int) -> Iterator[tuple[int, int]]:
    """Op-local ranges ``(a, b)`` covering ``0 .. m-1`` whose cells ``lo0 + a .. lo0 + b - 1``
    end on multiples of ``step`` (the file chunks: each piece inside the span fills whole
    checksum chunks, only the span's two ends fill part of one)."""
    a = 0
    while a < m:
        b = min(m, (lo0 + a) // step * step + step - lo0)
        yield a, b
        a = b


@dataclass(frozen=True)
class ChunkedTargets:
    """Programming targets made chunk by chunk, for chips larger than memory:
    ``fn(lo, hi)`` returns the targets of cells ``lo .. hi-1`` (1-D, ``hi - lo`` values, in
    the card's input domain) and must return the same values every time it is called.
    :meth:`EmulatedBench.program` calls it twice per chunk (a validation pass over every
    chunk before any cell changes, then the programming pass) — once with ``prechecked``:
    the producer guarantees finite targets inside the card's input range (the storage
    encoders clip every target into it), so only the programming pass runs; each chunk is
    still checked as it is programmed, and one that fails raises (the bench is then left
    unusable until programmed again, as after any failed program)."""

    n: int
    fn: Callable[[int, int], np.ndarray]
    prechecked: bool = False

    def __len__(self) -> int:
        return self.n


class EmulatedBench:
    """An emulated array of ``n_cells`` cells of one device technology.

    Args:
        device: a :class:`~analogmem.emulator.cells.DeviceModel`, a bundled card name or a card path.
        n_cells: number of cells in the array.
        seed: randomness (None, int, SeedSequence, Generator); the same seed and the same
            sequence of calls give bit-identical results, whatever ``n_threads``, and whether
            the state lives in memory or in ``state_dir``.
        n_threads: kernel threads (default: the cores this process may use).
        backend: ``"cython"`` (compiled kernels, the default) or ``"numpy"`` (the plain
            reference implementation, slow, for checking: the same results to 1e-12 for
            float64 state; for float32 state the float64 model rounded, the same
            distribution but not the same draws as the float32 kernels). ``"torch"`` is
            deprecated here: it still makes a
            :class:`~analogmem.emulator.torch_bench.TorchBench` (which is not an
            EmulatedBench), with a DeprecationWarning; use
            :func:`~analogmem.emulator.factory.make_bench` (``backend="torch"``).
        dtype: ``"float64"`` (default) or ``"float32"``: the per-cell state and what
            ``read`` returns. float32 halves the memory and the bytes every program and read
            moves, and computes single-shot programs of polynomial cards and all reads in
            float32 with 32-bit random draws (about twice as fast; normals reach 6.7 σ
            instead of 8.6 σ); program-and-verify and empirical channels compute in double.
        state_dir: keep the per-cell state in files under this (new or empty) directory
            instead of memory, and stream program and read through it in chunks (resident
            memory: a few chunks, whatever ``n_cells``); :meth:`open` reopens it later.
        durable: with ``state_dir``, fsync the state files before a program is marked
            complete (survives a power loss; a crashed process is detected either way).
        direct_io: with ``state_dir``: None (default) streams whole-chip passes with direct
            I/O where the file system supports it (a chip larger than memory cannot live in
            the page cache; see :mod:`~analogmem.emulator.chipstate`), False through the
            page cache (faster for a chip that fits in memory and is read many times), True
            requires direct I/O. The values are the same bits either way.

    Nothing per cell is allocated when the bench is made: state arrays appear on the first
    program (or read), and only those the card uses (:attr:`bytes_per_cell`). Cells start
    unprogrammed at ``g_min_S``. Stuck-at faults (the card's ``p_stuck_low``/``p_stuck_high``)
    are a pure function of a fault key drawn when the bench is made and of each cell's
    address, so they last for the array's life without being stored (:attr:`stuck`). The
    clock starts at 0 s; ``program`` stamps cells with the current time; ``read(t_s)`` reads
    ``t_s`` seconds after the most recent ``program`` call (and moves the clock there if
    that is later); ``wait`` advances the clock.
    """

    def __new__(cls, *args: Any, backend: str = "cython", **kwargs: Any):
        if backend == "torch":  # another class (its __init__ takes the arguments; ours is not run)
            warnings.warn("EmulatedBench(..., backend='torch') is deprecated: it returns a TorchBench, which is not "
                          "an EmulatedBench; use analogmem.emulator.make_bench(..., backend='torch')", DeprecationWarning,
                          stacklevel=2)
            return _DEPRECATED_BACKENDS["torch"](*args, **kwargs)
        return super().__new__(cls)

    def __init__(self, device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *,
                 n_threads: int | None = None, backend: str = "cython", dtype: Any = "float64",
                 state_dir: str | os.PathLike | None = None, durable: bool = False,
                 direct_io: bool | None = None):
        self._setup(load_device(device), n_cells, n_threads, backend, dtype, in_memory=state_dir is None)
        self._seed = as_seed_sequence(seed)
        # the first child of the seed keys the stuck-at faults (drawn per address on demand)
        self._fault_key = op_key(self._seed.spawn(1)[0])
        self._params = _kernels.KernelParams(self._card, self._fault_key)
        self.durable = bool(durable)
        if state_dir is None:
            self._cells: RamArrays | FileArrays = RamArrays(self.n_cells)
        else:
            self._cells = FileArrays.create(state_dir, self.n_cells, {"bench": self._header()},
                                            self.device.card_text, direct_io=direct_io,
                                            expected_bytes=self.n_cells * self.bytes_per_cell)

    def _setup(self, device: DeviceModel, n_cells: int, n_threads: int | None, backend: str, dtype: Any,
               in_memory: bool = True) -> None:
        self.device = device
        if backend not in _BACKENDS:
            raise SettingError(f"backend must be one of {_BACKENDS}, got {backend!r}")
        if n_threads is not None and (not isinstance(n_threads, (int, np.integer)) or n_threads < 1):
            raise SettingError(f"n_threads must be a positive integer or None, got {n_threads!r}")
        try:
            dt = np.dtype(dtype)
        except TypeError:
            dt = None
        if dt is None or dt not in _DTYPES:
            raise SettingError(f"dtype must be 'float64' or 'float32', got {dtype!r}")
        # in memory: the state arrays and one read's output must fit; in files only the count is checked
        per_cell = bytes_per_cell(device, dt) + dt.itemsize if in_memory else 0
        self.n_cells = check_n_cells(n_cells, bytes_per_cell=per_cell)
        self.backend = backend
        self.dtype = dt
        self.n_threads = int(n_threads) if n_threads is not None else default_threads()
        self._card = card_params(self.device)  # checks the card against the kernels' table sizes
        self._keys = self._card.state_keys
        self._time_s = 0.0
        self._last_program_s = 0.0
        # programming time: one scalar while every cell shares it, else the array "t_prog_s"
        self._uniform_t_prog = 0.0
        self._programmed = False
        #: why the cells are unusable (a program or restore that failed part-way), else None
        self._broken: str | None = None
        self.read_only = False

    @classmethod
    def open(cls, state_dir: str | os.PathLike, *, n_threads: int | None = None, backend: str = "cython",
             durable: bool = False, direct_io: bool | None = None, read_only: bool = False) -> "EmulatedBench":
        """Reopen a chip made with ``state_dir``: its card, cells, clock and random state, so
        it continues exactly as the original would have. The directory stays locked until
        :meth:`close` (or the bench is garbage-collected): another bench opening it gets
        :class:`~analogmem.errors.StorageError` naming this process.

        With ``read_only=True`` the chip is only read (on read-only media too): nothing in
        the directory is written — reads and waits move this bench's clock and random state
        in memory only, so the chip on disk stays as it was — ``program`` and
        ``restore_state`` are refused, and any number of read-only benches may share it
        (none while a writer holds it).

        Raises :class:`~analogmem.errors.StorageError` for anything but a clean chip
        directory — in particular one whose last program was interrupted (a crash or kill
        mid-write), a header or state chunk that does not match its checksum, or a header
        whose fields are malformed. ``durable`` and ``direct_io`` are as in the constructor
        (they are not stored)."""
        cells, card_text = FileArrays.open(state_dir, direct_io=direct_io, read_only=read_only)
        try:
            return cls._from_cells(cells, card_text, state_dir, n_threads, backend, durable, read_only)
        except BaseException:
            cells.close()
            raise

    @classmethod
    def _from_cells(cls, cells: FileArrays, card_text: str, state_dir: Any, n_threads: int | None, backend: str,
                    durable: bool, read_only: bool) -> "EmulatedBench":
        meta = cells.header.get("bench")
        where = f"chip {str(state_dir)!r}"
        if not isinstance(meta, dict):
            raise StorageError(f"{where}: header has no bench section")
        try:
            device = parse_card(card_text, label=f"{meta['device']['name']} (from {state_dir})")
            self = cls.__new__(cls)
            if meta["dtype"] not in ("float64", "float32"):
                raise StorageError(f"{where}: malformed header (dtype {meta['dtype']!r} is not float64 or float32)")
            self._setup(device, cells.n, n_threads, backend, meta["dtype"], in_memory=False)
            self._seed = seed_from_state(meta["seed"])
            key = meta["fault_key"]
            if not isinstance(key, list) or len(key) != 3 or not all(
                    isinstance(k, int) and not isinstance(k, bool) and 0 <= k < 2 ** 64 for k in key):
                raise StorageError(f"{where}: malformed header "
                                   f"(fault_key must be three integers in [0, 2**64), got {key!r})")
            self._fault_key = tuple(key)
            clock = meta["clock"]
            for name in ("time_s", "last_program_s", "uniform_t_prog"):
                v = clock[name]
                if isinstance(v, bool) or not isinstance(v, (int, float)) or not np.isfinite(v) or v < 0:
                    raise StorageError(f"{where}: malformed header "
                                       f"(clock.{name} must be a finite number >= 0 s, got {v!r})")
            self._time_s = float(clock["time_s"])
            self._last_program_s = float(clock["last_program_s"])
            self._uniform_t_prog = float(clock["uniform_t_prog"])
            if not self._last_program_s <= self._time_s or not self._uniform_t_prog <= self._time_s:
                raise StorageError(f"{where}: malformed header (clock {clock} has a program after the current time)")
            if not isinstance(meta["programmed"], bool):
                raise StorageError(f"{where}: malformed header "
                                   f"(programmed must be true or false, got {meta['programmed']!r})")
            self._programmed = meta["programmed"]
        except (KeyError, TypeError, ValueError, AttributeError, OverflowError, DeviceCardError) as exc:
            raise StorageError(f"{where}: malformed header ({type(exc).__name__}: {exc})") from None
        for name in cells.header["arrays"]:
            want = np.dtype(np.float64) if name == "t_prog_s" else np.dtype(np.int8) if name == "stuck" else self.dtype
            if cells.dtype(name) != want:
                raise StorageError(f"{where}: {name}.bin is {cells.dtype(name)} but the bench's dtype is "
                                   f"{self.dtype} (header dtype and arrays disagree)")
        self._params = _kernels.KernelParams(self._card, self._fault_key)
        self.durable = bool(durable)
        self.read_only = bool(read_only)
        self._cells = cells
        if self._programmed and not all(cells.has(k) for k in self._keys):
            raise StorageError(f"{where}: state files {self._keys} are incomplete")
        return self

    def close(self) -> None:
        """Finish pending file I/O and release the chip directory's lock (a file-backed
        bench; nothing to do in memory). The bench must not be used afterwards."""
        if isinstance(self._cells, FileArrays):
            self._cells.close()
            self._broken = self._broken or "closed"

    def _header(self, spawned: int = 0) -> dict[str, Any]:
        """The bench section of a chip header; ``spawned``: children the seed is about to
        spawn (recorded before they are, so a failed save leaves the seed untouched)."""
        seed = seed_state(self._seed)
        seed["n_children_spawned"] += spawned
        return {"device": {"name": self.device.name, "card_sha256": self.device.card_sha256},
                "dtype": self.dtype.name, "seed": seed, "fault_key": list(self._fault_key),
                "clock": {"time_s": self._time_s, "last_program_s": self._last_program_s,
                          "uniform_t_prog": self._uniform_t_prog},
                "programmed": self._programmed, "units": {"time_s": "s", "g_prog": "S", "g_eff": "S"}}

    def _save_header(self, spawned: int = 0) -> None:
        """File-backed chips: record clock and random state after every operation (not
        when opened read-only)."""
        if isinstance(self._cells, FileArrays) and not self.read_only:
            self._cells.header["bench"] = self._header(spawned)
            self._cells.save_header()

    def _clock_change(self, time_s: float) -> None:
        """Move the clock to ``time_s`` and record it; if the record fails (a full disk), the
        clock goes back to where it was."""
        saved = self._time_s
        self._time_s = time_s
        try:
            self._save_header()
        except BaseException:
            self._time_s = saved
            raise

    def _snapshot_clock(self) -> float:
        return self._time_s

    def _restore_clock(self, saved: float) -> None:
        self._time_s = saved

    def _check_usable(self, what: str) -> None:
        """Refuse to read or partially program cells a failed operation left half-written."""
        if self._broken == "closed":
            raise StorageError(f"this bench was closed: {what} is refused (reopen the chip with EmulatedBench.open)")
        if self._broken is not None:
            raise StorageError(
                f"this bench's {self._broken} failed or was interrupted part-way: its cells are half-programmed, so "
                f"{what} is refused until a program of every cell (addresses=None) succeeds")

    def _check_writable(self, what: str) -> None:
        if self.read_only:
            raise StorageError(f"chip {str(self.state_dir)!r} is open read-only: {what} is refused "
                               "(reopen it with EmulatedBench.open(path) to write)")

    # ------------------------------------------------------------------ properties
    @property
    def state_dir(self) -> Path | None:
        """The directory holding the per-cell state (None: in memory)."""
        return self._cells.path if isinstance(self._cells, FileArrays) else None

    @property
    def bytes_per_cell(self) -> int:
        """Bytes of per-cell state of a programmed chip (the card's arrays × dtype size;
        plus 8 once cells were programmed at different times)."""
        return bytes_per_cell(self.device, self.dtype)

    @property
    def state_nbytes(self) -> int:
        """Bytes of per-cell state held in memory now (0 for a new bench, or one on disk)."""
        return self._cells.nbytes

    @property
    def stuck(self) -> np.ndarray:
        """Stuck-at state of every cell (int8: 0 healthy, 1 at g_min, 2 at g_max), computed
        from the fault key (nothing is stored); shape (n_cells,)."""
        st = self._stuck_range(0, self.n_cells)
        return np.zeros(self.n_cells, dtype=np.int8) if st is None else st

    # ------------------------------------------------------------------ helpers
    def _stuck_range(self, lo: int, hi: int) -> np.ndarray | None:
        """Stuck states of cells lo..hi-1; None when every cell is healthy."""
        if self._cells.has("stuck"):
            return self._cells.load(("stuck",), lo, hi)["stuck"].copy()
        if not self._card.faults_on:
            return None
        if self.backend == "numpy":
            f = self.device.faults
            return stuck_states(self._fault_key, f.p_stuck_low, f.p_stuck_high, np.arange(lo, hi))
        return _kernels.stuck(self._params, lo, hi - lo, None, self.n_threads)

    def _stuck_at(self, addr: np.ndarray) -> np.ndarray | None:
        if self._cells.has("stuck"):
            return self._cells.gather(("stuck",), addr)["stuck"]
        if not self._card.faults_on:
            return None
        if self.backend == "numpy":
            f = self.device.faults
            return stuck_states(self._fault_key, f.p_stuck_low, f.p_stuck_high, addr)
        return _kernels.stuck(self._params, 0, 0, np.ascontiguousarray(addr, dtype=np.int64), self.n_threads)

    def _unprogrammed(self, stuck: np.ndarray | None, n: int) -> dict[str, np.ndarray]:
        """The state of cells never programmed (at g_min_S; stuck cells at their stuck value)."""
        r = self.device.range
        g0 = np.full(n, r.g_min_S) if stuck is None else np.where(stuck == 2, r.g_max_S, r.g_min_S)
        full = {"g_eff": np.full(n, self.device.input_range[0]) if self.device.empirical else g0,
                "g_prog": g0, "nu": np.zeros(n), "z_relax": np.zeros(n), "q_read": self.device.read_noise_q(g0)}
        return {k: full[k].astype(self.dtype) for k in self._keys}

    def _load(self, lo: int, hi: int) -> dict[str, np.ndarray]:
        if self._programmed:
            return self._cells.load(self._keys, lo, hi)
        return self._unprogrammed(self._stuck_range(lo, hi), hi - lo)

    def _materialise(self) -> None:
        """Write the unprogrammed state of every cell (before a first partial program): one
        value per array (the healthy cell's), then the stuck cells' values where there are any."""
        healthy = self._unprogrammed(None, 1)
        for lo, hi in self._cells.ranges():
            buf = self._cells.for_write({k: self.dtype for k in self._keys}, lo, hi)
            for k, v in healthy.items():
                buf[k].fill(v[0])
            st = self._stuck_range(lo, hi)
            if st is not None and np.any(st):
                idx = np.flatnonzero(st)
                for k, v in self._unprogrammed(st[idx], idx.size).items():
                    buf[k][idx] = v
            self._cells.commit(lo, buf)
        self._programmed = True

    def _stamp_needed(self, now: float) -> bool:
        """Before a partial program at ``now``: whether its cells need a per-cell programming
        time (the array ``t_prog_s``, 8 B per cell, written once on the first partial program
        at a time that differs from the one all cells share); False while every cell still
        shares ``now``."""
        if self._cells.has("t_prog_s"):
            return True
        if now == self._uniform_t_prog:
            return False
        self._write_full("t_prog_s", np.float64, self._uniform_t_prog)
        return True

    def _program_span(self, targets: Any, span: tuple[int, int], verify: WriteVerify | None) -> ProgramReport:
        """:meth:`program` of the contiguous cells ``span = (lo, hi)`` (``addresses=range(lo, hi)``):
        streamed chunk by chunk into the state, with no address array and no copy of the
        targets. The same values as ``addresses=np.arange(lo, hi)``."""
        lo0, hi0 = span
        m = hi0 - lo0
        if isinstance(targets, ChunkedTargets):
            if targets.n != m:
                raise TargetRangeError(f"ChunkedTargets for cells {lo0}..{hi0 - 1} need n = {m}, got n = {targets.n}")
            step = FileArrays.CHUNK_CELLS

            def chunk(lo: int, hi: int) -> tuple[np.ndarray, PulseTable | None]:
                try:
                    g = self._check_targets(targets.fn(lo, hi), hi - lo)
                    return g, self._check_verify(g, verify)
                except TargetRangeError as exc:
                    raise TargetRangeError(f"chunked targets, cells {lo0 + lo}..{lo0 + hi - 1}: {exc}") from None

            if not targets.prechecked:
                for a, b in _pieces(lo0, m, step):
                    chunk(a, b)
        else:
            g_all = self._check_targets(targets, m)
            table_all = self._check_verify(g_all, verify)
            step = FileArrays.CHUNK_CELLS if isinstance(self._cells, FileArrays) else max(m, 1)

            def chunk(lo: int, hi: int) -> tuple[np.ndarray, PulseTable | None]:
                return g_all[lo:hi], table_all
        now = self._time_s
        key = op_key(self._op_seed())
        pulses = np.zeros(m, dtype=np.int32) if verify is not None else None
        success = np.zeros(m, dtype=np.int8) if verify is not None else None
        stuck_report = np.zeros(m, dtype=np.int8)
        names = {k: self.dtype for k in self._keys}
        on_disk = isinstance(self._cells, FileArrays)
        if on_disk:  # the chunks written in part (the span's ends) are checked before anything changes
            self._cells.verify_at(self._keys + ("t_prog_s", "stuck"), np.array([lo0, hi0 - 1]))
            self._cells.begin_write("program")
        self._broken = "program"
        if not self._programmed:
            self._materialise()
        for a, b in _pieces(lo0, m, step):
            buf = self._cells.for_write(names, lo0 + a, lo0 + b)
            st = self._stuck_range(lo0 + a, lo0 + b)
            self._run_program(*chunk(a, b), st, key, a, verify, buf,
                              *((pulses[a:b], success[a:b]) if verify is not None else ()))
            self._cells.commit(lo0 + a, buf)
            if st is not None:
                stuck_report[a:b] = st
        if self._stamp_needed(now):
            for a, b in _pieces(lo0, m, step):
                buf = self._cells.for_write({"t_prog_s": np.dtype(np.float64)}, lo0 + a, lo0 + b)
                buf["t_prog_s"].fill(now)
                self._cells.commit(lo0 + a, buf)
        self._cells.flush()
        self._broken = None
        self._last_program_s = now
        if on_disk:
            self._cells.header["bench"] = self._header()
            self._cells.end_write(self.durable)
        return ProgramReport(n_cells=m, time_s=now, stuck=stuck_report, addresses=np.arange(lo0, hi0),
                             pulses=pulses, success=success.astype(bool) if success is not None else None)

    def _write_full(self, name: str, dtype: Any, values: np.ndarray | float) -> None:
        """Write one whole per-cell array (an array of n_cells, or one value for all)."""
        for lo, hi in self._cells.ranges():
            buf = self._cells.for_write({name: np.dtype(dtype)}, lo, hi)
            buf[name][...] = values if np.ndim(values) == 0 else values[lo:hi]
            self._cells.commit(lo, buf)

    def _addresses(self, addresses: Any) -> np.ndarray | None:
        return check_addresses(addresses, self.n_cells)

    def _check_targets(self, targets: Any, n_expected: int) -> np.ndarray:
        return check_targets(targets, n_expected, self.device)

    def _check_verify(self, g_t: np.ndarray, verify: WriteVerify | None) -> PulseTable | None:
        """Check the verify settings for targets ``g_t``; returns the pulse-response table
        of a ``WriteVerify.card`` call (None otherwise)."""
        if verify is None:
            return None
        if not isinstance(verify, WriteVerify):
            raise SettingTypeError(f"verify must be a WriteVerify, got {type(verify).__name__}")
        if verify.windows == "card":
            return verify.pulse_table(self.device, g_t, campaign=self._seed)
        if self.device.input != "conductance":
            raise DeviceCardError(
                f"device {self.device.name!r} takes {self.device.input} targets: write-verify needs a "
                "conductance window per cell, which only conductance-input cards define")
        return None

    def _targets(self, targets: Any, addr: np.ndarray | None, verify: WriteVerify | None
                 ) -> tuple[int, Callable[[int, int], tuple[np.ndarray, PulseTable | None]]]:
        """Validate every target (before any cell changes); returns the count and a
        function giving the validated targets of op-local positions lo..hi-1 and their
        pulse-response table (``WriteVerify.card``; None otherwise)."""
        if not isinstance(targets, ChunkedTargets):
            g_t = self._check_targets(targets, self.n_cells if addr is None else addr.shape[0])
            table = self._check_verify(g_t, verify)
            return g_t.shape[0], lambda lo, hi: (g_t[lo:hi], table)
        if addr is not None or targets.n != self.n_cells:
            raise TargetRangeError(f"ChunkedTargets program every cell: need n = {self.n_cells} and no addresses, "
                                   f"got n = {targets.n}" + (" with addresses" if addr is not None else ""))

        def chunk(lo: int, hi: int) -> tuple[np.ndarray, PulseTable | None]:
            # a table per chunk: a target's row depends only on its own window, so the draws
            # are those of one table over all targets
            try:
                g = self._check_targets(targets.fn(lo, hi), hi - lo)
                table = self._check_verify(g, verify)
            except TargetRangeError as exc:
                raise TargetRangeError(f"chunked targets, cells {lo}..{hi - 1}: {exc}") from None
            return g, table

        if not targets.prechecked:
            for lo, hi in self._cells.ranges(FileArrays.CHUNK_CELLS):
                chunk(lo, hi)
        return self.n_cells, chunk

    def _op_seed(self) -> np.random.SeedSequence:
        """A fresh child seed for one operation (program or read)."""
        return self._seed.spawn(1)[0]

    # ------------------------------------------------------------------ protocol
    @property
    def time_s(self) -> float:
        """The emulated clock (s)."""
        return self._time_s

    def wait(self, seconds: float) -> None:
        """Advance the emulated clock by ``seconds`` (≥ 0; may be years)."""
        self._clock_change(check_clock(self._time_s + check_seconds("seconds", seconds), f"wait({seconds:g})"))

    def bake(self, seconds: float, temperature_K: float) -> float:
        """Emulate ``seconds`` at ``temperature_K``: with the card's Arrhenius retention
        model the clock advances by the equivalent time at the card's reference
        temperature. Returns that equivalent time (s). Raises
        :class:`~analogmem.errors.DeviceCardError` if the card has no retention model."""
        rt = self.device.retention
        if not rt.enabled:
            raise DeviceCardError(f"device {self.device.name!r} has no [retention] model: it cannot emulate "
                                  "a bake (fit one with analogmem.calibrate.fit_arrhenius)")
        t, temp = check_seconds("seconds", seconds), check_temperature_K(temperature_K)
        equivalent = t * float(rt.acceleration_factor(temp))
        self._clock_change(check_clock(self._time_s + equivalent, f"bake({t:g} s at {temp:g} K)"))
        return equivalent

    def program(self, targets: np.ndarray | ChunkedTargets, addresses: np.ndarray | None = None,
                verify: WriteVerify | None = None) -> ProgramReport:
        """Program cells to ``targets`` (in the card's input domain: S for the published cards).

        Args:
            targets: shape (n_cells,) when ``addresses`` is None, else (len(addresses),); or
                a :class:`ChunkedTargets` (every cell, made chunk by chunk: chips larger
                than memory).
            addresses: distinct cell indices in ``[0, n_cells)``, or ``range(lo, hi)``
                (contiguous cells, streamed chunk by chunk with no address array: the same
                values as ``np.arange(lo, hi)``); None means every cell.
            verify: program-and-verify settings; None writes each cell with one pulse. With
                verify, each pulse re-draws the cell from the card's write channel and the
                cell is read right after it (with the card's read noise) until the read lies
                in the window or ``verify.max_pulses`` pulses were spent; the report gives
                pulses and success per cell.

        Raises :class:`~analogmem.errors.TargetRangeError` / :class:`~analogmem.errors.AddressError`
        before touching any cell if an input is invalid; the bench is then unchanged.
        """
        self._check_writable("program")
        if self._broken == "closed":
            self._check_usable("program")
        span = _contiguous_span(addresses, self.n_cells)
        if span is not None and span != (0, self.n_cells):
            self._check_usable("a program of some cells")
            return self._program_span(targets, span, verify)
        addr = None if span is not None else self._addresses(addresses)
        if addr is not None:
            self._check_usable("a program of some cells")
        m, chunk = self._targets(targets, addr, verify)
        now = self._time_s
        key = op_key(self._op_seed())
        pulses = np.zeros(m, dtype=np.int32) if verify is not None else None
        success = np.zeros(m, dtype=np.int8) if verify is not None else None
        names = {k: self.dtype for k in self._keys}
        on_disk = isinstance(self._cells, FileArrays)
        if addr is not None:  # a few cells: computed before anything is written
            st = self._stuck_at(addr)
            stuck_report = np.zeros(m, dtype=np.int8) if st is None else st
            values = {k: np.empty(m, dtype=self.dtype) for k in self._keys}
            self._run_program(*chunk(0, m), st, key, 0, verify, values,
                              *((pulses, success) if verify is not None else ()))
            if on_disk:  # the chunks about to change are checked before anything does
                self._cells.verify_at(self._keys + ("t_prog_s", "stuck"), addr)
        if on_disk:
            self._cells.begin_write("program")
        self._broken = "program"  # until every cell is written (a failure or Ctrl-C leaves it so)
        if addr is None:
            stuck_report = np.zeros(m, dtype=np.int8)  # calloc: untouched pages cost nothing
            # chunked targets are made (and used) a chunk at a time, in memory as on disk
            streamed = FileArrays.CHUNK_CELLS if isinstance(targets, ChunkedTargets) else None
            for lo, hi in self._cells.ranges(streamed):
                buf = self._cells.for_write(names, lo, hi)
                st = self._stuck_range(lo, hi)
                self._run_program(*chunk(lo, hi), st, key, lo, verify, buf,
                                  *((pulses[lo:hi], success[lo:hi]) if verify is not None else ()))
                self._cells.commit(lo, buf)
                if st is not None:
                    stuck_report[lo:hi] = st
            self._cells.drop("t_prog_s")
            self._uniform_t_prog = now
            self._programmed = True
        else:
            if not self._programmed:
                self._materialise()
            self._cells.scatter(addr, values)
            if self._stamp_needed(now):
                self._cells.scatter(addr, {"t_prog_s": np.full(m, now)})
        self._broken = None
        self._last_program_s = now
        if on_disk:
            self._cells.header["bench"] = self._header()
            self._cells.end_write(self.durable)
        return ProgramReport(n_cells=m, time_s=now, stuck=stuck_report, addresses=addr, pulses=pulses,
                             success=success.astype(bool) if success is not None else None)

    def _begin_read(self, t_s: float | None) -> tuple[float, tuple[int, int, int], float]:
        """The time and key of a read, moving the clock in memory; the caller records it
        with :meth:`_end_read` once the read succeeded, or restores the clock ``saved`` (the
        third value) if anything failed: a read that raises leaves clock and random state as
        they were (the key is the seed's next child, spawned only by :meth:`_end_read`)."""
        self._check_usable("read")
        when = check_read_time(t_s, self._last_program_s, self._time_s)
        saved = self._snapshot_clock()
        ss = self._seed
        key = op_key(np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (ss.n_children_spawned,),
                                            pool_size=ss.pool_size))
        self._time_s = when
        return when, key, saved

    def _end_read(self) -> None:
        """Record a read that succeeded: the header (with the seed's next child counted)
        first, then the seed spawns that child."""
        self._save_header(spawned=1)
        self._seed.spawn(1)

    def _read_range(self, lo: int, hi: int, when: float, key: tuple[int, int, int], out: np.ndarray,
                    first: int | None = None) -> None:
        if self._cells.has("t_prog_s"):
            age = np.maximum(when - self._cells.load(("t_prog_s",), lo, hi)["t_prog_s"], 0.0)
        else:
            age = np.array([max(when - self._uniform_t_prog, 0.0)])
        self._run_read(self._load(lo, hi), age, key, lo if first is None else first, out)

    def read(self, t_s: float | None = None, addresses: np.ndarray | None = None) -> np.ndarray:
        """Read conductances (S).

        Args:
            t_s: seconds after the most recent ``program`` call at which to read (the clock
                moves there if that is later than now); None reads at the current clock.
            addresses: cell indices to read, or ``range(lo, hi)`` (contiguous cells, streamed
                without an address array: the same values as ``np.arange(lo, hi)``); None
                reads every cell.

        Returns:
            array of the bench's ``dtype`` (float64 unless made with ``dtype="float32"``),
            shape (n_cells,) or (len(addresses),). Drift and relaxation of a cell are
            consistent across reads; read noise is fresh at every read.
        """
        span = _contiguous_span(addresses, self.n_cells)
        addr = None if span is not None else self._addresses(addresses)
        when, key, saved = self._begin_read(t_s)
        try:
            out = self._read_cells(when, key, span, addr)
            self._end_read()
        except BaseException:
            self._restore_clock(saved)
            raise
        return out

    def _read_cells(self, when: float, key: tuple[int, int, int], span: tuple[int, int] | None,
                    addr: np.ndarray | None) -> np.ndarray:
        if span is not None:  # contiguous cells: streamed, counters as for np.arange(lo, hi)
            lo0, hi0 = span
            out = np.empty(hi0 - lo0, dtype=self.dtype)
            step = FileArrays.CHUNK_CELLS if isinstance(self._cells, FileArrays) else max(hi0 - lo0, 1)
            for a in range(lo0, hi0, step):
                b = min(hi0, a + step)
                self._read_range(a, b, when, key, out[a - lo0:b - lo0], first=a - lo0)
            return out
        if addr is None:
            out = np.empty(self.n_cells, dtype=self.dtype)
            for lo, hi in self._cells.ranges():
                self._read_range(lo, hi, when, key, out[lo:hi])
            return out
        m = addr.shape[0]
        state = self._cells.gather(self._keys, addr) if self._programmed else \
            self._unprogrammed(self._stuck_at(addr), m)
        if self._cells.has("t_prog_s"):
            age = np.maximum(when - self._cells.gather(("t_prog_s",), addr)["t_prog_s"], 0.0)
        else:
            age = np.array([max(when - self._uniform_t_prog, 0.0)])
        out = np.empty(m, dtype=self.dtype)
        if m:
            self._run_read(state, age, key, 0, out)
        return out

    def read_at(self, t_s: float, lo: int = 0, hi: int | None = None, *, read_index: int = 0,
                out: np.ndarray | None = None) -> np.ndarray:
        """A read of cells ``lo .. hi-1`` (S, the bench's dtype) ``t_s`` seconds after the most
        recent ``program`` call that neither moves the clock nor draws from the bench's
        random state: a *counterfactual* read, for models whose weights are asked for at any
        time in any order (:class:`~analogmem.storage.analog_model.AnalogModel`).

        Each cell's programmed state (drift exponent, relaxation latent) is the one drawn at
        programming, exactly as :meth:`read` uses it; the read noise is a pure function of the
        bench seed, the cell, ``t_s`` and ``read_index`` (an integer ≥ 0: another index gives
        fresh read noise at the same time). So ``read_at(t)`` gives the same bits whenever it is
        called, in whatever order with other reads, and its values are distributed exactly as
        a :meth:`read` at the same ``t_s``. A real bench cannot do this (its clock only goes
        forward), which is why :meth:`read` keeps the forward-only clock."""
        self._check_usable("read_at")
        lo, hi, when, tag = check_read_at(self, t_s, lo, hi, read_index)
        key = op_key(np.random.SeedSequence(self._seed.entropy, spawn_key=tuple(self._seed.spawn_key) + tag))
        if out is None:
            out = np.empty(hi - lo, dtype=self.dtype)
        elif out.shape != (hi - lo,) or out.dtype != self.dtype:
            raise SettingError(f"out must have shape ({hi - lo},) and dtype {self.dtype}, got {out.shape} {out.dtype}")
        step = FileArrays.CHUNK_CELLS if isinstance(self._cells, FileArrays) else max(hi - lo, 1)
        for a in range(lo, hi, step):
            b = min(hi, a + step)
            self._read_range(a, b, when, key, out[a - lo:b - lo], first=a)
        return out

    def read_chunks(self, t_s: float | None = None, chunk_cells: int = 1 << 22) -> Iterator[tuple[int, np.ndarray]]:
        """Read every cell, one chunk at a time (chips larger than memory): yields
        ``(first_cell, values)`` with ``values`` (S, the bench's dtype) of cells
        ``first_cell .. first_cell + len(values) - 1``. One read operation: the chunks
        joined equal what ``read(t_s)`` would have returned. The clock and random state
        move when this is called; consume the chunks before the next program."""
        if isinstance(chunk_cells, bool) or not isinstance(chunk_cells, (int, np.integer)) or chunk_cells < 1:
            raise SettingError(f"chunk_cells must be a positive integer, got {chunk_cells!r}")
        when, key, saved = self._begin_read(t_s)
        try:
            self._end_read()
        except BaseException:
            self._restore_clock(saved)
            raise

        def chunks() -> Iterator[tuple[int, np.ndarray]]:
            for lo in range(0, self.n_cells, int(chunk_cells)):
                hi = min(self.n_cells, lo + int(chunk_cells))
                out = np.empty(hi - lo, dtype=self.dtype)
                self._read_range(lo, hi, when, key, out)
                yield lo, out

        return chunks()

    def shutdown(self) -> None:
        """Nothing to make safe on an emulator; present for the :class:`Bench` protocol."""

    def __enter__(self) -> "EmulatedBench":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.shutdown()
        self.close()

    # ------------------------------------------------------------------ state access
    def cell_state(self) -> dict[str, np.ndarray]:
        """Copies of the per-cell state, each shape (n_cells,): the arrays the card uses
        (of the bench's dtype; see :func:`~analogmem.emulator.chipstate.state_keys`) among
        ``g_eff`` (S, effective target: only cards with relaxation), ``g_prog`` (S,
        programmed conductance), ``nu`` (drift exponent: cards with drift), ``z_relax``
        (relaxation latent) and ``q_read`` (read-noise factor Q_s: cards with read noise);
        plus ``t_prog_s`` (programming time, s, float64) and ``stuck`` (int8 0/1/2)."""
        self._check_usable("cell_state")
        out = {k: np.empty(self.n_cells, dtype=self.dtype) for k in self._keys}
        for lo, hi in self._cells.ranges():
            for k, v in self._load(lo, hi).items():
                out[k][lo:hi] = v
        if self._cells.has("t_prog_s"):
            t_prog = np.concatenate([self._cells.load(("t_prog_s",), lo, hi)["t_prog_s"].copy()
                                     for lo, hi in self._cells.ranges()])
        else:
            t_prog = np.full(self.n_cells, self._uniform_t_prog)
        out.update(t_prog_s=t_prog, stuck=self.stuck)
        return out

    @property
    def seed_sequence(self) -> np.random.SeedSequence:
        """The bench's root :class:`~numpy.random.SeedSequence`; each operation spawns one
        child, so ``(entropy, spawn_key, n_children_spawned)`` pin its random state."""
        return self._seed

    def restore_state(self, cell_state: dict[str, np.ndarray], *, time_s: float,
                      seed: np.random.SeedSequence) -> None:
        """Restore a chip saved with :meth:`cell_state` (the card's state arrays plus
        ``t_prog_s`` and ``stuck``, each shape (n_cells,); other keys are ignored, so a
        state with all five arrays restores on any card), with its clock ``time_s`` and
        random state ``seed`` (a SeedSequence whose ``n_children_spawned`` continues where
        the saved bench stopped). Values are stored in the bench's dtype. Raises
        :class:`~analogmem.errors.StorageError` for missing keys or wrong shapes; the
        bench is then unchanged."""
        self._check_writable("restore_state")
        if self._broken == "closed":
            self._check_usable("restore_state")
        keys = self._keys + ("t_prog_s", "stuck")
        if not isinstance(cell_state, dict):
            raise StorageError(f"cell state must be a dict of arrays, got {type(cell_state).__name__}")
        missing = [k for k in keys if k not in cell_state]
        if missing:
            raise StorageError(f"cell state lacks {missing}")
        for k in keys:
            if np.shape(cell_state[k]) != (self.n_cells,):
                raise StorageError(f"cell state {k!r} has shape {np.shape(cell_state[k])}, expected ({self.n_cells},)")
        if not isinstance(seed, np.random.SeedSequence):
            raise StorageError(f"seed must be a numpy SeedSequence, got {type(seed).__name__}")
        clock = check_seconds("time_s", time_s)
        try:
            t_prog = np.asarray(cell_state["t_prog_s"], dtype=np.float64)
            raw_stuck = np.asarray(cell_state["stuck"])
            for k in self._keys:  # values no program writes (NaN, negated conductances) are refused
                check_state_range(k, np.asarray(cell_state[k], dtype=np.float64), f"cell state {k!r}")
            check_state_range("t_prog_s", t_prog, "cell state 't_prog_s'")
            check_state_range("stuck", raw_stuck.astype(np.float64), "cell state 'stuck'")
        except (TypeError, ValueError) as exc:
            raise StorageError(f"cell state is not numeric: {exc}") from None
        if t_prog.size and t_prog.max() > clock:
            raise StorageError(f"cell state t_prog_s reaches {t_prog.max():g} s, after the clock time_s = {clock:g} s")
        stuck = raw_stuck.astype(np.int8)
        on_disk = isinstance(self._cells, FileArrays)
        if on_disk:
            self._cells.begin_write("restore_state")
        self._broken = "restore_state"
        for k in self._keys:
            self._write_full(k, self.dtype, np.asarray(cell_state[k]))
        self._cells.drop("t_prog_s")
        if np.all(t_prog == t_prog[0]):
            self._uniform_t_prog = float(t_prog[0])
        else:
            self._write_full("t_prog_s", np.float64, t_prog)
        # keep an explicit stuck-at map only where it differs from what the fault key gives
        self._cells.drop("stuck")
        if not np.array_equal(self.stuck, stuck):
            self._write_full("stuck", np.int8, stuck)
        self._cells.flush()
        self._broken = None
        self._programmed = True
        self._last_program_s = float(t_prog.max())
        self._time_s = clock
        self._seed = seed
        if on_disk:
            self._cells.header["bench"] = self._header()
            self._cells.end_write(self.durable)

    # ------------------------------------------------------------------ backends
    def _run_program(self, g_t: np.ndarray, table: PulseTable | None, stuck: np.ndarray | None,
                     key: tuple[int, int, int], first: int, verify: WriteVerify | None, out: dict[str, np.ndarray],
                     pulses: np.ndarray | None = None, success: np.ndarray | None = None) -> None:
        """Program cells at op-local positions ``first ..``: fill the state arrays ``out``
        (and, with verify, ``pulses`` and ``success``); ``table``: the pulse-response table
        of a ``WriteVerify.card`` call."""
        if self.backend == "numpy":
            res = reference.program_reference(self.device, g_t, stuck, key, verify, first=first, table=table)
            for k in self._keys:
                out[k][...] = res[k]
            if verify is not None:
                pulses[...], success[...] = res["pulses"], res["success"]
            return
        extra: dict[str, Any] = {}
        params = self._params
        if verify is not None:
            budget = table.max_pulses if table is not None else verify.pulse_budget(self.device)
            extra = {"verify_max_pulses": budget, "tol_abs": verify.tolerance_S,
                     "tol_rel": verify.tolerance_rel, "pulses": pulses, "success": success,
                     "verify_card": int(table is not None)}
            if table is not None:
                params = params.with_pulse_table(pulse_arrays(table))
        _kernels.program(params, key, g_t, stuck, tuple(out.get(k) for k in STATE_KEYS), self.n_threads,
                         first=first, **extra)

    def _run_read(self, state: dict[str, np.ndarray], age: np.ndarray, key: tuple[int, int, int], first: int,
                  out: np.ndarray) -> None:
        if self.backend == "numpy":
            out[...] = reference.read_reference(self.device, state, age[0] if age.shape[0] == 1 else age, key,
                                                first=first)
            return
        _kernels.read(self._params, key, tuple(np.ascontiguousarray(state[k]) if k in state else None
                                               for k in STATE_KEYS),
                      np.ascontiguousarray(age, dtype=np.float64), out, self.n_threads, first=first)
        self._check_finite(out, "reads")

    def _check_finite(self, values: np.ndarray, what: str) -> None:
        """Refuse non-finite kernel output (one summing pass: NaN and inf propagate into the
        sum; the values are bounded by the card, so a finite sum cannot overflow)."""
        if values.size and not np.isfinite(np.add.reduce(values)):
            bad = int(np.count_nonzero(~np.isfinite(values)))
            raise DeviceCardError(f"device {self.device.name!r}: the cell model gave {bad} non-finite {what}: the card's "
                                  "parameters are outside what it can compute")

    def __repr__(self) -> str:
        where = f", state_dir={str(self.state_dir)!r}" if self.state_dir is not None else ""
        return (f"EmulatedBench(device={self.device.name!r}, n_cells={self.n_cells}, backend={self.backend!r}, "
                f"dtype={self.dtype.name!r}, n_threads={self.n_threads}, time_s={self._time_s:g}{where})")
