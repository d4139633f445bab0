"""The ``analogmem`` command line.

Each feature module contributes its subcommand through an ``add_subparser(subparsers)``
function; this module only assembles them. ``analogmem demo`` runs the main job (store a
ResNet on emulated RRAM) with embedded defaults; ``analogmem cells`` shows the cell physics.
"""

from __future__ import annotations

import argparse
import importlib
import json
import sys

from ._version import __version__
from .calibrate import cli as calibrate_cli
from .emulator.bench import kernels_info
from .emulator.cells import bundled_devices, load_device
from .errors import AnalogMemError
from .jobs import cells_demo, store_resnet
from .instrument.cli import add_subparser as add_bench_subparser
from .privacy.cli import add_subparser as add_privacy_subparser
from .pruning.cli import add_subparser as add_prune_subparser

__all__ = ["main", "build_parser"]


def _devices(args: argparse.Namespace) -> int:
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
    info = {"version": __version__, "kernels": kernels_info(), "devices": bundled_devices()}
    print(json.dumps(info, indent=2))
    return 0


#: Commands whose modules pull in heavy libraries (torch, Flower, transformers): listed in
#: ``analogmem -h`` but imported only when run; ``module.main(argv)`` parses their command line.
_DELEGATED: dict[str, tuple[str, str]] = {
    "fl": ("analogmem.federated.cli", "federated learning on Flower: FedPM, KLMS, FedAvg (thesis ch.6-7)"),
    "dsgd": ("analogmem.dsgd.cli", "rTop-k / top-k / random-k sparsified SGD as DDP comm hooks (thesis ch.5)"),
    "deltazip": ("analogmem.deltazip.cli", "GPT-Zip: compress a finetuned LM's delta to its base (thesis ch.4)"),
}


#: Top-level modules of the optional dependencies → the extra that installs them.
_EXTRAS: dict[str, str] = {
    "torch": "ml", "sklearn": "ml", "mlxtend": "ml", "threadpoolctl": "ml",
    "pyvisa": "instrument", "pyvisa_py": "instrument", "pymeasure": "instrument",
    "transformers": "llm", "constriction": "llm",
    "flwr": "fl", "ray": "fl",
}


def _missing_extra(argv: list[str], exc: ModuleNotFoundError) -> int:
    """One line naming the extra that provides the module ``exc`` names (exit status 2);
    a module that no extra provides is a bug and re-raised."""
    top = (exc.name or "").split(".")[0]
    if top not in _EXTRAS:
        raise exc
    extra = "fl" if argv and argv[0] == "fl" else _EXTRAS[top]
    print(f"analogmem {argv[0] if argv else ''}: error: needs the optional dependency {top!r}, "
          f"installed by the {extra!r} extra: pip install 'analogmem[{extra}]'", file=sys.stderr)
    return 2


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="analogmem", description="Analog memory (PCM/RRAM) emulator for ML.")
    parser.add_argument("--version", action="version", version=f"analogmem {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    store_resnet.add_subparser(sub, "demo")
    store_resnet.add_subparser(sub, "store")
    cells_demo.add_subparser(sub)
    calibrate_cli.add_subparser(sub)
    add_bench_subparser(sub)
    add_privacy_subparser(sub)
    add_prune_subparser(sub)
    for name, (_, help_text) in _DELEGATED.items():
        sub.add_parser(name, help=help_text, add_help=False)
    p = sub.add_parser("devices", help="list the bundled device cards",
                       description="List the bundled device cards: range, drift, read noise, relaxation, source.")
    p.add_argument("--json", default=None, help="write the list as JSON here")
    p.set_defaults(func=_devices)
    p = sub.add_parser("info", help="version, compiled kernels, bundled cards",
                       description="Print the version, the compiled kernels' build (SIMD, OpenMP) and the bundled "
                                   "cards as JSON.")
    p.set_defaults(func=_info)
    return parser


#: Paths each command reads and writes, by attribute of its parsed arguments, checked
#: (:func:`~analogmem._io.check_paths`) before any work starts: files read (must exist),
#: other inputs (may be card names), files written.
_FILES_READ = ("data", "targets_csv", "checkpoint", "table", "bench_config")
_MAYBE_READ = ("device",)
_WRITTEN = ("out", "json", "plot", "port_file")


def _check_paths(args: argparse.Namespace) -> None:
    from ._io import check_paths

    def opts(names: tuple[str, ...]) -> dict[str, object]:
        return {f"--{n.replace('_', '-')}" if n != "data" else n: getattr(args, n) for n in names
                if getattr(args, n, None) is not None}

    outputs, folders = opts(_WRITTEN), {}
    if args.command == "cells":  # --out is the folder of demo.json and demo.png
        folders = {"--out": outputs.pop("--out")}
        outputs.setdefault("--json", f"{args.out}/demo.json")
        outputs.setdefault("--plot", f"{args.out}/demo.png")
    check_paths(inputs=opts(_MAYBE_READ), files=opts(_FILES_READ), outputs=outputs, folders=folders)


def main(argv: list[str] | None = None) -> int:
    """Run ``analogmem ARGV``. A bad setting or input (any :class:`AnalogMemError`) is printed
    as one line naming it, with exit status 2, instead of a traceback."""
    argv = sys.argv[1:] if argv is None else list(argv)
    try:
        if argv and argv[0] in _DELEGATED:
            return int(importlib.import_module(_DELEGATED[argv[0]][0]).main(argv) or 0)
        parser = build_parser()
        args = parser.parse_args(argv)
        if not getattr(args, "func", None):
            parser.print_help()
            return 2
        seed = getattr(args, "seed", None)
        if isinstance(seed, int) and seed < 0:
            from .errors import SettingError

            raise SettingError(f"--seed must be an integer >= 0, got {seed}")
        _check_paths(args)
        return int(args.func(args) or 0)
    except AnalogMemError as exc:
        print(f"analogmem {argv[0] if argv else ''}: error: {type(exc).__name__}: {exc}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print(f"analogmem {argv[0] if argv else ''}: interrupted", file=sys.stderr)
        return 130
    except ModuleNotFoundError as exc:
        return _missing_extra(argv, exc)


if __name__ == "__main__":
    sys.exit(main())
