"""Write-verify through the instrument paths against the emulator's own WriteVerify.

    .venv/bin/python benchmarks/bench_instrument_tsp.py [--cells 1024] [--device pcm-nandakumar2019]
        [--tolerance-rel 0.05] [--max-pulses 20] [--json PATH] [--plot PNG]

Per policy (``verify_gain`` 0 — the emulator's own policy, re-pulse at the same amplitude —
and the default 0.5, a damped amplitude search) and per path:

* ``tsp``: :class:`TspBench` (keithley2600 driver over pyvisa-py TCP) against the 2636B TSP
  emulator, write-verify run on the instrument, one round trip per batch of 256 cells;
* ``2450``: :class:`InstrumentBench` (pymeasure over pyvisa-py TCP) against the 2450 SCPI
  emulator, the same policy run on the host, one round trip per pulse and per route;
* ``emulator``: :meth:`EmulatedBench.program` with the same ``WriteVerify`` (no instrument).

It reports cells/s (wall), round trips per cell, success rate and mean SET pulses with
their standard errors, and the difference to the emulator's in standard errors of the
difference (independent cells: ``se = sqrt(se1² + se2²)``), plus the emulated instrument
time per cell (pulse widths, delays) where the server keeps it. The targets are uniform
over 10–90 % of the card's range, the same for every path. Not a test: timings depend on
the machine (2 shared cores here); the statistics do not.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
import warnings
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from analogmem import EmulatedBench, WriteVerify  # noqa: E402
from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    ScpiEmulatorServer,
    TspBench,
    TspEmulatorServer,
    VoltageScheme,
)


def _stats(pulses: np.ndarray, success: np.ndarray) -> dict[str, float]:
    p, s = pulses.astype(float), success.astype(float)
    n = p.size
    return {"pulses_mean": float(p.mean()), "pulses_se": float(p.std(ddof=1) / np.sqrt(n)),
            "success": float(s.mean()), "success_se": float(np.sqrt(max(s.mean() * (1 - s.mean()), 1.0 / n) / n))}


def _z(a: dict[str, float], b: dict[str, float], key: str) -> float:
    se = np.hypot(a[f"{key}_se"], b[f"{key}_se"])
    return float((a[f"{key}_mean" if key == "pulses" else key] - b[f"{key}_mean" if key == "pulses" else key]) / se)


def run(args: argparse.Namespace) -> dict:
    n = args.cells
    cols = 32
    rows = -(-n // cols)
    verify = WriteVerify(max_pulses=args.max_pulses, tolerance_rel=args.tolerance_rel)
    out: dict = {"cells": n, "device": args.device, "verify": {"max_pulses": args.max_pulses,
                                                             "tolerance_rel": args.tolerance_rel}, "runs": []}
    for gain in (0.0, 0.5):
        scheme = VoltageScheme(verify_gain=gain)
        base = BenchConfig(rows=rows, cols=cols, scheme=scheme)
        rng = np.random.default_rng(args.seed)
        s = scheme.for_range(*EmulatedBench(args.device, 1).device.input_range)
        g = s.g_min_S + (s.g_max_S - s.g_min_S) * rng.uniform(0.1, 0.9, n)
        addr = np.arange(n)
        results = {}
        with TspEmulatorServer(args.device, rows=rows, cols=cols, seed=args.seed + 1, scheme=s) as srv:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                with TspBench(srv.resource, device=args.device, config=BenchConfig(
                        rows=rows, cols=cols, scheme=scheme, model="2636B")) as b:
                    c0, rt0 = srv.stats()["clock_s"], b.round_trips
                    t0 = time.perf_counter()
                    rep = b.program(g, addresses=addr, verify=verify)
                    wall = time.perf_counter() - t0
                    rts = b.round_trips - rt0
                    emu_s = srv.stats()["clock_s"] - c0 - wall
            results["tsp"] = {"cells_per_s": n / wall, "wall_s": wall, "round_trips_per_cell": rts / n,
                              "instrument_s_per_cell": emu_s / n, **_stats(rep.pulses, rep.success)}
        with ScpiEmulatorServer(args.device, rows=rows, cols=cols, seed=args.seed + 1, scheme=s) as srv:
            with InstrumentBench(srv.resource, device=args.device, config=base) as b:
                m0 = srv.stats()["messages"]
                t0 = time.perf_counter()
                rep = b.program(g, addresses=addr, verify=verify)
                wall = time.perf_counter() - t0
                rts = srv.stats()["messages"] - m0
            results["2450"] = {"cells_per_s": n / wall, "wall_s": wall, "round_trips_per_cell": rts / n,
                               **_stats(rep.pulses, rep.success)}
        eb = EmulatedBench(args.device, n, seed=args.seed + 2)
        t0 = time.perf_counter()
        rep = eb.program(g, verify=verify)
        wall = time.perf_counter() - t0
        results["emulator"] = {"cells_per_s": n / wall, "wall_s": wall, **_stats(rep.pulses, rep.success)}
        for path in ("tsp", "2450"):
            results[path]["z_pulses_vs_emulator"] = _z(results[path], results["emulator"], "pulses")
            results[path]["z_success_vs_emulator"] = _z(results[path], results["emulator"], "success")
        out["runs"].append({"verify_gain": gain, "paths": results})
    return out


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--cells", type=int, default=1024)
    ap.add_argument("--device", default="pcm-nandakumar2019")
    ap.add_argument("--tolerance-rel", type=float, default=0.05)
    ap.add_argument("--max-pulses", type=int, default=20)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--json", default=None)
    ap.add_argument("--plot", default=None)
    args = ap.parse_args()
    res = run(args)
    print(f"{res['cells']} cells of {res['device']}, windows ±{100 * args.tolerance_rel:g} %, "
          f"≤ {args.max_pulses} SET pulses")
    print(f"{'gain':>5} {'path':>9} {'cells/s':>9} {'trips/cell':>10} {'success':>15} {'pulses':>15} "
          f"{'z pulses':>8} {'z succ':>7}")
    for r in res["runs"]:
        for path, v in r["paths"].items():
            print(f"{r['verify_gain']:>5g} {path:>9} {v['cells_per_s']:>9.0f} "
                  f"{v.get('round_trips_per_cell', float('nan')):>10.4f} "
                  f"{v['success']:>8.4f}±{v['success_se']:.4f} {v['pulses_mean']:>8.3f}±{v['pulses_se']:.3f} "
                  f"{v.get('z_pulses_vs_emulator', float('nan')):>8.2f} {v.get('z_success_vs_emulator', float('nan')):>7.2f}")
    if args.json:
        from analogmem._io import write_json

        write_json(args.json, res)
    if args.plot:
        import matplotlib

        matplotlib.use("Agg")
        import matplotlib.pyplot as plt

        from analogmem._io import save_figure

        fig, axes = plt.subplots(1, 2, figsize=(10, 3.8))
        for k, r in enumerate(res["runs"]):
            names = list(r["paths"])
            x = np.arange(len(names)) + 0.35 * k
            axes[0].bar(x, [r["paths"][p]["pulses_mean"] for p in names], 0.35,
                        yerr=[2 * r["paths"][p]["pulses_se"] for p in names], label=f"verify_gain {r['verify_gain']:g}")
            axes[1].bar(x, [r["paths"][p]["cells_per_s"] for p in names], 0.35, label=f"verify_gain {r['verify_gain']:g}")
            for ax in axes:
                ax.set_xticks(np.arange(len(names)) + 0.175, names)
        axes[0].set_ylabel("mean SET pulses per cell (±2 se)")
        axes[1].set_ylabel("cells/s (wall, loopback emulator)")
        axes[1].set_yscale("log")
        axes[0].legend()
        fig.suptitle(f"write-verify of {res['cells']} cells: on-instrument TSP vs host SCPI vs emulator")
        fig.tight_layout()
        save_figure(fig, args.plot, dpi=110)
    return 0


if __name__ == "__main__":
    sys.exit(main())
