"""analogmem: a hardware-in-the-loop analog memory (PCM/RRAM) emulator for machine learning.

Public entry points::

    import analogmem
    am = analogmem.program_model(torch_model, "rram-wan2022", cells_per_weight=2, seed=0)
    model_1day = am.module_at(86400.0)                     # weights as read 1 day later, any order

    dev = analogmem.load_device("pcm-nandakumar2019")      # a device card
    bench = analogmem.EmulatedBench(dev, n_cells=1_000_000, seed=0)
    bench.program(g_target_S)                              # siemens, shape (n_cells,)
    g = bench.read(t_s=3600.0)                             # siemens, one hour later

Units are SI throughout: conductance in S, time in s.

The package is layered (see README, "How it is built"): the emulator core
(:mod:`analogmem.emulator`), calibration (:mod:`analogmem.calibrate`), storage
(:mod:`analogmem.storage`), models and data (:mod:`analogmem.ml`), the thesis methods and
the instrument bench, the jobs (:mod:`analogmem.jobs`), and this face with the command line.
"""

from ._version import __version__
from ._data import data_path
from .emulator.bench import Bench, EmulatedBench, ProgramReport, WriteVerify, kernels_info
from .emulator.cells import DeviceModel, bundled_devices, load_device
from .emulator.factory import make_bench
from .storage.stores import DigitalStore, EmulatedStore, Store, load_model, store_model
from .storage.analog_model import AnalogModel
from .storage.program import program_model
from .storage.sharded_model import ShardedAnalogModel
from .storage.encoders import make_encoder
from .errors import (
    AddressError,
    AnalogMemError,
    BenchSizeError,
    CalibrationError,
    DeviceCardError,
    InstrumentError,
    KernelUnavailableError,
    PathError,
    PathExistsError,
    PathMissingError,
    ReadTimeError,
    SafetyLimitError,
    SettingError,
    SettingTypeError,
    StorageError,
    TargetRangeError,
)


def __getattr__(name: str):
    """Lazily provide names whose modules need optional, heavy imports (PyVISA)."""
    if name == "InstrumentBench":
        from .instrument import InstrumentBench

        return InstrumentBench
    raise AttributeError(f"module 'analogmem' has no attribute {name!r}")


__all__ = [
    "__version__",
    "load_device",
    "bundled_devices",
    "data_path",
    "DeviceModel",
    "Bench",
    "EmulatedBench",
    "make_bench",
    "InstrumentBench",
    "ProgramReport",
    "program_model",
    "AnalogModel",
    "ShardedAnalogModel",
    "make_encoder",
    "Store",
    "EmulatedStore",
    "DigitalStore",
    "store_model",
    "load_model",
    "WriteVerify",
    "kernels_info",
    "AnalogMemError",
    "DeviceCardError",
    "TargetRangeError",
    "ReadTimeError",
    "BenchSizeError",
    "AddressError",
    "KernelUnavailableError",
    "CalibrationError",
    "InstrumentError",
    "SafetyLimitError",
    "SettingError",
    "SettingTypeError",
    "StorageError",
    "PathError",
    "PathMissingError",
    "PathExistsError",
]
