"""Throughput of the torch backend: program + read at 1 day, in cells per second.

Measures, in one run on this machine:
  * the torch backend (``make_bench(..., backend="torch")``) on ``--torch-device``
    with ``--cells`` cells (targets drawn on that device, state in ``--dtype``);
  * the compiled kernels (backend "cython", all cores) on ``min(--cells, --baseline-cells)``
    cells of the same card, as the baseline of the ratio (0 skips it);
and prints cells/s and the ratio. Each timing is the best of ``--repeat`` runs after one
warm-up (CUDA timings are synchronised). On CUDA it also reports the peak GPU memory.

    python benchmarks/bench_torch_backend.py [--cells 4000000] [--torch-device cpu|cuda] [--dtype float32]
        [--device pcm-nandakumar2019] [--baseline-cells 4000000] [--json out.json]
"""

from __future__ import annotations

import argparse
import math
import platform
import time
from typing import Callable

import numpy as np
import torch

import analogmem
from analogmem._io import write_json
from analogmem.emulator import make_bench
from analogmem.emulator.bench import default_threads


def best_of(fn: Callable[[], object], repeat: int) -> float:
    """Best wall time in seconds of ``repeat`` calls of ``fn`` after one untimed warm-up call."""
    fn()
    best = math.inf
    for _ in range(max(1, repeat)):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=4_000_000)
    ap.add_argument("--torch-device", default="cpu")
    ap.add_argument("--dtype", default="float32", choices=("float32", "float64"))
    ap.add_argument("--device", default="pcm-nandakumar2019", help="device card")
    ap.add_argument("--read-time", type=float, default=86400.0, help="seconds after programming (default 1 day)")
    ap.add_argument("--repeat", type=int, default=2)
    ap.add_argument("--baseline-cells", type=int, default=4_000_000,
                    help="cells for the compiled-kernel baseline (0: skip)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    dev = analogmem.load_device(args.device)
    tdev = torch.device(args.torch_device)
    cuda = tdev.type == "cuda"
    sync = torch.cuda.synchronize if cuda else (lambda: None)
    n = args.cells
    bench = make_bench(dev, n, seed=args.seed, backend="torch", torch_device=tdev, dtype=args.dtype)
    gen = torch.Generator(device=tdev).manual_seed(args.seed)
    lo, hi = dev.input_range
    targets = lo + (hi - lo) * torch.rand(n, generator=gen, device=tdev, dtype=getattr(torch, args.dtype))
    if cuda:
        torch.cuda.reset_peak_memory_stats(tdev)
    t_prog = best_of(lambda: (bench.program(targets), sync()), args.repeat)  # CUDA: timed to completion
    t_read = best_of(lambda: (bench.read(args.read_time), sync()), args.repeat)
    total = t_prog + t_read
    result = {"cells": n, "torch_device": str(tdev), "dtype": args.dtype, "device": dev.name,
              "read_time_s": args.read_time, "program_s": t_prog, "read_s": t_read, "total_s": total,
              "cells_per_s": n / total}
    print(f"torch {tdev} ({args.dtype}), {n:,} cells: program {t_prog:.3f} s, read at {args.read_time:g} s "
          f"{t_read:.3f} s = {n / total / 1e6:.1f} M cells/s")
    if cuda:
        result["gpu"] = torch.cuda.get_device_name(tdev)
        result["gpu_peak_memory_GiB"] = torch.cuda.max_memory_allocated(tdev) / 2**30
        print(f"{result['gpu']}: peak memory {result['gpu_peak_memory_GiB']:.1f} GiB")
    bench = targets = None
    if cuda:
        torch.cuda.empty_cache()

    if args.baseline_cells > 0:
        m = min(n, args.baseline_cells)
        ref = analogmem.EmulatedBench(dev, m, seed=args.seed)
        g = np.random.default_rng(args.seed).uniform(lo, hi, m)
        b_prog = best_of(lambda: ref.program(g), args.repeat)
        b_read = best_of(lambda: ref.read(args.read_time), args.repeat)
        base = m / (b_prog + b_read)
        result["baseline"] = {"backend": "cython", "threads": default_threads(), "cells": m,
                              "program_s": b_prog, "read_s": b_read, "cells_per_s": base}
        result["torch_over_cython"] = result["cells_per_s"] / base
        print(f"compiled kernels ({default_threads()} threads), {m:,} cells: {base / 1e6:.1f} M cells/s; "
              f"torch / kernels = {result['torch_over_cython']:.2f}x")
    result["machine"] = {"cpu": platform.processor() or platform.machine(), "torch": torch.__version__,
                         "torch_threads": torch.get_num_threads()}
    if args.json:
        write_json(args.json, result, seed=args.seed, settings=vars(args))
    return result


if __name__ == "__main__":
    main()
