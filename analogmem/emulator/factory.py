"""One factory over the emulator's backends: :func:`make_bench`.

The classes stay what they are — :class:`~analogmem.emulator.bench.EmulatedBench` (compiled
kernels, or the numpy reference) and :class:`~analogmem.emulator.torch_bench.TorchBench`
(state as torch tensors) — and this picks one by name (numpy.random keeps ``default_rng``
apart from ``Generator`` the same way). ``EmulatedBench(..., backend="torch")``, which
returned a TorchBench that is not an EmulatedBench, still does so with a DeprecationWarning.
"""

from __future__ import annotations

from typing import Any

from .._seeding import SeedLike
from ..errors import SettingError
from .bench import Bench, EmulatedBench
from .cells import DeviceModel
from .torch_bench import TorchBench

__all__ = ["make_bench", "BACKENDS"]

#: The backends :func:`make_bench` takes ("cython" is another name for "kernels").
BACKENDS = ("kernels", "cython", "numpy", "torch")


def make_bench(device: DeviceModel | str, n_cells: int, seed: SeedLike = None, *, backend: str = "kernels",
               **options: Any) -> Bench:
    """An emulated bench of ``n_cells`` cells of ``device`` on one backend:

    * ``"kernels"`` (default; ``"cython"`` is the same): an :class:`EmulatedBench` over the
      compiled kernels;
    * ``"numpy"``: an :class:`EmulatedBench` over the numpy reference (slow, for checking);
    * ``"torch"``: a :class:`TorchBench` (state as torch tensors; options ``torch_device``,
      ``dtype``; torch is imported when one is made).

    ``options`` are the chosen class's keywords (``n_threads``, ``dtype``, ``state_dir``, ...).
    Raises :class:`~analogmem.errors.SettingError` for another backend."""
    if backend == "torch":
        return TorchBench(device, n_cells, seed, **options)
    if backend not in BACKENDS:
        raise SettingError(f"backend must be one of {BACKENDS}, got {backend!r}")
    return EmulatedBench(device, n_cells, seed, backend="numpy" if backend == "numpy" else "cython", **options)
