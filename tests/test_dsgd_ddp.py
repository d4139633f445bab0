"""The DDP communication hooks of analogmem.dsgd on a real 2-process gloo group (thesis ch.5).

One short run (2 ranks, a tiny CNN on 8×8 digits, a few steps, small DDP buckets so that DDP's
bucket rebuild after step 0 happens) trains once per method with the hooks registered, while a
spy wrapped around ``torch.distributed.all_gather`` / ``all_reduce`` records every tensor
actually handed to the collective. The checks:

- replicas stay identical (parameters equal bit for bit across ranks after every method);
- exactly k = round(density·n) distinct indices per bucket per step are sent;
- the ledger's bits equal numel·element_size·8 of the tensors the spy saw, and split into
  32-bit indices + 32-bit values;
- error feedback (docs/dsgd.md, m ← p − sent with p = g + m): sent + new memory == g + old memory
  exactly, per bucket, and — across the bucket rebuild, per parameter — Σ sent + final memory
  == Σ g;
- DDP's reduced gradient is exactly the average over ranks of the densified (index, value) pairs;
- the random choices are those of the generator seeded from (seed, rank, step, bucket).
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest
import torch

from analogmem.dsgd import (
    DSGDLaunchError,
    coordinate_budget,
    densify,
    launch,
    rank_generator,
    select,
    small_cnn,
)

torch.set_num_threads(1)

METHODS = ("rtopk", "topk", "randk", "dense")
DENSITY, R_FACTOR, SEED, STEPS, LR = 0.05, 3.0, 11, 5, 0.1
BUCKET_CAP_MB = 0.002  # ~500 float32 per bucket: the 1,610-parameter model spans several buckets


def _worker(rank: int, world: int, out_dir: str) -> None:
    """Runs in each spawned rank (module level, so that spawn can pickle it)."""
    import torch.distributed as dist
    import torch.nn.functional as F
    from torch.nn.parallel import DistributedDataParallel as DDP

    from analogmem.ml.datasets import digits
    from analogmem.dsgd import attach

    data = digits(seed=0)
    spy_calls: list[dict] = []
    real_gather, real_reduce = dist.all_gather, dist.all_reduce

    def spy_gather(tensor_list, tensor, group=None, async_op=False):
        spy_calls.append({"op": "all_gather", "bits": tensor.numel() * tensor.element_size() * 8,
                          "dtype": str(tensor.dtype), "outputs": len(tensor_list)})
        return real_gather(tensor_list, tensor, group=group, async_op=async_op)

    def spy_reduce(tensor, op=dist.ReduceOp.SUM, group=None, async_op=False):
        spy_calls.append({"op": "all_reduce", "bits": tensor.numel() * tensor.element_size() * 8,
                          "dtype": str(tensor.dtype)})
        return real_reduce(tensor, op=op, group=group, async_op=async_op)

    results = {}
    for method in METHODS:
        torch.manual_seed(SEED)  # same initialisation on both ranks (DDP would broadcast rank 0's anyway)
        model = small_cnn(1, 10, 8, width=4, hidden=16)
        init = torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()])
        names = {id(p): name for name, p in model.named_parameters()}
        params = dict(model.named_parameters())
        ddp = DDP(model, bucket_cap_mb=BUCKET_CAP_MB)
        state = attach(ddp, method, DENSITY, R_FACTOR, SEED, trace=True)
        opt = torch.optim.SGD(ddp.parameters(), lr=LR)
        spy_calls.clear()
        dist.all_gather, dist.all_reduce = spy_gather, spy_reduce
        reduced = []
        try:
            for step in range(STEPS):
                idx = torch.arange(16 * (2 * step + rank), 16 * (2 * step + rank + 1))  # disjoint shards
                loss = F.cross_entropy(ddp(data.x_train[idx]), data.y_train[idx])
                opt.zero_grad()
                loss.backward()
                if method != "dense":  # DDP's averaged gradient, in each traced bucket's layout
                    for rec in (t for t in state.trace if t["step"] == step):
                        reduced.append(torch.cat([params[names[i]].grad.reshape(-1) for i in rec["param_ids"]]))
                opt.step()
        finally:
            dist.all_gather, dist.all_reduce = real_gather, real_reduce
        trace = getattr(state, "trace", None) or []
        for rec in trace:
            rec["param_names"] = [names[i] for i in rec.pop("param_ids")]
        results[method] = {
            "init": init,
            "final": torch.cat([p.detach().reshape(-1).clone() for p in model.parameters()]),
            "records": state.ledger.as_dicts(),
            "totals": state.ledger.totals(),
            "spy": list(spy_calls),
            "trace": trace,
            "reduced": reduced,
            "memory": {names[i]: m.clone() for i, m in getattr(state, "memory", {}).items()},
            "numel": {name: p.numel() for name, p in model.named_parameters()},
        }
    torch.save(results, Path(out_dir) / f"rank{rank}.pt")


@pytest.fixture(scope="module")
def ranks(tmp_path_factory, request):
    out = tmp_path_factory.mktemp("dsgd_ddp")
    # spawned ranks import this module by name: make sure the repository root is importable there
    root = str(Path(__file__).resolve().parents[1])
    mp = pytest.MonkeyPatch()
    mp.syspath_prepend(root)
    try:
        start = time.perf_counter()
        backend = launch(_worker, 2, (str(out),), backend="gloo", timeout_s=240, collective_timeout_s=60)
        elapsed = time.perf_counter() - start
    finally:
        mp.undo()
    assert backend == "gloo" and elapsed < 240
    return [torch.load(out / f"rank{r}.pt", weights_only=False) for r in range(2)]


@pytest.mark.parametrize("method", METHODS)
def test_replicas_stay_identical(ranks, method):
    a, b = ranks[0][method], ranks[1][method]
    assert not torch.equal(a["init"], a["final"]), "training did not move the parameters"
    assert torch.equal(a["final"], b["final"]), (
        f"{method}: replicas differ by up to {float((a['final'] - b['final']).abs().max()):.3g}")


@pytest.mark.parametrize("method", ["rtopk", "topk", "randk"])
def test_exactly_k_distinct_indices_per_bucket_and_bits_match_the_gathered_tensors(ranks, method):
    for rank_result in ranks:
        res = rank_result[method]
        records, spy = res["records"], res["spy"]
        assert len(records) == len(spy) >= STEPS, "one all_gather per bucket per step"
        assert {r["step"] for r in records} == set(range(STEPS))
        assert max(r["bucket_index"] for r in records if r["step"] > 0) >= 1, "expected several buckets"
        for rec, call in zip(records, spy):
            k, r = coordinate_budget(rec["n"], DENSITY, R_FACTOR)
            assert rec["k"] == k
            assert rec["r"] == {"rtopk": r, "topk": k, "randk": rec["n"]}[method]
            assert call["op"] == "all_gather" and call["dtype"] == "torch.uint8" and call["outputs"] == 2
            assert rec["bits_sent"] == call["bits"] == 64 * k  # k float32 values + k int32 indices
            assert rec["index_bits"] == 32 * k and rec["value_bits"] == 32 * k
            assert rec["index_bits_log2"] == k * (rec["n"] - 1).bit_length()
        assert res["totals"]["bits_sent"] == sum(c["bits"] for c in spy)
        for t in res["trace"]:
            assert t["indices"].numel() == t["k"] and torch.unique(t["indices"]).numel() == t["k"]
            assert int(t["indices"].min()) >= 0 and int(t["indices"].max()) < t["n"]


def test_dense_hook_counts_the_all_reduce_input(ranks):
    for rank_result in ranks:
        res = rank_result["dense"]
        assert len(res["records"]) == len(res["spy"])
        for rec, call in zip(res["records"], res["spy"]):
            assert call["op"] == "all_reduce" and rec["bits_sent"] == call["bits"] == 32 * rec["n"]
        n_params = sum(res["numel"].values())
        assert res["totals"]["bits_sent"] == STEPS * 32 * n_params


@pytest.mark.parametrize("method", ["rtopk", "topk", "randk"])
def test_error_feedback_invariant_per_bucket_and_across_the_bucket_rebuild(ranks, method):
    for rank_result in ranks:
        res = rank_result[method]
        sums_g, sums_sent = {}, {}
        for t in res["trace"]:
            sent = densify(t["indices"], t["values"], t["n"])
            # p = g + m; m ← p − sent, exactly
            assert torch.equal(sent + t["memory_after"], t["grad"] + t["memory_before"])
            offset = 0
            for name in t["param_names"]:
                size = res["numel"][name]
                sums_g[name] = sums_g.get(name, 0) + t["grad"][offset:offset + size].double()
                sums_sent[name] = sums_sent.get(name, 0) + sent[offset:offset + size].double()
                offset += size
        # memory is kept per parameter, so nothing is lost when DDP rebuilds its buckets after step 0
        for name, total in sums_g.items():
            torch.testing.assert_close(sums_sent[name] + res["memory"][name].double(), total, rtol=0, atol=1e-5)


@pytest.mark.parametrize("method", ["rtopk", "topk", "randk"])
def test_reduced_gradient_is_the_average_of_the_sent_pairs(ranks, method):
    t0, t1 = ranks[0][method]["trace"], ranks[1][method]["trace"]
    assert [(a["step"], a["bucket_index"]) for a in t0] == [(b["step"], b["bucket_index"]) for b in t1]
    for rank_result in ranks:
        for a, b, got in zip(t0, t1, rank_result[method]["reduced"]):
            expected = (densify(a["indices"], a["values"], a["n"]) + densify(b["indices"], b["values"], b["n"])) / 2
            assert torch.equal(got, expected)


@pytest.mark.parametrize("method", ["rtopk", "randk"])
def test_random_choices_come_from_the_seed_rank_step_generator(ranks, method):
    for rank, rank_result in enumerate(ranks):
        for t in rank_result[method]["trace"]:
            p = t["grad"] + t["memory_before"]
            again = select(method, p, t["k"], t["r"], rank_generator(SEED, rank, t["step"], t["bucket_index"]))
            assert torch.equal(again, t["indices"])
    # the two ranks draw differently at the same step and bucket
    same = [torch.equal(a["indices"].sort().values, b["indices"].sort().values)
            for a, b in zip(ranks[0][method]["trace"], ranks[1][method]["trace"]) if a["k"] >= 5]
    assert same and not any(same)


def _failing_worker(rank: int, world: int) -> None:
    import torch.distributed as dist

    if rank == 1:
        raise RuntimeError("rank 1 fails on purpose")
    dist.barrier()  # rank 0 would wait here for ever without the launcher's clean-up


def test_a_failing_rank_raises_in_the_caller_without_hanging(monkeypatch):
    monkeypatch.syspath_prepend(str(Path(__file__).resolve().parents[1]))
    start = time.perf_counter()
    with pytest.raises(DSGDLaunchError, match=r"(?s)rank 1 failed first:.*fails on purpose"):
        launch(_failing_worker, 2, backend="gloo", timeout_s=120, collective_timeout_s=60)
    assert time.perf_counter() - start < 60
