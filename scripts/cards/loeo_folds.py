"""Fit and keep the leave-one-experiment-out folds of the shared write-verify model (scripts/cards/README.md, "Run-to-run variation").

For every run of the tidy write-verify table whose scheme another run shares, fit
:func:`analogmem.calibrate.fit_pulse_response` on the other runs (warm-started from the fit
to all runs, as ``loeo_write_verify.py`` does) and write each fold's ``[write_verify]``
table, so the run-variation analysis (``run_variation.py``) can predict a held-out run —
with intervals, and after seeing its first cells — from a model that never saw it:

    python -m scripts.cards.loeo_folds /tmp/radar --json scripts/cards/plots/write-verify-folds.json

(7 minutes for the 10 folds on 2 shared cores.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analogmem._io import write_json
from analogmem.calibrate import fit_pulse_response, read_write_verify
from analogmem.calibrate.pulse_response import response_table
from analogmem.errors import CalibrationError


def main(argv: list[str] | None = None) -> int:
    from tqdm import tqdm

    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("tables", type=Path, help="directory of convert_radar.py's tidy tables")
    ap.add_argument("--classes", type=int, default=3)
    ap.add_argument("--json", type=Path, required=True)
    args = ap.parse_args(argv)
    df = read_write_verify(args.tables / "radar-write-verify.csv", min_cells_per_level=1)
    full = fit_pulse_response(df, classes=args.classes, stderr=False)
    folds = {"__all__": {"write_verify": response_table(full.response()), "runs": full.runs,
                         "run_effects": full.run_effects}}
    for held in tqdm(sorted(df.experiment.unique()), desc="folds"):
        train, test = df[df.experiment != held], df[df.experiment == held]
        if not set(test.scheme) <= set(train.scheme):
            folds[held] = {"refused": f"scheme(s) {sorted(set(test.scheme) - set(train.scheme))} in no training run"}
            continue
        try:
            fit = fit_pulse_response(train, classes=args.classes, stderr=False, start=full)
        except CalibrationError as exc:
            folds[held] = {"refused": str(exc)}
            continue
        folds[held] = {"write_verify": response_table(fit.response()), "runs": fit.runs,
                       "run_effects": fit.run_effects}
        write_json(args.json, {"folds": folds}, settings=vars(args))  # keep what is done
    write_json(args.json, {"folds": folds}, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
