"""Per-call cost of ``EmulatedBench.program`` + ``read`` on small and large benches.

What a call costs beyond the cells' arithmetic (checking the targets, building the
operation's key, handing the card's parameters to the compiled kernels) shows at a few
cells; at 100,000 cells the arithmetic dominates. For each card and each ``--cells`` count
this times, on one warm bench (state already allocated, ``n_threads`` fixed):

  * ``program``: ``bench.program(targets)`` of every cell;
  * ``read``: ``bench.read(86400.0)`` of every cell (1 day after programming);

  * ``kernel program`` / ``kernel read``: the compiled entry points alone, called as the
    bench calls them (``_kernels.program(bench._params, ...)``, ``_kernels.read(...)``, on
    the bench's own state arrays): what the kernels' face costs per call, without the
    bench's validation, seeding and clock (``--no-kernel-call`` skips it);

each as the median and the best of ``--repeat`` calls (after ``--warmup`` untimed ones), in
microseconds per call. The bench rows use only the public API and the kernel rows the same
private call shape in every checkout since the kernels took a parameter object, so the
same script times another checkout (run it with that checkout's interpreter) —
``--compare OTHER.json`` prints the ratio of this run's medians to another run's
(``other / this``: > 1 means this run is faster).

    python benchmarks/bench_kernel_overhead.py [--cells 10 1000 100000] [--devices pcm-nandakumar2019 rram-wan2022]
        [--threads 1] [--repeat 400] [--warmup 20] [--json out.json] [--compare before.json]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import time
from typing import Callable

import numpy as np

import analogmem

DAY_S = 86400.0


def per_call_us(fn: Callable[[], object], repeat: int, warmup: int) -> tuple[float, float]:
    """Median and best wall time (µs) of ``repeat`` calls of ``fn`` after ``warmup`` untimed ones."""
    for _ in range(warmup):
        fn()
    times = []
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        times.append(time.perf_counter() - t0)
    return 1e6 * statistics.median(times), 1e6 * min(times)


def kernel_calls(bench: analogmem.EmulatedBench, targets: np.ndarray, reps: int, warmup: int) -> dict:
    """The compiled program and read entry points alone, on ``bench``'s card and state."""
    from analogmem.emulator import _kernels
    from analogmem.emulator.chipstate import STATE_KEYS

    state = tuple(bench._cells.arrays.get(k) for k in STATE_KEYS)
    out, age = np.empty(targets.shape[0]), np.array([DAY_S])
    threads = bench.n_threads
    prog = per_call_us(lambda: _kernels.program(bench._params, (1, 2, 3), targets, None, state, threads), reps, warmup)
    read = per_call_us(lambda: _kernels.read(bench._params, (4, 5, 6), state, age, out, threads), reps, warmup)
    return {"kernel_program_us_median": prog[0], "kernel_read_us_median": read[0],
            "kernel_program_read_us_median": prog[0] + read[0]}


def measure(device: str, n: int, threads: int, repeat: int, warmup: int, seed: int, kernel: bool = True) -> dict:
    """One card, one size: the per-call times of program and read on one warm bench."""
    dev = analogmem.load_device(device)
    lo, hi = dev.input_range
    targets = np.random.default_rng(seed).uniform(lo + 0.1 * (hi - lo), hi - 0.1 * (hi - lo), n)
    bench = analogmem.EmulatedBench(dev, n, seed=seed, n_threads=threads)
    # fewer calls on big benches: the arithmetic dominates and the median settles quickly
    reps = max(5, min(repeat, int(repeat * 1000 / max(n, 1000))))
    prog_med, prog_best = per_call_us(lambda: bench.program(targets), reps, warmup)
    read_med, read_best = per_call_us(lambda: bench.read(DAY_S), reps, warmup)
    row = {"device": device, "cells": n, "threads": threads, "calls": reps,
           "program_us_median": prog_med, "program_us_best": prog_best,
           "read_us_median": read_med, "read_us_best": read_best,
           "program_read_us_median": prog_med + read_med}
    if kernel:
        row.update(kernel_calls(bench, targets, reps, warmup))
    return row


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, nargs="+", default=[10, 1000, 100_000])
    ap.add_argument("--devices", nargs="+", default=["pcm-nandakumar2019", "rram-wan2022"], help="device cards")
    ap.add_argument("--threads", type=int, default=1, help="kernel threads (default 1: steadier timings)")
    ap.add_argument("--repeat", type=int, default=400, help="timed calls per measurement (fewer above 1000 cells)")
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-kernel-call", action="store_true", help="time the bench calls only")
    ap.add_argument("--json", default=None, metavar="PATH", help="write the results here")
    ap.add_argument("--compare", default=None, metavar="PATH",
                    help="a --json file of another run: print other/this ratios of the medians")
    args = ap.parse_args(argv)

    rows = [measure(d, n, args.threads, args.repeat, args.warmup, args.seed, not args.no_kernel_call)
            for d in args.devices for n in args.cells]
    other = {}
    if args.compare:
        with open(args.compare) as fh:
            other = {(r["device"], r["cells"]): r for r in json.load(fh)["rows"]}
    kernel = not args.no_kernel_call
    print(f"{'device':<22} {'cells':>8} {'program µs':>11} {'read µs':>9} {'sum µs':>9}"
          + (f" {'kernel p+r µs':>14}" if kernel else "")
          + ("   other sum µs  other/this" + ("  other kernel  other/this" if kernel else "") if other else ""))
    for r in rows:
        line = (f"{r['device']:<22} {r['cells']:>8} {r['program_us_median']:>11.1f} {r['read_us_median']:>9.1f} "
                f"{r['program_read_us_median']:>9.1f}")
        if kernel:
            line += f" {r['kernel_program_read_us_median']:>14.1f}"
        o = other.get((r["device"], r["cells"]))
        if o:
            r["other_program_read_us_median"] = o["program_read_us_median"]
            r["ratio_other_over_this"] = o["program_read_us_median"] / r["program_read_us_median"]
            line += f"   {o['program_read_us_median']:>12.1f}  {r['ratio_other_over_this']:>9.2f}x"
            if kernel and "kernel_program_read_us_median" in o:
                r["kernel_ratio_other_over_this"] = (o["kernel_program_read_us_median"]
                                                     / r["kernel_program_read_us_median"])
                line += f"  {o['kernel_program_read_us_median']:>12.1f}  {r['kernel_ratio_other_over_this']:>9.2f}x"
        print(line)
    result = {"benchmark": "kernel_overhead", "analogmem": analogmem.__file__, "python": platform.python_version(),
              "machine": platform.machine(), "threads": args.threads, "rows": rows}
    if args.json:
        with open(args.json, "w") as fh:
            json.dump(result, fh, indent=2)
    return result


if __name__ == "__main__":
    main()
