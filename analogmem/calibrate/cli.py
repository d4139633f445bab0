"""``analogmem calibrate``: fit a device card from a tidy table of measured reads.

Models: ``channel`` (per-level Gaussian/empirical candidates validated on held-out reads,
:class:`~analogmem.calibrate.channel.WriteChannelCalibrator`), ``polynomial`` (σ(g, t)
polynomials, :class:`~analogmem.calibrate.parametric.PolynomialCalibrator`) and
``write-verify`` (a shared pulse-response card from write-verify traces,
:func:`~analogmem.calibrate.pulse_response.fit_pulse_response`). A plot is written only
with ``--plot``.
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any

from .._io import atomic_write_text, help_text, write_json
from ..emulator.cells import card_name_problem, parse_card
from . import channel
from .channel import WriteChannelCalibrator
from ..errors import CalibrationError
from .parametric import PolynomialCalibrator
from .pulse_response import fit_pulse_response
from .tidy import READ_UNITS, TARGET_UNITS, ColumnMap

__all__ = ["add_subparser"]


def _main(args: Any) -> int:
    from .plan_results import plan_results_data

    problem = card_name_problem(args.name)
    if problem:
        raise CalibrationError(f"--name: {problem}")
    if args.min_reads < 2:
        raise CalibrationError(f"--min-reads must be at least 2 (a spread needs two reads), got {args.min_reads}")
    if not 0.0 < args.holdout <= 0.9:
        raise CalibrationError(f"--holdout must be in (0, 0.9] (a fraction held out, leaving reads to fit), "
                               f"got {args.holdout}")
    data = plan_results_data(args.data, args.model)  # an executed programming plan: its reads
    if args.model == "write-verify" and (args.target_column or args.read_column or args.drop_outliers):
        raise CalibrationError("--target-column/--read-column/--drop-outliers apply to the channel and polynomial "
                               "models; a write-verify trace table uses its tidy column names")
    if args.model == "write-verify":
        import tomli_w

        wv = fit_pulse_response(data, min_cells_per_level=args.min_reads)
        print(f"shared pulse-response model: {wv.classes} classes, run-to-run sd {wv.run_sd:.3f} on logit p, "
              f"{len(wv.runs)} run(s), schemes {', '.join(wv.schemes)}"
              + (f"; left out (not identified by these data): {', '.join(wv.dropped)}" if wv.dropped else ""))
        print(f"{'run':>24} {'level':>5} {'cells':>6} {'pulses data':>12} {'model':>7} {'success data':>13} {'model':>7}")
        for r in wv.report:
            print(f"{r['run'][-24:]:>24} {r['level']:>5} {r['n_cells']:>6} {r['pulses_mean_data']:>12.2f} "
                  f"{r['pulses_mean_model_run']:>7.2f} {r['success_rate_data']:>13.4f} "
                  f"{r['success_rate_model_run']:>7.4f}")
        _print_intervals(wv.intervals)
        text = tomli_w.dumps(wv.card(args.name, args.source))
        parse_card(text, args.name)  # refuse to write a card that does not load
        atomic_write_text(args.out, text)
        written = [str(args.out)]
        if args.plot:
            written.append(str(wv.plot(args.plot)))
        if args.json:
            write_json(args.json, {"card": str(args.out), **wv.fit_summary()}, settings=vars(args))
            written.append(str(args.json))
        print("wrote " + " and ".join(written))
        return 0
    columns = ColumnMap(args.target_column, args.read_column, args.target_unit, args.read_unit)
    if args.model == "polynomial":
        pc = PolynomialCalibrator(args.name, args.source, degree=args.degree, min_reads_per_level=args.min_reads,
                                  columns=columns, drop_outliers=args.drop_outliers).fit(data)
        _print_mapping(pc)
        for t, c, e, gof in zip(pc.times_s_, pc.coefficients_uS_, pc.stderr_uS_, pc.goodness_):
            terms = ", ".join(f"c{k} = {v:.4g} ± {s:.2g}" for k, (v, s) in enumerate(zip(c, e)))
            print(f"t = {t:g} s: sigma(x) uS: {terms}  (chi2 = {gof['chi2']:.1f} on {gof['dof']} dof, "
                  f"p = {gof['pvalue']:.3f})")
        pc.write_card(args.out)
        if args.json:
            write_json(args.json, {"card": str(args.out), "times_s": pc.times_s_,
                                   "coefficients_uS": pc.coefficients_uS_, "stderr_uS": pc.stderr_uS_,
                                   "goodness": pc.goodness_, "levels": pc.fit_report_,
                                   "column_mapping": pc.column_mapping_, "dropped_reads": pc.dropped_},
                       settings=vars(args))
        print(f"wrote {args.out}" + (f" and {args.json}" if args.json else ""))
        return 0
    cal = WriteChannelCalibrator(args.name, args.source, holdout=args.holdout, seed=args.seed,
                            min_reads_per_level=args.min_reads, columns=columns,
                            drop_outliers=args.drop_outliers).fit(data)
    _print_mapping(cal)
    print(cal.summary_table())
    cal.write_card(args.out)
    written = [str(args.out)]
    if args.plot:
        written.append(str(cal.plot(Path(args.plot))))
    if args.json:
        write_json(args.json, {"card": str(args.out), "chosen": cal.chosen_, "summary": cal.summary_,
                               "levels": cal.fit_report_, "column_mapping": cal.column_mapping_,
                               "dropped_reads": cal.dropped_}, seed=args.seed, settings=vars(args))
        written.append(str(args.json))
    print("wrote " + " and ".join(written))
    return 0


def _print_intervals(rows: list[dict[str, Any]]) -> None:
    """The fit report's prediction intervals of a new run, per card level (scripts/cards/README.md, "Run-to-run variation")."""
    if not rows:
        return
    print(f"new run, first programs, {rows[0]['n_cells']} cells per level; run-to-run part: {rows[0]['run_variation']}"
          f"; parameter draws: {rows[0]['parameter_draws']}")
    print(f"{'level':>5} {'pulses median':>14} {'80 % interval':>17} {'95 % interval':>17} {'success 95 %':>17}")
    for j, r in enumerate(rows):
        p, s = r["pulses_mean"], r["success_rate"]
        print(f"{j:>5} {p['median']:>14.2f} {p['interval80'][0]:>8.2f}–{p['interval80'][1]:<8.2f} "
              f"{p['interval95'][0]:>8.2f}–{p['interval95'][1]:<8.2f} "
              f"{s['interval95'][0]:>8.4f}–{s['interval95'][1]:<8.4f}"
              + ("  WARNING " + "; ".join(r["warnings"]) if r["warnings"] else ""))


def _print_mapping(cal: Any) -> None:
    """Say which columns were read as what, and which reads were dropped."""
    for role, m in cal.column_mapping_.items():
        if m["column"] != m["as"]:
            scale = f" x {m['factor']:g}" if m["factor"] != 1.0 else ""
            print(f"{role}: column {m['column']!r} ({m['unit']}) read as {m['as']}{scale}")
    if cal.dropped_:
        print(f"dropped {len(cal.dropped_)} read(s) (listed in the fit report):")
        for d in cal.dropped_[:10]:
            print(f"  row {d['row']}: {d['read_value']:g} {d['unit']} at target {d['target']:g}: {d['reason']}")


def add_subparser(subparsers: Any) -> None:
    """Add ``analogmem calibrate`` to the command line."""
    p = subparsers.add_parser("calibrate", description=help_text(__doc__) + "\n" + help_text(channel.__doc__),
                              formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("data", help="tidy CSV or Parquet table (one row per read), or a programming plan executed by "
                                "a tester (analogmem bench plan) with its result columns filled")
    p.add_argument("--out", required=True, help="device card to write (TOML)")
    p.add_argument("--name", default="calibrated", help="card name")
    p.add_argument("--source", default="", help="citation/description of the data, stored in the card")
    p.add_argument("--holdout", type=float, default=0.5, help="fraction of each level's reads held out (default 0.5)")
    p.add_argument("--min-reads", type=int, default=20, help="fewest reads per level (default 20)")
    p.add_argument("--seed", type=int, default=0, help="seed of the hold-out split")
    p.add_argument("--plot", default=None, help="write a PNG of data vs model here (default: no plot)")
    p.add_argument("--json", default=None, help="write the fit report as JSON here")
    p.add_argument("--model", choices=("channel", "polynomial", "write-verify"), default="channel",
                   help="channel: per-level Gaussian/empirical candidates validated on held-out reads (default); "
                        "polynomial: sigma(g, t) polynomials for conductance targets, one per time_s; "
                        "write-verify: a shared pulse-response card (any window in range, start state, scheme, "
                        "run-to-run effect) from a write-verify trace table (target_level, window_lo_ohm, "
                        "window_hi_ohm, read_value_ohm, pulses, success; optional experiment, prior_programs, "
                        "scheme, step_V, max_pulses)")
    p.add_argument("--degree", type=int, default=2, help="polynomial degree for --model polynomial (default 2)")
    g = p.add_argument_group("a lab's own columns (channel and polynomial models)")
    g.add_argument("--target-column", default=None, metavar="NAME",
                   help="the column holding the write target when it is not target_S/target_V/target_level "
                        "(e.g. write_voltage_V); its unit comes from the name's suffix unless --target-unit")
    g.add_argument("--read-column", default=None, metavar="NAME",
                   help="the column holding the read value when it is not read_value_S/read_value_ohm "
                        "(e.g. read_resistance_ohm); its unit comes from the name's suffix unless --read-unit")
    g.add_argument("--target-unit", default=None, choices=tuple(TARGET_UNITS), metavar="UNIT",
                   help=f"unit of --target-column: {', '.join(TARGET_UNITS)}")
    g.add_argument("--read-unit", default=None, choices=tuple(READ_UNITS), metavar="UNIT",
                   help=f"unit of --read-column: {', '.join(READ_UNITS)}")
    p.add_argument("--drop-outliers", action="store_true",
                   help="exclude implausible reads (outside 1 fS..1 kS) and far outliers (ln g beyond 25 IQRs of "
                        "its level's quartiles) and list them in the fit report; without it such reads are refused")
    p.set_defaults(func=_main)
