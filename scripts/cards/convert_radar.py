"""Convert the RADAR RRAM measurements (Levy et al., IEEE TED 2021) into tidy tables.

The lab files (``"$ANALOGMEM_DATA/rram-radar"``, tab-separated, no header) become:

* ``write-verify``: one row per programmed cell — ``target_level`` (index of the cell's
  window among the sorted distinct lower bounds of its run), ``window_lo_ohm``,
  ``window_hi_ohm`` (inf when the file says 1e10, "above rlo"), ``read_value_ohm`` (final
  resistance), ``pulses`` (SET + RESET pulses the loop applied, also apart as ``set_pulses`` and
  ``reset_pulses``; 0 when the first verify read was already in the window — the data README's
  "nsets + nresets − 1" would make those −1), ``success``, ``cell``, ``device`` (file stem),
  ``experiment`` (the run: the file stem, or ``STEM-run1``, ``STEM-run2``, ... for a file whose
  window set or protocol changes from some pass over the array on — ``writetest7``'s first two
  passes use the ``attempts`` protocol and another level map), ``prior_programs`` (how many
  programs of the cell into this same window directly precede the row in its run: 0 when the
  cell comes from another window or is programmed for the first time), ``scheme``
  (``ispp`` from the file name; ``radar``, or ``radar-attempts`` for a run that uses the
  ``attempts`` columns), ``step_V`` (ISPP word-line step) and
  ``max_pulses`` (ISPP: the pulses of one polarity after which the loop gives up, which every
  failed cell spent; empty where no budget shows);
* ``reads``: one row per read of ``readtest{b}bpc{n}-{pre,post}bake`` — ``target_level``
  (cell i of the 1024-cell array is level ``(i + i // 32) % 2**b``; files of 2048 or 3072 rows
  hold repeated read passes, column ``read_pass``), ``read_value_ohm``, ``time_s`` (bake duration:
  0 before, 1800 after), ``temperature_K`` (bake temperature; empty before, for experiment 7,
  whose bake the source does not state, and for 2-bit files, whose bakes the data README does
  not give), ``bits_per_cell``, ``cell``, ``device`` (``radar-expt{n}`` for 3 bits per cell,
  ``radar-{b}bpc-expt{n}`` otherwise);
* ``relaxation``: ``relaxation-prebake`` — ``target_level`` (row i is ``(i + i // 32) % 32``),
  ``read_value_ohm``, ``cell``;
* ``ber``: ``ber-time-temp`` — ``bits_per_cell``, ``temperature_K``, ``time_s``, ``ber``.

    python -m scripts.cards.convert_radar "$ANALOGMEM_DATA/rram-radar" OUT_DIR

writes ``OUT_DIR/radar-{write-verify,reads,relaxation,ber}.csv`` (those whose files are there:
a folder of write-verify traces alone is fine).
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

import numpy as np

from analogmem._data import missing_data_hint
from analogmem._io import atomic_write_text
from analogmem.errors import CalibrationError

WRITE_COLUMNS = ("addr", "nreads", "nsets", "nresets", "rf", "if", "rlo", "rhi", "success", "attempts1", "attempts2")
#: Bake of each readtest experiment (the data README): temperature (K), duration (s).
#: Experiment 7 (after 5k endurance cycles) states no bake: left empty, not guessed.
BAKES = {1: (353.15, 1800.0), 2: (373.15, 1800.0), 3: (373.15, 1800.0), 4: (393.15, 1800.0),
         5: (393.15, 1800.0), 6: (393.15, 1800.0), 7: (float("nan"), float("nan"))}
#: "rhi = 1e10" means the window is open above rlo.
OPEN_WINDOW_OHM = 1e10


def _read_matrix(path: Path, n_columns: int):
    """The file's numbers as a float array of ``n_columns`` columns; errors name the row."""
    import pandas as pd

    if not Path(path).is_file():
        raise CalibrationError(f"{path}: no such file{missing_data_hint(path)}")
    try:
        raw = pd.read_csv(path, sep="\t", header=None, dtype=str)
    except Exception as exc:  # noqa: BLE001 - any parser failure is the file's
        raise CalibrationError(f"{path}: cannot parse as a tab-separated table: {exc}") from None
    if raw.shape[1] != n_columns:
        raise CalibrationError(f"{path}: expected {n_columns} columns, found {raw.shape[1]}")
    values = raw.apply(pd.to_numeric, errors="coerce").to_numpy(dtype=float)
    bad = ~np.isfinite(values)
    if bad.any():
        row, col = map(int, np.argwhere(bad)[0])
        raise CalibrationError(f"{path}: row {row}, column {col}: {raw.iat[row, col]!r} is not a number")
    return values


#: Pulse schemes, from the file name: RADAR write tests and incremental-step-pulse programming
#: (ISPP; ``wlstep`` is the word-line voltage step, V).
ISPP_NAME = re.compile(r"ispp-(?P<bpc>\d)bpc-wlstep(?P<step>\d+(?:\.\d+)?)")


def _passes(addr: np.ndarray) -> np.ndarray:
    """Index of the pass over the array each row belongs to: a pass ends where the address
    goes back down (the loop starts over at the first cell)."""
    return np.concatenate([[0], np.cumsum(np.diff(addr) < 0)]).astype(int)


def _overlap(a: tuple[float, float], b: tuple[float, float]) -> bool:
    return a != b and a[0] < b[1] and b[0] < a[1]


def _segments(path: Path, addr: np.ndarray, windows: list[tuple[float, float]], attempts: np.ndarray) -> np.ndarray:
    """Split a trace file into runs that each hold one set of windows and one protocol.

    A run is a sequence of passes over the array; a new run starts at a pass whose windows
    overlap (without equalling) a window of the run so far, or that switches protocol (the
    ``attempts`` columns in use or not). Two
    overlapping windows within one pass cannot be split and are refused, all of them named."""
    passes = _passes(addr)
    run = np.zeros(addr.size, dtype=int)
    seen: set[tuple[float, float]] = set()
    protocol = None
    current = 0
    clashes = []
    for p in range(int(passes[-1]) + 1 if addr.size else 0):
        rows = np.flatnonzero(passes == p)
        pw = sorted({windows[i] for i in rows})
        inner = [(a, b) for i, a in enumerate(pw) for b in pw[i + 1:] if _overlap(a, b)]
        if inner:
            clashes.extend((int(rows[0]), a, b) for a, b in inner)
            continue
        uses = bool(np.mean(attempts[rows]) > 0.5)
        conflict = any(_overlap(w, s) for w in pw for s in seen) or (protocol is not None and uses != protocol)
        if conflict and seen:
            current += 1
            seen = set()
        seen.update(pw)
        protocol = uses
        run[rows] = current
    if clashes:
        listed = "; ".join(f"[{a[0]:g}, {a[1]:g}] and [{b[0]:g}, {b[1]:g}] Ohm (pass from row {r})"
                           for r, a, b in clashes)
        raise CalibrationError(f"{path}: overlapping verify windows within one pass over the array: {listed}; "
                               "the file mixes two window sets row by row: split it into one file per window set")
    return run


def _run_protocol(run: np.ndarray, uses_attempts: np.ndarray) -> np.ndarray:
    """Per row: whether its run mostly uses the ``attempts`` columns."""
    share = np.bincount(run, weights=uses_attempts.astype(float)) / np.bincount(run)
    return share[run] > 0.5


def write_verify_table(path: Path):
    """Tidy table of one write-verify trace file (``writetest*.csv``, ``ispp-*.csv``).

    A file that holds several runs (a second set of windows, or another protocol, from some
    pass on) is split: its runs are the ``experiment`` values ``STEM`` (one run) or
    ``STEM-run1``, ``STEM-run2``, ... Levels are numbered per run."""
    import pandas as pd

    m = _read_matrix(path, len(WRITE_COLUMNS))
    col = {name: m[:, i] for i, name in enumerate(WRITE_COLUMNS)}
    if np.any(col["rf"] <= 0):
        row = int(np.argmax(col["rf"] <= 0))
        raise CalibrationError(f"{path}: row {row}: final resistance rf = {col['rf'][row]} is not positive")
    hi = np.where(col["rhi"] >= OPEN_WINDOW_OHM, np.inf, col["rhi"])
    windows = list(zip(col["rlo"].tolist(), hi.tolist()))
    addr = col["addr"].astype(int)
    run = _segments(path, addr, windows, (col["attempts1"] + col["attempts2"] > 0).astype(float))
    n_runs = int(run.max()) + 1 if run.size else 1
    experiment = np.array([path.stem if n_runs == 1 else f"{path.stem}-run{r + 1}" for r in run], dtype=object)
    level = np.zeros(addr.size, dtype=int)
    for r in range(n_runs):
        sel = run == r
        level[sel] = np.searchsorted(np.unique(col["rlo"][sel]), col["rlo"][sel])
    ispp = ISPP_NAME.fullmatch(path.stem)
    failed = col["success"] == 0
    budget = np.nan
    if ispp and failed.any():
        # ISPP gives up after a fixed number of pulses of one polarity: every failed cell spent it
        spent = np.maximum(col["nsets"][failed], col["nresets"][failed])
        if np.all(spent == spent[0]):
            budget = float(spent[0])
    df = pd.DataFrame({
        "target_level": level,
        "window_lo_ohm": col["rlo"],
        "window_hi_ohm": hi,
        "read_value_ohm": col["rf"],
        # every pulse the loop applied: the data README's "pulses used = nsets + nresets - 1"
        # gives -1 for the cells (10,780 of them) whose first verify read was already in window
        "pulses": (col["nsets"] + col["nresets"]).astype(int),
        "set_pulses": col["nsets"].astype(int),
        "reset_pulses": col["nresets"].astype(int),
        "success": col["success"].astype(bool),
        "cell": addr,
        "device": path.stem,
        "experiment": experiment,
        # RADAR runs that use the attempts columns (writetest7's first two passes) follow another
        # protocol (no zero-pulse cells, another level map): a scheme of their own
        "scheme": "ispp" if ispp else np.where(_run_protocol(run, col["attempts1"] + col["attempts2"] > 0),
                                                "radar-attempts", "radar"),
        "step_V": float(ispp.group("step")) if ispp else np.nan,
        "max_pulses": budget,
    })
    df["prior_programs"] = _prior_programs(df)
    return df


def _prior_programs(df) -> np.ndarray:
    """Per row: how many programs of the same cell into the same window, in a row, precede it
    in its run (0: the cell comes from another window or is programmed for the first time)."""
    out = np.zeros(len(df), dtype=int)
    last: dict[tuple, tuple] = {}
    for i, (run, cell, lo, hi) in enumerate(zip(df.experiment, df.cell, df.window_lo_ohm, df.window_hi_ohm)):
        prev = last.get((run, cell))
        out[i] = prev[1] + 1 if prev is not None and prev[0] == (lo, hi) else 0
        last[(run, cell)] = ((lo, hi), out[i])
    return out


#: Cells per array read; files with more rows hold repeated read passes over the same cells.
ARRAY_CELLS = 1024


def _level_of_row(n_rows: int, n_levels: int) -> np.ndarray:
    i = np.arange(n_rows) % ARRAY_CELLS
    return (i + i // 32) % n_levels


def reads_table(path: Path, experiment: int, baked: bool, bits_per_cell: int = 3):
    """Tidy table of one ``readtest{b}bpc{n}-{pre,post}bake.csv`` file (``b`` bits per cell:
    cell i is level ``(i + i // 32) % 2**b``)."""
    import pandas as pd

    r = _read_matrix(path, 1)[:, 0]
    if np.any(r <= 0):
        row = int(np.argmax(r <= 0))
        raise CalibrationError(f"{path}: row {row}: resistance {r[row]} is not positive")
    # the data README states the bakes of the 3-bit experiments only
    temperature, duration = BAKES.get(experiment, (np.nan, np.nan)) if bits_per_cell == 3 else (np.nan, np.nan)
    return pd.DataFrame({
        "target_level": _level_of_row(r.size, 2 ** bits_per_cell),
        "read_value_ohm": r,
        "time_s": duration if baked else 0.0,
        "temperature_K": temperature if baked else np.nan,
        "cell": np.arange(r.size) % ARRAY_CELLS,
        "read_pass": np.arange(r.size) // ARRAY_CELLS,
        "bits_per_cell": bits_per_cell,
        "device": f"radar-expt{experiment}" if bits_per_cell == 3 else f"radar-{bits_per_cell}bpc-expt{experiment}",
    })


#: File name patterns the converter reads (``convert`` names them in its errors).
TRACE_PATTERNS = ("writetest*.csv", "ispp-*.csv")
READ_PATTERN = "readtest*bpc*-*bake.csv"
READ_NAME = re.compile(r"readtest(?P<bpc>[1-9])bpc(?P<expt>\d+)-(?P<when>pre|post)bake")


def convert(src_dir: str | Path) -> dict:
    """All RADAR tables (name → DataFrame) found in the folder ``src_dir``.

    Write-verify traces and readtests are each optional (a folder of traces only gives the
    ``write-verify`` table); a folder with neither is refused, naming the patterns looked for
    and the files that were there."""
    import pandas as pd

    src = Path(src_dir)
    if not src.is_dir():
        raise CalibrationError(f"{src}: not a folder{missing_data_hint(src)}")
    traces = [p for pattern in TRACE_PATTERNS for p in sorted(src.glob(pattern))]
    reads = sorted(src.glob(READ_PATTERN))
    if not traces and not reads:
        present = sorted(p.name for p in src.iterdir())
        shown = ", ".join(present[:8]) + (f", ... ({len(present)} in all)" if len(present) > 8 else "")
        raise CalibrationError(f"{src}: no RADAR files: looked for {', '.join(TRACE_PATTERNS)} (write-verify traces) "
                               f"and {READ_PATTERN} (reads); found {shown or 'nothing'}")
    tables = {}
    if traces:
        tables["write-verify"] = pd.concat([write_verify_table(p) for p in traces], ignore_index=True)
    parts = []
    for p in reads:
        match = READ_NAME.fullmatch(p.stem)
        if not match:
            raise CalibrationError(f"{p}: read file name does not follow readtest<bits>bpc<experiment>-<pre|post>bake.csv")
        parts.append(reads_table(p, int(match.group("expt")), match.group("when") == "post", int(match.group("bpc"))))
    if parts:
        tables["reads"] = pd.concat(parts, ignore_index=True)
    relax = src / "relaxation-prebake.csv"
    if relax.exists():
        r = _read_matrix(relax, 1)[:, 0]
        tables["relaxation"] = pd.DataFrame({"target_level": _level_of_row(r.size, 32), "read_value_ohm": r,
                                             "cell": np.arange(r.size) % ARRAY_CELLS})
    ber = src / "ber-time-temp.csv"
    if ber.exists():
        raw = pd.read_csv(ber)
        need = ["BPC", "Temperature (K)", "Time (s)", "BER"]
        missing = [c for c in need if c not in raw.columns]
        if missing:
            raise CalibrationError(f"{ber}: missing column(s) {missing}")
        tables["ber"] = pd.DataFrame({"bits_per_cell": raw["BPC"], "temperature_K": raw["Temperature (K)"],
                                      "time_s": raw["Time (s)"], "ber": raw["BER"]})
    return tables


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src", help="folder with the RADAR files")
    ap.add_argument("out", help="folder for the tidy CSV files")
    args = ap.parse_args(argv)
    try:
        tables = convert(args.src)
    except CalibrationError as exc:
        print(f"convert_radar: error: {exc}", file=sys.stderr)
        return 2
    for name, df in tables.items():
        path = Path(args.out) / f"radar-{name}.csv"
        atomic_write_text(path, df.to_csv(index=False))
        print(f"wrote {len(df)} rows to {path}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
