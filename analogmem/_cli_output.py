"""What every ``analogmem`` command gives back besides its own table: the ``--json`` and
``--plot`` files, the one-line refusal and the exit status.

Exit status, the same for every command and sub-command:

====  ==================================================================================
0     done
1     the run started and failed: an instrument stopped answering, timed out or reported an
      error (:class:`~analogmem.errors.InstrumentError`), or a run's own check failed (the
      DDP replicas of ``analogmem dsgd`` ended different)
2     refused input: a bad option, setting, card, table or path (any other
      :class:`~analogmem.errors.AnalogMemError`), a usage error argparse reports, or a
      missing optional dependency; nothing was run, or what was written is kept as stated
130   interrupted (Ctrl-C)
====  ==================================================================================

A refusal is one line on stderr, ``analogmem COMMAND: error: ErrorClass: message``, with the
exception's notes (e.g. which rows a characterisation kept) on the same line.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Callable

from .errors import AnalogMemError, InstrumentError

__all__ = ["EXIT_OK", "EXIT_FAILED", "EXIT_REFUSED", "EXIT_INTERRUPTED", "exit_status", "refuse", "interrupted",
           "missing_extra", "write_outputs", "run_standalone"]

EXIT_OK = 0
EXIT_FAILED = 1
EXIT_REFUSED = 2
EXIT_INTERRUPTED = 130


def exit_status(exc: BaseException) -> int:
    """The exit status of a command that raised ``exc``: 1 for a failure of the run itself
    (an instrument error), 2 for a refused input (every other error)."""
    return EXIT_FAILED if isinstance(exc, InstrumentError) else EXIT_REFUSED


def refuse(command: str, exc: BaseException) -> int:
    """Print ``exc`` as the one line ``COMMAND: error: ErrorClass: message [notes]`` on stderr;
    return its exit status (:func:`exit_status`)."""
    notes = "".join(f" ({note})" for note in getattr(exc, "__notes__", []))
    print(f"{command}: error: {type(exc).__name__}: {exc}{notes}", file=sys.stderr)
    return exit_status(exc)


def interrupted(command: str, what: str = "") -> int:
    """Print that ``command`` was interrupted (and ``what`` that leaves behind); return 130."""
    print(f"{command}: interrupted (Ctrl-C){'; ' + what if what else ''}", file=sys.stderr)
    return EXIT_INTERRUPTED


#: Top-level modules of the optional dependencies → the extra that installs them.
_EXTRAS: dict[str, str] = {
    "torch": "ml", "sklearn": "ml", "mlxtend": "ml", "threadpoolctl": "ml",
    "pyvisa": "instrument", "pyvisa_py": "instrument", "pymeasure": "instrument",
    "transformers": "llm", "constriction": "llm",
    "flwr": "fl", "ray": "fl",
}


def missing_extra(argv: list[str], exc: ModuleNotFoundError) -> int:
    """Print the one line naming the extra that provides the module ``exc`` names and return
    2 (a missing optional dependency is a refused input); a module that no extra provides is
    a bug and re-raised."""
    top = (exc.name or "").split(".")[0]
    if top not in _EXTRAS:
        raise exc
    extra = "fl" if argv and argv[0] == "fl" else _EXTRAS[top]
    print(f"analogmem {argv[0] if argv else ''}: error: {type(exc).__name__}: needs the optional dependency "
          f"{top!r}, installed by the {extra!r} extra: pip install 'analogmem[{extra}]'", file=sys.stderr)
    return EXIT_REFUSED


def write_outputs(args: argparse.Namespace, payload: dict, plot: Callable[[Path], Any] | None = None) -> None:
    """Write ``--json`` (``payload`` with its provenance: the seed and every parsed option) and
    ``--plot`` (``plot(path)`` draws the PNG; both written atomically, folders made) when the
    command line asked for them, and say so."""
    from ._io import write_json

    if getattr(args, "json", None):
        write_json(args.json, payload, seed=getattr(args, "seed", None), settings=vars(args))
        print(f"wrote {args.json}")
    if getattr(args, "plot", None) and plot is not None:
        plot(args.plot)
        print(f"wrote {args.plot}")


def run_standalone(add_subparser: Callable[[Any], Any], argv: list[str] | None = None) -> int:
    """A command module's own entry point (``python -m analogmem.privacy.cli privacy rrsc ...``):
    its ``add_subparser`` under a parser named ``analogmem``, run with the exit statuses and the
    one-line refusal of ``analogmem`` itself."""
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(argv)
    return run_guarded(argv, lambda: args.func(args))


def run_guarded(argv: list[str], body: Callable[[], Any]) -> int:
    """``body()``'s exit status (None: 0), with the one-line refusal of an
    :class:`~analogmem.errors.AnalogMemError`, Ctrl-C and a missing extra instead of a traceback
    (``analogmem`` and every standalone command entry point run through here)."""
    command = f"analogmem {argv[0]}" if argv else "analogmem"
    try:
        return int(body() or 0)
    except AnalogMemError as exc:
        return refuse(command, exc)
    except KeyboardInterrupt:
        return interrupted(command)
    except ModuleNotFoundError as exc:
        return missing_extra(argv, exc)
