"""Run-to-run variation of write-verify as a predictive distribution (scripts/cards/README.md, "Run-to-run variation").

A new run's shift of logit p is ``b + w_L`` (between-run ``b ~ N(0, σ_b²)``, within-run,
level-to-level ``w_L ~ N(0, σ_w²)``); an emulated bench is one campaign and samples them
from its seed (``WriteVerify.card(run_effect="sample")``). These tests emulate campaigns
from a known card, recover σ_b and σ_w with the estimator the card is calibrated with
(:func:`analogmem.calibrate.run_effect.estimate_run_variation`), and check that the
prediction intervals cover emulated campaigns at their nominal rates."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
from test_pulse_response import TRUTH, WINDOW_SETS, card_text

from analogmem import DeviceCardError, EmulatedBench, SettingError, TargetRangeError, WriteVerify
from analogmem.calibrate.run_effect import (PairModel, estimate_run_variation, pair_models, prediction_intervals,
                                            sampling_variance_log_mean, truncated_moments)
from analogmem.emulator.cells import parse_card
from analogmem.emulator.run_variation import campaign_shifts

SD_BETWEEN, SD_WITHIN = 0.4, 0.2
WINDOWS = [w for ws in WINDOW_SETS for w in ws]  # nine disjoint windows
N_CELLS = 150  # per window and campaign


@pytest.fixture(scope="module")
def card():
    wv = {**TRUTH, "run_variation": {"sd_between": SD_BETWEEN, "sd_within": SD_WITHIN,
                                     "replicates_between": [SD_BETWEEN], "replicates_within": [SD_WITHIN],
                                     "method": "known (test)"}}
    return parse_card(card_text(wv), "synthetic-run-variation")


def campaign(device, seed, n=N_CELLS, run_effect="sample"):
    """One emulated campaign: every window of WINDOWS programmed once per cell (first programs)."""
    targets = np.repeat([math.sqrt(lo * hi) for lo, hi in WINDOWS], n)
    bench = EmulatedBench(device, targets.size, seed=seed)
    rep = bench.program(targets, verify=WriteVerify.card(windows=WINDOWS, run_effect=run_effect))
    return rep.pulses.reshape(len(WINDOWS), n), rep.success.reshape(len(WINDOWS), n), bench


def tidy(pulses, success, run):
    """The campaign as a tidy write-verify table (what pair_models reads)."""
    rows = []
    for j, (lo, hi) in enumerate(WINDOWS):
        rows.append(pd.DataFrame({"target_level": j, "window_lo_ohm": 1 / hi, "window_hi_ohm": 1 / lo,
                                  "read_value_ohm": 2 / (lo + hi), "pulses": pulses[j], "success": success[j],
                                  "experiment": run, "prior_programs": 0, "scheme": "radar", "step_V": np.nan,
                                  "max_pulses": np.nan, "cell": np.arange(pulses.shape[1])}))
    return pd.concat(rows, ignore_index=True)


@pytest.fixture(scope="module")
def models(card):
    df = tidy(np.zeros((len(WINDOWS), 2), dtype=int), np.ones((len(WINDOWS), 2), dtype=bool), "r")
    return [pair_models(card.write_verify, df)[("r", j)] for j in range(len(WINDOWS))]


def residuals(card, models, seeds):
    """Per (campaign, window): ln(empirical mean / population-centre prediction), J, s², run."""
    e, j, s2, run = [], [], [], []
    for s in seeds:
        pulses, _, _ = campaign(card, s)
        for lvl, m in enumerate(models):
            e.append(math.log(pulses[lvl].mean() / m.moments(0.0)[0][0]))
            j.append(m.slope())
            s2.append(sampling_variance_log_mean(pulses[lvl], np.arange(pulses.shape[1])))
            run.append(s)
    return e, j, s2, run


def test_truncated_moments_match_direct_sums():
    """E[min(X, B)], E[min(X, B)²] and P(X ≤ B) of a geometric mixture against direct sums
    over the support, for budgets small and large, tiny and large p, and no budget."""
    w = np.array([0.3, 0.7])
    for p in ([0.5, 0.02], [1e-7, 0.3], [0.9, 0.9]):
        p = np.array(p)
        for budget in (1, 7, 400, math.inf):
            m1, m2, ok = truncated_moments(w, p, np.array(budget))
            top = 20000 if math.isinf(budget) else int(budget)
            t = np.arange(top + 1)
            pmf = (w[:, None] * p[:, None] * (1 - p[:, None]) ** t[None, :])  # P(X = t)
            mt = np.minimum(t, budget)
            tail = 1 - pmf.sum()  # P(X > top): those spend `budget`
            e1 = (pmf * mt).sum() + (tail * budget if not math.isinf(budget) else 0)
            e2 = (pmf * mt ** 2).sum() + (tail * budget ** 2 if not math.isinf(budget) else 0)
            if math.isinf(budget) and p.min() < 1e-3:
                continue  # the direct sum cannot reach the tail
            np.testing.assert_allclose([m1, m2, ok], [e1, e2, pmf.sum()], rtol=1e-6, atol=1e-9)


def test_sampled_run_effect_is_bit_identical_per_seed_and_differs_between_seeds(card):
    """run_effect='sample': the same seed gives the same pulses and verified values bit for
    bit; seeds differ by their campaign's effect; 'mean' is the default and equals a run
    effect of 0; a window's effect depends on the seed and the window only."""
    a, sa, ba = campaign(card, 11)
    b, sb, bb = campaign(card, 11)
    assert np.array_equal(a, b) and np.array_equal(sa, sb)
    assert np.array_equal(ba.cell_state()["g_prog"], bb.cell_state()["g_prog"])
    # campaigns differ by their effect (σ_b = 0.4 on logit p) far beyond the cells' sampling
    sampled = np.std(np.log([campaign(card, s)[0].mean() for s in range(8)]), ddof=1)
    fixed = np.std(np.log([campaign(card, s, run_effect="mean")[0].mean() for s in range(8)]), ddof=1)
    assert sampled > 3 * fixed, (sampled, fixed)
    m0, _, _ = campaign(card, 11, run_effect="mean")
    z0, _, _ = campaign(card, 11, run_effect=0.0)
    assert np.array_equal(m0, z0)
    assert WriteVerify.card().run_effect == "mean"
    seed = np.random.SeedSequence(5)
    _, u_all = campaign_shifts(card.write_verify, seed, [w[0] for w in WINDOWS], [w[1] for w in WINDOWS])
    _, u_one = campaign_shifts(card.write_verify, seed, [WINDOWS[4][0]], [WINDOWS[4][1]])
    assert u_one[0] == u_all[4]
    with pytest.raises(SettingError, match="run_effect"):
        WriteVerify.card(run_effect="median")
    with pytest.raises(SettingError, match="bench's seed"):
        WriteVerify.card(run_effect="sample").pulse_table(card, np.array([math.sqrt(5e-5 * 5.3e-5)]))


def test_known_between_and_within_run_sd_recovered_from_emulated_campaigns(card, models):
    """40 campaigns emulated with σ_b = 0.4, σ_w = 0.2: the marginal-likelihood estimates lie
    within 3 of their own standard errors (on ln σ) of the truth, and the bootstrap over
    runs' 90 % interval holds the truth. Leaving out the cells' sampling variance would
    inflate σ_w; the estimator subtracts it (checked: σ_w estimated with s² = 0 is larger)."""
    e, j, s2, run = residuals(card, models, range(100, 140))
    v = estimate_run_variation(e, j, s2, run, n_boot=100, seed=1)
    assert abs(math.log(v.sd_between / SD_BETWEEN)) < 3 * v.stderr_log[0], v.summary()
    assert abs(math.log(v.sd_within / SD_WITHIN)) < 3 * v.stderr_log[1], v.summary()
    lo, hi = v.interval("between", 0.99)
    assert lo < SD_BETWEEN < hi
    lo, hi = v.interval("within", 0.99)
    assert lo < SD_WITHIN < hi
    naive = estimate_run_variation(e, j, np.zeros(len(e)), run, n_boot=0)
    assert naive.sd_within > v.sd_within


def test_prediction_intervals_cover_emulated_campaigns_at_nominal(card, models):
    """Intervals from the card's run variation cover the mean pulses of fresh emulated
    campaigns' windows at 50/80/95 %: the coverage over 40 campaigns × 9 windows lies within
    3 cluster standard errors (campaigns as clusters: a campaign's windows share b) of the
    nominal; without the run variation (cells' sampling only) the 80 % interval covers far
    less (the test can fail)."""
    preds = [prediction_intervals(m, card_variation(card), n_cells=N_CELLS, seed=k) for k, m in enumerate(models)]
    bare = [prediction_intervals(m, None, n_cells=N_CELLS, seed=k) for k, m in enumerate(models)]
    hits = {lv: [] for lv in (50, 80, 95)}
    bare80 = []
    for s in range(200, 240):
        pulses, _, _ = campaign(card, s)
        obs = pulses.mean(axis=1)
        for lv in hits:
            hits[lv].append([p["pulses_mean"][f"interval{lv}"][0] <= o <= p["pulses_mean"][f"interval{lv}"][1]
                             for p, o in zip(preds, obs)])
        bare80.append(np.mean([p["pulses_mean"]["interval80"][0] <= o <= p["pulses_mean"]["interval80"][1]
                               for p, o in zip(bare, obs)]))
    for lv, h in hits.items():
        per = np.mean(np.array(h, dtype=float), axis=1)  # per campaign
        cov, se = per.mean(), per.std(ddof=1) / math.sqrt(per.size)
        assert abs(cov - lv / 100) < 3 * se + 0.01, (lv, cov, se)
    assert np.mean(bare80) < 0.5


def card_variation(card):
    from analogmem.calibrate.run_effect import RunVariation

    pr = card.write_verify
    return RunVariation(pr.run_sd_between, pr.run_sd_within, (0.0, 0.0), np.array(pr.run_sd_replicates), 0, 0, 0.0)


def test_run_variation_table_is_validated():
    """A malformed [write_verify.run_variation] is refused naming the field."""
    bad = {**TRUTH, "run_variation": {"sd_between": 0.3, "sd_within": -0.1}}
    with pytest.raises(DeviceCardError, match=r"run_variation\]\.sd_within"):
        parse_card(card_text(bad), "bad")
    bad = {**TRUTH, "run_variation": {"sd_between": 0.3, "sd_within": 0.1, "replicates_between": [0.3],
                                      "replicates_within": []}}
    with pytest.raises(DeviceCardError, match="replicates"):
        parse_card(card_text(bad), "bad")
    bad = {**TRUTH, "run_variation": {"sd_between": 0.3, "sd_within": 0.1, "sd_typo": 1.0}}
    with pytest.raises(DeviceCardError, match="sd_typo"):
        parse_card(card_text(bad), "bad")


def test_pair_model_moments_follow_the_card(card, models):
    """A pair's mean pulses at u = 0 is the card's closed form, and raising u (a faster
    run) lowers it with slope J ≈ −1 for these slow windows."""
    pr = card.write_verify
    for (lo, hi), m in zip(WINDOWS, models):
        t = pr.table([(lo, hi)])
        assert math.isclose(m.moments(0.0)[0][0], t.mean_pulses(0), rel_tol=1e-9)
        assert math.isclose(m.moments(0.0)[2][0], t.success_probability(0), rel_tol=1e-9)
        assert -1.05 < m.slope() < -0.3
    assert isinstance(models[0], PairModel)


# ----------------------------------------------------------------- one-file cards
ONE_FILE_WINDOWS = [(1e-4, 1.03e-4), (1.5e-4, 1.56e-4), (2e-4, math.inf)]


@pytest.fixture(scope="module")
def one_file_fit():
    """A shared model fitted to ONE emulated run (one file) with a window open above, every
    program successful and no max_pulses column."""
    from analogmem.calibrate import fit_pulse_response

    truth = parse_card(card_text({**TRUTH, "range_S": [1e-5, math.inf]}), "synthetic-open")
    rows = []
    for level, (lo, hi) in enumerate(ONE_FILE_WINDOWS):
        n = 300
        g = np.full(n, math.sqrt(lo * hi) if math.isfinite(hi) else 1.02 * lo)
        bench = EmulatedBench(truth, n, seed=[7, level])
        rep = bench.program(g, verify=WriteVerify.card(windows=[(lo, hi)]))
        rows.append(pd.DataFrame({"target_level": level, "window_lo_ohm": 0.0 if math.isinf(hi) else 1 / hi,
                                  "window_hi_ohm": 1 / lo, "read_value_ohm": 1 / bench.cell_state()["g_prog"],
                                  "pulses": rep.pulses, "success": rep.success}))
    df = pd.concat(rows, ignore_index=True)
    assert df.success.all()
    return fit_pulse_response(df, classes=2), df


def test_budget_comes_from_the_scheme_not_the_training_maximum(one_file_fit):
    """No failure and no max_pulses column: the budget is 10 x the most pulses (the data show
    only that it was never reached), said in the fit report; the card then predicts success
    ≈ 1 where every cell succeeded (the training maximum as the budget would predict
    failures). With failures, the failed programs' pulses are the budget; a max_pulses
    column wins."""
    from analogmem.calibrate.pulse_response import NO_FAILURE_BUDGET_FACTOR, scheme_budget

    fit, df = one_file_fit
    most = int(df.pulses.max())
    assert fit.scheme_budgets["default"] == NO_FAILURE_BUDGET_FACTOR * most
    assert "no operation failed" in fit.fit_summary()["scheme_budget_sources"]["default"]
    r = fit.response()
    for j in range(len(ONE_FILE_WINDOWS)):
        assert r.success_probability(j) > 0.9999
        # at the training maximum as the budget, the model itself predicts failures
        assert r.success_probability(j, max_pulses=most) < r.success_probability(j)
    from analogmem.calibrate import read_write_verify

    failed = df.assign(success=df.pulses < 40)
    failed.loc[~failed.success, "pulses"] = 40
    assert scheme_budget(read_write_verify(failed, 1)) == (40, "pulses of the failed operations (a failed program "
                                                              "spends the budget)")
    assert scheme_budget(read_write_verify(df.assign(max_pulses=77), 1))[0] == 77


def test_input_range_covers_the_open_window(one_file_fit):
    """A target just above the largest verified value, inside the window open above, is
    accepted by a card from one file (its input range reaches 2 x the window's edge)."""
    fit, df = one_file_fit
    card = parse_card(__import__("tomli_w").dumps(fit.card("one-file", "test")), "one-file")
    g_top = float((1 / df.read_value_ohm).max())
    assert card.input_range[1] >= 2 * ONE_FILE_WINDOWS[2][0] - 1e-12
    rep = EmulatedBench(card, 8, seed=0).program(np.full(8, 1.02 * g_top), verify=WriteVerify.card())
    assert rep.success.all()


def test_window_outside_the_fit_warns_naming_it(one_file_fit):
    """The fit records the windows it saw; programming or predicting a window far outside
    them (position, relative width, an unseen one-sided kind, more prior programs) warns
    naming the window and why; windows inside do not warn."""
    import warnings

    from analogmem.emulator.pulse_response import WindowSupportWarning

    fit, _ = one_file_fit
    card = parse_card(__import__("tomli_w").dumps(fit.card("one-file", "test")), "one-file")
    pr = card.write_verify
    assert pr.support and pr.support_issues([w[0] for w in ONE_FILE_WINDOWS], [w[1] for w in ONE_FILE_WINDOWS]) == []
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        EmulatedBench(card, 4, seed=0).program(np.full(4, 1.015e-4), verify=WriteVerify.card(windows=[(1e-4, 1.03e-4)]))
    # inside the card's range (which reaches up through the open window), far from the two-sided windows fitted
    with pytest.warns(WindowSupportWarning, match=r"window \[0.00026, 0.000268\] S: its position"):
        EmulatedBench(card, 4, seed=0).program(np.full(4, 2.64e-4),
                                               verify=WriteVerify.card(windows=[(2.6e-4, 2.68e-4)]))
    with pytest.raises(TargetRangeError, match="outside the card's write-verify range"):
        EmulatedBench(card, 4, seed=0).program(np.full(4, 3.05e-5), verify=WriteVerify.card(windows=[(3e-5, 3.09e-5)]))
    issues = pr.support_issues([1.2e-4, 0.0], [1.5e-4, 5e-5], prior_programs=3)
    assert any("relative width" in s for s in issues)
    assert any("no open-below window" in s for s in issues)
    assert any("prior_programs = 3" in s for s in issues)


def test_prediction_intervals_in_the_fit_report_and_by_a_python_call(one_file_fit):
    """The fit report carries 50/80/95 % intervals per card level (nested, around the
    model's mean) and says where the run-to-run part comes from (none for one run); the
    Python call gives the same for any window, with the support warning attached."""
    from analogmem.calibrate.run_effect import predict_levels

    fit, _ = one_file_fit
    rep = fit.fit_summary()["prediction_intervals"]
    assert len(rep) == len(ONE_FILE_WINDOWS)
    for row in rep:
        pm = row["pulses_mean"]
        assert pm["interval95"][0] <= pm["interval80"][0] <= pm["interval50"][0] <= pm["median"]
        assert pm["median"] <= pm["interval50"][1] <= pm["interval80"][1] <= pm["interval95"][1]
        assert "one run" in row["run_variation"]
    out = predict_levels(fit.response(), windows=[(2.6e-4, 2.68e-4)], n_cells=50)
    assert out[0]["warnings"] and "position" in out[0]["warnings"][0]
    # the report's intervals include the parameter uncertainty (draws from the fit's covariance):
    # wider than the cells' sampling alone
    bare = predict_levels(fit.response(), n_cells=rep[0]["n_cells"])
    assert all(row["parameter_draws"] == 50 for row in rep)
    width = [row["pulses_mean"]["interval95"][1] - row["pulses_mean"]["interval95"][0] for row in rep]
    width_bare = [row["pulses_mean"]["interval95"][1] - row["pulses_mean"]["interval95"][0] for row in bare]
    assert all(w > 1.05 * b for w, b in zip(width, width_bare)), (width, width_bare)


def test_shipped_radar_card_chips_differ_as_its_run_variation_says():
    """Monte-Carlo chips of the shipped rram-radar card (run_effect='sample'): the spread
    across 24 chips of a chip's mean ln(level mean pulses / card's centre) is what σ_b and
    σ_w of its [write_verify.run_variation] give (J² σ_b² + Σ J_L² σ_w² / L² + the cells'
    sampling), inside the 0.1–99.9 % quantiles of its chi-square sampling law; with
    run_effect='mean' the chips differ by the cells' sampling only."""
    from scipy.stats import chi2

    from analogmem import load_device

    radar = load_device("rram-radar")
    pr = radar.write_verify
    assert pr.run_sd_between > pr.run_sd > 0 and pr.run_sd_within > 0
    n, chips = 150, 24
    wins = list(zip(pr.window_lo_S, pr.window_hi_S))
    targets = np.repeat([math.sqrt(lo * hi) if math.isfinite(hi) and lo > 0 else (1.02 * lo if lo > 0 else 0.9 * hi)
                         for lo, hi in wins], n)
    ms = [PairModel(w, np.log(p) - np.log1p(-p), np.array([float(pr.max_pulses)]), np.array([1.0]))
          for w, p in (pr.class_probabilities(lo, hi) for lo, hi in wins)]
    centre = np.array([m.moments(0.0)[0][0] for m in ms])
    J = np.array([m.slope() for m in ms])
    s2 = np.array([m.moments(0.0)[1][0] / n / m.moments(0.0)[0][0] ** 2 for m in ms])
    L = len(wins)
    expect = (J.mean() ** 2 * pr.run_sd_between ** 2 + np.sum(J ** 2) * pr.run_sd_within ** 2 / L ** 2
              + s2.sum() / L ** 2)
    for mode, var in (("sample", expect), ("mean", s2.sum() / L ** 2)):
        r = []
        for c in range(chips):
            rep = EmulatedBench(radar, targets.size, seed=[28, c]).program(targets, verify=WriteVerify.card(
                run_effect=mode))
            r.append(np.mean(np.log(rep.pulses.reshape(L, n).mean(axis=1) / centre)))
        stat = (chips - 1) * np.var(r, ddof=1) / var
        assert chi2.ppf(0.001, chips - 1) < stat < chi2.ppf(0.999, chips - 1), (mode, np.var(r, ddof=1), var)


def test_few_cell_update_finds_a_known_run_effect(card, models):
    """A campaign programmed with a known shift of logit p (run_effect = 3 τ = 0.9, far out in
    the card's σ_b = 0.4): its first 20 programs per window move the posterior of b to
    within 3 posterior SDs of 0.9 (from the prior's 0), and the adapted predictions of its
    other programs' mean pulses are closer to the data than the unadapted ones."""
    from analogmem.calibrate.run_effect import few_cell_update

    pr = card.write_verify
    shift = 3.0 * pr.run_sd
    n_seen, n = 20, 200
    targets = np.tile([math.sqrt(lo * hi) for lo, hi in WINDOWS], n)
    rep = EmulatedBench(card, targets.size, seed=31).program(targets, verify=WriteVerify.card(windows=WINDOWS,
                                                                                              run_effect=3.0))
    pulses, ok = rep.pulses.reshape(n, len(WINDOWS)), rep.success.reshape(n, len(WINDOWS))
    observed = {lvl: (PairModel(np.repeat(m.weights, n_seen, 0), np.repeat(m.logit_p, n_seen, 0),
                                np.repeat(m.budget, n_seen), np.ones(n_seen)), pulses[:n_seen, lvl], ok[:n_seen, lvl])
                for lvl, m in enumerate(models)}
    post = few_cell_update(dict(enumerate(models)), observed, card_variation(card))
    assert abs(post["b_mean"] - shift) < 3 * post["b_sd"] and post["b_mean"] > shift / 2, post
    rest = pulses[n_seen:].mean(axis=0)
    err_adapted = [abs(math.log(post["levels"][lvl]["pulses_mean"] / rest[lvl])) for lvl in range(len(WINDOWS))]
    err_plain = [abs(math.log(m.moments(0.0)[0][0] / rest[lvl])) for lvl, m in enumerate(models)]
    assert np.mean(err_adapted) < 0.5 * np.mean(err_plain), (err_adapted, err_plain)


def test_run_variation_estimate_refuses_bad_input():
    """Fewer than 3 runs, mismatched lengths and non-finite values are refused by name."""
    from analogmem import CalibrationError

    with pytest.raises(CalibrationError, match="at least 3 runs"):
        estimate_run_variation([0.1, 0.2], [-1, -1], [0.01, 0.01], ["a", "b"])
    with pytest.raises(CalibrationError, match="one length"):
        estimate_run_variation([0.1, 0.2, 0.3], [-1, -1], [0.01] * 3, ["a", "b", "c"])
    with pytest.raises(CalibrationError, match="finite"):
        estimate_run_variation([0.1, math.nan, 0.3], [-1] * 3, [0.01] * 3, ["a", "b", "c"])


def test_adapt_to_run_from_a_tidy_table_of_first_programs(card):
    """adapt_to_run: the first 20 programs per window of a campaign with a known shift
    (3 τ), given as a tidy table, give a posterior run effect (in τ units, for
    WriteVerify.card(run_effect=...)) within 3 posterior SDs of 3 and above 1.5; a card
    without run variation is refused."""
    from analogmem import CalibrationError
    from analogmem.calibrate.run_effect import adapt_to_run

    n_seen = 20
    targets = np.tile([math.sqrt(lo * hi) for lo, hi in WINDOWS], n_seen)
    rep = EmulatedBench(card, targets.size, seed=32).program(targets, verify=WriteVerify.card(windows=WINDOWS,
                                                                                              run_effect=3.0))
    df = tidy(rep.pulses.reshape(n_seen, len(WINDOWS)).T, rep.success.reshape(n_seen, len(WINDOWS)).T, "new")
    post = adapt_to_run(card.write_verify, df, windows=WINDOWS)
    tau = card.write_verify.run_sd
    assert post["programs_used"] == targets.size and post["programs_in_no_window"] == 0
    assert abs(post["run_effect"] - 3.0) < 3 * post["b_sd"] / tau and post["run_effect"] > 1.5, post
    plain = parse_card(card_text(TRUTH), "no-variation")
    with pytest.raises(CalibrationError, match="run_variation"):
        adapt_to_run(plain.write_verify, df, windows=WINDOWS)
