"""ResNets defined in the project (no torchvision), training, evaluation and a
checkpoint cache.

* :func:`resnet_cifar` — the CIFAR-style ResNet family of He et al. (2016): a 3×3 stem,
  three stages of ``(depth − 2)/6`` basic blocks with widths ``w, 2w, 4w``, global average
  pooling; ``depth = 20`` is ResNet-20 (0.27 M parameters at ``w = 16``). Adapted to the
  input size: inputs ≥ 24 pixels (28×28 MNIST) get a stride-2 stem, smaller ones (8×8
  digits) a stride-1 stem.
* :func:`resnet18` — ResNet-18 (basic blocks ``[2, 2, 2, 2]``, widths 64–512, CIFAR 3×3
  stem): 11.2 M parameters for 10 classes.
* :func:`train`, :func:`accuracy`, :func:`pretrained` (train once, cache the checkpoint
  under :func:`analogmem.ml.datasets.cache_dir`, reuse it).
"""

from __future__ import annotations

import hashlib
import io
import json
from pathlib import Path
from typing import Any

from .._io import atomic_write_bytes, progress as progress_bar
from ..errors import PathMissingError, SettingError
from .datasets import Split, cache_dir

__all__ = ["resnet_cifar", "resnet20", "resnet18", "train", "accuracy", "pretrained", "count_parameters"]


def _torch():
    import torch
    import torch.nn as nn
    import torch.nn.functional as F

    return torch, nn, F


def _block_class():
    torch, nn, F = _torch()

    class BasicBlock(nn.Module):
        """Two 3×3 conv + BN, identity (or 1×1 conv + BN) shortcut."""

        def __init__(self, cin: int, cout: int, stride: int):
            super().__init__()
            self.conv1 = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
            self.bn1 = nn.BatchNorm2d(cout)
            self.conv2 = nn.Conv2d(cout, cout, 3, 1, 1, bias=False)
            self.bn2 = nn.BatchNorm2d(cout)
            self.shortcut = nn.Sequential()
            if stride != 1 or cin != cout:
                self.shortcut = nn.Sequential(nn.Conv2d(cin, cout, 1, stride, bias=False), nn.BatchNorm2d(cout))

        def forward(self, x):
            y = F.relu(self.bn1(self.conv1(x)))
            return F.relu(self.bn2(self.conv2(y)) + self.shortcut(x))

    return BasicBlock


def _resnet(stages: list[tuple[int, int]], in_channels: int, num_classes: int, stem_width: int, stem_stride: int):
    torch, nn, F = _torch()
    Block = _block_class()
    layers = [nn.Conv2d(in_channels, stem_width, 3, stem_stride, 1, bias=False), nn.BatchNorm2d(stem_width),
              nn.ReLU(inplace=True)]
    cin = stem_width
    for k, (width, n_blocks) in enumerate(stages):
        for j in range(n_blocks):
            layers.append(Block(cin, width, 2 if (j == 0 and k > 0) else 1))
            cin = width
    layers += [nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(cin, num_classes)]
    return nn.Sequential(*layers)


def resnet_cifar(depth: int = 20, in_channels: int = 1, num_classes: int = 10, width: int = 16,
                 input_size: int = 28):
    """CIFAR-style ResNet of ``depth = 6n + 2`` layers (20, 32, 44, 56, ...)."""
    if depth < 8 or (depth - 2) % 6:
        raise SettingError(f"depth must be 6n + 2 (20, 32, 44, ...), got {depth!r}")
    n = (depth - 2) // 6
    return _resnet([(width, n), (2 * width, n), (4 * width, n)], in_channels, num_classes, width,
                   2 if input_size >= 24 else 1)


def resnet20(in_channels: int = 1, num_classes: int = 10, input_size: int = 28, width: int = 16):
    """ResNet-20 (0.27 M parameters at width 16)."""
    return resnet_cifar(20, in_channels, num_classes, width, input_size)


def resnet18(in_channels: int = 3, num_classes: int = 10, input_size: int = 32):
    """ResNet-18 with a CIFAR 3×3 stem (11.2 M parameters for 10 classes)."""
    return _resnet([(64, 2), (128, 2), (256, 2), (512, 2)], in_channels, num_classes, 64,
                   2 if input_size >= 64 else 1)


def count_parameters(module: Any) -> int:
    return int(sum(p.numel() for p in module.parameters()))


def train(model: Any, data: Split, epochs: int = 3, batch_size: int = 64, lr: float = 2e-3, seed: int = 0,
          progress: bool = True) -> Any:
    """Train ``model`` on ``data`` with Adam + one-cycle LR and light shift augmentation
    (±2 px); deterministic for a seed. Returns the model in eval mode."""
    torch, nn, F = _torch()

    g = torch.Generator().manual_seed(int(seed))
    opt = torch.optim.Adam(model.parameters(), lr=lr)
    n = data.x_train.shape[0]
    steps = epochs * ((n + batch_size - 1) // batch_size)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=lr, total_steps=steps)
    model.train()
    bar = progress_bar(total=steps, enabled=progress, desc="train", unit="batch")
    for _ in range(epochs):
        perm = torch.randperm(n, generator=g)
        for a in range(0, n, batch_size):
            idx = perm[a:a + batch_size]
            x = data.x_train[idx]
            if x.shape[-1] >= 16:  # random shifts by up to 2 px
                dx, dy = (int(v) for v in torch.randint(-2, 3, (2,), generator=g))
                x = torch.roll(x, (dy, dx), dims=(2, 3))
            loss = F.cross_entropy(model(x), data.y_train[idx])
            opt.zero_grad()
            loss.backward()
            opt.step()
            sched.step()
            bar.update(1)
            bar.set_postfix(loss=f"{loss.item():.3f}")
    bar.close()
    return model.eval()


def accuracy(model: Any, x: Any, y: Any, batch_size: int = 500) -> float:
    """Top-1 accuracy (fraction) of ``model`` (eval mode) on ``x``, ``y``."""
    torch, _, _ = _torch()
    model.eval()
    correct = 0
    with torch.no_grad():
        for a in range(0, x.shape[0], batch_size):
            correct += int((model(x[a:a + batch_size]).argmax(1) == y[a:a + batch_size]).sum())
    return correct / max(int(x.shape[0]), 1)


def pretrained(data: Split, depth: int = 20, width: int = 16, epochs: int = 3, seed: int = 0,
               checkpoint: str | Path | None = None, progress: bool = True) -> tuple[Any, dict[str, Any]]:
    """A ResNet-``depth`` trained on ``data``: loaded from ``checkpoint`` if given (a
    ``state_dict`` saved by ``torch.save``), else from the cache, else trained now and
    cached (atomically) under :func:`~analogmem.ml.datasets.cache_dir`. Returns ``(model, info)``."""
    torch, _, _ = _torch()
    c, h, w = data.input_shape
    model = resnet_cifar(depth, c, data.num_classes, width, h)
    config = {"arch": f"resnet{depth}", "width": width, "dataset": data.name, "n_train": int(data.x_train.shape[0]),
              "input_shape": [c, h, w], "epochs": epochs, "seed": seed, "recipe": 1}
    key = hashlib.sha256(json.dumps(config, sort_keys=True).encode()).hexdigest()[:16]
    path = Path(checkpoint) if checkpoint else cache_dir() / f"{config['arch']}-{data.name}-{key}.pt"
    info = {"config": config, "checkpoint": str(path)}
    if path.exists():
        model.load_state_dict(torch.load(path, map_location="cpu", weights_only=True))
        info["trained_now"] = False
        return model.eval(), info
    if checkpoint:
        raise PathMissingError(f"checkpoint {str(path)!r} does not exist")
    torch.manual_seed(seed)
    model = resnet_cifar(depth, c, data.num_classes, width, h)
    train(model, data, epochs=epochs, seed=seed, progress=progress)
    buf = io.BytesIO()
    torch.save(model.state_dict(), buf)
    atomic_write_bytes(path, buf.getvalue())
    info["trained_now"] = True
    return model.eval(), info
