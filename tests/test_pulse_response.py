"""The shared pulse-response model of write-verify (scripts/cards/README.md, "rram-radar"): card, emulation, fit.

The model (``analogmem.emulator.pulse_response``): per programming operation, pulses needed
``X ~ Σ_k π_k Geometric₀(p_k)`` with ``logit p_k = α_k + Σ β_j x_j + s_scheme + τ r`` and
``π = softmax(γ + Σ δ_j z_j + w_scheme)``, the covariates computed from the window, the
start state and the scheme; ``r ~ N(0, 1)`` per run."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import tomli_w

from analogmem import CalibrationError, DeviceCardError, EmulatedBench, TargetRangeError, WriteVerify
from analogmem.calibrate.pulse_response import expected_pulses, fit_pulse_response, response_table, stationarity
from analogmem.emulator.cells import parse_card

#: A known shared model: two classes (fast, slow), window position and width, first program
#: vs re-program, a run-to-run effect; verified values uniform in ln g over the window.
TRUTH = {"model": "shared-geometric-mixture", "window_lo_S": [5e-5, 1e-4, 2e-4], "window_hi_S": [5.3e-5, 1.03e-4, 2.1e-4],
         "range_S": [1e-5, 3e-4], "g_ref_S": 1e-4, "class_logit_p": [1.5, -3.0], "class_logit_weight": [0.0, 0.4],
         "run_sd": 0.3, "p_effects": {"position": -0.5, "ln_width": 0.8, "fresh": -1.0},
         "weight_effects": {"fresh": [0.8]},
         "probabilities": [0.0, 0.5, 1.0],
         "schemes": {"radar": {"max_pulses": 500, "position_quantiles": [0.0, 0.5, 1.0],
                               "open_above_log_quantiles": [0.0, 0.1, 0.2], "open_below_log_quantiles": [0.0, 0.1, 0.2]}}}
#: Three window sets (S): none equals another, and none is the card's own levels.
WINDOW_SETS = [[(5e-5, 5.3e-5), (1e-4, 1.03e-4), (2e-4, 2.1e-4)], [(6e-5, 6.6e-5), (1.2e-4, 1.3e-4), (1.8e-4, 1.85e-4)],
               [(4e-5, 4.1e-5), (9e-5, 9.5e-5), (2.4e-4, 2.6e-4)]]


def card_text(wv: dict) -> str:
    card = {"card": {"name": "synthetic-wv", "schema_version": 1, "technology": "RRAM", "input": "conductance"},
            "source": {"citation": "synthetic, tests/test_pulse_response.py"},
            "range": {"g_min_S": 0.0, "g_max_S": 3e-4, "clip_min_S": 0.0, "clip_max_S": math.inf},
            "programming": {"model": "polynomial", "g_ref_S": 3e-4, "coefficients_uS": [1.0]},
            "drift": {"model": "none"}, "read_noise": {"model": "none"}, "relaxation": {"model": "none"},
            "faults": {"p_stuck_low": 0.0, "p_stuck_high": 0.0}, "write_verify": wv}
    return tomli_w.dumps(card)


@pytest.fixture(scope="module")
def truth():
    return parse_card(card_text(TRUTH), "synthetic-wv")


def emulated_traces(device, n_runs: int = 9, n_cells: int = 350, seed: int = 0) -> tuple[pd.DataFrame, np.ndarray]:
    """Tidy traces programmed on ``device`` through ``EmulatedBench`` with the three window
    sets (one per run, in turn), first programs and re-programs, and a run effect per run."""
    rng = np.random.default_rng(seed)
    effects = rng.standard_normal(n_runs)
    rows = []
    for run in range(n_runs):
        for level, (lo, hi) in enumerate(WINDOW_SETS[run % 3]):
            for prior in (0, 1, 3):
                bench = EmulatedBench(device, n_cells, seed=[seed, run, level, prior])
                rep = bench.program(np.full(n_cells, math.sqrt(lo * hi)), verify=WriteVerify.card(
                    windows=[(lo, hi)], prior_programs=prior, run_effect=float(effects[run])))
                rows.append(pd.DataFrame({
                    "target_level": 2 - level, "window_lo_ohm": 1 / hi, "window_hi_ohm": 1 / lo,
                    "read_value_ohm": 1 / bench.cell_state()["g_prog"], "pulses": rep.pulses, "success": rep.success,
                    "experiment": f"run{run}", "prior_programs": prior}))
    return pd.concat(rows, ignore_index=True), effects


def test_fit_recovers_known_parameters_from_emulated_traces_with_several_window_sets(truth):
    """Traces emulated from a known card (9 runs, three window sets, three start states, 28k
    operations) give back every parameter within 4 standard errors, and the covariates the
    card does not use come out 0 within 4 standard errors; the run effects correlate with the
    drawn ones; verified values are uniform in their windows as the card says."""
    df, effects = emulated_traces(truth)
    fit = fit_pulse_response(df, classes=2, g_ref_S=1e-4)
    est = fit.parameters
    expect = {"class_logit_p[0]": 1.5, "class_logit_p[1]": -3.0, "p_effect:position": -0.5,
              "p_effect:ln_width": 0.8, "p_effect:fresh": -1.0, "class_logit_weight[1]": 0.4,
              "weight_effect:fresh[1]": 0.8, "p_effect:position_sq": 0.0, "p_effect:ln_prior": 0.0,
              "p_effect:fresh_position": 0.0, "weight_effect:ln_prior[1]": 0.0}
    for name, value in expect.items():
        v, se = est[name]
        assert abs(v - value) < 4 * se, (name, v, se, value)
    v, se = est["log_run_sd"]
    assert abs(v - math.log(0.3)) < 4 * se + abs(math.log(np.std(effects, ddof=1))), (v, se)
    assert np.corrcoef(fit.run_effects, effects)[0, 1] > 0.9
    q = np.interp([0.25, 0.5, 0.75], fit.probabilities, fit.final_quantiles["default"][0])
    np.testing.assert_allclose(q, [0.25, 0.5, 0.75], atol=0.03)
    # the fitted parameters are the optimum of the data's likelihood; an edited one is not
    assert stationarity(fit.response(), df, fit.covariance) < 0.01
    r = fit.response()
    edited = type(r)(**{**r.__dict__, "p_effects": {**r.p_effects, "ln_width": r.p_effects["ln_width"]
                                                    + 2 * est["p_effect:ln_width"][1]}})
    assert stationarity(edited, df, fit.covariance) > 1.0


def test_unseen_window_inside_range_is_accepted_and_follows_the_model(truth):
    """A window the card has no level for (inside its range) programs; the pulse counts match
    the model's closed form (mean and success within 5 standard errors) and verified values
    lie in the window. Target ± tolerance works the same way; a window outside the range and
    a target outside every window are refused before anything changes."""
    lo, hi = 1.5e-4, 1.58e-4
    n = 40_000
    bench = EmulatedBench(truth, n, seed=3)
    rep = bench.program(np.full(n, 1.54e-4), verify=WriteVerify.card(windows=[(lo, hi)], max_pulses=40))
    w, p = truth.write_verify.class_probabilities([lo], [hi])
    m, ok = expected_pulses(w[0], p[0], np.array(40.0))
    t = rep.pulses.astype(float)
    assert abs(t.mean() - m) < 5 * t.std() / math.sqrt(n)
    assert abs(rep.success.mean() - ok) < 5 * math.sqrt(ok * (1 - ok) / n)
    g = bench.cell_state()["g_prog"][rep.success]
    assert g.min() >= lo and g.max() <= hi
    # target ± 2 %: each distinct target its own window
    targets = np.repeat([6e-5, 1.1e-4, 2.2e-4], 2000)
    rep = EmulatedBench(truth, targets.size, seed=4).program(targets, verify=WriteVerify.card(tolerance_rel=0.02))
    for v in (6e-5, 1.1e-4, 2.2e-4):
        sel = targets == v
        w, p = truth.write_verify.class_probabilities([v * 0.98], [v * 1.02])
        m, _ = expected_pulses(w[0], p[0], np.array(500.0))
        t = rep.pulses[sel].astype(float)
        assert abs(t.mean() - m) < 5 * t.std() / math.sqrt(sel.sum())
    bench = EmulatedBench(truth, 4, seed=0)
    before = bench.cell_state()
    with pytest.raises(TargetRangeError, match=r"window \[0.00029, 0.00031\] S lies outside the card's write-verify "
                                               r"range \[1e-05, 0.0003\] S"):
        bench.program(np.full(4, 2.95e-4), verify=WriteVerify.card(windows=[(2.9e-4, 3.1e-4)]))
    with pytest.raises(TargetRangeError, match=r"targets\[0\] = 0.0002 S lies in none of the given 1 verify windows"):
        bench.program(np.full(4, 2e-4), verify=WriteVerify.card(windows=[(lo, hi)]))
    with pytest.raises(TargetRangeError, match="pulse scheme 'ispp' is not on the card"):
        bench.program(np.full(4, 1.54e-4), verify=WriteVerify.card(windows=[(lo, hi)], scheme="ispp"))
    for k, v in bench.cell_state().items():
        np.testing.assert_array_equal(v, before[k])
    with pytest.raises(ValueError, match="give windows or a tolerance, not both"):
        WriteVerify.card(windows=[(lo, hi)], tolerance_rel=0.1)


def test_kernel_equals_reference_for_any_windows(truth):
    """The kernels and the numpy reference draw the same numbers for a call with its own
    windows, a re-program, a run effect, and for target ± tolerance."""
    n = 70_000  # two chunks
    rng = np.random.default_rng(1)
    wins = [(4e-5, 4.4e-5), (1.2e-4, 1.3e-4), (2.5e-4, 2.9e-4)]
    targets = np.array([math.sqrt(a * b) for a, b in wins])[rng.integers(0, 3, n)]
    for vf in (WriteVerify.card(windows=wins, prior_programs=2, run_effect=-1.3, max_pulses=30),
               WriteVerify.card(tolerance_S=1e-6)):
        fast = EmulatedBench(truth, n, seed=5, n_threads=2).program(targets, verify=vf)
        slow_bench = EmulatedBench(truth, n, seed=5, backend="numpy")
        slow = slow_bench.program(targets, verify=vf)
        np.testing.assert_array_equal(fast.pulses, slow.pulses)
        np.testing.assert_array_equal(fast.success, slow.success)


def test_shared_card_fields_are_checked_one_by_one():
    """Every field of a shared-geometric-mixture table is validated, the error naming it."""
    base = card_text(TRUTH)
    parse_card(base, "ok.toml")
    cases = [
        ("run_sd = 0.3", "run_sd = -0.1", r"\[write_verify\]\.run_sd: -0.1 is outside"),
        ("class_logit_weight = [\n    0.0,", "class_logit_weight = [\n    0.5,", r"class_logit_weight: expected 2 "),
        ("ln_width = 0.8", "ln_wdth = 0.8", r"\[write_verify\.p_effects\]: unknown field\(s\) ln_wdth"),
        ("position_quantiles = [\n    0.0,\n    0.5,\n    1.0,", "position_quantiles = [\n    0.0,\n    0.5,\n    1.5,",
         r"\[write_verify\.schemes\.radar\]\.position_quantiles: must be non-decreasing within \[0, 1\]"),
        ("range_S = [\n    1e-05,", "range_S = [\n    1e-03,", r"\[write_verify\]\.range_S: expected \[lo, hi\]"),
        ("max_pulses = 500", "max_pulses = 0", r"\[write_verify\.schemes\.radar\]\.max_pulses: 0 is outside"),
        ("fresh = [\n    0.8,\n]", "fresh = [\n    0.8,\n    0.1,\n]", r"weight_effects\]\.fresh: expected 1 numbers"),
    ]
    for old, new, msg in cases:
        assert old in base, old
        with pytest.raises(DeviceCardError, match=msg):
            parse_card(base.replace(old, new), "bad.toml")
    assert "model = \"shared-geometric-mixture\"" in base
    with pytest.raises(DeviceCardError, match=r"\[write_verify\]\.model: 'shared' is not one of"):
        parse_card(base.replace("model = \"shared-geometric-mixture\"", "model = \"shared\""), "bad.toml")


def test_calibrate_reports_every_overlapping_window_and_the_fix(truth, tmp_path):
    """A run holding two window sets is refused with every overlapping pair named and the fix;
    the same rows as two runs fit."""
    df, _ = emulated_traces(truth, n_runs=3, n_cells=60)
    shifted = df[df.experiment == "run0"].assign(experiment="run1b")
    shifted[["window_lo_ohm", "window_hi_ohm"]] *= 1.01  # a second window set, each window overlapping one of run0's
    mixed = pd.concat([df, shifted.assign(experiment="run0")], ignore_index=True)
    with pytest.raises(CalibrationError) as err:
        fit_pulse_response(mixed, classes=2, stderr=False)
    msg = str(err.value)
    assert msg.startswith("3 pair(s) of overlapping verify windows within a run: experiment 'run0': ")
    for lo, hi in WINDOW_SETS[0]:
        assert f"[{1 / hi:g}, {1 / lo:g}] Ohm" in msg and f"[{1.01 / hi:g}, {1.01 / lo:g}] Ohm" in msg
    assert "give each window set its own run (an 'experiment' column" in msg
    fit = fit_pulse_response(pd.concat([df, shifted], ignore_index=True), classes=2, stderr=False)
    assert len(fit.runs) == 4


def test_calibrate_command_writes_a_shared_card_and_a_plot_only_when_asked(truth, tmp_path):
    """`analogmem calibrate --model write-verify` on traces with several window sets writes a
    shared card that loads and programs a window none of the runs used; no plot without
    --plot, one with it."""
    import json

    from analogmem.cli import main

    df, _ = emulated_traces(truth, n_runs=4, n_cells=150, seed=2)
    df.to_csv(tmp_path / "wv.csv", index=False)
    out = tmp_path / "wv.toml"
    assert main(["calibrate", str(tmp_path / "wv.csv"), "--model", "write-verify", "--out", str(out),
                 "--json", str(tmp_path / "wv.json")]) == 0
    assert not list(tmp_path.glob("*.png"))
    from analogmem import load_device

    dev = load_device(out)
    assert dev.write_verify.model == "shared-geometric-mixture" and len(dev.write_verify.schemes) == 1
    report = json.loads((tmp_path / "wv.json").read_text())
    assert report["model"] == "shared-geometric-mixture" and len(report["report"]) == 4 * 3
    rep = EmulatedBench(dev, 1000, seed=0).program(np.full(1000, 1.1e-4),
                                                   verify=WriteVerify.card(windows=[(1.05e-4, 1.15e-4)]))
    assert rep.success.mean() > 0.9
    assert main(["calibrate", str(tmp_path / "wv.csv"), "--model", "write-verify", "--out", str(out),
                 "--plot", str(tmp_path / "wv.png")]) == 0
    assert (tmp_path / "wv.png").read_bytes()[:4] == b"\x89PNG"
    assert response_table(dev.write_verify)["model"] == "shared-geometric-mixture"
