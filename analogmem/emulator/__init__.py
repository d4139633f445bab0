"""The emulator core (layer 1): device cards and cell models, the :class:`Bench` protocol,
:class:`EmulatedBench` over the compiled kernels, and the numpy reference.

* :mod:`.cells` — :class:`DeviceModel` (a card's statistics), :func:`load_device`,
  :func:`parse_card`, the Arrhenius acceleration factor;
* :mod:`.pulse_response` — a card's write-verify pulse-response model (per-window table, or
  shared over windows, start states, schemes and runs);
* :mod:`.bench` — the :class:`Bench` protocol, :class:`EmulatedBench`,
  :class:`WriteVerify`, :class:`ProgramReport`, :class:`ChunkedTargets`;
* :mod:`.factory` — :func:`make_bench`, one factory over the backends (``"kernels"``,
  ``"numpy"``, ``"torch"``);
* :mod:`.card_params` — a card flattened into the numbers of the model's formulas (what the
  compiled kernels pack once per bench, ``_kernels.KernelParams``, and the torch backend reads);
* :mod:`.chipstate` — where per-cell state lives: in memory (allocated on first use) or in
  files (``EmulatedBench(..., state_dir=...)``, chips larger than memory);
* :mod:`.torch_bench` — :class:`TorchBench`, the same model on torch tensors (CPU or CUDA),
  made by ``make_bench(..., backend="torch")``; torch is imported only when one is made;
* :mod:`.reference` — the same model in plain numpy, drawing the same numbers (the oracle
  the kernels are tested against);
* :mod:`._streams` — the counter-based random stream (Philox4x32-10, Box–Muller normals),
  numpy twin of the compiled kernels'.

Imports only the base modules (:mod:`analogmem.errors`, :mod:`analogmem._seeding`, …).
"""

from .bench import Bench, ChunkedTargets, EmulatedBench, ProgramReport, WriteVerify, default_threads, kernels_info
from .cells import DeviceModel, bundled_devices, load_device, parse_card
from .factory import make_bench
from .torch_bench import TorchBench

__all__ = ["Bench", "ChunkedTargets", "EmulatedBench", "ProgramReport", "WriteVerify", "default_threads", "kernels_info",
           "make_bench",
           "DeviceModel", "bundled_devices", "load_device", "parse_card", "TorchBench"]
