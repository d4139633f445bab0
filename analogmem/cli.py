"""The ``analogmem`` command line.

Every command is one row of :data:`COMMANDS`: its name, the ``module:function`` that adds its
parser to an argparse sub-parser collection (its options, description and ``func``), and the
one-line summary ``analogmem -h`` lists. Only the module of the command being run is imported,
so ``analogmem -h`` and the light commands never import torch, Flower or PyVISA.
``analogmem demo`` runs the main job (store a ResNet on emulated RRAM) with embedded defaults;
``analogmem cells`` shows the cell physics. Exit statuses and the one-line refusal are
:mod:`analogmem._cli_output`'s, the same for every command.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys
from typing import Any

from ._cli_output import EXIT_REFUSED, run_guarded
from ._version import __version__

__all__ = ["COMMANDS", "main", "build_parser"]


def _devices(args: argparse.Namespace) -> int:
    from .emulator.cells import bundled_devices, load_device

    rows = []
    for name in bundled_devices():
        d = load_device(name)
        rows.append({"name": name, "technology": d.technology, "input": d.input,
                     "g_min_uS": d.g_min_S * 1e6, "g_max_uS": d.g_max_S * 1e6, "drift": d.drift.model,
                     "read_noise": d.read_noise.model, "relaxation": d.relaxation.model,
                     "source": d.source.get("citation", "")})
    if args.json:
        from ._io import write_json

        write_json(args.json, {"devices": rows})
    for r in rows:
        print(f"{r['name']:<22} {r['technology']:<5} g in [{r['g_min_uS']:g}, {r['g_max_uS']:g}] µS  "
              f"drift={r['drift']}, read noise={r['read_noise']}, relaxation={r['relaxation']}\n"
              f"{'':<22} {r['source']}")
    return 0


def _info(args: argparse.Namespace) -> int:
    from .emulator.bench import kernels_info
    from .emulator.cells import bundled_devices

    info = {"version": __version__, "kernels": kernels_info(), "devices": bundled_devices()}
    print(json.dumps(info, indent=2))
    return 0


def _add_demo(subparsers: Any) -> None:
    from .jobs import store_resnet

    store_resnet.add_subparser(subparsers, "demo")


def _add_devices(subparsers: Any) -> None:
    p = subparsers.add_parser("devices", description="List the bundled device cards: range, drift, read noise, "
                                                     "relaxation, source.")
    p.add_argument("--json", default=None, help="write the list as JSON here")
    p.set_defaults(func=_devices)


def _add_info(subparsers: Any) -> None:
    p = subparsers.add_parser("info", description="Print the version, the compiled kernels' build (SIMD, OpenMP) "
                                                  "and the bundled cards as JSON.")
    p.set_defaults(func=_info)


#: Every command: name → (``module:function`` adding its parser, summary listed by ``analogmem -h``).
COMMANDS: dict[str, tuple[str, str]] = {
    "demo": ("analogmem.cli:_add_demo", "the main job: accuracy against cells per weight for naive, robust and "
                                        "joint analog storage and digital + ECC, and against time"),
    "store": ("analogmem.jobs.store_resnet:add_subparser",
              "the ch.3 job: a ResNet on emulated analog memory, accuracy against cells per weight, analog coding "
              "vs digital + ECC, over N chips (Ray by default)"),
    "cells": ("analogmem.jobs.cells_demo:add_subparser",
              "emulate multi-level cells and a weight tensor on PCM and RRAM over time"),
    "calibrate": ("analogmem.calibrate.cli:add_subparser", "fit a device card from a tidy table of measured reads"),
    "bench": ("analogmem.instrument.cli:add_subparser", "drive a bench through PyVISA (or its SCPI emulator)"),
    "privacy": ("analogmem.privacy.cli:add_subparser",
                "private mean estimation (RRSC) and noisy-data compression (thesis ch.8-9)"),
    "prune": ("analogmem.pruning.cli:add_subparser",
              "rate-distortion pruning: SuRP vs R(D) and vs magnitude pruning (thesis ch.2)"),
    "fl": ("analogmem.federated.cli:add_subparser",
           "communication-efficient federated learning on Flower: FedPM, KLMS, FedAvg (thesis ch.6-7)"),
    "dsgd": ("analogmem.dsgd.cli:add_subparser",
             "rTop-k / top-k / random-k sparsified SGD as DDP comm hooks (thesis ch.5)"),
    "deltazip": ("analogmem.deltazip.cli:add_subparser",
                 "GPT-Zip: compress a finetuned LM's delta to its base (OBS prune + 2-bit quantise; thesis ch.4)"),
    "devices": ("analogmem.cli:_add_devices", "list the bundled device cards"),
    "info": ("analogmem.cli:_add_info", "version, compiled kernels, bundled cards"),
}


def add_command(subparsers: Any, name: str) -> None:
    """Import the module of command ``name`` and add its full parser to ``subparsers``."""
    module, _, function = COMMANDS[name][0].partition(":")
    getattr(importlib.import_module(module), function)(subparsers)


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The ``analogmem`` parser: every command listed with its summary, and ``command`` (None:
    every command; ``""``: none) with its full parser, which imports its module."""
    parser = argparse.ArgumentParser(prog="analogmem", description="Analog memory (PCM/RRAM) emulator for ML.")
    parser.add_argument("--version", action="version", version=f"analogmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, (_, summary) in COMMANDS.items():
        if command is None or name == command:
            add_command(sub, name)
        else:
            sub.add_parser(name, help=summary, add_help=False)
    return parser


#: Paths each command reads and writes, by attribute of its parsed arguments, checked
#: (:func:`~analogmem._io.check_paths`) before any work starts: files read (must exist),
#: other inputs (may be card names), files written.
_FILES_READ = ("data", "targets_csv", "checkpoint", "table", "bench_config")
_MAYBE_READ = ("device",)
_WRITTEN = ("out", "json", "plot", "port_file")
#: Commands whose ``--out`` is a folder they write into (made if missing), not a file.
_OUT_FOLDER = ("cells", "deltazip")


def _check_paths(args: argparse.Namespace) -> None:
    from ._io import check_paths

    def opts(names: tuple[str, ...]) -> dict[str, object]:
        return {f"--{n.replace('_', '-')}" if n != "data" else n: getattr(args, n) for n in names
                if getattr(args, n, None) is not None}

    outputs, folders = opts(_WRITTEN), {}
    if args.command in _OUT_FOLDER and "--out" in outputs:
        folders = {"--out": outputs.pop("--out")}
    if args.command == "cells":  # --out is the folder of demo.json and demo.png
        outputs.setdefault("--json", f"{args.out}/demo.json")
        outputs.setdefault("--plot", f"{args.out}/demo.png")
    check_paths(inputs=opts(_MAYBE_READ), files=opts(_FILES_READ), outputs=outputs, folders=folders)


def main(argv: list[str] | None = None) -> int:
    """Run ``analogmem ARGV``. A refused setting or input (an :class:`AnalogMemError`) is one
    line naming it and its class, with the exit status of :mod:`analogmem._cli_output`
    (2 for refused input, 1 for a failed instrument run), instead of a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)

    def body() -> int:
        parser = build_parser(argv[0] if argv and argv[0] in COMMANDS else "")
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return EXIT_REFUSED
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and seed < 0:
            from .errors import SettingError

            raise SettingError(f"--seed must be an integer >= 0, got {seed}")
        _check_paths(args)
        return int(args.func(args) or 0)

    return run_guarded(argv, body)


if __name__ == "__main__":
    sys.exit(main())
