"""Arrhenius retention: the fit on the RADAR bake data, a synthetic round trip, and bakes
on the emulated bench."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest

import analogmem
from analogmem import CalibrationError, DeviceCardError, EmulatedBench
from analogmem.emulator.cells import parse_card
from analogmem.calibrate.retention import fit_arrhenius
from analogmem.emulator.cells import BOLTZMANN_eV_per_K, acceleration_factor
from stats_helpers import SHARED_DATA

BER = SHARED_DATA / "rram-radar" / "ber-time-temp.csv"


@pytest.mark.skipif(not BER.exists(), reason="../shared/data not present")
def test_radar_bakes_collapse_onto_one_arrhenius_master_curve():
    raw = pd.read_csv(BER)
    d = pd.DataFrame({"bits_per_cell": raw["BPC"], "temperature_K": raw["Temperature (K)"],
                      "time_s": raw["Time (s)"], "ber": raw["BER"]})
    fit = fit_arrhenius(d)
    assert 1.8 < fit.activation_energy_eV < 2.7 and fit.activation_energy_stderr_eV < 0.05
    assert fit.rms_log10 < 0.15  # decades
    # the 2- and 3-bit-per-cell data, fitted apart, agree on the activation energy
    a, b = (fit_arrhenius(d[d.bits_per_cell == k]) for k in (2, 3))
    se = math.hypot(a.activation_energy_stderr_eV, b.activation_energy_stderr_eV)
    assert abs(a.activation_energy_eV - b.activation_energy_eV) < 4 * se
    pred = fit.predict_ber(3, d.time_s[d.bits_per_cell == 3], d.temperature_K[d.bits_per_cell == 3])
    assert np.max(np.abs(np.log10(pred) - np.log10(d.ber[d.bits_per_cell == 3]))) < 0.4


def test_synthetic_round_trip_recovers_the_activation_energy():
    rng = np.random.default_rng(0)
    ea, t_ref = 1.4, 300.0
    rows = []
    for temp in (330.0, 350.0, 370.0):
        for t in np.geomspace(1e3, 1e6, 7):
            x = math.log10(t * float(acceleration_factor(temp, ea, t_ref)))
            rows.append((3, temp, t, 10 ** (-12 + 0.4 * x + rng.normal(0, 0.03))))
    fit = fit_arrhenius(pd.DataFrame(rows, columns=["bits_per_cell", "temperature_K", "time_s", "ber"]),
                        degree=1, initial_activation_energy_eV=1.0)
    assert abs(fit.activation_energy_eV - ea) < 4 * fit.activation_energy_stderr_eV


def test_bad_retention_tables():
    good = pd.DataFrame({"bits_per_cell": [2] * 6, "temperature_K": [330.0] * 3 + [350.0] * 3,
                         "time_s": [1e3, 1e4, 1e5] * 2, "ber": [1e-4, 1e-3, 1e-2] * 2})
    with pytest.raises(CalibrationError, match="lacks column"):
        fit_arrhenius(good.drop(columns="ber"))
    with pytest.raises(CalibrationError, match="two or more temperatures"):
        fit_arrhenius(good.assign(temperature_K=330.0))
    with pytest.raises(CalibrationError, match=r"column 'ber', row 2: 1.5 is not in \(0, 1\)"):
        fit_arrhenius(good.assign(ber=[1e-4, 1e-3, 1.5] * 2))


def test_bake_advances_the_clock_by_the_equivalent_time(card_text):
    text = card_text("rram-wan2022") + ('\n[retention]\nmodel = "arrhenius"\nactivation_energy_eV = 1.2\n'
                                        'reference_temperature_K = 300.0\n')
    dev = parse_card(text, "baked.toml")
    bench, unbaked = EmulatedBench(dev, 1000, seed=0), EmulatedBench(dev, 1000, seed=0)
    for b in (bench, unbaked):
        b.program(np.full(1000, 20e-6))
    eq = bench.bake(1800.0, 393.15)
    expect = 1800.0 * math.exp(1.2 / BOLTZMANN_eV_per_K * (1 / 300.0 - 1 / 393.15))
    assert eq == pytest.approx(expect) and bench.time_s == pytest.approx(expect)
    # a longer bake means a wider spread (RRAM relaxation grows, then holds after 2 days)
    assert np.std(bench.read()) > np.std(unbaked.read(1.0))
    with pytest.raises(DeviceCardError, match="no \\[retention\\] model"):
        EmulatedBench("rram-wan2022", 10).bake(10.0, 350.0)
    with pytest.raises(analogmem.TargetRangeError, match="temperature_K"):
        bench.bake(10.0, -5.0)
    with pytest.raises(DeviceCardError, match=r"\[retention\].activation_energy_eV"):
        parse_card(text.replace("activation_energy_eV = 1.2", "activation_energy_eV = -1"), "bad.toml")
