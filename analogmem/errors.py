"""The exception hierarchy of analogmem.

Every error analogmem raises on purpose derives from :class:`AnalogMemError`, so a
caller can catch the whole family at once. Errors about bad values also derive from
:class:`ValueError` (and address errors from :class:`IndexError`) so that generic code
that expects the builtin types keeps working. Messages name the offending field or
value and the allowed range.
"""

from __future__ import annotations

__all__ = [
    "AnalogMemError",
    "DeviceCardError",
    "TargetRangeError",
    "AddressError",
    "ReadTimeError",
    "BenchSizeError",
    "SettingError",
    "SettingTypeError",
    "KernelUnavailableError",
    "CalibrationError",
    "InstrumentError",
    "SafetyLimitError",
    "StorageError",
    "PathError",
    "PathMissingError",
    "PathExistsError",
]


class AnalogMemError(Exception):
    """Base class of every error raised by analogmem."""


class DeviceCardError(AnalogMemError, ValueError):
    """A device card is malformed, incomplete or physically impossible.

    The message names the card (file or bundled name) and the offending field, e.g.
    ``[programming].coefficients_uS``.
    """


class TargetRangeError(AnalogMemError, ValueError):
    """Programming targets are not real numbers, NaN, infinite, outside the card's input
    range, or of the wrong shape; or a time (``t_s``, ``seconds``, a temperature) is not a
    real number in its allowed range. Raised before any cell is touched: the bench state
    is unchanged."""


class ReadTimeError(AnalogMemError, ValueError):
    """``read(t_s=...)`` asked for a moment earlier than the bench clock: no bench reads in
    the past (the emulator refuses it as a real bench must). The bench is unchanged."""


class BenchSizeError(AnalogMemError, ValueError):
    """A bench size (``n_cells``) is not a positive integer, or its per-cell state needs
    more memory than is available. Raised before anything is allocated."""


class SettingError(AnalogMemError, ValueError):
    """An option outside its domain (a bench's ``backend``, ``n_threads``, ``dtype`` or
    ``torch_device``; a ``WriteVerify`` or encoder parameter; a number of chips). Raised
    when the object is made or the call starts, before anything changes."""


class SettingTypeError(SettingError, TypeError):
    """An option of the wrong type (a seed that is not an int, sequence, SeedSequence or
    Generator; a ``verify`` that is not a ``WriteVerify``; a results payload that is not a
    dict). Also a :class:`TypeError`, as the builtin call would raise."""


class AddressError(AnalogMemError, IndexError):
    """Cell addresses are out of range, duplicated, or of the wrong type/shape."""


class KernelUnavailableError(AnalogMemError, ImportError):
    """The compiled Cython kernels could not be imported (package not built)."""


class CalibrationError(AnalogMemError, ValueError):
    """Calibration data cannot be fitted (missing columns, too few reads per level,
    non-positive resistances, ...). The message names the level/column/row."""


class InstrumentError(AnalogMemError):
    """An instrument timed out, answered garbage, or reported an error."""


class SafetyLimitError(AnalogMemError, ValueError):
    """A bench command would exceed a safety limit; it was refused before being sent."""


class StorageError(AnalogMemError):
    """A stored model or chip snapshot is missing, corrupted, or inconsistent."""


class PathError(AnalogMemError, ValueError):
    """A command's path that cannot be used: an input file that is missing or not a regular
    file (a folder, device or FIFO), or an output (``--out``, ``--json``, ``--plot``, ...)
    that resolves to an input or to another output, or whose place cannot be written (a
    file where a folder should be, a read-only file system, no permission). Raised before
    the command's work starts: nothing was computed and nothing written."""


class PathMissingError(PathError, FileNotFoundError):
    """A file the call needs (a named checkpoint, an input) does not exist. Also a
    :class:`FileNotFoundError`."""


class PathExistsError(PathError, FileExistsError):
    """An output that is never overwritten already exists (e.g. a characterisation table
    without ``append=True``). Nothing was written. Also a :class:`FileExistsError`."""
