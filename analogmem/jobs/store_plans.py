"""Candidate configurations of the main job and the choice of the best one per approach and
budget on a selection chip (thesis ch.3 comparison at equal cells per weight).

A *plan* is one stored configuration (see :mod:`analogmem.jobs.store_chip`): which model,
which encoder, per-weight counts, how many cells. :func:`candidate_plans` lists, for every
budget of cells per weight, the candidates of each approach; :func:`select_plans` programs
them on one selection chip, reads them at the design time and keeps the best of each
approach and budget.

Digital candidates, per (k bits, b bits per cell), are built as strong as the budget allows:

* **level detection** — nearest level or maximum likelihood under the card's channel,
  whichever gave the fewer raw bit errors on a test array of the selection chip
  (:func:`raw_bit_error_rates`: 8-bit codes of random weights, no ECC);
* **BCH code** — for each block of 64, 32, 16 or 8 data bytes the largest ``t`` (bchlib
  allows up to 64) whose cells still fit the budget, and of those the block whose predicted
  failures per data bit ``P(Binomial(n_code, p) > t)/n_data`` at the measured raw bit error
  rate ``p`` is lowest (ties: the longer block).

The k are tried highest error-free accuracy first, and a k whose error-free accuracy is
not above the best accuracy found is skipped (a read can only lose it). For each k the two
codes with the fewest predicted failures are read on the selection chip and compared by the
Fisher-weighted squared error of the read weights against the error-free k-bit weights (no
network evaluation); the closer one is evaluated on the selection images — or, if it read
back without a single error, has exactly the error-free accuracy.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np

from .store_chip import chip_accuracies, plan_seed

__all__ = ["DIGITAL_BITS", "DIGITAL_BITS_PER_CELL", "DIGITAL_BLOCK_BYTES", "raw_bit_error_rates", "digital_codes",
           "candidate_plans", "select_plans", "make_plan"]

#: Digital configurations searched: k bits per weight, b bits per cell, BCH block sizes.
DIGITAL_BITS = (2, 3, 4, 5, 6, 8)
DIGITAL_BITS_PER_CELL = (1, 2, 3, 4)
DIGITAL_BLOCK_BYTES = (64, 32, 16, 8)
_BCH_T_MAX = 64  # bchlib's limit
#: Codes per k bits read on the selection chip (those with the fewest predicted failures).
SCREENED_PER_K = 2


def make_plan(model: str, encoder: Any, n_cells: int, t_fit_s: float, counts: dict | None = None,
              reference: str | None = None, **info: Any) -> dict[str, Any]:
    """A plan dict (see :mod:`analogmem.jobs.store_chip`); ``info`` adds ``approach``,
    ``budget``, ``option`` (a readable name) and the like."""
    return {"model": model, "encoder": encoder.spec(), "counts": counts, "n_cells": int(n_cells),
            "t_fit_s": float(t_fit_s), "reference": reference, "name": encoder.name, **info}


def raw_bit_error_rates(device: str, t_s: float, seed: np.random.SeedSequence,
                        n_weights: int = 8192) -> dict[tuple[int, str], float]:
    """Raw bit error rate of b-bit-per-cell storage (b = 1…4) with each level detection,
    read ``t_s`` after programming: 8-bit codes of ``n_weights`` uniform random weights, no
    ECC, through the store (drift compensation included where the card drifts)."""
    from ..storage.encoders import DigitalECC
    from ..storage.stores import EmulatedStore

    w = np.random.default_rng(plan_seed(seed, "ber-weights")).uniform(-1.0, 1.0, n_weights)
    out = {}
    for b in DIGITAL_BITS_PER_CELL:
        for detect in ("nearest", "ml"):
            enc = DigitalECC(bits=8, bits_per_cell=b, t=0, detect=detect)
            store = EmulatedStore(device, enc.n_cells(n_weights), seed=plan_seed(seed, f"ber/{b}/{detect}"),
                                  n_threads=1)
            store.put("w", w, encoder=enc)
            side = store.entry("w").side
            true = (np.rint(enc.quantise(w, side) / side["step"]) + 128).astype(np.int64)
            got = (np.rint(store.get("w", t_s) / side["step"]) + 128).astype(np.int64)
            diff = np.bitwise_xor(true, got)
            out[(b, detect)] = float(np.unpackbits(diff.astype(np.uint8)[:, None], axis=1).sum() / (8 * n_weights))
    return out


def _cells(k: int, b: int, t: int, block: int, detect: str, sizes: Sequence[int]) -> float:
    from ..storage.encoders import DigitalECC

    try:
        enc = DigitalECC(bits=k, bits_per_cell=b, t=t, block_bytes=block, m=None, detect=detect)
    except ValueError:  # no BCH code that strong for this block
        return math.inf
    return sum(enc.n_cells(n) for n in sizes)


def digital_codes(budget_cells: int, sizes: Sequence[int],
                  ber: dict[tuple[int, str], float]) -> list[tuple[Any, float]]:
    """One :class:`~analogmem.storage.encoders.DigitalECC` per (k, b) whose cells for tensors
    of ``sizes`` values fit ``budget_cells`` — the detection and BCH code chosen as the
    module docstring says — with its predicted failed blocks per data bit."""
    from scipy.stats import binom

    from ..storage.encoders import DigitalECC

    out = []
    for b in DIGITAL_BITS_PER_CELL:
        detect = min(("nearest", "ml"), key=lambda d: (ber[(b, d)], d != "nearest"))
        p = ber[(b, detect)]
        for k in DIGITAL_BITS:
            best = None
            for block in DIGITAL_BLOCK_BYTES:
                if _cells(k, b, 0, block, detect, sizes) > budget_cells:
                    continue
                lo, hi = 0, _BCH_T_MAX + 1  # largest t that fits: cells grow with t
                while hi - lo > 1:
                    mid = (lo + hi) // 2
                    if _cells(k, b, mid, block, detect, sizes) <= budget_cells:
                        lo = mid
                    else:
                        hi = mid
                enc = DigitalECC(bits=k, bits_per_cell=b, t=lo, block_bytes=block, m=None, detect=detect)
                n_code = 8 * (block + enc.ecc_bytes)
                fail = float(binom.sf(lo, n_code, p)) / (8 * block) if p > 0 else 0.0
                key = (fail, -block)
                if best is None or key < best[0]:
                    best = (key, enc)
            if best is not None:
                out.append((best[1], best[0][0]))
    return out


def candidate_plans(budgets: Sequence[int], n_weights: int, sizes: Sequence[int], design_t: float,
                    encoders: Sequence[str], sparsities: Sequence[float], curves: dict[str, Any],
                    joint_encoder: Any, keeps: dict[str, dict[str, np.ndarray]], mask_bits: dict[str, int],
                    params: Sequence[str], ber: dict[tuple[int, str], float],
                    model_key: Any) -> tuple[dict[str, dict[str, Any]], dict[tuple[str, int], list[str]]]:
    """Every candidate plan, and the candidate keys per ``(approach, budget)``."""
    from ..storage.encoders import make_encoder

    plans: dict[str, dict[str, Any]] = {}
    cands: dict[tuple[str, int], list[str]] = {}

    def add(approach: str, B: int, key: str, plan: dict[str, Any]) -> None:
        plans[key] = {**plan, "approach": approach, "budget": B}
        cands.setdefault((approach, B), []).append(key)

    for B in budgets:
        cells = B * n_weights
        naive = make_encoder("naive", B)
        add("naive", B, f"naive/B{B}", make_plan("dense", naive, sum(naive.n_cells(n) for n in sizes), design_t,
                                                 option=naive.name))
        for e in encoders:
            try:
                enc = make_encoder(e, B)
            except ValueError:
                continue  # the budget is not a multiple of its cells per weight
            add("robust", B, f"robust/{e}/B{B}", make_plan("dense", enc, sum(enc.n_cells(n) for n in sizes),
                                                           design_t, option=f"{e} ({enc.name})"))
        for s in sparsities:
            mk = model_key(s)
            counts = curves[mk].counts(cells)
            used = joint_encoder.cells_per_weight * int(sum(int(c.sum()) for c in counts.values()))
            add("joint", B, f"joint/s{s:g}/B{B}", make_plan(mk, joint_encoder, used, design_t, counts=counts,
                                                            option=f"sparsity {s:g}, pairs + MMSE"))
        for enc, fail in digital_codes(cells, sizes, ber):
            add("digital", B, f"digital/{enc.name}-blk{enc.block_bytes}/B{B}",
                make_plan("dense", enc, sum(enc.n_cells(n) for n in sizes), design_t, reference=f"q{enc.bits}/dense",
                          option=f"{enc.name}, {enc.block_bytes}-byte blocks", bits=enc.bits,
                          predicted_failures_per_bit=fail))
        for s in sparsities:
            if s == 0:
                continue
            mk = model_key(s)
            kept = [int(np.count_nonzero(keeps[mk][n])) for n in params]
            for enc, fail in digital_codes(cells, kept, ber):
                add("digital-pruned", B, f"digital-pruned/s{s:g}/{enc.name}-blk{enc.block_bytes}/B{B}",
                    make_plan(mk, enc, sum(enc.n_cells(n) for n in kept), design_t, counts=keeps[mk],
                              reference=f"q{enc.bits}/{mk}", option=f"{enc.name}, {enc.block_bytes}-byte blocks, "
                                                                    f"sparsity {s:g}", bits=enc.bits, sparse=True,
                              mask_bits=mask_bits[mk], predicted_failures_per_bit=fail))
    return plans, cands


def select_plans(shared: dict[str, Any], seed: np.random.SeedSequence, cands: dict[tuple[str, int], list[str]],
                 progress: bool = True) -> tuple[dict[tuple[str, int], str], list[dict[str, Any]]]:
    """The best plan per ``(approach, budget)`` on the selection chip ``seed`` (``shared`` as
    :func:`~analogmem.jobs.store_chip.chip_accuracies` takes it, with the selection images,
    ``fisher`` and ``references``). Returns the choice and one record per candidate."""
    from tqdm.auto import tqdm

    plans, refs = shared["plans"], shared["references"]
    chosen: dict[tuple[str, int], str] = {}
    rows: list[dict[str, Any]] = []
    n = sum(len(v) for (a, _), v in cands.items() if a != "naive")
    bar = tqdm(total=n, desc="selection chip", unit="config", disable=None if progress else True)

    def record(k: str, **what: Any) -> None:
        p = plans[k]
        rows.append({"plan": k, "approach": p["approach"], "budget_cells_per_weight": p["budget"],
                     "configuration": p["option"], "n_cells": p["n_cells"], **what})

    def better(acc: float, k: str, best: tuple[float, int, str] | None) -> bool:
        return best is None or (acc, -plans[k]["n_cells"]) > (best[0], -best[1])

    for (approach, B), keys in cands.items():
        if approach == "naive":
            chosen[(approach, B)] = keys[0]
            continue
        best: tuple[float, int, str] | None = None
        if not approach.startswith("digital"):
            for k in keys:
                acc = chip_accuracies(shared, seed, [k])[k]["accuracy"][0]
                record(k, selection_accuracy=acc)
                if better(acc, k, best):
                    best = (acc, plans[k]["n_cells"], k)
                bar.update(1)
        else:  # per error-free model (k bits, pruned or not), best error-free accuracy first
            groups: dict[str, list[str]] = {}
            for k in keys:
                groups.setdefault(plans[k]["reference"], []).append(k)
            for ref in sorted(groups, key=lambda r: -refs[r]["accuracy"]):
                free = refs[ref]["accuracy"]
                ranked = sorted(groups[ref],
                                key=lambda k: (plans[k]["predicted_failures_per_bit"], plans[k]["n_cells"]))
                if best is not None and free <= best[0]:
                    for k in ranked:
                        record(k, selection_accuracy=None,
                               skipped="its error-free accuracy is not above the best found")
                    bar.update(len(ranked))
                    continue
                screened = {k: chip_accuracies({**shared, "screen": True}, seed, [k])[k]["weighted_error"][0]
                            for k in ranked[:SCREENED_PER_K]}
                for k in ranked[SCREENED_PER_K:]:
                    record(k, selection_accuracy=None, skipped=f"not among the {SCREENED_PER_K} codes of its k bits "
                                                               "with the fewest predicted failures")
                k = min(screened, key=lambda k: (screened[k], plans[k]["n_cells"]))
                for other in screened:
                    if other != k:
                        record(other, weighted_error=screened[other], selection_accuracy=None,
                               skipped="a code of the same k bits read back closer to the error-free weights")
                acc = free if screened[k] == 0 else chip_accuracies(shared, seed, [k])[k]["accuracy"][0]
                record(k, weighted_error=screened[k], selection_accuracy=acc, exact=screened[k] == 0)
                bar.update(len(ranked))
                if better(acc, k, best):
                    best = (acc, plans[k]["n_cells"], k)
        if best is not None:
            chosen[(approach, B)] = best[2]
    bar.close()
    return chosen, rows
