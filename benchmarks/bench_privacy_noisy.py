"""Noisy-data lossy compression (thesis ch.8): noise level × rate × accuracy × re-identification
on load_digits and MNIST-5k, each against training on the clean images.

    python benchmarks/bench_privacy_noisy.py [--datasets digits mnist5k] [--noise-std 0.1 0.25 0.5 1.0]
                                             [--epochs 40] [--repeats 3] [--seed 0]
                                             [--json results/bench_privacy_noisy.json]

Prints one table per data set (accuracy: mean ± sd over the networks) and writes JSON.
About 1 min (digits) + 4 min (MNIST-5k) on 2 cores with 3 networks per release.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

from analogmem._io import write_json
from analogmem.privacy.noisy_compression import NOISY_UNITS, format_noisy_table, run_noisy_compression


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--datasets", nargs="+", default=["digits", "mnist5k"], choices=["digits", "mnist5k"])
    parser.add_argument("--noise-std", type=float, nargs="+", default=[0.1, 0.25, 0.5, 1.0])
    parser.add_argument("--epochs", type=int, default=40)
    parser.add_argument("--repeats", type=int, default=3, help="networks per release (accuracy averaged)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("results/bench_privacy_noisy.json"))
    args = parser.parse_args(argv)

    results = {}
    for name in args.datasets:
        start = time.perf_counter()
        rows = run_noisy_compression(name, tuple(args.noise_std), seed=args.seed, epochs=args.epochs,
                                     repeats=args.repeats, progress=True)
        elapsed = time.perf_counter() - start
        print(f"\n{name} (seed {args.seed}, {args.repeats} networks × {args.epochs} epochs per release, {elapsed:.0f} s)")
        print(format_noisy_table(rows))
        results[name] = {"rows": rows, "elapsed_s": elapsed}
    write_json(args.json, {
        "benchmark": "bench_privacy_noisy",
        "settings": {"noise_std": args.noise_std, "epochs": args.epochs, "repeats": args.repeats, "seed": args.seed},
        "units": dict(NOISY_UNITS, elapsed_s="seconds"), "results": results,
    }, seed=args.seed, settings=vars(args))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
