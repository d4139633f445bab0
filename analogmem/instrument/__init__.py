"""Hardware in the loop: drive a real bench through PyVISA, with the emulator behind the
same API (docs/instrument.md).

* :class:`InstrumentBench` — the :class:`~analogmem.emulator.bench.Bench` protocol on a
  source-measure unit (Keithley 2450, pymeasure's driver) and a switch matrix;
* :class:`SafetyLimits`, :class:`VoltageScheme`, :class:`BenchConfig` — limits and the
  target → pulse scheme, as data (:func:`load_bench_config` reads a TOML bench file);
* :class:`ScpiEmulatorServer` — the reference bench's SCPI on a loopback socket, backed by
  an :class:`~analogmem.emulator.bench.EmulatedBench`, with fault injection;
* :class:`TspBench` — the same protocol on a Keithley 2600B (2636B, …) through TSP with the
  ``keithley2600`` driver, write-verify executed on the instrument; :class:`TspEmulatorServer`
  speaks that TSP subset on loopback (``analogmem bench serve --model 2636B``);
* :class:`VerifyPolicy` — the one verify policy both benches run;
* :func:`make_plan` — a programming plan (addresses, targets, windows, pulse scheme) for
  any tester, as tidy CSV + JSON (``analogmem bench plan``);
* :func:`characterise` — a program/verify/read-over-time sweep on any bench, written as
  the tidy calibration table (CSV, appended and flushed as it goes).

This subpackage needs PyVISA and pymeasure; ``import analogmem`` does not, and neither does
``import analogmem.instrument`` — the PyVISA parts load on first use, so the command line can
register ``analogmem bench`` (``analogmem.instrument.cli``) without importing PyVISA.
"""

from __future__ import annotations

import importlib
from typing import Any

# PyVISA-free parts load eagerly (importing the submodule ``characterise`` must not shadow
# the function of the same name); the drivers, bench and server load on first use.
from .characterise import TIDY_COLUMNS, CharacterisationResult, characterise  # noqa: E402
from .errors import (  # noqa: E402
    InstrumentConnectionError,
    InstrumentError,
    InstrumentReadTimeError,
    InstrumentReplyError,
    InstrumentReportedError,
    InstrumentTimeoutError,
    ReadTimeError,
)
from .limits import BenchConfig, SafetyLimits, VoltageScheme, load_bench_config  # noqa: E402

_LAZY = {
    "InstrumentBench": "instrument_bench", "open_adapter": "instrument_bench",
    "SourceMeter2450": "drivers", "SwitchMatrix": "drivers",
    "ScpiEmulatorServer": "scpi_server",
    "TspBench": "tsp_bench", "TspEmulatorServer": "tsp_server",
    "VerifyPolicy": "verify_policy", "check_program_request": "verify_policy",
    "ProgrammingPlan": "plan", "make_plan": "plan", "read_plan": "plan", "plan_for_model": "plan",
    "plan_for_tensors": "plan",
}


__all__ = [
    "InstrumentBench",
    "open_adapter",
    "SourceMeter2450",
    "SwitchMatrix",
    "SafetyLimits",
    "VoltageScheme",
    "BenchConfig",
    "load_bench_config",
    "ScpiEmulatorServer",
    "TspBench",
    "TspEmulatorServer",
    "VerifyPolicy",
    "check_program_request",
    "ProgrammingPlan",
    "make_plan",
    "read_plan",
    "plan_for_model",
    "plan_for_tensors",
    "characterise",
    "CharacterisationResult",
    "TIDY_COLUMNS",
    "InstrumentError",
    "InstrumentTimeoutError",
    "InstrumentReplyError",
    "InstrumentReportedError",
    "InstrumentConnectionError",
    "InstrumentReadTimeError",
    "ReadTimeError",
]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        value = getattr(importlib.import_module(f".{_LAZY[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(__all__))
