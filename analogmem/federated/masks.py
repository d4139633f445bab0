"""Sparse random networks: frozen random weights, learned Bernoulli masks (FedPM, thesis ch.6).

Isik, Pase, Gündüz, Weissman, Zorzi, *Sparse Random Networks for Communication-Efficient
Federated Learning*, ICLR 2023; docs/federated.md:

* every weight and bias is frozen at a random sign times the constant
  ``c = e·sqrt(1/fan_in)`` (the authors' ``ME_init``; ``fan_in`` = input features of the layer),
  drawn from a seed — the seed alone regenerates all weights;
* each weight has a learned score ``s``; ``θ = sigmoid(s)`` is the probability that the weight is
  kept;
* the forward pass samples a mask ``m ~ Bern(θ)`` and uses ``w·m``; the backward pass is the
  straight-through rule of the paper's code, ``∂L/∂θ = θ·∂L/∂m``.

:class:`MaskedMLP` is a multilayer perceptron made of :class:`MaskedLinear` layers. Its masked
tensors (weights and biases, in layer order) are handled as one flat vector of ``n_params``
entries by :meth:`MaskedMLP.probabilities`, :meth:`MaskedMLP.set_probabilities` and
:meth:`MaskedMLP.use_mask`. :func:`save_masked_model` / :func:`load_masked_model` put a final
model on an analogmem store as *seed + entropy-coded mask* and rebuild it exactly.
"""

from __future__ import annotations

import math
from typing import Any, Sequence

import numpy as np
import torch

from analogmem._seeding import as_generator

from ._validation import FederatedError, check_int, check_probabilities

__all__ = [
    "PROB_EPS",
    "BernoulliStraightThrough",
    "MaskedLinear",
    "MaskedMLP",
    "signed_constant",
    "logit",
    "save_masked_model",
    "load_masked_model",
]

#: Probabilities are kept in [PROB_EPS, 1 − PROB_EPS] when they are turned back into scores
#: (the authors smooth masks to 0.01 / 0.99 for the same reason: a logit of 0 or 1 is infinite).
PROB_EPS = 0.01


def signed_constant(fan_in: int) -> float:
    """The magnitude of every frozen weight of a layer with ``fan_in`` inputs: ``e·sqrt(1/fan_in)``."""
    return math.e * math.sqrt(1.0 / check_int(fan_in, "fan_in"))


def logit(theta: np.ndarray, eps: float = PROB_EPS) -> np.ndarray:
    """Scores ``s = log(θ/(1 − θ))`` of probabilities ``θ`` clipped to ``[eps, 1 − eps]``."""
    t = np.clip(np.asarray(theta, dtype=np.float64), eps, 1.0 - eps)
    return np.log(t / (1.0 - t))


class BernoulliStraightThrough(torch.autograd.Function):
    """``m = BernoulliStraightThrough.apply(θ, generator)``: a sample ``m ~ Bern(θ)`` (same
    shape as ``θ``; ``generator`` a ``torch.Generator`` or None) whose gradient with respect to
    ``θ`` is ``θ·∂L/∂m`` (the estimator of the paper's code)."""

    @staticmethod
    def forward(ctx, theta, generator):  # noqa: D401
        ctx.save_for_backward(theta)
        return torch.bernoulli(theta, generator=generator)

    @staticmethod
    def backward(ctx, grad_output):
        (theta,) = ctx.saved_tensors
        return theta * grad_output, None


class MaskedLinear(torch.nn.Module):
    """A linear layer with frozen weights ``±c`` and a learned Bernoulli mask over weights and bias.

    Args:
        in_features, out_features: layer sizes.
        weight_sign, bias_sign: arrays of ±1, shapes ``(out, in)`` and ``(out,)``.
        weight_scores, bias_scores: initial scores (same shapes), float.
    """

    def __init__(self, in_features: int, out_features: int, weight_sign: np.ndarray, bias_sign: np.ndarray,
                 weight_scores: np.ndarray, bias_scores: np.ndarray):
        super().__init__()
        self.in_features, self.out_features = int(in_features), int(out_features)
        c = signed_constant(in_features)
        self.register_buffer("weight", torch.tensor(c * weight_sign, dtype=torch.float32))
        self.register_buffer("bias", torch.tensor(c * bias_sign, dtype=torch.float32))
        self.weight_scores = torch.nn.Parameter(torch.tensor(weight_scores, dtype=torch.float32))
        self.bias_scores = torch.nn.Parameter(torch.tensor(bias_scores, dtype=torch.float32))
        self.fixed_masks: tuple[Any, Any] | None = None
        self.generator = None

    def forward(self, x):
        if self.fixed_masks is not None:
            mw, mb = self.fixed_masks
        else:
            mw = BernoulliStraightThrough.apply(torch.sigmoid(self.weight_scores), self.generator)
            mb = BernoulliStraightThrough.apply(torch.sigmoid(self.bias_scores), self.generator)
        return torch.nn.functional.linear(x, self.weight * mw, self.bias * mb)


class MaskedMLP(torch.nn.Module):
    """A multilayer perceptron of :class:`MaskedLinear` layers with ReLU between them.

    Everything random comes from ``seed`` (a non-negative int, so it can be stored): the signs
    of the frozen weights and the initial scores ``s ~ N(0, 1)`` (the authors' initialisation).
    Inputs of any shape ``(N, ...)`` are flattened to ``(N, in_features)``; outputs are logits
    ``(N, num_classes)``.

    In training mode (no fixed mask) every forward pass draws a fresh mask from ``generator``
    (a ``torch.Generator``, set with :meth:`set_generator`); :meth:`use_mask` fixes a mask
    (evaluation, the final model).
    """

    def __init__(self, in_features: int, hidden: Sequence[int], num_classes: int, seed: int = 0):
        super().__init__()
        sizes = [check_int(in_features, "in_features")] + [check_int(h, "hidden width") for h in hidden] \
            + [check_int(num_classes, "num_classes", 2)]
        self.seed = check_int(seed, "seed", 0)
        self.sizes = tuple(sizes)
        rng = as_generator(self.seed)
        layers = []
        for a, b in zip(sizes[:-1], sizes[1:]):
            ws = rng.integers(0, 2, size=(b, a)) * 2.0 - 1.0
            bs = rng.integers(0, 2, size=b) * 2.0 - 1.0
            layers.append(MaskedLinear(a, b, ws, bs, rng.standard_normal((b, a)), rng.standard_normal(b)))
        self.layers = torch.nn.ModuleList(layers)

    # ------------------------------------------------------------------ shapes
    def masked_shapes(self) -> list[tuple[int, ...]]:
        """Shapes of the masked tensors in flat order (weight, bias of each layer)."""
        out: list[tuple[int, ...]] = []
        for layer in self.layers:
            out += [tuple(layer.weight.shape), tuple(layer.bias.shape)]
        return out

    @property
    def n_params(self) -> int:
        """Number of masked parameters (weights + biases)."""
        return int(sum(int(np.prod(s)) for s in self.masked_shapes()))

    def _scores(self):
        for layer in self.layers:
            yield layer.weight_scores
            yield layer.bias_scores

    # ------------------------------------------------------------------ flat views
    def probabilities(self) -> np.ndarray:
        """θ = sigmoid(scores) of every masked parameter, flat float64 ``(n_params,)``."""
        with torch.no_grad():
            return np.concatenate([torch.sigmoid(s).double().reshape(-1).numpy() for s in self._scores()])

    def set_probabilities(self, theta: np.ndarray, eps: float = PROB_EPS) -> None:
        """Set the scores to ``logit(θ)`` (θ clipped to ``[eps, 1 − eps]``); ``θ`` flat ``(n_params,)``."""
        theta = check_probabilities(theta, "theta")
        if theta.size != self.n_params:
            raise FederatedError(f"theta has {theta.size} entries; this network has {self.n_params} masked parameters")
        s = logit(theta, eps)
        i = 0
        with torch.no_grad():
            for p in self._scores():
                p.copy_(torch.from_numpy(s[i:i + p.numel()].reshape(p.shape)).float())
                i += p.numel()

    def use_mask(self, mask: np.ndarray | None) -> None:
        """Fix the mask (flat 0/1 array ``(n_params,)``) for every forward pass; ``None`` goes back
        to sampling."""
        if mask is None:
            for layer in self.layers:
                layer.fixed_masks = None
            return
        m = np.asarray(mask).reshape(-1)
        if m.size != self.n_params or not np.isin(m, (0, 1)).all():
            raise FederatedError(f"mask must be {self.n_params} zeros and ones, got {m.size} entries "
                                 f"with values {np.unique(m)[:5].tolist()}")
        i = 0
        for layer in self.layers:
            nw, nb = layer.weight.numel(), layer.bias.numel()
            mw = torch.from_numpy(m[i:i + nw].reshape(layer.weight.shape).astype(np.float32))
            mb = torch.from_numpy(m[i + nw:i + nw + nb].astype(np.float32))
            layer.fixed_masks = (mw, mb)
            i += nw + nb

    def set_generator(self, generator) -> None:
        """Draw the training masks from ``generator`` (a ``torch.Generator``)."""
        for layer in self.layers:
            layer.generator = generator

    def forward(self, x):
        x = x.reshape(x.shape[0], -1)
        for i, layer in enumerate(self.layers):
            x = layer(x)
            if i < len(self.layers) - 1:
                x = torch.relu(x)
        return x


# ---------------------------------------------------------------------- stores
_ARCH, _SEED, _MASK = "fedpm.architecture", "fedpm.seed", "fedpm.mask_coded"


def save_masked_model(store: Any, model: MaskedMLP, mask: np.ndarray, prefix: str = "") -> dict[str, int]:
    """Put the final FedPM model on an analogmem store as *seed + mask*.

    Three digital tensors (exact storage, :meth:`~analogmem.storage.Store.put_digital`): the
    layer sizes (int64), the weight seed (int64) and the mask coded with
    :func:`~analogmem.federated.entropy.encode_mask` (uint8 bytes). Returns the bit counts
    (``mask_bits`` is the coded mask: about ``h₂(p̂)`` bits per parameter, ≤ 1).
    """
    from .entropy import encode_mask

    m = np.asarray(mask).reshape(-1)
    if m.size != model.n_params:
        raise FederatedError(f"mask has {m.size} entries; the model has {model.n_params} masked parameters")
    coded = np.frombuffer(encode_mask(m), dtype=np.uint8)
    store.put_digital(prefix + _ARCH, np.asarray(model.sizes, dtype=np.int64))
    store.put_digital(prefix + _SEED, np.asarray([model.seed], dtype=np.int64))
    store.put_digital(prefix + _MASK, coded)
    return {"mask_bits": int(coded.size * 8), "header_bits": 64 * (len(model.sizes) + 1),
            "n_params": model.n_params}


def load_masked_model(store: Any, prefix: str = "") -> MaskedMLP:
    """Rebuild the model saved by :func:`save_masked_model`: weights regenerated from the seed,
    the decoded mask fixed; returns it in eval mode."""
    from .entropy import decode_mask

    sizes = [int(v) for v in store.get(prefix + _ARCH)]
    seed = int(store.get(prefix + _SEED)[0])
    model = MaskedMLP(sizes[0], sizes[1:-1], sizes[-1], seed=seed)
    coded = np.asarray(store.get(prefix + _MASK), dtype=np.uint8).tobytes()
    model.use_mask(decode_mask(coded, model.n_params))
    return model.eval()
