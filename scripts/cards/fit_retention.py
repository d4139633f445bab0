"""Fit the Arrhenius retention model to a bake table (bits_per_cell, temperature_K, time_s, ber).

    python -m scripts.cards.convert_radar "$ANALOGMEM_DATA/rram-radar" /tmp/radar
    python -m scripts.cards.fit_retention /tmp/radar/radar-ber.csv --plot scripts/cards/plots/rram-radar-retention.png --json scripts/cards/plots/rram-radar-retention.json

prints E_a with its standard error and the [retention] table a device card can carry.
"""

from __future__ import annotations

import argparse
import json
import sys

from analogmem._io import write_json
from analogmem.calibrate.retention import fit_arrhenius


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("table", help="CSV with bits_per_cell, temperature_K, time_s, ber")
    ap.add_argument("--reference-temperature", type=float, default=300.0, help="T_ref (K), default 300")
    ap.add_argument("--plot", default=None, help="PNG of the bakes and the master curve")
    ap.add_argument("--json", default=None, help="write the fit here")
    args = ap.parse_args(argv)
    fit = fit_arrhenius(args.table, reference_temperature_K=args.reference_temperature)
    print(f"E_a = {fit.activation_energy_eV:.4f} ± {fit.activation_energy_stderr_eV:.4f} eV "
          f"(T_ref = {fit.reference_temperature_K:g} K, {fit.n} points, rms {fit.rms_log10:.3f} decades)")
    print("[retention] " + json.dumps(fit.card_table()))
    if args.plot:
        fit.plot(args.plot)
    if args.json:
        write_json(args.json, {**fit.card_table(), "rms_log10_ber": fit.rms_log10, "n_points": fit.n,
                               "curves_log10_ber_vs_log10_equivalent_time_s":
                                   {str(k): v for k, v in fit.curves.items()}}, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
