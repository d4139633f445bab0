"""One model on one chip in this process against the same model over Ray workers (``shards=N``).

    .venv/bin/python benchmarks/bench_model_sharded.py [--weights 1e8] [--width 2048] [--shards 2]
        [--device rram-wan2022] [--cells-per-weight 2] [--weight-dtype float16] [--dtype float32]
        [--ray-address ADDRESS] [--json PATH]

Builds the synthetic stack of ``bench_model_out_of_core.py`` (bias-free ``width × width`` linear
layers, seeded); programs it with :func:`analogmem.program_model` on one chip in this process and
reads every tensor at 1 day (:meth:`~analogmem.storage.analog_model.AnalogModel.tensors_at`);
then starts Ray (a local one of ``--shards`` CPUs, or joins ``--ray-address``), programs the same
model with ``shards=N`` (one actor per shard, each its own chip) and reads it the same way
(tensors gathered one at a time, one in flight per shard). It reports each step's wall time, the
ratio sharded / one chip for program and read, the cells per shard, the relative RMS error of
both (the same statistics, other chips: shard ``i`` is seeded with child ``i``), and the driver's
peak RSS. On one 2-core machine the shards share the cores the one chip's kernel threads use, so
the ratio shows Ray's overhead (sending each shard its tensors, gathering the reads); on a cluster
each shard brings its own cores and memory.

Not a test: timings depend on the machine (2 cores here).
"""

from __future__ import annotations

import argparse
import math
import os
import resource
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from bench_model_out_of_core import build_stack  # noqa: E402


def _read_all(model, ref_state, t_s: float) -> tuple[float, float]:
    """Read every tensor at ``t_s``: (seconds, relative RMS error against ``ref_state``)."""
    import torch

    t0 = time.perf_counter()
    sq_err = sq_ref = 0.0
    for name, v in model.tensors_at(t_s):
        ref = ref_state[name].float()
        d = v.float() - ref
        sq_err += float(torch.sum(d * d, dtype=torch.float64))
        sq_ref += float(torch.sum(ref * ref, dtype=torch.float64))
    return time.perf_counter() - t0, math.sqrt(sq_err / sq_ref)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=float, default=1e8, help="weights in the model (rounded up to whole layers)")
    ap.add_argument("--width", type=int, default=2048, help="each layer is width x width")
    ap.add_argument("--shards", type=int, default=2)
    ap.add_argument("--device", default="rram-wan2022")
    ap.add_argument("--cells-per-weight", type=int, default=2)
    ap.add_argument("--weight-dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the cells' state")
    ap.add_argument("--t-read-s", type=float, default=86400.0)
    ap.add_argument("--ray-address", default=None, help="a Ray cluster to join (default: a local Ray)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import ray
    import torch

    import analogmem

    cores = len(os.sched_getaffinity(0))
    torch.set_num_threads(cores)
    model = build_stack(args.weights, args.width, args.weight_dtype, args.seed)
    state = model.state_dict()
    n_weights = sum(int(v.numel()) for v in state.values())
    print(f"model: {len(model)} layers of {args.width}x{args.width} = {n_weights:,} {args.weight_dtype} weights",
          flush=True)
    kw = dict(cells_per_weight=args.cells_per_weight, seed=args.seed, dtype=args.dtype)

    t0 = time.perf_counter()
    one = analogmem.program_model(model, args.device, **kw)
    t_program_1 = time.perf_counter() - t0
    t_read_1, err_1 = _read_all(one, state, args.t_read_s)
    cells = one.n_cells
    del one
    print(f"one chip: program {t_program_1:.1f} s, read {t_read_1:.1f} s, relative RMS {err_1:.4f}", flush=True)

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    t0 = time.perf_counter()
    tmp = None
    if args.ray_address is None:
        tmp = tempfile.mkdtemp(prefix="am-ray-")
        ray.init(num_cpus=args.shards, include_dashboard=False, log_to_driver=False, configure_logging=False,
                 _temp_dir=tmp)
    else:
        ray.init(address=args.ray_address, log_to_driver=False, configure_logging=False)
    t_ray = time.perf_counter() - t0
    try:
        t0 = time.perf_counter()
        sm = analogmem.program_model(model, args.device, shards=args.shards, **kw)
        t_program_n = time.perf_counter() - t0
        t_read_n, err_n = _read_all(sm, state, args.t_read_s)
        per_shard = sm.usage()["cells_per_shard"]
        sm.close()
    finally:
        ray.shutdown()
        if tmp is not None:
            import shutil

            shutil.rmtree(tmp, ignore_errors=True)
    print(f"{args.shards} shards (Ray start {t_ray:.1f} s): program {t_program_n:.1f} s, read {t_read_n:.1f} s, "
          f"relative RMS {err_n:.4f}; cells per shard {per_shard}", flush=True)
    print(f"sharded / one chip: program {t_program_n / t_program_1:.2f}x, read {t_read_n / t_read_1:.2f}x")
    result = {
        "device": args.device, "weights": n_weights, "layers": len(model), "layer_shape": [args.width, args.width],
        "weight_dtype": args.weight_dtype, "cell_dtype": args.dtype, "cells": cells, "shards": args.shards,
        "cells_per_shard": per_shard, "t_read_s": args.t_read_s,
        "one_chip": {"program_s": t_program_1, "read_s": t_read_1, "relative_rms_error": err_1},
        "sharded": {"ray_start_s": t_ray, "program_s": t_program_n, "read_s": t_read_n, "relative_rms_error": err_n,
                    "ray": "local" if args.ray_address is None else args.ray_address},
        "program_ratio_sharded_over_one_chip": t_program_n / t_program_1,
        "read_ratio_sharded_over_one_chip": t_read_n / t_read_1,
        "driver_peak_rss_bytes": resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024, "cpus": cores,
    }
    if args.json:
        from analogmem._io import write_json

        write_json(args.json, result, seed=args.seed, settings=vars(args))
    return result


if __name__ == "__main__":
    main()
