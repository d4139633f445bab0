"""Store + read back a ResNet-18 (11.2 M weights) on emulated RRAM; wall time per read-back.

    .venv/bin/python benchmarks/bench_storage.py [--encoder differential] [--reads 3] [--json PATH]

Times: encoding + programming (store_model), and per read-back (load_model: one read of
every cell with drift/relaxation/read noise, decoding, building the module). Not a test.
"""

from __future__ import annotations

import argparse
import time

import numpy as np


def main(argv=None) -> int:
    import torch

    from analogmem._io import write_json
    from analogmem.emulator.bench import default_threads
    from analogmem.storage.encoders import make_encoder
    from analogmem.ml.models import count_parameters, resnet18
    from analogmem.jobs.store_resnet import preferred_rram_card
    from analogmem.storage import EmulatedStore, load_model, store_model

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--device", default=None)
    ap.add_argument("--encoder", default="differential", help="a make_encoder name (default differential)")
    ap.add_argument("--cells-per-weight", type=int, default=2)
    ap.add_argument("--reads", type=int, default=3)
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    torch.set_num_threads(min(2, torch.get_num_threads()))
    device = a.device or preferred_rram_card()
    torch.manual_seed(0)
    model = resnet18().eval()
    n_w = count_parameters(model)
    enc = make_encoder(a.encoder, a.cells_per_weight)
    n_cells = sum(enc.n_cells(p.numel()) for p in model.parameters())
    store = EmulatedStore(device, n_cells, seed=0)
    t0 = time.perf_counter()
    h = store_model(model, store, encoder=enc)
    store_s = time.perf_counter() - t0
    reads = []
    for t in np.geomspace(1.0, 10 * 365 * 86400.0, a.reads):
        t1 = time.perf_counter()
        m = load_model(h, t_s=float(t))
        reads.append(time.perf_counter() - t1)
    err = float((m[-1].weight.detach() - model[-1].weight.detach()).pow(2).mean().sqrt() / model[-1].weight.detach().std())
    res = {"model": "resnet18", "n_weights": n_w, "device": device, "encoder": enc.spec(), "n_cells": n_cells,
           "threads": default_threads(), "store_wall_s": store_s, "read_back_wall_s": reads,
           "read_back_wall_s_mean": float(np.mean(reads)), "fc_relative_rms_error_last_read": err}
    print(f"ResNet-18: {n_w:,} weights on {n_cells:,} cells of {device} ({enc.name}), {res['threads']} threads")
    print(f"store (encode + program): {store_s:.2f} s")
    print(f"read-back (read + decode + module): " + ", ".join(f"{r:.2f}" for r in reads)
          + f" s; mean {res['read_back_wall_s_mean']:.2f} s")
    if a.json:
        write_json(a.json, res, seed=0, settings=vars(a))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
