"""Convert the Stanford partial-RESET PCM measurements into analogmem's tidy format.

Input: ``partial_reset_pcm.csv`` with columns ``write_voltage_V`` (partial-RESET pulse
amplitude) and ``read_resistance_ohm`` (one read after each write). Output: a tidy CSV with
``target_V``, ``read_value_ohm``, ``device``.

    python -m scripts.cards.convert_stanford_pcm "$ANALOGMEM_DATA/pcm-stanford/partial_reset_pcm.csv" out.csv

(``ANALOGMEM_DATA``: the folder of the measured data sets, see ``analogmem._data``.)
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from analogmem._io import atomic_write_text
from analogmem.errors import CalibrationError

REQUIRED = ("write_voltage_V", "read_resistance_ohm")


def convert(src: str | Path, device: str = "stanford-pcm"):
    """Return the tidy DataFrame for the Stanford file ``src``."""
    import pandas as pd

    from analogmem.calibrate import read_tidy

    from analogmem._data import missing_data_hint

    if not Path(src).is_file():
        raise CalibrationError(f"{src}: no such file{missing_data_hint(src)}")
    try:
        raw = pd.read_csv(src)
    except Exception as exc:  # noqa: BLE001
        raise CalibrationError(f"{src}: cannot parse as CSV: {exc}") from None
    missing = [c for c in REQUIRED if c not in raw.columns]
    if missing:
        raise CalibrationError(f"{src}: missing column(s) {missing}; found {list(raw.columns)}")
    tidy = pd.DataFrame({"target_V": raw["write_voltage_V"], "read_value_ohm": raw["read_resistance_ohm"],
                         "device": device})
    return read_tidy(tidy)  # validates numbers and positive resistances, naming the row


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("src")
    ap.add_argument("out")
    args = ap.parse_args(argv)
    try:
        df = convert(args.src)
    except CalibrationError as exc:
        print(f"convert_stanford_pcm: error: {exc}", file=sys.stderr)
        return 2
    atomic_write_text(args.out, df.to_csv(index=False))
    print(f"wrote {len(df)} reads at {df['target_V'].nunique()} write voltages to {args.out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
