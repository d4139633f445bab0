"""Reading a programming plan's results back (the plan is written by
:func:`analogmem.instrument.make_plan` / ``analogmem bench plan``).

A plan is a tidy CSV, one row per cell to program, with the columns :data:`PLAN_COLUMNS`:
where (``plan_step``, ``cell``, ``row``, ``col``, ``tensor``, ``weight_index``), what
(``target_S``, ``window_lo_S``, ``window_hi_S``, ``v_set_first_V``) and the result columns a
lab's tester fills in (``read_value_S``, ``pulses``, ``success``, ``time_s``, ``device``). A
tester may also return its results as a separate CSV keyed by ``plan_step`` (several rows
per step for reads at several times), merged by :func:`read_plan_results`.

:func:`plan_results_data` turns such a file into what ``analogmem calibrate`` fits: the
tidy read table (channel and polynomial models) or the write-verify trace table (windows
and reads as resistances, ``target_level`` the window's index) for ``--model
write-verify``. Any other table passes through unchanged.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from ..errors import CalibrationError

__all__ = ["PLAN_COLUMNS", "PLAN_RESULT_COLUMNS", "PLAN_FORMAT", "is_plan", "read_plan_results",
           "plan_results_data"]

#: The format tag in a plan's JSON sidecar.
PLAN_FORMAT = "analogmem-programming-plan/1"
#: Columns a tester fills in.
PLAN_RESULT_COLUMNS = ("read_value_S", "pulses", "success", "time_s", "device")
#: Every column of a plan CSV, in order.
PLAN_COLUMNS = ("plan_step", "cell", "row", "col", "tensor", "weight_index", "target_S", "window_lo_S",
                "window_hi_S", "v_set_first_V", *PLAN_RESULT_COLUMNS)


def _header(path: Path) -> list[str]:
    try:
        with open(path, newline="", encoding="utf-8") as fh:
            return fh.readline().strip().lstrip("\ufeff").split(",")
    except (OSError, UnicodeDecodeError):
        return []


def is_plan(data: Any) -> bool:
    """True if ``data`` (a path) is a programming-plan CSV (its header starts with
    ``plan_step,cell,row,col``)."""
    if not isinstance(data, (str, Path)):
        return False
    p = Path(data)
    return p.suffix.lower() == ".csv" and p.is_file() and _header(p)[:4] == list(PLAN_COLUMNS[:4])


def read_plan_results(plan: Any, results: Any = None) -> Any:
    """The executed plan as a DataFrame: the plan CSV with its result columns filled, or
    the plan merged with a ``results`` CSV keyed by ``plan_step`` (columns from
    :data:`PLAN_RESULT_COLUMNS`; several rows per step allowed).

    Raises :class:`CalibrationError` naming what is wrong: a missing plan column, a step
    the plan does not have, a row without ``read_value_S`` (the plan was not executed)."""
    import pandas as pd

    try:
        df = pd.read_csv(plan, keep_default_na=True)
    except (OSError, ValueError) as exc:
        raise CalibrationError(f"{plan}: cannot read the plan: {exc}") from None
    missing = [c for c in PLAN_COLUMNS if c not in df.columns]
    if missing:
        raise CalibrationError(f"{plan}: not a programming plan, missing column(s) {missing}")
    if results is not None:
        try:
            res = pd.read_csv(results)
        except (OSError, ValueError) as exc:
            raise CalibrationError(f"{results}: cannot read the results: {exc}") from None
        if "plan_step" not in res.columns or "read_value_S" not in res.columns:
            raise CalibrationError(f"{results}: results need columns 'plan_step' and 'read_value_S', "
                                   f"has {list(res.columns)}")
        unknown = set(res.columns) - {"plan_step", *PLAN_RESULT_COLUMNS}
        if unknown:
            raise CalibrationError(f"{results}: unknown result column(s) {sorted(unknown)}; allowed: "
                                   f"plan_step, {', '.join(PLAN_RESULT_COLUMNS)}")
        bad = ~res["plan_step"].isin(df["plan_step"])
        if bad.any():
            i = int(np.argmax(bad.to_numpy()))
            raise CalibrationError(f"{results}: row {i + 2}: plan_step {res['plan_step'].iloc[i]!r} is not in "
                                   f"the plan {plan}")
        df = df.drop(columns=[c for c in res.columns if c != "plan_step"]).merge(res, on="plan_step", how="inner")
    empty = df["read_value_S"].isna()
    if empty.all():
        raise CalibrationError(f"{plan}: no row has read_value_S: the plan was not executed (fill its result "
                               "columns, or give the tester's results file)")
    if empty.any():
        raise CalibrationError(f"{plan}: {int(empty.sum())} of {len(df)} row(s) have no read_value_S (first: "
                               f"plan_step {df['plan_step'][empty].iloc[0]}); give every cell its read or drop "
                               "its row")
    return df


def plan_results_data(data: Any, model: str = "channel") -> Any:
    """``analogmem calibrate``'s input: a plan CSV becomes the table ``model`` fits (a
    DataFrame); anything else is returned unchanged."""
    if not is_plan(data):
        return data
    df = read_plan_results(data)
    if model != "write-verify":
        keep = ["target_S", "read_value_S"] + [c for c in ("time_s", "pulses", "success", "cell", "device")
                                               if c in df.columns and df[c].notna().all()]
        return df[keep].reset_index(drop=True)
    for c in ("pulses", "success"):
        if df[c].isna().any():
            raise CalibrationError(f"{data}: --model write-verify needs '{c}' on every row of the plan")
    lo, hi = df["window_lo_S"].to_numpy(float), df["window_hi_S"].to_numpy(float)
    windows = sorted(set(zip(lo.tolist(), hi.tolist())))
    level = {w: k for k, w in enumerate(windows)}
    g = df["read_value_S"].to_numpy(float)
    if np.any(g <= 0) or np.any(hi <= 0):
        raise CalibrationError(f"{data}: --model write-verify needs positive reads and windows (they become "
                               "resistances)")
    import pandas as pd

    succ = df["success"].map(lambda v: str(v).strip().lower() in ("true", "1", "1.0", "yes"))
    out = pd.DataFrame({"target_level": [level[w] for w in zip(lo.tolist(), hi.tolist())],
                        "window_lo_ohm": 1.0 / hi, "window_hi_ohm": np.where(lo > 0, 1.0 / np.maximum(lo, 1e-300),
                                                                              np.inf),
                        "read_value_ohm": 1.0 / g, "pulses": df["pulses"].astype(int), "success": succ})
    if "device" in df.columns and df["device"].notna().all():
        out["experiment"] = df["device"].astype(str)
    return out
