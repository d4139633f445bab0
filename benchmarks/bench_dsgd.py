"""rTop-k vs top-k vs random-k (all with error feedback, equal k) over seeds, densities and r/k
(thesis ch.5), on 2 gloo processes training the small CNN on MNIST-5k; plus the cost of one
selection on a 114,314-coordinate bucket.

    python benchmarks/bench_dsgd.py [--seeds 0 1 2] [--densities 0.01 0.001] [--r-factors 4]
                                    [--epochs 5] [--json results/bench_dsgd.json]

For each density and seed: one run of top-k and random-k, and one rTop-k run per r/k; the
table gives, per method, the final test accuracy and the mean test accuracy over the
evaluations (every 20 steps: higher = faster convergence), mean ± sample std over seeds.
All methods at one density send exactly the same bits. About 1 min per (density, seed) with
one r/k on 2 busy cores: 5.6 min with the defaults (each extra r/k adds ~20 s per pair).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

import torch

from analogmem._io import write_json
from analogmem.dsgd import DSGDConfig, rank_generator, run_dsgd, select


def _selection_ms(n: int = 114_314, density: float = 0.01, r_factor: float = 4.0, repeats: int = 30) -> dict:
    """Median milliseconds of one selection on an n-coordinate bucket (1 thread)."""
    torch.set_num_threads(1)
    p = torch.randn(n, generator=torch.Generator().manual_seed(0))
    k = round(density * n)
    out = {}
    for method, r in (("topk", k), ("randk", n), ("rtopk", round(r_factor * k))):
        times = []
        for i in range(repeats):
            gen = rank_generator(0, 0, i, 0)
            t = time.perf_counter()
            select(method, p, k, r, gen)
            times.append(1e3 * (time.perf_counter() - t))
        out[method] = statistics.median(times)
    return out


def _stats(values: list[float]) -> dict:
    return {"mean": statistics.fmean(values), "std": statistics.stdev(values) if len(values) > 1 else 0.0,
            "runs": values}


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    parser.add_argument("--densities", type=float, nargs="+", default=[0.01, 0.001])
    parser.add_argument("--r-factors", type=float, nargs="+", default=[4.0])
    parser.add_argument("--epochs", type=int, default=5)
    parser.add_argument("--json", type=Path, default=Path("results/bench_dsgd.json"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    sel = _selection_ms()
    print("selection time on a 114,314-coordinate bucket, k = 1%, r = 4k (median ms, 1 thread): "
          + ", ".join(f"{m} {v:.2f}" for m, v in sel.items()))
    rows = []
    for density in args.densities:
        final: dict[str, list[float]] = {}
        mean_acc: dict[str, list[float]] = {}
        bits: dict[str, int] = {}
        for seed in args.seeds:
            runs = run_dsgd(DSGDConfig(methods=("topk", "randk"), density=density, epochs=args.epochs, seed=seed),
                            progress=False)["runs"]
            for rf in args.r_factors:
                run = run_dsgd(DSGDConfig(methods=("rtopk",), density=density, r_factor=rf, epochs=args.epochs,
                                          seed=seed), progress=False)["runs"][0]
                run["method"] = f"rtopk r={rf:g}k"
                runs.append(run)
            for run in runs:
                assert run["replicas_identical"], f"replicas differ: {run['method']} seed {seed}"
                final.setdefault(run["method"], []).append(run["final_test_accuracy"])
                mean_acc.setdefault(run["method"], []).append(
                    statistics.fmean(h["test_accuracy"] for h in run["history"]))
                bits[run["method"]] = run["bits"]["bits_sent"]
            print(f"density {density:g} seed {seed}: " + ", ".join(
                f"{m} {v[-1]:.3f}" for m, v in final.items()), flush=True)
        for method in final:
            rows.append({"density": density, "method": method, "final_test_accuracy": _stats(final[method]),
                         "mean_test_accuracy_over_run": _stats(mean_acc[method]), "bits_sent_per_rank": bits[method]})
    elapsed = time.perf_counter() - start

    print("| density | method | final test acc. (mean ± std) | mean acc. over the run | Mbit sent / rank |")
    print("|---|---|---|---|---|")
    for r in rows:
        f, m = r["final_test_accuracy"], r["mean_test_accuracy_over_run"]
        print(f"| {r['density']:g} | {r['method']} | {f['mean']:.2%} ± {f['std']:.2%} "
              f"| {m['mean']:.2%} ± {m['std']:.2%} | {r['bits_sent_per_rank'] / 1e6:.2f} |")
    print(f"seeds {args.seeds}; elapsed: {elapsed:.1f} s")
    write_json(args.json, {
        "benchmark": "bench_dsgd",
        "settings": {"seeds": args.seeds, "densities": args.densities, "r_factors": args.r_factors,
                     "epochs": args.epochs, "world_size": 2, "dataset": "mnist", "eval_every": 20},
        "units": {"final_test_accuracy": "fraction (0-1), mean/std over seeds",
                  "mean_test_accuracy_over_run": "fraction (0-1): mean of the evaluations every 20 steps",
                  "bits_sent_per_rank": "bits one rank handed to all_gather over the run",
                  "selection_ms": "median milliseconds of one selection, 1 thread", "elapsed_s": "seconds"},
        "selection_ms": sel, "rows": rows, "elapsed_s": elapsed,
    }, seed=args.seeds, settings=vars(args))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
