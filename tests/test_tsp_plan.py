"""Programming plans: `analogmem bench plan` and make_plan/plan_for_tensors/plan_for_model
write cells, targets, windows and the pulse scheme; a tester executes them (here: the
2600B emulator through TspBench, standing in for a lab's tester); `analogmem calibrate`
reads the results back into a card."""

from __future__ import annotations

import argparse
import json
import warnings

import numpy as np
import pandas as pd
import pytest

from analogmem import SafetyLimitError, WriteVerify
from analogmem.calibrate.plan_results import PLAN_COLUMNS, plan_results_data, read_plan_results
from analogmem.errors import CalibrationError, SettingError, TargetRangeError
from analogmem.instrument import BenchConfig, SafetyLimits
from analogmem.instrument.cli import add_subparser
from analogmem.instrument.plan import make_plan, plan_for_tensors, read_plan

CARD = "pcm-nandakumar2019"


def _run(*argv: str) -> int:
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command"))
    args = parser.parse_args(["bench", *argv])
    return int(args.func(args) or 0)


def test_plan_columns_windows_and_scheme(tmp_path):
    cfg = BenchConfig(rows=4, cols=8)
    g = np.array([5e-6, 10e-6, 15e-6])
    plan = make_plan(g, [3, 9, 30], config=cfg, device=CARD, verify=WriteVerify(max_pulses=7, tolerance_rel=0.1))
    csv_path, json_path = plan.write(tmp_path / "p.csv")
    df = pd.read_csv(csv_path)
    assert list(df.columns) == list(PLAN_COLUMNS)
    assert df["cell"].tolist() == [3, 9, 30] and df["row"].tolist() == [0, 1, 3] and df["col"].tolist() == [3, 1, 6]
    np.testing.assert_allclose(df["window_lo_S"], 0.9 * g)
    np.testing.assert_allclose(df["window_hi_S"], 1.1 * g)
    np.testing.assert_allclose(df["v_set_first_V"], plan.columns["v_set_first_V"])
    assert df["read_value_S"].isna().all()
    meta = json.loads(json_path.read_text())
    assert meta["format"].startswith("analogmem-programming-plan") and meta["policy"]["max_pulses"] == 7
    assert meta["limits"]["max_set_V"] == 2.0 and meta["scheme"]["v_reset_V"] == -1.8
    assert read_plan(csv_path).n_cells == 3


def test_plan_refuses_before_writing(tmp_path):
    with pytest.raises(SafetyLimitError, match="max_set_V"):
        make_plan([24e-6], config=BenchConfig(limits=SafetyLimits(max_set_V=1.2)), device=CARD)
    with pytest.raises(TargetRangeError):
        make_plan([1.0], device=CARD)
    with pytest.raises(SettingError):
        make_plan(np.full(2000, 1e-5), device=CARD)  # more than 32x32 cells
    assert _run("plan", "--device", CARD, "--cells", "0-5000", "--out", str(tmp_path / "p.csv")) == 2
    assert not (tmp_path / "p.csv").exists()


def test_plan_of_tensors_names_each_weight(tmp_path):
    rng = np.random.default_rng(0)
    tensors = {"fc.weight": rng.normal(size=(4, 5)), "fc.bias": rng.normal(size=4)}
    plan = plan_for_tensors(tensors, CARD, cells_per_weight=2, config=BenchConfig(rows=4, cols=12))
    assert plan.n_cells == 48
    assert list(plan.columns["tensor"][:40]) == ["fc.weight"] * 40 and plan.columns["weight_index"][39] == 19
    assert plan.meta["encoder"]["cells_per_weight"] == 2
    np.savez(tmp_path / "w.npz", **tensors)
    assert _run("plan", "--device", CARD, "--rows", "4", "--cols", "12", "--tensors", str(tmp_path / "w.npz"),
                "--out", str(tmp_path / "m.csv"), "--json", str(tmp_path / "s.json")) == 0
    assert json.loads((tmp_path / "s.json").read_text())["cells"] == 48


def test_plan_for_stored_model_uses_the_chip_targets():
    torch = pytest.importorskip("torch")
    from analogmem.instrument.plan import plan_for_model
    from analogmem.storage import program_model

    torch.manual_seed(0)
    net = torch.nn.Linear(6, 3)
    model = program_model(net, CARD, cells_per_weight=2, seed=0)
    plan = plan_for_model(model)
    assert plan.n_cells == model.n_cells == 2 * 21
    assert set(plan.columns["tensor"]) == {"weight", "bias"}
    # the emulated chip was programmed to these targets: its reads at t=0 lie around them
    reads = model.bench.read(addresses=np.arange(model.n_cells))
    assert np.corrcoef(reads, plan.columns["target_S"])[0, 1] > 0.9


def test_executed_plan_calibrates(tmp_path):
    """A tester (the 2600B emulator through TspBench) executes a 4-level plan; its filled
    plan goes straight into `analogmem calibrate`, channel and write-verify models."""
    pytest.importorskip("pyvisa_py")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        pytest.importorskip("keithley2600")
        from analogmem.instrument import TspBench, TspEmulatorServer
    from analogmem.cli import main as analogmem_main

    assert _run("plan", "--device", CARD, "--rows", "16", "--cols", "16", "--levels", "4", "--seed", "1",
                "--tolerance-rel", "0.08", "--out", str(tmp_path / "plan.csv")) == 0
    plan = pd.read_csv(tmp_path / "plan.csv")
    with pytest.raises(CalibrationError, match="not executed"):
        read_plan_results(tmp_path / "plan.csv")
    cfg = BenchConfig(rows=16, cols=16, model="2636B")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with TspEmulatorServer(CARD, rows=16, cols=16, seed=4) as ts, TspBench(ts.resource, device=CARD,
                                                                               config=cfg) as tb:
            verify = WriteVerify(max_pulses=20, tolerance_rel=0.08)
            rep = tb.program(plan["target_S"].to_numpy(), addresses=plan["cell"].to_numpy(), verify=verify)
            g = tb.read(addresses=plan["cell"].to_numpy())
    plan["read_value_S"], plan["pulses"], plan["success"] = g, rep.pulses, rep.success
    plan["time_s"], plan["device"] = 0.0, "tester-1"
    plan.to_csv(tmp_path / "done.csv", index=False)
    tidy = plan_results_data(tmp_path / "done.csv")
    assert list(tidy.columns[:2]) == ["target_S", "read_value_S"] and len(tidy) == 256
    wv = plan_results_data(tmp_path / "done.csv", "write-verify")
    assert sorted(set(wv["target_level"])) == [0, 1, 2, 3] and (wv["window_lo_ohm"] < wv["window_hi_ohm"]).all()
    assert analogmem_main(["calibrate", str(tmp_path / "done.csv"), "--out", str(tmp_path / "card.toml"),
                           "--name", "from-plan", "--min-reads", "20"]) == 0
    assert "from-plan" in (tmp_path / "card.toml").read_text()
    # results returned separately, keyed by plan_step
    res = plan[["plan_step", "read_value_S"]].copy()
    merged = read_plan_results(tmp_path / "plan.csv", _write(tmp_path / "res.csv", res))
    np.testing.assert_allclose(merged["read_value_S"], g)
    bad = res.assign(plan_step=res["plan_step"] + 10_000)
    with pytest.raises(CalibrationError, match="not in the plan"):
        read_plan_results(tmp_path / "plan.csv", _write(tmp_path / "bad.csv", bad))


def _write(path, df):
    df.to_csv(path, index=False)
    return path
