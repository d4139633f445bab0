"""Program-and-verify of the main job's chips: each chip one write-verify campaign with its
own run-to-run effect.

A card with a shared pulse-response model (``[write_verify] model =
"shared-geometric-mixture"``, :mod:`analogmem.emulator.pulse_response`) emulates any verify
window in its range, and its run variation (:mod:`analogmem.emulator.run_variation`) the
run-to-run shift of the per-pulse hit probability that makes measured runs of one chip
family differ: a between-run part common to the run and a within-run part per window.
The job stores a model on such a card by verifying every cell into one of the
:func:`verify_windows` — a geometric grid over the programming range, each window as wide
(relative) as the median of the card's two-sided levels, open below the card's lowest and
above its highest level edge — so analog targets (any value) and multi-level targets alike
fall into a window.

Real runs draw one effect per programming campaign. :class:`ChipVerify` makes the *chip*
the campaign: every store of the chip (one per plan) draws its effect from the chip's
seed, not its plan's, so the plans of one chip share its between-run shift and, window by
window, its within-run shifts (a window's effect depends only on the seed and its edges,
:func:`~analogmem.emulator.run_variation.campaign_shifts`), and chips differ as runs do.
``run_effect = "mean"`` programs every chip at the population mean (no run effect): with
the same chip seeds the cells draw the same numbers, so the difference between the two is
the run effect alone.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import Any

import numpy as np

from ..emulator.bench import WriteVerify
from ..emulator.cells import DeviceModel
from ..emulator.pulse_response import MAX_WINDOWS
from ..emulator.run_variation import campaign_shifts
from ..errors import DeviceCardError

__all__ = ["ChipVerify", "verify_windows", "chip_verify", "chip_run_effect", "has_shared_write_verify"
           ]


def has_shared_write_verify(card: DeviceModel) -> bool:
    """Whether ``card`` emulates any verify window (and so can program the job's grid)."""
    return card.write_verify.enabled and card.write_verify.shared


def verify_windows(card: DeviceModel, rel_width: float | None = None) -> tuple[tuple[float, float], ...]:
    """The job's verify windows on ``card`` (S): ``[0, a]`` open below, a geometric grid of
    windows of relative width ``rel_width`` (ln(hi/lo); default the median of the card's
    two-sided levels) from ``a`` to ``b``, and ``[b, inf]`` open above, with ``a`` and ``b``
    the card's open-below and open-above level edges (else its range). Contiguous: every
    conductance ≥ 0 lies in one."""
    pr = card.write_verify
    if not (pr.enabled and pr.shared):
        raise DeviceCardError(f"device {card.name!r} has no shared write-verify model to emulate the job's windows")
    lo, hi = np.asarray(pr.window_lo_S), np.asarray(pr.window_hi_S)
    two = (lo > 0) & np.isfinite(hi)
    if rel_width is None and not np.any(two):
        raise DeviceCardError(f"device {card.name!r} has no two-sided write-verify level to size the job's windows "
                              "from; pass rel_width")
    width = float(np.median(np.log(hi[two] / lo[two]))) if rel_width is None else float(rel_width)
    a = float(hi[lo <= 0].max()) if np.any(lo <= 0) else max(card.range.g_max_S * 0.05, 1e-12)
    b = float(lo[np.isinf(hi)].min()) if np.any(np.isinf(hi)) else card.range.g_max_S
    if not (math.isfinite(width) and width > 0) or not 0 < a < b:
        raise DeviceCardError(f"device {card.name!r}: cannot grid write-verify windows from {a:g} S to {b:g} S with "
                              f"relative width {width:g} (need 0 < a < b and a positive width)")
    n = max(1, int(math.ceil(math.log(b / a) / width)))
    if n + 2 > MAX_WINDOWS:
        raise DeviceCardError(f"{n + 2} verify windows of relative width {width:g} exceed {MAX_WINDOWS}")
    edges = a * np.exp(np.linspace(0.0, math.log(b / a), n + 1))
    edges[0], edges[-1] = a, b
    return ((0.0, a), *zip(edges[:-1].tolist(), edges[1:].tolist()), (b, math.inf))


@dataclass(frozen=True)
class ChipVerify(WriteVerify):
    """``WriteVerify.card`` whose campaign is ``campaign`` (the chip's seed) instead of the
    bench's: every bench of the chip draws the same run effect (see the module docstring)."""

    campaign: np.random.SeedSequence | None = None

    def pulse_table(self, device: DeviceModel, g_target_S: np.ndarray,
                    campaign: np.random.SeedSequence | None = None) -> Any:
        return super().pulse_table(device, g_target_S, campaign=self.campaign if self.campaign is not None
                                   else campaign)


def chip_verify(spec: dict[str, Any] | None, chip: np.random.SeedSequence) -> ChipVerify | None:
    """The verify settings of chip ``chip`` from the job's ``spec`` (``{"run_effect",
    "windows"}``; None: single-shot writes)."""
    if spec is None:
        return None
    return ChipVerify(max_pulses=None, tolerance_rel=0.0, windows="card",
                      levels=tuple((float(a), float(b)) for a, b in spec["windows"]),
                      run_effect=spec["run_effect"], campaign=chip)


def chip_run_effect(card: DeviceModel, chip: np.random.SeedSequence, windows: Any) -> dict[str, Any]:
    """The run effect a ``"sample"`` chip draws (shift of logit p): the between-run part
    and, over ``windows``, the mean and SD of between + within."""
    b, u = campaign_shifts(card.write_verify, chip, [a for a, _ in windows], [c for _, c in windows])
    return {"between_logit": float(b), "per_window_mean_logit": float(np.mean(u)),
            "per_window_sd_logit": float(np.std(u))}
