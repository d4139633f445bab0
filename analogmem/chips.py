"""Monte-Carlo chips: the same work on N independent emulated chips, serially or as Ray tasks.

A *chip* is one draw of everything random on an emulated array — programming noise,
stuck cells, drift exponents, relaxation and read noise — given by a
:class:`numpy.random.SeedSequence`. :func:`chip_seeds` spawns the N chips' seeds from one
root sequence (chip ``i`` has spawn key ``root + (i,)``, so it does not depend on N), and
:func:`run_chips` calls a module-level function ``fn(shared, seed, part)`` once per task
``(seed, part)``:

* serially in this process (``use_ray=False``, or Ray not installed), or
* as Ray tasks (``ray.remote(num_cpus=1)``) on a local Ray started with an explicit
  ``num_cpus`` (default: the cores this process may use), or on an existing cluster given by
  its address. ``shared`` is put once in Ray's object store. A local Ray keeps its session
  folder (logs, sockets, spilled objects) in a fresh temporary folder
  (``$TMPDIR/analogmem-ray-*``, :data:`RAY_TMP_PREFIX`) that is deleted after
  ``ray.shutdown()``, so nothing accumulates in ``/tmp/ray``.

``fn`` must give the same result for the same ``(shared, seed, part)`` wherever it runs
(fix its thread counts): then both ways return identical numbers, in task order.
:func:`mean_ci` summarises per-chip values as the mean with a 95 % interval: Student t
(``method="t"``), or the bootstrap percentile interval (``method="bootstrap"``), which lies
within the range of the values — an accuracy's interval stays inside [0, 1].
"""

from __future__ import annotations

import os
import shutil
import tempfile
import time
from dataclasses import dataclass, field
from typing import Any, Callable, Sequence

import numpy as np

from ._seeding import SeedLike, as_seed_sequence
from .errors import SettingError

__all__ = ["chip_seeds", "mean_ci", "bootstrap_ci", "ray_available", "run_chips", "ChipRun", "RAY_TMP_PREFIX"]

#: Prefix of the temporary folder a local Ray session lives in (deleted after shutdown).
RAY_TMP_PREFIX = "analogmem-ray-"


def chip_seeds(seed: SeedLike, n: int) -> list[np.random.SeedSequence]:
    """Seeds of chips ``0..n−1`` spawned from ``seed``: chip ``i`` is
    ``SeedSequence(root.entropy, spawn_key=root.spawn_key + (i,))`` — the ``i``-th child
    ``root.spawn`` would give — whatever ``n`` is."""
    if int(n) < 0:
        raise SettingError(f"the number of chips must be >= 0, got {n!r}")
    root = as_seed_sequence(seed)
    return [np.random.SeedSequence(root.entropy, spawn_key=tuple(root.spawn_key) + (i,),
                                   pool_size=root.pool_size) for i in range(int(n))]


def mean_ci(values: Sequence[float], confidence: float = 0.95, method: str = "t", *,
            n_resamples: int = 20_000, seed: SeedLike = 0) -> dict[str, Any]:
    """Mean of ``values`` (one per chip) with a ``confidence`` interval for it.

    ``method="t"``: the Student-t interval ``mean ± t_{(1+confidence)/2, n−1}·s/√n`` (``s`` the
    sample standard deviation; symmetric, and it can leave the values' range, e.g. run past
    0 or 1 for an accuracy over few chips). ``method="bootstrap"``: :func:`bootstrap_ci`, the
    percentile interval of the mean over ``n_resamples`` resamples drawn with ``seed``.
    One value: the interval is ``None`` (no spread can be estimated). Keys: ``mean``,
    ``ci95_low``, ``ci95_high``, ``ci95_half_width`` (the larger distance from the mean to an
    end), ``std``, ``n``, ``method``."""
    if method == "bootstrap":
        return bootstrap_ci(values, confidence, n_resamples=n_resamples, seed=seed)
    if method != "t":
        raise SettingError(f"mean_ci: method must be 't' or 'bootstrap', got {method!r}")
    from scipy.stats import t as student_t

    v = _values(values)
    mean = float(v.mean())
    if v.size < 2:
        return _no_interval(mean, "t")
    sd = float(v.std(ddof=1))
    half = float(student_t.ppf(0.5 + confidence / 2.0, v.size - 1) * sd / np.sqrt(v.size))
    return {"mean": mean, "ci95_low": mean - half, "ci95_high": mean + half, "ci95_half_width": half, "std": sd,
            "n": int(v.size), "method": "t"}


def bootstrap_ci(values: Sequence[float], confidence: float = 0.95, *, n_resamples: int = 20_000,
                 seed: SeedLike = 0) -> dict[str, Any]:
    """Mean of ``values`` with the bootstrap percentile interval: the ``(1 ± confidence)/2``
    quantiles of the means of ``n_resamples`` resamples (``n`` values drawn with replacement,
    ``seed`` a seed or Generator). The interval lies within ``[min(values), max(values)]``,
    so an accuracy's stays in [0, 1]; it makes no normality assumption, but for few values it
    is narrower than nominal (the resamples cannot show spread the sample lacks:
    ``tests/test_chips.py`` measures its coverage). Keys as :func:`mean_ci`."""
    from ._seeding import as_generator

    v = _values(values)
    mean = float(v.mean())
    if v.size < 2:
        return _no_interval(mean, "bootstrap")
    if not 0.0 < confidence < 1.0:
        raise SettingError(f"confidence must lie in (0, 1), got {confidence!r}")
    if int(n_resamples) < 100:
        raise SettingError(f"n_resamples must be >= 100, got {n_resamples!r}")
    rng = as_generator(seed)
    means = v[rng.integers(0, v.size, size=(int(n_resamples), v.size))].mean(axis=1)
    lo, hi = (float(q) for q in np.quantile(means, [0.5 - confidence / 2.0, 0.5 + confidence / 2.0]))
    lo, hi = max(lo, float(v.min())), min(hi, float(v.max()))  # rounding of the resampled means only
    return {"mean": mean, "ci95_low": lo, "ci95_high": hi, "ci95_half_width": max(mean - lo, hi - mean),
            "std": float(v.std(ddof=1)), "n": int(v.size), "method": "bootstrap"}


def _values(values: Sequence[float]) -> np.ndarray:
    v = np.asarray(values, dtype=np.float64).reshape(-1)
    if v.size == 0:
        raise SettingError("mean_ci needs at least one value")
    if not np.all(np.isfinite(v)):
        raise SettingError(f"mean_ci needs finite values, got {v[~np.isfinite(v)][:3].tolist()}")
    return v


def _no_interval(mean: float, method: str) -> dict[str, Any]:
    return {"mean": mean, "ci95_low": None, "ci95_high": None, "ci95_half_width": None, "std": None, "n": 1,
            "method": method}


def ray_available() -> bool:
    """Whether Ray is installed (it comes with ``flwr[simulation]``); does not import it."""
    import importlib.util

    return importlib.util.find_spec("ray") is not None


@dataclass
class ChipRun:
    """What :func:`run_chips` did: ``results`` in task order, ``runner`` (``"serial"`` or
    ``"ray"``), the Ray address (None: a local Ray) and CPUs, wall times (s) of the whole
    run and of Ray's start-up, and the temporary session folder a local Ray used (deleted)."""

    results: list[Any]
    runner: str
    wall_s: float
    ray_address: str | None = None
    num_cpus: int | None = None
    ray_start_s: float | None = None
    ray_session_dir: str | None = None
    notes: list[str] = field(default_factory=list)

    def describe(self) -> dict[str, Any]:
        return {"runner": self.runner, "wall_s": self.wall_s, "ray_address": self.ray_address,
                "num_cpus": self.num_cpus, "ray_start_s": self.ray_start_s,
                "ray_session_dir_removed": self.ray_session_dir, "notes": self.notes}


def _cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        return os.cpu_count() or 1


def run_chips(fn: Callable[[Any, np.random.SeedSequence, Any], Any], shared: Any,
              tasks: Sequence[tuple[np.random.SeedSequence, Any]], *, use_ray: bool = False,
              ray_address: str | None = None, num_cpus: int | None = None, progress: bool = True,
              desc: str = "chips") -> ChipRun:
    """Run ``fn(shared, seed, part)`` for every task ``(seed, part)``; results in task order.

    Args:
        fn: a module-level function (Ray ships it by reference), deterministic in its inputs.
        shared: what every task reads (put once in Ray's object store).
        tasks: ``(seed, part)`` pairs, e.g. one per chip, ``part`` naming the work to do.
        use_ray: run as Ray tasks; falls back to serial (with a note) when Ray is missing.
        ray_address: an existing cluster (``"auto"``, ``"ray://host:10001"``, ...); None
            starts a local Ray with ``num_cpus`` CPUs and shuts it down afterwards.
        num_cpus: CPUs of the local Ray (default: the cores this process may use).
        progress: a tqdm bar per finished task (off when stderr is not a terminal).
    """
    from tqdm.auto import tqdm

    t0 = time.perf_counter()
    tasks = list(tasks)
    notes: list[str] = []
    if use_ray and not ray_available():
        notes.append("Ray is not installed: ran serially (identical numbers)")
        use_ray = False
    if not use_ray:
        bar = tqdm(total=len(tasks), desc=desc, unit="task", disable=None if progress else True)
        results = []
        for seed, part in tasks:
            results.append(fn(shared, seed, part))
            bar.update(1)
        bar.close()
        return ChipRun(results, "serial", time.perf_counter() - t0, notes=notes)

    import ray

    cpus = int(num_cpus) if num_cpus is not None else _cores()
    if cpus < 1:
        raise SettingError(f"num_cpus must be >= 1, got {num_cpus!r}")
    tmp = None
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")  # Ray 2.5x: no GPU env override, no warning
    if ray_address is None:
        tmp = tempfile.mkdtemp(prefix=RAY_TMP_PREFIX)
        ray.init(num_cpus=cpus, include_dashboard=False, log_to_driver=False, _temp_dir=tmp,
                 configure_logging=False)
    else:
        ray.init(address=ray_address, log_to_driver=False, configure_logging=False)
    start_s = time.perf_counter() - t0
    try:
        ref = ray.put(shared)
        remote = ray.remote(num_cpus=1)(fn)
        futures = [remote.remote(ref, seed, part) for seed, part in tasks]
        index = {f: i for i, f in enumerate(futures)}
        results: list[Any] = [None] * len(futures)
        bar = tqdm(total=len(futures), desc=f"{desc} (ray)", unit="task", disable=None if progress else True)
        pending = list(futures)
        while pending:
            done, pending = ray.wait(pending, num_returns=1)
            for f in done:
                results[index[f]] = ray.get(f)
                bar.update(1)
        bar.close()
    finally:
        ray.shutdown()
        if tmp is not None:
            shutil.rmtree(tmp, ignore_errors=True)
    return ChipRun(results, "ray", time.perf_counter() - t0, ray_address=ray_address, num_cpus=cpus,
                   ray_start_s=start_s, ray_session_dir=tmp, notes=notes)
