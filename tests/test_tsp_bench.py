"""TspBench (2600B over TSP through the keithley2600 driver) against the TSP emulator:
write-verify run on the instrument gives the same per-cell outcome as the 2450 bench's
host-side loop (one policy), the emulator's own WriteVerify statistics when the policy is
the emulator's, and the limits hold on both sides."""

from __future__ import annotations

import dataclasses
import warnings

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")
with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    pytest.importorskip("keithley2600")

from analogmem import EmulatedBench, SafetyLimitError, WriteVerify  # noqa: E402
from analogmem.errors import TargetRangeError  # noqa: E402
from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    InstrumentReportedError,
    SafetyLimits,
    ScpiEmulatorServer,
    TspBench,
    TspEmulatorServer,
    VoltageScheme,
    characterise,
)
from analogmem.instrument.tsp_script import SCRIPT_NAME  # noqa: E402

pytestmark = pytest.mark.filterwarnings("ignore::DeprecationWarning")
CARD = "pcm-nandakumar2019"


def _targets(scheme: VoltageScheme, n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return scheme.g_min_S + (scheme.g_max_S - scheme.g_min_S) * rng.uniform(0.1, 0.9, n)


def test_on_instrument_verify_equals_host_verify_cell_by_cell():
    """Same seed, same targets: the Lua loop on the 2600B emulator and the Python loop of
    the 2450 bench drive the same physics through the same sequence, so every cell's
    pulses, RESETs, success and final read agree exactly."""
    cfg = BenchConfig(rows=8, cols=8)
    verify = WriteVerify(max_pulses=10, tolerance_rel=0.04)
    with TspEmulatorServer(CARD, rows=8, cols=8, seed=5) as ts, \
            TspBench(ts.resource, device=CARD, config=dataclasses.replace(cfg, model="2636B"), batch_cells=20) as tb:
        g = _targets(tb.scheme, 64)
        rt0 = tb.round_trips
        r_tsp = tb.program(g, verify=verify)
        assert tb.round_trips - rt0 == 4  # 64 cells in batches of 20: one round trip each
        tsp = (r_tsp.pulses, tb.last_program_resets, r_tsp.success, tb.last_program_reads_S, r_tsp.stuck)
        reads_tsp = tb.read()
    with ScpiEmulatorServer(CARD, rows=8, cols=8, seed=5) as ss, InstrumentBench(ss.resource, device=CARD,
                                                                                 config=cfg) as ib:
        r_2450 = ib.program(g, verify=verify)
        host = (r_2450.pulses, ib.last_program_resets, r_2450.success, ib.last_program_reads_S, r_2450.stuck)
        reads_2450 = ib.read()
    for a, b in zip(tsp, host):
        if a.dtype != float:
            np.testing.assert_array_equal(a, b)
        else:  # the final reads: same draws, read at a few ms different emulated clocks (drift ~ t^-nu)
            np.testing.assert_allclose(a, b, rtol=1e-3)
    assert r_tsp.success.mean() > 0.9 and r_tsp.pulses.mean() > 1
    # reads differ only by the read noise draws' order: both near the targets
    assert np.median(np.abs(reads_tsp / g - 1)) < 0.1 and np.median(np.abs(reads_2450 / g - 1)) < 0.1


def test_statistics_match_the_emulators_write_verify():
    """With the emulator's policy (re-pulse at the same amplitude, verify_gain = 0) the
    2600B path reproduces EmulatedBench's own WriteVerify: mean pulses within 4 standard
    errors of the difference (two independent samples of 512 cells), success within 4
    binomial standard errors."""
    n = 512
    scheme = VoltageScheme(verify_gain=0.0, reset_first=False)
    cfg = BenchConfig(rows=16, cols=32, scheme=scheme, model="2636B")
    verify = WriteVerify(max_pulses=20, tolerance_rel=0.04)
    with TspEmulatorServer(CARD, rows=16, cols=32, seed=1) as ts, TspBench(ts.resource, device=CARD, config=cfg) as tb:
        g = _targets(tb.scheme, n, seed=2)
        r1 = tb.program(g, verify=verify)
    r2 = EmulatedBench(CARD, n, seed=3).program(g, verify=verify)
    p1, p2 = r1.pulses.astype(float), r2.pulses.astype(float)
    se = np.sqrt(p1.var(ddof=1) / n + p2.var(ddof=1) / n)
    assert abs(p1.mean() - p2.mean()) < 4 * se, (p1.mean(), p2.mean(), se)
    s1, s2 = r1.success.mean(), r2.success.mean()
    pbar = (s1 + s2) / 2
    assert abs(s1 - s2) <= 4 * np.sqrt(max(pbar * (1 - pbar), 1 / n) * 2 / n) + 1e-12


def test_request_past_max_set_V_is_refused_before_sending():
    lim = SafetyLimits(max_set_V=1.4)
    cfg = BenchConfig(rows=4, cols=4, limits=lim, model="2636B")
    with TspEmulatorServer(CARD, rows=4, cols=4, seed=0) as ts, TspBench(ts.resource, device=CARD, config=cfg) as tb:
        before = ts.stats()
        with pytest.raises(SafetyLimitError, match="max_set_V"):
            tb.program(np.full(2, 0.9 * tb.scheme.g_max_S), addresses=np.array([0, 1]))  # needs ~1.52 V
        with pytest.raises(TargetRangeError):
            tb.program(np.full(2, 2 * tb.scheme.g_max_S), addresses=np.array([0, 1]))
        after = ts.stats()
        assert after["messages"] == before["messages"] and after["pulses"] == before["pulses"] == 0


def test_script_clamps_a_host_defect_and_an_edited_script_is_stopped_by_the_instrument():
    lim = SafetyLimits(max_set_V=1.5, max_reset_V=2.0)
    cfg = BenchConfig(rows=4, cols=4, limits=lim, model="2636B")
    g = 0.5 * VoltageScheme().for_range(0, 25e-6).g_max_S
    with TspEmulatorServer(CARD, rows=4, cols=4, seed=0) as ts, TspBench(ts.resource, device=CARD, config=cfg) as tb:
        # a host-side defect asks the loaded script for 5 V: the script clamps to max_set_V
        out = ts.run(f"print(analogmem_program({{0}}, {{{g!r}}}, {{0}}, {{1}}, {{5.0}}, 3, 1))")
        assert ts.stats()["max_pulse_V"] == pytest.approx(1.8)  # the RESET (|−1.8| ≤ max_reset_V)
        last_v = float(out[0].split(",")[4])
        assert last_v <= 1.5 and ts.stats()["pulses"] >= 2
        set_levels = [abs(v) for v in ts.instrument.smus[0].buffers[0].sources]
        assert max(set_levels) <= 1.5
        script = tb.script
    # the same script edited to allow 5 V, run on an instrument whose interlock enforces
    # the bench file's limits (bench serve --enforce-limits): the pulse is refused there
    edited = script.replace("local VSET = 1.5", "local VSET = 5.0")
    assert edited != script
    with TspEmulatorServer(CARD, rows=4, cols=4, seed=0, limits=lim) as ts:
        from analogmem.instrument.tsp_server import _TspHandler

        _TspHandler.store_script(ts.instrument, SCRIPT_NAME, edited, True)
        ts.run(f"print(analogmem_program({{0}}, {{{g!r}}}, {{0}}, {{1}}, {{5.0}}, 3, 1))")
        assert ts.stats()["max_pulse_V"] <= 2.0 and ts.instrument.errors[0][0] == -222
        assert "max_set_V" in ts.instrument.errors[0][1]


def test_instrument_errors_surface_and_characterise_runs(tmp_path):
    cfg = BenchConfig(rows=4, cols=8, model="2636B")
    with TspEmulatorServer(CARD, rows=4, cols=8, seed=0) as ts, TspBench(ts.resource, device=CARD, config=cfg) as tb:
        res = characterise(tb, tmp_path / "c.csv", n_levels=2, cells_per_level=8, read_times_s=(0.0, 100.0),
                           seed=0)
        assert res.summary["rows"] == 32
        assert tb.time_s > 100  # wait moved the emulated clock
        ts.run("nosuch()")  # an error in the queue from elsewhere
        with pytest.raises(InstrumentReportedError, match="-286"):
            tb.read(addresses=np.arange(2))


def test_cli_program_and_read_on_the_2600B(tmp_path, capsys):
    import argparse
    import json

    from analogmem.instrument.cli import add_subparser

    def run(*argv: str) -> int:
        parser = argparse.ArgumentParser(prog="analogmem")
        add_subparser(parser.add_subparsers(dest="command"))
        args = parser.parse_args(["bench", *argv])
        return int(args.func(args) or 0)

    toml = tmp_path / "bench.toml"
    toml.write_text('[instrument]\nmodel = "2636B"\n[matrix]\nrows = 8\ncols = 8\n')
    with TspEmulatorServer(CARD, rows=8, cols=8, seed=0) as ts:
        assert run("program", "--resource", ts.resource, "--bench-config", str(toml), "--device", CARD,
                   "--cells", "0-63", "--no-progress", "--out", str(tmp_path / "p.csv"),
                   "--json", str(tmp_path / "p.json")) == 0
        s = json.loads((tmp_path / "p.json").read_text())
        assert s["cells"] == 64 and s["success_rate"] > 0.9 and s["config"]["instrument"]["model"] == "2636B"
        assert run("read", "--resource", ts.resource, "--model", "2636B", "--rows", "8", "--cols", "8",
                   "--no-progress", "--out", str(tmp_path / "r.csv")) == 0
    assert (tmp_path / "r.csv").read_text().count("\n") == 65
