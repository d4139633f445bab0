"""A lab's own table calibrates without renaming columns (issue 13): ``--target-column`` /
``--read-column`` (units from the suffix or given), the same in ``read_tidy``, the mapping
recorded in the fit report, and the errors (unknown column, unit not understood, two
columns for one role)."""

from __future__ import annotations

import json
import tomllib
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from analogmem.calibrate import WriteChannelCalibrator, read_tidy
from analogmem.calibrate.tidy import ColumnMap
from analogmem.cli import main
from analogmem.errors import CalibrationError
from stats_helpers import SHARED_DATA

STANFORD = SHARED_DATA / "pcm-stanford" / "partial_reset_pcm.csv"
ROOT = Path(__file__).resolve().parents[1]


def _lab_table(n_levels: int = 4, n: int = 40) -> pd.DataFrame:
    """A lab's table: write voltage in V, resistance in kΩ, an extra column."""
    rng = np.random.default_rng(0)
    v = np.repeat(np.linspace(1.0, 2.5, n_levels), n)
    r_kohm = 20.0 * np.exp(0.6 * v + rng.normal(0, 0.1, v.size))
    return pd.DataFrame({"pulse_V": v, "R_kohm": r_kohm, "operator": "ab"})


def test_mapped_columns_are_converted_and_recorded():
    lab = _lab_table()
    df = read_tidy(lab, target_column="pulse_V", read_column="R_kohm")
    assert {"target_V", "read_value_ohm", "operator"} <= set(df.columns) and "R_kohm" not in df.columns
    np.testing.assert_array_equal(df["read_value_ohm"], lab["R_kohm"] * 1e3)  # kΩ → Ω
    np.testing.assert_array_equal(df["target_V"], lab["pulse_V"])
    assert df.attrs["column_mapping"] == {
        "target": {"column": "pulse_V", "unit": "V", "as": "target_V", "factor": 1.0},
        "read": {"column": "R_kohm", "unit": "kohm", "as": "read_value_ohm", "factor": 1e3}}
    # an explicit unit for a column without a unit suffix: the same reads as conductances in mS
    g = lab.assign(G=1.0 / lab["R_kohm"])  # 1/kΩ = mS
    df = read_tidy(g.drop(columns="R_kohm"), target_column="pulse_V", read_column="G", read_unit="mS")
    np.testing.assert_allclose(df["read_value_S"], 1 / (lab["R_kohm"] * 1e3), rtol=1e-14)  # two roundings
    # a calibrator takes the same mapping and its card's fit report records it
    cal = WriteChannelCalibrator(columns=ColumnMap("pulse_V", "R_kohm")).fit(lab)
    assert cal.device_model_.fit_report["column_mapping"]["read"]["column"] == "R_kohm"
    assert cal.device_model_.input == "voltage"


def test_the_mapping_errors_name_what_was_found_and_the_flag_that_would_work():
    lab = _lab_table()
    with pytest.raises(CalibrationError, match=r"found none among columns \['pulse_V', 'R_kohm', 'operator'\]; "
                                               r"map a lab's own columns with --target-column pulse_V "
                                               r"--read-column R_kohm"):
        read_tidy(lab)
    with pytest.raises(CalibrationError, match=r"--target-column 'volts' is not a column of the table; found "
                                               r"\['pulse_V', 'R_kohm', 'operator'\]"):
        read_tidy(lab, target_column="volts", read_column="R_kohm")
    # unit not understood: from the suffix, or given
    with pytest.raises(CalibrationError, match=r"column 'operator' has no unit suffix; give the unit with "
                                               r"--read-unit UNIT \(one of S, mS"):
        read_tidy(lab.assign(operator=1.0), target_column="pulse_V", read_column="operator")
    with pytest.raises(CalibrationError, match=r"the suffix 'furlongs' of column 'r_furlongs' is not a unit"):
        read_tidy(lab.assign(r_furlongs=1.0), target_column="pulse_V", read_column="r_furlongs")
    with pytest.raises(CalibrationError, match=r"unit 'furlong' is not a unit .*; give the unit with --target-unit UNIT"):
        read_tidy(lab, target_column="pulse_V", read_column="R_kohm", target_unit="furlong")
    with pytest.raises(CalibrationError, match=r"unit 'V' is not a unit analogmem understands for this role"):
        read_tidy(lab, target_column="pulse_V", read_column="R_kohm", read_unit="V")  # a read is not a voltage
    # two columns for one role; one column for two roles
    with pytest.raises(CalibrationError, match=r"two columns for the target role: 'pulse_V' \(mapped\) and 'target_V'"):
        read_tidy(lab.assign(target_V=1.0), target_column="pulse_V", read_column="R_kohm")
    with pytest.raises(CalibrationError, match=r"two columns for the read role: 'R_kohm' \(mapped\) and 'read_value_S'"):
        read_tidy(lab.assign(read_value_S=1e-5), target_column="pulse_V", read_column="R_kohm")
    with pytest.raises(CalibrationError, match=r"column 'pulse_V' is mapped to both the target and the read role"):
        read_tidy(lab, target_column="pulse_V", read_column="pulse_V")
    with pytest.raises(CalibrationError, match=r"column 'read_value_S' is mapped to both"):
        read_tidy(pd.DataFrame({"read_value_S": [1e-5], "x": [1]}), target_column="read_value_S", target_unit="S")
    # values are still checked, naming the lab's column
    bad = lab.copy()
    bad.loc[5, "R_kohm"] = -1.0
    with pytest.raises(CalibrationError, match=r"column 'R_kohm', row 5: -1.0 is not positive \(a resistance"):
        read_tidy(bad, target_column="pulse_V", read_column="R_kohm")


def test_cli_flags_and_their_errors(tmp_path, capsys):
    csv, out, js = tmp_path / "lab.csv", tmp_path / "lab.toml", tmp_path / "fit.json"
    _lab_table().to_csv(csv, index=False)
    assert main(["calibrate", str(csv), "--out", str(out)]) == 2
    assert "--target-column pulse_V --read-column R_kohm" in capsys.readouterr().err
    assert main(["calibrate", str(csv), "--out", str(out), "--target-column", "pulse_V", "--read-column", "R_kohm",
                 "--json", str(js)]) == 0
    assert "column 'R_kohm' (kohm) read as read_value_ohm x 1000" in capsys.readouterr().out
    assert json.loads(js.read_text())["column_mapping"]["target"]["column"] == "pulse_V"
    with pytest.raises(SystemExit):  # argparse refuses a unit it does not list
        main(["calibrate", str(csv), "--out", str(out), "--target-column", "pulse_V", "--target-unit", "furlong"])


@pytest.mark.skipif(not STANFORD.exists(), reason="../shared/data not present")
def test_stanford_table_calibrates_directly_and_gives_the_converter_routes_card(tmp_path):
    """The issue's command on the shared Stanford table, and the converter route of
    scripts/cards/README.md, give the same card: every table bit-identical (same reads in the
    same order through the same fit), only the recorded column mapping differs."""
    direct, via, tidy = tmp_path / "X.toml", tmp_path / "Y.toml", tmp_path / "tidy.csv"
    assert main(["calibrate", str(STANFORD), "--target-column", "write_voltage_V", "--read-column",
                 "read_resistance_ohm", "--out", str(direct)]) == 0
    from scripts.cards import convert_stanford_pcm

    assert convert_stanford_pcm.main([str(STANFORD), str(tidy)]) == 0
    assert main(["calibrate", str(tidy), "--out", str(via)]) == 0
    a, b = (tomllib.loads(p.read_text()) for p in (direct, via))
    ma, mb = a["fit_report"].pop("column_mapping"), b["fit_report"].pop("column_mapping")
    assert ma["target"]["column"] == "write_voltage_V" and mb["target"]["column"] == "target_V"
    assert ma["read"]["as"] == mb["read"]["as"] == "read_value_ohm"
    assert a == b
