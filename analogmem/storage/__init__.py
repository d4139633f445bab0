"""Storage (layer 3): weights on cells and back (README "How it is built"; docs/storage.md).

* :mod:`.program` — :func:`program_model`: a torch model on a chip sized for it in one call,
  read back at any time (:mod:`.analog_model`: :class:`AnalogModel`), or over Ray workers,
  a chip each (``shards=N``; :mod:`.sharded_model`: :class:`ShardedAnalogModel`);
* :mod:`.stores` — the :class:`Store` protocol, :class:`BenchStore` over any bench,
  :class:`EmulatedStore`, :class:`DigitalStore`; :func:`store_model` / :func:`load_model`;
* :mod:`.torch_store` — :class:`TorchStore`: weights that stay torch tensors on a device
  (over the emulator's torch backend);
* :mod:`.snapshots` — a programmed chip saved to one checksummed file and re-read later;
* :mod:`.encoders` — weight tensor ⇄ cell targets (ch.3): naive, adaptive range,
  differential, slicing, repetition, MMSE decoding; k-bit + BCH digital baseline;
* :mod:`.allocate` — Fisher-weighted cell allocation under a budget (ch.3).

Imports the base modules, the emulator and the calibration layer, nothing above.
"""

from .analog_model import AnalogModel, Evaluation
from .program import program_model
from .allocate import AllocationCurves, allocate_cells, distortion_curves, fisher_diagonal, greedy_allocation
from .encoders import ReadChannel, DigitalECC, Encoder, encoder_from_spec, make_encoder
from .sharded_model import ShardedAnalogModel
from .snapshots import SNAPSHOT_FORMAT, load_snapshot, restore_emulated_bench, save_snapshot
from .stores import BenchStore, DigitalStore, EmulatedStore, Entry, ModelHandle, Store, load_model, store_model
from .torch_store import TorchStore
from .._deprecated import renamed as _renamed

__getattr__ = _renamed(__name__, {"Channel": "ReadChannel"}, globals())

__all__ = ["program_model", "AnalogModel", "ShardedAnalogModel", "Evaluation", "Store", "BenchStore", "EmulatedStore", "DigitalStore", "Entry", "ModelHandle", "store_model",
           "load_model", "TorchStore", "save_snapshot", "load_snapshot", "restore_emulated_bench", "SNAPSHOT_FORMAT",
           "ReadChannel", "Encoder", "DigitalECC", "encoder_from_spec", "make_encoder", "allocate_cells",
           "AllocationCurves", "distortion_curves", "fisher_diagonal", "greedy_allocation"]
