"""RADAR RRAM converter: lab files -> tidy tables (issues #8 and #16)."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest

from analogmem import CalibrationError
from stats_helpers import SHARED_DATA

RADAR = SHARED_DATA / "rram-radar"
needs_data = pytest.mark.skipif(not RADAR.exists(), reason="../shared/data not present")


def converter():
    from scripts.cards import convert_radar

    return convert_radar


@needs_data
def test_radar_tables_follow_the_data_readme():
    tables = converter().convert(RADAR)
    wv, reads = tables["write-verify"], tables["reads"]
    raw = np.loadtxt(RADAR / "writetest1.csv")
    w1 = wv[wv.device == "writetest1"]
    assert len(w1) == len(raw)
    # pulses = nsets + nresets (every pulse applied; >= 0); level = index of rlo among the sorted distinct rlo
    np.testing.assert_array_equal(w1.pulses, raw[:, 2] + raw[:, 3])
    assert w1.pulses.min() == 0
    np.testing.assert_array_equal(w1.target_level, np.searchsorted(np.unique(raw[:, 6]), raw[:, 6]))
    assert np.isinf(w1.window_hi_ohm[raw[:, 7] >= 1e10]).all()
    # a successful cell ended inside its window
    ok = w1[w1.success]
    assert ((ok.read_value_ohm >= ok.window_lo_ohm) & (ok.read_value_ohm <= ok.window_hi_ohm)).mean() > 0.99
    # readtests: 14 files of 1024-cell read passes, level of cell i = (i + i // 32) % 8
    assert len(reads) == sum(len(np.loadtxt(p)) for p in RADAR.glob("readtest3bpc*.csv"))
    assert (reads.groupby(["device", "time_s", "read_pass"]).size() == 1024).all()
    e1 = reads[(reads.device == "radar-expt1") & (reads.time_s == 1800.0)]
    i = np.arange(1024)
    np.testing.assert_array_equal(e1.target_level, (i + i // 32) % 8)
    assert (e1.temperature_K == 353.15).all()
    # levels are ordered in resistance
    med = e1.groupby("target_level").read_value_ohm.median().to_numpy()
    assert np.all(np.diff(med) > 0)
    assert len(tables["relaxation"]) == 1024 and tables["relaxation"].target_level.max() == 31
    assert set(tables["ber"].bits_per_cell) == {2, 3}


def test_converter_errors_name_the_file_and_row(tmp_path):
    conv = converter()
    with pytest.raises(CalibrationError, match="not a folder"):
        conv.convert(tmp_path / "absent")
    with pytest.raises(CalibrationError, match="no RADAR files: looked for writetest"):
        conv.convert(tmp_path)
    bad = tmp_path / "writetest9.csv"
    bad.write_text("1\t2\t3\t1\t5000\t0\t4000\t6000\t1\t0\t0\n2\t2\t3\t1\tabc\t0\t4000\t6000\t1\t0\t0\n")
    with pytest.raises(CalibrationError, match=r"writetest9.csv: row 1, column 4: 'abc' is not a number"):
        conv.write_verify_table(bad)
    bad.write_text("1\t2\t3\t1\t-5\t0\t4000\t6000\t1\t0\t0\n")
    with pytest.raises(CalibrationError, match="row 0: final resistance rf = -5.0 is not positive"):
        conv.write_verify_table(bad)
    bad.write_text("1\t2\t3\n")
    with pytest.raises(CalibrationError, match="expected 11 columns, found 3"):
        conv.write_verify_table(bad)


def _trace_rows(addr_levels, windows, attempts=0):
    """Lines of a writetest-format file: one per (address, level) with that level's window."""
    lines = []
    for addr, level in addr_levels:
        lo, hi = windows[level]
        rf = (lo + (hi if hi < 1e10 else 2 * lo)) / 2
        lines.append(f"{addr}\t7\t4\t1\t{rf}\t0\t{lo}\t{hi}\t1\t{attempts}\t0")
    return lines


def test_a_folder_of_write_verify_files_only_converts(tmp_path):
    """No readtests, relaxation or BER file: the write-verify table alone comes out, with the
    run, start state and scheme columns; the ISPP step and budget come from the file."""
    conv = converter()
    windows = {0: (0.0, 4200.0), 1: (4500.0, 4600.0), 2: (80000.0, 1e10)}
    (tmp_path / "writetest8.csv").write_text("\n".join(_trace_rows([(10, 0), (11, 1), (12, 2)] * 2, windows)) + "\n")
    ispp = _trace_rows([(20, 0), (21, 1), (22, 2)], windows)
    ispp[2] = "22\t200\t0\t200\t70000\t0\t80000\t10000000000\t0\t0\t0"  # failed after 200 RESET pulses
    (tmp_path / "ispp-2bpc-wlstep0.070.csv").write_text("\n".join(ispp) + "\n")
    tables = conv.convert(tmp_path)
    assert set(tables) == {"write-verify"}
    wv = tables["write-verify"]
    w8 = wv[wv.device == "writetest8"]
    assert list(w8.prior_programs) == [0, 0, 0, 1, 1, 1] and set(w8.scheme) == {"radar"}
    assert set(w8.experiment) == {"writetest8"} and w8.max_pulses.isna().all()
    isp = wv[wv.device == "ispp-2bpc-wlstep0.070"]
    assert set(isp.scheme) == {"ispp"} and (isp.step_V == 0.07).all() and (isp.max_pulses == 200).all()


def test_converter_says_which_patterns_it_looked_for_and_what_it_found(tmp_path):
    conv = converter()
    (tmp_path / "notes.txt").write_text("x")
    (tmp_path / "write-test-1.csv").write_text("x")
    with pytest.raises(CalibrationError) as err:
        conv.convert(tmp_path)
    msg = str(err.value)
    assert "\n" not in msg
    assert ("no RADAR files: looked for writetest*.csv, ispp-*.csv (write-verify traces) and "
            "readtest*bpc*-*bake.csv (reads); found notes.txt, write-test-1.csv") in msg
    (tmp_path / "empty").mkdir()
    with pytest.raises(CalibrationError, match=r"found nothing"):
        conv.convert(tmp_path / "empty")


def test_two_bit_read_files_are_read_as_two_bit(tmp_path):
    """readtest2bpc{n}: cell i is level (i + i // 32) % 4, and the device says 2bpc."""
    conv = converter()
    r = 5000.0 + np.arange(1024)
    np.savetxt(tmp_path / "readtest2bpc3-prebake.csv", r)
    np.savetxt(tmp_path / "readtest3bpc3-prebake.csv", r)
    reads = conv.convert(tmp_path)["reads"]
    two = reads[reads.bits_per_cell == 2]
    i = np.arange(1024)
    np.testing.assert_array_equal(two.target_level, (i + i // 32) % 4)
    assert set(two.device) == {"radar-2bpc-expt3"} and two.temperature_K.isna().all()
    three = reads[reads.bits_per_cell == 3]
    np.testing.assert_array_equal(three.target_level, (i + i // 32) % 8)
    assert set(three.device) == {"radar-expt3"}


def test_a_file_with_two_window_sets_is_split_or_refused_naming_every_overlap(tmp_path):
    """From some pass on a second, overlapping window set: two runs, levels numbered per run.
    Two overlapping windows within one pass cannot be split: every overlapping pair is named."""
    conv = converter()
    set_a = {0: (0.0, 4200.0), 1: (5920.0, 6660.0), 2: (80000.0, 1e10)}
    set_b = {0: (0.0, 4200.0), 1: (5770.0, 6010.0), 2: (6130.0, 6380.0), 3: (80000.0, 1e10)}
    lines = _trace_rows([(1, 0), (2, 1), (3, 2)] * 2, set_a) + _trace_rows([(1, 0), (2, 1), (3, 2), (4, 3)], set_b)
    path = tmp_path / "writetest9.csv"
    path.write_text("\n".join(lines) + "\n")
    wv = conv.write_verify_table(path)
    assert list(wv.experiment) == ["writetest9-run1"] * 6 + ["writetest9-run2"] * 4
    assert list(wv.target_level[6:]) == [0, 1, 2, 3] and list(wv.prior_programs) == [0, 0, 0, 1, 1, 1, 0, 0, 0, 0]
    mixed = _trace_rows([(1, 0), (2, 1), (3, 2)], set_a) + _trace_rows([(4, 1), (5, 2)], set_b)
    path.write_text("\n".join(mixed) + "\n")
    with pytest.raises(CalibrationError) as err:
        conv.write_verify_table(path)
    msg = str(err.value)
    assert "[5770, 6010] and [5920, 6660] Ohm" in msg and "[5920, 6660] and [6130, 6380] Ohm" in msg
    assert "split it into one file per window set" in msg
