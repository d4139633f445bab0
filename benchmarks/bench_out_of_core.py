"""A chip larger than memory: 10⁹ PCM cells with float32 state in files, programmed and read.

Runs each step in a separate process (peak resident memory is that process's
``ru_maxrss``, which counts file pages mapped into it as well as its own memory):

  1. ``program+read``: a new chip in ``--dir`` (``EmulatedBench(..., state_dir=...)``),
     every cell programmed from ``ChunkedTargets`` (a Weyl sequence of the cell index, made
     chunk by chunk), then read at 1 day with ``read_chunks`` (mean and std of every value
     read, so every value is used); the reads of the first ``--check-cells`` cells are
     kept for step 3.
  2. ``reopen``: ``EmulatedBench.open`` of the clean chip, read at 1 day again.
  3. in this process: an in-memory bench of ``--check-cells`` cells with the same seed and
     the same calls must give, bit for bit, the first cells of steps 1 and 2 (the random
     stream is counter-based: a cell's values do not depend on how many cells the chip has).
  4. ``crash``: the chip is programmed again and the process is killed (SIGKILL) once the
     program has begun writing; ``EmulatedBench.open`` must then refuse it (StorageError).
  5. throughput: the same program + read on an in-memory bench of ``--ram-cells`` cells
     (median of ``--ram-repeat`` runs), per cell, against step 1's.

``--io`` chooses how the state files are streamed: ``direct`` (O_DIRECT, the default where
the file system allows it), ``buffered`` (through the page cache) or ``auto``. Put the
files on the disk you mean to measure: a chip that fits in free memory can be read back
from the page cache with ``--io buffered``.

The state files (12 GB for 10⁹ float32 PCM cells) are deleted at the end unless ``--keep``.

    python benchmarks/bench_out_of_core.py --dir /path/with/space [--cells 1000000000] [--io auto] [--json PATH]
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

DEVICE = "pcm-nandakumar2019"
DAY = 86400.0


def targets_fn(g_max: float):
    """Targets of cells lo..hi-1: g_max · u(i) with u(i) the top 53 bits of i·0x9E3779B97F4A7C15
    mod 2^64 (Weyl sequence: a cheap, deterministic sweep of the range). Returns a view of
    a buffer reused from call to call (the bench uses each chunk before asking for the next)."""
    bufs: dict[str, np.ndarray] = {}

    def fn(lo: int, hi: int) -> np.ndarray:
        m = hi - lo
        if "idx" not in bufs or bufs["idx"].shape[0] < m:
            bufs["base"] = np.arange(m, dtype=np.uint64)
            bufs["idx"], bufs["out"] = np.empty(m, dtype=np.uint64), np.empty(m)
        idx, out = bufs["idx"][:m], bufs["out"][:m]
        np.add(bufs["base"][:m], np.uint64(lo), out=idx)
        np.multiply(idx, np.uint64(0x9E3779B97F4A7C15), out=idx)
        np.right_shift(idx, np.uint64(11), out=idx)
        np.copyto(out, idx, casting="unsafe")
        out *= g_max * 2.0**-53
        return out
    return fn


def _child(argv: list[str]) -> dict:
    """One step in its own process; prints a JSON line."""
    import analogmem
    from analogmem import EmulatedBench
    from analogmem.emulator.bench import ChunkedTargets

    step, path, n, check, seed = argv[0], Path(argv[1]), int(argv[2]), int(argv[3]), int(argv[4])
    direct_io = {"auto": None, "direct": True, "buffered": False}[argv[5]]
    dev = analogmem.load_device(DEVICE)
    out: dict = {"step": step}
    if step == "program+read":
        t0 = time.perf_counter()
        bench = EmulatedBench(dev, n, seed=seed, dtype="float32", state_dir=path, direct_io=direct_io)
        t1 = time.perf_counter()
        bench.program(ChunkedTargets(n, targets_fn(dev.g_max_S)))
        t2 = time.perf_counter()
        out.update(construct_s=t1 - t0, program_s=t2 - t1)
    else:
        t1 = time.perf_counter()
        bench = EmulatedBench.open(path, direct_io=direct_io)
        out.update(open_s=time.perf_counter() - t1)
    out["direct_io"] = bool(bench._cells.direct_io)
    if step == "crash":  # program again; the parent kills this process mid-way
        print(json.dumps({"step": "crash", "pid": os.getpid()}), flush=True)
        bench.program(ChunkedTargets(n, lambda lo, hi: targets_fn(dev.g_max_S)(lo, hi) * 0.5))
        return {"step": "crash", "error": "the program finished before it was killed"}
    t2 = time.perf_counter()
    total, total2, first = 0.0, 0.0, []
    for lo, values in bench.read_chunks(DAY):  # the consumer is kept cheap: it is timed too
        total += float(values.sum(dtype=np.float64))
        total2 += float(np.dot(values, values))  # float32 dot: the std is a sanity figure
        if lo < check:
            first.append(values[:check - lo].copy())
    out.update(read_s=time.perf_counter() - t2, mean_S=total / n, std_S=(total2 / n - (total / n) ** 2) ** 0.5)
    np.save(path.parent / f"{path.name}-{step}-first.npy", np.concatenate(first)[:check])
    out["max_rss_bytes"] = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
    return out


def run_child(step: str, args, extra_env: dict | None = None) -> dict:
    proc = subprocess.run([sys.executable, __file__, "--child", step, str(args.path), str(args.cells),
                           str(args.check_cells), str(args.seed), args.io], capture_output=True, text=True)
    if proc.returncode != 0:
        raise RuntimeError(f"step {step} failed ({proc.returncode}):\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def crash(args) -> dict:
    """Start a second program and SIGKILL it once the header says it is writing."""
    from analogmem import EmulatedBench, StorageError

    proc = subprocess.Popen([sys.executable, __file__, "--child", "crash", str(args.path), str(args.cells),
                             str(args.check_cells), str(args.seed), args.io], stdout=subprocess.PIPE, text=True)
    header = args.path / "header.json"
    t0 = time.perf_counter()
    dirty_seen = None
    while proc.poll() is None and time.perf_counter() - t0 < 600:
        try:
            if json.loads(header.read_text()).get("dirty"):
                dirty_seen = time.perf_counter() - t0
                break
        except (OSError, ValueError):
            pass
        time.sleep(0.05)
    time.sleep(args.kill_after)  # let it write part of the chip
    try:
        still_writing = bool(json.loads(header.read_text()).get("dirty"))
    except (OSError, ValueError):
        still_writing = False
    killed = proc.poll() is None and still_writing
    if proc.poll() is None:
        os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    try:
        EmulatedBench.open(args.path)
        refused, message = False, "opened"
    except StorageError as exc:
        refused, message = True, str(exc)
    return {"killed_mid_program": killed and dirty_seen is not None, "dirty_after_s": dirty_seen,
            "returncode": proc.returncode, "refused_on_open": refused, "message": message}


def in_memory(args) -> dict:
    """Step 3 and 5: an in-memory bench with the same seed and calls."""
    import analogmem
    from analogmem import EmulatedBench
    from analogmem.emulator.bench import ChunkedTargets

    dev = analogmem.load_device(DEVICE)
    check = EmulatedBench(dev, args.check_cells, seed=args.seed, dtype="float32")
    check.program(ChunkedTargets(args.check_cells, targets_fn(dev.g_max_S)))
    first_read, second_read = check.read(DAY), check.read(DAY)
    same = {step: bool(np.array_equal(np.load(args.path.parent / f"{args.path.name}-{step}-first.npy"), ref))
            for step, ref in (("program+read", first_read), ("reopen", second_read))}
    n = args.ram_cells
    runs = []
    for r in range(args.ram_repeat):
        t0 = time.perf_counter()
        ram = EmulatedBench(dev, n, seed=args.seed + r, dtype="float32")
        ram.program(ChunkedTargets(n, targets_fn(dev.g_max_S)))
        t1 = time.perf_counter()
        ram.read(DAY)
        runs.append((t1 - t0, time.perf_counter() - t1))
        del ram
    program_s = float(np.median([p for p, _ in runs]))
    read_s = float(np.median([r for _, r in runs]))
    return {"first_cells_equal_in_memory": same, "ram_cells": n, "ram_runs": len(runs),
            "ram_program_s_median": program_s, "ram_read_s_median": read_s, "ram_cells_per_s": n / (program_s + read_s)}


def main(argv: list[str] | None = None) -> dict:
    argv = sys.argv[1:] if argv is None else argv
    if argv and argv[0] == "--child":
        print(json.dumps(_child(argv[1:])), flush=True)
        return {}
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--dir", required=True, help="a directory on a disk with room for the state (12 B/cell)")
    ap.add_argument("--cells", type=int, default=1_000_000_000)
    ap.add_argument("--check-cells", type=int, default=1 << 22, help="cells compared with an in-memory bench")
    ap.add_argument("--ram-cells", type=int, default=1 << 24, help="cells of the in-memory throughput baseline")
    ap.add_argument("--ram-repeat", type=int, default=5, help="runs of the in-memory baseline (median)")
    ap.add_argument("--kill-after", type=float, default=3.0, help="seconds of writing before the SIGKILL")
    ap.add_argument("--io", choices=("auto", "direct", "buffered"), default="auto",
                    help="state file I/O: direct (O_DIRECT), buffered (page cache), auto (direct where supported)")
    ap.add_argument("--seed", type=int, default=2024)
    ap.add_argument("--keep", action="store_true", help="keep the state files")
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)
    args.path = Path(args.dir) / "chip"
    if args.path.exists():
        raise SystemExit(f"{args.path} exists: choose another --dir or delete it")
    from analogmem._io import write_json

    results: dict = {"cells": args.cells, "device": DEVICE, "dtype": "float32", "read_time_s": DAY}
    try:
        results["program_read"] = run_child("program+read", args)
        r = results["program_read"]
        print(f"{args.cells:,} cells ({'direct' if r['direct_io'] else 'page-cache'} I/O): program {r['program_s']:.1f} s, read {r['read_s']:.1f} s "
              f"({args.cells / (r['program_s'] + r['read_s']) / 1e6:.1f} M cells/s); peak RSS "
              f"{r['max_rss_bytes'] / 2**30:.2f} GiB; mean {r['mean_S'] * 1e6:.4f} µS, std {r['std_S'] * 1e6:.4f} µS")
        results["state_file_bytes"] = sum(p.stat().st_size for p in args.path.glob("*.bin"))
        results["reopen"] = run_child("reopen", args)
        print(f"reopened in {results['reopen']['open_s']:.2f} s, read {results['reopen']['read_s']:.1f} s, "
              f"peak RSS {results['reopen']['max_rss_bytes'] / 2**30:.2f} GiB")
        results["in_memory"] = in_memory(args)
        m = results["in_memory"]
        ooc_rate = args.cells / (r["program_s"] + r["read_s"])
        results["throughput_in_memory_over_out_of_core"] = m["ram_cells_per_s"] / ooc_rate
        print(f"first {args.check_cells:,} cells equal to an in-memory bench: {m['first_cells_equal_in_memory']}")
        print(f"in memory ({m['ram_cells']:,} cells, median of {m['ram_runs']}): {m['ram_cells_per_s'] / 1e6:.1f} "
              f"M cells/s; out of core "
              f"{ooc_rate / 1e6:.1f} M cells/s = {results['throughput_in_memory_over_out_of_core']:.2f}x slower per cell")
        results["crash"] = crash(args)
        c = results["crash"]
        print(f"killed mid-program: {c['killed_mid_program']}; reopen refused: {c['refused_on_open']} ({c['message']})")
    finally:
        if not args.keep:
            shutil.rmtree(args.path, ignore_errors=True)
            for p in args.path.parent.glob(f"{args.path.name}-*-first.npy"):
                p.unlink()
    if args.json:
        write_json(args.json, results, seed=args.seed, settings={k: str(v) for k, v in vars(args).items()})
    return results


if __name__ == "__main__":
    main()
