"""Throughput of the cell kernels: program + drift + read of a ResNet-18-sized array.

Measures, in one run on this machine:
  * the compiled kernels (``EmulatedBench``, backend "cython", all cores),
  * the plain-numpy reference (backend "numpy", same model and random streams),
  * numpy's ``standard_normal`` rate (default PCG64 generator, into a warm buffer),
    giving the random-number bound: normals/s × cores / 3 normals per cell,
and prints the ratios. Every timing is the best of ``--repeat`` warm runs (the first,
page-faulting run is discarded).

    python benchmarks/bench_kernels.py [--cells 11200000] [--device pcm-nandakumar2019] [--json out.json]
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import analogmem
from analogmem._io import write_json
from analogmem.emulator.bench import default_threads


def best_of(fn, repeat: int) -> float:
    fn()  # warm-up: first touch of memory, caches
    times = []
    for _ in range(repeat):
        t = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t)
    return min(times)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=11_200_000, help="cells (default: ResNet-18, 11.2 M)")
    ap.add_argument("--device", default="pcm-nandakumar2019")
    ap.add_argument("--read-time", type=float, default=86400.0, help="seconds after programming (default 1 day)")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--threads", type=int, default=None, help="kernel threads (default: all cores)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    n = args.cells
    cores = args.threads or default_threads()
    dev = analogmem.load_device(args.device)
    targets = np.random.default_rng(0).uniform(dev.g_min_S, dev.g_max_S, n)

    # Random-number bound: numpy's default generator into a warm buffer.
    rng = np.random.default_rng(1)
    buf = np.empty(3 * n)
    t_normals = best_of(lambda: rng.standard_normal(out=buf), args.repeat)
    normals_per_s = 3 * n / t_normals
    bound_cells_per_s = normals_per_s * cores / 3

    results = {}
    for backend, threads in (("cython", cores), ("cython", 1), ("numpy", 1)):
        bench = analogmem.EmulatedBench(dev, n, seed=0, backend=backend, n_threads=threads)
        out_prog = best_of(lambda: bench.program(targets), args.repeat)
        out_read = best_of(lambda: bench.read(args.read_time), args.repeat)
        total = out_prog + out_read
        key = f"{backend}_{threads}thread"
        results[key] = {"program_s": out_prog, "read_s": out_read, "total_s": total,
                        "cells_per_s": n / total}
        print(f"{key:>16}: program {out_prog:7.3f} s  drift+read {out_read:7.3f} s  "
              f"total {total:7.3f} s  = {n / total / 1e6:7.1f} M cells/s")
        bench = None  # free the arrays before the next backend

    kernel = results[f"cython_{cores}thread"]["cells_per_s"]
    ref = results["numpy_1thread"]["cells_per_s"]
    summary = {
        "cells": n, "device": dev.name, "read_time_s": args.read_time, "threads": cores,
        "numpy_standard_normal_per_s": normals_per_s,
        "random_bound_cells_per_s": bound_cells_per_s,
        "kernel_cells_per_s": kernel, "reference_cells_per_s": ref,
        "kernel_over_reference": kernel / ref,
        "kernel_over_random_bound": kernel / bound_cells_per_s,
        "kernel_thread_scaling": kernel / results["cython_1thread"]["cells_per_s"],
        "runs": results, "kernels": analogmem.kernels_info(),
        "machine": {"cpu": platform.processor() or platform.machine(), "python": platform.python_version(),
                    "numpy": np.__version__},
    }
    print(f"numpy standard_normal: {normals_per_s / 1e6:.1f} M normals/s on one core; random-number bound "
          f"(3 normals/cell x {cores} cores): {bound_cells_per_s / 1e6:.1f} M cells/s")
    print(f"kernel / numpy reference : {summary['kernel_over_reference']:.2f}x  (target >= 5x)")
    print(f"kernel / random bound    : {summary['kernel_over_random_bound']:.0%}  (target >= 50%)")
    print(f"kernel {cores} threads / 1 thread: {summary['kernel_thread_scaling']:.2f}x")
    if args.json:
        write_json(args.json, summary, seed=0, settings=vars(args))
    return summary


if __name__ == "__main__":
    main()
