"""The emulator demo: multi-level storage and a weight tensor on PCM and RRAM over time.

For each device card it programs ``n_cells`` cells — half at ``levels`` evenly spaced
conductance levels, half with a Laplacian-distributed weight tensor mapped linearly onto
the card's conductance range — then reads every cell at several times after programming
(1 s to 10 years) and reports, per time:

* the symbol error rate of the multi-level cells (a read decoded to the nearest level),
* the relative RMS error of the weights read back (a naive linear map of the central
  99.8 % of the weights onto the conductance range and back; no encoder, no drift
  compensation: the baseline that the encoders of analogmem.storage.encoders improve on),
* the mean drift of each level (mean read / target),

as a table, a JSON file (self-describing keys with units) and a PNG figure (read
distributions per level at 1 s and 1 year; error rates against time).

Run it as ``analogmem cells``. The storage of a whole ResNet (encoders, allocation,
accuracy) is the main job, ``analogmem demo``; this shows the cell physics it stands on.
"""

from __future__ import annotations

import argparse
import time
from pathlib import Path
from typing import Any

import numpy as np

from .._io import help_text, save_figure, write_json
from .._checks import check_int
from ..errors import SettingError
from ..emulator.bench import EmulatedBench, default_threads
from ..emulator.cells import bundled_devices, load_device

__all__ = ["run_demo", "add_subparser", "DEFAULT_TIMES_S"]

DAY, YEAR = 86400.0, 365.0 * 86400.0
#: Read times after programming (s): 1 s, 1 min, 1 h, 1 day, 1 week, 1 month, 1 year, 10 years.
DEFAULT_TIMES_S = (1.0, 60.0, 3600.0, DAY, 7 * DAY, 30 * DAY, YEAR, 10 * YEAR)
DEFAULT_DEVICES = ("pcm-nandakumar2019", "rram-wan2022")


def _level_targets(g_min: float, g_max: float, levels: int) -> np.ndarray:
    """``levels`` evenly spaced targets (S), centred in equal slices of [g_min, g_max]."""
    edges = np.linspace(g_min, g_max, levels + 1)
    return 0.5 * (edges[:-1] + edges[1:])


def run_demo(devices: tuple[str, ...] = DEFAULT_DEVICES, n_cells: int = 1_000_000, levels: int = 8,
             times_s: tuple[float, ...] = DEFAULT_TIMES_S, seed: int = 0, n_threads: int | None = None,
             progress: bool = True) -> dict[str, Any]:
    """Run the demo and return its results (see module docstring); pure computation, no files.

    Raises :class:`~analogmem.errors.SettingError` before any work for ``n_cells`` < 4 or
    ``levels`` outside ``[2, n_cells // 2]`` (half the cells hold the levels)."""
    from tqdm.auto import tqdm

    n_cells = check_int(n_cells, "--cells (n_cells)", 4, error=SettingError)
    levels = check_int(levels, "--levels (levels)", 2, n_cells // 2, error=SettingError)

    results: dict[str, Any] = {
        "description": "Multi-level cells and a Laplacian weight tensor stored on emulated analog memory, "
                       "read back at several times after programming",
        "n_cells_per_device": n_cells, "levels": levels, "seed": seed, "times_s": list(times_s),
        "devices": {},
    }
    bar = tqdm(total=len(devices) * len(times_s), desc="demo", unit="read", disable=not progress)
    for d_index, name in enumerate(devices):
        dev = load_device(name)
        rng = np.random.default_rng([seed, d_index])
        n_level = n_cells // 2
        level_g = _level_targets(dev.g_min_S, dev.g_max_S, levels)
        level_of_cell = rng.integers(0, levels, n_level)
        weights = rng.laplace(0.0, 0.05, n_cells - n_level)
        # naive linear map of the central 99.8 % of the weights onto the whole range
        w_lo, w_hi = (float(v) for v in np.quantile(weights, [0.001, 0.999]))
        weight_g = dev.g_min_S + (np.clip(weights, w_lo, w_hi) - w_lo) / (w_hi - w_lo) * (dev.g_max_S - dev.g_min_S)
        bench = EmulatedBench(dev, n_cells, seed=[seed, d_index], n_threads=n_threads)
        t0 = time.perf_counter()
        bench.program(np.concatenate([level_g[level_of_cell], weight_g]))
        program_s = time.perf_counter() - t0
        per_time = []
        histograms = {}
        for t in times_s:
            g = bench.read(t)
            g_level, g_weight = g[:n_level], g[n_level:]
            decoded = np.abs(g_level[:, None] - level_g[None, :]).argmin(axis=1)
            w_read = w_lo + (g_weight - dev.g_min_S) / (dev.g_max_S - dev.g_min_S) * (w_hi - w_lo)
            per_time.append({
                "time_s": t,
                "symbol_error_rate": float(np.mean(decoded != level_of_cell)),
                "weight_relative_rms_error": float(np.sqrt(np.mean((w_read - weights) ** 2)) / np.std(weights)),
                "level_mean_over_target": [float(np.mean(g_level[level_of_cell == k]) / level_g[k])
                                           for k in range(levels)],
                "level_std_uS": [float(np.std(g_level[level_of_cell == k]) * 1e6) for k in range(levels)],
            })
            if t in (times_s[0], YEAR) or t == times_s[-1]:
                histograms[t] = g_level[:20000], level_of_cell[:20000]
            bar.update()
        results["devices"][name] = {
            "technology": dev.technology, "source": dev.source.get("citation", ""),
            "card_sha256": dev.card_sha256, "g_min_uS": dev.g_min_S * 1e6, "g_max_uS": dev.g_max_S * 1e6,
            "level_targets_uS": (level_g * 1e6).tolist(), "program_seconds_wall": program_s,
            "reads": per_time, "_histograms": histograms,
        }
    bar.close()
    return results


def plot_demo(results: dict[str, Any], path: Path) -> None:
    """Write the demo figure: read distributions per device and error rates vs time."""
    import matplotlib
    import matplotlib.ticker
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    names = list(results["devices"])
    n_cols = len(names) + 1 if len(names) > 1 else 2
    fig = Figure(figsize=(5 * (len(names) + 1), 8))
    axes = fig.subplots(2, n_cols, squeeze=False)
    cmap = matplotlib.colormaps["viridis"].resampled(max(2, results["levels"]))
    for col, name in enumerate(names):
        dev = results["devices"][name]
        for row, (t, (g, lev)) in enumerate(list(dev["_histograms"].items())[:2]):
            ax = axes[row, col]
            bins = np.linspace(float(np.min(g)) * 1e6, float(np.max(g)) * 1e6, 121)
            for k in range(results["levels"]):
                ax.hist(g[lev == k] * 1e6, bins=bins, histtype="stepfilled", alpha=0.55, color=cmap(k),
                        label=f"level {k}: {dev['level_targets_uS'][k]:.3g} µS")
            for target in dev["level_targets_uS"]:
                ax.axvline(target, color="k", lw=0.5, ls=":")
            width_uS = bins[1] - bins[0]
            ax.set_title(f"{name}: reads {_human_time(t)} after programming", fontsize=9)
            ax.set_xlabel("conductance (µS); dotted: level targets")
            ax.set_ylabel(f"cells per {width_uS:.2g} µS bin (of {g.size:,} shown)")
            ax.set_ylim(0, ax.get_ylim()[1] * 1.5)  # headroom: the legend sits above the histograms
            ax.legend(fontsize=6, ncol=2, loc="upper right", title="target level", title_fontsize=6)
    ax_ser, ax_w = axes[0, -1], axes[1, -1]
    for name in names:
        reads = results["devices"][name]["reads"]
        ts = [r["time_s"] for r in reads]
        ax_ser.loglog(ts, [max(r["symbol_error_rate"], 1e-7) for r in reads], "o-", label=name)
        ax_w.semilogx(ts, [r["weight_relative_rms_error"] for r in reads], "o-", label=name)
    ax_ser.set(title=f"{results['levels']}-level cells: symbol error rate", ylabel="symbol error rate (floor 1e-7)")
    ax_w.set(title="Laplacian weights: relative RMS error", ylabel="RMS error / std(weights)")
    ticks = sorted({r["time_s"] for dev in results["devices"].values() for r in dev["reads"]})
    for ax in (ax_ser, ax_w):
        ax.set_xticks(ticks, [_human_time(t) for t in ticks], fontsize=7, rotation=30)
        ax.xaxis.set_minor_locator(matplotlib.ticker.NullLocator())
        ax.set_xlabel("time after programming")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.tight_layout()
    save_figure(fig, path, dpi=90)


def _table(results: dict[str, Any]) -> str:
    lines = [f"{'device':<20} {'time after programming':>24} {'symbol error rate':>18} {'weight rel. RMS err':>20}"]
    for name, dev in results["devices"].items():
        for r in dev["reads"]:
            lines.append(f"{name:<20} {_human_time(r['time_s']):>24} {r['symbol_error_rate']:>18.4f} "
                         f"{r['weight_relative_rms_error']:>20.4f}")
    return "\n".join(lines)


def _human_time(t: float) -> str:
    for unit, s in (("year", YEAR), ("day", DAY), ("h", 3600.0), ("min", 60.0)):
        if t >= s:
            v = t / s
            return f"{v:g} {unit}" + ("s" if unit in ("year", "day") and v != 1 else "")
    return f"{t:g} s"


def _main(args: argparse.Namespace) -> int:
    results = run_demo(tuple(args.device or DEFAULT_DEVICES), n_cells=args.cells, levels=args.levels,
                       seed=args.seed, n_threads=args.threads, progress=not args.quiet)
    print(_table(results))
    out = Path(args.out)
    plot = Path(args.plot) if args.plot else out / "demo.png"
    json_path = Path(args.json) if args.json else out / "demo.json"
    plot_demo(results, plot)
    for dev in results["devices"].values():
        dev.pop("_histograms")
    write_json(json_path, results, seed=args.seed, settings=vars(args))
    print(f"wrote {plot} and {json_path}")
    return 0


def add_subparser(subparsers: argparse._SubParsersAction) -> None:
    """Add ``analogmem cells`` (this physics demo) to the command line."""
    p = subparsers.add_parser("cells", help="emulate multi-level cells and a weight tensor on PCM and RRAM over time",
                              description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    conductance_cards = [n for n in bundled_devices() if load_device(n).input == "conductance"]
    p.add_argument("--device", action="append", choices=conductance_cards,
                   help="device card with conductance targets (repeatable)")
    p.add_argument("--cells", type=int, default=1_000_000, help="cells per device (default 1,000,000)")
    p.add_argument("--levels", type=int, default=8, help="levels of the multi-level cells (default 8)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--threads", type=int, default=None, help=f"kernel threads (default {default_threads()})")
    p.add_argument("--out", default="results/cells", help="folder for demo.json and demo.png")
    p.add_argument("--json", default=None, help="write the results as JSON here")
    p.add_argument("--plot", default=None, help="write the figure (PNG) here")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=_main)
