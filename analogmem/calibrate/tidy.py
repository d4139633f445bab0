"""The tidy calibration table (DESIGN §3): one reader that every calibrator uses.

A tidy table (CSV or Parquet; one row per read) has unit-suffixed columns:

* exactly one target column: ``target_S`` (target conductance), ``target_V`` (write-pulse
  voltage) or ``target_level`` (level index);
* exactly one read column: ``read_value_S`` (conductance) or ``read_value_ohm`` (resistance);
* optional: ``device``, ``time_s``, ``temperature_K``, ``pulses``, ``success``, ``cell``.

:func:`load_table` opens any table (path or DataFrame) with errors that name the file;
:func:`read_tidy` validates a read table; the write-verify reader
(:func:`analogmem.calibrate.write_verify.read_write_verify`) builds on :func:`load_table`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = ["load_table", "read_tidy", "log_conductance", "TARGET_COLUMNS", "READ_COLUMNS", "OPTIONAL_COLUMNS"]

#: Target column → card input domain.
TARGET_COLUMNS = {"target_S": "conductance", "target_V": "voltage", "target_level": "level"}
#: Read columns and how each becomes a conductance in S.
READ_COLUMNS = ("read_value_S", "read_value_ohm")
OPTIONAL_COLUMNS = ("device", "time_s", "temperature_K", "pulses", "success", "cell")


def load_table(data: Any, what: str = "table") -> tuple[Any, str]:
    """A copy of a DataFrame, or a CSV/Parquet file read, and a label for error messages.

    Raises:
        CalibrationError: no such file, or a file that does not parse as a table.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        return data.copy(), what
    path = Path(data)
    try:
        df = pd.read_parquet(path) if path.suffix.lower() in (".parquet", ".pq") else pd.read_csv(path)
    except FileNotFoundError:
        raise CalibrationError(f"{path}: no such file") from None
    except Exception as exc:  # noqa: BLE001 - any parser failure is the user's file
        raise CalibrationError(f"{path}: cannot parse as a table: {exc}") from None
    return df, str(path)


def read_tidy(data: Any) -> "Any":
    """Load and validate a tidy calibration table.

    Args:
        data: a path to a CSV or Parquet file, or a pandas DataFrame.

    Returns:
        a pandas DataFrame with the validated columns (a copy).

    Raises:
        CalibrationError: the file cannot be read or parsed, a required column is missing or
            ambiguous, a value is missing/non-numeric, or a resistance/conductance is not
            positive — the message names the column and the first offending row.
    """
    import pandas as pd

    df, label = load_table(data)
    targets = [c for c in TARGET_COLUMNS if c in df.columns]
    reads = [c for c in READ_COLUMNS if c in df.columns]
    if len(targets) != 1:
        raise CalibrationError(f"{label}: need exactly one target column of {', '.join(TARGET_COLUMNS)}; "
                               f"found {targets or 'none'} among columns {list(df.columns)}")
    if len(reads) != 1:
        raise CalibrationError(f"{label}: need exactly one read column of {', '.join(READ_COLUMNS)}; "
                               f"found {reads or 'none'} among columns {list(df.columns)}")
    if len(df) == 0:
        raise CalibrationError(f"{label}: the table has no rows")
    optional = tuple(c for c in ("time_s", "temperature_K", "pulses") if c in df.columns)
    for col in (targets[0], reads[0]) + optional:
        values = pd.to_numeric(df[col], errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if col in optional:  # optional columns may be left empty, but not hold text or inf
            bad &= df[col].notna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise CalibrationError(f"{label}: column {col!r}, row {row}: {_show(df[col].iloc[row])} is not a finite number")
        df[col] = values.astype(float)
    read = df[reads[0]].to_numpy()
    if np.any(read <= 0):
        row = int(np.argmax(read <= 0))
        raise CalibrationError(f"{label}: column {reads[0]!r}, row {row}: {_show(read[row])} is not positive "
                               f"(a {'resistance' if reads[0].endswith('ohm') else 'conductance'} must be > 0)")
    return df


def _show(value: Any) -> str:
    """A table cell as a user would write it (numbers plain, text quoted)."""
    return repr(float(value)) if isinstance(value, (int, float, np.number)) else repr(value)


def log_conductance(df: Any) -> np.ndarray:
    """ln(g/S) of every read of a validated tidy table."""
    if "read_value_S" in df.columns:
        return np.log(df["read_value_S"].to_numpy(dtype=float))
    return -np.log(df["read_value_ohm"].to_numpy(dtype=float))
