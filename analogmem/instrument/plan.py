"""A programming plan for any tester: where each target goes, its verify window and the
pulse scheme, as a tidy CSV plus a JSON sidecar that a lab's own tester (an FPGA board, an
ArC TWO, a B1500 script) executes; ``analogmem calibrate`` reads the executed plan back
(:mod:`analogmem.calibrate.plan_results`).

CSV (one row per cell, columns :data:`~analogmem.calibrate.plan_results.PLAN_COLUMNS`):

=================  ==========================================================================
``plan_step``      order of execution (0, 1, …)
``cell``           address on the matrix; ``row``, ``col`` its crosspoint (0-based)
``tensor``         for a model: the tensor the cell stores, ``weight_index`` its flat weight
``target_S``       target conductance (S); ``window_lo_S``/``window_hi_S`` the verify window
``v_set_first_V``  the first SET amplitude the scheme gives for the target (V)
result columns     ``read_value_S``, ``pulses``, ``success``, ``time_s``, ``device``: empty,
                   for the tester to fill (or to return keyed by ``plan_step``)
=================  ==========================================================================

JSON: the format tag, the device card (name, sha256), the matrix, the
:class:`SafetyLimits`, the :class:`VoltageScheme` and the verify policy (budget, gain,
slope, amplitude bounds) in SI units, and the algorithm in words, so a tester that does
not run analogmem executes the same loop as :class:`InstrumentBench` and :class:`TspBench`.

Every plan passes the same request check as the benches
(:func:`~analogmem.instrument.verify_policy.check_program_request`): a plan that would pulse
past the limits is never written. Files are written atomically.
"""

from __future__ import annotations

import csv
import io
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from .._io import atomic_write_text
from ..calibrate.plan_results import PLAN_COLUMNS, PLAN_FORMAT
from ..emulator.bench import WriteVerify
from ..emulator.cells import DeviceModel, load_device
from ..emulator.validation import check_addresses
from ..errors import SettingError
from .limits import BenchConfig
from .verify_policy import check_program_request, check_targets

__all__ = ["ProgrammingPlan", "make_plan", "plan_for_model", "plan_for_tensors", "read_plan",
           "DEFAULT_PLAN_VERIFY"]

#: The verify a plan states when none is given: ±5 % windows, 20 SET pulses at most.
DEFAULT_PLAN_VERIFY = WriteVerify(max_pulses=20, tolerance_rel=0.05)

_ALGORITHM = (
    "For each row in plan_step order: route the crosspoint (row, col); if scheme.reset_first, apply one RESET "
    "pulse (scheme.v_reset_V, scheme.reset_width_s); v = v_set_first_V. Repeat at most policy.max_pulses times: "
    "SET pulse (v, scheme.set_width_s); read G = I / scheme.v_read_V at scheme.v_read_V; if window_lo_S <= G <= "
    "window_hi_S: success, stop; v = clip(v + policy.gain * (target_S - G) / policy.slope_S_per_V, policy.v_lo_V, "
    "policy.v_hi_V); if G > window_hi_S and pulses remain: one RESET pulse. Record the final read as read_value_S, "
    "the SET pulses as pulses, success, and the read time (s after programming) as time_s. Never exceed limits.")


@dataclass
class ProgrammingPlan:
    """A plan: ``columns`` (name → array, one entry per cell, in ``plan_step`` order) and
    ``meta`` (the JSON sidecar's content)."""

    columns: dict[str, np.ndarray]
    meta: dict[str, Any] = field(default_factory=dict)

    @property
    def n_cells(self) -> int:
        return int(self.columns["cell"].shape[0])

    def csv_text(self) -> str:
        buf = io.StringIO()
        w = csv.writer(buf, lineterminator="\n")
        w.writerow(PLAN_COLUMNS)
        cols = [self.columns.get(c) for c in PLAN_COLUMNS]
        for j in range(self.n_cells):
            row = []
            for c in cols:
                if c is None:
                    row.append("")
                    continue
                v = c[j]
                row.append(repr(float(v)) if isinstance(v, (float, np.floating)) else str(v))
            w.writerow(row)
        return buf.getvalue()

    def write(self, csv_path: str | Path, json_path: str | Path | None = None) -> tuple[Path, Path]:
        """Write the CSV and the JSON sidecar (default: the CSV path with ``.json``),
        each atomically. Returns both paths."""
        csv_path = Path(csv_path)
        json_path = Path(json_path) if json_path is not None else csv_path.with_suffix(".json")
        if csv_path.resolve() == json_path.resolve():
            raise SettingError(f"the plan's CSV and JSON would both be {csv_path}")
        atomic_write_text(csv_path, self.csv_text())
        atomic_write_text(json_path, json.dumps({**self.meta, "csv": csv_path.name}, indent=2, sort_keys=True) + "\n")
        return csv_path, json_path


def make_plan(targets_S: Any, addresses: Any = None, *, config: BenchConfig | None = None,
              device: DeviceModel | str | None = None, verify: WriteVerify | None = DEFAULT_PLAN_VERIFY,
              tensor: Any = None, weight_index: Any = None) -> ProgrammingPlan:
    """A plan programming ``targets_S`` (S, shape (n,)) into ``addresses`` (default
    ``0..n-1``) of the bench ``config`` (matrix, limits, scheme), with the verify windows
    of ``verify`` (None: single-shot, the window is the target itself).

    ``tensor``/``weight_index`` (shape (n,)) label the cells of a model. Raises
    :class:`SafetyLimitError`, :class:`TargetRangeError`, :class:`AddressError` or
    :class:`SettingError` before anything is written."""
    config = config or BenchConfig()
    dev = load_device(device) if device is not None else None
    if dev is not None:
        config = config.with_range(dev.g_min_S, dev.g_max_S)
    config.check_scheme()
    g = np.asarray(targets_S, dtype=np.float64).reshape(-1)
    if addresses is None:
        if g.size > config.n_cells:
            raise SettingError(f"{g.size} targets for a {config.rows}x{config.cols} matrix of {config.n_cells} cells")
        addr = np.arange(g.size, dtype=np.intp)
    else:
        addr = check_addresses(addresses, config.n_cells)
    s = config.scheme
    g = check_targets(s, g, addr.shape[0])
    config.limits.check_cells(addr)
    policy = check_program_request(s, config.limits, g, verify, dev)
    lo, hi = policy.window(g) if policy is not None else (g, g)
    n = addr.shape[0]
    cols = {"plan_step": np.arange(n), "cell": addr, "row": addr // config.cols, "col": addr % config.cols,
            "tensor": np.asarray(tensor if tensor is not None else [""] * n, dtype=object),
            "weight_index": np.asarray(weight_index if weight_index is not None else [""] * n, dtype=object),
            "target_S": g, "window_lo_S": np.asarray(lo, dtype=float), "window_hi_S": np.asarray(hi, dtype=float),
            "v_set_first_V": s.set_voltage(g)}
    meta = {"format": PLAN_FORMAT, "cells": n,
            "device": None if dev is None else {"name": dev.name, "card_sha256": dev.card_sha256},
            "matrix": {"rows": config.rows, "cols": config.cols, "model": config.model},
            "limits": asdict(config.limits), "scheme": asdict(s),
            "policy": None if policy is None else {
                "max_pulses": policy.max_pulses, "gain": s.verify_gain, "slope_S_per_V": s.slope_S_per_V,
                "v_lo_V": policy.v_lo_V, "v_hi_V": policy.v_hi_V, "tolerance_S": policy.tolerance_S,
                "tolerance_rel": policy.tolerance_rel,
                "levels": None if policy.levels is None else [list(w) for w in policy.levels]},
            "algorithm": _ALGORITHM if policy is not None else
            "For each row: route (row, col); RESET first if scheme.reset_first; one SET pulse at v_set_first_V.",
            "units": {"target_S": "S", "window_lo_S": "S", "window_hi_S": "S", "v_set_first_V": "V",
                      "read_value_S": "S", "time_s": "s"}}
    return ProgrammingPlan(cols, meta)


def plan_for_tensors(tensors: dict[str, Any], device: DeviceModel | str, *, cells_per_weight: int = 2,
                     encoder: str = "auto", t_fit_s: float = 86400.0, config: BenchConfig | None = None,
                     verify: WriteVerify | None = DEFAULT_PLAN_VERIFY) -> ProgrammingPlan:
    """A plan storing named float arrays (a model's weights) as the storage layer encodes
    them (:mod:`analogmem.storage.encoders`: ``encoder`` and ``cells_per_weight`` as in
    :func:`~analogmem.storage.program_model`), tensor after tensor from cell 0; each row
    names its tensor and flat weight index."""
    from ..storage.analog_model import default_encoder_name
    from ..storage.encoders import ReadChannel, make_encoder

    dev = load_device(device)
    if dev.input != "conductance":
        raise SettingError(f"device {dev.name!r} takes {dev.input} targets; a model plan writes conductances")
    enc = make_encoder(default_encoder_name(cells_per_weight) if encoder == "auto" else encoder, cells_per_weight)
    channel = ReadChannel(dev, float(t_fit_s))
    targets, names, index = [], [], []
    for name, arr in tensors.items():
        w = np.asarray(arr, dtype=np.float64).reshape(-1)
        if w.size == 0 or not np.isfinite(w).all():
            raise SettingError(f"tensor {name!r} is empty or holds NaN/inf")
        side = enc.fit(w, channel)
        g = np.asarray(enc.encode_S(w, side, channel, 1), dtype=np.float64)
        targets.append(g)
        names.extend([name] * g.size)
        index.append(np.arange(g.size) // enc.cells_per_weight)
    if not targets:
        raise SettingError("no tensors to plan")
    plan = make_plan(np.concatenate(targets), config=config, device=dev, verify=verify, tensor=names,
                     weight_index=np.concatenate(index))
    plan.meta["encoder"] = {"name": enc.name, "cells_per_weight": enc.cells_per_weight, "t_fit_s": float(t_fit_s)}
    return plan


def plan_for_model(model: Any, *, config: BenchConfig | None = None,
                   verify: WriteVerify | None = DEFAULT_PLAN_VERIFY) -> ProgrammingPlan:
    """A plan of a stored model (:class:`~analogmem.storage.AnalogModel` from
    :func:`~analogmem.storage.program_model`): the very targets its emulated chip was
    programmed with, at the same cells, each row naming its tensor and weight."""
    from ..storage.encoders import ReadChannel

    channel = ReadChannel(model.device, model.t_fit_s)
    state = model.template.state_dict()
    n = model.n_cells
    g = np.empty(n)
    names = np.empty(n, dtype=object)
    index = np.empty(n, dtype=np.int64)
    for p in model.plans:
        w = state[p.name].detach().cpu().double().numpy().reshape(-1)
        g[p.start:p.start + p.n_cells] = model.encoder.encode_S(w, p.side, channel, 1)
        names[p.start:p.start + p.n_cells] = p.name
        index[p.start:p.start + p.n_cells] = np.arange(p.n_cells) // model.encoder.cells_per_weight
    config = config or BenchConfig(rows=1, cols=n)
    plan = make_plan(g, config=config, device=model.device, verify=verify, tensor=names, weight_index=index)
    plan.meta["encoder"] = {"name": model.encoder.name, "cells_per_weight": model.encoder.cells_per_weight,
                            "t_fit_s": float(model.t_fit_s)}
    return plan


def read_plan(csv_path: str | Path) -> ProgrammingPlan:
    """Read a plan back (its CSV and the JSON sidecar beside it, if present)."""
    import pandas as pd

    p = Path(csv_path)
    try:
        df = pd.read_csv(p)
    except (OSError, ValueError) as exc:
        raise SettingError(f"{p}: cannot read the plan: {exc}") from None
    missing = [c for c in PLAN_COLUMNS if c not in df.columns]
    if missing:
        raise SettingError(f"{p}: not a programming plan, missing column(s) {missing}")
    cols = {c: df[c].to_numpy() for c in PLAN_COLUMNS if not df[c].isna().all()}
    meta_path = p.with_suffix(".json")
    meta = json.loads(meta_path.read_text()) if meta_path.is_file() else {}
    return ProgrammingPlan(cols, meta)
