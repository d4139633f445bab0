"""Every exception analogmem raises derives from :class:`analogmem.errors.AnalogMemError`.

``errors.py`` promises it and ``analogmem.cli.main`` relies on it: it catches only that
family and prints one line; anything else surfaces as a traceback. This scans the AST of
every module in the package for ``raise X(...)`` / ``raise X`` and resolves ``X`` in the
module's namespace (imported, so re-exports and aliases resolve as Python sees them).

Allowed outside the family, and only these (the list is explicit so that a new one is a
decision, not an accident):

- protocol exceptions a caller of a Python protocol expects by type: ``StopIteration``
  (iterators), ``NotImplementedError`` (abstract methods), ``AssertionError`` (internal
  invariant checks, a bug in analogmem rather than bad input), ``KeyboardInterrupt`` /
  ``SystemExit`` (re-raised or argparse-style exits);
- ``AttributeError`` inside a module's ``__getattr__`` or the loader it delegates to (PEP 562: ``getattr`` and
  ``hasattr`` expect exactly that type for a missing name);
- ``argparse.ArgumentTypeError`` in an argparse ``type=`` converter, and the private
  control-flow signals in :data:`ALLOWED_CONTROL_FLOW`;
- a bare ``raise`` or ``raise exc`` re-raising a caught exception (a name bound by
  ``except ... as exc``), which this scan cannot and need not type.

The compiled kernels (``ext/*.pyx``) are not scanned: their internal ``ValueError`` s are
input-shape checks behind the Python layer, which validates first.
"""

from __future__ import annotations

import ast
import builtins
import importlib
import importlib.util
import pathlib

import numpy as np
import pytest

import analogmem
from analogmem.errors import AnalogMemError

PACKAGE = pathlib.Path(analogmem.__file__).parent

#: Builtin exceptions that may be raised directly (see the module docstring for why).
ALLOWED_PROTOCOL = frozenset({
    "StopIteration",
    "NotImplementedError",
    "AssertionError",
    "KeyboardInterrupt",
    "SystemExit",
})

#: Raised in an ``argparse`` ``type=`` converter: argparse turns exactly this type into a
#: usage line and exit status 2.
ALLOWED_ARGPARSE = frozenset({"argparse.ArgumentTypeError"})

#: Private control-flow signals, raised and caught inside one module and never seen by a
#: caller: deriving them from AnalogMemError would let an ``except AnalogMemError`` in
#: between swallow a ``return`` or ``break``.
ALLOWED_CONTROL_FLOW = frozenset({
    "analogmem.deltazip.compress._Stop",     # ends a forward pass once a hook saw its inputs
    "analogmem.instrument.tsp_lua._Return",  # Lua ``return``
    "analogmem.instrument.tsp_lua._Break",   # Lua ``break``
})

#: Modules whose optional dependencies may be absent here; their raises are still scanned
#: statically (names must resolve to a class defined in analogmem.errors or the package).
_OPTIONAL_IMPORTS = ("torch", "transformers", "flwr", "pyvisa", "pymeasure", "torchvision", "matplotlib")


def _modules():
    for path in sorted(PACKAGE.rglob("*.py")):
        rel = path.relative_to(PACKAGE.parent).with_suffix("")
        parts = list(rel.parts)
        if parts[-1] == "__main__":
            continue  # running it is its import; its raises are main()'s, scanned in cli.py
        if parts[-1] == "__init__":
            parts = parts[:-1]
        yield ".".join(parts), path


def _caught_names(tree: ast.AST) -> set[str]:
    """Names bound by ``except ... as NAME`` anywhere in the module (re-raises)."""
    return {h.name for h in ast.walk(tree) if isinstance(h, ast.ExceptHandler) and h.name}


def _getattr_protocol_lines(tree: ast.AST) -> set[int]:
    """Lines of ``raise AttributeError`` inside a ``def __getattr__`` (module-level, or the one a
    factory such as ``analogmem._deprecated.renamed`` returns) or inside a module-level function
    handed to the call that makes a module's ``__getattr__`` (``__getattr__ = renamed(..., _load)``)."""
    body = getattr(tree, "body", [])
    handed = {a.id for node in body if isinstance(node, ast.Assign)
              and any(isinstance(t, ast.Name) and t.id == "__getattr__" for t in node.targets)
              and isinstance(node.value, ast.Call) for a in node.value.args if isinstance(a, ast.Name)}
    lines = set()
    for fn in ast.walk(tree):
        if isinstance(fn, ast.FunctionDef) and (fn.name == "__getattr__" or (fn in body and fn.name in handed)):
            lines |= {n.lineno for n in ast.walk(fn) if isinstance(n, ast.Raise)}
    return lines


def _raised(tree: ast.AST):
    """(line, dotted name) of each ``raise X`` / ``raise X(...)`` in the tree."""
    for node in ast.walk(tree):
        if not isinstance(node, ast.Raise) or node.exc is None:
            continue
        exc = node.exc.func if isinstance(node.exc, ast.Call) else node.exc
        parts = []
        while isinstance(exc, ast.Attribute):
            parts.append(exc.attr)
            exc = exc.value
        if isinstance(exc, ast.Name):
            parts.append(exc.id)
            yield node.lineno, ".".join(reversed(parts))
        else:  # raise some_call()(...) / raise obj[...]: not a class name
            yield node.lineno, None


def _local_imports(tree: ast.AST, modname: str, is_package: bool) -> dict[str, object]:
    """Names bound by ``from X import Y`` anywhere in the module (function-local imports
    included, which the module namespace does not show)."""
    package = modname if is_package else modname.rpartition(".")[0]
    names = {}
    for node in ast.walk(tree):
        if isinstance(node, ast.ImportFrom):
            source = importlib.util.resolve_name("." * node.level + (node.module or ""), package)
            try:
                mod = importlib.import_module(source)
            except ImportError:
                continue
            for alias in node.names:
                if hasattr(mod, alias.name):
                    names[alias.asname or alias.name] = getattr(mod, alias.name)
    return names


def _resolve(module, dotted: str, local: dict[str, object]):
    head = dotted.split(".")[0]
    if module is not None and not hasattr(module, head) and head in local:
        obj = local[head]
        for part in dotted.split(".")[1:]:
            obj = getattr(obj, part, None)
        return obj
    obj = module
    for i, part in enumerate(dotted.split(".")):
        if i == 0 and not hasattr(module, part):
            obj = getattr(builtins, part, None)
        else:
            obj = getattr(obj, part, None)
        if obj is None:
            return None
    return obj


def _offenders():
    bad, unresolved = [], []
    for modname, path in _modules():
        tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
        caught = _caught_names(tree)
        getattr_lines = _getattr_protocol_lines(tree)
        local = _local_imports(tree, modname, path.name == "__init__.py")
        try:
            module = importlib.import_module(modname)
        except ImportError as exc:  # an optional dependency is missing here
            if getattr(exc, "name", "") and exc.name.split(".")[0] in _OPTIONAL_IMPORTS:
                module = None
            else:
                raise
        for line, name in _raised(tree):
            where = f"{path.relative_to(PACKAGE.parent)}:{line}"
            if name is None or name in caught or name in ALLOWED_PROTOCOL:
                continue
            if name == "AttributeError" and line in getattr_lines or name in ALLOWED_ARGPARSE:
                continue
            if name.startswith("self.") or name[0].islower():
                continue  # an exception made by a call or held in a variable: typed where it is made
            obj = _resolve(module, name, local) if module is not None else getattr(builtins, name, None)
            if obj is None:
                if module is None:
                    continue  # a package class in a module we cannot import here
                unresolved.append(f"{where} raise {name}")
            elif isinstance(obj, type) and issubclass(obj, BaseException):
                if f"{obj.__module__}.{obj.__qualname__}" in ALLOWED_CONTROL_FLOW:
                    continue
                if not issubclass(obj, AnalogMemError):
                    bad.append(f"{where} raise {name} ({obj.__module__}.{obj.__qualname__})")
            # else: an exception instance held in a variable (re-raise of a stored error)
    return bad, unresolved


def test_every_raise_names_an_analogmem_error():
    bad, unresolved = _offenders()
    assert not bad, "exceptions outside the AnalogMemError family:\n" + "\n".join(bad)
    assert not unresolved, "raised names the scan cannot resolve:\n" + "\n".join(unresolved)


def test_the_scan_sees_a_bare_raise(tmp_path):
    """The scan is not vacuous: a bare ValueError in a module's source is reported."""
    tree = ast.parse("def f(x):\n    if x:\n        raise ValueError('x')\n    raise mod.Thing(1)\n")
    assert sorted(_raised(tree)) == [(3, "ValueError"), (4, "mod.Thing")]
    assert _resolve(analogmem, "ValueError", {}) is ValueError
    assert not issubclass(ValueError, AnalogMemError)


def test_every_error_of_analogmem_errors_is_exported_at_top_level():
    """``analogmem.ReadTimeError``, ``analogmem.BenchSizeError``, ... : the README teaches them
    by these names, so ``from analogmem import X`` works for each (and is the same class)."""
    import analogmem.errors as errors

    assert {"ReadTimeError", "BenchSizeError", "SettingError", "PathError"} <= set(errors.__all__)
    for name in errors.__all__:
        assert getattr(analogmem, name) is getattr(errors, name), name
        assert name in analogmem.__all__, name
        assert issubclass(getattr(errors, name), AnalogMemError)


def test_one_read_time_error():
    """The emulator and both instrument benches raise the one ``ReadTimeError``; the
    instrument's is a subclass under its own name, also an ``InstrumentError``."""
    import analogmem.instrument as instrument
    from analogmem.errors import InstrumentError, ReadTimeError

    assert instrument.ReadTimeError is ReadTimeError
    assert issubclass(instrument.InstrumentReadTimeError, ReadTimeError)
    assert issubclass(instrument.InstrumentReadTimeError, InstrumentError)
    assert issubclass(ReadTimeError, ValueError)  # code that caught ValueError still does


def test_builtin_bases_are_kept_for_old_except_clauses():
    from analogmem import errors

    assert issubclass(errors.SettingTypeError, TypeError) and issubclass(errors.SettingTypeError, errors.SettingError)
    assert issubclass(errors.PathMissingError, FileNotFoundError) and issubclass(errors.PathMissingError, ValueError)
    assert issubclass(errors.PathExistsError, FileExistsError) and issubclass(errors.PathExistsError, errors.PathError)


def test_the_formerly_bare_raises_are_now_in_the_family(tmp_path):
    """A few of the raises this scan made specific, called for real: each is an
    AnalogMemError (so ``analogmem.cli.main`` prints it as one line) and keeps its old base."""
    from analogmem import EmulatedBench, load_device
    from analogmem._io import write_json
    from analogmem._seeding import as_seed_sequence
    from analogmem.errors import DeviceCardError, SettingError, SettingTypeError

    with pytest.raises(SettingError, match="seed must be a non-negative integer") as exc:
        as_seed_sequence(-1)
    assert isinstance(exc.value, ValueError)
    with pytest.raises(SettingTypeError, match="seed must be None, an int") as exc:
        as_seed_sequence("7")
    assert isinstance(exc.value, TypeError)
    with pytest.raises(SettingTypeError, match="a results file holds a dict"):
        write_json(tmp_path / "r.json", [1])
    assert not (tmp_path / "r.json").exists()
    bench = EmulatedBench(load_device("pcm-nandakumar2019"), n_cells=4, seed=0)
    with pytest.raises(SettingTypeError, match="verify must be a WriteVerify"):
        bench.program([1e-6] * 4, verify="yes")
    card = load_device("pcm-nandakumar2019")
    assert not card.relaxation.enabled  # a PCM card: drift, no relaxation model
    with pytest.raises(DeviceCardError, match="has no relaxation model"):
        card.sigma_total_relaxation_S(np.array([1e-6]), 1.0)


def test_a_refusal_is_one_line_naming_its_class_with_the_documented_status(capsys, tmp_path):
    """``analogmem._cli_output``: every command refuses in one line ``COMMAND: error: Class:
    message`` (notes on the same line) and exits 2 for a refused input, 1 for an instrument
    that failed; ``write_outputs`` writes only what was asked for."""
    import argparse

    from analogmem._cli_output import EXIT_FAILED, EXIT_REFUSED, exit_status, refuse, write_outputs
    from analogmem.errors import InstrumentError, PathError, SettingError
    from analogmem.instrument.errors import InstrumentConnectionError

    err = SettingError("--rows must be an integer >= 1, got 0")
    err.add_note("nothing was sent")
    assert refuse("analogmem bench read", err) == EXIT_REFUSED == 2
    assert capsys.readouterr().err == ("analogmem bench read: error: SettingError: --rows must be an integer >= 1, "
                                       "got 0 (nothing was sent)\n")
    assert refuse("analogmem bench read", InstrumentConnectionError("no answer")) == EXIT_FAILED == 1
    assert capsys.readouterr().err == "analogmem bench read: error: InstrumentConnectionError: no answer\n"
    assert exit_status(InstrumentError("x")) == 1 and exit_status(PathError("x")) == 2

    args = argparse.Namespace(json=tmp_path / "r.json", plot=None, seed=3)
    write_outputs(args, {"rows": [1]}, plot=lambda path: (_ for _ in ()).throw(AssertionError("no --plot")))
    import json

    doc = json.loads((tmp_path / "r.json").read_text())
    assert doc["rows"] == [1] and doc["provenance"]["seed"] == 3
    assert capsys.readouterr().out == f"wrote {tmp_path / 'r.json'}\n"
