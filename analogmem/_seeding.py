"""One place that turns whatever the user passed as randomness into numpy objects.

Every stochastic function in analogmem takes ``seed`` — ``None``, an ``int`` (or a
sequence of ints), a :class:`numpy.random.SeedSequence`, a
:class:`numpy.random.BitGenerator` or a :class:`numpy.random.Generator` — and coerces it
here, once. Nothing in analogmem draws from numpy's global state.
"""

from __future__ import annotations

from typing import Union

import numpy as np

from .errors import SettingError, SettingTypeError

__all__ = ["SeedLike", "as_seed_sequence", "as_generator", "spawn", "seed_state", "seed_from_state"]

SeedLike = Union[None, int, "list[int]", np.random.SeedSequence, np.random.BitGenerator, np.random.Generator]


def as_seed_sequence(seed: SeedLike) -> np.random.SeedSequence:
    """Return a :class:`~numpy.random.SeedSequence` for ``seed``.

    - ``None`` → fresh OS entropy (non-reproducible);
    - an int / sequence of ints → ``SeedSequence(seed)`` (reproducible);
    - a ``SeedSequence`` → itself;
    - a ``Generator`` or ``BitGenerator`` → a child spawned from its seed sequence, so
      repeated calls with the same generator give distinct, reproducible streams and the
      generator's own stream is not consumed.
    """
    if isinstance(seed, np.random.SeedSequence):
        return seed
    if isinstance(seed, np.random.Generator):
        seed = seed.bit_generator
    if isinstance(seed, np.random.BitGenerator):
        parent = seed.seed_seq
        if isinstance(parent, np.random.SeedSequence):
            return parent.spawn(1)[0]
        # A bit generator made from a legacy seed: derive entropy from its stream.
        return np.random.SeedSequence(np.random.Generator(seed).integers(0, 2**63, size=4).tolist())
    if seed is None or isinstance(seed, (int, np.integer)) or (
        isinstance(seed, (list, tuple)) and all(isinstance(s, (int, np.integer)) for s in seed)
    ):
        if isinstance(seed, (int, np.integer)) and seed < 0:
            raise SettingError(f"seed must be a non-negative integer, got {seed}")
        return np.random.SeedSequence(seed)
    raise SettingTypeError(
        "seed must be None, an int, a sequence of ints, a numpy SeedSequence, BitGenerator "
        f"or Generator; got {type(seed).__name__}"
    )


def as_generator(seed: SeedLike) -> np.random.Generator:
    """Return a :class:`~numpy.random.Generator`: ``seed`` itself if it is one, else a
    PCG64 generator seeded from :func:`as_seed_sequence`."""
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.Generator(np.random.PCG64(as_seed_sequence(seed)))


def spawn(seed: SeedLike, n: int) -> list[np.random.SeedSequence]:
    """``n`` independent child seed sequences of ``seed`` (for threads, trials, clients)."""
    return as_seed_sequence(seed).spawn(n)


def seed_state(ss: np.random.SeedSequence) -> dict:
    """A JSON-able record of ``ss`` (entropy, spawn key, pool size, children spawned), so
    that a saved object says exactly which random state made it."""
    return {"entropy": str(ss.entropy), "spawn_key": [int(k) for k in ss.spawn_key],
            "pool_size": int(ss.pool_size), "n_children_spawned": int(ss.n_children_spawned)}


def seed_from_state(state: dict) -> np.random.SeedSequence:
    """The :class:`~numpy.random.SeedSequence` recorded by :func:`seed_state`."""
    return np.random.SeedSequence(int(state["entropy"]), spawn_key=tuple(state["spawn_key"]),
                                  pool_size=int(state["pool_size"]),
                                  n_children_spawned=int(state["n_children_spawned"]))
