"""Monte-Carlo chips (analogmem.chips, issue 15 part 3): seeds, intervals, serial == Ray."""

from __future__ import annotations

import os

import numpy as np
import pytest
from scipy import stats

from analogmem.chips import bootstrap_ci, chip_seeds, mean_ci, ray_available, run_chips


def test_chip_seeds_are_spawned_children_independent_of_the_count():
    """Chip i is the i-th child SeedSequence.spawn would give, whatever the number of chips."""
    a, b = chip_seeds(7, 3), chip_seeds(7, 5)
    assert [s.spawn_key for s in a] == [(0,), (1,), (2,)]
    for x, y, z in zip(a, b, np.random.SeedSequence(7).spawn(3)):
        assert np.array_equal(x.generate_state(4), y.generate_state(4))
        assert np.array_equal(x.generate_state(4), z.generate_state(4))
    assert len({tuple(s.generate_state(2)) for s in b}) == 5
    with pytest.raises(ValueError):
        chip_seeds(0, -1)


def test_mean_ci_is_the_student_t_interval():
    v = [0.91, 0.93, 0.90, 0.95, 0.92]
    r = mean_ci(v)
    lo, hi = stats.t.interval(0.95, len(v) - 1, loc=np.mean(v), scale=stats.sem(v))
    assert r["mean"] == pytest.approx(np.mean(v)) and r["n"] == 5
    assert (r["ci95_low"], r["ci95_high"]) == pytest.approx((lo, hi), rel=1e-12)
    one = mean_ci([0.5])
    assert one["mean"] == 0.5 and one["ci95_half_width"] is None
    with pytest.raises(ValueError):
        mean_ci([])


def test_mean_ci_covers_the_true_mean_95_percent_of_the_time():
    """4,000 samples of 4 normal draws: the interval covers the mean in 95 % of them, within
    4 binomial standard errors (a z-based interval, ±1.96·s/√n, would cover only ~82 %)."""
    rng = np.random.default_rng(0)
    x = rng.normal(3.0, 2.0, (4000, 4))
    cover = np.mean([(r := mean_ci(row))["ci95_low"] <= 3.0 <= r["ci95_high"] for row in x])
    assert abs(cover - 0.95) < 4 * np.sqrt(0.95 * 0.05 / 4000)


def _tiny_shared():
    """Two configurations of an untrained ResNet-8 on 40 8×8 digits (a chip in < 1 s)."""
    import torch

    from analogmem.jobs.store_chip import build_model  # noqa: F401  (the chip task builds it)
    from analogmem.ml.datasets import digits
    from analogmem.ml.models import resnet_cifar
    from analogmem.storage.encoders import DigitalECC, make_encoder

    torch.manual_seed(0)
    model = resnet_cifar(8, 1, 10, 16, 8)
    state = {k: v.numpy().copy() for k, v in model.state_dict().items()}
    sizes = [p.numel() for p in model.parameters()]
    data = digits(0)
    plans = {}
    for key, enc in (("naive", make_encoder("naive", 2)), ("mmse", make_encoder("differential-mmse", 2)),
                     ("digital", DigitalECC(bits=4, bits_per_cell=2, t=8, detect="ml"))):
        plans[key] = {"model": "m", "encoder": enc.spec(), "counts": None, "t_fit_s": 86400.0,
                      "n_cells": sum(enc.n_cells(n) for n in sizes), "times_s": [1.0, 86400.0], "reference": None}
    return {"arch": {"depth": 8, "in_channels": 1, "num_classes": 10, "width": 16, "input_size": 8},
            "models": {"m": state}, "plans": plans, "x": data.x_test[:40].numpy(), "y": data.y_test[:40].numpy(),
            "device": "rram-wan2022", "threads": 1, "references": {}}


def test_serial_chips_are_reproducible_and_differ_between_chips():
    from analogmem.jobs.store_chip import chip_accuracies

    shared = _tiny_shared()
    seeds = chip_seeds(3, 2)
    a = run_chips(chip_accuracies, shared, [(s, None) for s in seeds], progress=False)
    b = run_chips(chip_accuracies, shared, [(s, ["mmse"]) for s in seeds], progress=False)
    assert a.runner == "serial" and len(a.results) == 2
    assert all(a.results[i]["mmse"] == b.results[i]["mmse"] for i in range(2))  # a plan's seed is its own
    assert a.results[0]["naive"]["analog_cells"] == 2 * sum(v.size for k, v in shared["models"]["m"].items()
                                                            if "running" not in k and "num_batches" not in k)


@pytest.mark.skipif(not ray_available(), reason="Ray is not installed")
def test_ray_chips_give_the_serial_numbers_and_leave_no_session_folder():
    """The same chips as Ray tasks on a local Ray (2 CPUs) return exactly the serial numbers;
    the temporary folder of the Ray session is gone afterwards."""
    from analogmem.jobs.store_chip import chip_accuracies

    shared = _tiny_shared()
    tasks = [(s, None) for s in chip_seeds(5, 2)]
    serial = run_chips(chip_accuracies, shared, tasks, progress=False)
    ray_run = run_chips(chip_accuracies, shared, tasks, use_ray=True, num_cpus=2, progress=False)
    assert ray_run.runner == "ray" and ray_run.num_cpus == 2
    assert ray_run.results == serial.results
    assert ray_run.ray_session_dir and not os.path.exists(ray_run.ray_session_dir)


def test_bootstrap_interval_stays_within_the_values_and_0_1():
    """Over few chips the t interval of an accuracy can run past 0 and 1; the bootstrap
    percentile interval lies within the values' range (so within [0, 1]), and a seed fixes it."""
    v = [0.20, 0.95, 0.97]
    t = mean_ci(v)
    assert t["ci95_low"] < 0 and t["ci95_high"] > 1 and t["method"] == "t"
    b = mean_ci(v, method="bootstrap")
    assert b["method"] == "bootstrap" and b["mean"] == pytest.approx(np.mean(v))
    assert min(v) <= b["ci95_low"] < b["mean"] < b["ci95_high"] <= max(v)
    w = [0.91, 0.93, 0.90, 0.95, 0.92, 0.60]
    assert bootstrap_ci(w, seed=0) == bootstrap_ci(w, seed=0)  # at 20,000 resamples the ends sit on atoms
    same = bootstrap_ci([0.9] * 5)
    assert same["ci95_low"] == same["ci95_high"] == pytest.approx(0.9)
    with pytest.raises(ValueError):
        mean_ci(v, method="z")
    with pytest.raises(ValueError):
        bootstrap_ci([0.5, float("nan")])


@pytest.mark.parametrize("n", [3, 6, 8])
def test_bootstrap_coverage_is_what_theory_says(n):
    """For normal values the percentile bootstrap of the mean is, up to resampling noise, the
    interval mean ± 1.96·s·√((n−1)/n)/√n, whose coverage is 2·F_t(1.96·√((n−1)/n); n−1) − 1:
    0.76 for 3 chips, 0.87 for 6, 0.90 for 8 (narrower than nominal, which the docs say).
    2,000 samples; the measured coverage is within 4 binomial standard errors plus 0.01
    (the bootstrap's own resampling noise at 2,000 resamples) of that."""
    rng = np.random.default_rng(n)
    x = rng.normal(3.0, 2.0, (2000, n))
    cover = np.mean([(r := bootstrap_ci(row, n_resamples=2000, seed=i))["ci95_low"] <= 3.0 <= r["ci95_high"]
                     for i, row in enumerate(x)])
    expected = 2 * stats.t.cdf(1.96 * np.sqrt((n - 1) / n), n - 1) - 1
    assert abs(cover - expected) < 4 * np.sqrt(expected * (1 - expected) / 2000) + 0.01, (cover, expected)
