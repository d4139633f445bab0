"""The GPT-Zip experiment: compress a finetuned model's delta with each method, measure sizes
and held-out loss, and read the GPT-Zip delta back from an emulated analog store over time.

:func:`run_deltazip` returns a JSON-able dict (keys carry their units; see :data:`UNITS`);
:func:`format_table` and :func:`plot_deltazip` turn it into the printed table and the PNG.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any

import numpy as np

from analogmem._checks import check_int
from analogmem._io import progress as progress_bar, save_figure

from ._validation import DeltaZipError, check_bits, check_positive_int, check_sparsity
from .compress import METHODS, apply_delta, compress_model_delta
from .lm import DemoModels, calibration_ids, demo_models, lm_loss
from .on_store import cells_needed, put_delta
from .packed import CompressedDelta, save_delta

__all__ = ["UNITS", "delta_sizes", "evaluate_methods", "format_store_table", "format_table", "plot_deltazip",
           "run_deltazip", "store_readback"]

UNITS = {
    "heldout_loss_nats": "mean next-token cross-entropy on the held-out finetuning text, in nats per token "
                         "(per byte for the byte-level demo models): the unit is model.loss_unit",
    "perplexity": "exp(loss), per token (per byte for the demo models)",
    "file_bytes": "exact size of the packed delta file (bytes)",
    "fp16_delta_bytes": "float16 delta of every parameter that changed: 2 bytes per entry",
    "ratio_vs_fp16_delta": "fp16_delta_bytes / file_bytes",
    "compressed_layer_bytes": "bytes of the compressed linear layers' sections (mask, codes, scales, zeros, signs)",
    "ratio_compressed_layers": "2 bytes x linear-layer weights / compressed_layer_bytes",
    "bits_per_weight": "compressed_layer_bytes x 8 / linear-layer weights",
    "density": "fraction of linear-layer delta entries stored",
    "seconds": "wall-clock seconds to compress",
    "t_s": "read time after programming (s)",
    "code_error_rate": "fraction of 2-bit codes read back wrong",
    "analog_cells": "4-level cells programmed with codes (incl. BCH parity)",
}

STORE_TIMES_S = (1.0, 3600.0, 86400.0, 30 * 86400.0, 365 * 86400.0)


def delta_sizes(delta: CompressedDelta, n_changed: int) -> dict[str, Any]:
    """Sizes of ``delta`` against the float16 delta of ``n_changed`` changed parameter entries."""
    br = delta.size_breakdown()
    total = sum(br.values())
    layer_bytes = br["mask"] + br["codes"] + br["scale"] + br["zero"] + br["signs"] + br["alpha"]
    n_lin = delta.n_weights("sparse") + delta.n_weights("sign")
    stored = sum(int(r.mask.sum()) for r in delta.records.values() if r.kind == "sparse")
    return {"file_bytes": total, "breakdown_bytes": br, "fp16_delta_bytes": 2 * n_changed,
            "ratio_vs_fp16_delta": 2 * n_changed / total, "compressed_layer_bytes": layer_bytes,
            "ratio_compressed_layers": 2 * n_lin / max(1, layer_bytes),
            "bits_per_weight": 8 * layer_bytes / max(1, n_lin),
            "density": (stored / max(1, n_lin)) if delta.n_weights("sparse") else 1.0}


def _n_changed(base: Any, finetuned: Any) -> int:
    import torch

    pb = dict(base.named_parameters())
    n = 0
    for name, p in finetuned.named_parameters():
        d = p.detach() != pb[name].detach()
        if bool(torch.any(d)):
            n += p.numel()
    return n


def evaluate_methods(dm: DemoModels, methods: tuple[str, ...] = ("gptzip", "magnitude-rtn", "bitdelta"), *,
                     sparsity: float = 0.95, bits: int = 2, grid: str = "sparse", grid_fit: str = "pruned",
                     n_calibration: int = 64, seed: int = 0, device: Any = "cpu", out_dir: str | Path | None = None,
                     progress: bool = True) -> tuple[list[dict[str, Any]], dict[str, CompressedDelta]]:
    """Rows for the finetuned model, the base model and each compressed delta, and the deltas."""
    for m in methods:
        if m not in METHODS:
            raise DeltaZipError(f"unknown method {m!r}; choose from {METHODS}")
    seq_len = dm.spec.ctx
    base, ft = dm.base.to(device), dm.finetuned.to(device)

    def loss(model):
        return lm_loss(model, dm.heldout, seq_len=seq_len, device=device)

    rows = []
    for label, model in (("finetuned", ft), ("base", base)):
        v = loss(model)
        rows.append({"model": label, "heldout_loss_nats": v, "perplexity": float(np.exp(v))})
    calib = calibration_ids(dm.finetune_train, n_calibration, seq_len, seed)
    n_changed = _n_changed(base, ft)
    deltas = {}
    for m in methods:
        start = time.perf_counter()
        delta = compress_model_delta(base, ft, calib if m == "gptzip" else None, method=m, sparsity=sparsity,
                                     bits=bits, grid=grid, grid_fit=grid_fit, device=device, progress=progress)
        secs = time.perf_counter() - start
        v = loss(apply_delta(base, delta))
        row = {"model": m, "heldout_loss_nats": v, "perplexity": float(np.exp(v)),
               "seconds": secs, **delta_sizes(delta, n_changed),
               "settings": delta.meta["settings"]}
        if out_dir is not None:
            path = save_delta(delta, Path(out_dir) / f"{m}.amdelta")
            row["file"] = str(path)
            if path.stat().st_size != row["file_bytes"]:
                raise DeltaZipError(f"{path}: file length {path.stat().st_size} != packed size {row['file_bytes']}")
        rows.append(row)
        deltas[m] = delta
    return rows, deltas


def store_readback(dm: DemoModels, delta: CompressedDelta, *, card: str = "pcm-nandakumar2019",
                   times_s: tuple[float, ...] = STORE_TIMES_S, ecc_t: int = 8, seed: int = 0,
                   device: Any = "cpu", progress: bool = True) -> list[dict[str, Any]]:
    """Put ``delta`` on an :class:`~analogmem.storage.EmulatedStore` of ``card`` (codes on
    4-level cells with BCH ``ecc_t``), read it at each time and evaluate the held-out loss."""
    from analogmem.storage import EmulatedStore

    n_cells = max(1, cells_needed(delta, ecc_t=ecc_t))
    store = EmulatedStore(card, n_cells=n_cells, seed=seed)
    handle = put_delta(delta, store, ecc_t=ecc_t)
    written = {n: r.codes for n, r in delta.records.items() if r.kind == "sparse"}
    n_codes = sum(c.size for c in written.values())
    rows = []
    for t in progress_bar(times_s, enabled=progress, desc=f"read {card}", unit="time"):
        back = handle.read(t)
        wrong = sum(int(np.count_nonzero(back.records[n].codes != c)) for n, c in written.items())
        v = lm_loss(apply_delta(dm.base, back, device=device), dm.heldout, seq_len=dm.spec.ctx, device=device)
        rows.append({"card": card, "t_s": float(t), "ecc_t": ecc_t, "code_error_rate": wrong / max(1, n_codes),
                     "heldout_loss_nats": v, "perplexity": float(np.exp(v)),
                     "analog_cells": int(store.usage()["analog_cells"]),
                     "digital_bits": int(store.usage()["digital_bits"])})
    return rows


def check_settings(*, sparsity: Any, bits: Any, n_calibration: Any, seed: Any, ecc_t: Any) -> None:
    """Validate an experiment's settings before anything is trained or loaded (raises
    :class:`DeltaZipError` naming the setting)."""
    check_sparsity(sparsity)
    check_bits(bits)
    check_positive_int(n_calibration, "n_calibration")
    check_int(seed, "seed", 0, error=DeltaZipError)
    check_int(ecc_t, "ecc_t", 0, error=DeltaZipError)


def run_deltazip(preset: str = "small", *, family: str | None = None,
                 methods: tuple[str, ...] = ("gptzip", "magnitude-rtn", "bitdelta"), sparsity: float = 0.95,
                 bits: int = 2, grid: str = "sparse", grid_fit: str = "pruned", n_calibration: int = 64,
                 seed: int = 0, device: Any = "cpu",
                 store_card: str | None = "pcm-nandakumar2019", store_times_s: tuple[float, ...] = STORE_TIMES_S,
                 ecc_t: int = 8, out_dir: str | Path | None = None, progress: bool = True) -> dict[str, Any]:
    """The whole experiment on the cached demo pair ``preset`` (trained on first use)."""
    check_settings(sparsity=sparsity, bits=bits, n_calibration=n_calibration, seed=seed, ecc_t=ecc_t)
    start = time.perf_counter()
    dm = demo_models(preset, family=family, progress=progress)
    rows, deltas = evaluate_methods(dm, methods, sparsity=sparsity, bits=bits, grid=grid, grid_fit=grid_fit,
                                    n_calibration=n_calibration, seed=seed, device=device, out_dir=out_dir,
                                    progress=progress)
    store_rows = []
    if store_card and "gptzip" in deltas and bits >= 2:
        store_rows = store_readback(dm, deltas["gptzip"], card=store_card, times_s=store_times_s, ecc_t=ecc_t,
                                    seed=seed, device=device, progress=progress)
    return {"model": {"preset": preset, "family": dm.spec.family, "spec": dm.info.get("spec"),
                      "n_parameters": dm.info.get("n_parameters"), "cache_dir": str(dm.base_dir.parent),
                      "trained_now": dm.info.get("trained_now"), "heldout_bytes": len(dm.heldout),
                      "calibration_sequences": n_calibration, "calibration_seq_len": dm.spec.ctx,
                      "loss_unit": "nats per byte"},
            "rows": rows, "store_rows": store_rows, "elapsed_s": time.perf_counter() - start}


def format_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table: loss, perplexity, size, ratios per model/method."""
    lines = ["| model | held-out loss (nats/byte) | perplexity/byte | file (bytes) | ratio vs fp16 delta "
             "| ratio (linear layers) | bits/weight (linear) | density |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        if "file_bytes" in r:
            lines.append(f"| {r['model']} | {r['heldout_loss_nats']:.4f} | {r['perplexity']:.3f} "
                         f"| {r['file_bytes']:,} | {r['ratio_vs_fp16_delta']:.1f}× | {r['ratio_compressed_layers']:.1f}× "
                         f"| {r['bits_per_weight']:.3f} | {r['density']:.3f} |")
        else:
            lines.append(f"| {r['model']} | {r['heldout_loss_nats']:.4f} | {r['perplexity']:.3f} "
                         "| — | — | — | — | — |")
    return "\n".join(lines)


def _fmt_time(t: float) -> str:
    for unit, s in (("y", 365 * 86400.0), ("d", 86400.0), ("h", 3600.0)):
        if t >= s:
            return f"{t / s:g} {unit}"
    return f"{t:g} s"


def format_store_table(rows: list[dict[str, Any]]) -> str:
    """Markdown table of the store read-back."""
    if not rows:
        return ""
    lines = [f"GPT-Zip delta on {rows[0]['card']} (codes on 4-level cells, BCH t={rows[0]['ecc_t']}; "
             f"{rows[0]['analog_cells']:,} cells, {rows[0]['digital_bits']:,} digital bits)",
             "| read at | code error rate | held-out loss (nats/byte) | perplexity/byte |", "|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {_fmt_time(r['t_s'])} | {r['code_error_rate']:.2e} | {r['heldout_loss_nats']:.4f} "
                     f"| {r['perplexity']:.3f} |")
    return "\n".join(lines)


def plot_deltazip(result: dict[str, Any], path: str | Path) -> Path:
    """PNG: held-out loss against file size per method (finetuned/base as lines), and the loss
    of the GPT-Zip delta read from the store against time."""
    from matplotlib.figure import Figure

    rows, store_rows = result["rows"], result.get("store_rows") or []
    fig = Figure(figsize=(11, 4))
    axes = fig.subplots(1, 2)
    ref = {r["model"]: r for r in rows if "file_bytes" not in r}
    for i, r in enumerate(r for r in rows if "file_bytes" in r):
        axes[0].scatter([r["file_bytes"]], [r["heldout_loss_nats"]], s=50, color=f"C{i}",
                        label=f"{r['model']} ({r['ratio_vs_fp16_delta']:.0f}× vs fp16 delta)")
    for name, style in (("finetuned", "-"), ("base", "--")):
        if name in ref:
            for ax in axes:
                ax.axhline(ref[name]["heldout_loss_nats"], color="k", ls=style, lw=1, label=name)
    axes[0].set_xscale("log")
    sizes = [r["file_bytes"] for r in rows if "file_bytes" in r]
    if sizes:  # five ticks in kB across the points (the default minor labels of a sub-decade range overlap)
        from matplotlib.ticker import NullFormatter, NullLocator

        lo, hi = min(sizes) / 1.3, max(sizes) * 1.3
        ticks = [float(f"{v:.2g}") for v in np.geomspace(lo, hi, 5)]
        axes[0].set_xlim(lo, hi)
        axes[0].set_xticks(ticks, [f"{v / 1e3:g} kB" for v in ticks], rotation=30, fontsize=8)
        axes[0].xaxis.set_minor_locator(NullLocator())
        axes[0].xaxis.set_minor_formatter(NullFormatter())
    axes[0].set_xlabel("compressed delta file")
    axes[0].set_title("delta compression at equal settings")
    if store_rows:
        axes[1].plot([r["t_s"] for r in store_rows], [r["heldout_loss_nats"] for r in store_rows], "o-",
                     color="C0", label=f"GPT-Zip read from {store_rows[0]['card']}")
        for r in store_rows:
            axes[1].annotate(f"{100 * r['code_error_rate']:.1f}% codes wrong", (r["t_s"], r["heldout_loss_nats"]),
                             textcoords="offset points", xytext=(0, 8), ha="center", fontsize=7, rotation=90)
        axes[1].set_xscale("log")
        axes[1].set_xlabel("read time after programming (s)")
        axes[1].set_title("delta codes on 4-level analog cells")
    for ax in axes:
        ax.set_ylabel("held-out loss (nats/byte)")
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    return save_figure(fig, path, dpi=120)
