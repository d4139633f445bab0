"""Run-to-run variation of write-verify, sampled per programming campaign (scripts/cards/README.md, "Run-to-run variation").

A shared pulse-response card (:mod:`.pulse_response`) may carry a predictive run variation
(``[write_verify.run_variation]``): a new run's shift of the per-pulse hit probability's
logit is ``u_L = b + w_L`` with a between-run part ``b ~ N(0, σ_b²)`` common to every
window of the run and a within-run, level-to-level part ``w_L ~ N(0, σ_w²)`` per window.

An emulated bench is one programming campaign (one chip, one run): with
``WriteVerify.card(run_effect="sample")`` it draws ``b`` once from its seed and ``w_L`` once
per verify window, so every program call of the bench into the same window shares the same
effect, Monte-Carlo chips (benches with different seeds) differ as real runs do, and the
same seed gives the same effects bit for bit. The draws come from a counter-based branch of
the bench's seed (its entropy and spawn key extended by a fixed tag and, for ``w_L``, the
window's edges as IEEE-754 bits): they consume nothing from the bench's operation stream,
so the other random draws of a bench are the same as without sampling.
"""

from __future__ import annotations

import math
from typing import Any

import numpy as np

from .pulse_response import PulseResponse

__all__ = ["campaign_shifts", "RUN_EFFECT_TAG"]

#: spawn-key tag of the run-effect branch of a bench's seed ("RUNE")
RUN_EFFECT_TAG = 0x52554E45


def _bits(v: float) -> tuple[int, int]:
    b = int(np.float64(v).view(np.uint64))
    return b >> 32, b & 0xFFFFFFFF


def _normal(seed: np.random.SeedSequence, *key: int) -> float:
    ss = np.random.SeedSequence(seed.entropy, spawn_key=tuple(seed.spawn_key) + (RUN_EFFECT_TAG,) + key)
    return float(np.random.Generator(np.random.Philox(ss)).standard_normal())


def campaign_shifts(response: PulseResponse, seed: np.random.SeedSequence, lo_S: Any, hi_S: Any
                    ) -> tuple[float, np.ndarray]:
    """The campaign's run effect for verify windows ``[lo_S, hi_S]`` (S, shape (n,)):
    ``(b, u)`` with ``b`` the between-run shift of logit p and ``u = b + w_L`` per window
    (shape (n,)). σ_b, σ_w are the card's ``run_variation``; a card without one samples
    ``b`` from its fitted ``run_sd`` and no within-run part. A window's ``w_L`` depends
    only on the seed and the window's edges."""
    sb = response.run_sd_between if response.run_sd_between > 0 or response.run_sd_within > 0 else response.run_sd
    sw = response.run_sd_within
    b = sb * _normal(seed, 0)
    lo = np.atleast_1d(np.asarray(lo_S, dtype=np.float64))
    hi = np.atleast_1d(np.asarray(hi_S, dtype=np.float64))
    w = np.array([sw * _normal(seed, 1, *_bits(a), *_bits(c)) if sw > 0 else 0.0 for a, c in zip(lo, hi)])
    return (b if math.isfinite(b) else 0.0), b + w
