"""SuRP throughput (encode and decode) on Laplacian vectors, and the network comparison.

    python benchmarks/bench_pruning.py [--n 10000 100000 300000] [--lambda-d 0.25] [--seed 0]
                                       [--lam-rule {n-1,n-s,mean}] [--max-steps-per-n X]
                                       [--net] [--json results/bench_pruning.json]

Prints steps, bits per weight and seconds per size (the shared-stream scan costs about
n/#candidates uniform draws per step, so encoding grows faster than n), and with ``--net``
the accuracy-vs-sparsity table of ``analogmem prune net`` (≈ 35 s on 2 cores).
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path

import numpy as np

from analogmem._io import write_json
from analogmem.pruning import LAM_RULES, format_network_table, network_comparison, surp_decode, surp_encode


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--n", type=int, nargs="+", default=[10_000, 100_000, 300_000])
    parser.add_argument("--lambda-d", type=float, default=0.25, help="target λ·E|w − ŵ| (default 0.25)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--lam-rule", choices=list(LAM_RULES), default="n-1",
                        help="SuRP's λ⁻¹ update after each step (default n-1 = ×(1 - 1/n))")
    parser.add_argument("--max-steps-per-n", type=float, default=None,
                        help="cap a run at this many steps per sample (n-s stalls without it)")
    parser.add_argument("--net", action="store_true", help="also run the MNIST network comparison")
    parser.add_argument("--json", type=Path, default=Path("results/bench_pruning.json"))
    args = parser.parse_args(argv)

    rows = []
    print("| n | steps | λ·MAE | bits/weight | encode s | decode s | decode identical |")
    print("|---|---|---|---|---|---|---|")
    for n in args.n:
        w = np.random.default_rng(args.seed).laplace(size=n)
        nrm = float(np.float32(np.linalg.norm(w)))
        t0 = time.perf_counter()
        cap = None if args.max_steps_per_n is None else int(args.max_steps_per_n * n)
        code = surp_encode([w], target_mean_residual=args.lambda_d / nrm, seed=args.seed, lam_rule=args.lam_rule,
                           max_steps=cap)
        blob = code.to_bytes()
        t1 = time.perf_counter()
        dec = surp_decode(blob, code.shapes, code.seed_state)[0]
        t2 = time.perf_counter()
        same = bool(np.array_equal(dec, code.layers()[0]))
        mae = float(np.mean(np.abs(w - dec)))
        rows.append({"n": n, "steps": code.n_steps, "mae": mae, "bits_per_weight": code.bits_per_weight,
                     "encode_s": t1 - t0, "decode_s": t2 - t1, "decode_identical": same})
        print(f"| {n} | {code.n_steps} | {mae:.4f} | {code.bits_per_weight:.3f} | {t1 - t0:.2f} | {t2 - t1:.2f} "
              f"| {same} |")
    payload = {"benchmark": "bench_pruning", "settings": {"lambda_D": args.lambda_d, "seed": args.seed,
                                                          "lam_rule": args.lam_rule,
                                                          "max_steps_per_n": args.max_steps_per_n},
               "units": {"encode_s": "seconds (encode + bitstream)", "decode_s": "seconds",
                         "bits_per_weight": "SuRP bitstream bits per sample",
                         "mae": "achieved mean |w - ŵ| (λ = 1)"}, "laplacian": rows}
    if args.net:
        result = network_comparison("mnist", seed=args.seed, progress=True)
        print(format_network_table(result))
        payload["net"] = result
    write_json(args.json, payload, seed=args.seed, settings=vars(args))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
