"""Property-based bad-input tests (hypothesis, issue 18): whatever array, dtype, shape,
time or table comes in, ``EmulatedBench.program``/``read`` and ``read_tidy`` either work or
raise an :class:`~analogmem.errors.AnalogMemError` — never another exception — and a
refused call changes nothing (bench state, clock, random state; the caller's table).

Example counts are modest (the whole file runs in a few seconds); hypothesis draws new
examples on every run, and a failure prints the example to reproduce it."""

from __future__ import annotations

import warnings

import numpy as np
import pandas as pd
import pytest

hypothesis = pytest.importorskip("hypothesis")
from hypothesis import HealthCheck, given, settings  # noqa: E402
from hypothesis import strategies as st  # noqa: E402
from hypothesis.extra import numpy as hnp  # noqa: E402

from analogmem import AnalogMemError, EmulatedBench  # noqa: E402
from analogmem.calibrate import read_tidy  # noqa: E402
from analogmem.errors import CalibrationError  # noqa: E402

N = 5
SETTINGS = settings(max_examples=80, deadline=None, suppress_health_check=[HealthCheck.too_slow])

# every numpy dtype family: bool, ints, uints, floats, complex, datetimes, bytes, unicode
DTYPES = st.one_of(hnp.scalar_dtypes(), hnp.byte_string_dtypes(max_len=4), hnp.unicode_string_dtypes(max_len=4))
SHAPES = hnp.array_shapes(min_dims=0, max_dims=3, min_side=0, max_side=N + 1)
SCALARS = st.one_of(st.none(), st.booleans(), st.integers(-2**70, 2**70), st.floats(allow_nan=True, allow_infinity=True),
                    st.floats(0.0, 30e-6), st.complex_numbers(), st.text(max_size=4), st.binary(max_size=3))
ARRAYS = st.one_of(
    hnp.arrays(DTYPES, SHAPES),
    hnp.arrays(np.float64, st.just((N,)), elements=st.floats(0.0, 25e-6)),  # valid ones too
    st.lists(SCALARS, max_size=N + 1),
    st.lists(st.lists(st.floats(0, 25e-6), max_size=2), max_size=N),  # ragged
    SCALARS,
)
ADDRESSES = st.one_of(st.none(), ARRAYS, hnp.arrays(np.int64, st.integers(0, N + 1), elements=st.integers(-2, N + 1)),
                      st.permutations(list(range(N))).map(np.array))
TIMES = st.one_of(st.none(), SCALARS, st.floats(0, 1e16), st.integers(0, 10**17), st.just(np.float32(60.0)),
                  st.just(np.int64(5)), st.just(np.array(1.0)), st.just("60"), st.just(True))


def _state(bench: EmulatedBench):
    s = bench.cell_state()
    return s, bench.time_s, bench.seed_sequence.n_children_spawned


def _assert_same(before, bench: EmulatedBench) -> None:
    s, t, spawned = _state(bench)
    assert t == before[1] and spawned == before[2]
    for k, v in before[0].items():
        np.testing.assert_array_equal(s[k], v, err_msg=k)


@pytest.fixture(scope="module")
def benches():
    return {name: EmulatedBench(name, N, seed=0) for name in ("pcm-nandakumar2019", "pcm-stanford")}


@SETTINGS
@given(targets=ARRAYS, addresses=ADDRESSES, device=st.sampled_from(["pcm-nandakumar2019", "pcm-stanford"]))
def test_program_works_or_refuses_without_changing_anything(benches, targets, addresses, device):
    bench = benches[device]
    before = _state(bench)
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # a silent truncation (e.g. complex → real) is a failure too
        try:
            report = bench.program(targets, addresses=addresses)
        except AnalogMemError:
            _assert_same(before, bench)
            return
    n = N if addresses is None else len(addresses)
    assert report.n_cells == n
    lo, hi = bench.device.input_range
    t = np.asarray(targets, dtype=np.float64)
    assert np.asarray(targets).dtype.kind in "iuf" and np.all((t >= lo) & (t <= hi))


@SETTINGS
@given(t_s=TIMES, addresses=ADDRESSES, wait=st.one_of(st.none(), TIMES))
def test_read_and_wait_work_or_refuse_without_changing_anything(t_s, addresses, wait):
    bench = EmulatedBench("pcm-nandakumar2019", N, seed=1)
    bench.program(np.full(N, 10e-6))
    bench.wait(3600.0)
    before = _state(bench)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            if wait is not None:
                bench.wait(wait)
                before = _state(bench)
            g = bench.read(t_s, addresses=addresses)
        except AnalogMemError:
            _assert_same(before, bench)
            return
    assert g.dtype == np.float64 and np.all(np.isfinite(g))
    assert bench.time_s >= before[1] and bench.time_s <= 1e15


COLUMN_NAMES = ["target_S", "target_V", "target_level", "read_value_S", "read_value_ohm", "time_s", "pulses",
                "write_voltage_V", "R_kohm", "x"]
CELLS = st.one_of(st.none(), st.booleans(), st.integers(-5, 10**6), st.floats(allow_nan=True, allow_infinity=True),
                  st.floats(1e-7, 1e-4), st.floats(1e3, 1e6), st.complex_numbers(max_magnitude=1e6),
                  st.text(max_size=4), st.sampled_from(["1e-6", "inf", "", "nan"]))


@st.composite
def tables(draw):
    names = draw(st.lists(st.sampled_from(COLUMN_NAMES), unique=True, max_size=5))
    n = draw(st.integers(0, 6))
    return pd.DataFrame({c: draw(st.lists(CELLS, min_size=n, max_size=n)) for c in names}, dtype=object)


MAPPING = st.fixed_dictionaries({}, optional={
    "target_column": st.sampled_from(COLUMN_NAMES + ["nope"]), "read_column": st.sampled_from(COLUMN_NAMES + ["nope"]),
    "target_unit": st.sampled_from(["V", "mS", "level", "kohm", "furlong"]),
    "read_unit": st.sampled_from(["ohm", "kohm", "uS", "V", "furlong"])})


@SETTINGS
@given(table=tables(), mapping=MAPPING)
def test_read_tidy_works_or_refuses_and_leaves_the_callers_table_alone(table, mapping):
    original = table.copy(deep=True)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        try:
            df = read_tidy(table, **mapping)
        except CalibrationError:
            pd.testing.assert_frame_equal(table, original)
            return
    pd.testing.assert_frame_equal(table, original)
    target = [c for c in ("target_S", "target_V", "target_level") if c in df.columns]
    read = [c for c in ("read_value_S", "read_value_ohm") if c in df.columns]
    assert len(target) == 1 and len(read) == 1 and len(df) > 0
    values = df[read[0]].to_numpy(dtype=float)
    assert np.all(np.isfinite(values) & (values > 0))
    assert np.all(np.isfinite(df[target[0]].to_numpy(dtype=float)))
