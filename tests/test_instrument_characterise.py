"""The characterisation sweep and its tidy table, on the in-process EmulatedBench."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("pymeasure")

from analogmem import EmulatedBench, load_device  # noqa: E402
from analogmem.instrument.characterise import (  # noqa: E402
    TIDY_COLUMNS,
    characterise,
    plot_table,
    read_table,
    summarise_table,
)

CARD = "pcm-nandakumar2019"


def test_table_columns_levels_and_times(tmp_path):
    dev = load_device(CARD)
    bench = EmulatedBench(CARD, 512, seed=0)
    res = characterise(bench, tmp_path / "t.csv", n_levels=4, cells_per_level=50, read_times_s=(1.0, 3600.0),
                       reads_per_time=2, temperature_K=300.0, seed=1, chunk_cells=37)
    assert res.n_rows == 4 * 50 * 2 * 2
    header = open(tmp_path / "t.csv").readline().strip()
    assert header == "target_S,read_value_S,device,time_s,temperature_K,pulses,cell"  # no verify: no success
    assert set(header.split(",")) <= set(TIDY_COLUMNS)
    t = read_table(tmp_path / "t.csv")
    np.testing.assert_allclose(np.unique(t["target_S"]), dev.g_max_S * np.linspace(0.1, 0.9, 4))
    assert set(np.round(np.unique(t["time_s"]), 9)) == {1.0, 3600.0}
    assert np.all(t["temperature_K"] == 300.0) and np.all(t["device"] == CARD)
    assert np.all(t["pulses"] == 1) and np.all(np.isnan(t["success"]))
    assert len(np.unique(t["cell"])) == 200
    # each cell keeps one target
    for c in np.unique(t["cell"])[:20]:
        assert len(np.unique(t["target_S"][t["cell"] == c])) == 1
    # the spread at 1 s matches the card's programming noise (+ read noise) within 30 %
    early = t["time_s"] < 10
    for lv in np.unique(t["target_S"]):
        g = t["read_value_S"][early & (t["target_S"] == lv)]
        sigma_p = float(dev.sigma_program_S(np.array([lv]))[0])
        assert 0.7 * sigma_p < g.std() < 1.3 * np.hypot(sigma_p, 0.2 * lv) + 1e-7
    summ = summarise_table(tmp_path / "t.csv")
    assert summ["rows"] == res.n_rows and len(summ["levels"]) == 4
    png = plot_table(tmp_path / "t.csv", tmp_path / "t.png")
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_verify_statistics_in_the_table(tmp_path):
    from analogmem import WriteVerify

    bench = EmulatedBench(CARD, 256, seed=0)
    res = characterise(bench, tmp_path / "v.csv", n_levels=4, cells_per_level=32, read_times_s=(0.0,),
                       verify=WriteVerify(max_pulses=20, tolerance_rel=0.1), seed=0)
    assert open(tmp_path / "v.csv").readline().strip() == ",".join(c for c in TIDY_COLUMNS if c != "temperature_K")
    t = read_table(tmp_path / "v.csv")
    assert set(np.unique(t["success"])) <= {0.0, 1.0} and t["success"].mean() > 0.9
    assert t["pulses"].max() > 1 and res.summary["mean_pulses"] == pytest.approx(t["pulses"].mean())


def test_never_overwrites_and_appends_with_same_header(tmp_path):
    bench = EmulatedBench(CARD, 64, seed=0)
    characterise(bench, tmp_path / "t.csv", n_levels=2, cells_per_level=8, read_times_s=(0.0,), seed=0)
    with pytest.raises(FileExistsError, match="never overwrites"):
        characterise(bench, tmp_path / "t.csv", n_levels=2, cells_per_level=8, read_times_s=(0.0,), seed=0)
    characterise(bench, tmp_path / "t.csv", n_levels=2, cells_per_level=8, read_times_s=(0.0,), seed=0, append=True)
    assert len(read_table(tmp_path / "t.csv")["cell"]) == 32
    (tmp_path / "other.csv").write_text("a,b\n1,2\n")
    with pytest.raises(ValueError, match="header"):
        characterise(bench, tmp_path / "other.csv", n_levels=2, cells_per_level=8, append=True)


class _InterruptingBench:
    """Wraps a bench; the ``n``-th read raises KeyboardInterrupt (Ctrl-C mid-sweep)."""

    def __init__(self, bench, n):
        self._b, self._n, self.reads = bench, n, 0
        self.n_cells, self.device = bench.n_cells, bench.device

    def program(self, *a, **k):
        return self._b.program(*a, **k)

    def read(self, *a, **k):
        self.reads += 1
        if self.reads == self._n:
            raise KeyboardInterrupt
        return self._b.read(*a, **k)

    @property
    def time_s(self):
        return self._b.time_s

    def wait(self, s):
        self._b.wait(s)


def test_interrupted_sweep_keeps_rows_on_disk(tmp_path):
    bench = _InterruptingBench(EmulatedBench(CARD, 256, seed=0), n=4)
    with pytest.raises(KeyboardInterrupt) as ei:
        characterise(bench, tmp_path / "t.csv", n_levels=4, cells_per_level=16, read_times_s=(0.0, 60.0),
                     chunk_cells=20, seed=0)
    t = read_table(tmp_path / "t.csv")
    assert len(t["cell"]) == 60  # three complete chunks of 20 reads
    assert "60 measurement row(s)" in ei.value.__notes__[0]


def test_bad_arguments():
    bench = EmulatedBench(CARD, 16, seed=0)
    with pytest.raises(ValueError, match="ascending"):
        characterise(bench, "unused.csv", read_times_s=(10.0, 1.0))
    with pytest.raises(ValueError, match="only 16 cells"):
        characterise(bench, "unused.csv", n_levels=4, cells_per_level=8)
