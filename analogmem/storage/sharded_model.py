"""One model over several Ray workers: ``program_model(..., shards=N)`` → :class:`ShardedAnalogModel`.

A model too large for one machine's chip (its cells' state, or the time to program and read
them) is split into ``N`` shards: the floating-point tensors, in the module's state-dict order,
cut into ``N`` contiguous runs of about equal weights (:func:`shard_plan`). Shard ``i`` is a Ray
actor that programs its tensors onto a chip of its own — seed ``chip_seeds(seed, N)[i]``
(child ``i`` of the model's seed), cells in ``<state_dir>/shard-<i>`` on the worker's machine
when ``state_dir`` is given — exactly as :func:`~analogmem.storage.program.program_model`
programs a whole model on one chip. Reads go to the shard holding each tensor and are gathered
tensor by tensor (at most one tensor per shard in flight), so the driver holds one read-back
tensor per shard beyond the module it builds; :meth:`ShardedAnalogModel.tensors_at` streams them.

The weights of a sharded model are a pure function of ``(seed, shards)``: shard ``i``'s tensors
are bit-identical to programming those tensors alone on one chip with seed child ``i``
(``tests/test_sharded_model.py``). A different number of shards is a different draw of chips,
not a different result: the statistics are the same.

Ray: a local Ray is started (``num_cpus``, default the cores this process may use; session
files in a temporary folder removed at :meth:`ShardedAnalogModel.close`) unless Ray is already
initialised or ``ray_address`` names a cluster (``"auto"``, ``"ray://head:10001"``); the actors
ask for one CPU each. Close the model (or use it as a context manager) to end the actors.
"""

from __future__ import annotations

import copy
import os
import shutil
import tempfile
from typing import Any, Callable, Iterator, Sequence

import numpy as np

from .._io import progress as progress_bar
from .._seeding import SeedLike, as_seed_sequence
from ..chips import RAY_TMP_PREFIX, chip_seeds, ray_available
from ..emulator.cells import parse_card
from ..emulator.validation import check_seconds
from ..errors import SettingError, StorageError
from .analog_model import AnalogModel, Evaluation, _prepare, _program_state

__all__ = ["ShardedAnalogModel", "program_sharded", "shard_plan"]


def shard_plan(sizes: Sequence[int], shards: int) -> list[list[int]]:
    """Split tensors of ``sizes`` weights (in order) into ``shards`` contiguous runs of about
    equal weights: shard ``k`` takes the next tensors whose midpoints (weights before them plus
    half their own) lie below ``(k + 1)/shards`` of the total — at least one, and at least one
    left for each later shard — so every shard gets its share give or take one tensor. Returns the tensor
    indices of each shard (none empty). Raises SettingError when there are fewer tensors than
    shards."""
    n = len(sizes)
    if isinstance(shards, bool) or not isinstance(shards, (int, np.integer)) or shards < 1:
        raise SettingError(f"shards must be a positive integer, got {shards!r}")
    if shards > n:
        raise SettingError(f"shards={shards} but the model has {n} floating-point tensors: a shard holds whole "
                           "tensors, so use at most that many")
    k_all = int(shards)
    before = np.concatenate([[0.0], np.cumsum(np.asarray(sizes, dtype=np.float64))])
    total = before[-1]
    out: list[list[int]] = []
    j = 0
    for k in range(k_all):
        if k == k_all - 1:
            end = n
        else:
            target = total * (k + 1) / k_all
            end = j + 1  # at least one tensor, and at least one left for each later shard
            while end < n - (k_all - 1 - k) and before[end] + sizes[end] / 2.0 <= target:
                end += 1
        out.append(list(range(j, end)))
        j = end
    return out


class _ShardWorker:
    """A Ray actor: one shard's tensors and its chips (:class:`AnalogModel` s without a module
    template): chip ``0`` is the model's own (in ``state_dir`` when given); :meth:`add_chip`
    programs further chips of the same tensors in memory for :meth:`ShardedAnalogModel.evaluate`
    (the worker keeps its tensors, as sent, for that)."""

    def __init__(self, tensors: dict[str, Any], card_text: str, card_name: str, encoder: Any,
                 seed: np.random.SeedSequence, settings: dict[str, Any]):
        self.device = parse_card(card_text, label=card_name)
        self.tensors, self.encoder, self.settings = tensors, encoder, settings
        state_dir = settings["state_dir"]
        if state_dir is not None:
            os.makedirs(os.path.dirname(os.path.abspath(state_dir)), exist_ok=True)
        self.chips = {0: self._program(seed, state_dir)}

    def _program(self, seed: np.random.SeedSequence, state_dir: str | None) -> AnalogModel:
        s = self.settings
        return _program_state(None, self.tensors, list(self.tensors), [], self.device, self.encoder, seed,
                              dtype=s["dtype"], state_dir=state_dir, backend=s["backend"],
                              bench_backend=s["bench_backend"], n_threads=s["n_threads"], direct_io=s["direct_io"],
                              t_fit=s["t_fit_s"], progress=False, torch_device=s["torch_device"])

    def add_chip(self, key: int, seed: np.random.SeedSequence) -> int:
        """Program another chip of this shard's tensors (in memory) under ``key``; returns its cells."""
        self.chips[key] = self._program(seed, None)
        return self.chips[key].n_cells

    def drop_chip(self, key: int) -> None:
        self.chips.pop(key, None)

    def tensor_at(self, name: str, t_s: float, read: int, chip: int = 0) -> Any:
        return self.chips[chip].tensor_at(name, t_s, read)

    def usage(self) -> dict[str, Any]:
        return self.chips[0].usage()

    def close(self) -> None:
        for model in self.chips.values():
            cells = getattr(model.bench, "_cells", None)
            if cells is not None and hasattr(cells, "close"):
                cells.close()
        self.chips.clear()


class ShardedAnalogModel:
    """A torch model programmed over ``shards`` Ray workers (made by ``program_model(...,
    shards=N)``); the reading methods are those of :class:`AnalogModel`.

    Attributes:
        shard_names: the tensor names each shard holds.
        digital: tensors kept exactly (buffers, non-float parameters), held by the driver.
    """

    def __init__(self, module: Any, workers: list[Any], shard_names: list[list[str]], digital: dict[str, Any],
                 settings: dict[str, Any], device: Any, encoder: Any, ray_owned: tuple[bool, str | None]):
        self.template = module
        self._workers = workers
        self.shard_names = shard_names
        self._owner = {n: i for i, names in enumerate(shard_names) for n in names}
        self.digital = digital
        self.settings = settings
        self.device = device
        self.encoder = encoder
        self.names = list(module.state_dict().keys())
        self._ray_owned, self._ray_tmp = ray_owned
        self._usage: dict[str, Any] | None = None

    @property
    def shards(self) -> int:
        return len(self._workers)

    def _live(self) -> list[Any]:
        if not self._workers:
            raise StorageError("this sharded model was closed: its workers and their chips are gone")
        return self._workers

    def usage(self) -> dict[str, Any]:
        """As :meth:`AnalogModel.usage`, summed over shards, with ``shards`` and per-shard cells."""
        import ray

        if self._usage is None:
            per = ray.get([w.usage.remote() for w in self._live()])
            dig = sum(int(v.numel()) * v.element_size() * 8 for v in self.digital.values())
            cells = sum(u["analog_cells"] for u in per)
            weights = sum(u["analog_weights"] for u in per)
            self._usage = {"analog_cells": cells, "analog_weights": weights,
                           "cells_per_weight": cells / max(weights, 1), "digital_bits": dig,
                           "side_info_bits": sum(u["side_info_bits"] for u in per),
                           "cell_state_bytes": sum(u["cell_state_bytes"] for u in per),
                           "encoder": per[0]["encoder"], "device": per[0]["device"], "shards": len(per),
                           "cells_per_shard": [u["analog_cells"] for u in per]}
        return self._usage

    @property
    def n_weights(self) -> int:
        return int(self.usage()["analog_weights"])

    @property
    def n_cells(self) -> int:
        return int(self.usage()["analog_cells"])

    def tensor_at(self, name: str, t_s: float, read: int = 0) -> Any:
        """As :meth:`AnalogModel.tensor_at` (read on the shard that holds ``name``)."""
        import ray

        t = check_seconds("t_s", t_s)
        if name in self._owner:
            return ray.get(self._live()[self._owner[name]].tensor_at.remote(name, t, int(read), 0))
        if name in self.digital:
            return self.digital[name].clone()
        raise StorageError(f"no tensor named {name!r} in this model")

    def tensors_at(self, t_s: float, read: int = 0, progress: bool = False) -> Iterator[tuple[str, Any]]:
        """As :meth:`AnalogModel.tensors_at`: every tensor in state-dict order, gathered from the
        shards one at a time while each shard already reads its next tensor."""
        return self._tensors_at(t_s, read, progress, 0)

    def _tensors_at(self, t_s: float, read: int, progress: bool, chip: int) -> Iterator[tuple[str, Any]]:
        import ray

        t = check_seconds("t_s", t_s)
        workers = self._live()
        names = self.names
        pending: dict[int, Any] = {}  # position -> ObjectRef; at most one per shard
        busy: set[int] = set()
        nxt = 0

        def submit() -> None:
            nonlocal nxt
            while nxt < len(names):
                n = names[nxt]
                if n not in self._owner:
                    nxt += 1
                    continue
                s = self._owner[n]
                if s in busy:
                    return
                pending[nxt] = workers[s].tensor_at.remote(n, t, int(read), chip)
                busy.add(s)
                nxt += 1

        for pos in progress_bar(range(len(names)), enabled=progress, desc=f"read t={t:g} s", unit="tensor"):
            n = names[pos]
            if n not in self._owner:
                yield n, self.digital[n].clone()
                continue
            submit()
            if pos not in pending:  # its shard was busy with an earlier one, now gathered
                pending[pos] = workers[self._owner[n]].tensor_at.remote(n, t, int(read), chip)
                busy.add(self._owner[n])
            value = ray.get(pending.pop(pos))
            busy.discard(self._owner[n])
            submit()
            yield n, value

    def module_at(self, t_s: float, read: int = 0, *, out: Any = None) -> Any:
        """As :meth:`AnalogModel.module_at`."""
        return self._module_at(t_s, read, out, 0)

    def _module_at(self, t_s: float, read: int, out: Any, chip: int) -> Any:
        import torch

        t = check_seconds("t_s", t_s)
        module = copy.deepcopy(self.template) if out is None else out
        with torch.no_grad():
            target = module.state_dict()
            for n, v in self._tensors_at(t, read, False, chip):
                if n not in target:
                    raise StorageError(f"module `out` has no tensor {n!r}")
                target[n].copy_(v)
        return module

    def evaluate(self, fn: Callable[[Any], float], times_s: Sequence[float], chips: int = 1, *,
                 progress: bool = False) -> Evaluation:
        """``fn(module)`` at each of ``times_s`` on ``chips`` independent sharded chips: chip
        ``i`` from child ``i`` of this model's seed, its shard ``j`` from child ``j`` of that
        (as :func:`program_sharded` seeds a model), programmed in memory by this model's own
        workers (all shards at once, one chip after another; the model's own chip is kept).
        Returns an :class:`Evaluation` (Student-t 95 % interval over chips)."""
        times = np.asarray([check_seconds("times_s", float(t)) for t in np.atleast_1d(times_s)], dtype=np.float64)
        if isinstance(chips, bool) or not isinstance(chips, (int, np.integer)) or chips < 1:
            raise SettingError(f"chips must be a positive integer, got {chips!r}")
        if not callable(fn):
            raise SettingError(f"fn must be callable (module -> number), got {fn!r}")
        import ray

        workers = self._live()
        values = np.empty((int(chips), times.size))
        for i, s in enumerate(progress_bar(chip_seeds(self.settings["seed"], int(chips)), enabled=progress,
                                           desc="chips", unit="chip")):
            key = i + 1
            ray.get([w.add_chip.remote(key, cs) for w, cs in zip(workers, chip_seeds(s, len(workers)))])
            try:
                values[i] = [float(fn(self._module_at(float(t), 0, None, key))) for t in times]
            finally:
                ray.get([w.drop_chip.remote(key) for w in workers])
        return Evaluation.over_chips(times, values, "ray-shards")

    def close(self) -> None:
        """End the workers (their chips in memory are freed; chips in ``state_dir`` stay on
        disk, closed) and the local Ray this model started."""
        import ray

        workers, self._workers = self._workers, []
        if workers and ray.is_initialized():
            try:
                ray.get([w.close.remote() for w in workers])
            finally:
                for w in workers:
                    ray.kill(w)
        if self._ray_owned and ray.is_initialized():
            ray.shutdown()
            self._ray_owned = False
        if self._ray_tmp is not None:
            shutil.rmtree(self._ray_tmp, ignore_errors=True)
            self._ray_tmp = None

    def __enter__(self) -> "ShardedAnalogModel":
        return self

    def __exit__(self, *exc: Any) -> None:
        self.close()

    def __repr__(self) -> str:
        state = f"{len(self._workers)} shards" if self._workers else "closed"
        return f"ShardedAnalogModel({type(self.template).__name__}, {self.device.name!r}, {state})"


def _start_ray(ray_address: str | None, num_cpus: int | None) -> tuple[bool, str | None]:
    """Ray for the shards: an initialised one is used as is; otherwise the cluster at
    ``ray_address`` or a local Ray of ``num_cpus`` CPUs. Returns (we started it, its temp folder)."""
    if not ray_available():
        raise SettingError("program_model(shards=...) needs Ray: pip install 'analogmem[fl]' (Flower brings Ray)")
    import ray

    if ray.is_initialized():
        return False, None
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    if ray_address is not None:
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
        return True, None
    cpus = int(num_cpus) if num_cpus is not None else max(1, len(os.sched_getaffinity(0)))
    if cpus < 1:
        raise SettingError(f"num_cpus must be >= 1, got {num_cpus!r}")
    tmp = tempfile.mkdtemp(prefix=RAY_TMP_PREFIX)
    ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=tmp, configure_logging=False)
    return True, tmp


def program_sharded(module: Any, device: Any, cells_per_weight: int = 2, encoder: Any = "auto",
                    seed: SeedLike = None, *, shards: int, dtype: Any = "float64", state_dir: Any = None,
                    backend: str = "kernels", torch_device: Any = None, n_threads: int | None = None,
                    direct_io: bool | None = None, t_fit_s: float = 86400.0, progress: bool = False,
                    ray_address: str | None = None, num_cpus: int | None = None) -> ShardedAnalogModel:
    """``program_model(..., shards=N)`` (see there): every input is checked here before a
    worker starts; then each shard's tensors are sent to its actor, which programs them."""
    bench_backend, dev, enc, t_fit, (state, analog, digital_names) = _prepare(
        module, device, cells_per_weight, encoder, backend, torch_device, t_fit_s)
    groups = shard_plan([int(state[n].numel()) for n in analog], shards)
    from .stores import _as_array
    from .encoders import check_finite

    for n in analog:  # refuse NaN/inf (and unsupported dtypes) before any worker starts
        check_finite(n, _as_array(n, state[n]))
    if state_dir is not None:
        root_dir = os.fspath(state_dir)
        if os.path.exists(root_dir) and (not os.path.isdir(root_dir) or os.listdir(root_dir)):
            raise StorageError(f"state_dir {root_dir!r} exists and is not an empty directory: a sharded model makes "
                               "its shards' chips in a new one")
    root = as_seed_sequence(seed)
    seeds = chip_seeds(root, len(groups))
    owned, tmp = _start_ray(ray_address, num_cpus)
    import ray

    workers: list[Any] = []
    try:
        actor = ray.remote(num_cpus=1)(_ShardWorker)
        settings = {"dtype": dtype, "backend": backend, "bench_backend": bench_backend, "n_threads": n_threads,
                    "direct_io": direct_io, "t_fit_s": t_fit, "torch_device": torch_device}
        names = [[analog[j] for j in g] for g in groups]
        for i, group in enumerate(names):
            sub = {n: state[n].detach() for n in group}
            d = None if state_dir is None else os.path.join(os.fspath(state_dir), f"shard-{i:03d}")
            workers.append(actor.remote(sub, dev.card_text, dev.name, enc, seeds[i], {**settings, "state_dir": d}))
        # programming runs on all shards at once; wait for every one (a failure names its shard)
        for i, w in enumerate(progress_bar(workers, enabled=progress, desc="program shards", unit="shard")):
            try:
                ray.get(w.usage.remote())
            except ray.exceptions.RayActorError as exc:
                cause = getattr(exc, "cause", None) or exc
                raise StorageError(f"shard {i} (tensors {names[i][0]!r}..{names[i][-1]!r}) failed to program: "
                                   f"{cause}") from None
    except BaseException:
        for w in workers:
            ray.kill(w)
        if owned:
            ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    digital = {n: state[n].detach().cpu().clone() for n in digital_names}
    settings = {"cells_per_weight": enc.cells_per_weight, "encoder": enc,
                "seed": np.random.SeedSequence(root.entropy, spawn_key=root.spawn_key), "dtype": dtype,
                "state_dir": state_dir, "backend": backend, "torch_device": torch_device, "n_threads": n_threads,
                "direct_io": direct_io, "t_fit_s": t_fit}
    return ShardedAnalogModel(module, workers, names, digital, settings, dev, enc, (owned, tmp))
