"""The ``analogmem privacy`` command: ``rrsc`` and ``noisy-compress``.

Wire it into the main parser with :func:`add_subparser`; each subcommand sets ``func``, which
takes the parsed namespace and returns an exit code. Both print a table, and write
``--json`` (results with self-describing keys and units) and ``--plot`` (PNG) on request.
Standalone: ``python -m analogmem.privacy.cli privacy rrsc ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from .._cli_output import run_standalone, write_outputs
from .noisy_compression import DATASETS, NOISY_UNITS, format_noisy_table, plot_noisy, run_noisy_compression
from .sweeps import MSE_UNITS, format_rrsc_table, paper_points, plot_rrsc, rrsc_sweep, summarize_rrsc

__all__ = ["add_subparser", "main", "run_noisy_compress_command", "run_rrsc_command"]

_SWEEPS = {
    "paper": paper_points,
    "eps6": lambda: [(b, 6.0) for b in range(1, 9)],
    "b-eq-eps": lambda: [(b, float(b)) for b in range(1, 9)],
}


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", type=Path, help="write a PNG figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative integer; default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bar")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``privacy`` command (with subcommands ``rrsc`` and ``noisy-compress``) to an
    ``argparse`` sub-parser collection; returns the ``privacy`` parser."""
    privacy = subparsers.add_parser(
        "privacy", description="Private mean estimation with RRSC (ch.9) and lossy compression of noisy training data (ch.8).",
    )
    sub = privacy.add_subparsers(dest="privacy_command", metavar="{rrsc,noisy-compress}", required=True)

    r = sub.add_parser("rrsc", help="RRSC vs PrivUnitG vs SQKR: MSE over bits and epsilon (paper figure)",
                       description="Reproduce the RRSC paper's figure: empirical MSE of RRSC, PrivUnitG and SQKR "
                                   "with the exact formula (C^2-1)/n and the paper's values.")
    r.add_argument("--sweep", choices=sorted(_SWEEPS), default="paper",
                   help="paper: eps=6 with b=1..8 and b=eps=1..8 (default); eps6; b-eq-eps")
    r.add_argument("--d", type=int, default=500, help="vector dimension (default 500)")
    r.add_argument("--n", type=int, default=5000, help="number of users (default 5000)")
    r.add_argument("--runs", type=int, default=10, help="independent runs per point (default 10)")
    r.add_argument("--methods", nargs="+", choices=["rrsc", "privunitg", "sqkr"],
                   default=["rrsc", "privunitg", "sqkr"], help="mechanisms to run (default all)")
    _common(r)
    r.set_defaults(func=run_rrsc_command)

    c = sub.add_parser("noisy-compress", help="noise + matched lossy compression of training images",
                       description="Add Gaussian noise to training images, compress them with a matched coder, "
                                   "train an MLP on the release and report rate, accuracy and re-identification.")
    c.add_argument("--dataset", choices=sorted(DATASETS), default="digits", help="data set (default digits)")
    c.add_argument("--noise-std", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0],
                   help="noise standard deviations, pixel units with pixels in [0, 1] (default 0.1 0.25 0.5 1.0)")
    c.add_argument("--epochs", type=int, default=40, help="training epochs per network (default 40)")
    c.add_argument("--repeats", type=int, default=1, help="networks trained per release, accuracy averaged (default 1)")
    _common(c)
    c.set_defaults(func=run_noisy_compress_command)
    return privacy


def run_rrsc_command(args: argparse.Namespace) -> int:
    """Run ``analogmem privacy rrsc``; returns 0."""
    points = _SWEEPS[args.sweep]()
    start = time.perf_counter()
    rows = rrsc_sweep(points, d=args.d, n=args.n, runs=args.runs, seed=args.seed, methods=args.methods,
                      progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    summary = summarize_rrsc(rows)
    print(format_rrsc_table(rows, None if args.sweep == "paper" else points))
    for key, value in summary.items():
        print(f"{key}: {value:.2%}" if "rel_diff" in key else
              f"{key}: {value:.3g}" if isinstance(value, float) else f"{key}: {value}")
    print(f"elapsed: {elapsed:.1f} s")
    payload = {
        "command": "analogmem privacy rrsc",
        "settings": {"sweep": args.sweep, "d": args.d, "n_users": args.n, "runs": args.runs,
                     "methods": args.methods, "seed": args.seed},
        "units": {"mse": MSE_UNITS, "epsilon_nats": "local DP budget epsilon (natural log units)",
                  "bits": "bits sent per user", "ci95": "95% t-interval of the mean over runs",
                  "elapsed_s": "seconds"},
        "points": rows,
        "summary": summary,
        "elapsed_s": elapsed,
    }
    write_outputs(args, payload, lambda path: plot_rrsc(rows, path))
    return 0


def run_noisy_compress_command(args: argparse.Namespace) -> int:
    """Run ``analogmem privacy noisy-compress``; returns 0."""
    start = time.perf_counter()
    rows = run_noisy_compression(args.dataset, tuple(args.noise_std), seed=args.seed, epochs=args.epochs,
                                 repeats=args.repeats, progress=not args.no_progress)
    elapsed = time.perf_counter() - start
    print(format_noisy_table(rows))
    print(f"elapsed: {elapsed:.1f} s")
    payload = {
        "command": "analogmem privacy noisy-compress",
        "settings": {"dataset": args.dataset, "noise_std": args.noise_std, "epochs": args.epochs,
                     "repeats": args.repeats, "seed": args.seed},
        "units": dict(NOISY_UNITS, elapsed_s="seconds"),
        "rows": rows,
        "elapsed_s": elapsed,
    }
    write_outputs(args, payload, lambda path: plot_noisy(rows, path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m analogmem.privacy.cli privacy {rrsc,noisy-compress} ...``."""
    return run_standalone(add_subparser, argv)


if __name__ == "__main__":
    sys.exit(main())
