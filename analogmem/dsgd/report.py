"""The results table and figure of :func:`~analogmem.dsgd.training.run_dsgd`."""

from __future__ import annotations

import os
from typing import Any

from analogmem._io import save_figure

__all__ = ["LABELS", "format_dsgd_table", "plot_dsgd"]

#: Display names of the methods.
LABELS = {"dense": "uncompressed DDP", "topk": "top-k + EF", "randk": "random-k + EF", "rtopk": "rTop-k + EF"}


def _label(run: dict, cfg: dict) -> str:
    label = LABELS.get(run["method"], run["method"])
    if not cfg.get("error_feedback", True):
        label = label.replace(" + EF", "")
    if run["method"] == "rtopk":
        label += f" (r={cfg['r_factor']:g}k)"
    return label


def format_dsgd_table(result: dict) -> str:
    """A Markdown pipe table: per method k and r per step, final test accuracy, bits sent per
    rank (total, per step, and with ⌈log₂ n⌉-bit indices), compression against uncompressed
    DDP, and whether the replicas ended bit-identical."""
    cfg = result["config"]
    lines = ["| method | k / step | r / step | steps | final test acc. | Mbit sent / rank | bits / step "
             "| × fewer than dense | Mbit, log2 n-bit indices | replicas identical |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for run in result["runs"]:
        bits = run["bits"]
        acc = run["final_test_accuracy"]
        lines.append(
            f"| {_label(run, cfg)} | {run['k_per_step']:,} | {run['r_per_step']:,} | {run['steps']} "
            f"| {'—' if acc is None else f'{acc:.2%}'} | {bits['bits_sent'] / 1e6:,.2f} | {run['bits_per_step']:,} "
            f"| {run['compression_vs_dense']:,.1f} | {bits['bits_log2_alternative'] / 1e6:,.2f} "
            f"| {'yes' if run['replicas_identical'] else 'NO'} |")
    return "\n".join(lines)


def plot_dsgd(result: dict, path: str | os.PathLike) -> Any:
    """Write a PNG: test accuracy against step (left) and against cumulative bits sent per
    rank (right, log scale), one line per method."""
    from matplotlib.figure import Figure  # no pyplot: the Agg renderer, no global backend state

    cfg = result["config"]
    fig = Figure(figsize=(12, 4.2))
    ax_step, ax_bits = fig.subplots(1, 2)
    for i, run in enumerate(result["runs"]):
        h = run["history"]
        if not h:
            continue
        label = _label(run, cfg)
        acc = [100 * r["test_accuracy"] for r in h]
        ax_step.plot([r["step"] for r in h], acc, "-", color=f"C{i}", label=label)
        ax_bits.plot([max(r["cumulative_bits"], 1) for r in h], acc, "-", color=f"C{i}", label=label)
    ax_step.set_xlabel("step")
    ax_bits.set_xlabel("cumulative bits sent per rank")
    ax_bits.set_xscale("log")
    for ax in (ax_step, ax_bits):
        ax.set_ylabel("test accuracy (%)")
        ax.grid(True, alpha=0.3)
    handles, labels = ax_step.get_legend_handles_labels()
    n_col = min(max(len(labels), 1), 3)
    n_rows = -(-len(labels) // n_col) if labels else 0
    if labels:  # one legend below both panels, where it covers no curve
        fig.legend(handles, labels, fontsize=8, loc="lower center", ncol=n_col, frameon=False)
    fig.suptitle(f"{cfg['world_size']} ranks, {result.get('backend', '?')}, {cfg['dataset']}: "
                 f"k = {cfg['density']:.2%} of each bucket")
    fig.tight_layout(rect=(0, 0.05 * n_rows + 0.02, 1, 1))
    return save_figure(fig, path, dpi=120)
