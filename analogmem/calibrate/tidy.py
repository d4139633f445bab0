"""The tidy calibration table (README, "Calibrating a card from your own cells"): one reader that every calibrator uses.

A tidy table (CSV or Parquet; one row per read) has unit-suffixed columns:

* exactly one target column: ``target_S`` (target conductance), ``target_V`` (write-pulse
  voltage) or ``target_level`` (level index);
* exactly one read column: ``read_value_S`` (conductance) or ``read_value_ohm`` (resistance);
* optional: ``device``, ``time_s``, ``temperature_K``, ``pulses``, ``success``, ``cell``.

:func:`load_table` opens any table (path or DataFrame) with errors that name the file;
:func:`read_tidy` validates a read table — or a lab's own table whose target and read
columns are named (:class:`ColumnMap`: ``target_column="write_voltage_V"``,
``read_column="read_resistance_ohm"``, units from the suffix or given); :func:`screen_outliers`
finds implausible and far outlying reads, refused or dropped (and listed); the write-verify reader
(:func:`analogmem.calibrate.write_verify.read_write_verify`) builds on :func:`load_table`.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = ["load_table", "read_tidy", "log_conductance", "screen_outliers", "ColumnMap", "TARGET_COLUMNS",
           "READ_COLUMNS", "OPTIONAL_COLUMNS", "TIDY_COLUMNS", "TARGET_UNITS", "READ_UNITS", "PLAUSIBLE_CONDUCTANCE_S",
           "OUTLIER_IQR_MULTIPLE", "BIMODAL_GAP_LN", "MAX_TABLE_BYTES"]

#: Target column → card input domain.
TARGET_COLUMNS = {"target_S": "conductance", "target_V": "voltage", "target_level": "level"}
#: Read columns and how each becomes a conductance in S.
READ_COLUMNS = ("read_value_S", "read_value_ohm")
OPTIONAL_COLUMNS = ("device", "time_s", "temperature_K", "pulses", "success", "cell")
#: The columns, in order, of a tidy table analogmem writes (one row per read; e.g.
#: :func:`analogmem.instrument.characterise`): a conductance target and read, then the optional ones.
TIDY_COLUMNS = ("target_S", "read_value_S", *OPTIONAL_COLUMNS)


#: The largest table file read (bytes): a measured table of 10⁷ reads is a few hundred MB.
MAX_TABLE_BYTES = 4 << 30


def load_table(data: Any, what: str = "table") -> tuple[Any, str]:
    """A copy of a DataFrame, or a CSV/Parquet file read, and a label for error messages.

    Raises:
        CalibrationError: no such file, not a regular file (a FIFO or device is never
            read), a file larger than :data:`MAX_TABLE_BYTES`, duplicate column names, or a
            file that does not parse as a table.
    """
    import pandas as pd

    if isinstance(data, pd.DataFrame):
        df, label = data.copy(), what
    else:
        path = Path(data)
        if not path.exists():
            from .._data import missing_data_hint

            raise CalibrationError(f"{path}: no such file{missing_data_hint(path)}")
        if not path.is_file():
            raise CalibrationError(f"{path}: not a regular file (a folder, device or FIFO is not read as a table)")
        if path.stat().st_size > MAX_TABLE_BYTES:
            raise CalibrationError(f"{path}: {path.stat().st_size} bytes, more than the {MAX_TABLE_BYTES} B a "
                                   "calibration table may have; split it or thin its reads")
        parquet = path.suffix.lower() in (".parquet", ".pq")
        try:
            df = pd.read_parquet(path) if parquet else pd.read_csv(path)
            header = None if parquet else pd.read_csv(path, header=None, nrows=1, dtype=str).iloc[0].tolist()
        except ImportError as exc:
            raise CalibrationError(f"{path}: reading Parquet needs pyarrow or fastparquet (pip install pyarrow), "
                                   f"or save the table as CSV ({exc})") from None
        except Exception as exc:  # noqa: BLE001 - any parser failure is the user's file
            raise CalibrationError(f"{path}: cannot parse as a table: {exc}") from None
        label = str(path)
        if header is not None:  # pandas renames a repeated CSV header (x, x.1): look at the raw one
            dup = sorted({str(c) for c in header if header.count(c) > 1})
            if dup:
                raise CalibrationError(f"{label}: column name(s) {dup} appear more than once in the header; "
                                       "which one is meant cannot be told: rename or drop the copies")
    dup = sorted({str(c) for c in df.columns[df.columns.duplicated()]})
    if dup:
        raise CalibrationError(f"{label}: column name(s) {dup} appear more than once; rename or drop the copies")
    return df, label


#: Units a mapped target column may carry: unit → (tidy column, factor to its unit).
TARGET_UNITS: dict[str, tuple[str, float]] = {
    "S": ("target_S", 1.0), "mS": ("target_S", 1e-3), "uS": ("target_S", 1e-6), "µS": ("target_S", 1e-6),
    "nS": ("target_S", 1e-9), "V": ("target_V", 1.0), "mV": ("target_V", 1e-3), "level": ("target_level", 1.0),
}
#: Units a mapped read column may carry: unit → (tidy column, factor to its unit).
READ_UNITS: dict[str, tuple[str, float]] = {
    "S": ("read_value_S", 1.0), "mS": ("read_value_S", 1e-3), "uS": ("read_value_S", 1e-6),
    "µS": ("read_value_S", 1e-6), "nS": ("read_value_S", 1e-9),
    "ohm": ("read_value_ohm", 1.0), "Ohm": ("read_value_ohm", 1.0), "Ω": ("read_value_ohm", 1.0),
    "kohm": ("read_value_ohm", 1e3), "kOhm": ("read_value_ohm", 1e3), "kΩ": ("read_value_ohm", 1e3),
    "Mohm": ("read_value_ohm", 1e6), "MOhm": ("read_value_ohm", 1e6), "MΩ": ("read_value_ohm", 1e6),
}


@dataclass(frozen=True)
class ColumnMap:
    """Which columns of a lab's own table are the target and the read (see :func:`read_tidy`).

    ``target_column``/``read_column``: column names (None: the tidy name is expected);
    ``target_unit``/``read_unit``: their units (None: taken from the name's last ``_``
    suffix, e.g. ``write_voltage_V`` → V, ``R_kohm`` → kΩ). Units: targets
    :data:`TARGET_UNITS`, reads :data:`READ_UNITS`.
    """

    target_column: str | None = None
    read_column: str | None = None
    target_unit: str | None = None
    read_unit: str | None = None

    def kwargs(self) -> dict[str, str | None]:
        """The keyword arguments of :func:`read_tidy`."""
        return {"target_column": self.target_column, "read_column": self.read_column,
                "target_unit": self.target_unit, "read_unit": self.read_unit}


def _unit(label: str, column: str, given: str | None, units: dict[str, Any], flag: str) -> str:
    """The unit of a mapped column: ``given``, else its name's suffix; must be in ``units``."""
    suffix = column.rsplit("_", 1)[-1] if "_" in column else ""
    if given is not None and given in units and suffix in units and suffix != given:
        raise CalibrationError(f"{label}: column {column!r} says its unit is {suffix!r} but {flag} says {given!r}; "
                               "rename the column or drop the flag")
    unit = given if given is not None else suffix
    if unit not in units:
        if given is not None:
            what = f"unit {given!r} is not a unit analogmem understands for this role"
        elif unit:
            what = f"the suffix {unit!r} of column {column!r} is not a unit analogmem understands for this role"
        else:
            what = f"column {column!r} has no unit suffix"
        raise CalibrationError(f"{label}: {what}; give the unit with {flag} UNIT (one of {', '.join(units)})")
    return unit


#: The unit of each tidy column.
_TIDY_UNIT = {"target_S": "S", "target_V": "V", "target_level": "level", "read_value_S": "S", "read_value_ohm": "ohm"}


def _role(role: str, df: Any, label: str, column: str | None, unit: str | None,
          units: dict[str, tuple[str, float]]) -> dict[str, Any]:
    """Where one role (``"target"`` or ``"read"``) of a table comes from: ``column`` (its
    source column), ``unit``, ``as`` (the tidy column it becomes) and ``factor``."""
    tidy_names = tuple(TARGET_COLUMNS) if role == "target" else READ_COLUMNS
    tidy = [c for c in tidy_names if c in df.columns and c != column]
    if column is not None:
        if tidy:
            raise CalibrationError(f"{label}: two columns for the {role} role: {column!r} (mapped) and {tidy[0]!r}; "
                                   "drop one or map the other")
        u = _unit(label, column, unit, units, f"--{role}-unit")
        return {"column": column, "unit": u, "as": units[u][0], "factor": units[u][1]}
    if unit is not None:
        raise CalibrationError(f"{label}: --{role}-unit needs --{role}-column")
    if len(tidy) != 1:
        columns = [str(c) for c in df.columns]
        raise CalibrationError(f"{label}: need exactly one {role} column of {', '.join(tidy_names)}; found "
                               f"{tidy or 'none'} among columns {columns}; map a lab's own columns with "
                               f"{_guess_flags(columns)} (read_tidy(..., target_column=, read_column=))")
    return {"column": tidy[0], "unit": _TIDY_UNIT[tidy[0]], "as": tidy[0], "factor": 1.0}


def _guess_flags(columns: list[str]) -> str:
    """The flags that would map a lab table's columns, guessed from their unit suffixes."""
    def suffix(c: str) -> str:
        return c.rsplit("_", 1)[-1] if "_" in c else ""

    read = next((c for c in columns if suffix(c) in READ_UNITS and suffix(c) not in ("S", "mS", "uS", "µS", "nS")),
                None) or next((c for c in columns if suffix(c) in READ_UNITS and "read" in c.lower()), None)
    target = next((c for c in columns if c != read and suffix(c) in TARGET_UNITS), None)
    return (f"--target-column {target or 'NAME'} --read-column {read or 'NAME'}"
            + ("" if target else " --target-unit UNIT") + ("" if read else " --read-unit UNIT"))


def read_tidy(data: Any, *, target_column: str | None = None, read_column: str | None = None,
              target_unit: str | None = None, read_unit: str | None = None) -> "Any":
    """Load and validate a tidy calibration table, or a lab's own table with its target and
    read columns named.

    Args:
        data: a path to a CSV or Parquet file, or a pandas DataFrame.
        target_column, read_column: the columns holding the write target and the read value
            when they are not named the tidy way (e.g. ``write_voltage_V``,
            ``read_resistance_ohm``); None expects the tidy names.
        target_unit, read_unit: their units (targets: S, mS, uS, nS, V, mV, level; reads:
            S, mS, uS, nS, ohm, kohm, Mohm); None takes the unit from the column name's
            last ``_`` suffix. Values are converted to the tidy column's unit (S, V, level;
            S or Ω).

    Returns:
        a pandas DataFrame with the validated columns under their tidy names (a copy); its
        ``attrs["column_mapping"]`` records, per role, the source column, its unit, the
        tidy column and the factor applied.

    Raises:
        CalibrationError: the file cannot be read or parsed; a required column is missing
            or ambiguous (the message lists the columns found and the flags that would map
            them); a mapped column is absent, maps two roles, or competes with a tidy column
            of its role; a unit is not understood; a value is missing/non-numeric; or a
            resistance/conductance is not positive — the message names the column and the
            first offending row.
    """
    import pandas as pd

    df, label = load_table(data)
    columns = [str(c) for c in df.columns]
    for flag, col in (("--target-column", target_column), ("--read-column", read_column)):
        if col is not None and col not in df.columns:
            raise CalibrationError(f"{label}: {flag} {col!r} is not a column of the table; found {columns}")
    if target_column is not None and target_column == read_column:
        raise CalibrationError(f"{label}: column {target_column!r} is mapped to both the target and the read role")
    mapping = {"target": _role("target", df, label, target_column, target_unit, TARGET_UNITS),
               "read": _role("read", df, label, read_column, read_unit, READ_UNITS)}
    target_src, read_src = mapping["target"]["column"], mapping["read"]["column"]
    if target_src == read_src:
        raise CalibrationError(f"{label}: column {target_src!r} is mapped to both the target and the read role")
    if len(df) == 0:
        raise CalibrationError(f"{label}: the table has no rows")
    optional = tuple(c for c in ("time_s", "temperature_K", "pulses") if c in df.columns)
    for col in (target_src, read_src) + optional:
        values = pd.to_numeric(df[col].where(~_not_real(df[col])), errors="coerce")
        bad = ~np.isfinite(values.to_numpy(dtype=float))
        if col in optional:  # optional columns may be left empty, but not hold text or inf
            bad &= df[col].notna().to_numpy()
        if bad.any():
            row = int(np.argmax(bad))
            raise CalibrationError(f"{label}: column {col!r}, row {row}: {_show(df[col].iloc[row])} is not a finite number")
        df[col] = values.astype(float)
    read = df[read_src].to_numpy()
    if np.any(read <= 0):
        row = int(np.argmax(read <= 0))
        raise CalibrationError(f"{label}: column {read_src!r}, row {row}: {_show(read[row])} is not positive (a "
                               f"{'resistance' if mapping['read']['as'].endswith('ohm') else 'conductance'} must be > 0)")
    for m in mapping.values():
        if m["column"] != m["as"]:
            values = df.pop(m["column"])
            df[m["as"]] = values * m["factor"] if m["factor"] != 1.0 else values
    df.attrs["column_mapping"] = mapping
    df.attrs["source"] = label
    return df


#: Reads outside this conductance range (S) are not measurements of a memory cell:
#: 1 fS (1 PΩ, below what a source-measure unit resolves at read voltages) to 1 kS (1 mΩ,
#: a short).
PLAUSIBLE_CONDUCTANCE_S = (1e-15, 1e3)
#: Robust rule: a read whose ln g lies beyond ``OUTLIER_IQR_MULTIPLE`` interquartile ranges
#: outside the quartiles of its group (target level, and time) is an outlier. Tukey's
#: "far out" fence is 3; measured channels are heavy-tailed (the Stanford PCM levels reach
#: 12.4 IQRs), so the fence is at 25 IQRs — about 34 σ for a Gaussian group: it catches
#: unit mix-ups (×1000 is 6.9 in ln g) and absurd values, never a genuine read.
OUTLIER_IQR_MULTIPLE = 25.0
#: A group whose sorted ln g has an empty gap wider than this (2.5 decades, a factor 316)
#: with at least :data:`BIMODAL_MIN_FRACTION` of its reads on each side is two groups in
#: one: a unit mix-up (S and µS, Ω and kΩ in one column) that the IQR rule cannot see
#: when both halves are large. No device level spans such an empty gap.
BIMODAL_GAP_LN = 2.5 * np.log(10.0)
BIMODAL_MIN_FRACTION = 0.05


def screen_outliers(df: Any, by: list[str], *, drop: bool) -> tuple[Any, list[dict[str, Any]]]:
    """Find implausible and outlying reads of a validated tidy table.

    A read is flagged if its conductance lies outside :data:`PLAUSIBLE_CONDUCTANCE_S`, or
    if its ln g lies more than :data:`OUTLIER_IQR_MULTIPLE` interquartile ranges outside
    the quartiles of its group (rows sharing the ``by`` columns; groups of fewer than 8
    reads are judged by the plausible range only).

    Returns ``(table, dropped)``: with ``drop`` the table without the flagged rows and
    the list of them (``row`` — 0-based position in the table as read —, ``target``,
    ``read_value``, ``unit``, ``reason``); with nothing flagged the table itself and [].

    Raises:
        CalibrationError: reads are flagged and ``drop`` is False; the message lists the
            first ones and says how to exclude them.
    """
    label = df.attrs.get("source", "table")
    y = log_conductance(df)
    read_col = "read_value_S" if "read_value_S" in df.columns else "read_value_ohm"
    g = np.exp(y)
    lo, hi = PLAUSIBLE_CONDUCTANCE_S
    reason = np.full(len(df), "", dtype=object)
    implausible = ~((g >= lo) & (g <= hi))
    reason[implausible] = f"outside the plausible range [{lo:g}, {hi:g}] S of a memory cell's conductance"
    keys = df[by].to_numpy() if by else np.zeros((len(df), 1))
    _, group = np.unique(keys, axis=0, return_inverse=True)
    group = np.asarray(group).reshape(-1)
    for k in np.unique(group):
        idx = np.flatnonzero((group == k) & ~implausible)
        if idx.size < 8:
            continue
        ys = np.sort(y[idx])
        gaps = np.diff(ys)
        cut = int(np.argmax(gaps)) if gaps.size else 0
        low_n = cut + 1
        if gaps.size and gaps[cut] > BIMODAL_GAP_LN and \
                min(low_n, idx.size - low_n) >= max(2, BIMODAL_MIN_FRACTION * idx.size):
            where = ", ".join(f"{c} = {_show(df[c].iloc[idx[0]])}" for c in by) or "the table"
            lo_med, hi_med = np.exp(np.median(ys[:low_n])), np.exp(np.median(ys[low_n:]))
            raise CalibrationError(
                f"{label}: the reads of {where} fall into two clusters {hi_med / lo_med:.3g}x apart ({low_n} reads "
                f"around {lo_med:.3g} S, {idx.size - low_n} around {hi_med:.3g} S) with nothing between: a unit "
                f"mix-up in one column (S and uS, ohm and kohm)? Fix the table; such reads are not dropped")
        q1, q3 = np.percentile(y[idx], [25, 75])
        iqr = q3 - q1
        fence = OUTLIER_IQR_MULTIPLE * iqr
        far = idx[(y[idx] < q1 - fence) | (y[idx] > q3 + fence)]
        if far.size:
            reason[far] = (f"ln g more than {OUTLIER_IQR_MULTIPLE:g} interquartile ranges ({iqr:.3g}) outside the "
                           f"quartiles of its group")
    flagged = np.flatnonzero(reason != "")
    if flagged.size == 0:
        return df, []
    target_col = next(c for c in TARGET_COLUMNS if c in df.columns)
    unit = "S" if read_col == "read_value_S" else "ohm"
    dropped = [{"row": int(i), "target": float(df[target_col].iloc[i]), "read_value": float(df[read_col].iloc[i]),
                "unit": unit, "reason": str(reason[i])} for i in flagged]
    if not drop:
        shown = "; ".join(f"row {d['row']}: {read_col} = {d['read_value']:g} at {target_col} = {d['target']:g} "
                          f"is {d['reason']}" for d in dropped[:3])
        more = f" (and {len(dropped) - 3} more)" if len(dropped) > 3 else ""
        raise CalibrationError(f"{label}: {len(dropped)} read(s) are implausible or far outliers: {shown}{more}. "
                               "Fix the table, or exclude them with --drop-outliers (drop_outliers=True); the fit "
                               "report then lists every dropped read")
    keep = np.ones(len(df), dtype=bool)
    keep[flagged] = False
    out = df[keep].copy()
    out.attrs = dict(df.attrs)
    return out, dropped


def _not_real(column: Any) -> np.ndarray:
    """Per entry of a table column: True for booleans and complex numbers, which are not
    the real numbers a target or read is (they would otherwise be read as 0/1 or lose
    their imaginary part)."""
    kind = column.dtype.kind
    if kind in "bc":
        return np.ones(len(column), dtype=bool)
    if kind != "O":
        return np.zeros(len(column), dtype=bool)
    return np.array([isinstance(v, (bool, np.bool_, complex, np.complexfloating)) for v in column], dtype=bool)


def _show(value: Any) -> str:
    """A table cell as a user would write it (numbers plain, text quoted)."""
    return repr(float(value)) if isinstance(value, (int, float, np.number)) else repr(value)


def log_conductance(df: Any) -> np.ndarray:
    """ln(g/S) of every read of a validated tidy table."""
    if "read_value_S" in df.columns:
        return np.log(df["read_value_S"].to_numpy(dtype=float))
    return -np.log(df["read_value_ohm"].to_numpy(dtype=float))
