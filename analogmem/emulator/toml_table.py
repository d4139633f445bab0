"""Typed reading of a TOML file's tables, with errors that name the file and the field.

The one validation path of analogmem's TOML inputs: device cards
(:func:`analogmem.emulator.cells.parse_card`, :class:`~analogmem.errors.DeviceCardError`) and
bench files (:func:`analogmem.instrument.limits.load_bench_config`,
:class:`~analogmem.errors.SettingError`). A refusal reads
``KIND SOURCE: [table].field: what is wrong``, e.g.
``device card pcm-x: [drift].nu: -0.1 is outside [0, 1]`` or
``bench config bench.toml: [limits].max_set_V: expected a number, got 'high'``.
"""

from __future__ import annotations

import math
from typing import Any

from ..errors import DeviceCardError

__all__ = ["MAX_LIST_LENGTH", "TomlTable"]

#: The most numbers in one list: a calibrated card is a few kB; a 100 MB one took 53 s to refuse.
MAX_LIST_LENGTH = 100_000


class TomlTable:
    """Typed access to one TOML table (``data``, at ``path`` in the file ``source``), with
    errors ``error(f"{kind} {source}: [path].key: ...")`` that name file and field.

    Every accessor marks its key as used; :meth:`done` refuses the keys nobody read
    (misspellings)."""

    def __init__(self, source: str, path: str, data: Any, *, kind: str = "device card",
                 error: type[Exception] = DeviceCardError):
        self.source, self.path, self.kind, self.error = source, path, kind, error
        if not isinstance(data, dict):
            self.fail(f"expected a table, got {type(data).__name__}")
        self.data: dict[str, Any] = data
        self.used: set[str] = set()

    def fail(self, msg: str, key: str | None = None) -> None:
        """Raise ``error`` naming the file, this table and ``key``."""
        if self.path:
            where = f"[{self.path}]" + (f".{key}" if key else "")
        else:  # the root: its keys are the file's tables
            where = f"[{key}]" if key else "top level"
        raise self.error(f"{self.kind} {self.source}: {where}: {msg}")

    def get(self, key: str, default: Any = ..., ) -> Any:
        """The raw value of ``key`` (``default`` if absent; absent without one is refused)."""
        self.used.add(key)
        if key not in self.data:
            if default is ...:
                self.fail("missing required field", key)
            return default
        return self.data[key]

    def table(self, key: str, default: Any = ...) -> "TomlTable":
        """The sub-table ``key`` (``default``, e.g. ``{}``, if absent)."""
        return TomlTable(self.source, f"{self.path}.{key}" if self.path else key, self.get(key, default),
                         kind=self.kind, error=self.error)

    def string(self, key: str, default: Any = ..., choices: tuple[str, ...] | None = None) -> str:
        """A string, one of ``choices`` if given."""
        v = self.get(key, default)
        if not isinstance(v, str):
            self.fail(f"expected a string, got {v!r}", key)
        if choices is not None and v not in choices:
            self.fail(f"{v!r} is not one of {', '.join(repr(c) for c in choices)}", key)
        return v

    def number(self, key: str, default: Any = ..., lo: float = -math.inf, hi: float = math.inf,
               lo_open: bool = False, allow_inf: bool = False) -> float:
        """A real number (no bool) in ``[lo, hi]`` (``(lo, hi]`` with ``lo_open``), finite
        unless ``allow_inf``."""
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, (int, float)):
            self.fail(f"expected a number, got {v!r}", key)
        v = float(v)
        if math.isnan(v) or (math.isinf(v) and not allow_inf):
            self.fail(f"must be finite, got {v}", key)
        if v < lo or (lo_open and v == lo) or v > hi:
            bound = f"{'(' if lo_open else '['}{lo:g}, {hi:g}]"
            self.fail(f"{v:g} is outside {bound}", key)
        return v

    def integer(self, key: str, default: Any = ..., lo: int | None = None) -> int:
        """A whole number (no bool, no float) >= ``lo``."""
        v = self.get(key, default)
        if isinstance(v, bool) or not isinstance(v, int):
            self.fail(f"expected an integer, got {v!r}", key)
        if lo is not None and v < lo:
            self.fail(f"{v} is below the minimum {lo}", key)
        return int(v)

    def boolean(self, key: str, default: Any = ...) -> bool:
        """``true`` or ``false``."""
        v = self.get(key, default)
        if not isinstance(v, bool):
            self.fail(f"expected true or false, got {v!r}", key)
        return v

    def numbers(self, key: str, min_len: int = 1) -> tuple[float, ...]:
        """A list of at least ``min_len`` finite numbers (at most :data:`MAX_LIST_LENGTH`)."""
        v = self.get(key)
        if not isinstance(v, list) or len(v) < min_len:
            self.fail(f"expected a list of at least {min_len} number(s), got {str(v)[:200]}", key)
        if len(v) > MAX_LIST_LENGTH:
            self.fail(f"{len(v)} numbers, more than the {MAX_LIST_LENGTH} a list may hold", key)
        out = []
        for i, e in enumerate(v):
            if isinstance(e, bool) or not isinstance(e, (int, float)) or not math.isfinite(e):
                self.fail(f"element {i} must be a finite number, got {e!r}", key)
            out.append(float(e))
        return tuple(out)

    def done(self) -> None:
        """Refuse the fields no accessor read."""
        unknown = sorted(set(self.data) - self.used)
        if unknown:
            self.fail(f"unknown field(s) {', '.join(unknown)} (misspelt?)")
