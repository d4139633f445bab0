"""``program_model``: a torch model onto emulated analog cells in one call — one chip in this
process (:class:`~analogmem.storage.analog_model.AnalogModel`) or, with ``shards``, one chip per
Ray worker (:class:`~analogmem.storage.sharded_model.ShardedAnalogModel`)."""

from __future__ import annotations

from typing import Any

from .._seeding import SeedLike
from ..emulator.cells import DeviceModel
from ..errors import SettingError
from .analog_model import program_one_chip
from .sharded_model import program_sharded

__all__ = ["program_model"]


def program_model(module: Any, device: DeviceModel | str, cells_per_weight: int = 2, encoder: Any = "auto",
                  seed: SeedLike = None, *, dtype: Any = "float64", state_dir: Any = None, backend: str = "kernels",
                  torch_device: Any = None, n_threads: int | None = None, direct_io: bool | None = None,
                  t_fit_s: float = 86400.0, progress: bool = False, shards: int | None = None,
                  ray_address: str | None = None, num_cpus: int | None = None) -> Any:
    """Program every floating-point parameter of ``module`` onto a new emulated chip of
    ``device`` sized for it; buffers and other tensors are kept digital (exact).

    Args:
        module: a ``torch.nn.Module`` (left unchanged; kept as the template of read-back modules).
        device: a card name, path or :class:`~analogmem.emulator.cells.DeviceModel`
            (conductance-input cards).
        cells_per_weight: cells per weight (the encoder's; repetitions fill the budget).
        encoder: ``"auto"`` (:func:`default_encoder_name`), a
            :func:`~analogmem.storage.encoders.make_encoder` name, or a cell-map encoder.
        seed: the chip's randomness (None, int, SeedSequence, Generator).
        dtype: ``"float64"`` or ``"float32"``: the cells' state and reads (float32 halves
            memory and traffic).
        state_dir: keep the cells in files under this new directory (models beyond memory).
        backend: ``"kernels"`` (the compiled kernels; ``"cython"`` is the same), ``"numpy"``
            (the reference, slow) or ``"torch"`` (the cells' state in torch tensors on
            ``torch_device``, read and decoded there: weights that stay on a GPU; the targets
            are made on the host chunk by chunk; not bit-identical to the kernels, the same
            distributions: ``tests/test_analog_model.py``).
        torch_device: with ``backend="torch"``: ``"cpu"`` (default), ``"cuda"``, ...
        n_threads: kernel threads (default: the cores this process may use).
        direct_io: as :class:`~analogmem.emulator.bench.EmulatedBench` (with ``state_dir``).
        t_fit_s: the read time (s) whose channel the adaptive range is fitted to.
        progress: progress bars.
        shards: split the model over this many Ray workers (actors), each programming its
            share of the tensors (contiguous in the module's order, balanced by weights) on a
            chip of its own, with its own ``state_dir`` (``<state_dir>/shard-<i>`` on the
            worker's machine) and seed (child ``i`` of ``seed``): returns a
            :class:`~analogmem.storage.sharded_model.ShardedAnalogModel`, read tensor by
            tensor. None (default): one chip in this process, an :class:`AnalogModel`.
        ray_address: with ``shards``: an existing Ray cluster (``"auto"``,
            ``"ray://host:10001"``); None starts a local Ray (or uses one already started).
        num_cpus: with ``shards`` and a local Ray: its CPUs (default: the cores this process may use).

    Raises :class:`~analogmem.errors.StorageError` (no parameters, NaN/inf weights, meta
    tensors) or :class:`~analogmem.errors.SettingError` (bad settings, a card or budget the
    encoder cannot use), naming the value; nothing is programmed then.
    """
    if shards is not None:
        return program_sharded(module, device, cells_per_weight, encoder, seed, shards=shards, dtype=dtype,
                               state_dir=state_dir, backend=backend, torch_device=torch_device, n_threads=n_threads,
                               direct_io=direct_io, t_fit_s=t_fit_s, progress=progress, ray_address=ray_address,
                               num_cpus=num_cpus)
    if ray_address is not None or num_cpus is not None:
        raise SettingError("ray_address and num_cpus are for a sharded model: pass shards=N as well")
    return program_one_chip(module, device, cells_per_weight, encoder, seed, dtype=dtype, state_dir=state_dir,
                            backend=backend, torch_device=torch_device, n_threads=n_threads, direct_io=direct_io,
                            t_fit_s=t_fit_s, progress=progress)
