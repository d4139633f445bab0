"""pytest plugin: ``--instrument-resource ADDRESS`` opts in to the real-hardware tests
(``tests/test_instrument_hardware.py``), which are skipped without it.

Load it with ``pytest -p analogmem.instrument.pytest_plugin`` or
``pytest_plugins = ["analogmem.instrument.pytest_plugin"]`` in ``tests/conftest.py``.
"""

from __future__ import annotations

__all__ = ["pytest_addoption"]


def pytest_addoption(parser) -> None:  # noqa: ANN001 - pytest hook
    group = parser.getgroup("analogmem instrument")
    group.addoption("--instrument-resource", default=None, metavar="ADDRESS",
                    help="VISA address of a real bench (Keithley 2450 + switch matrix) for the opt-in "
                         "hardware tests; they are skipped without it")
    group.addoption("--instrument-switch", default=None, metavar="ADDRESS",
                    help="VISA address of the switch matrix when it is a separate instrument")
    group.addoption("--instrument-config", default=None, metavar="TOML",
                    help="bench config (matrix, limits, scheme) for the hardware tests")
