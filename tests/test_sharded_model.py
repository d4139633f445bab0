"""program_model(..., shards=N): one model over Ray workers (analogmem.storage.sharded_model).

One local Ray of 2 CPUs serves the whole module (started once: Ray's start-up is the cost)."""

from __future__ import annotations

import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")

import analogmem  # noqa: E402
from analogmem.chips import chip_seeds, ray_available  # noqa: E402
from analogmem.errors import SettingError, StorageError  # noqa: E402
from analogmem.storage.analog_model import _program_state  # noqa: E402
from analogmem.emulator.cells import load_device  # noqa: E402
from analogmem.storage.encoders import make_encoder  # noqa: E402
from analogmem.storage.sharded_model import shard_plan  # noqa: E402

pytestmark = pytest.mark.skipif(not ray_available(), reason="Ray is not installed")


def model():
    torch.manual_seed(3)
    return torch.nn.Sequential(torch.nn.Linear(40, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 48), torch.nn.Linear(48, 10))


@pytest.fixture(scope="module")
def ray_session():
    import ray

    os.environ.setdefault("RAY_ACCEL_ENV_VAR_OVERRIDE_ON_ZERO", "0")
    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def test_shard_plan_contiguous_balanced_and_never_empty():
    assert shard_plan([10] * 6, 2) == [[0, 1, 2], [3, 4, 5]]
    assert shard_plan([100, 1, 1, 1], 2) == [[0], [1, 2, 3]]
    assert shard_plan([1, 1, 1, 100], 3) == [[0, 1], [2], [3]]
    for sizes, k in [([5, 7, 1, 9, 2, 2, 30], 3), ([1] * 9, 4), ([3, 3], 2)]:
        plan = shard_plan(sizes, k)
        assert [j for g in plan for j in g] == list(range(len(sizes))) and all(plan)
    with pytest.raises(SettingError, match="shards=3"):
        shard_plan([1, 2], 3)
    with pytest.raises(SettingError, match="positive integer"):
        shard_plan([1, 2], 0)


def test_sharded_model_is_each_shard_programmed_alone(ray_session, tmp_path):
    m = model()
    sm = analogmem.program_model(m, "rram-wan2022", 2, seed=11, dtype="float32", shards=2,
                                 state_dir=tmp_path / "chips")
    try:
        assert sm.shards == 2 and sorted(os.listdir(tmp_path / "chips")) == ["shard-000", "shard-001"]
        u = sm.usage()
        analog = [n for n, p in m.named_parameters()]
        assert u["analog_weights"] == sum(p.numel() for p in m.parameters()) and u["shards"] == 2
        assert [n for g in sm.shard_names for n in g] == analog
        got = dict(sm.tensors_at(86400.0))
        assert list(got) == list(m.state_dict())  # state-dict order, buffers included
        # shard i = its tensors alone on one chip seeded with child i of the model's seed
        dev, enc = load_device("rram-wan2022"), make_encoder("differential-mmse", 2)
        state = m.state_dict()
        for i, (names, seed) in enumerate(zip(sm.shard_names, chip_seeds(11, 2))):
            alone = _program_state(None, {n: state[n] for n in names}, names, [], dev, enc, seed, dtype="float32",
                                   state_dir=None, backend="kernels", bench_backend="cython", n_threads=None,
                                   direct_io=None, t_fit=86400.0, progress=False)
            for n in names:
                assert torch.equal(got[n], alone.tensor_at(n, 86400.0)), (i, n)
        assert torch.equal(got["1.running_mean"], state["1.running_mean"])  # buffers exact
        # any order, any time: the same bits; module_at loads them
        last = analog[-1]
        assert torch.equal(sm.tensor_at(last, 86400.0), got[last])
        early = sm.module_at(1.0)
        assert torch.equal(sm.module_at(86400.0).state_dict()[analog[0]], got[analog[0]])
        assert not torch.equal(early.state_dict()[analog[0]], got[analog[0]])
        with pytest.raises(StorageError, match="no tensor"):
            sm.tensor_at("nope", 1.0)
    finally:
        sm.close()
    with pytest.raises(StorageError, match="closed"):
        sm.tensor_at(analog[0], 1.0)


def test_sharded_evaluate_interval_over_chips(ray_session):
    m = model().eval()
    x = torch.randn(16, 40, generator=torch.Generator().manual_seed(0))
    with torch.no_grad():
        ref = m(x)

    def err(mod):
        with torch.no_grad():
            return float((mod.eval()(x) - ref).pow(2).mean())

    with analogmem.program_model(m, "rram-wan2022", seed=2, shards=2) as sm:
        ev = sm.evaluate(err, [60.0, 86400.0], chips=3)
        assert sm.module_at(60.0) is not None  # the model's own chip outlives the evaluation
    assert ev.values.shape == (3, 2) and ev.runner == "ray-shards" and len(set(ev.values[:, 0])) == 3
    assert np.all(ev.ci95_low <= ev.mean) and np.all(ev.mean <= ev.ci95_high)
    # chip 1 of the evaluation is the sharded model seeded with child 1 of the model's seed
    with analogmem.program_model(m, "rram-wan2022", seed=chip_seeds(2, 3)[1], shards=2) as other:
        assert [err(other.module_at(t)) for t in (60.0, 86400.0)] == list(ev.values[1])


def test_sharded_inputs_refused_before_any_worker_starts(tmp_path):
    m = model()
    with pytest.raises(SettingError, match="shards=9"):
        analogmem.program_model(m, "rram-wan2022", shards=9)
    with torch.no_grad():
        m[0].weight[0, 0] = float("nan")
    with pytest.raises(StorageError, match="0.weight"):
        analogmem.program_model(m, "rram-wan2022", shards=2)
    (tmp_path / "x").mkdir()
    (tmp_path / "x" / "mine.txt").write_text("keep")
    with pytest.raises(StorageError, match="not an empty directory"):
        analogmem.program_model(model(), "rram-wan2022", shards=2, state_dir=tmp_path / "x")
    assert (tmp_path / "x" / "mine.txt").read_text() == "keep"
    with pytest.raises(SettingError, match="shards=N"):
        analogmem.program_model(model(), "rram-wan2022", num_cpus=2)
