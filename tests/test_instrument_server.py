"""End to end through real PyVISA (pyvisa-py over TCP on loopback): the SCPI emulator
server backed by a device card, InstrumentBench programming, verifying and reading
≥ 256 cells, and the server's SCPI surface."""

from __future__ import annotations

import socket

import numpy as np
import pytest

pytest.importorskip("pyvisa_py")

from analogmem import EmulatedBench, WriteVerify, load_device  # noqa: E402
from analogmem.instrument import (  # noqa: E402
    BenchConfig,
    InstrumentBench,
    InstrumentError,
    ReadTimeError,
    ScpiEmulatorServer,
    VoltageScheme,
    characterise,
)
from analogmem.instrument.characterise import TIDY_COLUMNS, read_table  # noqa: E402

CARD = "pcm-nandakumar2019"


def _ask(sock_file, sock, msg):
    sock.sendall(msg.encode() + b"\n")
    return sock_file.readline().decode().strip()


@pytest.fixture
def raw():
    with ScpiEmulatorServer(CARD, rows=4, cols=4, seed=0) as srv:
        s = socket.create_connection(("127.0.0.1", srv.port), timeout=2.0)
        f = s.makefile("rb")
        yield srv, (lambda m: _ask(f, s, m))
        f.close()
        s.close()


def test_server_scpi_surface(raw):
    srv, ask = raw
    assert srv.resource.startswith("TCPIP0::127.0.0.1::") and srv.resource.endswith("::SOCKET")
    assert ask("*IDN?").startswith(f"analogmem,SCPI-EMULATOR-2450,{CARD},")
    assert ask(":SYST:ERR?") == '0,"No error"'
    assert ask(":SOURce:VOLTage:ILIMit 5e-5;:SOUR:VOLT:ILIM?") == "5.000000000E-05"
    assert ask(":FOO:BAR 1;:SYST:ERR?") == '-113,"Undefined header; \':FOO:BAR\'"'
    assert ask(":SOUR:VOLT:LEV 300;:SYST:ERR?").startswith("-222,")
    assert ask(":ROUT:CLOS (@1!5!1);:SYST:ERR?").startswith("-222,")  # row 5 of 4
    assert ask(":ROUT:CLOS (@1!2!3);:ROUT:CLOS?") == "(@1!2!3)"
    assert ask(":ROUT:CLOS (@1!1!1);:SYST:ERR?").startswith("-221,")  # one crosspoint at a time
    assert ask(":OUTP ON;:ROUT:OPEN:ALL;:SYST:ERR?").startswith("-221,")  # no hot switching
    assert ask(":OUTP OFF;:READ?;:SYST:ERR?").startswith("9.91E+37;-221,")  # no reading, output off
    # Read the routed cell (address 6, unprogrammed → g_min = 0 S): current 0 A.
    assert float(ask(":SOUR:VOLT:LEV 0.2;:OUTP ON;:READ?;:OUTP OFF").split(";")[0]) == 0.0
    # A SET pulse at the full amplitude brings the cell near g_max: I = G·V at 0.2 V.
    r = ask(":SOUR:VOLT:LEV 1.6;:OUTP ON;:READ?;:OUTP OFF;:SOUR:VOLT:LEV 0.2;:OUTP ON;:READ?;:OUTP OFF;:SYST:ERR?")
    i_pulse, i_read, err = r.split(";", 2)
    assert err == '0,"No error"'
    assert 20e-6 < float(i_read) / 0.2 < 30e-6
    assert srv.stats()["pulses"] == 1
    # Emulated clock: absolute and monotonic.
    t = float(ask(":EMUL:CLOC?"))
    assert float(ask(f":EMUL:CLOC {t + 3600};:EMUL:CLOC?")) >= t + 3600
    assert float(ask(f":EMUL:CLOC {t};:EMUL:CLOC?")) >= t + 3600  # never backwards
    assert ask(":EMUL:GEOM?") == "4,4"


def test_server_binds_loopback_only():
    with pytest.raises(ValueError, match="loopback"):
        ScpiEmulatorServer(CARD, host="0.0.0.0")
    srv = ScpiEmulatorServer(CARD, rows=2, cols=2, max_lifetime_s=0.3).start()
    srv.wait(5.0)
    assert not srv.running  # stopped by itself


def test_end_to_end_program_verify_read_characterise(tmp_path):
    dev = load_device(CARD)
    with ScpiEmulatorServer(CARD, rows=16, cols=32, seed=7) as srv:
        cfg = BenchConfig(rows=16, cols=32)
        with InstrumentBench(srv.resource, device=CARD, config=cfg, visa_library="@py", timeout_s=2.0) as bench:
            assert bench.is_emulator and bench.clock == "instrument" and bench.n_cells == 512
            rng = np.random.default_rng(3)
            addr = rng.permutation(512)[:300]
            targets = rng.uniform(0.1, 0.95, 300) * dev.g_max_S
            wv = WriteVerify(max_pulses=20, tolerance_rel=0.1)
            rep = bench.program(targets, addresses=addr, verify=wv)
            assert rep.n_cells == 300 and rep.pulses.shape == (300,) and rep.success.shape == (300,)
            assert rep.success.mean() > 0.97
            assert 1.0 <= rep.pulses.mean() < 6.0
            lo, hi = wv.window(targets)
            ok = rep.success
            assert np.all((bench.last_program_reads_S[ok] >= lo[ok]) & (bench.last_program_reads_S[ok] <= hi[ok]))
            # The server really did it: its emulated cells hold these conductances.
            state = srv.bench.cell_state()
            g_prog = state["g_prog"][addr]
            assert np.median(np.abs(g_prog - targets) / targets) < 0.1
            # Read back through PyVISA: close to the targets (read noise only).
            g = bench.read(addresses=addr)
            assert np.median(np.abs(g - targets) / targets) < 0.1
            assert np.all(bench.last_read_age_s >= 0) and np.all(bench.last_read_age_s < 30)
            # An hour later (emulated clock, no wall time) the PCM has drifted down.
            bench.wait(3600.0)
            g1h = bench.read(addresses=addr)
            ratio = np.median(g1h / g)
            nu_mu = dev.drift_mu(targets).mean()
            assert ratio == pytest.approx(((3600 + 20) / 20) ** -nu_mu, rel=0.05)
            assert np.all(bench.last_read_age_s > 3600)
            # A real bench cannot read in the past.
            with pytest.raises(ReadTimeError, match="in the past"):
                bench.read(t_s=1.0, addresses=addr[:2])
            # Characterise the remaining cells: the tidy table.
            res = characterise(bench, tmp_path / "table.csv", n_levels=4, cells_per_level=32,
                               read_times_s=(0.0, 60.0, 3600.0), seed=1)
            assert res.n_rows == 4 * 32 * 3
    table = read_table(tmp_path / "table.csv")
    assert open(tmp_path / "table.csv").readline().strip() == ",".join(
        c for c in TIDY_COLUMNS if c not in ("temperature_K", "success"))
    assert set(np.unique(table["target_S"])) == set(res.levels_S)
    assert np.all(table["read_value_S"] > 0)
    assert np.all(table["device"] == CARD)
    early = table["time_s"] < 30
    late = table["time_s"] > 3600
    assert early.sum() == late.sum() == 128
    # drift visible in the table: later reads lower, per level
    for lv in res.levels_S:
        m = table["target_S"] == lv
        assert np.median(table["read_value_S"][m & late]) < np.median(table["read_value_S"][m & early])


def test_verify_learns_a_miscalibrated_transfer():
    """The server's real transfer differs from the bench's nominal one (threshold 0.1 V
    higher): single-shot programming misses, the verify loop still lands in the window."""
    dev = load_device(CARD)
    true = VoltageScheme(v_set_threshold_V=0.9, v_set_full_V=1.7).for_range(dev.g_min_S, dev.g_max_S)
    with ScpiEmulatorServer(CARD, rows=8, cols=8, seed=2, scheme=true) as srv:
        with InstrumentBench(srv.resource, device=CARD, config=BenchConfig(rows=8, cols=8)) as bench:
            t = np.full(64, 12.5e-6)
            bench.program(t)
            single = bench.read()
            rep = bench.program(t, verify=WriteVerify(max_pulses=30, tolerance_rel=0.08))
            verified = bench.read()
    assert np.median(single) < 0.8 * 12.5e-6  # the nominal amplitude lands ~3 µS low
    assert rep.success.mean() > 0.95
    assert abs(np.median(verified) / 12.5e-6 - 1) < 0.05


def test_geometry_mismatch_is_an_error():
    with ScpiEmulatorServer(CARD, rows=4, cols=4) as srv:
        with pytest.raises(InstrumentError, match="4x4"):
            InstrumentBench(srv.resource, config=BenchConfig(rows=8, cols=8))


def test_same_script_emulated_bench_and_instrument(tmp_path):
    """The characterisation gives statistically matching tables on the in-process
    EmulatedBench and on the SCPI server (same card), single-shot."""
    def run(bench, name):
        return characterise(bench, tmp_path / name, n_levels=3, cells_per_level=60, read_times_s=(100.0,), seed=0)

    a = run(EmulatedBench(CARD, 256, seed=1), "emu.csv")
    with ScpiEmulatorServer(CARD, rows=16, cols=16, seed=2) as srv:
        with InstrumentBench(srv.resource, device=CARD, config=BenchConfig(rows=16, cols=16)) as bench:
            b = run(bench, "inst.csv")
    for la, lb in zip(a.summary["levels"], b.summary["levels"]):
        ma, mb = la["reads"][0]["mean_S"], lb["reads"][0]["mean_S"]
        sa, sb = la["reads"][0]["std_S"], lb["reads"][0]["std_S"]
        assert abs(ma - mb) < 4 * np.hypot(sa, sb) / np.sqrt(60)
        assert 0.6 < sb / sa < 1.6
