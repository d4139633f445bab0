"""Deprecated names kept importable for one release (PEP 562 module ``__getattr__``).

A renamed public class stays reachable under its old name: reading the old name warns
``DeprecationWarning`` naming the new one and returns the very same object, so
``isinstance`` checks and pickles keep working.
"""

from __future__ import annotations

import warnings
from typing import Any, Callable


def renamed(module: str, names: dict[str, str], namespace: dict[str, Any],
            fallback: Callable[[str], Any] | None = None) -> Callable[[str], Any]:
    """A module ``__getattr__`` that maps each old name in ``names`` to the new name's object
    (from ``namespace``, the module's ``globals()``, else from ``fallback``, a module's lazy
    loader), warning at each read; any other name goes to ``fallback`` or is an AttributeError."""

    def __getattr__(name: str) -> Any:
        if name in names:
            new = names[name]
            warnings.warn(f"{module}.{name} is renamed {new}; the old name will be removed",
                          DeprecationWarning, stacklevel=2)
            return namespace[new] if new in namespace or fallback is None else fallback(new)
        if fallback is not None:
            return fallback(name)
        raise AttributeError(f"module {module!r} has no attribute {name!r}")

    return __getattr__
