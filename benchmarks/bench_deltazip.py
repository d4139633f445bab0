"""GPT-Zip (thesis ch.4) on the offline demo pair: the headline setting (2 bits, 95 % sparsity)
against magnitude-prune + round-to-nearest at equal size and BitDelta, a sparsity sweep, the
grid ablation (where the 2-bit grid is fitted; GPTQ's min-max grid), and the compression time;
with ``--finetune-lrs``, GPT-Zip against magnitude + RTN on finetunes of the same base at other
learning rates (the default finetune's row is the sweep's).

    python benchmarks/bench_deltazip.py [--preset small] [--device cpu|cuda] [--sparsities 0.5 0.8 0.9 0.95]
                                        [--finetune-lrs 1e-4 1e-3] [--lr-sparsities 0.95 0.9 0.5]
                                        [--json results/bench_deltazip.json]

Trains the demo pair once if it is not cached (a few minutes of CPU), then about a minute per
sparsity on 2 cores; each extra finetune learning rate trains (once, cached) a finetune of the
cached base. ``--device cuda`` runs compression and evaluation on a GPU.
"""

from __future__ import annotations

import argparse
import dataclasses
import time
from pathlib import Path

import numpy as np

from analogmem._io import write_json
from analogmem.deltazip import apply_delta, calibration_ids, compress_model_delta, demo_models, lm_loss
from analogmem.deltazip.lm import PRESETS
from analogmem.deltazip.experiment import UNITS, _n_changed, delta_sizes, format_table


def _sweep(args, dm, sparsities, variants, bitdelta: bool = False):
    """Rows (finetuned, base, then each variant at each sparsity, then BitDelta) for one demo pair."""
    base, ft = dm.base.to(args.device), dm.finetuned.to(args.device)
    ctx = dm.spec.ctx
    calib = calibration_ids(dm.finetune_train, args.calibration, ctx, args.seed)
    n_changed = _n_changed(base, ft)

    def loss(model):
        return lm_loss(model, dm.heldout, seq_len=ctx, device=args.device)

    rows = [{"model": "finetuned", "heldout_loss_nats": loss(ft)},
            {"model": "base", "heldout_loss_nats": loss(base)}]
    for r in rows:
        r["perplexity"] = float(np.exp(r["heldout_loss_nats"]))
    print(f"finetune lr {dm.spec.finetune_lr:g}: finetuned {rows[0]['heldout_loss_nats']:.4f}, "
          f"base {rows[1]['heldout_loss_nats']:.4f}", flush=True)
    for sp in sparsities:
        for label, kw in variants:
            method = "gptzip" if label.startswith("gptzip") else "magnitude-rtn"
            start = time.perf_counter()
            d = compress_model_delta(base, ft, calib if method == "gptzip" else None, method=method, sparsity=sp,
                                     bits=2, device=args.device, progress=False, **kw)
            secs = time.perf_counter() - start
            v = loss(apply_delta(base, d))
            rows.append({"model": f"{label}@{sp:g}", "sparsity": sp, "heldout_loss_nats": v,
                         "perplexity": float(np.exp(v)), "seconds": secs, **delta_sizes(d, n_changed)})
            print(f"{rows[-1]['model']:<28} loss {v:.4f}  {rows[-1]['file_bytes']:>8,} B  {secs:6.1f} s", flush=True)
    if bitdelta:
        d = compress_model_delta(base, ft, method="bitdelta", device=args.device, progress=False)
        v = loss(apply_delta(base, d))
        rows.append({"model": "bitdelta", "heldout_loss_nats": v, "perplexity": float(np.exp(v)),
                     "seconds": 0.0, **delta_sizes(d, n_changed)})
    return dm, rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--preset", default="small")
    parser.add_argument("--device", default="cpu")
    parser.add_argument("--calibration", type=int, default=64)
    parser.add_argument("--sparsities", type=float, nargs="+", default=[0.5, 0.8, 0.9, 0.95])
    parser.add_argument("--finetune-lrs", type=float, nargs="*", default=[],
                        help="also compare GPT-Zip and magnitude + RTN on finetunes at these learning rates")
    parser.add_argument("--lr-sparsities", type=float, nargs="+", default=[0.95, 0.9, 0.5],
                        help="sparsities of the --finetune-lrs comparison (default 0.95 0.9 0.5)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--json", type=Path, default=Path("results/bench_deltazip.json"))
    args = parser.parse_args(argv)

    variants = [("gptzip", {}), ("gptzip-gridfit-delta", {"grid_fit": "delta"}),
                ("gptzip-minmax", {"grid": "minmax"}), ("magnitude-rtn", {}), ("magnitude-rtn-minmax", {"grid": "minmax"})]
    dm, rows = _sweep(args, demo_models(args.preset), args.sparsities, variants, bitdelta=True)
    print(format_table(rows))
    lr_runs = []
    for lr in args.finetune_lrs:
        spec = dataclasses.replace(PRESETS[args.preset], finetune_lr=lr)
        dm_lr, lr_rows = _sweep(args, demo_models(spec), args.lr_sparsities, variants[:1] + variants[3:4])
        lr_runs.append({"finetune_lr": lr, "model": dm_lr.info, "rows": lr_rows})
    write_json(args.json, {"benchmark": "bench_deltazip", "model": dm.info, "units": UNITS, "rows": rows,
                           "default_finetune_lr": PRESETS[args.preset].finetune_lr, "finetune_lr_runs": lr_runs},
               seed=args.seed, settings=vars(args))
    print(f"wrote {args.json}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
