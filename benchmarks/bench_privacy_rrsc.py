"""Reproduce the RRSC paper's figure (thesis ch.9): d = 500, n = 5000, ε = 6 with b = 1…8 and
b = ε = 1…8; RRSC vs PrivUnitG (no bit limit) vs SQKR, with the exact MSE (C² − 1)/n.

    python benchmarks/bench_privacy_rrsc.py [--runs 10] [--seed 0] [--json results/bench_privacy_rrsc.json]
                                            [--plot results/bench_privacy_rrsc.png]

Prints the paper-vs-ours table and the checks (mean |ours/paper − 1| < 5 %, formula inside the
95 % interval, RRSC < SQKR everywhere, PrivUnitG vs its closed form), and writes JSON. About
25 s on 2 cores with 10 runs.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analogmem._io import write_json
from analogmem.privacy.sweeps import MSE_UNITS, format_rrsc_table, plot_rrsc, rrsc_sweep, summarize_rrsc


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="independent runs per point (paper: 10)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("results/bench_privacy_rrsc.json"))
    parser.add_argument("--plot", type=Path, default=None, help="optional PNG of the figure")
    args = parser.parse_args(argv)

    start = time.perf_counter()
    rows = rrsc_sweep(runs=args.runs, seed=args.seed, progress=True)
    elapsed = time.perf_counter() - start
    summary = summarize_rrsc(rows)
    print(format_rrsc_table(rows))
    for key, value in summary.items():
        print(f"{key}: {value:.2%}" if "rel_diff" in key else
              f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"elapsed: {elapsed:.1f} s")
    write_json(args.json, {
        "benchmark": "bench_privacy_rrsc", "settings": {"d": 500, "n_users": 5000, "runs": args.runs, "seed": args.seed},
        "units": {"mse": MSE_UNITS, "epsilon_nats": "local DP budget (natural log units)", "bits": "bits per user",
                  "elapsed_s": "seconds"},
        "points": rows, "summary": summary, "elapsed_s": elapsed,
    }, seed=args.seed, settings=vars(args))
    print(f"wrote {args.json}")
    if args.plot:
        plot_rrsc(rows, args.plot)
        print(f"wrote {args.plot}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
