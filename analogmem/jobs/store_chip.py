"""One emulated chip of the main job: store each planned configuration of a model on it and
read the test accuracy back at the planned times.

:func:`chip_accuracies` is the task :func:`analogmem.chips.run_chips` runs once per chip
(serially or as a Ray task). It reads a *shared* dict, the same for every chip:

* ``arch``: keyword arguments of :func:`analogmem.ml.models.resnet_cifar`;
* ``models``: model name → state dict as numpy arrays (the dense model, pruned variants);
* ``plans``: plan key → ``{"model", "encoder" (spec), "counts" (name → uint8 array, or
  None), "n_cells", "t_fit_s", "times_s", "reference"}``; with ``"sparse": True`` the model
  is stored in digital sparse form — only the weights with ``counts > 0``, one tensor of
  values each — and ``"mask_bits"`` is what its keep-masks cost; ``reference`` (digital plans) names
  an entry of ``references``: the state dict an error-free read returns and its accuracy, so
  a read that decodes to exactly those weights is not evaluated again (its accuracy is the
  same number, exactly);
* ``x``, ``y``: the images (float32, ``(N, C, H, W)``) and labels (int64) to evaluate on;
* ``device``: the card; ``threads``: torch, BLAS and kernel threads (fixed, so that a chip
  gives the same numbers wherever it runs);
* ``screen`` (optional): instead of evaluating, return each read's Fisher-weighted squared
  error ``Σ_i h_i (ŵ_i − w_ref,i)²`` against the plan's reference (``fisher``: model name →
  parameter name → ``h``);
* ``verify`` (optional): ``{"run_effect", "windows"}``, program every cell with write-verify
  into those windows, the chip one campaign (:mod:`analogmem.jobs.store_verify`).

Each plan is programmed on its own cells of the chip: seed
``SeedSequence(chip.entropy, spawn_key=chip.spawn_key + (crc32(plan key),))``, so a plan's
result does not depend on which other plans run.
"""

from __future__ import annotations

import zlib
from typing import Any, Sequence

import numpy as np

__all__ = ["chip_accuracies", "plan_seed", "build_model"]


def plan_seed(chip: np.random.SeedSequence, key: str) -> np.random.SeedSequence:
    """The seed of plan ``key`` on ``chip`` (independent of the other plans)."""
    return np.random.SeedSequence(chip.entropy, spawn_key=tuple(chip.spawn_key) + (zlib.crc32(key.encode()),),
                                  pool_size=chip.pool_size)


def build_model(arch: dict[str, Any], state: dict[str, np.ndarray]) -> Any:
    """A ResNet of ``arch`` carrying ``state`` (numpy arrays), in eval mode."""
    import torch

    from ..ml.models import resnet_cifar

    model = resnet_cifar(**arch)
    model.load_state_dict({k: torch.from_numpy(np.ascontiguousarray(v)) for k, v in state.items()})
    return model.eval()


def _same(a: dict[str, np.ndarray], b: dict[str, np.ndarray]) -> bool:
    return all(np.array_equal(a[k], np.asarray(b[k])) for k in a)


def _store_sparse(state: dict[str, np.ndarray], keep: dict[str, np.ndarray], store: Any, enc: Any):
    """A pruned model in digital form: of every parameter only the kept values (``keep[name]``
    > 0, flat order) go on the cells with ``enc``; the rest of the state is kept digital and
    the keep-masks are side information (counted by the planner). Returns the reader
    ``t ↦ state dict``."""
    for name, v in state.items():
        if name in keep:
            store.put(name, v.reshape(-1)[np.asarray(keep[name]) > 0], encoder=enc)
        else:
            store.put_digital(name, v)

    def read(t: float) -> dict[str, np.ndarray]:
        got = store.get_all(t)
        out = {}
        for name, v in state.items():
            if name in keep:
                full = np.zeros(v.size, dtype=v.dtype)
                full[np.asarray(keep[name]) > 0] = got[name]
                out[name] = full.reshape(v.shape)
            else:
                out[name] = got[name]
        return out

    return read


def chip_accuracies(shared: dict[str, Any], seed: np.random.SeedSequence,
                    keys: Sequence[str] | None = None) -> dict[str, dict[str, Any]]:
    """Program the plans ``keys`` (default: all) on the chip ``seed`` and evaluate.

    Returns plan key → ``{"accuracy": [fraction per time of the plan], "weighted_error"
    (screening only), "analog_cells",
    "side_info_bits", "allocation_map_bits", "exact_reads"}`` (``exact_reads``: reads that
    decoded to exactly the reference weights), with ``verify`` also ``"verify"``: the cells,
    pulses and failed cells of the plan's program calls."""
    import warnings

    import torch
    from threadpoolctl import threadpool_limits

    from ..emulator.pulse_response import WindowSupportWarning
    from ..ml.models import accuracy
    from ..storage.encoders import encoder_from_spec
    from ..storage.stores import EmulatedStore, store_model
    from .store_verify import chip_verify

    threads = int(shared.get("threads", 1))
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    x, y = torch.from_numpy(shared["x"]), torch.from_numpy(shared["y"])
    models: dict[str, Any] = {}
    out: dict[str, dict[str, Any]] = {}
    verify = chip_verify(shared.get("verify"), seed)
    try:
        with threadpool_limits(limits=threads), warnings.catch_warnings():
            warnings.simplefilter("ignore", WindowSupportWarning)  # the job reports its windows' support once
            for key in (list(shared["plans"]) if keys is None else keys):
                plan = shared["plans"][key]
                if plan["model"] not in models:
                    models[plan["model"]] = build_model(shared["arch"], shared["models"][plan["model"]])
                model = models[plan["model"]]
                store = EmulatedStore(shared["device"], max(int(plan["n_cells"]), 1), seed=plan_seed(seed, key),
                                      n_threads=threads, verify=verify)
                enc = encoder_from_spec(plan["encoder"])
                if plan.get("sparse"):
                    read = _store_sparse(shared["models"][plan["model"]], plan["counts"], store, enc)
                else:
                    handle = store_model(model, store, encoder=enc, counts=plan["counts"],
                                         t_fit_s=float(plan["t_fit_s"]))
                    read = lambda t, h=handle: store.get_all(t, h.analog + h.digital)  # noqa: E731
                ref = shared["references"].get(plan.get("reference")) if plan.get("reference") else None
                accs, errs, exact = [], [], 0
                for t in plan["times_s"]:
                    values = read(float(t))
                    if shared.get("screen"):  # no network: the Fisher-weighted error against the reference
                        h = shared["fisher"][plan["model"]]
                        errs.append(float(sum(np.sum(h[n] * (np.asarray(values[n], dtype=np.float64)
                                                             - ref["state"][n]) ** 2) for n in h)))
                        continue
                    if ref is not None and _same(ref["state"], values):
                        accs.append(float(ref["accuracy"]))
                        exact += 1
                        continue
                    m = build_model(shared["arch"], values)
                    accs.append(accuracy(m, x, y))
                u = store.usage()
                out[key] = {"accuracy": accs, "weighted_error": errs, "analog_cells": int(u["analog_cells"]),
                            "side_info_bits": int(u["side_info_bits"]),
                            "allocation_map_bits": int(plan.get("mask_bits", u["allocation_map_bits"])),
                            "exact_reads": exact}
                if verify is not None:
                    out[key]["verify"] = dict(store.verify_totals)
    finally:
        torch.set_num_threads(before)
    return out
