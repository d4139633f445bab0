"""``analogmem bench program|read|characterise|plan|serve``: the bench from the command line.

``serve`` starts the SCPI emulator server on loopback and prints its VISA resource; the
other three open an :class:`InstrumentBench` on ``--resource`` (the emulator's
``TCPIP0::127.0.0.1::<port>::SOCKET`` or a real instrument's address — nothing else
changes; a bench file with ``[instrument] model = "2636B"`` or ``--model 2636B`` opens a
2600B over TSP), write their results as tidy CSV, and optionally a ``--json`` summary and a
``--plot`` PNG. ``plan`` writes a programming plan for any tester (no instrument needed). Wire it in with ``add_subparser(subparsers)``.
"""

from __future__ import annotations

import argparse
import dataclasses
import math
import sys
import time
from typing import Any

import numpy as np

from .._io import help_text

__all__ = ["add_subparser", "main"]


def _parse_cells(text: str | None, n_cells: int) -> np.ndarray | None:
    """``"0-255,300,400-409"`` → addresses (inclusive ranges); None → None.

    Every part is checked (an integer, ``start <= stop``, inside ``[0, n_cells)``) before
    any address list is built, so ``0-10000000`` on a 1,024-cell bench is refused at once
    with :class:`AddressError` naming the part."""
    from ..errors import AddressError

    if text is None:
        return None
    spans: list[tuple[int, int]] = []
    for part in text.split(","):
        part = part.strip()
        if not part:
            continue
        a_s, sep, b_s = part.partition("-")
        try:
            a = int(a_s)
            b = int(b_s) if sep else a
        except ValueError:
            raise AddressError(f"--cells: {part!r} is not an address or an inclusive range 'start-stop'") from None
        if a > b:
            raise AddressError(f"--cells: range {part!r} runs backwards (start {a} > stop {b})")
        if a < 0 or b >= n_cells:
            raise AddressError(f"--cells: {part!r} is outside the bench's cells [0, {n_cells - 1}]")
        spans.append((a, b))
    if not spans:
        raise AddressError(f"--cells: {text!r} names no cell")
    return np.concatenate([np.arange(a, b + 1, dtype=np.intp) for a, b in spans])


def _check_args(args: argparse.Namespace) -> None:
    """Refuse nonsense options before anything opens (:class:`SettingError` naming the
    option): rows/columns < 1, a port outside [0, 65535], non-finite or non-positive
    seconds."""
    from ..errors import SettingError

    for name in ("rows", "cols"):
        v = getattr(args, name, None)
        if v is not None and v < 1:
            raise SettingError(f"--{name} must be an integer >= 1, got {v}")
    port = getattr(args, "port", None)
    if port is not None and not 0 <= port <= 65535:
        raise SettingError(f"--port must be an integer in [0, 65535], got {port}")
    for name in ("timeout_s", "max_seconds"):
        v = getattr(args, name, None)
        if v is not None and not (math.isfinite(v) and v > 0):
            raise SettingError(f"--{name.replace('_', '-')} must be a finite number of seconds > 0, got {v!r}")
    if getattr(args, "retries", 0) < 0:
        raise SettingError(f"--retries must be >= 0, got {args.retries}")


def _times(text: str) -> tuple[float, ...]:
    try:
        return tuple(float(t) for t in text.split(",") if t.strip())
    except ValueError:
        raise argparse.ArgumentTypeError(f"--times must be comma-separated seconds, got {text!r}") from None


from .limits import INSTRUMENT_MODELS  # noqa: E402 - PyVISA-free

#: 2600B-family models the TSP emulator answers as (``bench serve --model``).
TSP_MODELS = tuple(m for m in INSTRUMENT_MODELS if m != "2450")


def _add_bench_options(p: argparse.ArgumentParser) -> None:
    p.add_argument("--resource", required=True,
                   help="VISA resource of the source-measure unit, e.g. TCPIP0::127.0.0.1::5025::SOCKET "
                        "(the emulator server) or USB0::0x05E6::0x2450::04412345::INSTR (a Keithley 2450)")
    p.add_argument("--model", default=None, type=lambda t: t.strip().upper(), choices=list(INSTRUMENT_MODELS),
                   help="instrument model, overriding the bench file's [instrument] model: 2450 (SCPI) or a 2600B "
                        "(2636B, ...: TSP, write-verify on the instrument)")
    p.add_argument("--switch-resource", default=None,
                   help="VISA resource of the switch matrix (default: the matrix answers on --resource)")
    p.add_argument("--device", default=None, help="device card (name or path) giving the target range")
    p.add_argument("--bench-config", default=None, help="TOML bench file: [matrix], [limits], [scheme]")
    p.add_argument("--rows", type=int, default=None, help="matrix rows (overrides the bench config)")
    p.add_argument("--cols", type=int, default=None, help="matrix columns (overrides the bench config)")
    p.add_argument("--visa-library", default=None, help="PyVISA backend: @py or @ivi (default: PyVISA's); for a simulated "
                   "bench run 'analogmem bench serve' and pass the resource it prints")
    p.add_argument("--timeout-s", type=float, default=2.0, help="VISA timeout per reply (s)")
    p.add_argument("--retries", type=int, default=2, help="extra attempts for operations safe to repeat")
    p.add_argument("--no-progress", action="store_true", help="no progress bars")
    p.add_argument("--json", default=None, help="write a JSON summary here")
    p.add_argument("--plot", default=None, help="write a PNG plot here")


def _add_verify_options(p: argparse.ArgumentParser, default_on: bool) -> None:
    g = p.add_mutually_exclusive_group()
    g.add_argument("--verify", dest="verify", action="store_true", default=default_on,
                   help="program-and-verify" + (" (default)" if default_on else ""))
    g.add_argument("--no-verify", dest="verify", action="store_false",
                   help="single-shot programming" + ("" if default_on else " (default)"))
    p.add_argument("--max-pulses", type=int, default=20, help="write-verify: SET pulses per cell at most")
    p.add_argument("--tolerance-rel", type=float, default=0.05, help="write-verify: window half-width / target")
    p.add_argument("--tolerance-S", type=float, default=0.0, help="write-verify: absolute window half-width (S)")


def _open_bench(args: argparse.Namespace) -> Any:
    """An :class:`InstrumentBench` (2450) or, when the bench file says ``[instrument]
    model = "2636B"`` (any 2600B) or ``--model`` does, a :class:`TspBench`."""
    from .instrument_bench import InstrumentBench
    from .limits import load_bench_config

    cfg = load_bench_config(args.bench_config)
    if args.rows is not None or args.cols is not None:
        cfg = dataclasses.replace(cfg, rows=args.rows or cfg.rows, cols=args.cols or cfg.cols)
    if getattr(args, "model", None):
        cfg = dataclasses.replace(cfg, model=args.model)
    if cfg.is_tsp:
        from .tsp_bench import TspBench

        return TspBench(args.resource, device=args.device, config=cfg, visa_library=args.visa_library or "@py",
                        timeout_s=args.timeout_s, progress=not args.no_progress)
    return InstrumentBench(args.resource, device=args.device, config=cfg,
                           switch_resource=args.switch_resource, visa_library=args.visa_library,
                           timeout_s=args.timeout_s, retries=args.retries, progress=not args.no_progress)


def _verify(args: argparse.Namespace) -> Any:
    from ..emulator.bench import WriteVerify

    if not args.verify:
        return None
    return WriteVerify(max_pulses=args.max_pulses, tolerance_S=args.tolerance_S, tolerance_rel=args.tolerance_rel)


def _write_json(path: str | None, data: dict[str, Any]) -> None:
    if path:
        from .._io import write_json

        write_json(path, data)


def _csv_text(header: tuple[str, ...], rows: list[tuple[Any, ...]]) -> str:
    import csv
    import io

    buf = io.StringIO()
    w = csv.writer(buf, lineterminator="\n")
    w.writerow(header)
    w.writerows(rows)
    return buf.getvalue()


def _bench_info(bench: Any) -> dict[str, Any]:
    return {"resource": getattr(bench._smu, "resource", None) if hasattr(bench, "_smu") else
            getattr(bench, "resource", None),
            "identity": getattr(bench, "identity", {}), "clock": getattr(bench, "clock", None),
            "config": bench.config.to_dict()}


# --------------------------------------------------------------------------- serve
def _serve(args: argparse.Namespace) -> int:
    from .limits import load_bench_config
    from .scpi_server import ScpiEmulatorServer
    from ..emulator.cells import load_device

    dev = load_device(args.device)
    cfg = load_bench_config(args.bench_config)
    rows = args.rows if args.rows is not None else cfg.rows
    cols = args.cols if args.cols is not None else cfg.cols
    kw = dict(rows=rows, cols=cols, seed=args.seed, scheme=cfg.scheme.for_range(dev.g_min_S, dev.g_max_S),
              host=args.host, port=args.port, max_lifetime_s=args.max_seconds,
              reset_on_connect=args.reset_on_connect, limits=cfg.limits if args.enforce_limits else None)
    if args.model.upper() == "2450":
        srv = ScpiEmulatorServer(dev, **kw)
    else:
        from .tsp_server import TspEmulatorServer

        srv = TspEmulatorServer(dev, model=args.model, **kw)
    try:
        srv.start()
    except OSError as exc:
        from ..errors import SettingError

        raise SettingError(f"cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    try:
        if args.port_file:
            from .._io import atomic_write_text

            atomic_write_text(args.port_file, f"{srv.port}\n")
        print(f"analogmem {srv.language} emulator ({srv.model_name}) of {dev.name} ({rows}x{cols} cells"
              f"{', limits enforced' if args.enforce_limits else ''}) on {srv.resource}", flush=True)
        print("stop with Ctrl-C" + (f" (stops by itself after {args.max_seconds:g} s)" if args.max_seconds else ""),
              flush=True)
        while srv.running:
            srv.wait(0.5)
    except KeyboardInterrupt:
        pass
    finally:
        srv.stop()
        print(f"served: {srv.stats()}", flush=True)
    return 0


def _device_label(bench: Any) -> str:
    """The ``device`` column: the card given with --device, else the card the analogmem
    emulator serves (its *IDN? serial field), else empty — never the instrument's model."""
    if bench.device is not None:
        return bench.device.name
    return bench.identity.get("serial", "") if getattr(bench, "is_emulator", False) else ""


# --------------------------------------------------------------------------- program
def _program(args: argparse.Namespace) -> int:
    from .characterise import TIDY_COLUMNS, bench_range, plot_table

    rng = np.random.default_rng(args.seed)
    with _open_bench(args) as bench:
        addr = _parse_cells(args.cells, bench.n_cells)
        if args.targets_csv:
            import csv

            with open(args.targets_csv, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or not {"cell", "target_S"} <= set(rows[0]):
                raise SystemExit(f"{args.targets_csv}: needs columns 'cell' and 'target_S'")
            addr = np.array([int(r["cell"]) for r in rows], dtype=np.intp)
            targets = np.array([float(r["target_S"]) for r in rows])
        else:
            n = bench.n_cells if addr is None else addr.size
            g_min, g_max = bench_range(bench)
            levels = g_min + (g_max - g_min) * np.linspace(0.1, 0.9, args.levels)
            targets = levels[rng.integers(0, args.levels, n)]
            if addr is None:
                addr = np.arange(n, dtype=np.intp)
        verify = _verify(args)
        t0 = time.perf_counter()
        report = bench.program(targets, addresses=addr, verify=verify)
        t_prog = time.perf_counter() - t0
        reads = bench.read(addresses=addr)
        ages = bench.last_read_age_s
        label = _device_label(bench)
        cols = tuple(c for c in TIDY_COLUMNS if c != "temperature_K" and (c != "success" or verify is not None))
        rows_out = []
        for j in range(addr.size):
            row = {"target_S": repr(float(targets[j])), "read_value_S": repr(float(reads[j])), "device": label,
                   "time_s": repr(float(ages[j])), "pulses": int(report.pulses[j]), "cell": int(addr[j]),
                   "success": "" if report.success is None else str(bool(report.success[j]))}
            rows_out.append(tuple(row[c] for c in cols))
        from .._io import atomic_write_text

        atomic_write_text(args.out, _csv_text(cols, rows_out))
        rel = np.abs(reads - targets) / np.maximum(targets, 1e-30)
        summary = {"command": "program", **_bench_info(bench), "cells": int(addr.size), "program_wall_s": t_prog,
                   "verify": None if verify is None else dataclasses.asdict(verify),
                   "mean_pulses": float(report.pulses.mean()),
                   "success_rate": None if report.success is None else float(report.success.mean()),
                   "readback_median_rel_error": float(np.median(rel)), "out": args.out}
    _write_json(args.json, summary)
    if args.plot:
        plot_table(args.out, args.plot, title=f"program ({summary['cells']} cells)")
    print(f"programmed {summary['cells']} cells in {t_prog:.2f} s; mean pulses {summary['mean_pulses']:.2f}"
          + ("" if summary["success_rate"] is None else f", success {100 * summary['success_rate']:.1f} %")
          + f"; read-back median |error| {100 * summary['readback_median_rel_error']:.2f} %; table {args.out}")
    return 0


# --------------------------------------------------------------------------- read
def _read(args: argparse.Namespace) -> int:
    with _open_bench(args) as bench:
        addr = _parse_cells(args.cells, bench.n_cells)
        if addr is None:
            addr = np.arange(bench.n_cells, dtype=np.intp)
        t0 = time.perf_counter()
        g = bench.read(addresses=addr)
        wall = time.perf_counter() - t0
        ages = bench.last_read_age_s
        label = _device_label(bench)
        known = ~np.isnan(ages)
        # time_s only where this session knows when the cells were programmed (it programmed them)
        cols = ("cell", "read_value_S", "time_s", "device") if known.any() else ("cell", "read_value_S", "device")
        rows = [(int(addr[j]), repr(float(g[j])), *((repr(float(ages[j])) if known[j] else "",) if known.any() else ()),
                 label) for j in range(addr.size)]
        from .._io import atomic_write_text

        atomic_write_text(args.out, _csv_text(cols, rows))
        summary = {"command": "read", **_bench_info(bench), "cells": int(addr.size), "wall_s": wall,
                   "mean_S": float(g.mean()), "std_S": float(g.std()), "min_S": float(g.min()),
                   "max_S": float(g.max()), "out": args.out}
        cfg = bench.config
    _write_json(args.json, summary)
    if args.plot:
        _plot_map(addr, g, cfg.rows, cfg.cols, args.plot)
    print(f"read {addr.size} cells in {wall:.2f} s: mean {summary['mean_S'] * 1e6:.3f} µS, "
          f"range [{summary['min_S'] * 1e6:.3f}, {summary['max_S'] * 1e6:.3f}] µS; table {args.out}")
    return 0


def _plot_map(addr: np.ndarray, g: np.ndarray, rows: int, cols: int, png: str) -> None:

    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    from .._io import save_figure

    img = np.full(rows * cols, np.nan)
    img[addr] = g * 1e6
    fig = Figure(figsize=(10, 4))
    a1, a2 = fig.subplots(1, 2)
    im = a1.imshow(img.reshape(rows, cols), cmap="viridis", interpolation="nearest")
    fig.colorbar(im, ax=a1, label="conductance (µS)")
    a1.set_title("array map (row × column)")
    a2.hist(g * 1e6, bins=60)
    a2.set_xlabel("conductance (µS)")
    a2.set_ylabel("cells")
    fig.tight_layout()
    save_figure(fig, png, dpi=110)


# --------------------------------------------------------------------------- characterise
def _characterise(args: argparse.Namespace) -> int:
    from .characterise import characterise, plot_table

    summary: dict[str, Any] = {"command": "characterise", "out": args.out, "complete": False}
    try:
        with _open_bench(args) as bench:
            summary.update(_bench_info(bench))
            res = characterise(bench, args.out, n_levels=args.levels, cells_per_level=args.cells_per_level,
                               read_times_s=args.times, reads_per_time=args.reads_per_time, verify=_verify(args),
                               temperature_K=args.temperature_K, seed=args.seed, append=args.append,
                               progress=not args.no_progress)
            summary.update(res.summary)
    except BaseException as exc:
        summary["error"] = f"{type(exc).__name__}: {exc}"
        _write_json(args.json, summary)
        raise
    _write_json(args.json, summary)
    if args.plot:
        plot_table(args.out, args.plot, title=f"characterisation: {summary.get('device', '')}")
    print(f"characterised {summary['cells']} cells x {len(args.times)} read time(s): {summary['rows']} rows in "
          f"{summary['wall_s']:.1f} s; table {args.out}")
    return 0


# --------------------------------------------------------------------------- plan
def _plan(args: argparse.Namespace) -> int:
    from ..errors import SettingError
    from .limits import load_bench_config
    from .plan import make_plan, plan_for_tensors

    cfg = load_bench_config(args.bench_config)
    if args.rows is not None or args.cols is not None:
        cfg = dataclasses.replace(cfg, rows=args.rows or cfg.rows, cols=args.cols or cfg.cols)
    verify = _verify(args)
    sources = [x for x in (args.targets_csv, args.tensors) if x]
    if len(sources) > 1:
        raise SettingError("give --targets-csv or --tensors, not both")
    if args.tensors:
        import numpy as _np

        try:
            with _np.load(args.tensors, allow_pickle=False) as z:
                tensors = {k: z[k] for k in z.files}
        except (OSError, ValueError) as exc:
            raise SettingError(f"--tensors {args.tensors}: not a readable .npz of arrays: {exc}") from None
        plan = plan_for_tensors(tensors, args.device, cells_per_weight=args.cells_per_weight, encoder=args.encoder,
                                config=cfg, verify=verify)
    else:
        from ..emulator.cells import load_device

        dev = load_device(args.device)
        rng = np.random.default_rng(args.seed)
        if args.targets_csv:
            import csv

            with open(args.targets_csv, newline="") as fh:
                rows = list(csv.DictReader(fh))
            if not rows or not {"cell", "target_S"} <= set(rows[0]):
                raise SettingError(f"{args.targets_csv}: needs columns 'cell' and 'target_S'")
            try:
                addr = np.array([int(r["cell"]) for r in rows], dtype=np.intp)
                targets = np.array([float(r["target_S"]) for r in rows])
            except ValueError as exc:
                raise SettingError(f"{args.targets_csv}: {exc}") from None
        else:
            addr = _parse_cells(args.cells, cfg.n_cells)
            if addr is None:
                addr = np.arange(cfg.n_cells, dtype=np.intp)
            if args.levels < 1:
                raise SettingError(f"--levels must be >= 1, got {args.levels}")
            g_min, g_max = dev.g_min_S, dev.g_max_S
            levels = g_min + (g_max - g_min) * np.linspace(0.1, 0.9, args.levels)
            targets = levels[rng.integers(0, args.levels, addr.size)]
        plan = make_plan(targets, addr, config=cfg, device=dev, verify=verify)
    csv_path, json_path = plan.write(args.out, args.plan_json)
    summary = {"command": "plan", "cells": plan.n_cells, "out": str(csv_path), "plan_json": str(json_path),
               "distinct_targets": int(np.unique(plan.columns["target_S"]).size),
               "device": (plan.meta.get("device") or {}).get("name"), "verify": plan.meta.get("policy")}
    if args.json:
        from pathlib import Path

        if Path(args.json).resolve() in (csv_path.resolve(), json_path.resolve()):
            raise SettingError(f"--json {args.json} would overwrite the plan")
    _write_json(args.json, summary)
    print(f"plan of {plan.n_cells} cells ({summary['distinct_targets']} distinct targets) written to {csv_path} "
          f"and {json_path}; a tester fills read_value_S, pulses, success, time_s, and `analogmem calibrate "
          f"{csv_path.name}` reads it back")
    return 0


def _guarded(func: Any) -> Any:
    """Run a command; an analogmem error becomes one line on stderr with the exit status of
    :mod:`analogmem._cli_output` (1: the instrument failed; 2: a refused input)."""

    def run(args: argparse.Namespace) -> int:
        from .._cli_output import interrupted, refuse
        from ..errors import AnalogMemError

        command = f"analogmem bench {args.bench_command}"
        try:
            _check_args(args)
            return func(args)
        except (AnalogMemError, FileExistsError) as exc:
            return refuse(command, exc)
        except KeyboardInterrupt:
            return interrupted(command, "the instrument was left with its output off where the bench could "
                                        "still reach it")

    run.__name__ = func.__name__
    return run


# --------------------------------------------------------------------------- wiring
def add_subparser(subparsers: Any) -> argparse.ArgumentParser:
    """Add ``bench`` with ``program``, ``read``, ``characterise`` and ``serve`` to an
    argparse ``subparsers``; each sets ``func``."""
    p = subparsers.add_parser("bench", help="drive a bench through PyVISA (or its SCPI emulator)",
                              description=help_text(__doc__), formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = p.add_subparsers(dest="bench_command", metavar="BENCH_COMMAND")
    p.set_defaults(func=lambda a: (p.print_help(), 2)[1])

    s = sub.add_parser("serve", help="instrument emulator (2450 SCPI or 2600B TSP) on loopback",
                       description="Serve the reference bench's instrument on a loopback socket, backed by an "
                                   "emulated array of --device cells: a Keithley 2450 and a switch matrix over SCPI "
                                   "(--model 2450) or a 2600B-family SourceMeter over TSP (--model 2636B, ...); "
                                   "prints the VISA resource to pass as --resource to the other bench commands. "
                                   "Needs neither PyVISA nor pymeasure.")
    s.add_argument("--device", default="pcm-nandakumar2019",
                   help="device card (name or path) of the emulated cells (default: pcm-nandakumar2019)")
    s.add_argument("--model", default="2450", type=lambda t: t.strip().upper(),
                   choices=["2450", *TSP_MODELS],
                   help="instrument to emulate: 2450 (SCPI, default) or a 2600B-family TSP model (2636B, ...)")
    s.add_argument("--port", type=int, default=0, help="TCP port (0: a free ephemeral port)")
    s.add_argument("--host", default="127.0.0.1", help="loopback address to bind (127.0.0.1, ::1 or localhost)")
    s.add_argument("--rows", type=int, default=None, help="matrix rows (default: bench config, 32)")
    s.add_argument("--cols", type=int, default=None, help="matrix columns (default: bench config, 32)")
    s.add_argument("--seed", type=int, default=None, help="seed of the emulated cells")
    s.add_argument("--bench-config", default=None, help="TOML bench file ([matrix], [scheme], [limits] used)")
    s.add_argument("--enforce-limits", action="store_true",
                   help="refuse levels, compliances, widths and routes past the bench file's [limits] (as a lab "
                        "interlock would); without it the emulator accepts what the real instrument accepts")
    s.add_argument("--max-seconds", type=float, default=None, help="stop by itself after this long (s)")
    s.add_argument("--port-file", default=None, help="write the bound port here")
    s.add_argument("--reset-on-connect", action="store_true",
                   help="give every new connection a freshly reset instrument, as after *RST (the cells keep "
                        "their state either way; without it the instrument keeps its settings across "
                        "connections, as a real one does)")
    s.set_defaults(func=_guarded(_serve))

    pr = sub.add_parser("program", help="program cells (write-verify by default) and read them back",
                        description="Program --cells to random levels (--levels) or to --targets-csv on the bench at "
                                    "--resource (write-verify by default), read them back, and write one CSV row "
                                    "per cell (--out).")
    _add_bench_options(pr)
    _add_verify_options(pr, default_on=True)
    pr.add_argument("--cells", default=None, help="addresses, e.g. 0-255,300 (default: every cell)")
    pr.add_argument("--levels", type=int, default=8, help="random targets from this many levels over 10-90 %% of range")
    pr.add_argument("--targets-csv", default=None, help="CSV with columns cell,target_S instead of random levels")
    pr.add_argument("--seed", type=int, default=0, help="seed of the random targets")
    pr.add_argument("--out", required=True, help="tidy CSV of targets, read-backs, pulses, success")
    pr.set_defaults(func=_guarded(_program))

    pl = sub.add_parser("plan", help="write a programming plan (cells, targets, windows, pulse scheme) for any tester",
                        description="Write a programming plan for any tester (an FPGA board, an ArC TWO, a B1500 "
                                    "script): one CSV row per cell with its crosspoint, target, verify window and "
                                    "first SET voltage, and empty result columns to fill in, plus a JSON sidecar "
                                    "with the card, limits and pulse scheme. Targets are random levels, a CSV, or "
                                    "a model's tensors (--tensors). `analogmem calibrate` reads the executed plan "
                                    "back.")
    pl.add_argument("--device", required=True, help="device card (name or path) giving the target range")
    pl.add_argument("--bench-config", default=None, help="TOML bench file: [matrix], [limits], [scheme]")
    pl.add_argument("--rows", type=int, default=None, help="matrix rows (overrides the bench config)")
    pl.add_argument("--cols", type=int, default=None, help="matrix columns (overrides the bench config)")
    _add_verify_options(pl, default_on=True)
    pl.add_argument("--cells", default=None, help="addresses for --levels targets (default: every cell)")
    pl.add_argument("--levels", type=int, default=8, help="random targets from this many levels over 10-90 %% of range")
    pl.add_argument("--seed", type=int, default=0, help="seed of the random targets")
    pl.add_argument("--targets-csv", default=None, help="CSV with columns cell,target_S instead of random levels")
    pl.add_argument("--tensors", default=None,
                    help=".npz of named float arrays (a model's weights), encoded as the storage layer does")
    pl.add_argument("--cells-per-weight", type=int, default=2, help="with --tensors: cells per weight")
    pl.add_argument("--encoder", default="auto", help="with --tensors: encoder name (default: auto)")
    pl.add_argument("--out", required=True, help="the plan CSV")
    pl.add_argument("--plan-json", default=None, help="the plan's JSON sidecar (default: --out with .json)")
    pl.add_argument("--json", default=None, help="write a JSON summary here")
    pl.set_defaults(func=_guarded(_plan))

    rd = sub.add_parser("read", help="read conductances",
                        description="Read the conductance of --cells (default all) on the bench at --resource and "
                                    "write one CSV row per cell (--out), optionally a map of the array (--plot).")
    _add_bench_options(rd)
    rd.add_argument("--cells", default=None, help="addresses, e.g. 0-255 (default: every cell)")
    rd.add_argument("--out", required=True, help="CSV: cell, read_value_S, time_s (when this session programmed the "
                                                   "cells), device")
    rd.set_defaults(func=_guarded(_read))

    ch = sub.add_parser("characterise", help="program levels, read over time, write the tidy calibration table",
                        description="Program --levels target levels on --cells-per-level cells each, read them at "
                                    "--times after programming, and write the tidy calibration table (CSV) that "
                                    "'analogmem calibrate' fits a card to.")
    _add_bench_options(ch)
    _add_verify_options(ch, default_on=False)
    ch.add_argument("--levels", type=int, default=8, help="target levels over 10-90 %% of the range")
    ch.add_argument("--cells-per-level", type=int, default=32, help="cells per level")
    ch.add_argument("--times", type=_times, default=(0.0, 60.0, 3600.0),
                    help="read times after programming (s), comma-separated, ascending")
    ch.add_argument("--reads-per-time", type=int, default=1, help="repeated reads per cell and time")
    ch.add_argument("--temperature-K", type=float, default=None, help="value of the temperature_K column")
    ch.add_argument("--seed", type=int, default=0, help="seed of the cell/level assignment")
    ch.add_argument("--append", action="store_true", help="extend an existing table instead of refusing")
    ch.add_argument("--out", required=True, help="tidy CSV (appended and flushed as the sweep goes)")
    ch.set_defaults(func=_guarded(_characterise))
    return p


def main(argv: list[str] | None = None) -> int:
    """Run ``bench`` standalone: ``python -m analogmem.instrument.cli serve ...``."""
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *(sys.argv[1:] if argv is None else argv)])
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
