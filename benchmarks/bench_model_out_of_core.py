"""A model larger than the machine's comfort on cells on disk: program_model with ``state_dir``.

    .venv/bin/python benchmarks/bench_model_out_of_core.py [--weights 1e9] [--width 4096]
        [--device rram-wan2022] [--cells-per-weight 2] [--weight-dtype float16] [--dtype float32]
        [--state-dir DIR] [--prefix-layers 2] [--json PATH]

Builds a synthetic model: a stack of ``width × width`` linear layers without bias (float16
weights drawn N(0, 1/width), seeded), enough layers for ``--weights`` weights; programs it with
:func:`analogmem.program_model` onto a chip of the card whose cells live in ``--state-dir`` (a
new directory; default a temporary one, removed at the end), at ``--cells-per-weight`` cells per
weight with the default encoder; reads it back one tensor at a time with
:meth:`~analogmem.storage.analog_model.AnalogModel.tensors_at` at 1 day (the model is never
held twice), and reports the time of each step, the peak RSS of the process (it includes the
model's own float16 weights: 2 bytes per weight), the chip's bytes on disk, and the relative
RMS error of the read-back weights. Then it programs the first ``--prefix-layers`` layers alone
*in memory* with the same seed and checks that their read-back weights are bit-identical to the
big chip's (cell streams and read noise are functions of the seed and the cell index only).

Not a test: timings depend on the machine and its disk (2 cores here).
"""

from __future__ import annotations

import argparse
import json
import math
import os
import resource
import shutil
import tempfile
import time


def _peak_rss_bytes() -> int:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024


def _dir_bytes(path: str) -> int:
    total = 0
    for root, _dirs, files in os.walk(path):
        for f in files:
            st = os.stat(os.path.join(root, f))
            total += st.st_blocks * 512
    return total


def build_stack(weights: float, width: int, weight_dtype: str, seed: int):
    """A ``torch.nn.Sequential`` of ``ceil(weights / width²)`` bias-free ``width × width`` linear
    layers of ``weight_dtype``, weights N(0, 1/width) from a torch generator seeded ``seed``."""
    import torch

    n_layers = max(1, math.ceil(weights / (width * width)))
    wdt = getattr(torch, weight_dtype)
    g = torch.Generator().manual_seed(seed)
    layers = []
    for _ in range(n_layers):
        lin = torch.nn.Linear(width, width, bias=False, dtype=wdt)
        with torch.no_grad():
            lin.weight.copy_(torch.randn(width, width, generator=g) / math.sqrt(width))
        lin.requires_grad_(False)
        layers.append(lin)
    return torch.nn.Sequential(*layers)


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--weights", type=float, default=1e9, help="weights in the model (rounded up to whole layers)")
    ap.add_argument("--width", type=int, default=4096, help="each layer is width x width")
    ap.add_argument("--device", default="rram-wan2022")
    ap.add_argument("--cells-per-weight", type=int, default=2)
    ap.add_argument("--weight-dtype", default="float16", choices=["float16", "float32"])
    ap.add_argument("--dtype", default="float32", choices=["float32", "float64"], help="the cells' state")
    ap.add_argument("--state-dir", default=None, help="new directory for the chip (default: a temporary one)")
    ap.add_argument("--prefix-layers", type=int, default=2)
    ap.add_argument("--t-read-s", type=float, default=86400.0)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    args = ap.parse_args(argv)

    import numpy as np
    import torch

    import analogmem

    torch.set_num_threads(max(1, len(os.sched_getaffinity(0))))
    t0 = time.perf_counter()
    model = build_stack(args.weights, args.width, args.weight_dtype, args.seed)
    layers = list(model)
    n_layers, per_layer = len(layers), args.width * args.width
    t_build = time.perf_counter() - t0
    n_weights = n_layers * per_layer
    rss_model = _peak_rss_bytes()
    print(f"model: {n_layers} layers of {args.width}x{args.width} = {n_weights:,} {args.weight_dtype} weights "
          f"({t_build:.1f} s; peak RSS {rss_model / 1e9:.2f} GB)", flush=True)

    tmp = None
    state_dir = args.state_dir
    if state_dir is None:
        tmp = tempfile.mkdtemp(prefix="am-ooc-", dir=os.environ.get("TMPDIR", "/tmp"))
        state_dir = os.path.join(tmp, "chip")
    try:
        t0 = time.perf_counter()
        am = analogmem.program_model(model, args.device, args.cells_per_weight, seed=args.seed, dtype=args.dtype,
                                     state_dir=state_dir, progress=True)
        t_program = time.perf_counter() - t0
        disk = _dir_bytes(state_dir)
        rss_program = _peak_rss_bytes()
        print(f"programmed {am.n_cells:,} cells in {t_program:.1f} s ({am.n_cells / t_program / 1e6:.1f} M cells/s); "
              f"on disk {disk / 1e9:.1f} GB; peak RSS {rss_program / 1e9:.2f} GB", flush=True)

        t0 = time.perf_counter()
        sq_err = sq_ref = 0.0
        first: dict[str, torch.Tensor] = {}
        prefix_names = [f"{i}.weight" for i in range(min(args.prefix_layers, n_layers))]
        for name, v in am.tensors_at(args.t_read_s, progress=True):
            ref = model.state_dict()[name].float()
            d = v.float() - ref
            sq_err += float(torch.sum(d * d, dtype=torch.float64))
            sq_ref += float(torch.sum(ref * ref, dtype=torch.float64))
            del d, ref
            if name in prefix_names:
                first[name] = v
        t_read = time.perf_counter() - t0
        rss_read = _peak_rss_bytes()
        rel_rms = math.sqrt(sq_err / sq_ref)
        print(f"read at {args.t_read_s:g} s in {t_read:.1f} s ({n_weights / t_read / 1e6:.1f} M weights/s); "
              f"relative RMS error {rel_rms:.4f}; peak RSS {rss_read / 1e9:.2f} GB", flush=True)
        del am
    finally:
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)

    identical = None
    if prefix_names:
        prefix = torch.nn.Sequential(*layers[:len(prefix_names)])
        small = analogmem.program_model(prefix, args.device, args.cells_per_weight, seed=args.seed, dtype=args.dtype)
        ref = dict(small.tensors_at(args.t_read_s))
        identical = all(torch.equal(first[n], ref[n]) for n in prefix_names)
        print(f"first {len(prefix_names)} layers in memory alone: bit-identical to the chip on disk: {identical}")

    result = {
        "device": args.device, "weights": n_weights, "layers": n_layers, "layer_shape": [args.width, args.width],
        "weight_dtype": args.weight_dtype, "cell_dtype": args.dtype, "cells_per_weight": args.cells_per_weight,
        "cells": n_weights * args.cells_per_weight, "t_read_s": args.t_read_s, "seed": args.seed,
        "build_model_s": t_build, "program_s": t_program, "read_s": t_read,
        "program_cells_per_s": n_weights * args.cells_per_weight / t_program,
        "read_weights_per_s": n_weights / t_read, "chip_bytes_on_disk": disk,
        "peak_rss_bytes": rss_read, "peak_rss_after_model_bytes": rss_model,
        "model_bytes": n_weights * np.dtype(args.weight_dtype).itemsize,
        "relative_rms_error": rel_rms, "prefix_layers_checked": len(prefix_names),
        "prefix_bit_identical_to_in_memory": identical,
        "cpus": len(os.sched_getaffinity(0)),
    }
    if args.json:
        from analogmem._io import write_json

        write_json(args.json, result, seed=args.seed, settings=vars(args))
    return result


if __name__ == "__main__":
    main()
