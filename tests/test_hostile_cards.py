"""Device cards and calibration tables under a hostile user (issue 25, items 8, 9, 12, 13,
17, 21, 30, 31): physically absurd cards, names that break instrument framing, huge or
special files, deep nesting, unit mix-ups and duplicate columns. Every case is refused with
its named error, and nothing is written or changed."""

from __future__ import annotations

import copy
import hashlib
import math
import os
import re
import tomllib
from pathlib import Path

import numpy as np
import pytest
import tomli_w

import analogmem
from analogmem import CalibrationError, DeviceCardError, EmulatedBench
from analogmem.calibrate import tidy
from analogmem.cli import main
from analogmem.emulator.cells import parse_card

DEVICES = Path(analogmem.__file__).resolve().parents[1] / "devices"
PCM = tomllib.loads((DEVICES / "pcm-nandakumar2019.toml").read_text())
STANFORD = tomllib.loads((DEVICES / "pcm-stanford.toml").read_text())


def card_text(base: dict, edit) -> str:
    c = copy.deepcopy(base)
    edit(c)
    return tomli_w.dumps(c)


def _set(path: str, value):
    def edit(c):
        *parents, key = path.split(".")
        for p in parents:
            c = c[p]
        c[key] = value
    return edit


ABSURD = [
    ("g_ref_S subnormal", PCM, _set("programming.g_ref_S", 5e-324), r"\[programming\]\.g_ref_S: 4\.94066e-324 is outside \[1e-15, 1000\]"),
    ("sigma 1e300", PCM, _set("programming.coefficients_uS", [1e300, 0.0]), r"standard deviation of .* beyond the 1000 S"),
    ("g_max 1e300", PCM, _set("range.g_max_S", 1e300), r"\[range\]\.g_max_S: 1e\+300 is outside"),
    ("t_read subnormal", PCM, _set("read_noise.t_read_s", 5e-324), r"\[read_noise\]\.t_read_s: .* is outside \[1e-09"),
    ("t0 subnormal", PCM, _set("drift.t0_s", 1e-300), r"\[drift\]\.t0_s"),
    ("schema_version true", PCM, _set("card.schema_version", True), r"unsupported schema_version True"),
    ("name newline", PCM, _set("card.name", "a\nb"), r"name 'a\\nb' must be non-empty printable ASCII"),
    ("name empty", PCM, _set("card.name", ""), r"name '' must be non-empty"),
    ("name comma", PCM, _set("card.name", "x,y"), r"without ','"),
    ("name control", PCM, _set("card.name", "x\x07"), r"printable ASCII"),
    ("quantile 800", STANFORD, lambda c: c["programming"]["log_conductance_quantiles"][0].__setitem__(-1, 800.0),
     r"reaches ln g = 800"),
    ("clip below data", STANFORD, _set("range.clip_max_S", 1e-9), r"would clip the card's own conductances"),
    ("huge list", PCM, _set("programming.coefficients_uS", [0.1] * 200_000), r"200000 numbers, more than"),
]


@pytest.mark.parametrize("label, base, edit, message", ABSURD, ids=[a[0] for a in ABSURD])
def test_a_physically_absurd_card_is_refused_by_field(tmp_path, label, base, edit, message):
    path = tmp_path / "card.toml"
    path.write_text(card_text(base, edit))
    before = path.read_bytes()
    with pytest.raises(DeviceCardError, match=message):
        analogmem.load_device(path)
    assert path.read_bytes() == before


def test_the_bundled_cards_stay_inside_the_bounds_and_read_finite():
    for name in analogmem.bundled_devices():
        dev = analogmem.load_device(name)
        lo, hi = dev.input_range
        b = EmulatedBench(dev, 2000, seed=0)
        b.program(np.linspace(lo, hi, 2000))
        for t in (0.0, 1.0, 3.15e7):
            assert np.all(np.isfinite(b.read(t)))


def test_deeply_nested_and_oversized_cards_are_refused_without_a_traceback(tmp_path):
    deep = 'x = ' + "[" * 5000 + "]" * 5000 + "\n"
    with pytest.raises(DeviceCardError, match="nested too deeply"):
        parse_card(deep, "deep")
    big = tmp_path / "big.toml"
    big.write_bytes(b"# " + b"x" * (5 << 20) + b"\n")
    with pytest.raises(DeviceCardError, match="more than the 4194304 a card may have"):
        analogmem.load_device(big)


def test_special_files_are_never_read_as_cards_or_tables(tmp_path):
    fifo = tmp_path / "fifo.toml"
    os.mkfifo(fifo)
    for path in (Path("/dev/zero"), fifo, tmp_path):
        with pytest.raises(DeviceCardError, match="not a regular file"):
            analogmem.load_device(path)
        with pytest.raises(CalibrationError, match="not a regular file"):
            tidy.load_table(path)


def test_a_card_with_a_utf8_bom_loads(tmp_path):
    path = tmp_path / "bom.toml"
    path.write_bytes(b"\xef\xbb\xbf" + (DEVICES / "pcm-nandakumar2019.toml").read_bytes())
    assert analogmem.load_device(path).name == "pcm-nandakumar2019"


# ------------------------------------------------------------------ calibration tables
def table(path: Path, reads_S: np.ndarray, targets_S: np.ndarray, header: str = "target_S,read_value_S") -> Path:
    path.write_text(header + "\n" + "".join(f"{float(t)!r},{float(r)!r}\n" for t, r in zip(targets_S, reads_S)))
    return path


def levels(n_per_level: int = 60, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    targets = np.repeat([2e-6, 5e-6, 10e-6, 20e-6], n_per_level)
    return targets, targets * np.exp(rng.normal(0, 0.05, targets.size))


@pytest.mark.parametrize("fraction", [0.5, 0.35, 0.1])
def test_a_unit_mix_up_in_one_column_is_refused(tmp_path, monkeypatch, capsys, fraction):
    """Some reads of every level written in µS into a column of S (the 50/50 mix used to
    calibrate into a card with g_max = 95 S)."""
    monkeypatch.chdir(tmp_path)
    targets, reads = levels()
    mixed = reads.copy()
    rng = np.random.default_rng(1)
    which = rng.random(reads.size) < fraction
    mixed[which] *= 1e6  # µS values in an S column
    table(tmp_path / "mixed.csv", mixed, targets)
    before = (tmp_path / "mixed.csv").read_bytes()
    for model in ("channel", "polynomial"):
        for extra in ([], ["--drop-outliers"]):
            assert main(["calibrate", "mixed.csv", "--out", "card.toml", "--model", model, *extra]) == 2
            err = capsys.readouterr().err
            assert "CalibrationError" in err and ("two clusters" in err or "outliers" in err), err
    assert not (tmp_path / "card.toml").exists() and (tmp_path / "mixed.csv").read_bytes() == before
    with pytest.raises(CalibrationError, match=r"two clusters 1e\+06x apart|two clusters 9\.\d+e\+05x apart"
                       if fraction == 0.5 else "clusters|outliers"):
        analogmem.calibrate.WriteChannelCalibrator("m").fit(tmp_path / "mixed.csv")


def test_a_clean_table_still_calibrates(tmp_path):
    targets, reads = levels()
    card = analogmem.calibrate.WriteChannelCalibrator("clean").fit(table(tmp_path / "t.csv", reads, targets))
    assert card is not None


def test_duplicate_column_headers_are_refused(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    targets, reads = levels()
    path = tmp_path / "dup.csv"
    path.write_text("target_S,read_value_S,read_value_S\n" + "".join(
        f"{float(t)!r},{float(r)!r},{float(r) * 1000!r}\n" for t, r in zip(targets, reads)))
    with pytest.raises(CalibrationError, match=r"column name\(s\) \['read_value_S'\] appear more than once"):
        tidy.load_table(path)
    import pandas as pd

    frame = pd.DataFrame(np.c_[targets, reads, reads], columns=["target_S", "read_value_S", "read_value_S"])
    with pytest.raises(CalibrationError, match="appear more than once"):
        tidy.load_table(frame)
    assert main(["calibrate", "dup.csv", "--out", "card.toml"]) == 2
    assert "appear more than once" in capsys.readouterr().err and not (tmp_path / "card.toml").exists()


@pytest.mark.parametrize("argv, message", [
    (["--name", "a\nb"], r"--name: name 'a\\nb' must be non-empty printable ASCII"),
    (["--name", ""], r"--name: name '' must be non-empty"),
    (["--min-reads", "0"], r"--min-reads must be at least 2"),
    (["--holdout", "0.999"], r"--holdout must be in \(0, 0\.9\]"),
    (["--read-column", "read_value_S", "--read-unit", "kohm"], r"column 'read_value_S' says its unit is 'S' but "
                                                               r"--read-unit says 'kohm'"),
])
def test_nonsense_calibrate_options_are_refused_before_fitting(tmp_path, monkeypatch, capsys, argv, message):
    monkeypatch.chdir(tmp_path)
    targets, reads = levels()
    table(tmp_path / "t.csv", reads, targets)
    assert main(["calibrate", "t.csv", "--out", "card.toml", *argv]) == 2
    err = capsys.readouterr().err
    assert re.search(message, err) and err.count("\n") == 1, err
    assert sorted(os.listdir(tmp_path)) == ["t.csv"]


def test_a_missing_parquet_file_is_reported_as_missing(tmp_path):
    with pytest.raises(CalibrationError, match=r"no such file"):
        tidy.load_table(tmp_path / "nope.parquet")


def test_a_zero_spread_level_is_refused_by_the_polynomial_fit(tmp_path):
    targets, reads = levels()
    reads[targets == 5e-6] = 5e-6  # one level read as a constant
    with pytest.raises(CalibrationError, match=r"target_S = 5e-06 at time_s = 1: all 60 reads are 5e-06 S \(zero spread\)"):
        analogmem.calibrate.PolynomialCalibrator("p").fit(table(tmp_path / "z.csv", reads, targets))
