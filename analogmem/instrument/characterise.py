"""Closed-loop characterisation of any :class:`~analogmem.emulator.bench.Bench`: program levels
(optionally with write-verify), read them over time, and write the tidy calibration table.

The table (CSV) has one row per read and the unit-suffixed columns of the README's tidy table ("Calibrating a card"), in this
order: ``target_S, read_value_S, device, time_s, temperature_K, pulses, success, cell`` —
``temperature_K`` only when a temperature is given and ``success`` only with write-verify
(a column is present only where every row has a value, so no reader sees empty cells).

* ``target_S`` — the programmed target conductance (S), one of the levels;
* ``read_value_S`` — the conductance read (S);
* ``time_s`` — the cell's age at the read: seconds since *that cell* was programmed (on an
  instrument cells are programmed and read one after another, so ages differ slightly;
  the exact per-cell age is recorded, not the nominal read time);
* ``pulses``, ``success`` — SET pulses spent and verify outcome (``success`` empty without
  verify); ``cell`` — the cell address; ``device``, ``temperature_K`` as given.

Rows are appended and flushed (and fsync'ed) chunk by chunk, so an interrupted sweep —
Ctrl-C, a lost instrument — leaves every measurement taken so far on disk; the exception
propagates with a note saying how many rows were kept. An existing file is never
overwritten: it is refused, or with ``append=True`` extended after checking its header.

Single-shot programming (``verify=None``, the default) gives the table that calibrates a
card's programming noise, drift and read noise (:mod:`analogmem.calibrate`); with a
:class:`~analogmem.emulator.bench.WriteVerify` the same table records write-verify statistics.
"""

from __future__ import annotations

import csv
import math
import os
import time
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Iterator, Sequence

import numpy as np

from .._io import progress as progress_bar
from .._seeding import SeedLike, as_generator
from ..calibrate.tidy import TIDY_COLUMNS
from ..emulator.bench import Bench, ProgramReport, WriteVerify
from ..errors import PathExistsError, SettingError

__all__ = ["characterise", "CharacterisationResult", "TIDY_COLUMNS", "read_table", "summarise_table",
           "plot_table", "bench_range"]


@dataclass
class CharacterisationResult:
    """What :func:`characterise` did.

    Attributes:
        path: the CSV written.
        n_rows: rows written by this call.
        levels_S: the target levels (S).
        addresses: cells used, shape (n_levels·cells_per_level,).
        targets_S: each cell's target (S), same shape.
        read_times_s: nominal read times after programming (s).
        report: the bench's :class:`ProgramReport`.
        wall_s: wall-clock seconds the sweep took.
        summary: per level and read time: n, mean and std of the reads (S), plus verify
            statistics (JSON-ready).
    """

    path: Path
    n_rows: int
    levels_S: np.ndarray
    addresses: np.ndarray
    targets_S: np.ndarray
    read_times_s: tuple[float, ...]
    report: ProgramReport
    wall_s: float
    summary: dict[str, Any] = field(default_factory=dict)


def bench_range(bench: Any) -> tuple[float, float]:
    """The target range ``(g_min_S, g_max_S)`` of a bench: its device card's, else its
    pulse scheme's."""
    dev = getattr(bench, "device", None)
    if dev is not None:
        return float(dev.g_min_S), float(dev.g_max_S)
    scheme = getattr(bench, "scheme", None)
    if scheme is not None:
        return float(scheme.g_min_S), float(scheme.g_max_S)
    raise SettingError("cannot tell the bench's target range: pass levels_S explicitly")


def _device_label(bench: Any, device: str | None) -> str:
    if device is not None:
        return str(device)
    dev = getattr(bench, "device", None)
    if dev is not None:
        return str(dev.name)
    ident = getattr(bench, "identity", None)
    return f"{ident.get('manufacturer', '')} {ident.get('model', '')}".strip() if ident else ""


def _candidate_cells(bench: Any) -> np.ndarray:
    cells = np.arange(int(bench.n_cells))
    limits = getattr(bench, "limits", None)
    if limits is not None and getattr(limits, "allowed_cells", None) is not None:
        ok = np.zeros(cells.shape, dtype=bool)
        for a, b in limits.allowed_cells:
            ok |= (cells >= a) & (cells < b)
        cells = cells[ok]
    return cells


class _TidyWriter:
    """Append-and-flush CSV writer of the tidy table."""

    def __init__(self, path: Path, append: bool, columns: tuple[str, ...] = TIDY_COLUMNS):
        self.path = path
        self.columns = columns
        path.parent.mkdir(parents=True, exist_ok=True)
        if path.exists() and path.stat().st_size > 0:
            if not append:
                raise PathExistsError(f"{path} exists; characterise never overwrites a table (use append=True "
                                      "to extend it, or another path)")
            with open(path, newline="") as fh:
                header = next(csv.reader(fh), [])
            if tuple(header) != columns:
                raise SettingError(f"{path}: header {header} is not this sweep's {list(columns)}; "
                                 "refusing to append")
            self.fh = open(path, "a", newline="")
            self.writer = csv.writer(self.fh)
        else:
            self.fh = open(path, "x" if not path.exists() else "a", newline="")
            self.writer = csv.writer(self.fh)
            self.writer.writerow(columns)
            self.flush()
        self.rows = 0

    def write(self, rows: list[tuple[Any, ...]]) -> None:
        self.writer.writerows(rows)
        self.rows += len(rows)
        self.flush()

    def flush(self) -> None:
        self.fh.flush()
        os.fsync(self.fh.fileno())

    def close(self) -> None:
        self.fh.close()


def _num(x: float) -> str:
    return "" if x is None or (isinstance(x, float) and math.isnan(x)) else repr(float(x))


def characterise(bench: Bench, out_csv: str | os.PathLike, *, levels_S: Sequence[float] | None = None,
                 n_levels: int = 8, cells_per_level: int = 32, read_times_s: Sequence[float] = (0.0, 60.0, 3600.0),
                 reads_per_time: int = 1, verify: WriteVerify | None = None, device: str | None = None,
                 temperature_K: float | None = None, seed: SeedLike = None, chunk_cells: int = 64,
                 append: bool = False, progress: bool = False) -> CharacterisationResult:
    """Program ``n_levels`` target levels into ``cells_per_level`` cells each, read every
    cell at each of ``read_times_s`` (``reads_per_time`` times), and append the tidy table
    to ``out_csv``. Works on any :class:`~analogmem.emulator.bench.Bench` (emulated or instrument).

    Args:
        bench: the bench.
        out_csv: the CSV to write (refused if it exists, unless ``append``).
        levels_S: target levels (S); default ``n_levels`` levels evenly spaced over 10 %–90 %
            of the bench's range (away from the rails, so every read is a positive
            conductance a log-domain fit can use).
        cells_per_level: cells per level; cells are drawn at random (``seed``) from the
            cells the bench may touch, so levels do not alias array position.
        read_times_s: nominal read times (s after programming ended), ascending; the bench
            waits between them (``bench.wait``: emulated time on the emulator/emulator
            server, real time on hardware).
        reads_per_time: repeated reads of every cell at each time (read noise).
        verify: write-verify settings, or None for single-shot programming.
        device, temperature_K: values of the ``device`` / ``temperature_K`` columns
            (defaults: the bench's card name or identity; empty).
        chunk_cells: cells read (and rows flushed) per chunk.
        progress: tqdm progress bar over read chunks.

    Returns:
        a :class:`CharacterisationResult`.
    """
    t_wall = time.perf_counter()
    times = _check_sweep(read_times_s, cells_per_level=cells_per_level, reads_per_time=reads_per_time,
                         chunk_cells=chunk_cells, n_levels=n_levels)
    levels = _sweep_levels(bench, levels_S, n_levels)
    addresses, level_of = _draw_cells(bench, levels.size, int(cells_per_level), seed)
    targets = levels[level_of]
    label = _device_label(bench, device)
    temperature = "" if temperature_K is None else _num(temperature_K)
    columns = tuple(c for c in TIDY_COLUMNS if not (c == "temperature_K" and temperature_K is None)
                    and not (c == "success" and verify is None))
    writer = _TidyWriter(Path(out_csv), append, columns)
    with _sweep_session(bench, writer):
        report = _program_levels(bench, targets, addresses, verify, progress)
        rows = _RowMaker(writer, targets, addresses, report, label, temperature)
        values = _read_over_time(bench, rows, level_of, times, int(reads_per_time), int(chunk_cells),
                                 float(report.time_s), progress)
    summary = _summary(levels, times, values, report, level_of, label)
    summary.update({"path": str(writer.path), "rows": writer.rows, "cells": int(addresses.size),
                    "wall_s": time.perf_counter() - t_wall, "complete": True})
    return CharacterisationResult(path=writer.path, n_rows=writer.rows, levels_S=levels, addresses=addresses,
                                  targets_S=targets, read_times_s=times, report=report,
                                  wall_s=time.perf_counter() - t_wall, summary=summary)


def _check_sweep(read_times_s: Sequence[float], **counts: Any) -> tuple[float, ...]:
    """The read times (s, ascending, finite, >= 0) as floats; every one of ``counts`` a
    positive integer. Raises :class:`SettingError` naming the value."""
    times = tuple(float(t) for t in read_times_s)
    if not times or any(not math.isfinite(t) or t < 0 for t in times) or list(times) != sorted(times):
        raise SettingError(f"read_times_s must be a non-empty ascending list of seconds >= 0, got {read_times_s!r}")
    for name, v in counts.items():
        if isinstance(v, bool) or not isinstance(v, (int, np.integer)) or v < 1:
            raise SettingError(f"{name} must be a positive integer, got {v!r}")
    return times


def _sweep_levels(bench: Any, levels_S: Sequence[float] | None, n_levels: int) -> np.ndarray:
    """The target levels (S): ``levels_S`` checked, or ``n_levels`` evenly spaced over
    10 %–90 % of the bench's range (:func:`bench_range`)."""
    if levels_S is None:
        g_min, g_max = bench_range(bench)
        return g_min + (g_max - g_min) * np.linspace(0.1, 0.9, int(n_levels))
    levels = np.asarray(levels_S, dtype=np.float64)
    if levels.ndim != 1 or levels.size == 0 or not np.all(np.isfinite(levels)):
        raise SettingError(f"levels_S must be a non-empty 1-D list of finite conductances (S), got {levels_S!r}")
    return levels


def _draw_cells(bench: Any, n_levels: int, cells_per_level: int, seed: SeedLike) -> tuple[np.ndarray, np.ndarray]:
    """Draw ``n_levels·cells_per_level`` distinct cells at random from those the bench may
    touch; returns their addresses (ascending) and each one's level index."""
    candidates = _candidate_cells(bench)
    n_total = n_levels * cells_per_level
    if n_total > candidates.size:
        raise SettingError(f"{n_levels} levels x {cells_per_level} cells = {n_total} cells, but the bench has only "
                           f"{candidates.size} cells it may use")
    rng = as_generator(seed)
    addresses = np.sort(rng.permutation(candidates)[:n_total]).astype(np.intp)
    level_of = np.repeat(np.arange(n_levels), cells_per_level)[rng.permutation(n_total)]
    return addresses, level_of


@contextmanager
def _sweep_session(bench: Any, writer: "_TidyWriter") -> Iterator[None]:
    """Around a sweep: the table is closed and the bench's ``progress`` setting restored
    however it ends; an interruption gets a note saying how many rows were kept."""
    has_bar = hasattr(bench, "progress")
    bench_bar = getattr(bench, "progress", None)
    try:
        yield
    except BaseException as exc:
        exc.add_note(f"characterise: {writer.rows} measurement row(s) taken before the interruption are kept in "
                     f"{writer.path}")
        raise
    finally:
        writer.close()
        if has_bar:
            bench.progress = bench_bar


def _program_levels(bench: Any, targets: np.ndarray, addresses: np.ndarray, verify: WriteVerify | None,
                    progress: bool) -> ProgramReport:
    """Program every cell to its target (S), single-shot or with ``verify``, with the
    bench's own per-cell progress bar when it has one."""
    has_bar = hasattr(bench, "progress")
    if has_bar:
        bench.progress = progress
    report = bench.program(targets, addresses=addresses) if verify is None else \
        bench.program(targets, addresses=addresses, verify=verify)
    if has_bar:
        bench.progress = False  # reads: one bar over chunks
    return report


class _RowMaker:
    """Builds and appends the tidy rows of reads of the sweep's cells."""

    def __init__(self, writer: "_TidyWriter", targets: np.ndarray, addresses: np.ndarray, report: ProgramReport,
                 label: str, temperature: str):
        self.writer, self.targets, self.addresses, self.label, self.temperature = \
            writer, targets, addresses, label, temperature
        self.pulses = report.pulses if report.pulses is not None else np.ones(addresses.size, dtype=np.int64)
        self.success = report.success

    def write(self, idx: np.ndarray, g: np.ndarray, ages: np.ndarray) -> None:
        """Append one row per read: cells ``idx`` (sweep indices), conductances ``g`` (S),
        ages ``ages`` (s since each cell was programmed)."""
        rows = []
        for j, k in enumerate(idx):
            row = {"target_S": _num(self.targets[k]), "read_value_S": _num(g[j]), "device": self.label,
                   "time_s": _num(ages[j]), "temperature_K": self.temperature, "pulses": int(self.pulses[k]),
                   "success": "" if self.success is None else str(bool(self.success[k])),
                   "cell": int(self.addresses[k])}
            rows.append(tuple(row[c] for c in self.writer.columns))
        self.writer.write(rows)


def _read_over_time(bench: Any, rows: _RowMaker, level_of: np.ndarray, times: tuple[float, ...],
                    reads_per_time: int, chunk_cells: int, t_prog: float,
                    progress: bool) -> dict[tuple[float, int], list[np.ndarray]]:
    """At each read time (s after programming ended at bench time ``t_prog``) read every
    cell ``reads_per_time`` times, ``chunk_cells`` at a time, appending the rows as each
    chunk comes (and what a failing read measured before it failed). Returns the reads (S)
    by (time, level index)."""
    n_total = rows.addresses.size
    chunks = [np.arange(i, min(i + chunk_cells, n_total)) for i in range(0, n_total, chunk_cells)]
    bar = progress_bar(total=len(times) * reads_per_time * len(chunks), enabled=progress, desc="characterise",
                       unit="chunk")
    values: dict[tuple[float, int], list[np.ndarray]] = {}
    for t in times:
        elapsed = bench.time_s - t_prog
        if t > elapsed:
            bench.wait(t - elapsed)
        for _ in range(reads_per_time):
            for idx in chunks:
                try:
                    g = np.asarray(bench.read(addresses=rows.addresses[idx]), dtype=np.float64)
                except BaseException as exc:
                    part = getattr(exc, "partial_read", None)
                    if part is not None and len(part["values_S"]):
                        m = len(part["values_S"])
                        rows.write(idx[:m], np.asarray(part["values_S"]), np.asarray(part["age_s"]))
                    raise
                ages = getattr(bench, "last_read_age_s", None)
                if ages is None or np.shape(ages) != g.shape:
                    ages = np.full(g.shape, bench.time_s - t_prog)
                rows.write(idx, g, ages)
                for j, k in enumerate(idx):
                    values.setdefault((t, int(level_of[k])), []).append(g[j:j + 1])
                bar.update(1)
    bar.close()
    return values


def _summary(levels: np.ndarray, times: tuple[float, ...], values: dict, report: ProgramReport,
             level_of: np.ndarray, label: str) -> dict[str, Any]:
    rows = []
    for k, lv in enumerate(levels):
        per_time = []
        for t in times:
            g = np.concatenate(values.get((t, k), [np.empty(0)]))
            per_time.append({"time_s": t, "n": int(g.size), "mean_S": float(g.mean()) if g.size else None,
                             "std_S": float(g.std(ddof=1)) if g.size > 1 else None})
        mask = level_of == k
        entry: dict[str, Any] = {"target_S": float(lv), "reads": per_time}
        if report.pulses is not None:
            entry["mean_pulses"] = float(np.mean(report.pulses[mask]))
        if report.success is not None:
            entry["success_rate"] = float(np.mean(report.success[mask]))
        rows.append(entry)
    out: dict[str, Any] = {"device": label, "levels": rows, "read_times_s": list(times)}
    if report.success is not None:
        out["success_rate"] = float(np.mean(report.success))
    if report.pulses is not None:
        out["mean_pulses"] = float(np.mean(report.pulses))
    return out


def read_table(path: str | os.PathLike) -> dict[str, np.ndarray]:
    """Read a tidy table written by :func:`characterise` into numpy columns
    (``target_S``, ``read_value_S``, ``time_s``, ``pulses``, ``cell`` as numbers; ``device``
    as strings; ``success`` as float 1/0/NaN; ``temperature_K`` float/NaN)."""
    with open(path, newline="") as fh:
        rows = list(csv.DictReader(fh))

    def col(name: str, conv: Any) -> np.ndarray:
        return np.array([conv(r.get(name, "")) for r in rows])
    flt = lambda s: float(s) if s != "" else math.nan  # noqa: E731
    return {"target_S": col("target_S", float), "read_value_S": col("read_value_S", float),
            "device": col("device", str), "time_s": col("time_s", float), "temperature_K": col("temperature_K", flt),
            "pulses": col("pulses", int), "cell": col("cell", int),
            "success": col("success", lambda s: math.nan if s == "" else float(s == "True"))}


def summarise_table(path: str | os.PathLike) -> dict[str, Any]:
    """Per target level: number of reads, mean/std of ``read_value_S`` (S), mean pulses."""
    t = read_table(path)
    out = []
    for lv in np.unique(t["target_S"]):
        m = t["target_S"] == lv
        g = t["read_value_S"][m]
        out.append({"target_S": float(lv), "n": int(m.sum()), "mean_S": float(g.mean()),
                    "std_S": float(g.std(ddof=1)) if g.size > 1 else None,
                    "mean_pulses": float(t["pulses"][m].mean())})
    return {"rows": int(t["target_S"].size), "levels": out}


def plot_table(path: str | os.PathLike, png: str | os.PathLike, title: str = "") -> Path:
    """Plot a tidy table: read conductance (µS) against the cell's age (s), one colour per
    target level (left), and the read distributions at the earliest read time (right).
    Written atomically as PNG (matplotlib Agg)."""

    import matplotlib
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    from .._io import save_figure

    t = read_table(path)
    fig = Figure(figsize=(12.5, 4.4))
    ax1, ax2 = fig.subplots(1, 2)
    levels = np.unique(t["target_S"])
    cmap = matplotlib.colormaps["viridis"].resampled(max(2, levels.size))
    t_first = t["time_s"] <= (np.min(t["time_s"]) + 1.0) if t["time_s"].size else np.zeros(0, bool)
    first = t["read_value_S"][t_first] * 1e6
    bins = np.linspace(first.min(), first.max(), 61) if first.size else 10
    for k, lv in enumerate(levels):
        m = t["target_S"] == lv
        age = np.maximum(t["time_s"][m], 1e-3)
        ax1.scatter(age, t["read_value_S"][m] * 1e6, s=4, alpha=0.4, color=cmap(k), label=f"{lv * 1e6:.3g} µS")
        ax2.hist(t["read_value_S"][m & t_first] * 1e6, bins=bins, alpha=0.6, color=cmap(k))
        ax2.axvline(lv * 1e6, color=cmap(k), lw=0.8, ls="--")
    ax1.set_xscale("log")
    ax1.set_xlabel("time since programming (s)")
    ax1.set_ylabel("read conductance (µS)")
    ax1.set_title("reads over time")
    if levels.size <= 12:  # beside the axes, where it hides no read (the longest times sit at the right)
        ax1.legend(fontsize=7, title="target", markerscale=3, loc="upper left", bbox_to_anchor=(1.01, 1.0))
    ax2.set_xlabel("read conductance (µS)")
    ax2.set_ylabel(f"reads per bin ({int(np.count_nonzero(t_first)):,} first reads)")
    ax2.set_title("first read, per target (dashed)")
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    out = save_figure(fig, png, dpi=110)
    return out
