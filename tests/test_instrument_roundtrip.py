"""Closed loop: characterise the SCPI server (through PyVISA) and get the server card's
programming/read noise back from the tidy table within confidence intervals; the table
feeds analogmem.calibrate directly."""

from __future__ import annotations

import numpy as np
import pytest
from scipy import stats

pytest.importorskip("pyvisa_py")

from analogmem import load_device  # noqa: E402
from analogmem.instrument import BenchConfig, InstrumentBench, ScpiEmulatorServer, characterise  # noqa: E402
from analogmem.instrument.characterise import read_table  # noqa: E402

CARD = "pcm-nandakumar2019"


@pytest.fixture(scope="module")
def table(tmp_path_factory):
    path = tmp_path_factory.mktemp("rt") / "table.csv"
    with ScpiEmulatorServer(CARD, rows=16, cols=32, seed=21) as srv:
        with InstrumentBench(srv.resource, device=CARD, config=BenchConfig(rows=16, cols=32)) as bench:
            characterise(bench, path, n_levels=8, cells_per_level=60, read_times_s=(1.0,), seed=3)
    return path


def test_table_gives_back_the_cards_spread(table):
    dev = load_device(CARD)
    t = read_table(table)
    assert len(t["cell"]) == 480
    n_ok = 0
    for lv in np.unique(t["target_S"]):
        m = t["target_S"] == lv
        g, age = t["read_value_S"][m], t["time_s"][m]
        n = g.size
        # the card's prediction at each cell's age: programming noise and 1/f read noise
        gt = np.full(n, lv)
        sigma = np.sqrt(dev.sigma_program_S(gt) ** 2 + dev.sigma_read_S(gt, gt, age) ** 2).mean()
        lo, hi = np.sqrt(stats.chi2.ppf([0.0005, 0.9995], n - 1) / (n - 1)) * sigma
        assert lo < g.std(ddof=1) < hi, (lv, g.std(ddof=1), lo, hi)
        # mean: the nominal transfer hits the target (drift at ~1 s is < 0.5 %)
        assert abs(g.mean() - lv) < 3.5 * sigma / np.sqrt(n) + 0.005 * lv
        n_ok += 1
    assert n_ok == 8


def test_table_feeds_calibrate(table):
    calibrate = pytest.importorskip("analogmem.calibrate")
    if not hasattr(calibrate, "WriteChannelCalibrator"):
        pytest.skip("analogmem.calibrate has no WriteChannelCalibrator yet")
    cal = calibrate.WriteChannelCalibrator(name="from-scpi-server", min_reads_per_level=20).fit(table)
    assert len(cal.levels_) == 8 and cal.device_model_ is not None
    t = read_table(table)
    for row in cal.fit_report_:
        g = t["read_value_S"][t["target_S"] == row["target"]]
        assert row["n"] == g.size == 60
        assert row["mean_ln_g"] == pytest.approx(np.log(g).mean())
