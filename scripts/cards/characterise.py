#!/usr/bin/env python
"""Characterise a bench and write the tidy calibration table (README, "Calibrating a card from your own cells").

A thin wrapper over :func:`analogmem.instrument.characterise`; the same sweep as
``analogmem bench characterise``. The bench is either a VISA resource (a real bench, or
the SCPI emulator from ``analogmem bench serve``) or, with ``--emulated CARD``, an
in-process :class:`analogmem.EmulatedBench`:

    python -m scripts.cards.characterise --resource TCPIP0::127.0.0.1::5025::SOCKET \\
        --device pcm-nandakumar2019 --levels 8 --cells-per-level 60 --times 1,60,3600 \\
        --out results/characterise/table.csv
    python -m scripts.cards.characterise --emulated pcm-nandakumar2019 --out results/emu.csv

The table feeds ``analogmem.calibrate`` directly (one row per read, unit-suffixed columns).
"""

from __future__ import annotations

import argparse
import sys


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    src = p.add_mutually_exclusive_group(required=True)
    src.add_argument("--resource", help="VISA resource of the bench's source-measure unit")
    src.add_argument("--emulated", metavar="CARD", help="use an in-process EmulatedBench of this card instead")
    p.add_argument("--device", default=None, help="device card giving the target range (instrument benches)")
    p.add_argument("--bench-config", default=None, help="TOML bench file ([matrix], [limits], [scheme])")
    p.add_argument("--visa-library", default=None, help="PyVISA backend (@py, @ivi); simulated bench: 'analogmem bench serve'")
    p.add_argument("--cells", type=int, default=1024, help="cells of the emulated bench")
    p.add_argument("--levels", type=int, default=8)
    p.add_argument("--cells-per-level", type=int, default=60)
    p.add_argument("--times", default="1,60,3600", help="read times after programming (s), comma-separated")
    p.add_argument("--reads-per-time", type=int, default=1)
    p.add_argument("--temperature-K", type=float, default=None)
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", required=True, help="tidy CSV (appended and flushed as the sweep goes)")
    p.add_argument("--json", default=None, help="summary JSON")
    args = p.parse_args(argv)

    from analogmem import EmulatedBench
    from analogmem.instrument import InstrumentBench, characterise, load_bench_config

    times = tuple(float(t) for t in args.times.split(","))
    if args.emulated:
        bench = EmulatedBench(args.emulated, args.cells, seed=args.seed)
    else:
        bench = InstrumentBench(args.resource, device=args.device, config=load_bench_config(args.bench_config),
                                visa_library=args.visa_library, progress=True)
    with bench:
        res = characterise(bench, args.out, n_levels=args.levels, cells_per_level=args.cells_per_level,
                           read_times_s=times, reads_per_time=args.reads_per_time, temperature_K=args.temperature_K,
                           seed=args.seed, progress=True)
    if args.json:
        from analogmem._io import write_json

        write_json(args.json, dict(res.summary), seed=args.seed, settings=vars(args))
    print(f"{res.n_rows} rows -> {res.path} ({res.wall_s:.1f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
