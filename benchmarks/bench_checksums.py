"""What the checksums of a chip directory cost: program + read of a file-backed chip with
its CRC32C checks (and the range checks of loaded state) on, against the same calls with
them off, in the same process, alternating, so both see the same disk and page cache.

Each repeat makes a new chip of ``--cells`` float32 PCM cells in ``--dir`` twice (checks
on, checks off; the order alternates between repeats), programs every cell from
``ChunkedTargets`` (the out-of-core benchmark's Weyl sequence) and reads every cell once
with ``read_chunks``. Checks off replaces ``FileArrays._verify`` and
``FileArrays._crcs_after_write`` by no-ops in this process only (a chip written so fails its
checks when reopened; it is deleted). Prints, and writes with ``--json``, the median
seconds of program and read per setting and their ratio (on / off).

    python benchmarks/bench_checksums.py --dir /path/with/space [--cells 10000000] [--repeat 3] [--json PATH]
"""

from __future__ import annotations

import argparse
import shutil
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

from bench_out_of_core import DAY, DEVICE, targets_fn  # noqa: E402

from analogmem import EmulatedBench, load_device  # noqa: E402
from analogmem._io import write_json  # noqa: E402
from analogmem.emulator.bench import ChunkedTargets  # noqa: E402
from analogmem.emulator.chipstate import FileArrays  # noqa: E402

_VERIFY, _CRCS = FileArrays._verify, FileArrays._crcs_after_write


def checks(on: bool) -> None:
    """Turn the checksum and range checks of file-backed chips on or off (this process)."""
    FileArrays._verify = _VERIFY if on else (lambda self, name, lo, values: None)
    FileArrays._crcs_after_write = _CRCS if on else (lambda self, name, lo, values: {})


def one_run(path: Path, n: int, on: bool, seed: int) -> dict[str, float]:
    checks(on)
    shutil.rmtree(path, ignore_errors=True)
    g_max = load_device(DEVICE).g_max_S
    try:
        with EmulatedBench(DEVICE, n, seed=seed, dtype="float32", state_dir=path) as bench:
            t0 = time.perf_counter()
            bench.program(ChunkedTargets(n, targets_fn(g_max)))
            t1 = time.perf_counter()
            total = 0.0
            for _, values in bench.read_chunks(DAY):
                total += float(values.sum(dtype=np.float64))
            t2 = time.perf_counter()
    finally:
        checks(True)
        shutil.rmtree(path, ignore_errors=True)
    return {"program_s": t1 - t0, "read_s": t2 - t1, "mean_read_S": total / n}


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--dir", required=True, type=Path, help="a folder on the disk to measure (the chip goes there)")
    p.add_argument("--cells", type=int, default=10_000_000)
    p.add_argument("--repeat", type=int, default=3)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--json", default=None, help="write the results here")
    args = p.parse_args(argv)
    if args.cells < 1 or args.repeat < 1:
        p.error("--cells and --repeat must be >= 1")
    args.dir.mkdir(parents=True, exist_ok=True)
    runs: dict[str, list[dict[str, float]]] = {"on": [], "off": []}
    for r in range(args.repeat):
        for on in ((True, False) if r % 2 == 0 else (False, True)):
            res = one_run(args.dir / "bench-checksums-chip", args.cells, on, args.seed)
            runs["on" if on else "off"].append(res)
            print(f"repeat {r}: checks {'on ' if on else 'off'} program {res['program_s']:.3f} s, "
                  f"read {res['read_s']:.3f} s", flush=True)
    assert runs["on"][0]["mean_read_S"] == runs["off"][0]["mean_read_S"]  # the checks change no value
    med = {k: {step: float(np.median([x[step] for x in v])) for step in ("program_s", "read_s")}
           for k, v in runs.items()}
    ratio = {step: med["on"][step] / med["off"][step] for step in ("program_s", "read_s")}
    both = (med["on"]["program_s"] + med["on"]["read_s"]) / (med["off"]["program_s"] + med["off"]["read_s"])
    print(f"{args.cells} float32 PCM cells, median of {args.repeat}: program {med['on']['program_s']:.3f} s with "
          f"checks / {med['off']['program_s']:.3f} s without = {ratio['program_s']:.3f}; read "
          f"{med['on']['read_s']:.3f} / {med['off']['read_s']:.3f} = {ratio['read_s']:.3f}; "
          f"program+read ratio {both:.3f}")
    if args.json:
        write_json(args.json, {"cells": args.cells, "repeat": args.repeat, "median_s": med, "ratio_on_over_off": ratio,
                               "ratio_program_plus_read": both, "runs": runs}, seed=args.seed, settings=vars(args))
    return 0


if __name__ == "__main__":
    sys.exit(main())
