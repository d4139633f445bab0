"""End-to-end throughput of the emulator core against the numpy reference and a torch
formulation of the same model, with the machine's memory bandwidth measured in the same run.

For each card (default: pcm-nandakumar2019 and rram-wan2022, 11.2 M cells = ResNet-18),
one *run* is: construct an ``EmulatedBench``, ``program`` every cell, ``read`` at 1 day.
Timed, all in one process and interleaved run by run (so a busy machine slows all alike):

  * ``analogmem``    the compiled kernels, float32 and float64 state, all cores;
  * ``torch``        the same formulas as plain torch tensor ops, the way aihwkit's
                     ``PCMLikeNoiseModel`` / ``ReRamWan2022NoiseModel`` write them: float32
                     tensors, a ``torch.Generator`` made per call, ``torch.set_num_threads``
                     = the cores used here;
  * ``numpy``        the numpy reference (``backend="numpy"``, same model and random stream);
  * ``copy``         ``np.copyto`` of a large array: the memory-bandwidth ceiling, counted as
                     bytes read + bytes written per second.

A bench's freed state arrays are reused by the next bench of the same size (the state pool,
``analogmem.emulator.chipstate.STATE_POOL``), as in any loop that makes benches;
``--no-state-pool`` puts every bench on fresh memory instead (the kernel then zeroes every
page of state on first touch). The read output is always fresh memory.

Reported: the median (and min, max) wall time of each phase over ``--repeat`` runs, their
CPU time (the sum over threads: robust on a shared machine), end-to-end cells/s, ratios
(analogmem float32 vs torch, vs the reference), construction as a fraction of program time,
and for the program and read kernels alone (a warm bench: state and output already in
memory) the bytes they move per cell and the fraction of the copy bandwidth they reach.

    python benchmarks/bench_kernels.py [--cells 11200000] [--devices pcm-nandakumar2019 rram-wan2022]
                                       [--repeat 5] [--ref-repeat 1] [--threads N] [--json PATH]
"""

from __future__ import annotations

import argparse
import math
import statistics
import time
from typing import Any, Callable

import numpy as np
from tqdm import tqdm

import analogmem
from analogmem._io import write_json
from analogmem.emulator import _kernels
from analogmem.emulator.bench import default_threads
from analogmem.emulator.cells import X_FLOOR, DeviceModel
from analogmem.emulator.chipstate import STATE_KEYS, STATE_POOL, bytes_per_cell, state_keys

DAY = 86400.0


# ---------------------------------------------------------------- the torch formulation
def torch_model(device: DeviceModel) -> tuple[Callable, Callable]:
    """``program(targets_S, seed) -> state`` and ``read(state, t_s, seed) -> ndarray`` for
    a polynomial card (PCM drift + 1/f read noise, or RRAM relaxation), written as plain
    float32 torch ops with a generator per call, as aihwkit writes its noise models."""
    import torch

    r, pr, dr, rn, rl = device.range, device.programming, device.drift, device.read_noise, device.relaxation
    g_max, scale = r.g_max_S, 1e-6 * r.g_max_S / pr.g_ref_S
    prog_c = [float(c) for c in pr.coefficients_uS]

    def poly(coefs, x):
        acc = torch.zeros_like(x)
        for c in reversed(coefs):
            acc = acc * x + c
        return acc

    def program(targets: np.ndarray, seed: int) -> dict[str, Any]:
        gen = torch.Generator().manual_seed(seed)
        gt = torch.from_numpy(targets).to(torch.float32)
        x = gt / g_max
        g_prog = (gt + scale * poly(prog_c, x) * torch.randn(gt.shape, generator=gen)).clamp(min=r.clip_min_S)
        state: dict[str, Any] = {"g_prog": g_prog}
        if dr.enabled or rn.enabled:
            lx = torch.log(x.clamp(min=X_FLOOR))
        if dr.enabled:
            mu = (dr.mu.slope * lx + dr.mu.intercept).clamp(dr.mu.min, dr.mu.max)
            sd = (dr.sigma.slope * lx + dr.sigma.intercept).clamp(dr.sigma.min, dr.sigma.max)
            state["nu"] = (mu + sd * torch.randn(gt.shape, generator=gen)).abs()
        if rn.enabled:
            state["q"] = (rn.q_coefficient * torch.exp(-rn.q_exponent * lx)).clamp(max=rn.q_max)
        if rl.enabled:
            state["x"] = x
            state["z"] = torch.randn(gt.shape, generator=gen)
        return state

    def read(state: dict[str, Any], t_s: float, seed: int) -> np.ndarray:
        gen = torch.Generator().manual_seed(seed)
        g = state["g_prog"]
        if dr.enabled:
            g = g * ((t_s + dr.t0_s) / dr.t0_s) ** (-state["nu"])
        if rl.enabled:
            lt = math.log(max(t_s, 1e-300))
            ln = [math.log(t) for t in rl.times_s]
            a = 0
            while a < len(ln) - 2 and lt >= ln[a + 1]:
                a += 1
            w = min(max((lt - ln[a]) / (ln[a + 1] - ln[a]), 0.0), 1.0) if len(ln) > 1 else 0.0
            x = state["x"]
            sa = poly([float(c) for c in rl.coefficients_uS[a]], x)
            if len(ln) > 1:
                sa = sa + w * (poly([float(c) for c in rl.coefficients_uS[a + 1]], x) - sa)
            st = 1e-6 * g_max / rl.g_ref_S * sa
            sp = scale * poly(prog_c, x)
            g = g + torch.sqrt((st * st - sp * sp).clamp(min=0.0)) * state["z"]
        if rn.enabled:
            t0 = dr.t0_s if dr.enabled else 0.0
            f = math.sqrt(math.log((t_s + t0 + rn.t_read_s) / (2 * rn.t_read_s)))
            g = g + g.abs() * state["q"] * f * torch.randn(g.shape, generator=gen)
        return g.clamp(min=r.clip_min_S).numpy()

    return program, read


# ---------------------------------------------------------------- timing helpers
class Clock:
    """Wall and CPU (all threads of this process) time of a block."""

    def __enter__(self) -> "Clock":
        self.w, self.c = time.perf_counter(), time.process_time()
        return self

    def __exit__(self, *exc: Any) -> None:
        self.wall, self.cpu = time.perf_counter() - self.w, time.process_time() - self.c


def summary(values: list[float]) -> dict[str, float]:
    return {"median": statistics.median(values), "min": min(values), "max": max(values), "runs": len(values)}


def copy_bandwidth(nbytes: int, repeat: int) -> float:
    """Bytes read + written per second by ``np.copyto`` of a ``nbytes`` float64 array (warm)."""
    src = np.ones(nbytes // 8)
    dst = np.empty_like(src)
    np.copyto(dst, src)
    best = math.inf
    for _ in range(repeat):
        with Clock() as c:
            np.copyto(dst, src)
        best = min(best, c.wall)
    return 2 * src.nbytes / best


def run_emulator(dev: DeviceModel, targets: np.ndarray, dtype: str, backend: str, threads: int, seed: int) -> dict:
    n = targets.shape[0]
    with Clock() as c0:
        bench = analogmem.EmulatedBench(dev, n, seed=seed, dtype=dtype, backend=backend, n_threads=threads)
    with Clock() as c1:
        bench.program(targets)
    with Clock() as c2:
        out = bench.read(DAY)
    assert out.shape == (n,)
    return {"construct_s": c0.wall, "program_s": c1.wall, "read_s": c2.wall,
            "total_s": c0.wall + c1.wall + c2.wall, "cpu_s": c0.cpu + c1.cpu + c2.cpu}


def run_torch(model: tuple[Callable, Callable], targets: np.ndarray, seed: int) -> dict:
    program, read = model
    with Clock() as c1:
        state = program(targets, seed)
    with Clock() as c2:
        out = read(state, DAY, seed + 1)
    assert out.shape == targets.shape
    return {"construct_s": 0.0, "program_s": c1.wall, "read_s": c2.wall, "total_s": c1.wall + c2.wall,
            "cpu_s": c1.cpu + c2.cpu}


def kernel_only(dev: DeviceModel, targets: np.ndarray, dtype: str, threads: int, repeat: int) -> dict:
    """The program and read kernels on a warm bench (state and output already allocated):
    best wall time, bytes moved per cell, and the implied memory traffic (B/s)."""
    n = targets.shape[0]
    bench = analogmem.EmulatedBench(dev, n, seed=1, dtype=dtype, n_threads=threads)
    bench.program(targets)
    params = bench._params
    state = tuple(bench._cells.arrays.get(k) for k in STATE_KEYS)
    out = np.empty(n, dtype=dtype)
    age = np.array([DAY])
    t_prog, t_read = math.inf, math.inf
    for _ in range(repeat):
        with Clock() as c:
            _kernels.program(params, (1, 2, 3), targets, None, state, threads)
        t_prog = min(t_prog, c.wall)
        with Clock() as c:
            _kernels.read(params, (4, 5, 6), state, age, out, threads)
        t_read = min(t_read, c.wall)
    state_b = bytes_per_cell(dev, dtype)
    prog_b, read_b = 8 + state_b, state_b + np.dtype(dtype).itemsize  # target read + state written; state read + out
    return {"program_s": t_prog, "read_s": t_read, "program_bytes_per_cell": prog_b, "read_bytes_per_cell": read_b,
            "program_bytes_per_s": prog_b * n / t_prog, "read_bytes_per_s": read_b * n / t_read}


def main(argv: list[str] | None = None) -> dict:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--cells", type=int, default=11_200_000, help="cells (default: ResNet-18, 11.2 M)")
    ap.add_argument("--devices", nargs="+", default=["pcm-nandakumar2019", "rram-wan2022"])
    ap.add_argument("--repeat", type=int, default=5, help="end-to-end runs per contender (median reported)")
    ap.add_argument("--ref-repeat", type=int, default=1, help="runs of the (slow) numpy reference")
    ap.add_argument("--threads", type=int, default=None, help="kernel and torch threads (default: all cores)")
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--no-state-pool", action="store_true",
                    help="every bench on fresh memory (disable the pool of freed state arrays)")
    ap.add_argument("--json", default=None, help="write the results here")
    args = ap.parse_args(argv)

    import torch

    n = args.cells
    threads = args.threads or default_threads()
    if args.no_state_pool:
        STATE_POOL.limit_bytes = 0
    torch.set_num_threads(threads)
    bandwidth = copy_bandwidth(min(8 * n, 1 << 30), 5)
    print(f"{n:,} cells, {threads} threads; memory bandwidth (np.copyto, read + write): {bandwidth / 1e9:.1f} GB/s")
    results: dict[str, Any] = {"cells": n, "threads": threads, "read_time_s": DAY,
                               "state_pool_bytes": STATE_POOL.limit_bytes,
                               "copy_bandwidth_bytes_per_s": bandwidth, "devices": {}}
    for name in args.devices:
        dev = analogmem.load_device(name)
        targets = np.random.default_rng(args.seed).uniform(dev.g_min_S, dev.g_max_S, n)
        model = torch_model(dev)
        contenders: dict[str, Callable[[int], dict]] = {
            "analogmem_float32": lambda s: run_emulator(dev, targets, "float32", "cython", threads, s),
            "analogmem_float64": lambda s: run_emulator(dev, targets, "float64", "cython", threads, s),
            "torch_float32": lambda s: run_torch(model, targets, s),
        }
        for fn in contenders.values():  # warm-up: imports, first-touch of the allocator, thread pools
            fn(args.seed)
        runs: dict[str, list[dict]] = {k: [] for k in contenders}
        for r in tqdm(range(args.repeat), desc=name, disable=None):
            for key, fn in contenders.items():
                runs[key].append(fn(args.seed + 1 + r))
        runs["numpy_reference"] = [run_emulator(dev, targets, "float64", "numpy", 1, args.seed)
                                   for _ in tqdm(range(args.ref_repeat), desc=f"{name} numpy reference", disable=None)]
        stats = {k: {phase: summary([run[phase] for run in v]) for phase in v[0]} for k, v in runs.items()}
        for k in stats:
            stats[k]["cells_per_s"] = n / stats[k]["total_s"]["median"]
        kernels = {dt: kernel_only(dev, targets, dt, threads, max(3, args.repeat)) for dt in ("float32", "float64")}
        for dt, kr in kernels.items():
            kr["program_fraction_of_bandwidth"] = kr["program_bytes_per_s"] / bandwidth
            kr["read_fraction_of_bandwidth"] = kr["read_bytes_per_s"] / bandwidth
        f32 = stats["analogmem_float32"]
        med = lambda k, p="total_s": stats[k][p]["median"]  # noqa: E731
        ratios = {
            "float32_vs_torch_wall": med("torch_float32") / med("analogmem_float32"),
            "float32_vs_torch_cpu": med("torch_float32", "cpu_s") / med("analogmem_float32", "cpu_s"),
            "float64_vs_torch_wall": med("torch_float32") / med("analogmem_float64"),
            "float32_vs_numpy_reference_wall": med("numpy_reference") / med("analogmem_float32"),
            "float64_vs_numpy_reference_wall": med("numpy_reference") / med("analogmem_float64"),
            "construct_over_program_float32": f32["construct_s"]["median"] / f32["program_s"]["median"],
            "construct_over_program_float64": (stats["analogmem_float64"]["construct_s"]["median"]
                                               / stats["analogmem_float64"]["program_s"]["median"]),
        }
        results["devices"][name] = {
            "state_keys": list(state_keys(dev)),
            "bytes_per_cell": {dt: bytes_per_cell(dev, dt) for dt in ("float32", "float64")},
            "end_to_end": stats, "runs": runs, "kernels_warm": kernels, "ratios": ratios}
        print(f"\n{name}: state {', '.join(state_keys(dev))} = {bytes_per_cell(dev, 'float32')} B/cell float32, "
              f"{bytes_per_cell(dev, 'float64')} B/cell float64")
        print(f"  {'end to end (median of runs)':<28} {'construct':>10} {'program':>9} {'read':>8} {'total':>8} "
              f"{'CPU':>8} {'M cells/s':>10}")
        for k, s in stats.items():
            print(f"  {k:<28} {s['construct_s']['median']:10.4f} {s['program_s']['median']:9.3f} "
                  f"{s['read_s']['median']:8.3f} {s['total_s']['median']:8.3f} {s['cpu_s']['median']:8.3f} "
                  f"{s['cells_per_s'] / 1e6:10.1f}")
        print(f"  analogmem float32 vs torch: {ratios['float32_vs_torch_wall']:.1f}x wall "
              f"({ratios['float32_vs_torch_cpu']:.1f}x CPU); float64 vs torch: {ratios['float64_vs_torch_wall']:.1f}x; "
              f"vs numpy reference: {ratios['float32_vs_numpy_reference_wall']:.0f}x (float32), "
              f"{ratios['float64_vs_numpy_reference_wall']:.0f}x (float64)")
        print(f"  construction / program: {ratios['construct_over_program_float32']:.2%} (float32), "
              f"{ratios['construct_over_program_float64']:.2%} (float64)")
        for dt, kr in kernels.items():
            print(f"  warm kernels {dt}: program {n / kr['program_s'] / 1e6:.0f} M cells/s "
                  f"({kr['program_bytes_per_cell']} B/cell, {kr['program_fraction_of_bandwidth']:.0%} of copy bandwidth), "
                  f"read {n / kr['read_s'] / 1e6:.0f} M cells/s ({kr['read_bytes_per_cell']} B/cell, "
                  f"{kr['read_fraction_of_bandwidth']:.0%})")
    results["kernels"] = analogmem.kernels_info()
    if args.json:
        write_json(args.json, results, seed=args.seed, settings=vars(args))
    return results


if __name__ == "__main__":
    main()
