"""Tables, JSON payloads and figures for federated runs (:class:`~.flower_app.FederatedResult`)."""

from __future__ import annotations

import math
from pathlib import Path
from typing import Any, Sequence

from analogmem._io import save_figure

__all__ = ["UNITS", "TARGET_GAP", "first_reach", "format_rounds_table", "format_summary_table", "plot_results",
           "result_payload"]

#: Units of the keys in rows and summaries.
UNITS = {
    "test_accuracy": "fraction of the test set classified correctly (server-side, global model)",
    "uplink_bits_total": "bits sent by all clients of the round, measured from the encoded messages",
    "uplink_bpp": "bits per model parameter sent by one client in the round (mean over the round's clients)",
    "cumulative_uplink_bits": "bits sent by all clients up to and including the round",
    "cumulative_bpp": "sum over rounds of uplink_bpp: bits per parameter one client sent so far",
    "p_hat_mean": "FedPM: fraction of ones in the sent masks (mean over clients)",
    "bound_bpp_mean": "FedPM: the paper's bound h2(p_hat) + log2(N)/N, bits per parameter",
    "kl_bpp_mean": "KLMS: KL(q||p) of the client posterior to the prior, bits per parameter (diagnostic, not sent)",
    "n_blocks_mean": "KLMS: blocks per client message",
    "lengths_sent_mean": "KLMS: 1 when the clients sent their block lengths (8 bits per block, counted)",
    "boundary_bits_mean": "KLMS: bits of a client message spent on block boundaries (lengths or KL table; counted)",
    "max_block_kl_bits_mean": "KLMS: the largest KL of one block, bits (diagnostic)",
    "train_loss": "mean cross-entropy of the clients' last local epoch (nats)",
    "final_model_mask_bpp": "FedPM/KLMS: the final mask [theta > 1/2], entropy-coded, bits per parameter",
    "final_mask_density": "FedPM/KLMS: fraction of weights kept by the final mask",
    "n_params": "parameters per model (masked weights+biases for FedPM/KLMS)",
    "elapsed_s": "wall-clock seconds of the simulation",
    "target_accuracy": "the accuracy every run is measured against: FedAvg's final accuracy - TARGET_GAP",
    "first_reach": "first round at which a run's test accuracy >= target_accuracy, and its cumulative_bpp "
                   "there (null: never)",
}

#: Runs are compared at FedAvg's final accuracy minus this (a fraction: 2 points).
TARGET_GAP = 0.02


def first_reach(result, target: float) -> dict[str, Any]:
    """``{"round", "cumulative_bpp"}`` of the first round whose test accuracy is ≥ ``target``
    (both None if no round reaches it): the uplink bits per parameter one client needed."""
    for r in result.rows[1:]:
        if r["test_accuracy"] >= target:
            return {"round": r["round"], "cumulative_bpp": r["cumulative_bpp"]}
    return {"round": None, "cumulative_bpp": None}


def _target(results: Sequence) -> float | None:
    ref = next((r for r in results if r.config["method"] == "fedavg"), None)
    return None if ref is None else ref.final_accuracy - TARGET_GAP


def _extra(row: dict[str, Any]) -> str:
    if "bound_bpp_mean" in row:
        return f"p̂ {row['p_hat_mean']:.3f}, bound {row['bound_bpp_mean']:.4f}"
    if "kl_bpp_mean" in row:
        extra = f"KL {row['kl_bpp_mean']:.4f} bpp, {row['n_blocks_mean']:.0f} blocks"
        if "boundary_bits_mean" in row:
            extra += f", {row['boundary_bits_mean']:.0f} boundary bits"
        return extra + ("" if row.get("lengths_sent_mean", 1) or row.get("boundary_bits_mean") else " (shared lengths)")
    return ""


def format_rounds_table(result) -> str:
    """A Markdown table of one run, one line per round."""
    lines = [f"{result.name}: {result.config['n_clients']} clients, {result.config['split']} split, "
             f"{result.n_params} parameters",
             "| round | test acc (%) | uplink bpp | cumulative bpp | notes |", "|---|---|---|---|---|"]
    for r in result.rows:
        lines.append(f"| {r['round']} | {100 * r['test_accuracy']:.2f} | {r['uplink_bpp']:.4g} | "
                     f"{r['cumulative_bpp']:.4g} | {_extra(r) if r['round'] else 'initial model'} |")
    return "\n".join(lines)


def format_summary_table(results: Sequence) -> str:
    """A Markdown table comparing runs (rounds, final/best accuracy, mean uplink bpp, total bits;
    with a FedAvg run: the gap to it and the bits per parameter each run needed to first reach
    FedAvg's final accuracy − 2 points)."""
    ref = next((r for r in results if r.config["method"] == "fedavg"), None)
    target = _target(results)
    reach = "" if target is None else f" bpp to reach {100 * target:.1f} % |"
    lines = ["| run | rounds | final acc (%) | best acc (%) | mean uplink bpp | total uplink (Mbit) | acc − FedAvg (points) |"
             + reach, "|---|---|---|---|---|---|---|" + ("---|" if reach else "")]
    for res in results:
        s = res.summary()
        gap = "" if ref is None else f"{100 * (s['final_test_accuracy'] - ref.final_accuracy):+.2f}"
        line = (f"| {res.name} | {res.config['rounds']} | {100 * s['final_test_accuracy']:.2f} | "
                f"{100 * s['best_test_accuracy']:.2f} | {s['mean_uplink_bpp']:.4g} | {s['total_uplink_bits'] / 1e6:.3f} | "
                f"{gap} |")
        if target is not None:
            first = first_reach(res, target)
            line += (" never |" if first["round"] is None
                     else f" {first['cumulative_bpp']:.3g} (round {first['round']}) |")
        lines.append(line)
    return "\n".join(lines)


def result_payload(results: Sequence, command: str) -> dict[str, Any]:
    """The JSON document of one or more runs: settings, units, per-round rows, summaries, and
    (with a FedAvg run) the common accuracy target and when each run first reached it."""
    target = _target(results)
    runs = []
    for r in results:
        run = {"label": r.name, "settings": r.config, "summary": r.summary(), "rounds": r.rows}
        if target is not None:
            run["first_reach"] = first_reach(r, target)
        runs.append(run)
    return {"command": command, "units": dict(UNITS), "target_accuracy": target, "runs": runs}


def plot_results(results: Sequence, path: str | Path) -> Path:
    """Accuracy vs round and accuracy vs cumulative uplink bits per parameter (log scale), one
    line per run; PNG written atomically."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    fig = Figure(figsize=(11, 4.2))
    a1, a2 = fig.subplots(1, 2)
    for res in results:
        label = f"{res.name} ({res.mean_uplink_bpp:.3g} bpp)"
        rounds = [r["round"] for r in res.rows]
        acc = [100 * r["test_accuracy"] for r in res.rows]
        a1.plot(rounds, acc, marker="o", ms=3, label=label)
        xs = [r["cumulative_bpp"] for r in res.rows[1:]]
        if xs and all(x > 0 and math.isfinite(x) for x in xs):
            a2.plot(xs, acc[1:], marker="o", ms=3, label=label)
    a1.set_xlabel("round")
    a1.set_ylabel("test accuracy (%)")
    a1.set_title("accuracy vs round")
    a2.set_xscale("log")
    a2.set_xlabel("cumulative uplink bits per parameter (per client)")
    a2.set_ylabel("test accuracy (%)")
    a2.set_title("accuracy vs communication")
    for a in (a1, a2):
        a.grid(alpha=0.3)
        a.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path)
