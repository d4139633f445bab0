"""A model on analog cells in one call (analogmem.program_model / AnalogModel), the reads at any
time behind it (EmulatedBench.read_at), the one-pass encode/decode kernels (ext/_codec.pyx), and
the memory bound of the storage path."""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap

import numpy as np
import pytest
import torch
from scipy import stats

import analogmem
from analogmem.chips import ray_available
from analogmem.storage import EmulatedStore, make_encoder
from analogmem.storage.encoders import ReadChannel


def small_model(seed: int = 0) -> torch.nn.Module:
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Linear(32, 64), torch.nn.BatchNorm1d(64), torch.nn.ReLU(),
                               torch.nn.Linear(64, 10))


def states_equal(a: torch.nn.Module, b: torch.nn.Module) -> bool:
    return all(torch.equal(x, y) for x, y in zip(a.state_dict().values(), b.state_dict().values()))


# --------------------------------------------------------------------------- reads at any time
@pytest.mark.parametrize("card", ["pcm-nandakumar2019", "rram-wan2022"])
def test_module_at_in_any_order_gives_the_same_weights(card):
    m = small_model()
    times = [0.0, 1.0, 60.0, 3600.0, 86400.0, 3.15e7]
    forward = {t: analogmem.program_model(m, card, seed=7).module_at(t) for t in [times[0]]}
    am = analogmem.program_model(m, card, seed=7)
    fwd = {t: am.module_at(t) for t in times}
    am2 = analogmem.program_model(m, card, seed=7)
    rev = {t: am2.module_at(t) for t in reversed(times)}
    order = np.random.default_rng(3).permutation(len(times))
    shuf = {times[i]: am2.module_at(times[i]) for i in order}
    for t in times:
        assert states_equal(fwd[t], rev[t]) and states_equal(fwd[t], shuf[t]), t
    assert states_equal(forward[0.0], fwd[0.0])
    # a read index draws fresh read noise at the same time (PCM has read noise); different times differ
    assert not states_equal(fwd[60.0], fwd[3600.0])
    if card == "pcm-nandakumar2019":
        assert not states_equal(am.module_at(60.0, read=1), fwd[60.0])
    # the digital tensors are exact and the module handed in is untouched
    assert torch.equal(fwd[86400.0][1].running_var, m[1].running_var)


@pytest.mark.parametrize("dtype", ["float64", "float32"])
def test_read_at_is_distributed_as_the_forward_read(dtype):
    """read_at(t) and the bench's own read(t) of the same programmed chip: the read noise of
    both (two reads at one time, differenced) has one distribution (two-sample KS), and the
    marginal reads of two chips agree in mean and spread (within 5 standard errors)."""
    dev = analogmem.load_device("pcm-nandakumar2019")
    n = 200_000
    g = np.random.default_rng(0).uniform(0.1 * dev.g_max_S, dev.g_max_S, n)
    for t in (60.0, 86400.0):
        a = analogmem.EmulatedBench(dev, n, seed=1, dtype=dtype)
        a.program(g)
        d_at = a.read_at(t, read_index=0).astype(np.float64) - a.read_at(t, read_index=1)
        b = analogmem.EmulatedBench(dev, n, seed=1, dtype=dtype)
        b.program(g)
        r1 = b.read(t).astype(np.float64)
        d_fwd = r1 - b.read()
        assert stats.ks_2samp(d_at, d_fwd).pvalue > 1e-3
        c = analogmem.EmulatedBench(dev, n, seed=2, dtype=dtype)
        c.program(g)
        r_at = c.read_at(t).astype(np.float64)
        se = np.sqrt(r1.var() / n + r_at.var() / n)
        assert abs(r_at.mean() - r1.mean()) < 5 * se
        assert abs(r_at.std() / r1.std() - 1) < 5 * np.sqrt(2.0 / n) * 2
        assert stats.ks_2samp(r_at, r1).pvalue > 1e-3
        assert a.time_s == 0.0  # read_at never moves the clock


def test_read_at_is_the_same_in_memory_and_on_disk(tmp_path):
    dev = analogmem.load_device("rram-wan2022")
    g = np.random.default_rng(0).uniform(dev.g_min_S, dev.g_max_S, 50_000)
    a = analogmem.EmulatedBench(dev, g.size, seed=4, dtype="float32")
    b = analogmem.EmulatedBench(dev, g.size, seed=4, dtype="float32", state_dir=tmp_path / "chip")
    a.program(g)
    b.program(g)
    assert np.array_equal(a.read_at(86400.0), b.read_at(86400.0))
    assert np.array_equal(a.read_at(86400.0, 100, 9000), a.read_at(86400.0)[100:9000])


def test_contiguous_ranges_program_and_read_like_address_arrays():
    dev = analogmem.load_device("pcm-nandakumar2019")
    g = np.random.default_rng(0).uniform(0, dev.g_max_S, 30_000)
    a = analogmem.EmulatedBench(dev, 50_000, seed=3)
    b = analogmem.EmulatedBench(dev, 50_000, seed=3)
    ra = a.program(g, addresses=np.arange(10_000, 40_000))
    rb = b.program(g, addresses=range(10_000, 40_000))
    assert np.array_equal(ra.stuck, rb.stuck)
    assert np.array_equal(a.read(60.0, addresses=np.arange(5_000, 45_000)), b.read(60.0, addresses=range(5_000, 45_000)))
    assert np.array_equal(a.read(120.0), b.read(120.0))
    with pytest.raises(analogmem.AddressError):
        b.program(g[:10], addresses=range(49_995, 50_005))


# --------------------------------------------------------------------------- the codec kernels
ENCODERS = ["naive", "adaptive", "differential", "differential-mmse", "linear-mmse", "sliced", "sign-magnitude"]


@pytest.mark.parametrize("name", ENCODERS)
@pytest.mark.parametrize("cpw", [2, 4])
def test_codec_kernels_match_the_numpy_encoders(name, cpw):
    """encode_S: the numpy encoder's bits; decode_S: the numpy decoder to rounding (rtol 1e-12
    of the weight range for the maps; 1e-9 for the MMSE posterior, whose sums run in another
    order and leave out candidates weighing < 4e-18)."""
    enc = make_encoder(name, cpw)
    dev = analogmem.load_device("pcm-nandakumar2019")
    ch = ReadChannel(dev, 86400.0)
    w = np.random.default_rng(1).standard_normal(20_000) * 0.1
    side = enc.fit(w, ch)
    g = enc.encode_S(w, side, ch, n_threads=2)
    assert np.array_equal(g, ch.to_S(enc.encode(w, side)))
    reads = analogmem.EmulatedBench(dev, g.size, seed=0)
    reads.program(g)
    y = reads.read(86400.0)
    for gain in (1.0, 1.07):
        fast = enc.decode_S(y, side, w.size, ch, gain, np.float64, n_threads=2)
        slow = enc.decode(ch.to_relative(y * gain if not enc.uses_channel else y), side, w.size, ch)
        tol = 1e-9 if enc.uses_channel else 1e-12
        assert np.max(np.abs(fast - slow)) <= tol * np.abs(w).max()
        f32 = enc.decode_S(y.astype(np.float32), side, w.size, ch, gain, np.float32)
        assert f32.dtype == np.float32 and np.max(np.abs(f32 - slow)) < 1e-5 * np.abs(w).max() + 1e-3 * np.abs(
            slow - fast).max() + 1e-2 * np.abs(w).max() * (1.0 if enc.uses_channel else 1e-3)


# --------------------------------------------------------------------------- the call and its errors
def test_program_model_sizes_its_chip_and_chooses_a_default_encoder():
    m = small_model()
    n_w = sum(p.numel() for p in m.parameters())
    am = analogmem.program_model(m, "rram-wan2022", cells_per_weight=2, seed=0)
    assert am.n_cells == 2 * n_w and am.encoder.name == "differential+mmse"
    assert analogmem.program_model(m, "rram-wan2022", cells_per_weight=3, seed=0).encoder.name == "linearx3+mmse"
    u = am.usage()
    assert u["cells_per_weight"] == 2.0 and u["analog_weights"] == n_w
    w = m[0].weight.detach()
    err = float((am.module_at(86400.0)[0].weight.detach() - w).pow(2).mean().sqrt() / w.std())
    assert 0.01 < err < 0.5  # noisy, but a readable weight


def test_program_model_on_disk_matches_the_in_memory_chip(tmp_path):
    m = small_model()
    a = analogmem.program_model(m, "pcm-nandakumar2019", seed=5, dtype="float32")
    b = analogmem.program_model(m, "pcm-nandakumar2019", seed=5, dtype="float32", state_dir=tmp_path / "chip")
    assert states_equal(a.module_at(86400.0), b.module_at(86400.0))
    b.bench.close()  # a chip directory is locked by the bench that has it open
    reopened = analogmem.EmulatedBench.open(tmp_path / "chip")
    assert np.array_equal(reopened.read_at(3600.0), a.bench.read_at(3600.0))


@pytest.mark.parametrize("dtype", [torch.float16, torch.bfloat16, torch.float64])
def test_program_model_keeps_the_tensor_dtypes(dtype):
    m = small_model().to(dtype)
    am = analogmem.program_model(m, "rram-wan2022", seed=0)
    out = am.module_at(60.0)
    for (n, v), (_, r) in zip(m.state_dict().items(), out.state_dict().items()):
        assert r.dtype == v.dtype, n
        assert torch.isfinite(r.float()).all()


def test_float16_weights_at_the_top_of_their_range_stay_finite():
    st = EmulatedStore("rram-wan2022", 100, seed=0)
    st.put("h", torch.tensor([65504.0, -65504.0, 1.0], dtype=torch.float16), encoder=make_encoder("naive", 1))
    assert np.all(np.isfinite(st.get("h", 60.0)))


@pytest.mark.parametrize("tensor", [np.array([True, False]), np.array([127, -128], dtype=np.int8),
                                    np.arange(5, dtype=np.int64)])
def test_integer_and_boolean_tensors_are_refused_on_analog_cells(tensor):
    st = EmulatedStore("rram-wan2022", 100, seed=0)
    with pytest.raises(analogmem.StorageError, match=str(tensor.dtype)):
        st.put("x", tensor, encoder=make_encoder("naive", 1))
    assert st.names() == [] and st.cells_used == 0
    st.put_digital("x", tensor)  # kept exactly
    assert np.array_equal(st.get("x"), tensor)


def test_store_model_keeps_non_float_parameters_digital():
    m = small_model()
    m.register_parameter("flag", torch.nn.Parameter(torch.tensor([1, 0, 1], dtype=torch.int32), requires_grad=False))
    enc = make_encoder("naive", 1)
    st = EmulatedStore("rram-wan2022", enc.n_cells(sum(p.numel() for p in m.parameters())), seed=0)
    h = analogmem.store_model(m, st, encoder=enc)
    assert "flag" in h.digital and torch.equal(analogmem.load_model(h, 60.0).flag, m.flag)
    am = analogmem.program_model(m, "rram-wan2022", seed=0)
    assert "flag" in am.digital and torch.equal(am.module_at(60.0).flag, m.flag)


def test_empty_tensors_store_and_read_back():
    st = EmulatedStore("rram-wan2022", 10, seed=0)
    st.put("e", np.zeros((0, 3), np.float32), encoder=make_encoder("naive", 1))
    assert st.get("e", 60.0).shape == (0, 3) and st.cells_used == 0


class NoParams(torch.nn.Module):
    def forward(self, x):
        return x


@pytest.mark.parametrize("call, err, words", [
    (lambda: analogmem.program_model(NoParams(), "rram-wan2022"), analogmem.StorageError, "no parameters"),
    (lambda: analogmem.program_model(_int_module(), "rram-wan2022"), analogmem.StorageError, "floating-point"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", cells_per_weight=3, encoder="differential"),
     analogmem.SettingError, "3"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", cells_per_weight=0), analogmem.SettingError, "0"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", backend="jax"), analogmem.SettingError, "jax"),
    (lambda: analogmem.program_model(small_model(), "pcm-stanford"), analogmem.SettingError, "pcm-stanford"),
    (lambda: analogmem.program_model("not a module", "rram-wan2022"), analogmem.SettingError, "str"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", seed=0).module_at(-1.0),
     analogmem.TargetRangeError, "-1"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", seed=0).module_at(float("nan")),
     analogmem.TargetRangeError, "nan"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", seed=0).module_at(60.0, read=-1),
     analogmem.SettingError, "-1"),
    (lambda: analogmem.program_model(small_model(), "rram-wan2022", seed=0).evaluate(len, [1.0], chips=0),
     analogmem.SettingError, "0"),
])
def test_wrong_inputs_raise_named_errors(call, err, words):
    with pytest.raises(err, match=words):
        call()


def _int_module() -> torch.nn.Module:
    m = torch.nn.Module()
    m.register_parameter("w", torch.nn.Parameter(torch.arange(4), requires_grad=False))
    return m


def test_nan_weights_are_refused_before_programming():
    m = small_model()
    with torch.no_grad():
        m[3].weight[2, 5] = float("nan")
    with pytest.raises(analogmem.StorageError, match="3.weight"):
        analogmem.program_model(m, "rram-wan2022")


# --------------------------------------------------------------------------- chips
class MSE:
    """A picklable metric: mean squared difference of the outputs from the clean model's."""

    def __init__(self, model):
        torch.manual_seed(1)
        self.x = torch.randn(64, 32)
        with torch.no_grad():
            self.ref = model.eval()(self.x)

    def __call__(self, mod):
        with torch.no_grad():
            return float((mod.eval()(self.x) - self.ref).pow(2).mean())


def test_evaluate_gives_an_interval_over_independent_chips():
    m = small_model()
    am = analogmem.program_model(m, "pcm-nandakumar2019", seed=0)
    ev = am.evaluate(MSE(m), [1.0, 3.15e7], chips=4)
    assert ev.values.shape == (4, 2) and len(set(ev.values[:, 0])) == 4  # the chips differ
    assert np.all(ev.ci95_low <= ev.mean) and np.all(ev.mean <= ev.ci95_high)
    assert ev.mean[1] > ev.mean[0]  # PCM drifts: the error grows over a year
    again = am.evaluate(MSE(m), [1.0, 3.15e7], chips=4)
    assert np.array_equal(again.values, ev.values)
    json.dumps(ev.to_dict())


@pytest.mark.skipif(not ray_available(), reason="Ray is not installed")
def test_evaluate_on_ray_gives_the_serial_numbers():
    m = small_model()
    am = analogmem.program_model(m, "rram-wan2022", seed=0)
    serial = am.evaluate(MSE(m), [60.0, 86400.0], chips=2)
    on_ray = am.evaluate(MSE(m), [60.0, 86400.0], chips=2, ray=True, num_cpus=2)
    assert on_ray.runner == "ray" and np.array_equal(serial.values, on_ray.values)


# --------------------------------------------------------------------------- memory
def test_storage_path_memory_bound_at_1e7_weights():
    """Peak RSS of put + get of 10⁷ float32 weights (differential-mmse, 2 cells per weight,
    float32 cells) beyond the chip's own state and the weights themselves: at most 32 B per
    weight (the issue's bound; measured in a fresh subprocess)."""
    code = textwrap.dedent("""
        import json, resource, numpy as np
        from analogmem.storage import EmulatedStore, make_encoder
        n = 10_000_000
        w = (np.random.default_rng(0).standard_normal(n) * 0.05).astype(np.float32)
        enc = make_encoder("differential-mmse", 2)
        st = EmulatedStore("rram-wan2022", enc.n_cells(n), seed=0, dtype="float32")
        base = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        st.put("w", w, encoder=enc)
        r = st.get("w", t_s=86400.0)
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024
        print(json.dumps({"extra_B_per_weight": (peak - base - st.bench.state_nbytes) / n,
                          "state_B": st.bench.state_nbytes, "rms": float(np.sqrt(np.mean((r - w) ** 2)) / w.std())}))
    """)
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr
    res = json.loads(out.stdout.strip().splitlines()[-1])
    assert res["extra_B_per_weight"] <= 32, res
    assert res["rms"] < 0.5


def test_readme_storing_a_model_block_runs_as_written():
    """README's "Storing a model" block, executed as written."""
    from pathlib import Path

    text = (Path(__file__).resolve().parents[1] / "README.md").read_text()
    block = text.split("<!-- readme-test: storing-a-model -->", 1)[1].split("```python\n", 1)[1].split("```", 1)[0]
    env: dict = {}
    exec(compile(block, "README.md (Storing a model)", "exec"), env)
    assert env["curve"].values.shape == (3, 3)
    assert env["am"].usage()["cells_per_weight"] == 2.0


# --------------------------------------------------------------------------- the torch backend
_TORCH_DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.mark.parametrize("tdev", _TORCH_DEVICES)
def test_torch_bench_read_at_is_a_pure_function_distributed_as_its_read(tdev):
    """TorchBench.read_at: the same call, the same bits, in any order with other reads, the
    clock unmoved; its read noise (two read indices, differenced) distributed as the forward
    reads' (two-sample KS), and its marginal as a forward read of a second chip."""
    dev = analogmem.load_device("pcm-nandakumar2019")
    n = 100_000
    g = np.random.default_rng(0).uniform(0.1 * dev.g_max_S, dev.g_max_S, n)
    a = analogmem.EmulatedBench(dev, n, seed=1, backend="torch", torch_device=tdev)
    a.program(g)
    x = a.read_at(3600.0, 10, 50_000)
    a.read(60.0)
    a.read_at(86400.0)
    assert torch.equal(a.read_at(3600.0, 10, 50_000), x) and x.device.type == tdev
    assert a.time_s == 60.0  # only the forward read moved it
    d_at = (a.read_at(86400.0, read_index=0).double() - a.read_at(86400.0, read_index=1).double()).cpu().numpy()
    b = analogmem.EmulatedBench(dev, n, seed=1, backend="torch", torch_device=tdev)
    b.program(g)
    r1 = b.read(86400.0).double().cpu().numpy()
    d_fwd = r1 - b.read().double().cpu().numpy()
    assert stats.ks_2samp(d_at, d_fwd).pvalue > 1e-3
    c = analogmem.EmulatedBench(dev, n, seed=2, backend="torch", torch_device=tdev)
    c.program(g)
    assert stats.ks_2samp(c.read_at(86400.0).double().cpu().numpy(), r1).pvalue > 1e-3
    with pytest.raises(analogmem.AddressError):
        a.read_at(1.0, 5, n + 1)


@pytest.mark.parametrize("card", ["pcm-nandakumar2019", "rram-wan2022"])
def test_program_model_on_the_torch_backend(card):
    """backend="torch": weights on the bench's device, the same weights in any order, and the
    read-back errors distributed as on the kernels (two-sample KS over 32,768 weights per time:
    the backends share the model, not the random streams)."""
    torch.manual_seed(0)
    m = torch.nn.Sequential(torch.nn.Linear(256, 128), torch.nn.Linear(128, 10))
    am_t = analogmem.program_model(m, card, seed=5, backend="torch", dtype="float32")
    am_k = analogmem.program_model(m, card, seed=5, dtype="float32")
    assert am_t.bench.backend == "torch" and am_t.usage()["analog_cells"] == am_k.usage()["analog_cells"]
    times = [1.0, 86400.0, 3.15e7]
    fwd = {t: am_t.module_at(t) for t in times}
    rev = {t: am_t.module_at(t) for t in reversed(times)}
    for t in times:
        assert states_equal(fwd[t], rev[t]), t
        w = m[0].weight.detach()
        e_t = (fwd[t][0].weight.detach() - w).reshape(-1).double().numpy()
        e_k = (am_k.module_at(t)[0].weight.detach() - w).reshape(-1).double().numpy()
        assert e_t.std() > 0 and stats.ks_2samp(e_t, e_k).pvalue > 1e-3, t
    assert am_t.tensor_at("0.weight", 60.0).device == torch.device("cpu")
    assert am_t.tensor_at("0.weight", 60.0).dtype == torch.float32
    ev = am_t.evaluate(lambda mod: float(mod[0].weight.detach().abs().mean()), [60.0], chips=2)
    assert ev.values.shape == (2, 1) and ev.values[0, 0] != ev.values[1, 0]


def test_torch_backend_refuses_kernel_only_settings(tmp_path):
    m = small_model()
    for kw in ({"state_dir": tmp_path / "c"}, {"n_threads": 1}, {"direct_io": True}):
        with pytest.raises(analogmem.SettingError, match="backend='torch'"):
            analogmem.program_model(m, "rram-wan2022", backend="torch", **kw)
    assert not (tmp_path / "c").exists()
    with pytest.raises(analogmem.SettingError, match="needs backend='torch'"):
        analogmem.program_model(m, "rram-wan2022", torch_device="cpu")
