"""Small networks for the pruning experiments, trained in seconds on CPU, with optional
gradient masks (the retraining of iterative pruning).

* :func:`mlp` — flattened pixels → hidden layers (ReLU) → classes; ``hidden=(300, 100)``
  is LeNet-300-100, the MNIST network of the SuRP paper.
* :func:`train_model` — Adam on cross-entropy, mini-batches in a seeded order. With
  ``masks`` (parameter name → bool tensor) the gradients of the masked-out weights are
  zeroed before every step (the authors' retraining), so pruned weights stay exactly 0.
* :func:`evaluate` — top-1 accuracy.

torch is imported inside the functions; every random choice comes from ``seed``.
"""

from __future__ import annotations

from typing import Any, Sequence

import numpy as np

from analogmem._io import progress as progress_bar
from analogmem._seeding import SeedLike, as_seed_sequence

from ._errors import PruningError

__all__ = ["mlp", "train_model", "evaluate", "torch_seed"]


def torch_seed(seed: SeedLike, stream: int = 0) -> int:
    """A non-negative int for ``torch.Generator.manual_seed`` derived from ``seed`` and a
    stream number (different streams give independent seeds; same inputs, same int)."""
    ss = as_seed_sequence(seed)
    child = np.random.SeedSequence(ss.entropy, spawn_key=tuple(ss.spawn_key) + (int(stream),))
    return int(child.generate_state(1, np.uint64)[0] >> np.uint64(1))


def mlp(input_shape: Sequence[int], num_classes: int, hidden: Sequence[int] = (300, 100), seed: SeedLike = 0):
    """``Flatten → Linear(d, h₁) → ReLU → … → Linear(h_k, num_classes)`` with torch's default
    initialisation drawn from ``seed`` (the global torch generator is left untouched)."""
    import torch
    import torch.nn as nn

    hidden = [int(h) for h in hidden]
    if any(h < 1 for h in hidden) or num_classes < 2:
        raise PruningError(f"hidden sizes must be >= 1 and num_classes >= 2, got hidden={hidden}, "
                           f"num_classes={num_classes}")
    d = int(np.prod(input_shape))
    sizes = [d, *hidden, int(num_classes)]
    layers: list[Any] = [nn.Flatten()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(torch_seed(seed, 1))
        for i in range(len(sizes) - 1):
            layers.append(nn.Linear(sizes[i], sizes[i + 1]))
            if i < len(sizes) - 2:
                layers.append(nn.ReLU())
    return nn.Sequential(*layers)


def train_model(model: Any, x: Any, y: Any, *, epochs: int, seed: SeedLike = 0, lr: float = 1e-3,
                batch_size: int = 64, masks: dict[str, Any] | None = None, progress: bool = False,
                desc: str = "train") -> Any:
    """Train ``model`` in place on ``x`` (float tensor, (N, …)) and ``y`` (int64 labels, (N,))
    for ``epochs`` epochs of Adam; returns the model in eval mode.

    ``masks``: parameter name → bool tensor of the parameter's shape; gradients where the
    mask is False are zeroed before each step, and the masked weights are checked to be
    still exactly zero at the end (a :class:`PruningError` otherwise).
    """
    import torch
    import torch.nn.functional as F

    if epochs < 0 or batch_size < 1 or not lr > 0:
        raise PruningError(f"need epochs >= 0, batch_size >= 1, lr > 0; got {epochs}, {batch_size}, {lr}")
    params = dict(model.named_parameters())
    keep = {}
    for name, m in (masks or {}).items():
        if name not in params:
            raise PruningError(f"mask for unknown parameter {name!r}")
        m = torch.as_tensor(m, dtype=torch.bool)
        if tuple(m.shape) != tuple(params[name].shape):
            raise PruningError(f"mask for {name!r} has shape {tuple(m.shape)}, the parameter {tuple(params[name].shape)}")
        keep[name] = m
    g = torch.Generator().manual_seed(torch_seed(seed, 2))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = int(x.shape[0])
    model.train()
    bar = progress_bar(total=epochs * ((n + batch_size - 1) // batch_size), enabled=progress, desc=desc, unit="batch",
                       leave=False)
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for a in range(0, n, batch_size):
            idx = perm[a:a + batch_size]
            loss = F.cross_entropy(model(x[idx]), y[idx])
            opt.zero_grad()
            loss.backward()
            for name, m in keep.items():
                params[name].grad.mul_(m)
            opt.step()
            bar.update(1)
    bar.close()
    for name, m in keep.items():
        if torch.any(params[name].detach()[~m] != 0):
            raise PruningError(f"masked retraining revived pruned weights of {name!r}")
    return model.eval()


def evaluate(model: Any, x: Any, y: Any) -> float:
    """Top-1 accuracy (fraction in [0, 1]) of ``model`` on ``(x, y)``."""
    from analogmem.ml.models import accuracy

    return accuracy(model, x, y)
