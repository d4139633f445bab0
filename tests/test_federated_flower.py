"""analogmem.federated on Flower: the strategies' hooks (driven with real Flower messages, no Ray)
and tiny end-to-end simulations on Flower's simulation engine (Ray backend, 1 CPU)."""

from __future__ import annotations

import argparse
import json

import numpy as np
import pytest
import torch

from analogmem.federated import FederatedConfig, FederatedError, run_federated
from analogmem.federated.cli import add_subparser, main
from analogmem.federated.flower_app import (
    FedPMStrategy,
    KLMSStrategy,
    SeededFedAvg,
    SignKLMSStrategy,
    _client_train,
    dense_model,
)

TINY = dict(dataset="digits", n_clients=3, rounds=2, hidden=(32,), local_epochs=1, max_train=300, max_test=200,
            num_cpus=1)


@pytest.fixture(autouse=True)
def _one_thread():
    n = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(n)


@pytest.fixture
def flower_run():
    """Flower messages need a run identity; a simulation sets one, these offline tests set their own."""
    from flwr.supercore.task_identity import TaskIdentity

    saved = (TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id)
    TaskIdentity.task_id, TaskIdentity.run_id, TaskIdentity.node_id = 1, 1, 0
    yield
    TaskIdentity._task_id, TaskIdentity._run_id, TaskIdentity._node_id = saved


def _one_round(strategy, cfg, server_round, arrays, partitions):
    """Send ``arrays`` to ``partitions`` as Flower train messages, run the ClientApp's train handler on
    each, and return the replies."""
    from flwr.app import ConfigRecord, Context, Message, MessageType, RecordDict

    config = ConfigRecord({"server-round": server_round, **strategy.round_config(server_round)})
    replies = []
    for pid in partitions:
        msg = Message(content=RecordDict({"arrays": arrays, "config": config}), dst_node_id=100 + pid,
                      message_type=MessageType.TRAIN)
        ctx = Context(run_id=1, node_id=100 + pid, node_config={"partition-id": pid, "num-partitions": cfg.n_clients},
                      state=RecordDict(), run_config={})
        replies.append(_client_train(cfg, msg, ctx))
    return replies


def test_fedavg_strategy_is_flowers_weighted_average(flower_run):
    cfg = FederatedConfig(method="fedavg", **TINY)
    strategy = SeededFedAvg(cfg)
    from flwr.app import ArrayRecord

    replies = _one_round(strategy, cfg, 1, ArrayRecord(dense_model(cfg).state_dict()), [0, 1, 2])
    arrays, _ = strategy.aggregate_train(1, replies)
    n = [int(r.content["metrics"]["num-examples"]) for r in replies]
    for key in arrays:
        want = sum(k * r.content["arrays"][key].numpy() for k, r in zip(n, replies)) / sum(n)
        np.testing.assert_allclose(arrays[key].numpy(), want, rtol=1e-5, atol=1e-7)
    row = strategy.log.rounds[1]
    n_params = sum(p.numel() for p in dense_model(cfg).parameters())
    assert row["uplink_bpp"] == 32.0 and row["uplink_bits_total"] == 3 * 32 * n_params


def test_fedpm_strategy_aggregates_decoded_masks(flower_run):
    cfg = FederatedConfig(method="fedpm", **TINY)
    strategy = FedPMStrategy(cfg)
    replies = _one_round(strategy, cfg, 1, strategy.initial_arrays(), [0, 1, 2])
    arrays, metrics = strategy.aggregate_train(1, replies)
    theta = arrays["theta"].numpy()
    masks = [strategy.decode_upload(r, 1) for r in replies]
    np.testing.assert_allclose(theta, np.mean(masks, axis=0))  # Beta(1,1), reset each round: the mean mask
    for r, m in zip(replies, masks):
        bits = 8 * len(r.content["upload"]["payload"])
        assert int(r.content["metrics"]["uplink-bits"]) == bits
        assert r.content["metrics"]["p-hat"] == pytest.approx(m.mean())
        assert bits / m.size <= r.content["metrics"]["bound-bpp"] + 96 / m.size
    assert metrics["uplink-bpp"] <= 1.0 + 96 / theta.size


def test_klms_strategy_broadcasts_block_lengths_between_refreshes(flower_run):
    cfg = FederatedConfig(method="klms", boundaries="sent", boundary_refresh=2, **TINY)
    strategy = KLMSStrategy(cfg)
    assert strategy.round_config(1) == {}
    replies = _one_round(strategy, cfg, 1, strategy.initial_arrays(), [0, 1, 2])
    arrays, _ = strategy.aggregate_train(1, replies)
    assert all(int(r.content["metrics"]["lengths-sent"]) == 1 for r in replies)
    assert set(np.unique(arrays["theta"].numpy())) <= {0.0, 1 / 3, 2 / 3, 1.0}
    lengths = strategy.round_config(2)["block-lengths"]
    assert sum(lengths) == strategy.n_params and max(lengths) <= 256
    replies2 = _one_round(strategy, cfg, 2, arrays, [0, 2])
    strategy.aggregate_train(2, replies2)
    for r in replies2:  # only the indices: log₂K = 2 bits per shared block, padded to a byte
        assert int(r.content["metrics"]["lengths-sent"]) == 0
        assert int(r.content["metrics"]["uplink-bits"]) == 8 * -(-2 * len(lengths) // 8)
    assert strategy.round_config(3) == {}  # round 3 refreshes


def test_klms_strategy_with_predicted_boundaries_counts_table_and_indices(flower_run):
    from analogmem.federated import probability_bins
    from analogmem.federated.masks import PROB_EPS

    cfg = FederatedConfig(method="klms", oversample_bits=1, **TINY)
    assert cfg.boundaries == "predicted"
    strategy = KLMSStrategy(cfg)
    replies = _one_round(strategy, cfg, 1, strategy.initial_arrays(), [0, 1, 2])
    arrays, _ = strategy.aggregate_train(1, replies)
    replies2 = _one_round(strategy, cfg, 2, arrays, [0, 1, 2])
    p2 = np.clip(arrays["theta"].numpy(), PROB_EPS, 1 - PROB_EPS)
    n_occ = np.unique(probability_bins(p2, cfg.n_bins)).size  # θ ∈ {0, 1/3, 2/3, 1}: 4 bins
    for r in replies2:
        m = r.content["metrics"]
        assert int(m["lengths-sent"]) == 0 and int(m["boundary-bits"]) == 16 * n_occ
        # uplink = the bytes sent: ⌈(16·bins + log₂K·blocks)/8⌉ bytes, K = 8
        assert int(m["uplink-bits"]) == 8 * len(r.content["upload"]["payload"])
        assert int(m["uplink-bits"]) == 8 * -(-(16 * n_occ + 3 * int(m["n-blocks"])) // 8)
    strategy.aggregate_train(2, replies2)
    assert strategy.log.rounds[2]["boundary_bits_mean"] == 16 * n_occ
    with pytest.raises(FederatedError, match="needs boundaries='sent'"):
        FederatedConfig(method="klms", boundary_refresh=2)


def test_signsgd_klms_strategy_applies_scaled_signs(flower_run):
    cfg = FederatedConfig(method="signsgd-klms", server_lr=0.5, **TINY)
    strategy = SignKLMSStrategy(cfg)
    before = {k: v.copy() for k, v in strategy.weights.items()}
    replies = _one_round(strategy, cfg, 1, strategy.initial_arrays(), [1])
    strategy.aggregate_train(1, replies)
    scales = np.frombuffer(replies[0].content["upload"]["scales"], dtype="<f4")
    for (k, w), b in zip(strategy.weights.items(), scales):
        np.testing.assert_allclose(np.abs(w - before[k]), 0.5 * b, rtol=1e-6)  # w += η·B·(±1)
    kl = replies[0].content["metrics"]["kl-bits"]
    bits = int(replies[0].content["metrics"]["uplink-bits"])
    n = sum(v.size for v in before.values())
    assert bits < n / 4 and kl >= 0  # far below 1 bit per parameter


def test_fedpm_flower_simulation_runs_two_rounds_with_partial_participation():
    import ray

    cfg = FederatedConfig(method="fedpm", fraction=0.67, **TINY)
    res = run_federated(cfg, progress=False)
    assert not ray.is_initialized()
    assert [r["round"] for r in res.rows] == [0, 1, 2]
    strategy = SeededFedAvg(cfg)
    for r in res.rows[1:]:
        assert r["clients"] == strategy.sampled_partitions(r["round"]) and len(r["clients"]) == 2
        assert 0.0 <= r["test_accuracy"] <= 1.0
        assert r["uplink_bpp"] <= r["bound_bpp_mean"] + 96 / res.n_params
        assert r["uplink_bits_total"] == pytest.approx(2 * r["uplink_bpp"] * res.n_params)
    assert res.rows[2]["cumulative_uplink_bits"] == res.rows[1]["uplink_bits_total"] + res.rows[2]["uplink_bits_total"]
    assert res.final_arrays["theta"].shape == (res.n_params,) and res.final_mask().dtype == np.uint8
    assert res.summary()["final_model_mask_bpp"] <= 1.0 + 96 / res.n_params


def test_cli_klms_writes_table_json_and_plot(tmp_path, capsys):
    import ray

    out, png = tmp_path / "k.json", tmp_path / "k.png"
    argv = ["fl", "klms", "--dataset", "digits", "--clients", "3", "--rounds", "2", "--hidden", "32",
            "--local-epochs", "1", "--max-train", "300", "--max-test", "200", "--num-cpus", "1",
            "--boundaries", "sent", "--boundary-refresh", "2", "--json", str(out), "--plot", str(png), "--no-progress", "--seed", "3"]
    assert main(argv) == 0
    assert not ray.is_initialized()
    text = capsys.readouterr().out
    assert "| round | test acc (%) | uplink bpp |" in text and "| klms |" in text
    data = json.loads(out.read_text())
    assert data["command"] == "analogmem fl klms" and "uplink_bpp" in data["units"]
    run = data["runs"][0]
    assert run["settings"]["seed"] == 3 and run["settings"]["boundary_refresh"] == 2
    assert [r["lengths_sent_mean"] for r in run["rounds"][1:]] == [1.0, 0.0]
    assert run["rounds"][2]["uplink_bpp"] < run["rounds"][1]["uplink_bpp"] < 1.0
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"


def test_cli_rejects_bad_settings_before_starting_ray():
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    args = parser.parse_args(["fl", "fedpm", "--fraction", "1.5", "--no-progress"])
    with pytest.raises(FederatedError, match="fraction must be a fraction in \\(0, 1\\]"):
        args.func(args)
    with pytest.raises(SystemExit):
        parser.parse_args(["fl"])
    with pytest.raises(FederatedError, match="method must be one of"):
        FederatedConfig(method="fedprox")
    # K = 2^(⌈budget⌉ + oversample): 4 candidates per 2-bit block, 8 with one extra bit
    assert FederatedConfig(method="klms").n_samples == 4
    assert FederatedConfig(method="klms", oversample_bits=1).n_samples == 8
    with pytest.raises(FederatedError, match="oversample_bits"):
        FederatedConfig(method="klms", oversample_bits=-1)


def _compare_args(*argv):
    parser = argparse.ArgumentParser(prog="analogmem")
    add_subparser(parser.add_subparsers(dest="command", required=True))
    return parser.parse_args(["fl", "compare", *argv])


def test_compare_entries_and_per_method_rounds_resolve_before_any_run():
    from analogmem.federated.cli import config_from_args, parse_entry, parse_rounds

    assert parse_rounds("20") == {None: 20}
    assert parse_rounds("fedavg=20,fedpm=25,klms=40") == {None: 20, "fedavg": 20, "fedpm": 25, "klms": 40}
    assert parse_entry("klms:oversample-bits=1,boundaries=sent") == ("klms", {"oversample_bits": 1, "boundaries": "sent"})
    args = _compare_args("--rounds", "10,klms=40", "--methods", "fedavg", "klms:oversample-bits=1",
                         "klms:boundaries=sent,boundary-refresh=5,rounds=7")
    cfgs = [config_from_args(args, m) for m in args.methods]
    assert [c.method for c in cfgs] == ["fedavg", "klms", "klms"]
    assert [c.rounds for c in cfgs] == [10, 40, 7]  # an entry's own rounds win over --rounds METHOD=N
    assert cfgs[1].n_samples == 8 and cfgs[1].boundaries == "predicted"
    assert (cfgs[2].n_samples, cfgs[2].boundaries, cfgs[2].boundary_refresh) == (4, "sent", 5)
    for bad, match in [(("--methods", "fedprox"), "method must be one of"),
                       (("--methods", "klms:K=8"), "not OPTION=VALUE"),
                       (("--methods", "klms:oversample-bits=x"), "oversample-bits must be int"),
                       (("--methods", "klms:boundary-refresh=5"), "needs boundaries='sent'"),
                       (("--rounds", "fedprox=3"), "not a method"),
                       (("--rounds", "klms=many"), "not N or METHOD=N")]:
        args = _compare_args(*bad, "--no-progress")
        with pytest.raises(FederatedError, match=match):
            args.func(args)  # refused before Ray starts


def test_summary_table_and_payload_measure_every_run_at_fedavgs_target():
    from analogmem.federated import FederatedResult, format_summary_table, result_payload

    def fake(method, accs, bpp, label=None):
        rows = [{"round": 0, "test_accuracy": 0.1, "uplink_bpp": 0.0, "cumulative_bpp": 0.0, "cumulative_uplink_bits": 0}]
        for i, a in enumerate(accs, 1):
            rows.append({"round": i, "test_accuracy": a, "uplink_bpp": bpp, "cumulative_bpp": i * bpp,
                         "cumulative_uplink_bits": i * 100})
        cfg = {"method": method, "rounds": len(accs), "n_clients": 2, "split": "iid"}
        return FederatedResult(cfg, rows, 100, {}, 1.0, label)

    runs = [fake("fedavg", [0.80, 0.90], 32.0), fake("klms", [0.5, 0.87, 0.89], 0.01, "klms:oversample-bits=1"),
            fake("fedpm", [0.5, 0.6], 1.0)]
    payload = result_payload(runs, "analogmem fl compare")
    assert payload["target_accuracy"] == pytest.approx(0.88)
    assert [r["label"] for r in payload["runs"]] == ["fedavg", "klms:oversample-bits=1", "fedpm"]
    assert [r["first_reach"] for r in payload["runs"]] == [
        {"round": 2, "cumulative_bpp": 64.0}, {"round": 3, "cumulative_bpp": 0.03}, {"round": None, "cumulative_bpp": None}]
    table = format_summary_table(runs)
    assert "| klms:oversample-bits=1 | 3 |" in table and "0.03 (round 3)" in table and "| never |" in table


def test_cli_compare_runs_an_entry_with_its_own_settings_and_removes_rays_folder(tmp_path, monkeypatch):
    import os

    import ray

    from analogmem.federated import flower_app

    made = []
    real_mkdtemp = flower_app.tempfile.mkdtemp

    def spy(*a, **k):
        made.append(real_mkdtemp(*a, **k))
        return made[-1]

    monkeypatch.setattr(flower_app.tempfile, "mkdtemp", spy)
    out = tmp_path / "c.json"
    argv = ["fl", "compare", "--methods", "klms:oversample-bits=1", "--rounds", "5,klms=1", "--dataset", "digits",
            "--clients", "3", "--hidden", "32", "--local-epochs", "1", "--max-train", "300", "--max-test", "200",
            "--num-cpus", "1", "--json", str(out), "--no-progress"]
    assert main(argv) == 0
    assert not ray.is_initialized()
    assert len(made) == 1 and os.path.basename(made[0]).startswith("analogmem-ray-") and not os.path.exists(made[0])
    run = json.loads(out.read_text())["runs"][0]
    assert run["label"] == "klms:oversample-bits=1" and run["settings"]["oversample_bits"] == 1
    assert [r["round"] for r in run["rounds"]] == [0, 1]


def test_progress_bar_names_what_the_first_round_waits_for(monkeypatch):
    import threading
    import time

    import ray

    from analogmem.federated.flower_app import _StartWatcher

    class Bar:
        disable = False

        def __init__(self):
            self.postfix = []

        def set_postfix_str(self, s):
            self.postfix.append(s)

    bar = Bar()
    up = threading.Event()
    monkeypatch.setattr(ray, "is_initialized", up.is_set)
    w = _StartWatcher(bar, poll_s=0.01)
    assert bar.postfix == ["starting Ray…"]
    up.set()
    deadline = time.monotonic() + 5
    while len(bar.postfix) < 2 and time.monotonic() < deadline:
        time.sleep(0.01)
    w.stop()
    assert bar.postfix[1].startswith("round 1: client actors starting")
    quiet = Bar()
    quiet.disable = True
    _StartWatcher(quiet).stop()
    assert quiet.postfix == []
