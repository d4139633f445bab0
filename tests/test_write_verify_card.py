"""The calibrated pulse-response write-verify models and the rram-radar card (issues #8, #16).

On the shared RADAR data: the card's shared write-verify model, emulated run by run, against
the data it was fitted to; the emulated post-bake spread per level within 15 % of the
measured one; the shipped card is the optimum of the fit. The per-window
(``geometric-mixture``) model of the first RADAR card still loads and runs. The shared model's own
tests (parameter recovery, unseen windows, card fields) are in ``test_pulse_response.py``,
its out-of-sample check is ``scripts/cards/loeo_write_verify.py``."""

from __future__ import annotations

import importlib
from pathlib import Path

import numpy as np
import pytest

import analogmem
from analogmem import CalibrationError, DeviceCardError, EmulatedBench, TargetRangeError, WriteVerify
from analogmem.calibrate.write_verify import fit_geometric_mixture, fit_write_verify, read_write_verify
from analogmem.emulator.cells import parse_card
from stats_helpers import SHARED_DATA

RADAR = SHARED_DATA / "rram-radar"
needs_data = pytest.mark.skipif(not RADAR.exists(), reason="../shared/data not present")
ROOT = Path(__file__).resolve().parents[1]
#: Share of (run, level) pairs of writetest3, writetest4 and ISPP 0.1 V whose emulated mean
#: pulses the card puts within 20 % of the data (16 of 20 with the shipped card and seed 0;
#: a shared model does not reproduce every window of every run — scripts/cards/README.md has
#: the full table).
IN_SAMPLE_WITHIN_20 = 0.75


def _script(name: str):
    return importlib.import_module(f"scripts.cards.{name}")


@pytest.fixture(scope="module")
def tables(tmp_path_factory):
    if not RADAR.exists():
        pytest.skip("../shared/data not present")
    out = tmp_path_factory.mktemp("radar")
    _script("convert_radar").main([str(RADAR), str(out)])
    return out


@pytest.fixture(scope="module")
def radar():
    return analogmem.load_device("rram-radar")


# ----------------------------------------------------------------------------- the model
def test_card_verify_kernel_equals_reference(card_text):
    """Kernels and the cell-by-cell numpy reference draw the same numbers (stuck cells too)."""
    text = card_text("rram-radar").replace("p_stuck_low = 0.0", "p_stuck_low = 0.01").replace(
        "p_stuck_high = 0.0", "p_stuck_high = 0.01")
    dev = parse_card(text, "rram-radar")
    pr = dev.write_verify
    n = 70_000  # two chunks
    level = np.random.default_rng(3).integers(0, pr.n_levels, n)
    targets = np.exp([np.interp(0.5, pr.probabilities, pr.log_g_quantiles[k]) for k in level])
    vf = WriteVerify.card(max_pulses=150)  # a budget that makes some cells fail (about 36 % of first programs)
    fast = EmulatedBench(dev, n, seed=5, n_threads=2)
    slow = EmulatedBench(dev, n, seed=5, backend="numpy")
    rf, rs = fast.program(targets, verify=vf), slow.program(targets, verify=vf)
    np.testing.assert_array_equal(rf.pulses, rs.pulses)
    np.testing.assert_array_equal(rf.success, rs.success)
    assert not rf.success[fast.stuck != 0].any() and (rf.pulses[fast.stuck != 0] == 150).all()
    assert 0 < (~rf.success.astype(bool)).mean() < 0.5
    for key, value in fast.cell_state().items():
        np.testing.assert_allclose(value, slow.cell_state()[key], rtol=1e-12, atol=1e-24, err_msg=key)
    # verified cells lie in their windows; bit-identical on 1 thread
    ok = (rf.success == 1)
    g = fast.cell_state()["g_prog"]
    lo, hi = np.array(pr.window_lo_S)[level], np.array(pr.window_hi_S)[level]
    assert np.all((g[ok] >= lo[ok] * (1 - 1e-9)) & (g[ok] <= hi[ok] * (1 + 1e-9)))
    one = EmulatedBench(dev, n, seed=5, n_threads=1)
    np.testing.assert_array_equal(one.program(targets, verify=vf).pulses, rf.pulses)


def test_pulse_counts_follow_the_mixture_law(radar):
    """Per level: emulated mean of min(T, M) and success rate match the closed form of the
    card's geometric mixture (PulseResponse.mean_pulses / success_probability) within 5
    standard errors, and the pulse distribution passes a chi-square test against it."""
    from scipy import stats

    pr = radar.write_verify.table()
    n, budget = 40_000, 150
    for level in (1, 6, 7):
        target = float(np.exp(np.interp(0.5, pr.probabilities, pr.log_g_quantiles[level])))
        rep = EmulatedBench(radar, n, seed=level).program(np.full(n, target), verify=WriteVerify.card(budget))
        t = rep.pulses.astype(float)
        assert abs(t.mean() - pr.mean_pulses(level, budget)) < 5 * t.std() / np.sqrt(n)
        p_ok = pr.success_probability(level, budget)
        assert abs(rep.success.mean() - p_ok) < 5 * np.sqrt(p_ok * (1 - p_ok) / n) + 1e-12
        # chi-square on bins of the pulse count, from the mixture's survival function
        edges = np.unique(np.quantile(t, np.linspace(0, 1, 12)).astype(int))
        off = pr.offset_pulses[level]

        def surv(x):
            x = np.asarray(x, dtype=float)
            return sum(w * np.where(x < off, 1.0, (1 - p) ** (x - off + 1))
                       for w, p in zip(pr.weights[level], pr.p_hit[level]))

        cuts = np.concatenate([edges[:-1], [budget]])
        cdf_hi = np.append(1 - surv(cuts[1:-1] - 1), 1.0)
        expected = np.diff(np.concatenate([[0.0], cdf_hi])) * n
        observed = np.array([np.sum((t >= a) & (t < b)) for a, b in zip(cuts[:-1], cuts[1:])])
        observed[-1] += np.sum(t >= budget)
        keep = expected > 5
        chi2 = np.sum((observed[keep] - expected[keep]) ** 2 / expected[keep])
        assert stats.chi2.sf(chi2, keep.sum() - 1) > 1e-3, (level, observed, expected)


def test_geometric_mixture_round_trip():
    """Data drawn from a known censored 2-component mixture give back its parameters
    (within 5 standard errors of a 10,000-cell fit, computed from repeat fits' spread)."""
    rng = np.random.default_rng(0)
    w, p, off, budget = np.array([0.65, 0.35]), np.array([0.3, 0.015]), 2, 250
    fits = []
    for rep in range(4):
        n = 10_000
        k = rng.choice(2, n, p=w)
        t = off + rng.geometric(p[k]) - 1
        ok = t <= budget
        fits.append(fit_geometric_mixture(np.minimum(t, budget), ok, max_components=3))
    for f in fits:
        assert len(f.weights) == 2 and f.offset == off
    est = np.array([[f.weights[0], f.p_hit[0], f.p_hit[1]] for f in fits])
    sd = est.std(axis=0, ddof=1)
    assert np.all(np.abs(est.mean(axis=0) - [w[0], p[0], p[1]]) < 5 * sd / 2 + 1e-3), (est, sd)


def test_fit_errors_name_the_problem():
    import pandas as pd

    good = pd.DataFrame({"target_level": [0] * 30, "window_lo_ohm": 1e3, "window_hi_ohm": 2e3,
                         "read_value_ohm": 1.5e3, "pulses": 3, "success": True})
    with pytest.raises(CalibrationError, match=r"missing column\(s\) \['pulses'\]"):
        read_write_verify(good.drop(columns="pulses"))
    bad = good.copy()
    bad.loc[7, "pulses"] = -1
    with pytest.raises(CalibrationError, match=r"column 'pulses', row 7"):
        read_write_verify(bad)
    bad = good.copy()
    bad.loc[4, "read_value_ohm"] = 0.0
    with pytest.raises(CalibrationError, match=r"column 'read_value_ohm', row 4"):
        read_write_verify(bad)
    with pytest.raises(CalibrationError, match=r"level 0 has 30 cells \(at least 50 needed\)"):
        read_write_verify(good, min_cells_per_level=50)
    two = good.copy()
    two.loc[3, "window_hi_ohm"] = 2.5e3
    two.loc[40] = two.loc[3].copy()
    two.loc[40, ["target_level", "window_lo_ohm", "window_hi_ohm"]] = [1, 3e3, 4e3]
    two.loc[41] = two.loc[40].copy()
    two.loc[41, "window_hi_ohm"] = 5e3
    with pytest.raises(CalibrationError, match=r"the per-window model needs one window per level, but level 0: "
                                               r"\[1000, 2000\] Ohm, \[1000, 2500\] Ohm; level 1: \[3000, 4000\] Ohm, "
                                               r"\[3000, 5000\] Ohm: fit one set of windows"):
        fit_write_verify(two, min_cells_per_level=1)
    with pytest.raises(CalibrationError, match="no cell of this level succeeded"):
        fit_geometric_mixture([5, 6], [False, False])


def test_card_verify_refuses_bad_use(radar, card_text):
    pr = radar.write_verify
    bench = EmulatedBench(radar, 4, seed=0)
    before = bench.cell_state()
    gap = 0.5 * (pr.window_hi_S[1] + pr.window_lo_S[0])  # between the windows of levels 1 and 0
    assert (pr.level_of([gap]) < 0).all()
    with pytest.raises(TargetRangeError, match=r"targets\[2\] = .* lies in none of the card's 8 verify windows"):
        bench.program(np.array([pr.window_lo_S[3]] * 2 + [gap, pr.window_lo_S[3]]), verify=WriteVerify.card())
    for k, v in bench.cell_state().items():
        np.testing.assert_array_equal(v, before[k])
    wan = EmulatedBench(analogmem.load_device("rram-wan2022"), 4, seed=0)
    with pytest.raises(DeviceCardError, match=r"no \[write_verify\] pulse-response model"):
        wan.program(np.full(4, 2e-5), verify=WriteVerify.card())
    with pytest.raises(ValueError, match="windows must be 'tolerance' or 'card'"):
        WriteVerify(windows="levels")
    text = card_text("rram-radar")
    bad = text.replace("model = \"shared-geometric-mixture\"", "model = \"shared-geometric-mixture\"\nbogus = 1")
    with pytest.raises(DeviceCardError, match=r"\[write_verify\]: unknown field\(s\) bogus"):
        parse_card(bad, "r.toml")


def test_geometric_mixture_cards_still_load_and_program_only_their_windows(tmp_path):
    """A per-window card (the first RADAR card's model) loads, programs its windows with its closed form, and
    refuses a window it was not fitted on, saying which model would take it."""
    import pandas as pd
    import tomli_w

    rng = np.random.default_rng(4)
    rows = []
    for level, (lo, hi, p) in enumerate([(1e4, 1.1e4, 0.2), (2e4, 2.2e4, 0.05)]):
        t = rng.geometric(p, 2000) - 1
        rows.append(pd.DataFrame({"target_level": level, "window_lo_ohm": lo, "window_hi_ohm": hi,
                                  "read_value_ohm": rng.uniform(lo, hi, 2000), "pulses": t, "success": True}))
    fit = fit_write_verify(pd.concat(rows), max_components=1)
    dev = parse_card(tomli_w.dumps(fit.card("per-window", "synthetic")), "per-window.toml")
    pr = dev.write_verify
    assert pr.model == "geometric-mixture" and pr.n_levels == 2
    n = 20_000
    target = 1.0 / 1.05e4
    rep = EmulatedBench(dev, n, seed=1).program(np.full(n, target), verify=WriteVerify.card(max_pulses=50))
    assert abs(rep.pulses.mean() - pr.mean_pulses(0, 50)) < 5 * rep.pulses.std() / np.sqrt(n)
    same = EmulatedBench(dev, n, seed=1).program(np.full(n, target), verify=WriteVerify.card(
        max_pulses=50, windows=[(pr.window_lo_S[0], pr.window_hi_S[0])]))
    np.testing.assert_array_equal(same.pulses, rep.pulses)
    with pytest.raises(TargetRangeError, match=r"is not one of this geometric-mixture card's 2 fitted windows \(a "
                                               r"shared-geometric-mixture card emulates any window in its range\)"):
        EmulatedBench(dev, 4, seed=0).program(np.full(4, target), verify=WriteVerify.card(windows=[(9e-5, 9.6e-5)]))


# ----------------------------------------------------------------------------- the shared data
@needs_data
def test_radar_card_reproduces_write_verify_traces(tables, radar):
    """The card's shared model, emulated run by run (each run's windows, start states,
    scheme and fitted effect, through EmulatedBench), against the traces it was fitted to:
    success within 2 points at every (run, level); mean pulses within 20 % at most pairs
    (IN_SAMPLE_WITHIN_20 of them; a shared model does not reproduce every window of every
    run — see scripts/cards/README.md for the table)."""
    fit = _script("fit_radar_card")
    wv = read_write_verify(tables / "radar-write-verify.csv", min_cells_per_level=1)
    effects = radar.fit_report["write_verify"]["run_effects"]
    runs = ["writetest3", "writetest4", "ispp-2bpc-wlstep0.100"]
    rows = fit.emulate_runs(radar, wv[wv.experiment.isin(runs)], effects)
    assert len(rows) == 8 + 8 + 4
    for r in rows:
        assert abs(r["success_rate_emulated"] - r["success_rate_data"]) < 0.02, r
    within = np.mean([abs(r["pulses_mean_emulated"] / r["pulses_mean_data"] - 1) <= 0.2 for r in rows])
    assert within >= IN_SAMPLE_WITHIN_20, rows


@needs_data
def test_radar_card_reproduces_post_bake_spread(tables, radar):
    """Must show: emulated post-bake spread per level within 15 % of the measured one, for
    the bakes the card's time axis was fitted to (30 min at 100 °C and at 120 °C); the
    bake is emulated through the card's Arrhenius retention (EmulatedBench.bake).

    One emulated chip has as many cells per level as the data (128 in expt 3), so its
    spread alone scatters by 1/sqrt(2 * 127) = 6.3 % (relative standard error of a standard
    deviation): a single seed would test the seed as much as the card. The emulated
    variance is pooled over 8 chips (seeds 0..7; 2.2 % standard error), so the 15 % bound
    is on the card's model plus the data's own sampling error."""
    import pandas as pd

    fit = _script("fit_radar_card")
    reads = pd.read_csv(tables / "radar-reads.csv")
    for exp in ("radar-expt3", "radar-expt4"):
        chips = [fit.emulate_bake(radar, reads, exp, seed=s) for s in range(8)]
        for rows in zip(*chips):
            pooled_S = float(np.sqrt(np.mean([r["std_postbake_emulated_S"] ** 2 for r in rows])))
            assert abs(pooled_S / rows[0]["std_postbake_data_S"] - 1) < 0.15, (rows[0], pooled_S)


@needs_data
def test_shipped_card_is_what_the_fit_gives(tables, card_text):
    """devices/rram-radar.toml is what scripts/cards/fit_radar_card.py gives: its write-verify
    parameters are the optimum of the fit on the converted traces — the Newton step from
    them to the optimum is below 0.05 standard errors (in the metric of the fit's
    covariance; a parameter moved by 0.3 standard errors gives about 0.3; the shared model
    is fitted by L-BFGS, so the test asks for the optimum, not for the same floats) — and
    every other table, rebuilt from the data around them, agrees field by field within the
    tolerance card_tolerances.RRAM_RADAR derives for it (settings and shapes equal,
    arithmetic to 1e-12, the Arrhenius fit to 1/1000 of its standard error)."""
    import tomllib

    from analogmem.calibrate.pulse_response import stationarity
    from card_tolerances import RRAM_RADAR, compare_cards

    shipped_dev = analogmem.load_device("rram-radar")
    wv = read_write_verify(tables / "radar-write-verify.csv", min_cells_per_level=1)
    cov = shipped_dev.fit_report["write_verify"]["covariance"]
    assert stationarity(shipped_dev.write_verify, wv, cov) < 0.05
    fit = _script("fit_radar_card")
    text, _ = fit.build_card(tables, ["radar-expt3", "radar-expt4"], keep=shipped_dev)
    new, shipped = tomllib.loads(text), tomllib.loads(card_text("rram-radar"))
    compare_cards(new, shipped, ("write_verify", "relaxation", "retention", "range", "programming"), RRAM_RADAR)


def test_card_comparison_accepts_fit_noise_and_catches_real_changes(card_text):
    """The per-field tolerances of the shipped-card test: the issue's cross-machine
    difference (Arrhenius times 5.4e-8 relative, E_a moved within its xtol) passes; a change
    of 1 % of a standard error, or any change of data arithmetic beyond rounding, fails."""
    import copy
    import tomllib

    from card_tolerances import RRAM_RADAR, compare_cards

    tables = ("write_verify", "relaxation", "retention", "range", "programming")
    shipped = tomllib.loads(card_text("rram-radar"))

    def moved(path, factor):
        card = copy.deepcopy(shipped)
        table, key = path.split(".")
        v = card[table][key]
        card[table][key] = ([[x * factor for x in row] for row in v] if isinstance(v[0], list) else
                            [x * factor for x in v]) if isinstance(v, list) else v * factor
        return card

    se_ea = shipped["retention"]["activation_energy_stderr_eV"] / shipped["retention"]["activation_energy_eV"]
    compare_cards(moved("relaxation.times_s", 1 + 5.4e-8), shipped, tables, RRAM_RADAR)
    compare_cards(moved("retention.activation_energy_eV", 1 + 1e-8), shipped, tables, RRAM_RADAR)
    compare_cards(moved("write_verify.class_logit_p", 1 + 1e-7), shipped, tables, RRAM_RADAR)
    for path, factor in (("retention.activation_energy_eV", 1 + 0.01 * se_ea), ("relaxation.times_s", 1.001),
                         ("write_verify.class_logit_weight", 1.001), ("relaxation.sigma_uS", 1 + 1e-9),
                         ("write_verify.window_lo_S", 1 + 1e-9)):
        with pytest.raises(AssertionError):
            compare_cards(moved(path, factor), shipped, tables, RRAM_RADAR)
    changed = copy.deepcopy(shipped)
    changed["write_verify"]["schemes"]["radar"]["max_pulses"] += 1
    with pytest.raises(AssertionError, match="exact entries differ"):
        compare_cards(changed, shipped, tables, RRAM_RADAR)
