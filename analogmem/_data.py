"""Where the measured data sets live: one variable, ``ANALOGMEM_DATA``.

analogmem ships device cards fitted to public measurements, not the measurements
themselves. To recalibrate a card (``analogmem calibrate``, ``scripts/cards/*.py``,
``notebooks/calibrate_pcm.ipynb``), put the data sets in one folder, one sub-folder each, and
point ``ANALOGMEM_DATA`` at it::

    $ANALOGMEM_DATA/pcm-stanford/partial_reset_pcm.csv
    $ANALOGMEM_DATA/rram-radar/writetest1.csv ... ber-time-temp.csv

:data:`DATA_SETS` says where each comes from. A path into a known data set that does not
exist fails with one line naming the variable (:func:`missing_data_hint`).
"""

from __future__ import annotations

import os
from pathlib import Path

from .errors import SettingError

__all__ = ["DATA_ENV", "DATA_SETS", "data_dir", "data_path", "missing_data_hint", "DataNotFoundError"]

#: The environment variable naming the folder of the measured data sets.
DATA_ENV = "ANALOGMEM_DATA"

#: Each data set: its sub-folder → (what it is, where it comes from).
DATA_SETS: dict[str, tuple[str, str]] = {
    "pcm-stanford": (
        "partial_reset_pcm.csv: Stanford partial-RESET PCM, 40 write voltages x 380 resistance reads "
        "(Zarcone et al., Sci. Rep. 2020)",
        "public repository rzarcone/CAEs, file data/Partial_Reset_PCM.pkl (BSD-2-Clause), written as CSV with "
        "columns write_voltage_V, read_resistance_ohm"),
    "rram-radar": (
        "writetest{1..7}.csv, ispp-2bpc-wlstep{0.050,0.100}.csv, readtest3bpc{1..7}-{pre,post}bake.csv, "
        "relaxation-prebake.csv, ber-time-temp.csv: 1T1R RRAM write-verify traces, reads and bakes "
        "(Levy et al., IEEE TED 2021)",
        "public repository akashlevy/RRAM-RADAR-Tuning, folder exptdata/ (tab-separated, no header)"),
}


class DataNotFoundError(SettingError, FileNotFoundError):
    """A measured data set is not where ``ANALOGMEM_DATA`` (or the given path) says."""


def data_dir() -> Path:
    """The folder ``$ANALOGMEM_DATA``. :class:`DataNotFoundError` naming the variable and
    the data sets' sources when it is unset or not a folder."""
    value = os.environ.get(DATA_ENV, "")
    if not value:
        raise DataNotFoundError(f"{DATA_ENV} is not set: point it at the folder holding the measured data sets "
                                f"({_sources()})")
    path = Path(value)
    if not path.is_dir():
        raise DataNotFoundError(f"{DATA_ENV}={value} is not a folder: point it at the folder holding the measured "
                                f"data sets ({_sources()})")
    return path


def data_path(data_set: str, *parts: str) -> Path:
    """``$ANALOGMEM_DATA/data_set/parts...``, which must exist (:class:`DataNotFoundError`
    naming the variable and the data set's source otherwise)."""
    if data_set not in DATA_SETS:
        raise DataNotFoundError(f"no data set {data_set!r}; known: {', '.join(DATA_SETS)}")
    path = data_dir().joinpath(data_set, *parts)
    if not path.exists():
        raise DataNotFoundError(f"{path} does not exist: {DATA_ENV} must hold {data_set}/ "
                                f"({DATA_SETS[data_set][1]})")
    return path


def missing_data_hint(path: str | os.PathLike) -> str:
    """For a path that does not exist: a clause naming ``ANALOGMEM_DATA`` and the source of
    the data set the path points into, or ``""`` when it points into none of them."""
    parts = Path(path).parts
    for name, (_, source) in DATA_SETS.items():
        if name in parts:
            where = os.environ.get(DATA_ENV)
            state = f"{DATA_ENV}={where}" if where else f"{DATA_ENV} is not set"
            return (f" ({state}; the measured data sets are not shipped: put {name}/ from {source} in one "
                    f"folder and set {DATA_ENV} to it)")
    return ""


def _sources() -> str:
    return "; ".join(f"{name}/ from {source}" for name, (_, source) in DATA_SETS.items())
