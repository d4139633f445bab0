"""A torch model on emulated analog cells in one call: :func:`~analogmem.storage.program.program_model` → :class:`AnalogModel`.

::

    import analogmem
    am = analogmem.program_model(model, "rram-wan2022", cells_per_weight=2, seed=0)
    model_1d = am.module_at(86400.0)          # the weights as read 1 day after programming
    model_1s = am.module_at(1.0)              # any time, in any order
    curve = am.evaluate(accuracy, [1.0, 86400.0, 3.15e7], chips=8)

:func:`~analogmem.storage.program.program_model` sizes an :class:`~analogmem.emulator.bench.EmulatedBench` to the model
(the encoder's cells for every floating-point parameter), fits each tensor's side information
(range, MMSE prior), and programs every cell in **one** streamed program call: targets are made
chunk by chunk (:class:`~analogmem.emulator.bench.ChunkedTargets`), so no full-size copy of the
model's targets ever exists, and with ``state_dir`` the cells live on disk (models larger than
memory). Buffers (batch-norm statistics) and non-float parameters are kept digital (exact).

**Reads at any time.** :meth:`AnalogModel.module_at` reads with
:meth:`~analogmem.emulator.bench.EmulatedBench.read_at`: each cell's programmed state (drift
exponent, relaxation latent) was fixed at programming, and the read noise is a pure function
of the seed, the cell, the read time and a read index. So ``module_at(t)`` gives the same
weights whenever it is called, in any order, as aihwkit's ``drift_analog_weights(model, t)``
takes any ``t``. The bench itself (and every instrument bench) keeps its forward-only clock:
a real chip cannot be read in the past, and :class:`~analogmem.storage.stores.EmulatedStore`
mirrors one; the model handle is an emulation of *counterfactual* reads, which only an
emulator can give.

**Memory.** Beyond the cells' own state, programming holds one chunk of targets
(:data:`CHUNK_WEIGHTS` weights) and the side information; :meth:`AnalogModel.tensors_at`
yields the read-back tensors one at a time (each decoded from a read of its own cells in
chunks), so a model larger than memory can be streamed through; :meth:`module_at` builds a
module (the model's size once more).

**Default encoder** (``encoder="auto"``): MMSE decoding with the card's channel model over a
differential pair (``"differential-mmse"``) for an even number of cells per weight, over the
linear map (``"linear-mmse"``) for an odd one, the rest of the budget as repetitions. MMSE
decoding is the best single scheme in the ch.3 comparison at 1 day on every bundled card
(``docs/storage.md``), and needs no per-card tuning.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, field
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .._io import progress as progress_bar
from .._seeding import SeedLike, as_seed_sequence
from ..chips import chip_seeds, mean_ci, run_chips
from ..emulator.bench import ChunkedTargets, EmulatedBench
from ..emulator.cells import DeviceModel, load_device
from ..emulator.validation import check_seconds
from ..errors import AnalogMemError, SettingError, StorageError
from .encoders import MMSE, CellMap, ReadChannel, Encoder, check_finite, global_drift_scale, make_encoder
from .stores import _as_array, as_stored_dtype, chunked_targets, mean_target_S

__all__ = ["program_one_chip", "AnalogModel", "TensorPlan", "Evaluation", "CHUNK_WEIGHTS", "default_encoder_name"]

#: Weights encoded or decoded at a time (bounds the memory beyond the cells' state).
CHUNK_WEIGHTS = 1 << 21


def default_encoder_name(cells_per_weight: int) -> str:
    """The encoder ``encoder="auto"`` takes: ``"differential-mmse"`` for an even number of
    cells per weight, ``"linear-mmse"`` for an odd one."""
    return "differential-mmse" if cells_per_weight % 2 == 0 else "linear-mmse"


@dataclass
class TensorPlan:
    """One analog tensor on the chip: cells ``[start, start + n_cells)`` hold its
    ``numel`` weights (``cells_per_weight`` each, weight-major); ``side`` is the encoder's side
    information; ``g_target_mean_S`` the mean target (S) for drift compensation."""

    name: str
    shape: tuple[int, ...]
    dtype: str
    numel: int
    start: int
    n_cells: int
    side: dict[str, Any]
    g_target_mean_S: float = 0.0


@dataclass
class Evaluation:
    """A metric against read time over independent chips.

    Attributes:
        times_s: the read times (s after programming), shape (T,).
        values: the metric per chip and time, shape (chips, T).
        mean, std: over chips, shape (T,) (std: sample standard deviation, NaN for one chip).
        ci95_low, ci95_high: Student-t 95 % interval of the mean, shape (T,) (NaN for one chip).
        runner: ``"serial"`` or ``"ray"``.
    """

    times_s: np.ndarray
    values: np.ndarray
    mean: np.ndarray
    std: np.ndarray
    ci95_low: np.ndarray
    ci95_high: np.ndarray
    runner: str = "serial"
    notes: list[str] = field(default_factory=list)

    @classmethod
    def over_chips(cls, times_s: np.ndarray, values: np.ndarray, runner: str,
                   notes: Sequence[str] = ()) -> "Evaluation":
        """The statistics of ``values`` (shape (chips, T)) per read time."""
        stats = [mean_ci(values[:, j]) for j in range(times_s.size)]

        def col(key: str) -> np.ndarray:
            return np.array([float("nan") if s[key] is None else s[key] for s in stats], dtype=np.float64)

        return cls(times_s, values, col("mean"), col("std"), col("ci95_low"), col("ci95_high"), runner=runner,
                   notes=list(notes))

    def to_dict(self) -> dict[str, Any]:
        """JSON-able, with units in the keys."""
        return {"times_s": self.times_s.tolist(), "values_per_chip": self.values.tolist(),
                "mean": self.mean.tolist(), "std": self.std.tolist(), "ci95_low": self.ci95_low.tolist(),
                "ci95_high": self.ci95_high.tolist(), "chips": int(self.values.shape[0]),
                "interval": "Student-t 95 % of the mean over chips", "runner": self.runner, "notes": self.notes}


def _module_parameters(module: Any) -> tuple[dict[str, Any], list[str], list[str]]:
    """The state dict, the analog names (floating-point parameters) and the digital ones."""
    try:
        import torch
    except ImportError as exc:  # pragma: no cover - torch is a core dependency of the ml extra
        raise SettingError("program_model needs torch (pip install torch==2.13.0)") from exc
    if not isinstance(module, torch.nn.Module):
        raise SettingError(f"program_model takes a torch.nn.Module, got {type(module).__name__}")
    params = dict(module.named_parameters())
    if not params:
        raise StorageError(f"the module {type(module).__name__} has no parameters: nothing to put on analog cells")
    state = module.state_dict()
    analog, digital = [], []
    for n, v in state.items():
        if getattr(v, "is_meta", False):
            raise StorageError(f"tensor {n!r} is on torch's meta device (no values); materialise the module first")
        (analog if n in params and v.is_floating_point() and v.numel() > 0 else digital).append(n)
    if not analog:
        kinds = sorted({str(params[n].dtype) for n in params})
        raise StorageError(f"the module has no floating-point parameters (dtypes {kinds}): nothing to put on analog "
                           "cells")
    return state, analog, digital


def _resolve_encoder(encoder: Any, cells_per_weight: Any) -> Encoder:
    if isinstance(cells_per_weight, bool) or not isinstance(cells_per_weight, (int, np.integer)) \
            or cells_per_weight < 1:
        raise SettingError(f"cells_per_weight must be a positive integer, got {cells_per_weight!r}")
    cpw = int(cells_per_weight)
    if isinstance(encoder, Encoder):
        enc = encoder
    elif isinstance(encoder, str):
        enc = make_encoder(default_encoder_name(cpw) if encoder == "auto" else encoder, cpw)
    else:
        raise SettingError(f"encoder must be 'auto', an encoder name or an Encoder, got {encoder!r}")
    if not isinstance(enc, CellMap):
        raise SettingError(f"program_model stores each weight on its own cells (a cell map); {enc.name} is not one "
                           "(use analogmem.storage.store_model for the digital baseline)")
    if enc.cells_per_weight != cpw:
        raise SettingError(f"encoder {enc.name} uses {enc.cells_per_weight} cells per weight, not "
                           f"cells_per_weight = {cpw}")
    return enc


def _check_card(dev: DeviceModel) -> None:
    if dev.input != "conductance":
        raise SettingError(f"device {dev.name!r} takes {dev.input} targets: program_model writes conductance targets, "
                           "which only conductance-input cards take (see `analogmem devices`)")


class AnalogModel:
    """A torch model programmed onto an emulated chip (made by :func:`~analogmem.storage.program.program_model`).

    Attributes:
        bench: the :class:`~analogmem.emulator.bench.EmulatedBench` holding the cells.
        encoder: the :class:`~analogmem.storage.encoders.CellMap` every analog tensor uses.
        plans: one :class:`TensorPlan` per analog tensor, in the module's order.
        digital: the tensors kept exactly (buffers, non-float parameters), by name.
    """

    def __init__(self, module: Any, bench: EmulatedBench, encoder: CellMap, plans: list[TensorPlan],
                 digital: dict[str, Any], settings: dict[str, Any], *, t_fit_s: float = 86400.0):
        self.template = module
        self.bench = bench
        self.device = bench.device
        self.encoder = encoder
        self.plans = plans
        self.digital = digital
        self.settings = settings
        self.t_fit_s = t_fit_s
        self.compensate_drift = self.device.drift.enabled and not encoder.uses_channel
        #: every tensor's name, in the module's state-dict order (a shard: its analog tensors)
        self.names = list(module.state_dict().keys()) if module is not None else [p.name for p in plans] + list(digital)

    # ---------------------------------------------------------------- facts
    @property
    def n_cells(self) -> int:
        return self.bench.n_cells

    @property
    def n_weights(self) -> int:
        """Weights on analog cells."""
        return int(sum(p.numel for p in self.plans))

    def usage(self) -> dict[str, Any]:
        """Cells, weights, cells per weight, digital bits (tensors kept exactly) and side
        information bits (32 per value), bytes of cell state."""
        side = sum(32 * int(np.size(v)) for p in self.plans for v in p.side.values())
        dig = sum(int(v.numel()) * v.element_size() * 8 for v in self.digital.values())
        return {"analog_cells": self.n_cells, "analog_weights": self.n_weights,
                "cells_per_weight": self.n_cells / max(self.n_weights, 1), "digital_bits": dig,
                "side_info_bits": side, "cell_state_bytes": self.bench.bytes_per_cell * self.n_cells,
                "encoder": self.encoder.spec(), "device": self.device.name}

    # ---------------------------------------------------------------- reading
    def _check_time(self, t_s: Any) -> float:
        return check_seconds("t_s", t_s)

    def tensor_at(self, name: str, t_s: float, read: int = 0) -> Any:
        """One tensor (a torch tensor of its shape and dtype, on the CPU; with the torch
        backend on the bench's device) as read ``t_s``
        seconds after programming; ``read`` indexes independent read noise at the same time."""
        t = self._check_time(t_s)
        for p in self.plans:
            if p.name == name:
                return self._decode(p, t, read)
        if name in self.digital:
            return self.digital[name].clone()
        raise StorageError(f"no tensor named {name!r} in this model")

    def tensors_at(self, t_s: float, read: int = 0, progress: bool = False) -> Iterator[tuple[str, Any]]:
        """``(name, tensor)`` for every state-dict entry as read at ``t_s`` (s after
        programming), one tensor at a time (analog tensors decoded from their cells, digital
        ones exact), in the module's state-dict order."""
        t = self._check_time(t_s)
        by_name = {p.name: p for p in self.plans}
        for n in progress_bar(self.names, enabled=progress, desc=f"read t={t:g} s", unit="tensor"):
            yield n, (self._decode(by_name[n], t, read) if n in by_name else self.digital[n].clone())

    def module_at(self, t_s: float, read: int = 0, *, out: Any = None) -> Any:
        """An ``nn.Module`` holding the weights as read ``t_s`` seconds after programming (any
        ``t_s ≥ 0``, any order: the same weights for the same seed, ``t_s`` and ``read``).

        Args:
            t_s: read time (s after programming).
            read: read index (integer ≥ 0): another index draws fresh read noise at the same time.
            out: a module of the same architecture to load the weights into (saves a copy of
                the model); by default a deep copy of the programmed module.
        """
        import torch

        t = self._check_time(t_s)
        module = copy.deepcopy(self.template) if out is None else out
        with torch.no_grad():
            target = module.state_dict()
            for n, v in self.tensors_at(t, read):
                if n not in target:
                    raise StorageError(f"module `out` has no tensor {n!r}")
                target[n].copy_(v)
        return module

    def _decode(self, p: TensorPlan, t: float, read: int) -> Any:
        import torch

        if self.bench.backend == "torch":
            return self._decode_torch(p, t, read)
        channel = ReadChannel(self.device, t)
        cpw = self.encoder.cells_per_weight
        gain = 1.0
        step = CHUNK_WEIGHTS
        if self.compensate_drift and p.n_cells:  # the mean read of the whole tensor first (a pure function)
            total = 0.0
            for a in range(0, p.numel, step):
                b = min(p.numel, a + step)
                total += float(np.sum(self.bench.read_at(t, p.start + a * cpw, p.start + b * cpw, read_index=read),
                                      dtype=np.float64))
            gain = global_drift_scale(np.array([total / p.n_cells]), p.g_target_mean_S)
        dt = np.float32 if p.dtype in ("float32", "float16", "bfloat16") else np.float64
        w = np.empty(p.numel, dtype=dt)
        threads = self.bench.n_threads
        # MMSE: one table of posterior means for the whole tensor (None: the exact posterior)
        table = self.encoder.posterior_table(p.side, channel, p.numel, threads) if isinstance(self.encoder, MMSE) \
            else None
        for a in range(0, p.numel, step):
            b = min(p.numel, a + step)
            g = self.bench.read_at(t, p.start + a * cpw, p.start + b * cpw, read_index=read)
            w[a:b] = self.encoder.decode_S(g, p.side, b - a, channel, gain, dt, threads, table=table)
        out = as_stored_dtype(w.reshape(p.shape), p.dtype)
        return out if torch.is_tensor(out) else torch.from_numpy(out)

    def _decode_torch(self, p: TensorPlan, t: float, read: int) -> Any:
        """The torch backend: the tensor's cells read at once on the bench's device and decoded
        there by the encoder's own :meth:`~analogmem.storage.encoders.CellMap.decode_S` on the
        tensor (its array-API cell map or MMSE posterior); a tensor of the stored dtype on that
        device, float16/bfloat16 clipped to their finite range."""
        import torch

        channel = ReadChannel(self.device, t)
        g = self.bench.read_at(t, p.start, p.start + p.n_cells, read_index=read)
        gain = global_drift_scale(g.double(), p.g_target_mean_S) if self.compensate_drift and p.n_cells else 1.0
        w = self.encoder.decode_S(g, p.side, p.numel, channel, gain)
        dt = getattr(torch, p.dtype)
        if dt in (torch.float16, torch.bfloat16):
            big = float(torch.finfo(dt).max)
            w = w.clamp(-big, big)
        return w.reshape(p.shape).to(dt)

    # ---------------------------------------------------------------- chips
    def chip(self, i: int) -> "AnalogModel":
        """Chip ``i`` of this model's family: the same model programmed (in memory) on an
        independent chip whose seed is child ``i`` of this model's seed, as :meth:`evaluate` uses."""
        seed = chip_seeds(self.settings["seed"], int(i) + 1)[int(i)]
        s = {**self.settings, "seed": seed, "state_dir": None}
        return program_one_chip(self.template, self.device, **{k: v for k, v in s.items() if k != "seed"}, seed=seed)

    def evaluate(self, fn: Callable[[Any], float], times_s: Sequence[float], chips: int = 1, *, ray: bool = False,
                 ray_address: str | None = None, num_cpus: int | None = None, progress: bool = False) -> Evaluation:
        """``fn(module)`` (a number, e.g. test accuracy) for the weights read at each of
        ``times_s`` on ``chips`` independent chips (chip ``i`` programmed from child ``i`` of
        this model's seed, :func:`analogmem.chips.chip_seeds`); with ``ray=True`` each chip is
        a Ray task (a local Ray, or the cluster at ``ray_address``), with identical numbers.
        ``fn`` must be picklable for Ray (a module-level function or a callable object).
        Returns an :class:`Evaluation` (mean and Student-t 95 % interval over chips per time)."""
        times = np.asarray([check_seconds("times_s", float(t)) for t in np.atleast_1d(times_s)], dtype=np.float64)
        if isinstance(chips, bool) or not isinstance(chips, (int, np.integer)) or chips < 1:
            raise SettingError(f"chips must be a positive integer, got {chips!r}")
        if not callable(fn):
            raise SettingError(f"fn must be callable (module -> number), got {fn!r}")
        shared = {"module": self.template, "device": self.device.card_text, "device_name": self.device.name,
                  "settings": {k: v for k, v in self.settings.items() if k not in ("seed", "state_dir")},
                  "fn": fn, "times_s": times}
        seeds = chip_seeds(self.settings["seed"], int(chips))
        run = run_chips(_evaluate_chip, shared, [(s, i) for i, s in enumerate(seeds)], use_ray=ray,
                        ray_address=ray_address, num_cpus=num_cpus, progress=progress, desc="chips")
        values = np.asarray(run.results, dtype=np.float64).reshape(int(chips), times.size)
        return Evaluation.over_chips(times, values, run.runner, run.notes)

    def __repr__(self) -> str:
        return (f"AnalogModel({type(self.template).__name__}, {self.n_weights} weights on {self.n_cells} cells of "
                f"{self.device.name!r}, encoder={self.encoder.name}, dtype={self.bench.dtype.name})")


def _evaluate_chip(shared: dict[str, Any], seed: np.random.SeedSequence, index: int) -> list[float]:
    """One chip of :meth:`AnalogModel.evaluate` (a Ray task when asked): program, then the
    metric at every time."""
    from ..emulator.cells import parse_card

    dev = parse_card(shared["device"], label=shared["device_name"])
    am = program_one_chip(shared["module"], dev, seed=seed, **shared["settings"])
    out = []
    for t in shared["times_s"]:
        out.append(float(shared["fn"](am.module_at(float(t)))))
    return out


def program_one_chip(module: Any, device: DeviceModel | str, cells_per_weight: int = 2, encoder: Any = "auto",
                     seed: SeedLike = None, *, dtype: Any = "float64", state_dir: Any = None, backend: str = "kernels",
                     torch_device: Any = None, n_threads: int | None = None, direct_io: bool | None = None,
                     t_fit_s: float = 86400.0, progress: bool = False) -> "AnalogModel":
    """:func:`analogmem.program_model` without ``shards``: the whole model on one chip in this
    process (arguments, errors: see there)."""
    bench_backend, dev, enc, t_fit, (state, analog, digital_names) = _prepare(
        module, device, cells_per_weight, encoder, backend, torch_device, t_fit_s)
    return _program_state(module, state, analog, digital_names, dev, enc, seed, dtype=dtype, state_dir=state_dir,
                          backend=backend, bench_backend=bench_backend, n_threads=n_threads, direct_io=direct_io,
                          t_fit=t_fit, progress=progress, torch_device=torch_device)


def _prepare(module: Any, device: DeviceModel | str, cells_per_weight: int, encoder: Any, backend: str,
             torch_device: Any, t_fit_s: float) -> tuple[str, DeviceModel, CellMap, float,
                                                          tuple[dict[str, Any], list[str], list[str]]]:
    """program_model's checks of everything but the weights' values, before any cell is made:
    (bench backend, card, encoder, t_fit (s), (state dict, analog names, digital names))."""
    bench_backend = _bench_backend(backend, torch_device)
    dev = load_device(device)
    _check_card(dev)
    enc = _resolve_encoder(encoder, cells_per_weight)
    t_fit = check_seconds("t_fit_s", t_fit_s)
    return bench_backend, dev, enc, t_fit, _module_parameters(module)


def _bench_backend(backend: str, torch_device: Any) -> str:
    """The :class:`EmulatedBench` backend for program_model's ``backend``."""
    if backend in ("kernels", "cython"):
        bench_backend = "cython"
    elif backend in ("numpy", "torch"):
        bench_backend = backend
    else:
        raise SettingError(f"backend must be 'kernels', 'cython', 'numpy' or 'torch', got {backend!r}")
    if torch_device is not None and backend != "torch":
        raise SettingError(f"torch_device={torch_device!r} needs backend='torch'")
    return bench_backend


def _program_state(module: Any, state: dict[str, Any], analog: list[str], digital_names: list[str],
                   dev: DeviceModel, enc: CellMap, seed: SeedLike, *, dtype: Any, state_dir: Any, backend: str,
                   bench_backend: str, n_threads: int | None, direct_io: bool | None, t_fit: float,
                   progress: bool, torch_device: Any = None) -> "AnalogModel":
    """Program the tensors ``analog`` of ``state`` (name -> tensor) onto one new chip; the
    ``digital_names`` are kept exactly. ``module`` is the template of read-back modules (None
    for a shard of a model, which is read tensor by tensor)."""
    channel = ReadChannel(dev, t_fit)
    cpw = enc.cells_per_weight
    # side information and the cell plan, everything checked before a cell is touched
    plans: list[TensorPlan] = []
    start = 0
    flat: dict[str, np.ndarray] = {}
    for n in progress_bar(analog, enabled=progress, desc="fit", unit="tensor"):
        a = _as_array(n, state[n])
        check_finite(n, a)
        w = a.reshape(-1)  # the tensor's own memory (a view): encoded a chunk at a time
        side = enc.fit(w, channel)
        plan = TensorPlan(n, tuple(a.shape), "bfloat16" if str(state[n].dtype) == "torch.bfloat16" else a.dtype.name,
                          int(w.size), start, int(enc.n_cells(w.size)), side)
        if dev.drift.enabled and not enc.uses_channel:
            plan.g_target_mean_S = mean_target_S(enc, w, side, channel, chunk_weights=CHUNK_WEIGHTS)
        plans.append(plan)
        flat[n] = w
        start += plan.n_cells
    digital = {n: state[n].detach().cpu().clone() for n in digital_names}
    root = as_seed_sequence(seed)
    if bench_backend == "torch":  # the cells' state on torch_device; the targets made on the host
        if state_dir is not None or direct_io is not None or n_threads is not None:
            raise SettingError("backend='torch' keeps the cells in torch tensors on torch_device: state_dir, "
                               "direct_io and n_threads are for the kernels")
        bench = EmulatedBench(dev, start, seed=root, backend="torch", dtype=dtype,
                              torch_device="cpu" if torch_device is None else torch_device)
    else:
        bench = EmulatedBench(dev, start, seed=root, n_threads=n_threads, backend=bench_backend, dtype=dtype,
                              state_dir=state_dir, direct_io=direct_io)
    chunked = chunked_targets([(p.n_cells, enc, flat[p.name], p.side) for p in plans], channel, bench.n_threads)
    # the bench makes each chunk's targets once (the cell maps' targets are in range by construction)
    with progress_bar(total=start * (1 if chunked.prechecked else 2), enabled=progress, desc="check+program", unit="cell", unit_scale=True) as bar:
        def counted(lo: int, hi: int) -> np.ndarray:
            out = chunked.fn(lo, hi)
            bar.update(hi - lo)
            return out

        bench.program(ChunkedTargets(chunked.n, counted, prechecked=chunked.prechecked))
    settings = {"cells_per_weight": cpw, "encoder": enc, "seed": np.random.SeedSequence(root.entropy,
                spawn_key=root.spawn_key), "dtype": dtype, "state_dir": state_dir, "backend": backend,
                "torch_device": torch_device, "n_threads": n_threads, "direct_io": direct_io, "t_fit_s": t_fit}
    return AnalogModel(module, bench, enc, plans, digital, settings, t_fit_s=t_fit)
