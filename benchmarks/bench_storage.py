"""Storage path against the cell kernels: put and get of N weights per encoder and dtype.

    .venv/bin/python benchmarks/bench_storage.py [--sizes 1e7,1e8] [--dtypes float32,float64]
        [--encoders naive,adaptive,differential-mmse,sliced,digital] [--rounds 3] [--json PATH]

Each configuration runs in a fresh subprocess (so its peak RSS is its own): ``EmulatedStore(card,
n_cells = the encoder's cells, dtype)``, ``put("w", w, encoder)`` of N float32 weights drawn
N(0, 0.05²), ``get("w", t_s=86400)``; then, in the same process, the baseline the storage layer
calls: the kernels' ``program`` + ``read(86400)`` of the same number of cells of a second bench of
the same card and dtype. The two alternate for ``--rounds`` rounds (fresh store and bench each
round) and each side reports its best (put and get each at their fastest, the kernels at theirs), so
a noisy moment on this shared machine does not land on one side only. It reports put and get in weights/s, the kernels' cells/s, the ratio
(put + get time) / (program + read time), and the peak RSS beyond the chip's state and the input
weights, per weight. ``digital`` is the k-bit + BCH baseline (8-bit weights, 2 bits per cell,
BCH t = 8; its BCH code runs block by block in ``bchlib``), run at the smallest size only.
A discarded warm-up run of the first configuration comes first: on this machine the first child
of a run was measured up to 2x slow whichever encoder it ran. Not a test: timings depend on the
machine (2 cores here).
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import textwrap
import time

CHILD = textwrap.dedent("""
    import json, resource, sys, time
    import numpy as np
    from analogmem.emulator.bench import EmulatedBench
    from analogmem.emulator.chipstate import release_state_pool
    from analogmem.storage import EmulatedStore, make_encoder
    from analogmem.storage.encoders import DigitalECC
    card, name, n, dtype, rounds = sys.argv[1], sys.argv[2], int(float(sys.argv[3])), sys.argv[4], int(sys.argv[5])
    w = (np.random.default_rng(0).standard_normal(n) * 0.05).astype(np.float32)
    enc = DigitalECC(bits=8, bits_per_cell=2, t=8) if name == "digital" else make_encoder(name, 2)
    n_cells = int(enc.n_cells(n))
    put_s, get_s, kern_s = [], [], []
    for k in range(rounds):  # storage and kernels alternate, so a noisy moment does not favour one side
        release_state_pool()  # both pay first-touch of fresh chip state
        st = EmulatedStore(card, n_cells, seed=0, dtype=dtype)
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 if k == 0 else base
        t0 = time.perf_counter(); st.put("w", w, encoder=enc); t1 = time.perf_counter()
        r = st.get("w", t_s=86400.0); t2 = time.perf_counter()
        put_s.append(t1 - t0); get_s.append(t2 - t1)
        if k == 0:  # peak RSS and error of the first round (the later rounds repeat it)
            peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
            state = st.bench.state_nbytes
            rms = float(np.sqrt(np.mean((r.astype(np.float64) - w) ** 2)) / w.std())
        del st, r
        release_state_pool()
        b = EmulatedBench(card, n_cells, seed=1, dtype=dtype)
        if k == 0:
            g = np.random.default_rng(1).uniform(b.device.g_min_S, b.device.g_max_S, n_cells)
        t3 = time.perf_counter(); b.program(g); b.read(86400.0); t4 = time.perf_counter()
        kern_s.append(t4 - t3)
        del b
    # best of the rounds on each side: the storage path as min(put) + min(get)
    put, get, best = min(put_s), min(get_s), min(kern_s)
    print(json.dumps({"card": card, "encoder": name, "encoder_spec": enc.spec(), "weights": n, "cells": n_cells,
                      "dtype": dtype, "rounds": rounds, "put_s": put, "get_s": get, "put_weights_per_s": n / put,
                      "get_weights_per_s": n / get, "kernels_program_read_s": best,
                      "kernels_cells_per_s": n_cells / best, "ratio_storage_over_kernels": (put + get) / best,
                      "put_s_rounds": put_s, "get_s_rounds": get_s, "kernels_s_rounds": kern_s,
                      "chip_state_bytes": state, "peak_rss_extra_bytes_per_weight": (peak - base - state) / n,
                      "relative_rms_error_1day": rms}))
""")


def main(argv=None) -> int:
    from analogmem._io import write_json
    from analogmem.emulator.bench import default_threads

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default="rram-wan2022")
    ap.add_argument("--sizes", default="1e7,1e8", help="weights per run, comma-separated (default 1e7,1e8)")
    ap.add_argument("--dtypes", default="float32,float64")
    ap.add_argument("--encoders", default="naive,adaptive,differential-mmse,sliced,digital")
    ap.add_argument("--digital-size", type=float, default=None,
                    help="weights for the digital baseline (default: the smallest size)")
    ap.add_argument("--rounds", type=int, default=3,
                    help="alternating storage/kernels rounds per configuration; each side reports its best "
                         "(default 3)")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    sizes = [int(float(s)) for s in a.sizes.split(",")]
    rows = []
    t_start = time.perf_counter()
    # the first child process of a run is measured slow whatever it runs (a cold machine: page
    # cache, memory first touch, clocks); one discarded run of the first configuration takes that
    first = a.encoders.split(",")[0]
    subprocess.run([sys.executable, "-c", CHILD, a.device, "adaptive" if first == "digital" else first,
                    str(min(sizes)), a.dtypes.split(",")[0], "1"], capture_output=True, text=True)
    for n in sizes:
        for dtype in a.dtypes.split(","):
            for name in a.encoders.split(","):
                if name == "digital" and n != int(a.digital_size or min(sizes)):
                    continue
                out = subprocess.run([sys.executable, "-c", CHILD, a.device, name, str(n), dtype, str(a.rounds)],
                                     capture_output=True, text=True)
                if out.returncode != 0:
                    print(out.stderr, file=sys.stderr)
                    return 1
                row = json.loads(out.stdout.strip().splitlines()[-1])
                rows.append(row)
                print(f"{n:>12,} {dtype:8s} {name:18s} put {row['put_weights_per_s'] / 1e6:7.2f} M w/s  "
                      f"get {row['get_weights_per_s'] / 1e6:7.2f} M w/s  kernels {row['kernels_cells_per_s'] / 1e6:6.1f}"
                      f" M cells/s  ratio {row['ratio_storage_over_kernels']:6.2f}x  "
                      f"RSS +{row['peak_rss_extra_bytes_per_weight']:5.1f} B/w", flush=True)
    res = {"device": a.device, "threads": default_threads(), "runs": rows, "read_time_s": 86400.0,
           "wall_s": time.perf_counter() - t_start,
           "units": {"put_weights_per_s": "weights/s", "kernels_cells_per_s": "cells/s",
                     "peak_rss_extra_bytes_per_weight": "B per weight beyond chip state and input weights"}}
    if a.json:
        write_json(a.json, res, seed=0, settings=vars(a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
