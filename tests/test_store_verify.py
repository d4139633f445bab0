"""The main job's chips as write-verify campaigns (analogmem.jobs.store_verify): each chip
draws its own run effect from its seed; at the mean run effect chips differ only by cell
noise; the same seed gives the same chip bit for bit."""

from __future__ import annotations

import argparse

import numpy as np
import pytest

from analogmem.chips import chip_seeds, run_chips
from analogmem.emulator.cells import load_device
from analogmem.emulator.run_variation import campaign_shifts
from analogmem.jobs import store_resnet
from analogmem.jobs.store_chip import chip_accuracies
from analogmem.jobs.store_resnet import StoreJobError, _verify_spec, _write_verify_summary
from analogmem.jobs.store_verify import chip_run_effect, chip_verify, verify_windows
from analogmem.storage.encoders import make_encoder
from analogmem.storage.stores import EmulatedStore

RADAR = load_device("rram-radar")
WINDOWS = verify_windows(RADAR)


def _store(chip, run_effect, n=20_000):
    """Weights onto a store of chip ``chip`` (bench seed: a fresh copy of the chip's)."""
    w = np.random.default_rng(7).normal(size=n)
    fresh = np.random.SeedSequence(chip.entropy, spawn_key=chip.spawn_key)  # a bench spawns from its seed
    st = EmulatedStore(RADAR, n, seed=fresh,
                       verify=chip_verify({"run_effect": run_effect, "windows": WINDOWS}, chip))
    with pytest.warns(Warning):  # the grid's low windows lie outside the fit's support
        st.put("w", w, encoder=make_encoder("adaptive", 1))
    return st


def test_windows_tile_the_range_within_the_kernels_limit():
    lo = np.array([a for a, _ in WINDOWS])
    hi = np.array([b for _, b in WINDOWS])
    assert lo[0] == 0 and np.isinf(hi[-1]) and np.all(lo[1:] == hi[:-1]) and len(WINDOWS) <= 1024
    pr = RADAR.write_verify
    two = (np.asarray(pr.window_lo_S) > 0) & np.isfinite(pr.window_hi_S)
    want = np.median(np.log(np.asarray(pr.window_hi_S)[two] / np.asarray(pr.window_lo_S)[two]))
    assert np.allclose(np.log(hi[1:-1] / lo[1:-1]), np.log(hi[1:-1] / lo[1:-1]).mean(), rtol=1e-9)
    assert np.log(hi[1:-1] / lo[1:-1]).mean() == pytest.approx(want, rel=0.01)


def test_sampled_chips_differ_in_pulses_and_mean_chips_only_by_cell_noise():
    """Six chips: with their own run effects the mean pulses per cell spread several times
    more than at the mean run effect, and the shift follows the drawn between-run effect
    (a higher hit probability, fewer pulses); the cells' verified values are the same draws
    either way, so wherever both verified, the conductances are identical."""
    chips = chip_seeds(3, 6)
    sampled = [_store(c, "sample") for c in chips]
    at_mean = [_store(c, "mean") for c in chips]
    mp = lambda st: st.verify_totals["pulses"] / st.verify_totals["cells"]  # noqa: E731
    ps, pm = np.array([mp(s) for s in sampled]), np.array([mp(s) for s in at_mean])
    assert np.std(ps / pm) > 5 * np.std(pm / pm.mean())
    b = np.array([chip_run_effect(RADAR, c, WINDOWS)["between_logit"] for c in chips])
    assert np.corrcoef(b, ps / pm)[0, 1] < -0.7
    for s, m in zip(sampled, at_mean):
        gs, gm = s.bench.read(3600.0), m.bench.read(3600.0)
        assert 0 < np.count_nonzero(gs != gm) < 0.2 * gs.size  # only where one of them failed to verify


def test_plans_of_a_chip_share_its_run_effect():
    """Two stores (plans) of one chip have different seeds but one campaign: the same
    pulse table; another chip's differs, by its own draw of campaign_shifts."""
    c0, c1 = chip_seeds(5, 2)
    v0 = chip_verify({"run_effect": "sample", "windows": WINDOWS}, c0)
    g = np.array([50e-6, 150e-6, 240e-6])
    with pytest.warns(Warning):
        t_a = v0.pulse_table(RADAR, g, campaign=np.random.SeedSequence(1))
        t_b = v0.pulse_table(RADAR, g, campaign=np.random.SeedSequence(2))
        t_c = chip_verify({"run_effect": "sample", "windows": WINDOWS}, c1).pulse_table(RADAR, g)
    assert t_a == t_b and t_a.p_hit != t_c.p_hit
    b, u = campaign_shifts(RADAR.write_verify, c0, [a for a, _ in WINDOWS], [x for _, x in WINDOWS])
    assert chip_run_effect(RADAR, c0, WINDOWS)["between_logit"] == b and u.shape == (len(WINDOWS),)


def test_same_seed_same_chip_bit_for_bit():
    c = chip_seeds(11, 1)[0]
    a, b = _store(c, "sample", 5000), _store(c, "sample", 5000)
    assert a.verify_totals == b.verify_totals
    assert np.array_equal(a.get("w", 86400.0), b.get("w", 86400.0))


def _tiny_shared(run_effect):
    import torch

    from analogmem.ml.models import resnet_cifar

    torch.manual_seed(0)
    arch = {"depth": 8, "in_channels": 1, "num_classes": 10, "width": 4, "input_size": 8}
    state = {k: v.numpy().copy() for k, v in resnet_cifar(**arch).state_dict().items()}
    n_w = sum(v.size for k, v in state.items() if "running" not in k and "num_batches" not in k)
    rng = np.random.default_rng(0)
    plan = {"model": "dense", "encoder": make_encoder("adaptive", 1).spec(), "counts": None, "n_cells": 2 * n_w,
            "t_fit_s": 86400.0, "times_s": [86400.0], "reference": None}
    return {"arch": arch, "models": {"dense": state}, "plans": {"p": plan},
            "x": rng.normal(size=(16, 1, 8, 8)).astype(np.float32), "y": rng.integers(0, 10, 16),
            "device": "rram-radar", "threads": 1, "references": {},
            "verify": _verify_spec(RADAR, run_effect)}


def test_job_summary_from_real_chips():
    """The job's write_verify summary from three real chips (a random ResNet-8 on 16
    images): per chip the drawn effect and pulses, and the paired comparison at the mean."""
    seeds = chip_seeds(0, 3)
    run = run_chips(chip_accuracies, _tiny_shared("sample"), [(s, None) for s in seeds], progress=False)
    run0 = run_chips(chip_accuracies, _tiny_shared("mean"), [(s, None) for s in seeds], progress=False)
    spec = _verify_spec(RADAR, "sample")
    plans = _tiny_shared("sample")["plans"]
    wv = _write_verify_summary(RADAR, spec, seeds, run, run0, {("naive", 1): "p"}, ["naive"], [1], [86400.0], plans)
    assert wv["n_windows"] == len(WINDOWS) and 0 < wv["windows_outside_fit_support"] < len(WINDOWS)
    assert [c["run_effect"]["between_logit"] for c in wv["per_chip"]] == \
        [chip_run_effect(RADAR, s, WINDOWS)["between_logit"] for s in seeds]
    assert all(c["run_effect"] is None for c in wv["per_chip_at_mean"])
    assert all(c["cells"] == run.results[i]["p"]["verify"]["cells"] > 0 for i, c in enumerate(wv["per_chip"]))
    assert wv["mean_pulses_per_cell_sd_over_chips"] > wv["mean_pulses_per_cell_sd_over_chips_at_mean"]
    (row,) = wv["accuracy_spread"]
    assert row["approach"] == "naive" and row["time"] == "1 day" and row["accuracy_sd_over_chips"] is not None
    assert any("write-verify into" in ln for ln in store_resnet._write_verify_lines(wv))


def test_run_effect_settings():
    wan = load_device("rram-wan2022")
    assert _verify_spec(wan, "auto") is None and _verify_spec(RADAR, None) is None
    assert _verify_spec(RADAR, "auto")["run_effect"] == "sample" and _verify_spec(RADAR, 1.5)["run_effect"] == 1.5
    with pytest.raises(StoreJobError, match="rram-wan2022"):
        _verify_spec(wan, "sample")
    with pytest.raises(StoreJobError, match="often"):
        _verify_spec(RADAR, "often")
    parser = argparse.ArgumentParser()
    store_resnet.add_subparser(parser.add_subparsers())
    args = parser.parse_args(["store", "--run-effect", "-0.5", "--no-mean-run"])
    assert store_resnet._run_effect_arg(args.run_effect) == -0.5 and args.mean_run is False
    assert parser.parse_args(["store"]).run_effect == "auto"
    # the store job programs the chips again at the mean run effect by default, the demo does not
    assert parser.parse_args(["store"]).default_mean_run is True
    demo = argparse.ArgumentParser()
    store_resnet.add_subparser(demo.add_subparsers(), "demo")
    assert demo.parse_args(["demo"]).default_mean_run is False and demo.parse_args(["demo", "--mean-run"]).mean_run
    assert demo.parse_args(["demo"]).run_effect == "none"  # the demo writes single-shot unless asked
    assert store_resnet._run_effect_arg("none") is None
    with pytest.raises(StoreJobError, match="often"):
        store_resnet._run_effect_arg("often")
